"""The on-prem agent's recipes (agent/): the command they run is one the CLI accepts, the systemd unit
is one systemd accepts, and the minimal IAM policy allows exactly what the agent's canary run does
(judged by the twin's IAM evaluator on the calls a real run makes) and is refused without each part.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from regionha.aws import Clients
from regionha.local.aws.iam import LocalIam
from regionha.topology import load_topology
from regionha.watch import canary, metrics

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent"
SITE = load_topology(ROOT / "layers/regionha/regionha/topologies/onprem-site.yaml")
POLICY = json.loads((AGENT / "iam-policy.json").read_text())
ROLE = "arn:aws:iam::123456789012:role/regionha-agent"
STACK_REGION = "ap-southeast-1"


def unit_command(option: str) -> list[str]:
    line = next(x for x in (AGENT / "regionha-canary.service").read_text().splitlines() if x.startswith(option))
    return shlex.split(line.split("=", 1)[1])


def container_command() -> list[str]:
    text = (AGENT / "Containerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return entry + cmd


@pytest.mark.parametrize("argv", [unit_command("ExecStart"), unit_command("ExecStartPre"), container_command()],
                         ids=["unit", "unit-pre", "container"])
def test_the_agent_runs_a_command_the_cli_accepts(argv):
    from regionha.cli import build_parser

    assert Path(argv[0]).name == "regionha"
    args = build_parser().parse_args(argv[1:])
    if "canary" in argv:
        # The deployment's 10-second rounds, the drill's and controller's probes, nothing before the build.
        assert (args.publish, args.interval, args.output) == (True, 10.0, "json")
        assert args.serve_probes and args.wait_for_record
        assert args.topology == "/etc/regionha/topology.yaml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path):
    # The unit names /opt/regionha/bin/regionha (the install of docs/onprem.md); verify it with a real one.
    exe = shutil.which("regionha") or str(ROOT / ".venv/bin/regionha")
    unit = tmp_path / "regionha-canary.service"
    unit.write_text((AGENT / "regionha-canary.service").read_text().replace("/opt/regionha/bin/regionha", exe))
    found = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    problems = [x for x in (found.stdout + found.stderr).splitlines()
                if x.strip() and "EnvironmentFile" not in x and "agent.env" not in x]
    assert found.returncode == 0 and problems == [], found.stdout + found.stderr


def _calls_of_one_agent_run(moto_aws) -> list[tuple[str, str, dict, str]]:
    """A real canary run's AWS calls (read the record, publish): (service, operation, params, region)."""
    ec2 = boto3.client("ec2", region_name="ap-northeast-1")
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    r53 = boto3.client("route53")
    zone = r53.create_hosted_zone(
        Name=SITE.dns.zone, CallerReference="agent-test",
        VPC={"VPCRegion": "ap-northeast-1", "VPCId": vpc},
        HostedZoneConfig={"PrivateZone": True, "Comment": f"managed by regionha, deployment {SITE.deployment}"},
    )["HostedZone"]["Id"]
    r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone.rsplit("/", 1)[-1],
                                 AddTags=[{"Key": "regionha:deployment", "Value": SITE.deployment}])
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": SITE.dns.record.name, "Type": "A", "TTL": 60,
                              "ResourceRecords": [{"Value": str(SITE.primary.ip)}]}}]})
    calls: list[tuple[str, str, dict, str]] = []

    def remember(params, model, **_):
        calls.append((model.service_model.service_name, model.name, copy.deepcopy(params)))

    aws = Clients()
    session = boto3.DEFAULT_SESSION
    session.events.register("before-parameter-build.*.*", remember, unique_id="agent-calls")
    try:
        truth = canary.read_truth(SITE, aws)
        # The probes go to the site's network, not to AWS: here to a closed loopback port (all fail fast).
        run = canary.run_canary(SITE, truth, timeout=0.01, servers={t.path: ("127.0.0.1", 9) for t in
                                                                     canary.canary_targets(SITE)},
                                node_addresses={n.name: ("127.0.0.1", 9) for n in SITE.nodes})
        metrics.put_metric_data(canary.metrics(run), aws.client("cloudwatch", STACK_REGION))
        replies = _serve_one_probe_request(aws)
    finally:
        session.events.unregister("before-parameter-build.*.*", unique_id="agent-calls")
    assert truth.ip == str(SITE.primary.ip)
    assert replies == 1
    region = {"route53": "us-east-1", "cloudwatch": STACK_REGION, "sqs": STACK_REGION, "dynamodb": STACK_REGION}
    return [(service, op, params, region[service]) for service, op, params in calls]


def _serve_one_probe_request(aws) -> int:
    """The stack's probe queue and reply table (template.yaml), one drill probe request, and the agent's
    loop answering it; the test's own calls go through a session of their own (not recorded)."""
    import threading
    import time

    from regionha.watch import agent_requests

    own = boto3.session.Session(region_name=STACK_REGION)
    sqs, dynamodb = own.client("sqs"), own.client("dynamodb")
    url = sqs.create_queue(QueueName=agent_requests.queue_name(SITE.deployment))["QueueUrl"]
    table = agent_requests.reply_table_name(SITE.deployment)
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}])
    # A node the agent's topology does not know: answered (as unknown) without a packet to the site's network.
    request = agent_requests.ProbeRequest(request_id="req-0001", deployment=SITE.deployment, kind="check_nodes",
                                          timeout_seconds=0.01, expires_at=time.time() + 60, nodes=["not-a-node"])
    sqs.send_message(QueueUrl=url, MessageBody=request.model_dump_json())
    stop = threading.Event()
    serving = threading.Thread(target=agent_requests.serve_requests, args=(SITE, aws, STACK_REGION),
                               kwargs={"source": None, "stop": stop, "long_poll": 1})
    serving.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not dynamodb.scan(TableName=table)["Items"]:
            time.sleep(0.05)
        # The message is deleted once the reply is written.
        while time.monotonic() < deadline and sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"][
                "ApproximateNumberOfMessagesNotVisible"] != "0":
            time.sleep(0.05)
    finally:
        stop.set()
        serving.join(10)
    return len(dynamodb.scan(TableName=table)["Items"])


def _refused(policy: dict, calls) -> list[str]:
    iam = LocalIam()
    iam.add_role(ROLE, [policy])
    return sorted({f"{d.action} on {d.resource}" for service, op, params, region in calls
                   if not (d := iam.judge(ROLE, service, op, params, region)).allowed})


def test_the_minimal_policy_allows_what_the_agent_does_and_each_part_is_needed(moto_aws):
    calls = _calls_of_one_agent_run(moto_aws)
    assert {(s, op) for s, op, *_ in calls} == {
        ("route53", "ListHostedZonesByName"), ("route53", "ListTagsForResources"),
        ("route53", "ListResourceRecordSets"), ("cloudwatch", "PutMetricData"),
        ("sqs", "GetQueueUrl"), ("sqs", "ReceiveMessage"), ("sqs", "DeleteMessage"), ("dynamodb", "PutItem")}
    assert _refused(POLICY, calls) == []
    for i, statement in enumerate(POLICY["Statement"]):
        without = {**POLICY, "Statement": POLICY["Statement"][:i] + POLICY["Statement"][i + 1:]}
        assert _refused(without, calls), f"statement {statement['Sid']} is not needed"
    other_namespace = copy.deepcopy(POLICY)
    other_namespace["Statement"][2]["Condition"]["StringEquals"]["cloudwatch:namespace"] = "elsewhere"
    assert _refused(other_namespace, calls) == ["cloudwatch:PutMetricData on *"]
