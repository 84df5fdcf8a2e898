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
from regionha.topology import build_input, load_topology, parse_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topology_flow import (  # noqa: E402
    acceptance_drill,
    cut_path_alarm,
    leftovers,
    resolve_all,
    second_deployment,
    watch_made,
)

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


def _ids(found: dict[str, list[str]]) -> set[str]:
    return {i for ids in found.values() for i in ids}


def test_two_deployments_side_by_side_share_nothing_and_each_tears_down_alone():
    side = shipped("side-by-side.yaml")
    ref = local_topology(load_topology(), ttl=3)
    with LocalRuntime(side) as rt:
        assert rt.build().status == "SUCCEEDED"
        other = rt.run_state_machine("BuildStateMachine", {"topology": ref.to_json()}, kind="build")
        assert other.status == "SUCCEEDED", (other.error, other.cause)
        rt.settle()
        mine, theirs = leftovers(rt, side), leftovers(rt, ref)
        assert mine and theirs and not _ids(mine) & _ids(theirs), (mine, theirs)
        for topology in (side, ref):
            made = watch_made(rt, topology)
            assert made["metric"] == made["wanted"] and made["composite"] and made["dashboard"], made

        with second_deployment(rt, ref):
            assert all(resolve_all(rt, ref).values()) and all(resolve_all(rt, side).values())
            canary = cut_path_alarm(rt, side, "osaka-bind")
            assert all(canary["fired"].values()) and all(canary["cleared"].values()), canary
            assert canary["critical_fired"] == []
            # The other deployment's path alarm saw none of that cut.
            assert rt.alarm_states()[f"regionha-{ref.deployment}-path-down-osaka-bind"] != "ALARM"

            report = acceptance_drill(rt, side)
            assert report["status"] == "PASSED", json.dumps(
                {k: report.get(k) for k in ("error", "steps", "alarm_proof", "restore")}, default=str)[:3000]
            assert all(resolve_all(rt, ref).values())  # the drill touched only its own deployment

            gone = rt.run_state_machine("TeardownStateMachine", {"topology": ref.to_json()}, kind="teardown")
            assert gone.status == "SUCCEEDED", (gone.error, gone.cause)
            assert leftovers(rt, ref) == {}
            assert leftovers(rt, side) == mine
            assert all(resolve_all(rt, side).values())

        teardown = rt.teardown()
        assert teardown.status == "SUCCEEDED", (teardown.error, teardown.cause)
        assert leftovers(rt, side) == {}


def test_three_cluster_regions_and_the_drill_fails_each_node_in_turn():
    topology = shipped("three-regions.yaml")
    assert len(topology.nodes) == 3
    with LocalRuntime(topology) as rt:
        build = rt.build()
        assert build.status == "SUCCEEDED", (build.error, build.cause)
        rt.settle()
        made = watch_made(rt, topology)
        assert made["metric"] == made["wanted"] and made["composite"] and made["dashboard"], made
        assert f"regionha-{topology.deployment}-node-down-Server-C" in made["metric"]

        canary = cut_path_alarm(rt, topology, "seoul-bind")
        assert all(canary["fired"].values()) and all(canary["cleared"].values()), canary
        assert canary["critical_fired"] == []

        report = acceptance_drill(rt, topology)
        assert report["status"] == "PASSED", json.dumps(
            {k: report.get(k) for k in ("error", "steps", "alarm_proof", "restore")}, default=str)[:3000]
        steps = [s["id"] for s in report["steps"]]
        assert {"fail-primary", "fail-secondary", "fail-node-Server-C", "observe-node-Server-C"} <= set(steps)
        assert report["alarms"][f"regionha-{topology.deployment}-path-down-seoul-bind"]["fired_during_fault"]

        teardown = rt.teardown()
        assert teardown.status == "SUCCEEDED", (teardown.error, teardown.cause)
        assert leftovers(rt, topology) == {}
