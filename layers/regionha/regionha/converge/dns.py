"""Route 53 converge operations: the private hosted zone and the Resolver inbound endpoints (the record
itself: ``regionha.record``, re-exported here).

Each operation describes first, creates what is missing, fixes what drifted, and reports one
``Outcome`` per resource it looked at; a re-run with nothing to change writes nothing. Resources are
found by the deployment's tags (a hosted zone also by the comment it is created with, which, unlike
its tags, is set atomically at creation), so an interrupted step converges when re-run.

Route 53 is global (``clients.route53()``); Resolver is regional (``clients.route53resolver(region)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import ClientError

from regionha.aws import TAG_DEPLOYMENT, TAG_NAME, deployment_filter, tags
from regionha.converge import Outcome, idempotency_token
from regionha.errors import ConfigurationError, NotReadyError, TransientError
from regionha.record import (  # noqa: F401  (the record's run-time parts live in regionha.record; re-exported)
    RecordChanged,
    Swap,
    read_record,
    swap_record,
    upsert_record,
    wait_insync,
)
from regionha.record import find_zone as _find_zone
from regionha.record import our_zones as _our_zones
from regionha.record import zone_comment as _zone_comment
from regionha.record import zone_id as _zone_id
from regionha.topology.names import canonical_name

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import ResolverEndpointPath, Topology

# Route 53 takes at most 1000 changes per batch; smaller batches keep each request well inside it.
_CHANGE_BATCH = 100
# Resolver refuses IP changes unless the endpoint is settled.
_ENDPOINT_UPDATABLE = ("OPERATIONAL", "ACTION_NEEDED")
# IPs on their way out of an endpoint.
_IP_GOING = ("DELETING", "DELETE_FAILED_FAS_EXPIRED")
# Bounds every pagination loop: no account has this many pages of zones or endpoints.
_MAX_PAGES = 1000


def _error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


def _tag_dict(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list or []}


def _tags_drifted(have: dict[str, str], want: list[dict[str, str]]) -> bool:
    return any(have.get(t["Key"]) != t["Value"] for t in want)


# --- EC2 look-ups (the EC2 converge step creates these resources) ------------------------------------


def _one(items: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    if len(items) > 1:
        raise ConfigurationError(f"{what}: {len(items)} resources carry the same regionha tags, expected one")
    return items[0] if items else None


def _vpc_id(topology: Topology, clients: Clients, vpc_name: str) -> str:
    region = topology.region_of(vpc_name)
    vpcs = clients.ec2(region).describe_vpcs(Filters=deployment_filter(topology.deployment, vpc_name))["Vpcs"]
    vpc = _one(vpcs, f"VPC {vpc_name} in {region}")
    if vpc is None:
        raise ConfigurationError(
            f"VPC {vpc_name} of deployment {topology.deployment} not found in {region}; converge the VPCs first"
        )
    return vpc["VpcId"]


def _in_vpc(ec2: Any, operation: str, key: str, vpc_id: str, deployment: str, name: str, what: str) -> str:
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, *deployment_filter(deployment, name)]
    item = _one(getattr(ec2, operation)(Filters=filters)[key], what)
    if item is None:
        raise ConfigurationError(f"{what} of deployment {deployment} not found in {vpc_id}; converge VPCs first")
    return item["SubnetId"] if key == "Subnets" else item["GroupId"]


# --- hosted zone -------------------------------------------------------------------------------------


def converge_private_zone(topology: Topology, clients: Clients, run_id: str) -> list[Outcome]:
    """The private hosted zone, associated with exactly the VPCs of ``topology.dns.zone_vpcs``, tagged.

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:CreateHostedZone,
    route53:ChangeTagsForResource, route53:GetHostedZone, route53:AssociateVPCWithHostedZone,
    route53:DisassociateVPCFromHostedZone, ec2:DescribeVpcs (Route 53 also checks the caller's
    ec2:DescribeVpcs on each VPC it associates).
    """
    r53 = clients.route53()
    deployment, zone_name = topology.deployment, topology.dns.zone
    wanted: dict[tuple[str, str], str] = {}
    for vpc_name in topology.dns.zone_vpcs:
        wanted[(topology.region_of(vpc_name), _vpc_id(topology, clients, vpc_name))] = vpc_name
    want_tags = tags(deployment, zone_name)
    outcomes: list[Outcome] = []

    found = _find_zone(r53, topology)
    if found is None:
        region, vpc_id = next(iter(wanted))
        try:
            created = r53.create_hosted_zone(
                Name=topology.dns.zone_fqdn,
                CallerReference=idempotency_token(deployment, zone_name, run_id),
                VPC={"VPCRegion": region, "VPCId": vpc_id},
                HostedZoneConfig={"Comment": _zone_comment(deployment), "PrivateZone": True},
            )
        except ClientError as e:
            if _error_code(e) == "HostedZoneAlreadyExists":
                # An earlier attempt of this run created it; listing has not caught up yet.
                raise TransientError(f"zone {zone_name} created by this run is not listed yet") from e
            if _error_code(e) == "ConflictingDomainExists":
                raise ConfigurationError(
                    f"VPC {vpc_id} is already associated with another zone named {zone_name}"
                ) from e
            raise
        zone_id = _zone_id(created["HostedZone"])
        r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id, AddTags=want_tags)
        outcomes.append(Outcome("hosted_zone", zone_name, "created", zone_id))
        current = {(region, vpc_id)}
        created_with = (region, vpc_id)
    else:
        created_with = None
        zone, zone_tags = found
        zone_id = _zone_id(zone)
        if _tags_drifted(zone_tags, want_tags):
            r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id, AddTags=want_tags)
            outcomes.append(Outcome("hosted_zone", zone_name, "updated", zone_id))
        else:
            outcomes.append(Outcome("hosted_zone", zone_name, "unchanged", zone_id))
        current = {(v["VPCRegion"], v["VPCId"]) for v in r53.get_hosted_zone(Id=zone_id).get("VPCs", [])}

    # Associate before disassociating: Route 53 refuses to leave a private zone with no VPC.
    for (region, vpc_id), vpc_name in wanted.items():
        name = f"{zone_name}:{vpc_name}"
        if (region, vpc_id) in current:
            action = "created" if (region, vpc_id) == created_with else "unchanged"
            outcomes.append(Outcome("zone_vpc_association", name, action, vpc_id, region))
            continue
        try:
            r53.associate_vpc_with_hosted_zone(
                HostedZoneId=zone_id,
                VPC={"VPCRegion": region, "VPCId": vpc_id},
                Comment=f"regionha {deployment}",
            )
        except ClientError as e:
            if _error_code(e) == "ConflictingDomainExists":
                raise ConfigurationError(
                    f"VPC {vpc_name} ({vpc_id}) is already associated with another zone named {zone_name}"
                ) from e
            raise
        outcomes.append(Outcome("zone_vpc_association", name, "created", vpc_id, region))
    for region, vpc_id in sorted(current - wanted.keys()):
        r53.disassociate_vpc_from_hosted_zone(HostedZoneId=zone_id, VPC={"VPCRegion": region, "VPCId": vpc_id})
        outcomes.append(Outcome("zone_vpc_association", f"{zone_name}:{vpc_id}", "deleted", vpc_id, region))
    return outcomes


# --- Resolver inbound endpoints -----------------------------------------------------------------------


def _endpoint_path(topology: Topology, path_name: str) -> ResolverEndpointPath:
    path = next((p for p in topology.forwarder_paths if p.name == path_name), None)
    if path is None:
        raise ConfigurationError(f"no forwarder path named {path_name!r}")
    if path.kind != "resolver_endpoint":
        raise ConfigurationError(f"forwarder path {path_name!r} is a {path.kind}, not a Resolver endpoint")
    return path


def _endpoints(rr: Any) -> Iterator[dict[str, Any]]:
    for page in rr.get_paginator("list_resolver_endpoints").paginate(PaginationConfig={"MaxItems": _MAX_PAGES * 10}):
        yield from page["ResolverEndpoints"]


def _endpoint_tags(rr: Any, arn: str) -> dict[str, str]:
    return _tag_dict(rr.list_tags_for_resource(ResourceArn=arn).get("Tags"))


def _find_endpoint(rr: Any, topology: Topology, path_name: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    found = []
    for ep in _endpoints(rr):
        t = _endpoint_tags(rr, ep["Arn"])
        if t.get(TAG_DEPLOYMENT) == topology.deployment and t.get(TAG_NAME) == path_name:
            found.append((ep, t))
    if len(found) > 1:
        ids = ", ".join(ep["Id"] for ep, _ in found)
        raise ConfigurationError(f"Resolver endpoints {ids} all carry the tags of forwarder path {path_name}")
    return found[0] if found else None


def _endpoint_ips(rr: Any, endpoint_id: str) -> list[dict[str, Any]]:
    paginator = rr.get_paginator("list_resolver_endpoint_ip_addresses")
    ips = []
    for page in paginator.paginate(ResolverEndpointId=endpoint_id):
        ips += [ip for ip in page["IpAddresses"] if ip.get("Status") not in _IP_GOING]
    return ips


def _not_ready_or_raise(rr: Any, endpoint_id: str, e: ClientError) -> NoReturn:
    """Resolver refuses IP changes while an earlier one settles: that is worth a retry, nothing else is."""
    if _error_code(e) in ("InvalidRequestException", "ResourceInUseException"):
        status = rr.get_resolver_endpoint(ResolverEndpointId=endpoint_id)["ResolverEndpoint"]["Status"]
        if status not in _ENDPOINT_UPDATABLE:
            raise NotReadyError(f"Resolver endpoint {endpoint_id} is {status}") from e
    raise e


def converge_resolver_endpoint(topology: Topology, path_name: str, clients: Clients, run_id: str) -> list[Outcome]:
    """The Route 53 Resolver INBOUND endpoint of a ``resolver_endpoint`` forwarder path: its name, the
    path's security group, exactly the path's fixed IPs in their subnets, the deployment's tags.

    A security group or VPC that differs cannot be changed on an endpoint: that is a
    ConfigurationError (tear the endpoint down and converge again).

    IAM: route53resolver:ListResolverEndpoints, route53resolver:ListTagsForResource,
    route53resolver:CreateResolverEndpoint, route53resolver:UpdateResolverEndpoint,
    route53resolver:TagResource, route53resolver:GetResolverEndpoint,
    route53resolver:ListResolverEndpointIpAddresses, route53resolver:AssociateResolverEndpointIpAddress,
    route53resolver:DisassociateResolverEndpointIpAddress, ec2:DescribeVpcs, ec2:DescribeSubnets,
    ec2:DescribeSecurityGroups, and for Resolver's ENIs ec2:CreateNetworkInterface,
    ec2:DescribeNetworkInterfaces, ec2:CreateNetworkInterfacePermission, ec2:DeleteNetworkInterface.
    """
    path = _endpoint_path(topology, path_name)
    deployment = topology.deployment
    region = topology.region_of(path.vpc)
    ec2, rr = clients.ec2(region), clients.route53resolver(region)
    vpc_id = _vpc_id(topology, clients, path.vpc)
    sg_id = _in_vpc(
        ec2,
        "describe_security_groups",
        "SecurityGroups",
        vpc_id,
        deployment,
        path.security_group,
        f"security group {path.security_group} of VPC {path.vpc}",
    )
    subnet_ids = {
        name: _in_vpc(ec2, "describe_subnets", "Subnets", vpc_id, deployment, name, f"subnet {name} of {path.vpc}")
        for name in dict.fromkeys(e.subnet for e in path.ips)
    }
    wanted = {(subnet_ids[e.subnet], str(e.ip)): e.subnet for e in path.ips}
    want_tags = tags(deployment, path.name)

    found = _find_endpoint(rr, topology, path.name)
    if found is None:
        token = idempotency_token(deployment, path.name, run_id)
        try:
            ep = rr.create_resolver_endpoint(
                CreatorRequestId=token,
                Name=path.endpoint_name,
                SecurityGroupIds=[sg_id],
                Direction="INBOUND",
                IpAddresses=[{"SubnetId": s, "Ip": ip} for s, ip in wanted],
                Tags=want_tags,
            )["ResolverEndpoint"]
        except ClientError as e:
            if _error_code(e) != "ResourceExistsException":
                raise
            # An earlier attempt of this run created it (with its tags): report it as this run's.
            same = rr.list_resolver_endpoints(Filters=[{"Name": "CreatorRequestId", "Values": [token]}])
            if not same["ResolverEndpoints"]:
                raise TransientError(f"endpoint of {path.name} created by this run is not listed yet") from e
            ep = same["ResolverEndpoints"][0]
        return [
            Outcome("resolver_endpoint", path.name, "created", ep["Id"], region),
            *(Outcome("resolver_endpoint_ip", f"{path.name}:{ip}", "created", s, region) for s, ip in wanted),
        ]

    ep, ep_tags = found
    endpoint_id, status = ep["Id"], ep["Status"]
    if status == "DELETING":
        raise NotReadyError(f"Resolver endpoint {endpoint_id} of {path.name} is being deleted")
    shape = (ep.get("Direction"), ep.get("HostVPCId"), sorted(ep["SecurityGroupIds"]))
    if shape != ("INBOUND", vpc_id, [sg_id]):
        raise ConfigurationError(
            f"Resolver endpoint {endpoint_id} of {path.name} must be INBOUND in {vpc_id} with only {sg_id}, "
            f"is {shape[0]} in {shape[1]} with {shape[2]}; these cannot be changed on an endpoint: "
            "tear it down and converge again"
        )

    outcomes: list[Outcome] = []
    changed = False
    if ep.get("Name") != path.endpoint_name:
        rr.update_resolver_endpoint(ResolverEndpointId=endpoint_id, Name=path.endpoint_name)
        changed = True
    if _tags_drifted(ep_tags, want_tags):
        rr.tag_resource(ResourceArn=ep["Arn"], Tags=want_tags)
        changed = True

    have = {(ip["SubnetId"], ip["Ip"]): ip["IpId"] for ip in _endpoint_ips(rr, endpoint_id)}
    missing = [k for k in wanted if k not in have]
    extra = [k for k in have if k not in wanted]
    if (missing or extra) and status not in _ENDPOINT_UPDATABLE:
        raise NotReadyError(f"Resolver endpoint {endpoint_id} of {path.name} is {status}; its IPs drifted")
    # Add before removing: an endpoint must keep at least two IPs at all times.
    for subnet_id, ip in missing:
        try:
            rr.associate_resolver_endpoint_ip_address(
                ResolverEndpointId=endpoint_id, IpAddress={"SubnetId": subnet_id, "Ip": ip}
            )
        except ClientError as e:
            _not_ready_or_raise(rr, endpoint_id, e)
        outcomes.append(Outcome("resolver_endpoint_ip", f"{path.name}:{ip}", "created", subnet_id, region))
    for subnet_id, ip in extra:
        try:
            rr.disassociate_resolver_endpoint_ip_address(
                ResolverEndpointId=endpoint_id,
                IpAddress={"IpId": have[(subnet_id, ip)], "SubnetId": subnet_id, "Ip": ip},
            )
        except ClientError as e:
            _not_ready_or_raise(rr, endpoint_id, e)
        outcomes.append(Outcome("resolver_endpoint_ip", f"{path.name}:{ip}", "deleted", subnet_id, region))
    outcomes += [
        Outcome("resolver_endpoint_ip", f"{path.name}:{ip}", "unchanged", subnet_id, region)
        for subnet_id, ip in wanted
        if (subnet_id, ip) in have
    ]

    action = "updated" if changed or missing or extra else "unchanged"
    return [Outcome("resolver_endpoint", path.name, action, endpoint_id, region), *outcomes]


def resolver_endpoint_status(topology: Topology, path_name: str, clients: Clients) -> str:
    """The Resolver endpoint's status ("OPERATIONAL", "CREATING", "UPDATING", "DELETING", "ACTION_NEEDED",
    ...) or "missing". Read-only.

    IAM: route53resolver:ListResolverEndpoints, route53resolver:ListTagsForResource.
    """
    path = _endpoint_path(topology, path_name)
    found = _find_endpoint(clients.route53resolver(topology.region_of(path.vpc)), topology, path.name)
    return found[0]["Status"] if found else "missing"


# --- teardown -----------------------------------------------------------------------------------------


def teardown_dns(topology: Topology, clients: Clients) -> list[Outcome]:
    """Delete the deployment's Resolver endpoints (in every region of the topology), then its zone:
    every record but the apex SOA/NS, every VPC association Route 53 lets go, the zone. Works on a
    half-built deployment; a second run reports everything absent.

    Resolver deletes an endpoint asynchronously (minutes on AWS) and its ENIs keep the subnets and the
    security group in use until then: poll ``resolver_endpoint_status`` until "missing" before
    deleting those.

    IAM: route53resolver:ListResolverEndpoints, route53resolver:ListTagsForResource,
    route53resolver:DeleteResolverEndpoint, route53:ListHostedZonesByName, route53:ListTagsForResources,
    route53:ListResourceRecordSets, route53:ChangeResourceRecordSets, route53:GetHostedZone,
    route53:DisassociateVPCFromHostedZone, route53:DeleteHostedZone, and for Resolver's ENIs
    ec2:DeleteNetworkInterface, ec2:DescribeNetworkInterfaces.
    """
    deployment = topology.deployment
    outcomes: list[Outcome] = []

    seen: set[str] = set()
    for region in sorted({v.region for v in topology.vpcs}):
        rr = clients.route53resolver(region)
        for ep in _endpoints(rr):
            t = _endpoint_tags(rr, ep["Arn"])
            if t.get(TAG_DEPLOYMENT) != deployment:
                continue
            name = t.get(TAG_NAME) or ep.get("Name") or ep["Id"]
            seen.add(name)
            if ep["Status"] != "DELETING":
                try:
                    rr.delete_resolver_endpoint(ResolverEndpointId=ep["Id"])
                except ClientError as e:
                    if _error_code(e) != "ResourceNotFoundException":
                        raise
            outcomes.append(Outcome("resolver_endpoint", name, "deleted", ep["Id"], region))
    for path in topology.forwarder_paths:
        if path.kind == "resolver_endpoint" and path.name not in seen:
            region = topology.region_of(path.vpc)
            outcomes.append(Outcome("resolver_endpoint", path.name, "absent", region=region))

    r53 = clients.route53()
    zone_name, apex = topology.dns.zone, canonical_name(topology.dns.zone_fqdn)
    zones = _our_zones(r53, topology)
    if not zones:
        outcomes.append(Outcome("hosted_zone", zone_name, "absent"))
    for zone, _ in zones:
        zone_id = _zone_id(zone)
        doomed = [
            rrs
            for page in r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
            for rrs in page["ResourceRecordSets"]
            # Route 53 keeps the apex SOA and NS itself and deletes them with the zone.
            if not (canonical_name(rrs["Name"]) == apex and rrs["Type"] in ("SOA", "NS"))
        ]
        for i in range(0, len(doomed), _CHANGE_BATCH):
            batch = doomed[i : i + _CHANGE_BATCH]
            r53.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Comment": f"regionha {deployment}: teardown",
                    "Changes": [{"Action": "DELETE", "ResourceRecordSet": rrs} for rrs in batch],
                },
            )
            outcomes += [Outcome("record", f"{r['Name']}:{r['Type']}", "deleted", zone_id) for r in batch]
        # Route 53 never lets go of the last VPC; deleting the zone releases it.
        for v in r53.get_hosted_zone(Id=zone_id).get("VPCs", [])[1:]:
            r53.disassociate_vpc_from_hosted_zone(HostedZoneId=zone_id, VPC=v)
            name = f"{zone_name}:{v['VPCId']}"
            outcomes.append(Outcome("zone_vpc_association", name, "deleted", v["VPCId"], v["VPCRegion"]))
        r53.delete_hosted_zone(Id=zone_id)
        outcomes.append(Outcome("hosted_zone", zone_name, "deleted", zone_id))
    return outcomes
