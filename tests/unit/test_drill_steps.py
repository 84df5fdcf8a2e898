"""One source for drill step ids, ASL state names and scenario names: regionha.drill.steps.

The drill state machine (statemachines/drill.asl.json) and the catalogue must agree: every scenario
has a Choice branch starting at its first step's state, each step's state is named after the step
(kebab-case id <-> PascalCase state) and sends that id, the states chain in catalogue order, and every
task sends an action the drill function knows. Pure: no AWS, no moto.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionha.drill import steps
from regionha.drill.inputs import parse_task
from regionha.errors import ConfigurationError

ASL = Path(__file__).resolve().parents[2] / "statemachines" / "drill.asl.json"


@pytest.fixture(scope="module")
def states() -> dict:
    return json.loads(ASL.read_text())["States"]


def test_state_names_and_step_ids_are_one_scheme() -> None:
    assert steps.state_name("fail-active-node") == "FailActiveNode"
    assert steps.step_id("ObserveActiveMoved") == "observe-active-moved"
    for ids in steps.SCENARIO_STEPS.values():
        for step in ids:
            assert steps.step_id(steps.state_name(step)) == step
    with pytest.raises(steps.StepNameError):
        steps.state_name("Fail_Active")
    with pytest.raises(steps.StepNameError):
        steps.step_id("fail-active")


def test_every_scenario_starts_at_its_first_steps_state(states) -> None:
    choices = {c["StringEquals"]: c["Next"] for c in states[steps.CHOOSE_SCENARIO_STATE]["Choices"]}
    assert set(choices) == set(steps.SCENARIOS)
    for scenario, ids in steps.SCENARIO_STEPS.items():
        assert choices[scenario] == steps.state_name(ids[0]), scenario


@pytest.mark.parametrize("scenario", steps.SCENARIOS)
def test_each_scenarios_states_run_its_steps_in_catalogue_order(states, scenario) -> None:
    ids = steps.SCENARIO_STEPS[scenario]
    for i, step in enumerate(ids):
        state = states[steps.state_name(step)]
        assert state["Type"] == "Task"
        assert state["Parameters"]["action"] == steps.STEP_ACTION
        assert state["Parameters"]["step"] == step
        following = steps.state_name(ids[i + 1]) if i + 1 < len(ids) else (
            steps.MORE_STEPS_STATE if scenario == steps.ACCEPTANCE else "Restore")
        assert state["Next"] == following, step


def test_every_task_state_is_in_the_catalogue_and_sends_its_action(states) -> None:
    named_steps = {s for ids in steps.SCENARIO_STEPS.values() for s in ids}
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        action = state["Parameters"]["action"]
        if action == steps.STEP_ACTION:
            assert steps.step_id(name) in named_steps, name
        else:
            assert steps.ACTION_STATES.get(name) == action, name
    assert set(steps.ACTION_STATES) <= set(states)
    inner = states[steps.MORE_STEPS_STATE]["ItemProcessor"]["States"]
    assert [s["Parameters"]["action"] for s in inner.values()] == [steps.STEP_ACTION]


def test_every_action_the_state_machine_sends_parses_into_its_typed_task(states) -> None:
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        event = {k: v for k, v in state["Parameters"].items() if not k.endswith(".$")}
        event["state"] = {"drill": {"execution": "e1"}, "scenario": "acceptance"}
        task = parse_task(event)
        assert task.action == event["action"], name
        assert type(task).__name__ == "".join(w.capitalize() for w in event["action"].split("_")) + "Task"


@pytest.mark.parametrize(("event", "message"), [
    ({"action": "dance", "state": {}}, "action"),
    ({"action": "step", "state": {}}, "step: Field required"),
    ({"action": "step", "step": "", "state": {}}, "step: String should have at least 1 character"),
    ({"action": "restore", "state": []}, "state: Input should be"),
    ({"action": "report", "state": {}, "extra": 1}, "extra: Extra inputs are not permitted"),
    ("not an object", "drill task input"),
])
def test_a_bad_task_input_is_refused_with_the_field_named(event, message) -> None:
    with pytest.raises(ConfigurationError, match="drill task input") as caught:
        parse_task(event)
    assert message in str(caught.value)


def test_the_execution_state_splits_into_input_and_context() -> None:
    task = parse_task({"action": "preflight", "state": {
        "drill": {"execution": "e1"}, "scenario": "cut-path", "region_path": "osaka-bind", "error": None}})
    assert task.state.drill_input() == {"scenario": "cut-path", "region_path": "osaka-bind"}
    assert task.state.context("dep") == {"execution": "e1", "deployment": "dep"}
