"""Our real Lambda handlers behind moto in-process: the template provisioned into ``mock_aws`` and
every ``lambda.Invoke`` (the ASL interpreter's included) answered by the handler, as Lambda would."""

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
from regionha.local.lambdas import HandlerRegistry
from regionha.local.provision import Stack, provision

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
STACK_REGION = "ap-southeast-1"
_INVOKE = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")


class _Raw(io.BytesIO):
    """What botocore reads a response body from: read() for streaming payloads, stream() otherwise."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


@contextmanager
def handlers_in_process(parameters: dict[str, Any] | None = None) -> Iterator[tuple[Stack, list[Any]]]:
    """Inside ``mock_aws``: provision template.yaml, serve its functions, yield (stack, invocations)."""
    stack = provision(Clients(), TEMPLATE, region=STACK_REGION, parameters=parameters)
    registry = HandlerRegistry.from_template(TEMPLATE, region=STACK_REGION, parameters=parameters)
    registry.bind(stack)
    invocations: list[Any] = []
    saved = {k: os.environ.get(k) for k in registry.environment()}
    os.environ.update(registry.environment())

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
    try:
        yield stack, invocations
    finally:
        session.events.unregister("before-send.lambda.Invoke", answer)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
