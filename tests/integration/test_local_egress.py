"""Mutation: remove the egress of B3 (the Osaka BIND server's subnet) in a copy of the reference
topology. On AWS its first-boot ``dnf install bind`` would fail and named would never run; the build
must refuse to launch it and say why, and the twin must not start a named that AWS would not have.
"""

from __future__ import annotations

import dns.message
import dns.query
import dns.rdatatype
import pytest

from regionha import bind, netguard
from regionha.aws import tag_spec
from regionha.topology import load_topology
from regionha.watch.canary import client_source

pytestmark = pytest.mark.integration


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


def without_b3_egress():
    topology = load_topology()
    osaka = topology.vpc("osaka").model_copy(update={"gateway_endpoints": []})
    return topology.model_copy(update={"vpcs": [osaka if v.name == "osaka" else v for v in topology.vpcs]})


def answers(server: str, source: str) -> bool:
    query = dns.message.make_query("sample.cluster.local.", dns.rdatatype.A)
    try:
        dns.query.udp(query, server, timeout=1.0, source=source)
    except (dns.exception.Timeout, OSError):
        return False
    return True


def test_without_egress_in_b3_the_build_says_why_and_the_osaka_forwarder_never_comes_up():
    from regionha.local.runtime import LocalRuntime, local_topology

    topology = local_topology(without_b3_egress())
    with LocalRuntime(topology, compression=20.0) as runtime:
        execution = runtime.build()

        assert execution.status == "FAILED"
        assert "instance osaka-bind" in execution.cause
        assert "subnet B3 has no egress" in execution.cause
        assert "route table B3-rt has no S3 gateway endpoint route" in execution.cause

        # Launched anyway (by hand, past the build's check): the twin installs nothing either.
        path = next(p for p in topology.forwarder_paths if p.kind == "bind")
        ec2 = runtime.clients.ec2(topology.region_of(path.vpc))
        subnet = ec2.describe_subnets(Filters=[{"Name": "tag:regionha:name", "Values": [path.subnet]}])["Subnets"][0]
        group = ec2.describe_security_groups(
            Filters=[{"Name": "tag:regionha:name", "Values": [path.security_group]},
                     {"Name": "vpc-id", "Values": [subnet["VpcId"]]}]
        )["SecurityGroups"][0]
        ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"],
            PrivateIpAddress=str(path.ip), SecurityGroupIds=[group["GroupId"]],
            UserData=bind.user_data(bind.render_forwarder_conf(topology, path.name)),
            TagSpecifications=tag_spec("instance", topology.deployment, path.name),
        )
        runtime.settle()
        states = runtime.fleet.reconcile()
        assert states[path.name].startswith("not installed: dnf cannot reach the repositories: route table B3-rt")
        assert path.name not in runtime.fleet.processes
        src = netguard.to_local(client_source(topology))
        assert not answers(netguard.to_local(str(path.ip)), src)
