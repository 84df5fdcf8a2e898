"""Bring your own topology: ``build_input`` turns a file into the build's execution input; every
shipped topology validates; the sample events are what ``build_input`` makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionha.payload import topology_from_event
from regionha.topology import TopologyError, build_input, load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "layers/regionha/regionha/topologies"


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_topology_validates_and_round_trips_as_build_input(path):
    payload = build_input(path)

    assert set(payload) == {"topology"}
    # What the build's tasks read (payload.topology_from_event) is the file, unchanged.
    assert topology_from_event(payload) == load_topology(path)
    assert json.loads(json.dumps(payload)) == payload


def test_without_a_file_the_input_is_the_reference():
    assert parse_topology(build_input()["topology"]) == load_topology()


def test_a_bad_file_is_refused_before_any_aws_call_naming_file_and_field(tmp_path):
    data = load_topology().to_json()
    data["nodes"] = data["nodes"][:1]
    bad = tmp_path / "mine.yaml"
    bad.write_text(json.dumps(data))

    with pytest.raises(TopologyError) as e:
        build_input(bad)

    assert "mine.yaml" in str(e.value) and "nodes" in str(e.value)


def test_an_input_over_the_step_functions_limit_is_refused(tmp_path):
    data = load_topology().to_json()
    data["vpcs"][0]["security_groups"][0]["description"] = "x" * (300 * 1024)
    big = tmp_path / "big.yaml"
    big.write_text(json.dumps(data))

    with pytest.raises(TopologyError, match="Step Functions allows 262144"):
        build_input(big)


def test_the_sample_events_are_what_build_input_makes():
    assert json.loads((ROOT / "events/build.json").read_text()) == {"topology_file": "reference.yaml"}
    inline = json.loads((ROOT / "events/build-inline.json").read_text())
    assert inline == build_input(SHIPPED / "dual-resolver.yaml")
