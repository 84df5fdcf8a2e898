"""Topologies that differ in shape, each end to end in the local runtime, without editing template.yaml.

One combined flow per topology (tests/topology_flow.py): build → the build's alarms and dashboard
match the topology → the scheduled canary, a cut path's alarm firing and clearing → the acceptance
drill PASSED → teardown leaving nothing. The reference deployment runs the same flow in
test_local_demo.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import build_input, parse_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topology_flow import acceptance_drill, cut_path_alarm, leftovers, watch_made  # noqa: E402

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies"


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


def shipped(name: str):
    # What `regionha build --topology F` sends: the validated file, inline.
    return local_topology(parse_topology(build_input(SHIPPED / name)["topology"], name), ttl=3)


def test_both_regions_behind_resolver_endpoints_with_other_names_cidrs_and_ttl():
    topology = shipped("dual-resolver.yaml")
    assert {p.kind for p in topology.forwarder_paths} == {"resolver_endpoint"}
    with LocalRuntime(topology) as rt:
        build = rt.build()
        assert build.status == "SUCCEEDED", (build.error, build.cause)
        rt.settle()
        made = watch_made(rt, topology)
        assert made["metric"] == made["wanted"] and made["composite"] and made["dashboard"], made

        canary = cut_path_alarm(rt, topology, "west-resolver")
        assert all(canary["fired"].values()) and all(canary["cleared"].values()), canary
        assert canary["critical_fired"] == []

        report = acceptance_drill(rt, topology)
        assert report["status"] == "PASSED", json.dumps(
            {k: report.get(k) for k in ("error", "steps", "alarm_proof", "restore")}, default=str)[:3000]
        # Each region's two endpoint IPs were measured, and each path's alarms proven.
        assert {r["path"] for r in report["recovery"]} >= {"east-resolver/10.20.3.53", "west-resolver/10.21.4.53"}
        assert report["alarms"][f"regionha-{topology.deployment}-path-down-west-resolver-10.21.3.53"][
            "fired_during_fault"]

        teardown = rt.teardown()
        assert teardown.status == "SUCCEEDED", (teardown.error, teardown.cause)
        assert leftovers(rt, topology) == {}
