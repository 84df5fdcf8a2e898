"""Topologies that differ in shape, each end to end in the local runtime, without editing template.yaml.

One combined flow per topology (tests/topology_flow.py): build → the build's alarms and dashboard
match the topology → the scheduled canary, a cut path's alarm firing and clearing → the acceptance
drill PASSED → teardown leaving nothing. The reference deployment runs the same flow in
test_local_demo.py; the side-by-side deployment shares the dual-resolver test's runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import build_input, parse_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topology_flow import (  # noqa: E402
    acceptance_drill,
    cut_path_alarm,
    leftovers,
    resolve_all,
    second_deployment,
    watch_made,
)

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SHIPPED = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies"


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


def shipped(name: str):
    # What `regionha build --topology F` sends: the validated file, inline.
    return local_topology(parse_topology(build_input(SHIPPED / name)["topology"], name), ttl=3)


def _ids(found: dict[str, list[str]]) -> set[str]:
    return {i for ids in found.values() for i in ids}


def test_both_regions_behind_resolver_endpoints_beside_a_second_deployment_sharing_nothing():
    """(b) dual-resolver.yaml end to end, while (d) side-by-side.yaml, a second deployment of the
    reference's shape, is built beside it in the same account and region, resolves on its own, and is
    torn down without touching the first (one flow: each runtime start and build costs seconds)."""
    dual = shipped("dual-resolver.yaml")
    side = shipped("side-by-side.yaml")
    assert {p.kind for p in dual.forwarder_paths} == {"resolver_endpoint"}
    with LocalRuntime(dual) as rt:
        build = rt.build()
        assert build.status == "SUCCEEDED", (build.error, build.cause)
        other = rt.run_state_machine("BuildStateMachine", {"topology": side.to_json()}, kind="build")
        assert other.status == "SUCCEEDED", (other.error, other.cause)
        rt.settle()
        mine, theirs = leftovers(rt, dual), leftovers(rt, side)
        assert mine and theirs and not _ids(mine) & _ids(theirs), (mine, theirs)
        for topology in (dual, side):
            made = watch_made(rt, topology)
            assert made["metric"] == made["wanted"] and made["composite"] and made["dashboard"], made

        with second_deployment(rt, side):
            assert all(resolve_all(rt, side).values()) and all(resolve_all(rt, dual).values())
            canary = cut_path_alarm(rt, dual, "west-resolver")
            assert all(canary["fired"].values()) and all(canary["cleared"].values()), canary
            assert canary["critical_fired"] == []
            # The other deployment's alarms saw none of that cut.
            assert not [n for n, s in rt.alarm_states().items()
                        if n.startswith(f"regionha-{side.deployment}-path-down") and s == "ALARM"]

            report = acceptance_drill(rt, dual)
            assert report["status"] == "PASSED", json.dumps(
                {k: report.get(k) for k in ("error", "steps", "alarm_proof", "restore")}, default=str)[:3000]
            # Each region's two endpoint IPs were measured, and each path's alarms proven.
            assert {r["path"] for r in report["recovery"]} >= {"east-resolver/10.20.3.53",
                                                                "west-resolver/10.21.4.53"}
            assert report["alarms"][f"regionha-{dual.deployment}-path-down-west-resolver-10.21.3.53"][
                "fired_during_fault"]
            assert all(resolve_all(rt, side).values())  # the drill touched only its own deployment

            gone = rt.run_state_machine("TeardownStateMachine", {"topology": side.to_json()}, kind="teardown")
            assert gone.status == "SUCCEEDED", (gone.error, gone.cause)
            assert leftovers(rt, side) == {}
            assert leftovers(rt, dual) == mine
            assert all(resolve_all(rt, dual).values())

        teardown = rt.teardown()
        assert teardown.status == "SUCCEEDED", (teardown.error, teardown.cause)
        assert leftovers(rt, dual) == {}


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
