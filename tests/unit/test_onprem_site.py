"""A client site that is a real on-prem network (issue 12 item 3): topologies/onprem-site.yaml.

No client VPC and no peering to it; the on-prem DNS server and the canary's host are the user's; the
VPN / Direct Connect links are given (virtual private gateways) and validation decides reachability
from their routes and the cluster VPCs' ``link:`` routes. One test per refusal, each naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from regionha.topology import TopologyError, load_topology, parse_topology
from regionha.topology.validation import topology_warnings

SITE_FILE = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/onprem-site.yaml"
SITE = load_topology(SITE_FILE).to_json()


def problems_after(change) -> list[tuple[str, str]]:
    data = copy.deepcopy(SITE)
    change(data)
    try:
        parse_topology(data)
    except TopologyError as e:
        return [(p.field, p.message) for p in e.problems]
    return []


def vpc(data, name):
    return next(v for v in data["vpcs"] if v["name"] == name)


def table(data, vpc_name, name):
    return next(t for t in vpc(data, vpc_name)["route_tables"] if t["name"] == name)


def test_the_shipped_site_is_valid_with_no_client_vpc_and_no_warning():
    site = load_topology(SITE_FILE)
    assert site.client.onprem and site.client_vpc is None
    assert [v.name for v in site.vpcs] == ["tokyo", "osaka"] and [p.name for p in site.peerings] == ["tokyo-osaka"]
    # Only the regions' BIND forwarder is regionha's to build: the on-prem DNS server is the user's.
    assert [s.name for s in site.bind_servers()] == ["osaka-bind"]
    assert str(site.canary_source()) == "10.62.10.20"
    assert topology_warnings(site) == []


def test_a_file_without_client_kind_is_a_vpc_client_site_as_before():
    reference = load_topology()
    assert reference.client.kind == "vpc" and not reference.client.onprem and reference.client_vpc == "singapore"


def _route(data, vpc_name, table_name, destination):
    return next(r for r in table(data, vpc_name, table_name)["routes"] if r["destination"] == destination)


CASES = [
    ("unknown-kind", lambda d: d["client"].update(kind="branch"), "client.kind", "unknown kind 'branch'"),
    ("vpc-key-on-onprem", lambda d: d["client"].update(vpc="tokyo"), "client.vpc", "unknown key"),
    ("no-links", lambda d: d["client"].update(links=[]), "client.links", "at least 1 item"),
    ("bad-gateway", lambda d: d["client"]["links"][0].update(gateway_id="tgw-0123456789abcdef0"),
     "client.links[0].gateway_id", "String should match pattern"),
    ("dns-outside-cidr", lambda d: d["client"]["dns_server"].update(ip="10.62.11.10"), "client.dns_server.ip",
     "on-prem DNS server 10.62.11.10 is outside client.cidr 10.62.10.0/24"),
    ("canary-outside-cidr", lambda d: d["client"].update(canary_ip="10.63.0.5"), "client.canary_ip",
     "canary host (the on-prem agent) 10.63.0.5 is outside client.cidr"),
    ("canary-is-the-resolver", lambda d: d["client"].update(canary_ip="10.62.10.10"), "client.canary_ip",
     "is the on-prem DNS server's own address"),
    ("site-overlaps-a-vpc", lambda d: d["client"].update(cidr="10.60.200.0/24", canary_ip="10.60.200.20")
     or d["client"]["dns_server"].update(ip="10.60.200.10"), "client.cidr", "overlaps VPC tokyo (10.60.0.0/16"),
    ("two-links-one-vpc", lambda d: d["client"]["links"][1].update(vpc="tokyo"), "client.links[1].vpc",
     "VPC tokyo already has link tokyo-vpn"),
    ("one-gateway-twice", lambda d: d["client"]["links"][1].update(gateway_id="vgw-0a1b2c3d4e5f60001"),
     "client.links[1].gateway_id", "already link tokyo-vpn's"),
    ("link-to-unknown-vpc", lambda d: d["client"]["links"][1].update(vpc="seoul"), "client.links[1].vpc",
     "unknown VPC 'seoul'"),
    ("route-to-unknown-link", lambda d: _route(d, "tokyo", "A2-rt", "10.62.0.0/16").update(target="link:tokyo-dx"),
     "vpcs[0].route_tables[1].routes[2].target", "unknown link 'tokyo-dx' (known: tokyo-vpn, osaka-dx)"),
    ("route-over-another-vpcs-link",
     lambda d: _route(d, "tokyo", "A3-rt", "10.62.0.0/16").update(target="link:osaka-dx"),
     "vpcs[0].route_tables[2].routes[1].target", "link osaka-dx lands in VPC osaka, not VPC tokyo"),
    # Reachability: the site's side (the links' routes) ...
    ("no-link-route-to-osaka", lambda d: d["client"]["links"][1].update(routes=["10.99.0.0/16"]), "client.links",
     "no link's routes hold 10.61.111.10 (VPC osaka, 10.61.0.0/16): add 10.61.0.0/16 to the routes of the link "
     "to VPC osaka"),
    ("osaka-sent-over-tokyos-link", lambda d: d["client"]["links"][0].update(routes=["10.60.0.0/16", "10.61.0.0/16"])
     or d["client"]["links"][1].update(routes=["10.61.200.0/24"]), "client.links[0].routes[1]",
     "10.61.111.10 goes over link tokyo-vpn to VPC tokyo (route 10.61.0.0/16), not to VPC osaka"),
    # ... and the cluster's side (a link: route back in each destination subnet's table).
    ("no-route-back-from-b3", lambda d: table(d, "osaka", "B3-rt")["routes"].pop(1), "vpcs[1].route_tables[2]",
     "subnet B3 of VPC osaka has no route back to the on-prem network over a link: no route matches 10.62.10.10"),
    ("route-back-by-peering", lambda d: _route(d, "tokyo", "A2-rt", "10.62.0.0/16").update(
        target="peering:tokyo-osaka"), "vpcs[0].route_tables[1].routes[2].destination",
     "10.62.0.0/16 is not within osaka (10.61.0.0/16), the peer VPC of tokyo-osaka"),
    ("route-back-by-nat", lambda d: table(d, "tokyo", "A2-rt")["routes"].pop(2), "vpcs[0].route_tables[1]",
     "has no route back to the on-prem network over a link: 10.62.10.0/24 goes to the NAT instance"),
    ("sg-shuts-the-site-out", lambda d: vpc(d, "osaka")["security_groups"][1].update(ingress=[]),
     "nodes[1].security_group", "does not admit TCP 80 from the client network 10.62.10.0/24"),
    ("forwarder-sg-shuts-the-dns-server-out",
     lambda d: vpc(d, "tokyo")["security_groups"][0]["ingress"][1].update(cidr="10.62.10.11/32"),
     "forwarder_paths[0].security_group", "does not admit TCP 53 from the on-prem DNS server 10.62.10.10"),
]


@pytest.mark.parametrize(("change", "field", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_what_cannot_work_is_refused_naming_the_field(change, field, message):
    found = problems_after(change)
    assert any(f == field and message in m for f, m in found), found


def test_a_link_route_needs_an_onprem_site():
    data = load_topology().to_json()
    data["vpcs"][0]["route_tables"][0]["routes"][2]["target"] = "link:tokyo-vpn"
    with pytest.raises(TopologyError) as e:
        parse_topology(data)
    assert any(p.field == "vpcs[0].route_tables[0].routes[2].target" and "needs an on-prem client site" in p.message
               for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("name", ["onprem", "On-Prem"])
def test_the_onprem_label_stays_reserved_on_a_real_site(name):
    found = problems_after(lambda d: d["forwarder_paths"][1].update(name=name))
    assert any(f == "forwarder_paths[1].name" and "is reserved" in m for f, m in found), found
