"""Our real Lambda handlers behind moto in-process: the template provisioned into ``mock_aws`` and
every ``lambda.Invoke`` (the ASL interpreter's included) answered by the handler, as Lambda would:
each handler with its own function's environment and timeout, and every AWS call it makes authorised
against its own function's role (regionha.local.aws.iam).

This module is the one door from the product's tests (tests/unit, tests/template) into the local
runtime: they take the twin's pieces they need from here (below), never from ``regionha.local``
itself. The runtime's own tests live in tests/local."""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from regionha.aws import Clients
from regionha.local.aws import route53 as twin_route53
from regionha.local.aws.alarm_rules import ALARM, INSUFFICIENT_DATA, OK, evaluate_range
from regionha.local.aws.event_patterns import pattern_matches
from regionha.local.aws.iam import LocalIam
from regionha.local.aws.lambdas import HandlerRegistry
from regionha.local.aws.provision import Stack, provision
from regionha.local.aws.sam import load_template, translate
from regionha.local.aws.server import LocalAws
from regionha.local.aws.vpc_rules import nacl_allows
from regionha.local.host.nodes import NodeService
from regionha.local.host.routing import fix_moto_endpoint_routes
from regionha.local.world import World, dns_targets

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
STACK_REGION = "ap-southeast-1"

# What product tests use of the twin: Route 53's change-batch validation (installed on import of
# regionha.local), CloudWatch's alarm evaluation rule, EventBridge pattern matching, the template as
# CloudFormation reads it, the emulated AWS endpoint, node services, moto's missing endpoint routes,
# and the World's reachability rules (security groups, network ACLs, DNS targets).
__all__ = [
    "ALARM", "INSUFFICIENT_DATA", "OK", "STACK_REGION", "TEMPLATE", "LocalAws", "NodeService", "World",
    "dns_targets", "evaluate_range", "fix_moto_endpoint_routes", "handlers_in_process", "load_template",
    "nacl_allows", "pattern_matches", "translate", "twin_route53", "stack_in_process", "run_execution",
    "build_reference",
]
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": STACK_REGION,
                    "AWS_EC2_METADATA_DISABLED": "true"}
# moto's ASL interpreter runs the executions; Lambda invokes are answered by handlers_in_process.
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}

_INVOKE = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")


class _Raw(io.BytesIO):
    """What botocore reads a response body from: read() for streaming payloads, stream() otherwise."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


@contextmanager
def handlers_in_process(parameters: dict[str, Any] | None = None, *, template: Path = TEMPLATE,
                        environment: dict[str, dict[str, str | None]] | None = None,
                        enforce_iam: bool = True) -> Iterator[tuple[Stack, list[Any]]]:
    """Inside ``mock_aws``: provision a template, serve its functions, yield (stack, invocations).

    ``environment`` overrides variables per function logical id (None removes one); ``stack.iam`` is
    the LocalIam judging the handlers' calls (its ``refusals`` list what it refused).
    """
    clients = Clients()
    stack = provision(clients, template, region=STACK_REGION, parameters=parameters)
    registry = HandlerRegistry.from_template(template, region=STACK_REGION, parameters=parameters)
    functions = registry.bind(stack)
    for function in functions:
        for key, value in ((environment or {}).get(function.logical_id) or {}).items():
            if value is None:
                function.environment.pop(key, None)
            else:
                function.environment[key] = value
    # REGIONHA_LOCAL_IAM=audit lists every refusal of a run in stack.iam.refusals without refusing.
    iam = LocalIam(stack.account_id, audit=os.environ.get("REGIONHA_LOCAL_IAM") == "audit")
    iam.load_roles(clients, [f.role_arn for f in functions if f.role_arn], STACK_REGION)
    stack.iam = iam  # type: ignore[attr-defined]
    invocations: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        match = _INVOKE.search(request.url)
        region = request.url.split(".")[1] if "lambda." in request.url else STACK_REGION
        function = registry.lookup(unquote(match.group("name")), region) if match else None
        if function is None:
            return None  # not ours: moto answers
        outcome = function.invoke(request.body or b"")
        invocations.append((function.name, outcome))
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if outcome.error_type:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return AWSResponse(request.url, 200, headers, _Raw(outcome.payload))

    session = boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
    session.events.register("before-send.lambda.Invoke", answer)
    if enforce_iam:
        iam.install()
    try:
        yield stack, invocations
    finally:
        iam.uninstall()
        if os.environ.get("REGIONHA_LOCAL_IAM_LOG"):  # what each role was used for / refused, per test
            test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
            with open(os.environ["REGIONHA_LOCAL_IAM_LOG"], "a") as log:
                for function, action, resource in iam.refusals:
                    log.write(f"refused\t{function}\t{action}\t{resource}\t{test}\n")
                for function, action in sorted(iam.granted):
                    log.write(f"granted\t{function}\t{action}\t\t{test}\n")
        session.events.unregister("before-send.lambda.Invoke", answer)


@contextmanager
def stack_in_process(regions: tuple[str, ...] = (STACK_REGION,), **kwargs: Any) -> Iterator[tuple[Stack, list[Any]]]:
    """The whole stack in process, for module-scoped fixtures (the function-scoped ``aws_credentials``
    and ``moto_aws`` cannot serve them): fake credentials, ``mock_aws`` with the ASL interpreter, the
    composite-alarm store for ``regions`` and :func:`handlers_in_process` (``kwargs``); yields
    (stack, invocations)."""
    from moto import mock_aws

    import composites

    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAKE_CREDENTIALS.items():
            mp.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION"):
            mp.delenv(key, raising=False)
        # moto has no composite alarms: the local runtime's evaluator holds them (tests/composites.py).
        with mock_aws(config=MOTO_CONFIG), composites.installed(regions), \
                handlers_in_process(**kwargs) as (stack, invocations):
            yield stack, invocations


def run_execution(stack: Stack, logical_id: str, payload: dict[str, Any] | None = None, name: str | None = None,
                  timeout: float = 120.0) -> dict[str, Any]:
    """Start the stack's state machine ``logical_id`` on ``payload`` and wait for its end (at most
    ``timeout`` real seconds); returns DescribeExecution's answer."""
    sfn = boto3.client("stepfunctions", region_name=STACK_REGION)
    arn = sfn.start_execution(stateMachineArn=stack.physical_id(logical_id), name=name or f"x-{uuid.uuid4().hex[:12]}",
                              input=json.dumps(payload or {}))["executionArn"]
    deadline = time.monotonic() + timeout
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{logical_id} execution did not finish in {timeout} s"
        time.sleep(0.05)
    return desc


def build_reference(stack: Stack) -> dict[str, Any]:
    """The reference topology built by the build state machine, without waits; asserts it SUCCEEDED."""
    from regionha.topology import load_topology

    topology = load_topology()
    fast = topology.model_copy(update={"waits": topology.waits.model_copy(update={"poll_seconds": 0})})
    desc = run_execution(stack, "BuildStateMachine", {"topology": fast.to_json()}, f"b-{uuid.uuid4().hex[:8]}")
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    return desc
