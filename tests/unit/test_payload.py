"""Typed task inputs (issue 10: typed edges) and the one region resolver.

Every build/teardown task's parameters are read by one pydantic model (regionha.payload); a wrong or
missing parameter is a ConfigurationError (the state machines do not retry it) naming the field,
raised before the topology is parsed or any AWS call is made.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from regionha import payload
from regionha.aws import stack_region
from regionha.errors import ConfigurationError
from regionha.payload import parse_task

ROOT = Path(__file__).resolve().parents[2]


def handler(name: str):
    spec = importlib.util.spec_from_file_location(f"app_{name}", ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


class Context:
    function_name, memory_limit_in_mb, aws_request_id = "f", 128, "r"
    invoked_function_arn = "arn:aws:lambda:ap-southeast-1:123456789012:function:f"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.mark.parametrize(
    ("function", "event", "message"),
    [
        ("converge_dns", {"action": "zones"}, "ConvergeDns: action: unknown value 'zones'"),
        ("converge_dns", {"action": "endpoint"}, "ConvergeDns: path: required field is missing"),
        ("converge_dns", {"action": "endpoint_status", "attempt": -1}, "attempt: Input should be greater"),
        ("converge_peering", {}, "ConvergePeering: action: required field is missing"),
        ("converge_peering", {"action": "request", "peering": "p", "peer": 1}, "peer: unknown key"),
        ("converge_network", {"vcp": "tokyo"}, "ConvergeNetwork: vpc: required field is missing; vcp: unknown key"),
        ("converge_routes", {"vpc": 7}, "ConvergeRoutes: vpc: Input should be a valid string"),
        ("converge_nat", {"vpc": "no such/vpc"}, "ConvergeNat: vpc: String should match pattern"),
        ("converge_instances", {"role": "nodes"}, "ConvergeInstances: role: Input should be 'bind' or 'node'"),
        ("teardown_resources", {"family": "vpcs"}, "TeardownResources: family: unknown value 'vpcs'"),
        ("teardown_resources", {"family": "vpc"}, "TeardownResources: vpc: required field is missing"),
        ("place_canary", {"action": "place"}, "PlaceCanary: function_name: required field is missing"),
        ("place_canary", {"action": "place", "function_name": ""}, "function_name: String should have at least"),
        ("save_inventory", {"inventory": {}}, "SaveInventory: inventory: unknown key"),
        ("validate_topology", {"input": {"topolgy": {}}}, "ValidateTopology: topolgy: unknown key"),
        ("audit_deployment", {"detail-type": "EC2 Instance State-change Notification"},
         "AuditDeployment: detail-type: Input should be 'Scheduled Event'"),
    ],
)
def test_a_bad_task_input_is_a_configuration_error_naming_the_field(function, event, message, monkeypatch):
    # No AWS call can happen: any client would fail on this unroutable endpoint before a request.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigurationError) as caught:
        handler(function)({**event, "run_id": "r"}, Context())
    assert message in str(caught.value)


def test_a_typo_in_the_execution_input_no_longer_builds_the_reference():
    # {"topolgy": ...} used to be ignored, so the build went on with the shipped reference.
    with pytest.raises(ConfigurationError, match="topolgy: unknown key"):
        parse_task({"topolgy": {"deployment": "mine"}}, payload.NoParams, "ValidateTopology")


def test_a_scheduled_run_is_eventbridges_scheduled_event_or_a_run_by_hand():
    event = {"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-11-30T15:00:00Z", "region": "ap-southeast-1",
             "resources": ["arn:aws:events:ap-southeast-1:123456789012:rule/r"], "detail": {}}
    assert payload.parse_scheduled(event, "t").time == "2026-11-30T15:00:00Z"
    assert payload.parse_scheduled({}, "t").detail_type is None
    with pytest.raises(ConfigurationError, match="source: Input should be 'aws.events'"):
        payload.parse_scheduled({**event, "source": "aws.ec2"}, "t")


def test_each_task_reads_its_typed_parameters():
    assert parse_task({"action": "request", "peering": "p1"}, payload.PeeringTask, "t").input == \
        payload.RequestPeering(action="request", peering="p1")
    assert parse_task({"family": "vpc", "vpc": "tokyo"}, payload.TeardownTask, "t").input.vpc == "tokyo"
    assert parse_task({"action": "status"}, payload.PeeringTask, "t").input.attempt == 0
    task = parse_task({"action": "enis_released", "attempt": 3, "run_id": "x"}, payload.PlacementTask, "t")
    assert (task.input.attempt, task.run_id, task.topology.deployment) == (3, "x", "regionha-ref")


def _asl_tasks(states: dict, out: list) -> list:
    for name, state in states.items():
        if state.get("Type") == "Map":
            selector = {k.removesuffix(".$"): v for k, v in state.get("ItemSelector", {}).items()}
            for inner in state["ItemProcessor"]["States"].values():
                if inner.get("Type") == "Task" and "Parameters" not in inner:
                    out.append((state["ItemProcessor"]["StartAt"], inner["Resource"], selector))
            _asl_tasks(state["ItemProcessor"]["States"], out)
        elif state.get("Type") == "Task":
            params = state.get("Parameters")
            if params is None:
                continue
            body = params.get("Payload", params)
            out.append((name, state["Resource"], {k.removesuffix(".$"): v for k, v in body.items()}))
    return out


MODELS = {
    "ConvergeNetworkFunction": payload.VpcTask, "ConvergeRoutesFunction": payload.VpcTask,
    "ConvergeNatFunction": payload.VpcTask, "ConvergePeeringFunction": payload.PeeringTask,
    "ConvergeDnsFunction": payload.DnsTask, "ConvergeInstancesFunction": payload.ConvergeInstances,
    "PlaceCanaryFunction": payload.PlacementTask, "TeardownResourcesFunction": payload.TeardownTask,
    "SaveInventoryFunction": payload.NoParams,
}


@pytest.mark.parametrize("machine", ["build", "teardown"])
def test_every_asl_state_sends_what_its_task_model_accepts(machine):
    # A key the ASL sends and the model refuses would fail every real build: check them together.
    states = json.loads((ROOT / "statemachines" / f"{machine}.asl.json").read_text())["States"]
    checked = 0
    for state, resource, params in _asl_tasks(states, []):
        function = resource.strip("${}").removesuffix("Arn")
        if function not in MODELS:
            continue
        sample = {k: ("tokyo" if k in ("vpc", "peering", "path") else 1 if k == "attempt" else v)
                  for k, v in params.items() if k not in payload.COMMON_KEYS}
        try:
            payload._adapter(MODELS[function]).validate_python(sample)
        except ValueError as e:
            raise AssertionError(f"{machine} state {state}: {e}") from e
        checked += 1
    assert checked >= (8 if machine == "build" else 5)


def test_the_region_comes_from_one_place(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    assert stack_region() == "eu-west-1"
    assert stack_region({"AWS_REGION": "ap-south-1"}) == "ap-south-1"
    monkeypatch.delenv("AWS_REGION")
    assert stack_region() == payload.stack_region() == "us-east-2"


def test_no_region_is_an_error_not_a_guess(monkeypatch, tmp_path):
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="no region"):
        stack_region()
