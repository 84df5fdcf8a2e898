"""Security group and network ACL rules as EC2 evaluates them, as pure functions (Amazon VPC user
guide, "Security group rules" and "Network ACL rules"): security groups are a union of allows; a
network ACL's entries are taken in rule-number order, the first match decides and anything unmatched
is denied. A source network is allowed only if *every* address in it is allowed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Proto = Literal["udp", "tcp"]
Network = ipaddress.IPv4Network
_PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1"}


def _protocol_matches(rule_protocol: Any, proto: str) -> bool:
    rule = str(rule_protocol).lower()
    return rule in ("-1", "all") or rule == proto or rule == _PROTOCOL_NUMBERS.get(proto)


def _port_in(low: Any, high: Any, port: int) -> bool:
    # Absent or -1 bounds mean every port (all-protocol rules carry none).
    if low is None or high is None or int(low) == -1:
        return True
    return int(low) <= port <= int(high)


def _subtract(parts: list[Network], cidr: Network) -> list[Network]:
    """``parts`` minus ``cidr`` (two CIDR blocks either nest or are disjoint)."""
    out: list[Network] = []
    for p in parts:
        if not p.overlaps(cidr):
            out.append(p)
        elif not p.subnet_of(cidr):
            out.extend(p.address_exclude(cidr))
    return out


def sg_allows(permissions: Iterable[Mapping[str, Any]], source: Network, proto: Proto, port: int) -> bool:
    """Do security group ingress ``IpPermissions`` (as DescribeSecurityGroups returns them) let every
    address of ``source`` reach ``proto``/``port``? Group-to-group pairs and prefix lists cannot name a
    client site in another region, so only ``IpRanges`` count."""
    undecided = [source]
    for perm in permissions:
        if not _protocol_matches(perm.get("IpProtocol"), proto):
            continue
        if not _port_in(perm.get("FromPort"), perm.get("ToPort"), port):
            continue
        for r in perm.get("IpRanges", []):
            undecided = _subtract(undecided, ipaddress.IPv4Network(r["CidrIp"], strict=False))
            if not undecided:
                return True
    return False


def nacl_allows(
    entries: Iterable[Mapping[str, Any]], source: Network, proto: Proto, port: int, egress: bool = False
) -> bool:
    """Does a network ACL (``Entries`` of DescribeNetworkAcls) let every address of ``source`` through
    in one direction? Rule-number order, first match wins, an unmatched packet is denied."""
    undecided = [source]
    ordered = sorted(
        (e for e in entries if bool(e.get("Egress")) == egress and e.get("CidrBlock")),
        key=lambda e: int(e["RuleNumber"]),
    )
    for e in ordered:
        if not _protocol_matches(e.get("Protocol"), proto):
            continue
        port_range = e.get("PortRange") or {}
        if not _port_in(port_range.get("From"), port_range.get("To"), port):
            continue
        cidr = ipaddress.IPv4Network(e["CidrBlock"], strict=False)
        if not any(p.overlaps(cidr) for p in undecided):
            continue
        if e.get("RuleAction") != "allow":
            return False
        undecided = _subtract(undecided, cidr)
        if not undecided:
            return True
    return False
