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
    # No warning: the drill's probes and the controller's node checks run in the on-prem agent.
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


# --- the build and teardown state machines on an on-prem site (moto, in process) --------------------

TOKYO, OSAKA, SINGAPORE = "ap-northeast-1", "ap-northeast-3", "ap-southeast-1"


@pytest.fixture
def stack(moto_aws):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from inprocess import handlers_in_process

    with handlers_in_process() as (stack, _invocations):
        yield stack


def given_links(data: dict) -> dict[str, str]:
    """The user's side: a virtual private gateway per link, made before the build (links are given)."""
    import boto3

    made = {}
    for link in data["client"]["links"]:
        region = TOKYO if link["vpc"] == "tokyo" else OSAKA
        gateway = boto3.client("ec2", region_name=region).create_vpn_gateway(Type="ipsec.1")["VpnGateway"]
        link["gateway_id"] = made[link["name"]] = gateway["VpnGatewayId"]
    return made


def run(stack, logical_id: str, payload: dict, name: str) -> dict:
    import json
    import time

    import boto3

    sfn = boto3.client("stepfunctions", region_name=SINGAPORE)
    arn = sfn.start_execution(stateMachineArn=stack.physical_id(logical_id), name=name,
                              input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 180
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution did not finish"
        time.sleep(0.05)
    return desc


def _gateway(region: str, gateway_id: str) -> dict:
    import boto3

    return boto3.client("ec2", region_name=region).describe_vpn_gateways(VpnGatewayIds=[gateway_id])["VpnGateways"][0]


def _mine(region: str, deployment: str) -> dict[str, list[str]]:
    import boto3

    ec2 = boto3.client("ec2", region_name=region)
    f = [{"Name": "tag:regionha:deployment", "Values": [deployment]}]
    return {k: v for k, v in {
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=f)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=f)["Subnets"]],
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=f)["Reservations"]
                      for i in r["Instances"] if i["State"]["Name"] != "terminated"],
        "peerings": [p["VpcPeeringConnectionId"] for p in ec2.describe_vpc_peering_connections()
                     ["VpcPeeringConnections"] if p["Status"]["Code"] not in ("deleted", "rejected")
                     and {"Key": "regionha:deployment", "Value": deployment} in p.get("Tags", [])],
    }.items() if v}


def test_the_build_makes_no_client_vpc_attaches_the_given_links_and_teardown_detaches_them(stack):
    import boto3

    data = copy.deepcopy(SITE)
    data["waits"] = {"poll_seconds": 0, "max_polls": 60}
    gateways = given_links(data)
    payload = {"topology": data}

    build = run(stack, "BuildStateMachine", payload, "site-build")

    assert build["status"] == "SUCCEEDED", build.get("cause")
    # Nothing in the stack's own region (the reference's client VPC lived there), one peering in all.
    assert _mine(SINGAPORE, "regionha-site") == {}
    built = {region: _mine(region, "regionha-site") for region in (TOKYO, OSAKA)}
    assert [len(built[r]["vpcs"]) for r in (TOKYO, OSAKA)] == [1, 1]
    assert len(set(built[TOKYO].get("peerings", []) + built[OSAKA].get("peerings", []))) == 1
    names = {t["Value"] for region in (TOKYO, OSAKA)
             for r in boto3.client("ec2", region_name=region).describe_instances(
                 Filters=[{"Name": "tag:regionha:deployment", "Values": ["regionha-site"]}])["Reservations"]
             for i in r["Instances"] for t in i.get("Tags", []) if t["Key"] == "regionha:name"}
    assert "hq-dns" not in names and {"osaka-bind", "Server-A", "Server-B"} <= names
    for region, link, vpc_id in ((TOKYO, "tokyo-vpn", built[TOKYO]["vpcs"][0]),
                                 (OSAKA, "osaka-dx", built[OSAKA]["vpcs"][0])):
        attached = [(a["VpcId"], a["State"]) for a in _gateway(region, gateways[link])["VpcAttachments"]]
        assert attached == [(vpc_id, "attached")], (link, attached)
        tables = boto3.client("ec2", region_name=region).describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                     {"Name": "tag:regionha:deployment", "Values": ["regionha-site"]}])["RouteTables"]
        to_site = {r.get("GatewayId") for t in tables for r in t["Routes"]
                   if r.get("DestinationCidrBlock") == "10.62.0.0/16"}
        assert len(tables) == 3 and to_site == {gateways[link]}, (link, to_site)

    again = run(stack, "BuildStateMachine", payload, "site-build-2")
    assert again["status"] == "SUCCEEDED", again.get("cause")

    gone = run(stack, "TeardownStateMachine", payload, "site-teardown")

    assert gone["status"] == "SUCCEEDED", gone.get("cause")
    assert {r: _mine(r, "regionha-site") for r in (TOKYO, OSAKA, SINGAPORE)} == {TOKYO: {}, OSAKA: {}, SINGAPORE: {}}
    # The user's gateways are still there, detached: given, not ours to delete.
    for region, link in ((TOKYO, "tokyo-vpn"), (OSAKA, "osaka-dx")):
        gateway = _gateway(region, gateways[link])
        assert gateway["State"] == "available"
        assert {a["State"] for a in gateway.get("VpcAttachments", [])} <= {"detached"}


def test_a_build_with_a_gateway_that_does_not_exist_fails_naming_the_link(stack):
    data = copy.deepcopy(SITE)
    data["waits"] = {"poll_seconds": 0, "max_polls": 5}
    given_links(data)
    data["client"]["links"][1]["gateway_id"] = "vgw-0123abcd"

    build = run(stack, "BuildStateMachine", {"topology": data}, "site-no-gateway")

    assert build["status"] == "FAILED"
    assert "client.links[1].gateway_id: virtual private gateway vgw-0123abcd of link osaka-dx is not found" in \
        build.get("cause", ""), build.get("cause")


def test_the_scheduled_lambda_canary_leaves_an_onprem_site_to_its_agent(monkeypatch):
    # From outside the site every path would fail and fire the alarms the agent's results clear.
    import importlib.util

    from regionha.watch import canary

    monkeypatch.setenv("DEPLOYMENT", "regionha-site")
    monkeypatch.setenv("STATE_TABLE", "t")
    monkeypatch.setenv("CANARY_FUNCTION", "f")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any AWS call would fail
    monkeypatch.setattr(canary, "deployment_topology", lambda *a: load_topology(SITE_FILE))
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("dispatch_canary_app", root / "functions/dispatch_canary/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "f", 128, "r"
        invoked_function_arn = "arn:aws:lambda:ap-southeast-1:123456789012:function:f"

    assert "on-prem agent" in module.lambda_handler({}, Context())["skipped"]

