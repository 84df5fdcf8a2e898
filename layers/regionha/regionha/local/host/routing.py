"""Routing of the local runtime: would a packet between two addresses of the deployment get there and back?

moto keeps route tables, peerings, gateways and endpoints but forwards nothing. ``Routing.read()``
takes one snapshot of them across the deployment's regions; ``path(src, dst)`` then decides a flow
as the VPC router would (Amazon VPC user guide, "Route priority" and "Route table concepts"):

- the route table of the subnet is its explicit association, else the VPC's main table;
- the most specific route that contains the destination wins (longest prefix match); a route in
  state ``blackhole`` drops; a gateway endpoint's prefix-list route is used for its service only;
- ``local`` delivers inside the VPC; a VPC peering delivers only to the peer VPC's CIDR (no
  transitive routing) and only while it is ``active``; an internet gateway carries only traffic of an
  address with a public IP (and never to a private address); a NAT instance forwards only while it
  runs with the source/destination check off, and then its own subnet's routes apply;
- an on-prem client site is a network of its own beyond its given links: its router sends each link's
  ``routes`` over that link's virtual private gateway, which delivers only into the VPC it is attached
  to; a VPC route to a virtual private gateway carries traffic only while the gateway is attached to
  that VPC, and only to the site's network (a detached gateway's route is a blackhole);
- a reply needs the same from the destination's subnet back to the source: both directions count.

``egress(src, service)`` answers the same for the regional endpoint of an AWS service (S3, where the
Amazon Linux 2023 repositories live): a gateway endpoint route to the service's prefix list, or a path
to the internet. Pure over the snapshot; no packet is ever sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import TAG_NAME, Clients, deployment_filter, tag_value
from regionha.topology import Topology

Address = ipaddress.IPv4Address
OPEN = "open"
MAX_HOPS = 4  # a NAT instance forwards once; more hops mean a routing loop
# A stand-in for "an address on the internet" (the regional S3 endpoint): matched against route
# tables only, never contacted.
INTERNET = ipaddress.IPv4Address("52.219.0.1")


def longest_prefix_match(routes: Iterable[Mapping[str, Any]], dst: Address) -> Mapping[str, Any] | None:
    """The route whose ``DestinationCidrBlock`` holds ``dst`` with the longest prefix (None: no route)."""
    best: tuple[int, Mapping[str, Any]] | None = None
    for route in routes:
        cidr = route.get("DestinationCidrBlock")
        if not cidr:
            continue
        network = ipaddress.IPv4Network(cidr, strict=False)
        if dst in network and (best is None or network.prefixlen > best[0]):
            best = (network.prefixlen, route)
    return best[1] if best else None


def _is_public(address: Address) -> bool:
    return address.is_global


@dataclass
class Routing:
    """One snapshot of the deployment's routing state (every region of the topology)."""

    vpcs: dict[str, dict[str, Any]] = field(default_factory=dict)  # VpcId -> {"cidr", "region", "name"}
    subnets: list[dict[str, Any]] = field(default_factory=list)  # DescribeSubnets + "Region"
    tables: list[dict[str, Any]] = field(default_factory=list)  # DescribeRouteTables + "Region"
    peerings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (region, pcx id)
    instances: list[dict[str, Any]] = field(default_factory=list)  # DescribeInstances + "Region"
    igws: dict[str, set[str]] = field(default_factory=dict)  # VpcId -> attached IGW ids
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # vpce id -> DescribeVpcEndpoints
    prefix_lists: dict[tuple[str, str], str] = field(default_factory=dict)  # (region, pl id) -> name
    vpn_gateways: dict[str, dict[str, Any]] = field(default_factory=dict)  # vgw id -> DescribeVpnGateways
    site: Site | None = None  # an on-prem client site: its network and given links (None: a VPC site)

    # -- reading ---------------------------------------------------------------------------------------

    @classmethod
    def read(cls, topology: Topology, clients: Clients) -> Routing:
        """IAM: ec2:DescribeVpcs, ec2:DescribeSubnets, ec2:DescribeRouteTables,
        ec2:DescribeVpcPeeringConnections, ec2:DescribeInstances, ec2:DescribeInternetGateways,
        ec2:DescribeVpcEndpoints, ec2:DescribePrefixLists."""
        snap = cls()
        for region in dict.fromkeys(v.region for v in topology.vpcs):
            ec2 = clients.ec2(region)
            vpcs = ec2.describe_vpcs(Filters=deployment_filter(topology.deployment))["Vpcs"]
            ids = [v["VpcId"] for v in vpcs]
            for v in vpcs:
                snap.vpcs[v["VpcId"]] = {"cidr": v["CidrBlock"], "region": region, "name": tag_value(v, TAG_NAME)}
            if not ids:
                continue
            in_vpcs = [{"Name": "vpc-id", "Values": ids}]
            snap.subnets += [{**s, "Region": region} for s in _all(ec2, "describe_subnets", "Subnets", in_vpcs)]
            snap.tables += [
                {**t, "Region": region} for t in _all(ec2, "describe_route_tables", "RouteTables", in_vpcs)
            ]
            for pcx in _all(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections", None):
                snap.peerings[(region, pcx["VpcPeeringConnectionId"])] = pcx
            snap.instances += [
                {**i, "Region": region}
                for r in _all(ec2, "describe_instances", "Reservations", in_vpcs)
                for i in r["Instances"]
                if i["State"]["Name"] != "terminated"
            ]
            for igw in _all(ec2, "describe_internet_gateways", "InternetGateways",
                            [{"Name": "attachment.vpc-id", "Values": ids}]):
                for a in igw.get("Attachments", []):
                    if a.get("State") in ("available", "attached"):
                        snap.igws.setdefault(a["VpcId"], set()).add(igw["InternetGatewayId"])
            for ep in _all(ec2, "describe_vpc_endpoints", "VpcEndpoints", in_vpcs):
                snap.endpoints[ep["VpcEndpointId"]] = ep
            for pl in ec2.describe_prefix_lists()["PrefixLists"]:
                snap.prefix_lists[(region, pl["PrefixListId"])] = pl["PrefixListName"]
        read_site(snap, topology, clients)
        return snap

    # -- lookups ---------------------------------------------------------------------------------------

    def subnet_of(self, address: Address) -> dict[str, Any] | None:
        for s in self.subnets:
            if address in ipaddress.IPv4Network(s["CidrBlock"]):
                return s
        return None

    def table_of(self, subnet: Mapping[str, Any]) -> dict[str, Any] | None:
        mine = [t for t in self.tables if t["VpcId"] == subnet["VpcId"]]
        for t in mine:
            for a in t.get("Associations", []):
                state = a.get("AssociationState", {}).get("State")
                if a.get("SubnetId") == subnet["SubnetId"] and state != "disassociated":
                    return t
        return next((t for t in mine if any(a.get("Main") for a in t.get("Associations", []))), None)

    def _instance(self, *, ip: Address | None = None, eni: str | None = None, iid: str | None = None) -> dict | None:
        for i in self.instances:
            if iid is not None and i["InstanceId"] == iid:
                return i
            for n in i.get("NetworkInterfaces", []):
                if eni is not None and n.get("NetworkInterfaceId") == eni:
                    return i
                private = [p.get("PrivateIpAddress") for p in n.get("PrivateIpAddresses", [])]
                if ip is not None and str(ip) in private:
                    return i
            if ip is not None and i.get("PrivateIpAddress") == str(ip):
                return i
        return None

    def _table_name(self, table: Mapping[str, Any]) -> str:
        return tag_value(table, TAG_NAME) or table["RouteTableId"]

    def _subnet_name(self, subnet: Mapping[str, Any]) -> str:
        return tag_value(subnet, TAG_NAME) or subnet["SubnetId"]

    # -- decisions -------------------------------------------------------------------------------------

    def path(self, src: Address | str, dst: Address | str) -> str:
        """``"open"`` when packets from ``src`` reach ``dst`` and replies come back; else why not.

        A flow that a NAT instance forwarded arrives from the NAT's address (it masquerades), so the reply
        goes to the NAT, which alone can hand it back to ``src`` (its connection tracking). A reply that
        reaches it through another NAT instance arrives from that NAT's address, matches no connection
        and is dropped: the cluster nodes' default route through their NAT does not stand in for a
        deleted peering route (the sender times out)."""
        src, dst = Address(src), Address(dst)
        nats: list[Address] = []
        there = self.forward(src, dst, nats=nats)
        if there != OPEN:
            return there
        if nats:
            nat = nats[-1]
            back = self.forward(dst, nat, reply=True)
            return OPEN if back == OPEN else f"no way back to NAT instance {nat} (it masqueraded the flow): {back}"
        back = self.forward(dst, src)
        return OPEN if back == OPEN else f"no way back: {back}"

    def forward(self, src: Address, dst: Address, *, public: bool | None = None, hops: int = 0,
                prefix_list_service: str | None = None, nats: list[Address] | None = None,
                reply: bool = False) -> str:
        """One direction: ``"open"`` or the reason the VPC router drops it. ``public``: the sender has a
        public IP (looked up when None); ``prefix_list_service``: the destination belongs to that
        service's prefix list (a gateway endpoint's route then applies). ``nats`` collects the NAT
        instances that masqueraded the packet; ``reply``: the packet answers a masqueraded flow, and a
        NAT instance on its way would masquerade it again and so lose it."""
        if hops > MAX_HOPS:
            return "routing loop"
        subnet = self.subnet_of(src)
        if subnet is None and self.site is not None and src in self.site.cidr:
            return from_site(self, src, dst)
        if subnet is None:
            return f"{src} is in no subnet of the deployment"
        table = self.table_of(subnet)
        if table is None:
            return f"subnet {self._subnet_name(subnet)} has no route table"
        where = f"route table {self._table_name(table)}"
        routes = table.get("Routes", [])
        if prefix_list_service is not None:
            # A gateway endpoint's route is more specific than any CIDR route for its service's addresses.
            for r in routes:
                pl = r.get("DestinationPrefixListId")
                if pl and self.prefix_lists.get((subnet["Region"], pl)) == prefix_list_service:
                    ep = self.endpoints.get(r.get("GatewayId", ""))
                    if r.get("State", "active") == "active" and ep is not None and ep.get("State") == "available":
                        return OPEN
        route = longest_prefix_match(routes, dst)
        if route is None:
            return f"{where}: no route to {dst}"
        dest = route["DestinationCidrBlock"]
        if route.get("State") == "blackhole":
            return f"{where}: route {dest} is a blackhole"
        vpc = self.vpcs.get(subnet["VpcId"], {})
        gateway = route.get("GatewayId") or ""
        if gateway == "local":
            return OPEN if dst in ipaddress.IPv4Network(vpc.get("cidr", dest)) else f"{where}: {dst} not in the VPC"
        if route.get("VpcPeeringConnectionId"):
            return self._via_peering(route["VpcPeeringConnectionId"], subnet, dst, where)
        if gateway.startswith("vgw-"):
            return via_vpn_gateway(self, gateway, subnet, dst, where)
        if gateway.startswith("igw-"):
            if gateway not in self.igws.get(subnet["VpcId"], set()):
                return f"{where}: internet gateway {gateway} is not attached"
            if not _is_public(dst):
                return f"{where}: an internet gateway does not carry traffic to {dst}"
            if public is None:
                instance = self._instance(ip=src)
                public = bool(instance and instance.get("PublicIpAddress"))
            return OPEN if public else f"{where}: {src} has no public IP for the internet gateway"
        if route.get("NetworkInterfaceId") or route.get("InstanceId"):
            nat = self._instance(eni=route.get("NetworkInterfaceId"), iid=route.get("InstanceId"))
            if nat is None:
                return f"{where}: route {dest} leads to a missing instance"
            label = f"NAT instance {tag_value(nat, TAG_NAME) or nat['InstanceId']}"
            if nat["State"]["Name"] != "running":
                return f"{where}: {label} is {nat['State']['Name']}"
            if nat.get("SourceDestCheck", True):
                return f"{where}: {label} has its source/destination check on"
            if reply:
                return f"{where}: a reply through {label} arrives masqueraded, matching no connection"
            # It masquerades: from here on the packet is the NAT instance's own.
            if nats is not None:
                nats.append(Address(nat["PrivateIpAddress"]))
            return self.forward(Address(nat["PrivateIpAddress"]), dst, hops=hops + 1,
                                prefix_list_service=prefix_list_service, nats=nats)
        target = next((k for k in route if k.endswith("Id") and k != "DestinationPrefixListId"), "target")
        return f"{where}: route {dest} via {target} is not modelled locally"

    def _via_peering(self, pcx_id: str, subnet: Mapping[str, Any], dst: Address, where: str) -> str:
        pcx = self.peerings.get((subnet["Region"], pcx_id))
        if pcx is None:
            return f"{where}: peering {pcx_id} does not exist"
        status = pcx.get("Status", {}).get("Code")
        if status != "active":
            return f"{where}: peering {pcx_id} is {status}"
        sides = [pcx.get("RequesterVpcInfo", {}), pcx.get("AccepterVpcInfo", {})]
        if subnet["VpcId"] not in [s.get("VpcId") for s in sides]:
            return f"{where}: peering {pcx_id} does not connect this VPC"
        peer = next(s for s in sides if s.get("VpcId") != subnet["VpcId"])
        peer_cidr = self.vpcs.get(peer.get("VpcId", ""), {}).get("cidr") or peer.get("CidrBlock")
        if not peer_cidr or dst not in ipaddress.IPv4Network(peer_cidr):
            return f"{where}: {dst} is beyond peering {pcx_id}'s peer VPC (peering is not transitive)"
        return OPEN

    def egress(self, src: Address | str, service: str = "s3") -> str:
        """Can ``src`` reach the regional endpoint of ``service`` (its region's), and get the replies?
        Either a gateway endpoint route to the service's prefix list or a path to the internet."""
        src = Address(src)
        subnet = self.subnet_of(src)
        if subnet is None:
            return f"{src} is in no subnet of the deployment"
        name = f"com.amazonaws.{subnet['Region']}.{service}"
        return self.forward(src, INTERNET, prefix_list_service=name)


def _all(ec2: Any, operation: str, key: str, filters: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    kwargs = {"Filters": filters} if filters else {}
    if ec2.can_paginate(operation):
        return [item for page in ec2.get_paginator(operation).paginate(**kwargs) for item in page.get(key, [])]
    return list(getattr(ec2, operation)(**kwargs).get(key, []))


def fix_moto_endpoint_routes() -> None:
    """Make moto's ModifyVpcEndpoint move a gateway endpoint's prefix-list routes, as EC2 does.

    moto records the added/removed route table ids but leaves the routes where they were, so the
    twin's route tables would disagree with AWS's after a drift repair (and a later DeleteVpcEndpoints
    fails on the table that never got its route). Idempotent; patches the class for the process."""
    from moto.ec2.models.vpcs import VPCEndPoint

    if getattr(VPCEndPoint.modify, "_regionha", False):
        return
    original = VPCEndPoint.modify

    def modify(self: Any, policy_doc: Any, add_subnets: Any, remove_subnets: Any,
               add_route_tables: list[str] | None, remove_route_tables: list[str] | None, *rest: Any) -> None:
        adding = [t for t in add_route_tables or [] if t not in self.route_table_ids]
        removing = [t for t in remove_route_tables or [] if t in self.route_table_ids]
        original(self, policy_doc, add_subnets, remove_subnets, add_route_tables, remove_route_tables, *rest)
        prefix_list = getattr(self, "destination_prefix_list_id", None)
        if prefix_list:
            for table in adding:
                self.ec2_backend.create_route(table, None, gateway_id=self.id, destination_prefix_list_id=prefix_list)
            for table in removing:
                self.ec2_backend.delete_route(table, prefix_list)

    modify._regionha = True  # type: ignore[attr-defined]
    VPCEndPoint.modify = modify  # type: ignore[method-assign]


# --- an on-prem client site: its network and the given links (VPN / Direct Connect on a VGW) ------------
#
# AWS docs followed: Site-to-Site VPN User Guide "Virtual private gateway" (one VPC at a time; traffic
# from the link enters the attached VPC and is delivered by its local route), VPC User Guide "Route
# tables" (a route to a detached gateway is a blackhole). The site's own router is the user's: it sends
# each link's ``routes`` over that link (static routes or what BGP learnt), longest prefix first.


@dataclass(frozen=True)
class SiteLink:
    name: str
    gateway_id: str
    routes: tuple[ipaddress.IPv4Network, ...]


@dataclass(frozen=True)
class Site:
    """An on-prem client site as the VPC router sees it: a network beyond the links, not a subnet."""

    cidr: ipaddress.IPv4Network
    links: tuple[SiteLink, ...]


def read_site(snap: Routing, topology: Topology, clients: Clients) -> None:
    """Add an on-prem site and its links' gateways to ``snap`` (nothing for a VPC site).
    IAM: ec2:DescribeVpnGateways."""
    if not topology.client.onprem:
        return
    links = topology.client.links
    snap.site = Site(topology.client.cidr,
                     tuple(SiteLink(lk.name, lk.gateway_id, tuple(lk.routes)) for lk in links))
    for region in dict.fromkeys(topology.region_of(lk.vpc) for lk in links):
        ids = [lk.gateway_id for lk in links if topology.region_of(lk.vpc) == region]
        for gateway_id in ids:
            # One at a time: a gateway the user deleted must not hide the others (NotFound is per call).
            try:
                found = clients.ec2(region).describe_vpn_gateways(VpnGatewayIds=[gateway_id])["VpnGateways"]
            except ClientError as e:  # the link leads nowhere: its routes drop
                if e.response["Error"]["Code"] != "InvalidVpnGatewayID.NotFound":
                    raise
                found = []
            for gateway in found:
                if gateway.get("State") not in ("deleting", "deleted"):
                    snap.vpn_gateways[gateway["VpnGatewayId"]] = {**gateway, "Region": region}


def _attached_vpc(snap: Routing, gateway_id: str) -> str | None:
    gateway = snap.vpn_gateways.get(gateway_id)
    if gateway is None:
        return None
    return next((a["VpcId"] for a in gateway.get("VpcAttachments", []) if a.get("State") == "attached"), None)


def from_site(snap: Routing, src: Address, dst: Address) -> str:
    """One direction from the on-prem site: its router's longest matching link route, then that link's
    gateway, which delivers only into the VPC it is attached to."""
    assert snap.site is not None
    best: tuple[int, SiteLink] | None = None
    for link in snap.site.links:
        for net in link.routes:
            if dst in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, link)
    if best is None:
        return f"on-prem router: no link route holds {dst}"
    link = best[1]
    vpc_id = _attached_vpc(snap, link.gateway_id)
    if vpc_id is None:
        return f"link {link.name}: virtual private gateway {link.gateway_id} is not attached to a VPC"
    vpc = snap.vpcs.get(vpc_id)
    if vpc is None or dst not in ipaddress.IPv4Network(vpc["cidr"]):
        name = (vpc or {}).get("name") or vpc_id
        return f"link {link.name}: {dst} is not in VPC {name}, where its gateway {link.gateway_id} is attached"
    return OPEN


def via_vpn_gateway(snap: Routing, gateway_id: str, subnet: Mapping[str, Any], dst: Address, where: str) -> str:
    """A route to a virtual private gateway: carried only while the gateway is attached to this subnet's
    VPC (else the route is a blackhole), and only to the on-prem network beyond it."""
    if _attached_vpc(snap, gateway_id) != subnet["VpcId"]:
        return f"{where}: virtual private gateway {gateway_id} is not attached to this VPC (blackhole)"
    site = snap.site
    link = next((lk for lk in site.links if lk.gateway_id == gateway_id), None) if site is not None else None
    if site is None or link is None:
        return f"{where}: virtual private gateway {gateway_id} carries no link of the client site"
    if dst not in site.cidr:
        return f"{where}: {dst} is beyond link {link.name} (the on-prem network is {site.cidr})"
    return OPEN
