"""Our real Lambda handlers behind moto in-process: the template provisioned into ``mock_aws`` and
every ``lambda.Invoke`` (the ASL interpreter's included) answered by the handler, as Lambda would:
each handler with its own function's environment and timeout, and every AWS call it makes authorised
against its own function's role (regionha.local.aws.iam)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.awsrequest import AWSResponse

from regionha.aws import Clients
from regionha.local.aws.iam import LocalIam
from regionha.local.aws.lambdas import HandlerRegistry
from regionha.local.aws.provision import Stack, provision

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
STACK_REGION = "ap-southeast-1"
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
