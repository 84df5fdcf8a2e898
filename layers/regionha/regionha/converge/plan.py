"""The build plan: what the state machines iterate over, derived from a validated topology."""

from __future__ import annotations

from typing import Any

from regionha.topology import Topology


def build_plan(topology: Topology) -> dict[str, Any]:
    """Lists for the Map states plus the bounded-wait knobs, all plain JSON."""
    return {
        "deployment": topology.deployment,
        "topology": topology.to_json(),
        "vpcs": [v.name for v in topology.vpcs],
        "nat_vpcs": [v.name for v in topology.vpcs if v.nat_instance is not None],
        "peerings": [p.name for p in topology.peerings],
        "resolver_paths": [p.name for p in topology.forwarder_paths if p.kind == "resolver_endpoint"],
        "bind_servers": [s.name for s in topology.bind_servers()],
        "nodes": [n.name for n in topology.nodes],
        "primary": topology.primary.name,
        "waits": {"poll_seconds": topology.waits.poll_seconds, "max_polls": topology.waits.max_polls},
    }
