"""Every Lambda task of every state machine survives a timed-out or crashed invocation, and the drill's
execution timeout covers the worst case of its longest path, Restore and the report included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MACHINES = {
    "build": "BuildStateMachine",
    "teardown": "TeardownStateMachine",
    "drill": "DrillStateMachine",
}
TIMED_OUT = {"Sandbox.Timedout", "Lambda.Unknown"}
# Drill states that are repeated on a timeout (they are idempotent); the others go to Restore.
DRILL_IDEMPOTENT = {"Restore", "RestoreFailed", "CheckAlarms", "Report", "ReleaseLock"}


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def definition(name: str) -> dict[str, Any]:
    return json.loads((REPO / "statemachines" / f"{name}.asl.json").read_text())


def function_timeouts() -> dict[str, int]:
    """``${<Logical>FunctionArn}`` -> the function's Timeout in template.yaml (Globals when unset)."""
    template = yaml.load((REPO / "template.yaml").read_text(), Loader=_Loader)
    default = template["Globals"]["Function"]["Timeout"]
    return {
        f"${{{logical}Arn}}": int(res["Properties"].get("Timeout", default))
        for logical, res in template["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }


def tasks(states: dict[str, Any], enclosing_catch: list | None = None):
    """(name, Task state, the Catch that takes its failure: its own, else its Map's)."""
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state, state.get("Catch") or enclosing_catch or []
        if state["Type"] == "Map":
            inner = state.get("Iterator", state.get("ItemProcessor"))["States"]
            yield from tasks(inner, state.get("Catch"))


def task_worst_seconds(state: dict[str, Any], timeouts: dict[str, int]) -> float:
    """Every attempt runs to its timeout and fails: 1 + all retries, plus every retry's back-off."""
    limit = state.get("TimeoutSeconds") or timeouts[state["Resource"]]
    attempts, delays = 1, 0.0
    for retrier in state.get("Retry", []):
        interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
        cap = retrier.get("MaxDelaySeconds", float("inf"))
        for k in range(retrier.get("MaxAttempts", 3)):
            attempts += 1
            delays += min(interval * rate**k, cap)
    return attempts * limit + delays


def longest_path_seconds(machine: dict[str, Any], timeouts: dict[str, int]) -> float:
    """The slowest way from StartAt to an end (the drill has no loops)."""
    states = machine["States"]
    memo: dict[str, float] = {}

    def successors(state: dict[str, Any]) -> set[str]:
        nxt = {state.get("Next"), state.get("Default")} | {c["Next"] for c in state.get("Catch", [])}
        nxt |= {c["Next"] for c in state.get("Choices", [])}
        return {n for n in nxt if n}

    def worst(name: str, seen: frozenset[str]) -> float:
        assert name not in seen, f"loop through {name}"
        if name not in memo:
            state = states[name]
            own = task_worst_seconds(state, timeouts) if state["Type"] == "Task" else state.get("Seconds", 0)
            memo[name] = own + max((worst(n, seen | {name}) for n in successors(state)), default=0)
        return memo[name]

    return worst(machine["StartAt"], frozenset())


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_lambda_task_handles_a_timed_out_or_crashed_invocation(name: str) -> None:
    for task_name, task, catch in tasks(definition(name)["States"]):
        wanted = TIMED_OUT | ({"States.Timeout"} if "TimeoutSeconds" in task else set())
        retried = {e for r in task.get("Retry", []) for e in r["ErrorEquals"] if r.get("MaxAttempts", 3) > 0}
        caught = {e: c["Next"] for c in catch for e in c["ErrorEquals"]}
        if name == "drill" and task_name not in DRILL_IDEMPOTENT:
            # Not repeated: a timed-out fault or observation goes straight to Restore.
            assert {caught.get(e) for e in wanted} == {"Restore"}, task_name
            assert not wanted & retried, task_name
        else:
            assert wanted <= retried, (name, task_name, wanted - retried)
            # After the retry, the failure path still catches it (States.ALL).
            assert "States.ALL" in caught, (name, task_name)


def test_the_drill_timeout_leaves_time_for_restore_in_the_worst_case() -> None:
    drill = definition("drill")
    worst = longest_path_seconds(drill, function_timeouts())
    print(f"drill worst case: {worst:.0f} s ({worst / 3600:.1f} h); TimeoutSeconds {drill['TimeoutSeconds']}")
    assert drill["TimeoutSeconds"] >= worst


def test_the_worst_case_counts_retries_and_back_off() -> None:
    state = {"Resource": "${F}", "TimeoutSeconds": 100,
             "Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2.0},
                       {"ErrorEquals": ["Y"], "IntervalSeconds": 5, "MaxAttempts": 1}]}
    assert task_worst_seconds(state, {}) == 5 * 100 + (2 + 4 + 8) + 5


def test_the_tables_and_the_reports_bucket_outlive_the_stack() -> None:
    template = yaml.load((REPO / "template.yaml").read_text(), Loader=_Loader)
    kept = {
        logical: (res.get("DeletionPolicy"), res.get("UpdateReplacePolicy"))
        for logical, res in template["Resources"].items()
        if res["Type"] in ("AWS::DynamoDB::Table", "AWS::S3::Bucket")
    }
    assert kept == {**{name: ("Retain", "Retain") for name in ("StateTable", "IdempotencyTable", "ReportsBucket")},
                    # Probe replies (an on-prem site's agent) live seconds: deleted with the stack, by name.
                    "ProbeReplyTable": ("Delete", "Delete")}
