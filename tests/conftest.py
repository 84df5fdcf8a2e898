"""Shared fixtures: fake credentials, moto with the ASL interpreter, and a mutating-call counter."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from regionha.local.aws.models import share_botocore_models

# Test speed, not behaviour. moto loads every region's default AMIs (thousands) into each new EC2
# backend, and resets them after every test; regionha never uses them (it runs the AMI the SSM
# public parameter names, which moto serves from its own defaults).
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


# Test speed, not behaviour: botocore's JSON models parsed once per process, not once per session
# (moto starts every test with a new boto3 session).
share_botocore_models()

REGIONS = ("ap-northeast-1", "ap-northeast-3", "ap-southeast-1")
READ_PREFIXES = ("Describe", "Get", "List", "Search", "Lookup")


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, so that no test can ever reach a real AWS account."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "ap-southeast-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def moto_aws(aws_credentials: None) -> Iterator[Any]:
    """moto in-process, with Step Functions executions run by its ASL interpreter."""
    from moto import mock_aws

    from composites import installed

    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    # moto has no composite alarms: the local runtime's evaluator holds them (tests/composites.py).
    with mock_aws(config=config), installed(REGIONS) as store:
        yield store


@dataclass
class CallCounter:
    """Counts AWS API calls made through boto3's default session, split into reads and writes."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, event_name: str, **kwargs: object) -> None:
        # event_name: "before-call.<service>.<Operation>"
        _, service, operation = event_name.split(".", 2)
        self.calls.append((service, operation))

    @property
    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if not c[1].startswith(READ_PREFIXES)]


@pytest.fixture
def composite_alarms(moto_aws: Any) -> Any:
    """The AlarmEvaluator holding the composite alarms of the ``moto_aws`` session."""
    return moto_aws


@pytest.fixture
def call_counter(moto_aws: None) -> Iterator[CallCounter]:
    counter = CallCounter()
    session = boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
    session.events.register("before-call.*.*", counter)
    yield counter
    session.events.unregister("before-call.*.*", counter)


@pytest.fixture
def topology():
    from regionha.topology import load_topology

    return load_topology()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The local runtime needs root (loopback addresses, tc) and BIND; say so instead of failing.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root for loopback addresses and tc")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)
