"""Probe requests to the on-prem agent (regionha.watch.agent_requests), in moto: the round trip, the
clear error when no agent answers, what the agent drops, and the controller refusing to act blind.

No request here makes the agent probe anything (nodes it does not know): outside a network namespace
no test may send a packet to the site's addresses. The twin's end-to-end test
(tests/integration/test_onprem_site_e2e.py) runs real probes through the real agent process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import boto3
import pytest

from regionha.aws import Clients
from regionha.topology import load_topology
from regionha.watch import agent_requests

SITE = load_topology(Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/onprem-site.yaml")
REGION = "ap-southeast-1"


@pytest.fixture
def stack(moto_aws):
    """The stack's queue and reply table, as template.yaml names them."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=agent_requests.queue_name(SITE.deployment))["QueueUrl"]
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=agent_requests.reply_table_name(SITE.deployment), BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}])
    return url


@pytest.fixture
def agent(stack):
    stop = threading.Event()
    thread = threading.Thread(target=agent_requests.serve_requests, args=(SITE, Clients(), REGION),
                              kwargs={"source": None, "stop": stop, "long_poll": 1}, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def test_a_request_is_answered_by_the_agent_in_one_round_trip(agent):
    started = time.monotonic()
    body = agent_requests.ask_agent(SITE, "check_nodes", clients=Clients(), region=REGION, timeout=0.1,
                                    nodes=["not-a-node"])
    print(f"\nround trip through moto's SQS and DynamoDB: {1000 * (time.monotonic() - started):.0f} ms")
    assert body == {"nodes": {}, "unknown": ["not-a-node"]}


def test_no_agent_is_a_clear_error_naming_the_queue_and_the_bound(stack):
    with pytest.raises(agent_requests.AgentDidNotAnswer, match=r"did not answer check_nodes request .* within "
                       r"0\.3 s \(queue regionha-regionha-site-probes in ap-southeast-1\): is regionha-canary "
                       r"running on the site with --serve-probes"):
        agent_requests.ask_agent(SITE, "check_nodes", clients=Clients(), region=REGION, timeout=0.1,
                                 nodes=["Server-A"], wait=0.3)


def test_no_queue_says_the_stack_lacks_it(moto_aws):
    with pytest.raises(agent_requests.AgentDidNotAnswer, match="no probe queue regionha-regionha-site-probes"):
        agent_requests.ask_agent(SITE, "canary", clients=Clients(), region=REGION, timeout=0.1, wait=0.1)


@pytest.mark.parametrize("change", [{"deployment": "someone-else"}, {"expires_at": 1.0}],
                         ids=["foreign-deployment", "expired"])
def test_foreign_or_expired_requests_are_dropped_unanswered(stack, agent, change):
    request = agent_requests.ProbeRequest(**{"request_id": "req-00000001", "deployment": SITE.deployment,
                                             "kind": "check_nodes", "timeout_seconds": 0.1,
                                             "expires_at": time.time() + 60, "nodes": ["x"], **change})
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(QueueUrl=stack, MessageBody=request.model_dump_json())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and int(sqs.get_queue_attributes(QueueUrl=stack, AttributeNames=["All"])[
            "Attributes"]["ApproximateNumberOfMessages"]) + int(sqs.get_queue_attributes(
            QueueUrl=stack, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"]):
        time.sleep(0.05)
    items = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=agent_requests.reply_table_name(SITE.deployment))["Items"]
    assert items == []


def test_the_controller_without_an_answering_agent_sees_every_check_fail(stack, monkeypatch):
    # A blind controller must refuse to move the record: every client-network check fails, with the reason.
    from regionha.failover import health

    monkeypatch.setenv(health.CHECK_FUNCTION_ENV, "regionha-RunCanaryFunction")
    monkeypatch.setenv(health.AGENT_REGION_ENV, REGION)
    monkeypatch.setattr(agent_requests, "REPLY_POLL_SECONDS", 0.2)
    checks = health._client_checks(SITE, ["Server-A", "Server-B"], 0.01)
    assert {n: c.reachable for n, c in checks.items()} == {"Server-A": False, "Server-B": False}
    assert all(c.error.startswith("on-prem agent: the on-prem agent of regionha-site did not answer")
               for c in checks.values()), checks
