"""Can the client site reach what the topology builds? Decided from the model alone: no AWS call.

The flows regionha relies on, each checked in both directions:

- the on-prem DNS server to every forwarder path address, UDP and TCP 53 (the on-prem resolver
  forwards the zone there; TCP for truncated answers), and the answers back;
- the client network to the on-prem DNS server, UDP and TCP 53 (clients resolve through it);
- the client network to every node's service port, TCP (clients, the canary's node checks and the
  failover controller's port checks all come from there), and the replies back;
- with ``cluster.requires_interconnect``, every node to the service port of every node in another VPC,
  TCP (the interconnect the failover controller dials before it moves the record), and the replies back.

A flow passes when

- the source subnet's route table delivers the destination to the destination's VPC: inside one VPC
  the local route does; otherwise the longest-prefix match must be a peering whose other end is that
  VPC (peerings are not transitive; an internet gateway or a NAT never reaches a private address of
  another VPC). A subnet without a route table uses the VPC's main route table, which regionha
  leaves with only the local route;
- the destination subnet's route table delivers the replies back the same way (route tables are
  stateless, unlike security groups);
- the destination's security group admits the protocol and port from every source address (security
  groups are stateful: replies need no rule; regionha leaves egress open).

Network ACLs are not part of the model: regionha keeps each VPC's default ACL, which allows all
traffic. AWS docs followed: VPC User Guide "Route priority" (longest prefix match, the local route),
"VPC peering limitations" (no transitive peering), "Security group rules" (stateful).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from regionha.topology.loader import Problem
from regionha.topology.model import (
    Peering,
    ResolverEndpointPath,
    Route,
    RouteTable,
    SecurityGroup,
    Subnet,
    Topology,
    Vpc,
)

Address = ipaddress.IPv4Address
Network = ipaddress.IPv4Network

DNS_PORT = 53
_TARGET_WORDS = {"igw": "the internet gateway", "nat": "the NAT instance"}


def check_reachability(topology: Topology) -> list[Problem]:
    """One problem per missing route (per route table and VPC it cannot reach, naming every flow that
    needs it) and per security group that shuts a flow out. Names that do not resolve (an unknown VPC,
    subnet, group or peering) are skipped here: the reference checks report them.

    A real on-prem site (``client.kind: onprem``) has no VPC: the site reaches a cluster VPC by the
    ``routes`` of the given link landing there, and replies come back by a ``link:`` route."""
    if topology.client.onprem:
        return [
            *_forwarder_security_groups(topology),
            *_client_security_groups(topology),
            *_interconnect_security_groups(topology),
            *_onprem_routes(topology),
            *_routes(topology, _interconnect_flows(topology)),
        ]
    return [
        *_client_network(topology),
        *_forwarder_security_groups(topology),
        *_client_security_groups(topology),
        *_interconnect_security_groups(topology),
        *_routes(topology, [*_flows(topology), *_interconnect_flows(topology)]),
    ]


# --- where things sit ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """One end of a flow: who sits in which subnet, at which addresses."""

    who: str  # "forwarder path tokyo-resolver"
    vpc_index: int
    vpc: Vpc
    subnet: Subnet
    nets: tuple[Network, ...]

    @property
    def shown(self) -> str:
        return f"{self.who} {', '.join(str(n.network_address if n.prefixlen == 32 else n) for n in self.nets)}"


def _vpc_at(t: Topology, name: str) -> tuple[int, Vpc] | None:
    return next(((i, v) for i, v in enumerate(t.vpcs) if v.name == name), None)


def _place(t: Topology, who: str, vpc_name: str, subnet_name: str, nets: Iterable[Network]) -> _Place | None:
    found = _vpc_at(t, vpc_name)
    if found is None:
        return None
    i, vpc = found
    subnet = next((s for s in vpc.subnets if s.name == subnet_name), None)
    return _Place(who, i, vpc, subnet, tuple(nets)) if subnet is not None else None


def _host(ip: Address) -> Network:
    return ipaddress.IPv4Network(ip)


def _forwarder_places(t: Topology) -> Iterator[_Place]:
    for path in t.forwarder_paths:
        if isinstance(path, ResolverEndpointPath):
            by_subnet: dict[str, list[Network]] = {}
            for endpoint_ip in path.ips:
                by_subnet.setdefault(endpoint_ip.subnet, []).append(_host(endpoint_ip.ip))
            placed = [_place(t, f"forwarder path {path.name}", path.vpc, s, n) for s, n in by_subnet.items()]
        else:
            placed = [_place(t, f"forwarder path {path.name}", path.vpc, path.subnet, [_host(path.ip)])]
        yield from (p for p in placed if p is not None)


def _node_places(t: Topology) -> Iterator[_Place]:
    for node in t.nodes:
        place = _place(t, f"node {node.name}", node.vpc, node.subnet, [_host(node.ip)])
        if place is not None:
            yield place


def _dns_server_place(t: Topology) -> _Place | None:
    server = t.client.dns_server
    return _place(t, f"on-prem DNS server {server.name}", t.client.vpc, server.subnet, [_host(server.ip)])


def _client_places(t: Topology) -> list[_Place]:
    """The client network in each subnet of the client VPC that holds part of it."""
    found = _vpc_at(t, t.client.vpc)
    if found is None:
        return []
    i, vpc = found
    return [
        _Place("client network", i, vpc, s, (t.client.cidr,)) for s in vpc.subnets if s.cidr.overlaps(t.client.cidr)
    ]


def _client_network(t: Topology) -> Iterator[Problem]:
    found = _vpc_at(t, t.client.vpc)
    if found is None or not t.client.cidr.subnet_of(found[1].cidr):
        return  # reported by the client checks
    if not _client_places(t):
        yield Problem(
            "client.cidr",
            f"no subnet of VPC {found[1].name} holds any of the client network {t.client.cidr}: clients, the "
            "canary and the failover controller's port checks have nowhere to run",
        )


# --- security groups -----------------------------------------------------------------------------


def _group(vpc: Vpc | None, name: str) -> SecurityGroup | None:
    return next((g for g in vpc.security_groups if g.name == name), None) if vpc is not None else None


def _admitting(group: SecurityGroup, protocol: str, port: int) -> list[Network]:
    # A tcp/udp rule without a port admits every port; "all" admits every protocol.
    return [
        rule.cidr
        for rule in group.ingress
        if rule.protocol == "all" or (rule.protocol == protocol and rule.port in (None, port))
    ]


def _not_admitted(group: SecurityGroup, protocol: str, port: int, source: Network) -> list[Network]:
    """The parts of ``source`` that no ingress rule of ``group`` admits for ``protocol``/``port``."""
    left = [source]
    for allowed in _admitting(group, protocol, port):
        rest: list[Network] = []
        for part in left:
            if part.subnet_of(allowed):
                continue
            rest += list(part.address_exclude(allowed)) if allowed.subnet_of(part) else [part]
        left = rest
    return sorted(ipaddress.collapse_addresses(left))


def _forwarder_security_groups(t: Topology) -> Iterator[Problem]:
    """The on-prem DNS server must reach every forwarder path over UDP and TCP 53 (TCP for truncation)."""
    source = t.client.dns_server.ip
    for i, path in enumerate(t.forwarder_paths):
        found = _vpc_at(t, path.vpc)
        vpc = found[1] if found else None
        group = _group(vpc, path.security_group)
        if vpc is None or group is None:
            continue  # reported where the VPC or group is named
        missing = [p.upper() for p in ("udp", "tcp") if _not_admitted(group, p, DNS_PORT, _host(source))]
        if missing:
            yield Problem(
                f"forwarder_paths[{i}].security_group",
                f"security group {group.name} of VPC {vpc.name} does not admit {' and '.join(missing)} 53 "
                f"from the on-prem DNS server {source} (client.dns_server.ip): add an ingress rule whose "
                "cidr contains it",
            )


def _shut_out(group: SecurityGroup, protocols: tuple[str, ...], port: int, source: Network) -> str | None:
    """What of ``source`` the group does not admit, in words, or None when it admits all of it."""
    gaps = {p: _not_admitted(group, p, port, source) for p in protocols}
    missing = [p for p, left in gaps.items() if left]
    if not missing:
        return None
    what = " and ".join(f"{p.upper()} {port}" for p in missing)
    left = gaps[missing[0]]
    if left == [source]:
        return f"does not admit {what} from the client network {source} (client.cidr)"
    return f"admits {what} from only part of the client network {source} (not from {', '.join(map(str, left))})"


def _client_security_groups(t: Topology) -> Iterator[Problem]:
    """Clients resolve through the on-prem DNS server and use every node's service port."""
    cidr = t.client.cidr
    server = t.client.dns_server
    found = None if t.client.onprem else _vpc_at(t, t.client.vpc)  # on-prem: the user's own firewall
    group = _group(found[1], server.security_group) if found else None
    if group is not None:
        gap = _shut_out(group, ("udp", "tcp"), DNS_PORT, cidr)
        if gap:
            yield Problem(
                "client.dns_server.security_group",
                f"security group {group.name} {gap}: clients cannot resolve through {server.name}",
            )
    for i, node in enumerate(t.nodes):
        found = _vpc_at(t, node.vpc)
        group = _group(found[1] if found else None, node.security_group)
        if group is None:
            continue
        gap = _shut_out(group, ("tcp",), node.port, cidr)
        if gap:
            yield Problem(
                f"nodes[{i}].security_group",
                f"security group {group.name} of VPC {node.vpc} {gap}: clients, the canary's node checks "
                f"and the failover controller's port checks cannot reach node {node.name}",
            )


def _interconnect_security_groups(t: Topology) -> Iterator[Problem]:
    """Each node's group admits the service port from every node in another VPC (the interconnect)."""
    if not t.cluster.requires_interconnect:
        return
    for i, node in enumerate(t.nodes):
        found = _vpc_at(t, node.vpc)
        group = _group(found[1] if found else None, node.security_group)
        if group is None:
            continue
        shut = [p for p in t.nodes if p.vpc != node.vpc and _not_admitted(group, "tcp", node.port, _host(p.ip))]
        if shut:
            peers = ", ".join(f"node {p.name} {p.ip} (VPC {p.vpc})" for p in shut)
            yield Problem(
                f"nodes[{i}].security_group",
                f"security group {group.name} of VPC {node.vpc} does not admit TCP {node.port} from {peers}: "
                f"the interconnect to node {node.name} is cut (cluster.requires_interconnect), so the failover "
                "controller would refuse every failover onto a node it cannot reach",
            )


# --- routes --------------------------------------------------------------------------------------


def _table_of(vpc: Vpc, subnet: str) -> tuple[int, RouteTable] | None:
    return next(((i, rt) for i, rt in enumerate(vpc.route_tables) if subnet in rt.subnets), None)


def _peering(t: Topology, name: str) -> Peering | None:
    return next((p for p in t.peerings if p.name == name), None)


def _longest_match(routes: list[Route], destination: Network) -> Route | None:
    """The route EC2 picks for ``destination`` outside the VPC: the most specific that holds all of it."""
    holding = [r for r in routes if destination.subnet_of(r.destination)]
    return max(holding, key=lambda r: r.destination.prefixlen, default=None)


def _why_not_delivered(t: Topology, src: _Place, dst_vpc: Vpc, destination: Network) -> str | None:
    """Why ``src``'s subnet cannot send to ``destination`` in ``dst_vpc``; None when it can (or when the
    route that would carry it is itself broken, which the route checks report)."""
    vpc = src.vpc
    if vpc.name == dst_vpc.name:
        return None  # the local route
    found = _table_of(vpc, src.subnet.name)
    routes = found[1].routes if found else []
    # A more specific route can take part of a network elsewhere: judge each such part too.
    parts = [destination] + [
        r.destination for r in routes if r.destination != destination and r.destination.subnet_of(destination)
    ]
    for part in parts:
        shown = part.network_address if part.prefixlen == 32 else part
        if part.subnet_of(vpc.cidr):
            return f"{shown} lies within VPC {vpc.name}'s own CIDR {vpc.cidr}: the local route keeps it there"
        route = _longest_match(routes, part)
        if route is None:
            return f"no route matches {shown}"
        if route.peering is None:
            return f"{shown} goes to {_TARGET_WORDS[route.target]} by route {route.destination}"
        peering = _peering(t, route.peering)
        if peering is None or vpc.name not in (peering.requester, peering.accepter):
            continue  # reported by the route checks
        peer = peering.accepter if peering.requester == vpc.name else peering.requester
        if peer != dst_vpc.name or not part.subnet_of(dst_vpc.cidr):
            return (
                f"{shown} goes to VPC {peer} by peering {peering.name} (route {route.destination}), and "
                "peerings are not transitive"
            )
    return None


@dataclass
class _Gap:
    """Every flow that one route table (or a subnet without one) fails towards one VPC."""

    subnet: str
    to_vpc: Vpc
    back: bool
    why: str
    has_table: bool
    who: list[str] = field(default_factory=list)
    whom: list[str] = field(default_factory=list)

    def message(self) -> str:
        where = f"VPC {self.to_vpc.name} ({self.to_vpc.cidr})"
        who, whom = ", ".join(dict.fromkeys(self.who)), "; ".join(dict.fromkeys(self.whom))
        if not self.has_table:
            who += "; no route table, so the VPC's main one with only the local route"
        if self.back:
            return (
                f"subnet {self.subnet} ({who}) has no route back to {where}: {self.why}; replies to {whom} "
                "are dropped"
            )
        return f"subnet {self.subnet} ({who}) has no route to {where}: {self.why}; unreachable: {whom}"


def _flows(t: Topology) -> Iterator[tuple[_Place, _Place]]:
    """(source, destination) of every routed flow; replies go from destination to source."""
    server = _dns_server_place(t)
    if server is not None:
        for path in _forwarder_places(t):
            yield server, path
    for client in _client_places(t):
        for node in _node_places(t):
            yield client, node


def _interconnect_flows(t: Topology) -> list[tuple[_Place, _Place]]:
    """(node, node in another VPC) of every interconnect dial, with ``cluster.requires_interconnect``."""
    if not t.cluster.requires_interconnect:
        return []
    nodes = list(_node_places(t))
    return [(a, b) for a in nodes for b in nodes if a.vpc.name != b.vpc.name]


def _table_field(src: _Place) -> tuple[str, bool]:
    """The route table that decides for ``src``'s subnet, or the subnet itself when it has none."""
    found = _table_of(src.vpc, src.subnet.name)
    if found is not None:
        return f"vpcs[{src.vpc_index}].route_tables[{found[0]}]", True
    return f"vpcs[{src.vpc_index}].subnets[{src.vpc.subnets.index(src.subnet)}]", False


def _routes(t: Topology, flows: Iterable[tuple[_Place, _Place]]) -> Iterator[Problem]:
    gaps: dict[tuple[str, str, str, bool], _Gap] = {}

    def note(sender: _Place, receiver: _Place, back: bool) -> None:
        for net in receiver.nets:
            why = _why_not_delivered(t, sender, receiver.vpc, net)
            if why is None:
                continue
            table_field, has_table = _table_field(sender)
            key = (table_field, sender.subnet.name, receiver.vpc.name, back)
            gap = gaps.setdefault(key, _Gap(sender.subnet.name, receiver.vpc, back, why, has_table))
            gap.who.append(sender.who)
            gap.whom.append(receiver.shown)

    for src, dst in flows:
        note(src, dst, back=False)
        note(dst, src, back=True)
    for (table_field, *_), gap in gaps.items():
        yield Problem(table_field, gap.message())


# --- a real on-prem site: routes over the given links ---------------------------------------------


def _onprem_flows(t: Topology) -> Iterator[tuple[str, Network, _Place]]:
    """(who, on-prem source network, destination) of every flow from a real on-prem site."""
    server = t.client.dns_server
    for path in _forwarder_places(t):
        yield f"on-prem DNS server {server.name}", _host(server.ip), path
    for node in _node_places(t):
        yield "client network", t.client.cidr, node


def _onprem_link_for(t: Topology, destination: Network) -> tuple[int, int] | None:
    """(link index, route index) of the on-prem router's longest-prefix route holding ``destination``."""
    best: tuple[int, int, int] | None = None
    for i, link in enumerate(t.client.links):
        for j, prefix in enumerate(link.routes):
            if destination.subnet_of(prefix) and (best is None or prefix.prefixlen > best[0]):
                best = (prefix.prefixlen, i, j)
    return None if best is None else (best[1], best[2])


def _onprem_routes(t: Topology) -> Iterator[Problem]:
    """Both directions of every flow: out by the links' routes, back by a ``link:`` route of the
    destination subnet's table to a link landing in that VPC (a VPN or Direct Connect link ends on a
    virtual private gateway attached to one VPC: it is not transitive either)."""
    client = t.client
    out: dict[tuple[str, str], list[str]] = {}
    back: dict[tuple[str, str], list[str]] = {}
    for who, source, dst in _onprem_flows(t):
        for net in dst.nets:
            found = _onprem_link_for(t, net)
            shown = net.network_address if net.prefixlen == 32 else net
            if found is None:
                key = ("client.links", f"no link's routes hold {shown} (VPC {dst.vpc.name}, {dst.vpc.cidr}): "
                                       f"add {dst.vpc.cidr} to the routes of the link to VPC {dst.vpc.name}")
                out.setdefault(key, []).append(f"{who} to {dst.who}")
                continue
            link = client.links[found[0]]
            if link.vpc != dst.vpc.name:
                key = (f"client.links[{found[0]}].routes[{found[1]}]",
                       f"{shown} goes over link {link.name} to VPC {link.vpc} (route {link.routes[found[1]]}), "
                       f"not to VPC {dst.vpc.name} where it is: a link reaches only its own VPC")
                out.setdefault(key, []).append(f"{who} to {dst.who}")
        why = _why_not_back_over_a_link(t, dst, source)
        if why is not None:
            table_field, _ = _table_field(dst)
            key = (table_field, f"subnet {dst.subnet.name} of VPC {dst.vpc.name} has no route back to the on-prem "
                                f"network over a link: {why}")
            back.setdefault(key, []).append(f"{dst.shown} to {who} {source}")
    for (field_name, message), flows in out.items():
        yield Problem(field_name, f"{message}; unreachable: {'; '.join(dict.fromkeys(flows))}")
    for (field_name, message), flows in back.items():
        yield Problem(field_name, f"{message}; replies dropped: {'; '.join(dict.fromkeys(flows))}")


def _why_not_back_over_a_link(t: Topology, src: _Place, destination: Network) -> str | None:
    """Why ``src``'s subnet cannot reply to the on-prem ``destination``; None when a ``link:`` route does
    (a link landing in another VPC is reported by the route checks)."""
    found = _table_of(src.vpc, src.subnet.name)
    routes = found[1].routes if found else []
    shown = destination.network_address if destination.prefixlen == 32 else destination
    route = _longest_match(routes, destination)
    if route is None:
        return f"no route matches {shown}" + ("" if found else " (no route table: the VPC's main one)")
    if route.link is None:
        where = f"peering {route.peering}" if route.peering else _TARGET_WORDS[route.target]
        return f"{shown} goes to {where} by route {route.destination}"
    return None
