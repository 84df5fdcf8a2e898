"""Converge EC2 instances: the NAT instances, the BIND servers and the cluster nodes.

An instance is found by its tags (deployment + logical name). Its private IP is fixed by the
topology, it never gets a public IP (the NAT instance excepted), IMDSv2 is required.

Drift policy, since some fixes need the instance stopped:
- security groups, IMDSv2, the role tag: fixed in place;
- user data or instance type: a stopped instance is modified and left stopped (whoever stopped it
  meant it); a running one is stopped, modified and started again. A ``regionha:restarting`` tag
  marks such a restart, so that a run interrupted between stop and start finishes it next time
  instead of leaving the instance stopped. For a cluster node this restart is a failover event.
- subnet or private IP: cannot change in place: ConfigurationError (tear the instance down).
- a newer AMI is not drift: instances are not replaced when the SSM parameter moves.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from regionha.aws import TAG_NAME, deployment_filter, tag_value, tags
from regionha.converge import Outcome, idempotency_token
from regionha.converge.network import (
    converge_security_group,
    find_security_group,
    find_subnet,
    paginate,
    require_route_table,
    require_vpc_id,
    route_tables_by_name,
)
from regionha.converge.routes import converge_route, table_outcome
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Ingress, SecurityGroup, Topology, Vpc

TAG_ROLE = "regionha:role"
TAG_RESTARTING = "regionha:restarting"
ROLES = ("bind", "node", "nat")
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# Roles whose user-data runs ``dnf install`` (BIND servers: bind; NAT instances: iptables-services).
INSTALLS_PACKAGES = ("bind", "nat")

NAT_USER_DATA = """#!/bin/bash
# regionha NAT instance: forward and masquerade the traffic of the VPC's private subnets.
set -euo pipefail
dnf install -y iptables-services
echo 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-regionha-nat.conf
sysctl -p /etc/sysctl.d/90-regionha-nat.conf
iface=$(ip route show default | awk '{{print $5; exit}}')
iptables -F FORWARD
iptables -t nat -A POSTROUTING -o "$iface" -s {cidr} -j MASQUERADE
service iptables save
systemctl enable --now iptables
"""


def nat_user_data(vpc: Vpc) -> str:
    return NAT_USER_DATA.format(cidr=vpc.cidr)


def find_ami(topology: Topology, region: str, clients: Any) -> str:
    """The AMI id the SSM public parameter ``instances.ami_parameter`` names in this region.

    IAM: ssm:GetParameter (on the public parameter).
    """
    name = topology.instances.ami_parameter
    try:
        return clients.ssm(region).get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ParameterNotFound":
            raise ConfigurationError(f"instances.ami_parameter: {name} does not exist in {region}") from e
        raise


def find_instances(ec2: Any, deployment: str, name: str | None = None, filters: list | None = None) -> list[dict]:
    """This deployment's instances (every state, terminated included). IAM: ec2:DescribeInstances."""
    return [
        i
        for r in paginate(
            ec2,
            "describe_instances",
            "Reservations",
            Filters=[*deployment_filter(deployment, name), *(filters or [])],
        )
        for i in r["Instances"]
    ]


def primary_eni(instance: dict[str, Any]) -> dict[str, Any]:
    return next(n for n in instance["NetworkInterfaces"] if n.get("Attachment", {}).get("DeviceIndex", 0) == 0)


def converge_instance(
    topology: Topology,
    *,
    name: str,
    vpc_name: str,
    subnet: str,
    ip: str,
    security_group: str,
    role: str,
    user_data: str,
    clients: Any,
    run_id: str,
    instance_type: str | None = None,
    deadline: float | None = None,
) -> list[Outcome]:
    """One instance with a fixed private IP, no public IP, IMDSv2 required, tagged with its role.

    ``deadline`` (``time.monotonic()`` seconds) bounds a drift restart's wait for the instance to stop:
    a handler passes its Lambda remaining time minus a margin, so the wait never runs into the function's
    timeout; past it NotReadyError, and the next attempt finishes the restart (``regionha:restarting``).

    A stopped instance stays stopped; a terminated one is replaced (its ClientToken counts the
    terminated instances of that name, so it differs from the one that made the old instance).
    IAM: ec2:DescribeVpcs, ec2:DescribeSubnets, ec2:DescribeSecurityGroups, ec2:DescribeInstances,
    ec2:DescribeInstanceAttribute, ec2:RunInstances, ec2:CreateTags, ec2:DeleteTags,
    ec2:ModifyInstanceAttribute, ec2:ModifyInstanceMetadataOptions, ec2:StopInstances,
    ec2:StartInstances, ssm:GetParameter, and before launching: ec2:DescribeRouteTables,
    ec2:DescribeVpcEndpoints (``require_package_egress``; nodes install nothing and skip it).
    """
    outcomes, _ = _converge_instance(
        topology,
        clients,
        run_id,
        name=name,
        vpc_name=vpc_name,
        subnet=subnet,
        ip=ip,
        security_group=security_group,
        role=role,
        user_data=user_data,
        instance_type=instance_type,
        deadline=deadline,
    )
    return outcomes


def _converge_instance(
    topology: Topology,
    clients: Any,
    run_id: str,
    *,
    name: str,
    vpc_name: str,
    subnet: str,
    ip: str | None,
    security_group: str,
    role: str,
    user_data: str,
    instance_type: str | None,
    deadline: float | None = None,
) -> tuple[list[Outcome], dict[str, Any]]:
    if role not in ROLES:
        raise ConfigurationError(f"instance {name}: role {role!r} is not one of {', '.join(ROLES)}")
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    vpc_id = require_vpc_id(topology, vpc_name, clients)
    found_subnet = find_subnet(ec2, topology.deployment, vpc_id, subnet)
    found_sg = find_security_group(ec2, topology.deployment, vpc_id, security_group)
    if found_subnet is None or found_sg is None:
        raise NotReadyError(f"instance {name}: subnet {subnet} or security group {security_group} not built yet")
    subnet_id, sg_id = found_subnet["SubnetId"], found_sg["GroupId"]
    instance_type = instance_type or topology.instances.instance_type

    instances = find_instances(ec2, topology.deployment, name)
    live = [i for i in instances if i["State"]["Name"] in LIVE_STATES]
    if len(live) > 1:
        ids = ", ".join(i["InstanceId"] for i in live)
        raise ConfigurationError(f"instance {name}: {len(live)} instances carry this name ({ids}); terminate the extra")
    if live:
        instance = live[0]
        changed = _fix_instance(
            ec2,
            topology,
            instance,
            subnet_id=subnet_id,
            ip=ip,
            sg_id=sg_id,
            role=role,
            user_data=user_data,
            instance_type=instance_type,
            deadline=deadline,
        )
        action = "updated" if changed else "unchanged"
        return [Outcome("instance", name, action, instance["InstanceId"], vpc.region)], instance
    if any(i["State"]["Name"] == "shutting-down" for i in instances):
        # Its private IP is not free until it has terminated.
        raise NotReadyError(f"instance {name}: the previous instance is still shutting down")

    if role in INSTALLS_PACKAGES:
        # Its user-data installs packages once, at the first boot: without egress then, never.
        require_package_egress(ec2, topology, name=name, vpc_name=vpc_name, subnet=found_subnet,
                               public_ip=role == "nat")
    terminated = sum(i["State"]["Name"] == "terminated" for i in instances)
    interface: dict[str, Any] = {
        "DeviceIndex": 0,
        "SubnetId": subnet_id,
        "Groups": [sg_id],
        # Explicit, so that an instance in a public subnet (MapPublicIpOnLaunch) gets none either.
        "AssociatePublicIpAddress": role == "nat",
    }
    if ip is not None:
        interface["PrivateIpAddress"] = ip
    instance_tags = [*tags(topology.deployment, name), {"Key": TAG_ROLE, "Value": role}]
    instance = ec2.run_instances(
        ImageId=find_ami(topology, vpc.region, clients),
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[interface],
        UserData=user_data,
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        TagSpecifications=[
            {"ResourceType": kind, "Tags": instance_tags} for kind in ("instance", "volume", "network-interface")
        ],
        ClientToken=idempotency_token(topology.deployment, name, run_id, str(terminated)),
    )["Instances"][0]
    if instance["State"]["Name"] not in LIVE_STATES:
        # EC2 answered a reused ClientToken with the instance it made then, since terminated.
        raise ConfigurationError(
            f"instance {name}: RunInstances returned {instance['InstanceId']} in state "
            f"{instance['State']['Name']}; start a new run (new run id)"
        )
    return [Outcome("instance", name, "created", instance["InstanceId"], vpc.region)], instance


def _route_table_of(ec2: Any, subnet: dict[str, Any]) -> dict[str, Any] | None:
    """The subnet's route table: its explicit association, else the VPC's main table."""
    for filters in (
        [{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}],
        [{"Name": "vpc-id", "Values": [subnet["VpcId"]]}, {"Name": "association.main", "Values": ["true"]}],
    ):
        tables = list(paginate(ec2, "describe_route_tables", "RouteTables", Filters=filters))
        if tables:
            return tables[0]
    return None


def package_egress(ec2: Any, region: str, subnet: dict[str, Any], *, public_ip: bool) -> str | None:
    """None when an instance in ``subnet`` reaches the Amazon Linux repositories (S3 in ``region``):
    an S3 gateway endpoint route in its table, or a 0.0.0.0/0 route to a NAT (instance or gateway), or
    to an internet gateway for an instance with a public IP. Otherwise what is missing.

    IAM: ec2:DescribeRouteTables, ec2:DescribeVpcEndpoints.
    """
    table = _route_table_of(ec2, subnet)
    if table is None:
        return "the subnet has no route table"
    label = tag_value(table, TAG_NAME) or table["RouteTableId"]
    active = [r for r in table.get("Routes", []) if r.get("State", "active") == "active"]
    endpoint_ids = [r["GatewayId"] for r in active
                    if r.get("DestinationPrefixListId") and str(r.get("GatewayId", "")).startswith("vpce-")]
    if endpoint_ids:
        endpoints = ec2.describe_vpc_endpoints(VpcEndpointIds=endpoint_ids)["VpcEndpoints"]
        s3 = f"com.amazonaws.{region}.s3"
        if any(e.get("ServiceName") == s3 and e.get("State", "").lower() in ("available", "pending")
               for e in endpoints):
            return None
    default = next((r for r in active if r.get("DestinationCidrBlock") == "0.0.0.0/0"), None)
    if default is not None:
        if default.get("NetworkInterfaceId") or default.get("InstanceId") or default.get("NatGatewayId"):
            return None
        if str(default.get("GatewayId", "")).startswith("igw-"):
            if public_ip:
                return None
            return f"route table {label} sends 0.0.0.0/0 to the internet gateway, but the instance has no public IP"
    return f"route table {label} has no S3 gateway endpoint route and no default route to a NAT"


def require_package_egress(
    ec2: Any, topology: Topology, *, name: str, vpc_name: str, subnet: dict[str, Any], public_ip: bool
) -> None:
    """ConfigurationError (before RunInstances) when the instance's first-boot ``dnf install`` could not
    reach the repositories: on AWS it would run with its service never installed, silently."""
    region = topology.region_of(vpc_name)
    missing = package_egress(ec2, region, subnet, public_ip=public_ip)
    if missing is None:
        return
    subnet_name = tag_value(subnet, TAG_NAME) or subnet["SubnetId"]
    raise ConfigurationError(
        f"instance {name}: its user-data installs packages with dnf from the Amazon Linux repositories "
        f"(S3 in {region}), but subnet {subnet_name} has no egress to them: {missing}; give VPC {vpc_name} "
        "`gateway_endpoints: [{service: s3, route_tables: [...]}]` with that route table, or a 0.0.0.0/0 "
        "route to its NAT instance"
    )


def _fix_instance(
    ec2: Any,
    topology: Topology,
    instance: dict[str, Any],
    *,
    subnet_id: str,
    ip: str | None,
    sg_id: str,
    role: str,
    user_data: str,
    instance_type: str,
    deadline: float | None = None,
) -> bool:
    """Fix an existing instance's drift (see the module docstring); True if anything changed."""
    iid = instance["InstanceId"]
    name = tag_value(instance, TAG_NAME)
    if instance.get("SubnetId") != subnet_id or (ip is not None and instance.get("PrivateIpAddress") != ip):
        raise ConfigurationError(
            f"instance {name}: {iid} is {instance.get('PrivateIpAddress')} in {instance.get('SubnetId')}, "
            f"the topology says {ip or 'any address'} in {subnet_id}; an instance cannot move: "
            "tear it down to rebuild"
        )
    changed = False
    if tag_value(instance, TAG_ROLE) != role:
        ec2.create_tags(Resources=[iid], Tags=[{"Key": TAG_ROLE, "Value": role}])
        changed = True
    groups = {g["GroupId"] for g in primary_eni(instance).get("Groups", [])}
    if groups != {sg_id}:
        ec2.modify_instance_attribute(InstanceId=iid, Groups=[sg_id])
        changed = True
    if instance.get("MetadataOptions", {}).get("HttpTokens") != "required":
        ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="required", HttpEndpoint="enabled")
        changed = True
    current = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"].get("Value")
    user_data_drift = (base64.b64decode(current) if current else b"") != user_data.encode()
    type_drift = instance["InstanceType"] != instance_type
    restarting = tag_value(instance, TAG_RESTARTING) is not None
    if user_data_drift or type_drift or restarting:
        _restart_with_changes(
            ec2,
            topology,
            instance,
            user_data=user_data if user_data_drift else None,
            instance_type=instance_type if type_drift else None,
            deadline=deadline,
        )
        changed = True
    return changed


def _restart_with_changes(
    ec2: Any,
    topology: Topology,
    instance: dict[str, Any],
    *,
    user_data: str | None,
    instance_type: str | None,
    deadline: float | None = None,
) -> None:
    iid = instance["InstanceId"]
    state = instance["State"]["Name"]
    restarting = tag_value(instance, TAG_RESTARTING) is not None
    drift = user_data is not None or instance_type is not None
    if restarting and state in ("pending", "running") and not drift:
        # An earlier run restarted it and stopped short of removing its mark.
        ec2.delete_tags(Resources=[iid], Tags=[{"Key": TAG_RESTARTING}])
        return
    if state == "stopped" and not restarting:
        _modify_stopped(ec2, iid, user_data=user_data, instance_type=instance_type)
        return
    if state == "stopping" and not restarting:
        raise NotReadyError(f"instance {iid}: stopping; its drift is fixed once it has stopped")
    if not restarting:
        ec2.create_tags(Resources=[iid], Tags=[{"Key": TAG_RESTARTING, "Value": "true"}])
    if state in ("pending", "running"):
        ec2.stop_instances(InstanceIds=[iid])
    _wait(ec2, "instance_stopped", [iid], topology, deadline=deadline)
    _modify_stopped(ec2, iid, user_data=user_data, instance_type=instance_type)
    ec2.start_instances(InstanceIds=[iid])
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": TAG_RESTARTING}])


def _modify_stopped(ec2: Any, iid: str, *, user_data: str | None, instance_type: str | None) -> None:
    if user_data is not None:
        # The Attribute/Value form takes the user data base64-encoded by the caller (EC2 user guide).
        ec2.modify_instance_attribute(
            InstanceId=iid, Attribute="userData", Value=base64.b64encode(user_data.encode()).decode()
        )
    if instance_type is not None:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": instance_type})


def _wait(
    ec2: Any, waiter: str, instance_ids: list[str], topology: Topology, deadline: float | None = None
) -> None:
    """A bounded boto3 waiter: ``waits.max_polls`` polls, fewer when ``deadline`` (monotonic seconds)
    comes first; running out is NotReadyError (the state machine retries)."""
    delay = topology.waits.poll_seconds
    attempts = topology.waits.max_polls
    if deadline is not None:
        attempts = max(1, min(attempts, int((deadline - time.monotonic()) // max(delay, 1))))
    try:
        ec2.get_waiter(waiter).wait(
            InstanceIds=instance_ids,
            WaiterConfig={"Delay": delay, "MaxAttempts": attempts},
        )
    except WaiterError as e:
        raise NotReadyError(f"{waiter} for {', '.join(instance_ids)}: {e}") from e


def converge_nat(topology: Topology, vpc_name: str, clients: Any, run_id: str) -> list[Outcome]:
    """The VPC's NAT instance (public IP, SourceDestCheck off, its own SG) and every ``nat`` route to its ENI.

    A VPC without ``nat_instance`` has nothing to do. The NAT security group admits everything from
    the VPC's CIDR and nothing else.
    IAM: those of ``converge_instance`` and of ``converge_security_group``, ec2:DescribeRouteTables,
    ec2:CreateRoute, ec2:ReplaceRoute.
    """
    vpc = topology.vpc(vpc_name)
    nat = vpc.nat_instance
    if nat is None:
        return []
    ec2 = clients.ec2(vpc.region)
    vpc_id = require_vpc_id(topology, vpc_name, clients)
    sg = SecurityGroup(
        name=f"{nat.name}-sg",
        description="NAT instance: everything from its VPC",
        ingress=[Ingress(protocol="all", cidr=vpc.cidr)],
    )
    outcomes = converge_security_group(ec2, topology.deployment, vpc.region, vpc_id, sg)
    instance_outcomes, instance = _converge_instance(
        topology,
        clients,
        run_id,
        name=nat.name,
        vpc_name=vpc_name,
        subnet=nat.subnet,
        ip=None,
        security_group=sg.name,
        role="nat",
        user_data=nat_user_data(vpc),
        instance_type=nat.instance_type,
    )
    outcomes += instance_outcomes
    iid = instance["InstanceId"]
    if instance.get("SourceDestCheck") is False:
        outcomes.append(Outcome("source_dest_check", nat.name, "unchanged", iid, vpc.region))
    else:
        # A NAT forwards packets that are neither from nor to itself.
        ec2.modify_instance_attribute(InstanceId=iid, SourceDestCheck={"Value": False})
        outcomes.append(Outcome("source_dest_check", nat.name, "updated", iid, vpc.region))
    eni = primary_eni(instance)["NetworkInterfaceId"]
    tables = route_tables_by_name(ec2, topology.deployment, vpc_id)
    for rt in vpc.route_tables:
        nat_routes = [r for r in rt.routes if r.target == "nat"]
        if not nat_routes:
            continue
        table = require_route_table(tables, rt.name)
        routes = [
            converge_route(ec2, table, rt.name, str(r.destination), ("NetworkInterfaceId", eni), vpc.region)
            for r in nat_routes
        ]
        outcomes += [table_outcome(table, rt.name, routes, vpc.region), *routes]
    return outcomes


def _expected_instances(topology: Topology, roles: tuple[str, ...]) -> dict[str, str]:
    """Logical name -> region of every instance the topology has in these roles."""
    expected: dict[str, str] = {}
    if "node" in roles:
        expected.update({n.name: topology.region_of(n.vpc) for n in topology.nodes})
    if "bind" in roles:
        expected.update({p.name: topology.region_of(p.vpc) for p in topology.forwarder_paths if p.kind == "bind"})
        if topology.client_vpc is not None:  # a real on-prem site's DNS server is not ours
            expected[topology.client.dns_server.name] = topology.region_of(topology.client_vpc)
    if "nat" in roles:
        expected.update({v.nat_instance.name: v.region for v in topology.vpcs if v.nat_instance})
    return expected


def instance_states(topology: Topology, clients: Any, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """Logical name -> state ("running", "stopped", ..., "missing") of the topology's instances.

    A read-only probe for a state machine's Wait/Choice loop. IAM: ec2:DescribeInstances.
    """
    expected = _expected_instances(topology, roles)
    states = dict.fromkeys(expected, "missing")
    for region in dict.fromkeys(expected.values()):
        for i in find_instances(clients.ec2(region), topology.deployment):
            name = tag_value(i, TAG_NAME)
            if name in states and (states[name] in ("missing", "terminated") or i["State"]["Name"] in LIVE_STATES):
                states[name] = i["State"]["Name"]
    return states


def wait_instances_running(topology: Topology, clients: Any, names: list[str] | None = None) -> dict[str, str]:
    """Wait, bounded by ``topology.waits``, until the named instances (default: all) run.

    Raises NotReadyError when the wait runs out and ConfigurationError for a missing instance.
    IAM: ec2:DescribeInstances.
    """
    expected = _expected_instances(topology, ROLES)
    names = list(expected) if names is None else names
    states = instance_states(topology, clients)
    missing = [n for n in names if states.get(n, "missing") not in LIVE_STATES]
    if missing:
        raise ConfigurationError(f"instances not built: {', '.join(missing)}")
    for region in dict.fromkeys(expected[n] for n in names):
        ec2 = clients.ec2(region)
        ids = [
            i["InstanceId"]
            for i in find_instances(ec2, topology.deployment, filters=[_state_filter(LIVE_STATES)])
            if tag_value(i, TAG_NAME) in names
        ]
        _wait(ec2, "instance_running", ids, topology)
    return {n: "running" for n in names}


def _state_filter(states: tuple[str, ...]) -> dict[str, Any]:
    return {"Name": "instance-state-name", "Values": list(states)}


def teardown_instances(
    topology: Topology, clients: Any, roles: tuple[str, ...] = ("node", "bind", "nat")
) -> list[Outcome]:
    """Terminate this deployment's instances in these roles, in every region, and wait (bounded).

    The wait matters: their ENIs hold the security groups and subnets that ``teardown_vpc`` deletes next.
    IAM: ec2:DescribeInstances, ec2:TerminateInstances.
    """
    outcomes = []
    role_filter = {"Name": f"tag:{TAG_ROLE}", "Values": list(roles)}
    for region in dict.fromkeys(v.region for v in topology.vpcs):
        ec2 = clients.ec2(region)
        found = find_instances(
            ec2, topology.deployment, filters=[role_filter, _state_filter((*LIVE_STATES, "shutting-down"))]
        )
        if not found:
            continue
        to_terminate = [i["InstanceId"] for i in found if i["State"]["Name"] != "shutting-down"]
        if to_terminate:
            ec2.terminate_instances(InstanceIds=to_terminate)
        _wait(ec2, "instance_terminated", [i["InstanceId"] for i in found], topology)
        outcomes += [
            Outcome("instance", tag_value(i, TAG_NAME) or "", "deleted", i["InstanceId"], region) for i in found
        ]
    seen = {o.name for o in outcomes}
    outcomes += [
        Outcome("instance", name, "absent", None, region)
        for name, region in _expected_instances(topology, roles).items()
        if name not in seen
    ]
    return outcomes
