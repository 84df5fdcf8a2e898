"""converge_instance and converge_nat against moto: fixed IPs, IMDSv2, drift policy, no duplicates."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from regionha.aws import Clients, deployment_filter, tag_value
from regionha.converge.instances import (
    converge_instance,
    converge_nat,
    find_ami,
    instance_states,
    nat_user_data,
    wait_instances_running,
)
from regionha.converge.network import converge_vpc
from regionha.errors import ConfigurationError
from regionha.topology import Topology

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from egress import give_egress  # noqa: E402

RUN = "run-1"
OSAKA = "ap-northeast-3"
USER_DATA = "#!/bin/bash\necho node\n"
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@pytest.fixture
def clients(moto_aws: None) -> Clients:
    return Clients()


@pytest.fixture
def osaka(topology: Topology, clients: Clients) -> Any:
    converge_vpc(topology, "osaka", clients, RUN)
    give_egress(topology, clients)
    return boto3.client("ec2", region_name=OSAKA)


def node_b(topology: Topology, clients: Clients, run_id: str = RUN, user_data: str = USER_DATA, **changes: Any):
    node = topology.node("Server-B")
    spec = {
        "name": node.name,
        "vpc_name": node.vpc,
        "subnet": node.subnet,
        "ip": str(node.ip),
        "security_group": node.security_group,
        "role": "node",
        "user_data": user_data,
    }
    return converge_instance(topology, **{**spec, **changes}, clients=clients, run_id=run_id)


def _instances(ec2: Any, topology: Topology, name: str) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances(Filters=deployment_filter(topology.deployment, name))["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _live(ec2: Any, topology: Topology, name: str) -> dict[str, Any]:
    (instance,) = [i for i in _instances(ec2, topology, name) if i["State"]["Name"] != "terminated"]
    return instance


def _user_data(ec2: Any, instance_id: str) -> str:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def _release_ip_in_moto(region: str, subnet_id: str, ip: str) -> None:
    """moto keeps a terminated instance's private IP reserved forever; EC2 frees it on termination."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    ec2_backends[DEFAULT_ACCOUNT_ID][region].get_subnet(subnet_id).del_subnet_ip(ip)


def test_find_ami_reads_the_ssm_public_parameter(topology: Topology, clients: Clients) -> None:
    for region in ("ap-northeast-1", "ap-northeast-3", "ap-southeast-1"):
        expected = boto3.client("ssm", region_name=region).get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
        assert find_ami(topology, region, clients) == expected


def test_instance_is_created_as_specified(topology: Topology, clients: Clients, osaka: Any) -> None:
    (outcome,) = node_b(topology, clients)

    instance = _live(osaka, topology, "Server-B")
    assert (outcome.action, outcome.id) == ("created", instance["InstanceId"])
    assert instance["PrivateIpAddress"] == "10.1.110.10"
    assert "PublicIpAddress" not in instance
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["ImageId"] == find_ami(topology, OSAKA, clients)
    assert instance["InstanceType"] == topology.instances.instance_type
    assert tag_value(instance, "regionha:role") == "node"
    (subnet,) = osaka.describe_subnets(SubnetIds=[instance["SubnetId"]])["Subnets"]
    assert tag_value(subnet, "regionha:name") == "B2"
    (group,) = instance["NetworkInterfaces"][0]["Groups"]
    (sg,) = osaka.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"]
    assert tag_value(sg, "regionha:name") == "ClusterNode"
    assert _user_data(osaka, instance["InstanceId"]) == USER_DATA


def test_no_public_ip_even_in_a_public_subnet(topology: Topology, clients: Clients, osaka: Any) -> None:
    node_b(topology, clients, name="probe", subnet="B1", ip="10.1.10.50", role="node")

    instance = _live(osaka, topology, "probe")
    assert "PublicIpAddress" not in instance
    assert tag_value(instance, "regionha:role") == "node"


def test_second_run_makes_no_mutating_call(topology: Topology, clients: Clients, osaka: Any, call_counter: Any) -> None:
    node_b(topology, clients)
    converge_nat(topology, "osaka", clients, RUN)
    call_counter.calls.clear()

    outcomes = node_b(topology, clients, "run-2") + converge_nat(topology, "osaka", clients, "run-2")

    assert call_counter.mutating == []
    assert {o.action for o in outcomes} == {"unchanged"}


def test_stopped_instance_is_left_stopped(topology: Topology, clients: Clients, osaka: Any, call_counter: Any) -> None:
    (created,) = node_b(topology, clients)
    osaka.stop_instances(InstanceIds=[created.id])
    call_counter.calls.clear()

    (outcome,) = node_b(topology, clients)

    assert (outcome.action, outcome.id) == ("unchanged", created.id)
    assert call_counter.mutating == []
    assert _live(osaka, topology, "Server-B")["State"]["Name"] == "stopped"


def test_terminated_instance_is_replaced_with_a_new_client_token(
    topology: Topology, clients: Clients, osaka: Any
) -> None:
    (first,) = node_b(topology, clients)
    old = _live(osaka, topology, "Server-B")
    osaka.terminate_instances(InstanceIds=[first.id])
    _release_ip_in_moto(OSAKA, old["SubnetId"], old["PrivateIpAddress"])

    (second,) = node_b(topology, clients)  # the same run: only the terminated count tells them apart

    new = _live(osaka, topology, "Server-B")
    assert second.action == "created"
    assert new["InstanceId"] == second.id != first.id
    assert new["ClientToken"] != old["ClientToken"]
    assert new["PrivateIpAddress"] == "10.1.110.10"


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_user_data_drift_is_fixed(topology: Topology, clients: Clients, osaka: Any, stopped: bool) -> None:
    (created,) = node_b(topology, clients)
    if stopped:
        osaka.stop_instances(InstanceIds=[created.id])

    (outcome,) = node_b(topology, clients, user_data="#!/bin/bash\necho changed\n")

    instance = _live(osaka, topology, "Server-B")
    assert (outcome.action, outcome.id) == ("updated", created.id)
    assert _user_data(osaka, created.id) == "#!/bin/bash\necho changed\n"
    # A running instance is restarted to take it; a stopped one stays as its owner left it.
    assert instance["State"]["Name"] == ("stopped" if stopped else "running")
    assert tag_value(instance, "regionha:restarting") is None


def test_restart_interrupted_after_stop_is_finished(topology: Topology, clients: Clients, osaka: Any) -> None:
    (created,) = node_b(topology, clients)
    # GIVEN a run that marked and stopped the instance to change its type, then died
    osaka.create_tags(Resources=[created.id], Tags=[{"Key": "regionha:restarting", "Value": "true"}])
    osaka.stop_instances(InstanceIds=[created.id])

    (outcome,) = node_b(topology, clients, instance_type="t3.small")

    instance = _live(osaka, topology, "Server-B")
    assert outcome.action == "updated"
    assert (instance["State"]["Name"], instance["InstanceType"]) == ("running", "t3.small")
    assert tag_value(instance, "regionha:restarting") is None


def test_security_group_drift_is_fixed_in_place(topology: Topology, clients: Clients, osaka: Any) -> None:
    (created,) = node_b(topology, clients)
    (other,) = osaka.describe_security_groups(Filters=deployment_filter(topology.deployment, "InboundEndpoint"))[
        "SecurityGroups"
    ]
    osaka.modify_instance_attribute(InstanceId=created.id, Groups=[other["GroupId"]])

    (outcome,) = node_b(topology, clients)

    assert outcome.action == "updated"
    (group,) = _live(osaka, topology, "Server-B")["NetworkInterfaces"][0]["Groups"]
    assert group["GroupName"] == "ClusterNode"


def test_a_moved_ip_is_a_configuration_error(topology: Topology, clients: Clients, osaka: Any) -> None:
    node_b(topology, clients)

    with pytest.raises(ConfigurationError, match="cannot move"):
        node_b(topology, clients, ip="10.1.110.11")


def test_interrupted_run_instances_makes_no_duplicate(topology: Topology, clients: Clients, osaka: Any) -> None:
    # GIVEN RunInstances succeeded but the Lambda died before it saw the answer
    def lose_the_answer(**kwargs: Any) -> None:
        raise TimeoutError("the Lambda timed out")

    events = clients.ec2(OSAKA).meta.events
    events.register("after-call.ec2.RunInstances", lose_the_answer)
    try:
        with pytest.raises(TimeoutError):
            node_b(topology, clients)
    finally:
        events.unregister("after-call.ec2.RunInstances", lose_the_answer)

    # WHEN the state machine retries the step (same run)
    (outcome,) = node_b(topology, clients)

    # THEN the instance the lost call made is found by its tags
    assert outcome.action == "unchanged"
    assert len(_instances(osaka, topology, "Server-B")) == 1


def test_nat_instance_and_its_routes(topology: Topology, clients: Clients, osaka: Any) -> None:
    outcomes = converge_nat(topology, "osaka", clients, RUN)

    nat = _live(osaka, topology, "nat-osaka")
    assert nat["SourceDestCheck"] is False
    assert "PublicIpAddress" in nat  # the one instance that talks to the Internet directly
    assert tag_value(nat, "regionha:role") == "nat"
    (subnet,) = osaka.describe_subnets(SubnetIds=[nat["SubnetId"]])["Subnets"]
    assert tag_value(subnet, "regionha:name") == "B1"
    assert _user_data(osaka, nat["InstanceId"]) == nat_user_data(topology.vpc("osaka"))
    (group,) = nat["NetworkInterfaces"][0]["Groups"]
    rules = osaka.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group["GroupId"]]}])
    assert {(r["IpProtocol"], r["CidrIpv4"]) for r in rules["SecurityGroupRules"] if not r["IsEgress"]} == {
        ("-1", "10.1.0.0/16")
    }
    eni = nat["NetworkInterfaces"][0]["NetworkInterfaceId"]
    routes = {
        tag_value(t, "regionha:name"): {
            r.get("DestinationCidrBlock") or r["DestinationPrefixListId"]: r.get("NetworkInterfaceId")
            for r in t["Routes"]
        }
        for t in osaka.describe_route_tables(Filters=deployment_filter(topology.deployment))["RouteTables"]
    }
    assert routes["B2-rt"]["0.0.0.0/0"] == eni
    assert "0.0.0.0/0" not in routes["B3-rt"]  # B3 is private with no Internet at all (S3 only, by its endpoint)
    assert ("route", "B2-rt:0.0.0.0/0", "created") in {(o.kind, o.name, o.action) for o in outcomes}


def test_instance_states_reports_missing_and_running(topology: Topology, clients: Clients, osaka: Any) -> None:
    node_b(topology, clients)

    states = instance_states(topology, clients, roles=("node",))

    assert states == {"Server-A": "missing", "Server-B": "running"}
    assert wait_instances_running(topology, clients, ["Server-B"]) == {"Server-B": "running"}
    with pytest.raises(ConfigurationError, match="Server-A"):
        wait_instances_running(topology, clients, ["Server-A", "Server-B"])


@pytest.mark.parametrize(
    ("subnet", "ip", "launched"),
    [("B3", "10.1.111.10", True), ("B2", "10.1.110.20", False), ("B1", "10.1.10.20", False)],
)
def test_a_bind_server_is_launched_only_where_its_dnf_install_reaches_the_repositories(
    topology: Topology, clients: Clients, osaka: Any, subnet: str, ip: str, launched: bool
) -> None:
    # B3: the S3 gateway endpoint. B2: its NAT route is not there yet (no NAT instance). B1: the IGW,
    # but a BIND server gets no public IP.
    spec = {"name": "bind-probe", "subnet": subnet, "ip": ip, "role": "bind", "security_group": "InboundEndpoint"}
    if launched:
        node_b(topology, clients, **spec)
        assert _live(osaka, topology, "bind-probe")
        return
    with pytest.raises(ConfigurationError, match=f"instance bind-probe: .* subnet {subnet} has no egress"):
        node_b(topology, clients, **spec)
    assert _instances(osaka, topology, "bind-probe") == []


def test_without_the_gateway_endpoint_the_osaka_bind_server_is_refused_with_the_fix(
    topology: Topology, clients: Clients
) -> None:
    converge_vpc(topology, "osaka", clients, RUN)
    path = next(p for p in topology.forwarder_paths if p.kind == "bind")
    with pytest.raises(ConfigurationError) as refused:
        converge_instance(topology, name=path.name, vpc_name=path.vpc, subnet=path.subnet, ip=str(path.ip),
                          security_group=path.security_group, role="bind", user_data=USER_DATA,
                          clients=clients, run_id=RUN)
    assert str(refused.value) == (
        "instance osaka-bind: its user-data installs packages with dnf from the Amazon Linux repositories "
        "(S3 in ap-northeast-3), but subnet B3 has no egress to them: route table B3-rt has no S3 gateway "
        "endpoint route and no default route to a NAT; give VPC osaka `gateway_endpoints: [{service: s3, "
        "route_tables: [...]}]` with that route table, or a 0.0.0.0/0 route to its NAT instance"
    )


class _RecordingWaiter:
    def __init__(self, calls: list, fail: bool) -> None:
        self.calls, self.fail = calls, fail

    def wait(self, **kwargs: Any) -> None:
        self.calls.append(kwargs["WaiterConfig"])
        if self.fail:
            from botocore.exceptions import WaiterError

            raise WaiterError("InstanceStopped", "Max attempts exceeded", {})


class _Ec2:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list = []
        self.fail = fail

    def get_waiter(self, name: str) -> _RecordingWaiter:
        return _RecordingWaiter(self.calls, self.fail)


def test_a_drift_restart_waits_only_until_the_deadline_then_is_not_ready(topology: Topology) -> None:
    import time

    from regionha.converge.instances import _wait
    from regionha.errors import NotReadyError

    ec2 = _Ec2()
    _wait(ec2, "instance_stopped", ["i-1"], topology)
    _wait(ec2, "instance_stopped", ["i-1"], topology, deadline=time.monotonic() + 22)
    _wait(ec2, "instance_stopped", ["i-1"], topology, deadline=time.monotonic() - 5)
    delay = topology.waits.poll_seconds
    assert ec2.calls == [
        {"Delay": delay, "MaxAttempts": topology.waits.max_polls},  # 300 s of polls without a deadline
        {"Delay": delay, "MaxAttempts": 22 // delay},
        {"Delay": delay, "MaxAttempts": 1},
    ]
    with pytest.raises(NotReadyError, match="instance_stopped for i-1"):
        _wait(_Ec2(fail=True), "instance_stopped", ["i-1"], topology, deadline=time.monotonic() + 10)


def test_a_bind_server_without_package_egress_is_refused_before_launch(aws_credentials):
    """On AWS the first-boot `dnf install bind` of a subnet with no way to S3 fails once and for all."""
    import boto3
    from moto import mock_aws

    from regionha.converge.instances import require_package_egress
    from regionha.errors import ConfigurationError
    from regionha.topology import load_topology

    topology = load_topology()
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="ap-northeast-3")
        vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.111.0/24")["Subnet"]
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet["SubnetId"])

        with pytest.raises(ConfigurationError, match="has no egress to them: route table .* has no S3 gateway"):
            require_package_egress(ec2, topology, name="osaka-bind", vpc_name="osaka", subnet=subnet,
                                   public_ip=False)

        ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.ap-northeast-3.s3", RouteTableIds=[table])
        require_package_egress(ec2, topology, name="osaka-bind", vpc_name="osaka", subnet=subnet, public_ip=False)
