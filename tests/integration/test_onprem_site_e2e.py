"""A client site that is a real on-prem network (topologies/onprem-site.yaml), end to end in the twin.

No client VPC: the site is a network of its own beyond its given links (virtual private gateways the
build attaches), its DNS server is a real named from ``regionha onprem named-conf``'s render, and the
canary is the on-prem agent, the unit's real command (``regionha canary run --publish``) as a process
on the site. The flow of tests/topology_flow.py: build → the agent's datapoints, a cut path's alarm
firing and clearing → the acceptance drill PASSED → teardown leaving nothing (the gateways detached,
not deleted). Plus what AWS would drop: a detached gateway, a missing return route.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import build_input, parse_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topology_flow import acceptance_drill, cut_path_alarm, leftovers, resolve_all, watch_made  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SHIPPED = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies"


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


def _gateways(rt, topology) -> dict[str, dict]:
    out = {}
    for link in topology.client.links:
        ec2 = rt.clients.ec2(topology.region_of(link.vpc))
        out[link.name] = ec2.describe_vpn_gateways(VpnGatewayIds=[link.gateway_id])["VpnGateways"][0]
    return out


def test_an_onprem_site_builds_is_watched_by_its_agent_drills_and_tears_down():
    site = local_topology(parse_topology(build_input(SHIPPED / "onprem-site.yaml")["topology"], "onprem-site.yaml"),
                          ttl=3)
    with LocalRuntime(site) as rt:
        topology = rt.topology  # the gateways the user made before the build
        build = rt.build()
        assert build.status == "SUCCEEDED", (build.error, build.cause)
        rt.settle()
        assert {n: [a["State"] for a in g["VpcAttachments"]] for n, g in _gateways(rt, topology).items()} == {
            "tokyo-vpn": ["attached"], "osaka-dx": ["attached"]}
        made = watch_made(rt, topology)
        assert made["metric"] == made["wanted"] and made["composite"] and made["dashboard"], made
        # The site's clients resolve through its own DNS server and every path, over the links. With an
        # on-prem client the build cannot probe from the site (FirstCanaryRound is skipped: the agent
        # publishes), so it does not wait for the Osaka forwarder's named to answer: allow it to come up.
        assert all(resolve_all(rt, topology, within=30).values()), rt.world.last
        assert rt.world.last["node_paths"] == {"Server-A": "open", "Server-B": "open"}, rt.world.last
        # What AWS would drop: a link whose gateway the user detached carries nothing either way.
        tokyo = rt.clients.ec2(topology.region_of("tokyo"))
        vpn = topology.client.link("tokyo-vpn")
        vpc_id = _gateways(rt, topology)["tokyo-vpn"]["VpcAttachments"][0]["VpcId"]
        tokyo.detach_vpn_gateway(VpcId=vpc_id, VpnGatewayId=vpn.gateway_id)
        try:
            rt.settle()
            cut = rt.world.last
            assert "is not attached to a VPC" in cut["node_paths"]["Server-A"], cut
            assert all("is not attached" in v["udp"] for v in cut["paths"]["tokyo-resolver"].values()), cut
            assert cut["node_paths"]["Server-B"] == "open"
            assert cut["paths"]["osaka-bind"]["10.61.111.10"]["udp"] == "open"
        finally:
            tokyo.attach_vpn_gateway(VpcId=vpc_id, VpnGatewayId=vpn.gateway_id)
        rt.settle()
        assert rt.world.last["node_paths"]["Server-A"] == "open", rt.world.last

        canary = cut_path_alarm(rt, topology, "osaka-bind")
        assert all(canary["fired"].values()) and all(canary["cleared"].values()), (canary, rt.site.agent_tail())
        assert canary["critical_fired"] == []

        report = acceptance_drill(rt, topology)
        assert report["status"] == "PASSED", json.dumps(
            {k: report.get(k) for k in ("error", "steps", "alarm_proof", "restore")}, default=str)[:3000]
        assert report["alarms"][f"regionha-{topology.deployment}-path-down-osaka-bind"]["fired_during_fault"]
        # The drill's probes (and the controller's node checks) were answered by the on-prem agent.
        replies = rt.clients.client("dynamodb", rt.region).scan(
            TableName=f"regionha-{topology.deployment}-probe-replies", Select="COUNT")["Count"]
        assert replies >= len(report["recovery"]), replies
        assert '"all_succeeded": true' in rt.site.agent_log.read_text()  # its own published rounds

        teardown = rt.teardown()
        assert teardown.status == "SUCCEEDED", (teardown.error, teardown.cause)
        assert leftovers(rt, topology) == {}
        # The user's gateways are still there, detached: given, not regionha's to delete.
        for name, gateway in _gateways(rt, topology).items():
            assert gateway["State"] == "available", name
            assert {a["State"] for a in gateway.get("VpcAttachments", [])} <= {"detached"}, (name, gateway)
