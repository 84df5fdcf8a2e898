"""Cross-field checks of a topology: the rules pydantic cannot see because they need the whole file.

``check_topology`` returns every problem it finds (never only the first), each naming the offending
field by the same path syntax the structure checks use (``vpcs[0].subnets[1].cidr``). It only reads
the model: no AWS call, no DNS lookup, no file access.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Protocol, TypeVar

from regionha.topology.loader import Problem
from regionha.topology.model import (
    ONPREM,
    BindPath,
    ResolverEndpointPath,
    Route,
    Subnet,
    Topology,
    Vpc,
)
from regionha.topology.names import canonical_name
from regionha.topology.reachability import check_reachability

# Commercial ("aws" partition) regions, opt-in ones included. Static on purpose: validation must
# work offline and must not depend on which botocore happens to be installed.
AWS_REGIONS = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    }
)

# EC2 accepts VPC and subnet CIDR blocks from /16 down to /28.
MIN_PREFIX, MAX_PREFIX = 16, 28
# Route 53 record TTL range (CreateResourceRecordSet, ResourceRecordSet.TTL).
MAX_TTL = 2**31 - 1
# Route 53 Resolver: an endpoint needs at least two IPs; six is the per-endpoint quota.
MIN_ENDPOINT_IPS, MAX_ENDPOINT_IPS = 2, 6

# RFC 6762: names under local. are resolved by Multicast DNS on the link, not sent to DNS servers.
MDNS_DOMAIN = "local."

_ZONE_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Record labels may carry underscores (service names) and a leading wildcard.
_RECORD_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")



def _punycode_hint(label: str) -> str:
    """For a label with non-ASCII letters: how to write it (Route 53 takes internationalised names only
    in punycode, "DNS domain name format")."""
    if label.isascii():
        return ""
    try:
        return f" (in ASCII, as IDNA writes it: {label.encode('idna').decode('ascii')})"
    except UnicodeError:
        return " (non-ASCII letters: an internationalised label must be written in punycode, xn--...)"


Address = ipaddress.IPv4Address
Network = ipaddress.IPv4Network


def topology_warnings(topology: Topology) -> list[Problem]:
    """What works but is likely to hurt, for a topology ``check_topology`` accepts: each a ``Problem``
    naming its field, to be shown as a warning, never refused. Pure."""
    checks = (_warn_mdns_zone, _warn_ttl_over_budget, _warn_paths_in_one_region, _warn_package_egress)
    return list(chain.from_iterable(check(topology) for check in checks))


def check_topology(topology: Topology) -> list[Problem]:
    """Every cross-field fault of an already structure-checked topology, grouped by rule, in file order
    within each rule. Pure: it reads the model and nothing else."""
    checks = (
        _check_vpcs,
        _check_peerings,
        _check_routes,
        _check_dns,
        _check_forwarder_paths,
        _check_independent_paths,
        _check_client,
        _check_nodes,
        _check_addresses,
        _check_instance_names,
        _check_reserved_names,
        check_reachability,
    )
    return list(chain.from_iterable(check(topology) for check in checks))


# --- lookups -------------------------------------------------------------------------------------
# Duplicate names are reported by the checks below; lookups take the first so the rest can go on.


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def _first_by_name(items: Iterable[N]) -> dict[str, N]:
    found: dict[str, N] = {}
    for item in items:
        found.setdefault(item.name, item)
    return found


def _vpcs(t: Topology) -> dict[str, Vpc]:
    return _first_by_name(t.vpcs)


def _duplicates(names: Iterable[str], path: str, what: str) -> Iterator[Problem]:
    """One problem per repeated name, at the repeat, pointing back to the first occurrence."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            yield Problem(
                f"{path}[{i}].name", f"duplicate {what} name {name!r} (first at {path}[{first[name]}])"
            )
        else:
            first[name] = i


def _vpc_ref(t: Topology, field: str, name: str) -> Iterator[Problem]:
    if name not in _vpcs(t):
        yield Problem(field, f"unknown VPC {name!r} (known: {_known(v.name for v in t.vpcs)})")


def _subnet_ref(vpc: Vpc, field: str, name: str) -> Iterator[Problem]:
    if name not in {s.name for s in vpc.subnets}:
        yield Problem(
            field, f"no subnet {name!r} in VPC {vpc.name!r} (known: {_known(s.name for s in vpc.subnets)})"
        )


def _sg_ref(vpc: Vpc, field: str, name: str) -> Iterator[Problem]:
    if name not in {g.name for g in vpc.security_groups}:
        known = _known(g.name for g in vpc.security_groups)
        yield Problem(field, f"no security group {name!r} in VPC {vpc.name!r} (known: {known})")


def _known(names: Iterable[str]) -> str:
    listed = ", ".join(dict.fromkeys(names))
    return listed or "none"


def _subnet_of(vpc: Vpc, name: str) -> Subnet | None:
    return next((s for s in vpc.subnets if s.name == name), None)


# --- VPCs and subnets ----------------------------------------------------------------------------


def _check_cidr_size(field: str, cidr: Network, what: str) -> Iterator[Problem]:
    if not MIN_PREFIX <= cidr.prefixlen <= MAX_PREFIX:
        yield Problem(
            field, f"{what} {cidr} is a /{cidr.prefixlen}; EC2 accepts /{MIN_PREFIX} to /{MAX_PREFIX}"
        )


def _check_vpcs(t: Topology) -> Iterator[Problem]:
    yield from _duplicates((v.name for v in t.vpcs), "vpcs", "VPC")
    for i, vpc in enumerate(t.vpcs):
        at = f"vpcs[{i}]"
        region_known = vpc.region in AWS_REGIONS
        if not region_known:
            yield Problem(f"{at}.region", f"unknown AWS region {vpc.region!r}")
        yield from _check_cidr_size(f"{at}.cidr", vpc.cidr, "VPC CIDR")
        yield from _duplicates((s.name for s in vpc.subnets), f"{at}.subnets", "subnet")
        yield from _duplicates((r.name for r in vpc.route_tables), f"{at}.route_tables", "route table")
        yield from _duplicates(
            (g.name for g in vpc.security_groups), f"{at}.security_groups", "security group"
        )
        for j, subnet in enumerate(vpc.subnets):
            sat = f"{at}.subnets[{j}]"
            # An AZ name is its region's name plus one letter (ap-northeast-1a).
            if region_known and not re.fullmatch(re.escape(vpc.region) + r"[a-z]", subnet.az):
                yield Problem(
                    f"{sat}.az",
                    f"availability zone {subnet.az!r} is not in region {vpc.region} "
                    f"(expected e.g. {vpc.region}a)",
                )
            yield from _check_cidr_size(f"{sat}.cidr", subnet.cidr, "subnet CIDR")
            if not subnet.cidr.subnet_of(vpc.cidr):
                yield Problem(f"{sat}.cidr", f"subnet {subnet.cidr} is outside its VPC's CIDR {vpc.cidr}")
            for k, other in enumerate(vpc.subnets[:j]):
                if subnet.cidr.overlaps(other.cidr):
                    yield Problem(
                        f"{sat}.cidr",
                        f"subnet {subnet.cidr} overlaps {at}.subnets[{k}] ({other.name} {other.cidr})",
                    )
        if vpc.nat_instance is not None:
            nat_at = f"{at}.nat_instance"
            nat_subnet = _subnet_of(vpc, vpc.nat_instance.subnet)
            if nat_subnet is None:
                yield from _subnet_ref(vpc, f"{nat_at}.subnet", vpc.nat_instance.subnet)
            elif not nat_subnet.public:
                yield Problem(
                    f"{nat_at}.subnet",
                    f"NAT instance must be in a public subnet; {nat_subnet.name} is private",
                )
            if not vpc.internet_gateway:
                yield Problem(
                    nat_at, "a NAT instance needs the VPC's internet gateway (internet_gateway: true)"
                )
        yield from _check_route_table_subnets(vpc, at)
        yield from _check_gateway_endpoints(vpc, at)


def _check_gateway_endpoints(vpc: Vpc, at: str) -> Iterator[Problem]:
    # One gateway endpoint per service and VPC: EC2 allows one route per prefix list in a table.
    tables = {t.name for t in vpc.route_tables}
    seen: set[str] = set()
    for e_i, endpoint in enumerate(vpc.gateway_endpoints):
        if endpoint.service in seen:
            yield Problem(f"{at}.gateway_endpoints[{e_i}].service", f"a second {endpoint.service} endpoint")
        seen.add(endpoint.service)
        for r_i, name in enumerate(endpoint.route_tables):
            if name not in tables:
                yield Problem(
                    f"{at}.gateway_endpoints[{e_i}].route_tables[{r_i}]",
                    f"no route table {name!r} in VPC {vpc.name} (known: {_known(tables)})",
                )


def _warn_package_egress(t: Topology) -> Iterator[Problem]:
    # A warning, not an error: topology files written before gateway_endpoints existed still load; the
    # build refuses to launch such a BIND server (converge.instances.require_package_egress), before
    # RunInstances, with the same advice.
    # Each BIND server installs bind with dnf at its first boot, from the Amazon Linux repositories (S3
    # in its region); cloud-init runs user-data once, so without egress then, named is never installed.
    # Instances other than NAT get no public IP: an S3 gateway endpoint or a default route to the NAT
    # instance is the way out (the build checks the same on the built world, converge.instances).
    servers = [(f"forwarder_paths[{i}]", p.name, p.vpc, p.subnet) for i, p in enumerate(t.forwarder_paths)
               if p.kind == "bind"]
    if not t.client.onprem:  # a real on-prem DNS server is the user's, installed by them
        servers.append(("client.dns_server", t.client.dns_server.name, t.client.vpc, t.client.dns_server.subnet))
    vpcs = _vpcs(t)
    for at, name, vpc_name, subnet in servers:
        vpc = vpcs.get(vpc_name)
        if vpc is None or _subnet_of(vpc, subnet) is None:
            continue  # reported by the reference checks
        table = next((r for r in vpc.route_tables if subnet in r.subnets), None)
        if table is None:
            continue  # a subnet without a table is reported by the reachability check
        endpoint = any(e.service == "s3" and table.name in e.route_tables for e in vpc.gateway_endpoints)
        nat = vpc.nat_instance is not None and any(
            str(r.destination) == "0.0.0.0/0" and r.target == "nat" for r in table.routes)
        if not (endpoint or nat):
            yield Problem(
                f"{at}.subnet",
                f"the build will refuse BIND server {name}: it installs bind with dnf at first boot, but subnet "
                f"{subnet} (route table "
                f"{table.name}) has no egress to the Amazon Linux repositories (S3 in {vpc.region}): give VPC "
                f"{vpc.name} `gateway_endpoints: [{{service: s3, route_tables: [{table.name}]}}]` or a "
                "0.0.0.0/0 route to its NAT instance",
            )


def _check_route_table_subnets(vpc: Vpc, at: str) -> Iterator[Problem]:
    # A subnet has exactly one route table association in EC2.
    owner: dict[str, str] = {}
    for t_i, table in enumerate(vpc.route_tables):
        for s_i, name in enumerate(table.subnets):
            field = f"{at}.route_tables[{t_i}].subnets[{s_i}]"
            if _subnet_of(vpc, name) is None:
                yield from _subnet_ref(vpc, field, name)
            elif name in owner:
                yield Problem(field, f"subnet {name} is already associated with route table {owner[name]}")
            else:
                owner[name] = table.name


# --- peerings and routes -------------------------------------------------------------------------


def _check_peerings(t: Topology) -> Iterator[Problem]:
    yield from _duplicates((p.name for p in t.peerings), "peerings", "peering")
    vpcs = _vpcs(t)
    pairs: dict[frozenset[str], int] = {}
    for i, peering in enumerate(t.peerings):
        at = f"peerings[{i}]"
        ends_known = True
        for end in ("requester", "accepter"):
            name = getattr(peering, end)
            if name not in vpcs:
                ends_known = False
                yield from _vpc_ref(t, f"{at}.{end}", name)
        if peering.requester == peering.accepter:
            yield Problem(f"{at}.accepter", f"peering joins VPC {peering.requester!r} to itself")
            continue
        pair = frozenset((peering.requester, peering.accepter))
        if pair in pairs:
            yield Problem(
                at,
                f"VPCs {peering.requester} and {peering.accepter} are already peered by "
                f"peerings[{pairs[pair]}] ({t.peerings[pairs[pair]].name})",
            )
        else:
            pairs[pair] = i
        if ends_known:
            req, acc = vpcs[peering.requester], vpcs[peering.accepter]
            if req.cidr.overlaps(acc.cidr):
                yield Problem(
                    at, f"peered VPCs must not overlap: {req.name} {req.cidr} overlaps {acc.name} {acc.cidr}"
                )


def _check_routes(t: Topology) -> Iterator[Problem]:
    for i, vpc in enumerate(t.vpcs):
        for t_i, table in enumerate(vpc.route_tables):
            seen: dict[Network, int] = {}
            for r_i, route in enumerate(table.routes):
                at = f"vpcs[{i}].route_tables[{t_i}].routes[{r_i}]"
                if route.destination in seen:
                    yield Problem(
                        f"{at}.destination",
                        f"{route.destination} is already routed by routes[{seen[route.destination]}]",
                    )
                else:
                    seen[route.destination] = r_i
                yield from _check_route(t, vpc, route, at)


def _check_route(t: Topology, vpc: Vpc, route: Route, at: str) -> Iterator[Problem]:
    # Broader destinations (0.0.0.0/0) are fine: the local route is more specific and wins.
    if route.destination.subnet_of(vpc.cidr):
        yield Problem(
            f"{at}.destination",
            f"{route.destination} lies within the VPC's own CIDR {vpc.cidr}; the local route owns it",
        )
    if route.target == "igw" and not vpc.internet_gateway:
        yield Problem(f"{at}.target", f"route to igw but VPC {vpc.name} has no internet gateway")
    elif route.target == "nat" and vpc.nat_instance is None:
        yield Problem(f"{at}.target", f"route to nat but VPC {vpc.name} has no nat_instance")
    elif route.link is not None:
        yield from _check_link_route(t, vpc, route, at)
        return
    elif route.peering is None:
        return
    peering = _first_by_name(t.peerings).get(route.peering)
    if peering is None:
        known = _known(p.name for p in t.peerings)
        yield Problem(f"{at}.target", f"unknown peering {route.peering!r} (known: {known})")
        return
    ends = (peering.requester, peering.accepter)
    if vpc.name not in ends:
        yield Problem(
            f"{at}.target", f"peering {peering.name} joins {ends[0]} and {ends[1]}, not VPC {vpc.name}"
        )
        return
    peer = _vpcs(t).get(ends[1] if ends[0] == vpc.name else ends[0])
    # Peerings are not transitive: traffic can only go to the peer VPC itself.
    if peer is not None and peer.name != vpc.name and not route.destination.subnet_of(peer.cidr):
        yield Problem(
            f"{at}.destination",
            f"{route.destination} is not within {peer.name} ({peer.cidr}), the peer VPC of {peering.name}",
        )


def _check_link_route(t: Topology, vpc: Vpc, route: Route, at: str) -> Iterator[Problem]:
    """A ``link:<name>`` route sends to an on-prem site's given link, which must land in this VPC."""
    client = t.client
    if not client.onprem:
        yield Problem(f"{at}.target", "a link: route needs an on-prem client site (client.kind: onprem) "
                                      "with client.links; this client site is a VPC")
        return
    link = _first_by_name(client.links).get(route.link)
    if link is None:
        yield Problem(f"{at}.target", f"unknown link {route.link!r} (known: {_known(lk.name for lk in client.links)})")
    elif link.vpc != vpc.name:
        yield Problem(f"{at}.target", f"link {link.name} lands in VPC {link.vpc}, not VPC {vpc.name}: a virtual "
                                      "private gateway is attached to one VPC")
    elif not route.destination.overlaps(client.cidr):
        yield Problem(f"{at}.destination", f"{route.destination} holds nothing of the on-prem network "
                                           f"{client.cidr} (client.cidr) that link {link.name} reaches")


# --- DNS -----------------------------------------------------------------------------------------


def _zone_name_problem(zone: str) -> str | None:
    name = zone.lower().removesuffix(".")
    if not name:
        return "zone name is empty"
    if len(name) > 253:
        return f"zone name is {len(name)} characters long; at most 253 are allowed"
    bad = [label for label in name.split(".") if not _ZONE_LABEL.match(label)]
    if bad:
        return (
            f"invalid zone name {zone!r}: label {bad[0]!r} must be 1-63 letters, digits or hyphens, "
            f"not starting or ending with a hyphen{_punycode_hint(bad[0])}"
        )
    return None


def _record_name_problem(name: str) -> str | None:
    labels = name.lower().removesuffix(".").split(".")
    for k, label in enumerate(labels):
        if label == "*" and k == 0:
            continue
        if not _RECORD_LABEL.match(label):
            return (
                f"invalid record name {name!r}: label {label!r} must be 1-63 letters, digits, '-' or '_'"
                f"{_punycode_hint(label)}"
            )
    return None


def _check_dns(t: Topology) -> Iterator[Problem]:
    dns = t.dns
    zone_problem = _zone_name_problem(dns.zone)
    if zone_problem:
        yield Problem("dns.zone", zone_problem)
    seen: dict[str, int] = {}
    for k, name in enumerate(dns.zone_vpcs):
        field = f"dns.zone_vpcs[{k}]"
        if name in seen:
            yield Problem(field, f"VPC {name!r} is listed twice (first at dns.zone_vpcs[{seen[name]}])")
            continue
        seen[name] = k
        yield from _vpc_ref(t, field, name)
    record_problem = _record_name_problem(dns.record.name)
    if record_problem:
        yield Problem("dns.record.name", record_problem)
    elif not zone_problem:
        record, zone = dns.record.name.lower(), dns.zone_fqdn.lower()
        if not (record == zone or record.endswith("." + zone)):
            yield Problem("dns.record.name", f"record {dns.record.name} is outside zone {dns.zone_fqdn}")
    if not 0 <= dns.record.ttl <= MAX_TTL:
        yield Problem("dns.record.ttl", f"TTL {dns.record.ttl} is outside Route 53's range 0..{MAX_TTL}")


def _warn_mdns_zone(t: Topology) -> Iterator[Problem]:
    zone = canonical_name(t.dns.zone)
    if zone == MDNS_DOMAIN or zone.endswith("." + MDNS_DOMAIN):
        yield Problem(
            "dns.zone",
            f"zone {zone} is under {MDNS_DOMAIN}, which RFC 6762 reserves for Multicast DNS: hosts running "
            "mDNS (macOS, Avahi, systemd-resolved) may ask the local link instead of the DNS server and never "
            "see the record; a zone under a domain you own avoids that",
        )


def _warn_ttl_over_budget(t: Topology) -> Iterator[Problem]:
    ttl, budget = t.dns.record.ttl, t.failover.rto_budget_seconds
    if ttl > budget:
        yield Problem(
            "dns.record.ttl",
            f"TTL {ttl} s is longer than the failover budget failover.rto_budget_seconds ({budget} s): resolvers "
            f"may keep answering with the failed node for up to {ttl} s after the record moves",
        )


def _warn_paths_in_one_region(t: Topology) -> Iterator[Problem]:
    vpcs = _vpcs(t)
    regions = {vpcs[p.vpc].region for p in t.forwarder_paths if p.vpc in vpcs}
    if len(regions) == 1 and len({p.vpc for p in t.forwarder_paths}) > 1:
        yield Problem(
            "forwarder_paths",
            f"every forwarder path is in region {regions.pop()}: an outage of that region takes them all",
        )


# --- forwarder paths, client, nodes --------------------------------------------------------------


def _check_forwarder_paths(t: Topology) -> Iterator[Problem]:
    yield from _duplicates((p.name for p in t.forwarder_paths), "forwarder_paths", "forwarder path")
    vpcs = _vpcs(t)
    for i, path in enumerate(t.forwarder_paths):
        at = f"forwarder_paths[{i}]"
        vpc = vpcs.get(path.vpc)
        if vpc is None:
            yield from _vpc_ref(t, f"{at}.vpc", path.vpc)
        else:
            if path.vpc not in t.dns.zone_vpcs:
                # The forwarder answers through its VPC's resolver, which only sees associated zones.
                yield Problem(
                    f"{at}.vpc",
                    f"VPC {path.vpc} is not in dns.zone_vpcs, so this path cannot resolve {t.dns.zone_fqdn}",
                )
            yield from _sg_ref(vpc, f"{at}.security_group", path.security_group)
        if isinstance(path, ResolverEndpointPath):
            if not MIN_ENDPOINT_IPS <= len(path.ips) <= MAX_ENDPOINT_IPS:
                yield Problem(
                    f"{at}.ips",
                    f"a Resolver endpoint needs {MIN_ENDPOINT_IPS} to {MAX_ENDPOINT_IPS} IPs, "
                    f"not {len(path.ips)}",
                )
            if vpc is not None:
                for j, endpoint_ip in enumerate(path.ips):
                    yield from _subnet_ref(vpc, f"{at}.ips[{j}].subnet", endpoint_ip.subnet)
        elif isinstance(path, BindPath) and vpc is not None:
            yield from _subnet_ref(vpc, f"{at}.subnet", path.subnet)


def _check_independent_paths(t: Topology) -> Iterator[Problem]:
    """The on-prem resolver needs a second way in when one path's VPC, link or forwarder fails."""
    vpcs = {p.vpc for p in t.forwarder_paths if p.vpc in _vpcs(t)}  # unknown VPCs are reported above
    if len(vpcs) >= 2 or t.dns.allow_single_path or len(vpcs) < len({p.vpc for p in t.forwarder_paths}):
        return
    names = ", ".join(p.name for p in t.forwarder_paths)
    where = f"all in VPC {next(iter(vpcs))}" if len(t.forwarder_paths) > 1 else f"in VPC {next(iter(vpcs))}"
    yield Problem(
        "forwarder_paths",
        f"only one independent forwarder path ({names}, {where}): one VPC, link or forwarder failing leaves "
        "the zone unresolvable from on-prem; add a path in another VPC (another region), or set "
        "dns.allow_single_path: true to accept that",
    )


def _check_client(t: Topology) -> Iterator[Problem]:
    client = t.client
    if client.onprem:
        yield from _check_onprem_client(t)
        return
    vpc = _vpcs(t).get(client.vpc)
    if vpc is None:
        yield from _vpc_ref(t, "client.vpc", client.vpc)
    else:
        if not client.cidr.subnet_of(vpc.cidr):
            yield Problem(
                "client.cidr", f"client network {client.cidr} is outside VPC {vpc.name} ({vpc.cidr})"
            )
        yield from _subnet_ref(vpc, "client.dns_server.subnet", client.dns_server.subnet)
        yield from _sg_ref(vpc, "client.dns_server.security_group", client.dns_server.security_group)
    if client.dns_server.ip not in client.cidr:
        yield Problem(
            "client.dns_server.ip",
            f"on-prem DNS server {client.dns_server.ip} is outside client.cidr {client.cidr}",
        )


def _check_onprem_client(t: Topology) -> Iterator[Problem]:
    """A real on-prem site: its addresses inside its network, which no VPC overlaps, and one given
    link per cluster VPC at most (a virtual private gateway attaches to one VPC, a VPC takes one)."""
    client = t.client
    for field, ip, what in (("client.dns_server.ip", client.dns_server.ip, "on-prem DNS server"),
                            ("client.canary_ip", client.canary_ip, "canary host (the on-prem agent)")):
        if ip not in client.cidr:
            yield Problem(field, f"{what} {ip} is outside client.cidr {client.cidr}")
    if client.canary_ip == client.dns_server.ip:
        # Not a fault of routing, but the canary must see the resolver as a client does: from elsewhere.
        yield Problem("client.canary_ip", f"{client.canary_ip} is the on-prem DNS server's own address; run "
                                          "the agent on another host of the client network")
    for i, vpc in enumerate(t.vpcs):
        if vpc.cidr.overlaps(client.cidr):
            yield Problem("client.cidr", f"on-prem network {client.cidr} overlaps VPC {vpc.name} ({vpc.cidr}, "
                                         f"vpcs[{i}].cidr): routes over the links could not tell them apart")
    yield from _duplicates((lk.name for lk in client.links), "client.links", "link")
    vpcs = _vpcs(t)
    landed: dict[str, str] = {}
    gateways: dict[str, str] = {}
    for i, link in enumerate(client.links):
        at = f"client.links[{i}]"
        if link.vpc not in vpcs:
            yield from _vpc_ref(t, f"{at}.vpc", link.vpc)
        elif link.vpc in landed:
            yield Problem(f"{at}.vpc", f"VPC {link.vpc} already has link {landed[link.vpc]}: a VPC takes one "
                                       "virtual private gateway")
        else:
            landed[link.vpc] = link.name
        if link.gateway_id in gateways:
            yield Problem(f"{at}.gateway_id", f"{link.gateway_id} is already link {gateways[link.gateway_id]}'s: "
                                              "a virtual private gateway attaches to one VPC")
        gateways.setdefault(link.gateway_id, link.name)
        for j, prefix in enumerate(link.routes):
            if prefix.overlaps(client.cidr):
                yield Problem(f"{at}.routes[{j}]", f"{prefix} overlaps the on-prem network {client.cidr} itself")


def _check_nodes(t: Topology) -> Iterator[Problem]:
    if len(t.nodes) < 2:
        yield Problem("nodes", f"an HA cluster needs at least 2 nodes, not {len(t.nodes)}")
    yield from _duplicates((n.name for n in t.nodes), "nodes", "node")
    vpcs = _vpcs(t)
    for i, node in enumerate(t.nodes):
        at = f"nodes[{i}]"
        vpc = vpcs.get(node.vpc)
        if vpc is None:
            yield from _vpc_ref(t, f"{at}.vpc", node.vpc)
            continue
        subnet = _subnet_of(vpc, node.subnet)
        if subnet is None:
            yield from _subnet_ref(vpc, f"{at}.subnet", node.subnet)
        elif subnet.public:
            yield Problem(f"{at}.subnet", f"node must be in a private subnet; {subnet.name} is public")
        yield from _sg_ref(vpc, f"{at}.security_group", node.security_group)


# --- addresses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    """One fixed IP of the topology and where it must live."""

    field: str
    ip: Address
    vpc: str
    subnet: str


def _placed_addresses(t: Topology) -> Iterator[_Placed]:
    for i, path in enumerate(t.forwarder_paths):
        if isinstance(path, ResolverEndpointPath):
            for j, endpoint_ip in enumerate(path.ips):
                yield _Placed(
                    f"forwarder_paths[{i}].ips[{j}].ip", endpoint_ip.ip, path.vpc, endpoint_ip.subnet
                )
        else:
            yield _Placed(f"forwarder_paths[{i}].ip", path.ip, path.vpc, path.subnet)
    if not t.client.onprem:  # on-prem addresses are the user's, not placed in a VPC
        server = t.client.dns_server
        yield _Placed("client.dns_server.ip", server.ip, t.client.vpc, server.subnet)
    for i, node in enumerate(t.nodes):
        yield _Placed(f"nodes[{i}].ip", node.ip, node.vpc, node.subnet)


def _check_addresses(t: Topology) -> Iterator[Problem]:
    vpcs = _vpcs(t)
    first: dict[tuple[str, Address], str] = {}
    for placed in _placed_addresses(t):
        key = (placed.vpc, placed.ip)
        if key in first:
            yield Problem(placed.field, f"{placed.ip} is already used by {first[key]}")
        else:
            first[key] = placed.field
        vpc = vpcs.get(placed.vpc)
        subnet = _subnet_of(vpc, placed.subnet) if vpc is not None else None
        if subnet is None:
            continue  # the unknown VPC or subnet is reported where it is named
        if placed.ip not in subnet.cidr:
            yield Problem(placed.field, f"{placed.ip} is outside its subnet {subnet.name} ({subnet.cidr})")
            continue
        # EC2 keeps the network address, +1 (router), +2 (DNS), +3 (future) and the broadcast address.
        offset = int(placed.ip) - int(subnet.cidr.network_address)
        if offset <= 3 or placed.ip == subnet.cidr.broadcast_address:
            yield Problem(
                placed.field,
                f"{placed.ip} is reserved by AWS in subnet {subnet.name} ({subnet.cidr}): the first four "
                "addresses and the last cannot be assigned",
            )


# --- instance names ------------------------------------------------------------------------------


def _check_instance_names(t: Topology) -> Iterator[Problem]:
    """EC2 instances are found by their regionha:name tag, so NAT, BIND and node names must not collide."""
    instances: list[tuple[str, str]] = []
    for i, vpc in enumerate(t.vpcs):
        if vpc.nat_instance is not None:
            instances.append((f"vpcs[{i}].nat_instance.name", vpc.nat_instance.name))
    for i, path in enumerate(t.forwarder_paths):
        if isinstance(path, BindPath):
            instances.append((f"forwarder_paths[{i}].name", path.name))
    if not t.client.onprem:
        instances.append(("client.dns_server.name", t.client.dns_server.name))
    instances += [(f"nodes[{i}].name", n.name) for i, n in enumerate(t.nodes)]
    first: dict[str, str] = {}
    for field, name in instances:
        if name not in first:
            first[name] = field
        # Repeats within nodes or within forwarder paths are reported by their own checks.
        elif field.split("[", 1)[0] != first[name].split("[", 1)[0]:
            yield Problem(field, f"instance name {name!r} is already used by {first[name]}")


def _reserved(name: str) -> bool:
    # "OnPrem", "on-prem", "on_prem": CloudWatch dimensions, alarm names and people all read them alike.
    return re.sub(r"[-_.]", "", name.lower()) == ONPREM


def _check_reserved_names(t: Topology) -> Iterator[Problem]:
    """The on-prem resolver is a canary target of its own, labelled ``onprem``: a forwarder path of that
    name would be reported (and alarmed on) as the on-prem resolver, a node confused with it."""
    named = [(f"forwarder_paths[{i}].name", "forwarder path", p.name) for i, p in enumerate(t.forwarder_paths)]
    named += [(f"nodes[{i}].name", "node", n.name) for i, n in enumerate(t.nodes)]
    for field, what, name in named:
        if _reserved(name):
            yield Problem(
                field,
                f"{what} name {name!r} is reserved: {ONPREM!r} labels the on-prem resolver in the canary's "
                "results, metrics and alarms; choose another name",
            )
