"""The drill's plan (pure: no AWS): a scenario's steps, in order, for a topology; each step says what
it does (``kind``: regionha.drill.steps), what it breaks or restores (``faults``) and what every path
must show (``expect``: path label -> node, ``CUT`` or ``TRUTH``). The step ids are the catalogue's
(regionha.drill.steps), so the state machine runs exactly these ids in this order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from regionha.drill import steps as catalogue
from regionha.drill.judge import CUT
from regionha.drill.steps import ACCEPTANCE, FAIL_ACTIVE_NODE, INJECT, NODE, OBSERVE, PATH, REJOIN
from regionha.errors import ConfigurationError
from regionha.watch import canary

if TYPE_CHECKING:
    from regionha.drill.inputs import DrillSettings
    from regionha.topology import Topology

def path_labels(topology: Topology) -> dict[str, list[str]]:
    """Forwarder path name (and ``onprem``) -> the canary's labels of its addresses."""
    out: dict[str, list[str]] = {}
    for target in canary.canary_targets(topology):
        out.setdefault(target.forwarder, []).append(target.path)
    return out


def _region_paths(topology: Topology, node_name: str) -> list[str]:
    vpc = topology.node(node_name).vpc
    paths = [p.name for p in topology.forwarder_paths if p.vpc == vpc]
    if not paths:
        raise ConfigurationError(f"acceptance: no forwarder path in {vpc}, the region of {node_name}, to cut")
    return paths


def expect_paths(topology: Topology, default: str, cut: Iterable[str] = ()) -> dict[str, str]:
    """Every path label -> ``default``, or ``CUT`` for the labels of the forwarder paths in ``cut``."""
    labels = path_labels(topology)
    cut = set(cut)
    return {label: (CUT if forwarder in cut else default) for forwarder, ls in labels.items() for label in ls}


def _standby(topology: Topology, active: str) -> str:
    return next(n.name for n in topology.nodes if n.name != active)


def plan(topology: Topology, settings: DrillSettings, active: str | None) -> list[dict[str, Any]]:
    """The steps of the scenario, in order; the state machine runs exactly these ids in this order."""
    primary = topology.primary.name
    if settings.scenario == ACCEPTANCE:
        secondary = _standby(topology, primary)
        primary_paths, secondary_paths = _region_paths(topology, primary), _region_paths(topology, secondary)
        fail_primary = [{"kind": NODE, "target": primary}] + [
            {"kind": PATH, "target": p} for p in primary_paths]
        fail_secondary = [{"kind": NODE, "target": secondary}] + [
            {"kind": PATH, "target": p} for p in secondary_paths]
        return [
            {"id": catalogue.ENSURE_PRIMARY, "kind": catalogue.ENSURE_NODE, "node": primary,
             "name": f"1 ensure the record names {primary}"},
            {"id": catalogue.VERIFY_PRIMARY, "kind": OBSERVE, "expect": expect_paths(topology, primary),
             "name": f"2 every path reaches {primary}"},
            {"id": catalogue.FAIL_PRIMARY, "kind": INJECT, "faults": fail_primary,
             "name": f"3 fail {primary}, cut {', '.join(primary_paths)}"},
            {"id": catalogue.OBSERVE_SECONDARY, "kind": OBSERVE, "measure": True,
             "expect": expect_paths(topology, secondary, primary_paths),
             "name": f"4 on-prem reaches {secondary} through {', '.join(secondary_paths)}"},
            {"id": catalogue.REJOIN_PRIMARY, "kind": REJOIN, "faults": fail_primary,
             "name": f"5 start {primary}, restore {', '.join(primary_paths)}"},
            {"id": catalogue.FAIL_SECONDARY, "kind": INJECT, "faults": fail_secondary,
             "name": f"6 fail {secondary}, cut {', '.join(secondary_paths)}"},
            {"id": catalogue.OBSERVE_PRIMARY, "kind": OBSERVE, "measure": True,
             "expect": expect_paths(topology, primary, secondary_paths),
             "name": f"7 on-prem reaches {primary} through {', '.join(primary_paths)}"},
        ] + _further_nodes(topology, primary, secondary, fail_secondary)
    if active is None:
        raise ConfigurationError("the record names no node of the topology: nothing to drill against")
    if settings.scenario == FAIL_ACTIVE_NODE:
        standby = _standby(topology, active)
        return [
            {"id": catalogue.FAIL_ACTIVE_NODE, "kind": INJECT, "faults": [{"kind": NODE, "target": active}],
             "name": f"fail the active node {active}"},
            {"id": catalogue.OBSERVE_ACTIVE_MOVED, "kind": OBSERVE, "measure": True,
             "expect": expect_paths(topology, standby),
             "name": f"every path reaches {standby}"},
        ]
    path = settings.region_path
    if path not in {p.name for p in topology.forwarder_paths}:
        known = ", ".join(p.name for p in topology.forwarder_paths)
        raise ConfigurationError(f"region_path {path!r} is not a forwarder path (paths: {known})")
    return [
        {"id": catalogue.CUT_PATH, "kind": INJECT, "faults": [{"kind": PATH, "target": path}],
         "name": f"cut {path}"},
        {"id": catalogue.OBSERVE_PATH_CUT, "kind": OBSERVE, "measure": True,
         "expect": expect_paths(topology, active, [path]),
         "name": f"on-prem still reaches {active}, {path} does not answer"},
    ]


def _further_nodes(topology: Topology, primary: str, secondary: str,
                   fail_secondary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Acceptance with more than two nodes (``ACCEPTANCE_MORE_STEPS`` of the plan): after the article's
    seven steps the record names the primary again; rejoin the secondary, then fail each further node in
    turn with its region's paths cut, observe on-prem still reaching the primary through the others, and
    rejoin it (the last one is put back by restore, as the secondary is in the two-node procedure)."""
    others = [n.name for n in topology.nodes if n.name not in (primary, secondary)]
    if not others:
        return []
    steps: list[dict[str, Any]] = [
        {"id": catalogue.REJOIN_SECONDARY, "kind": REJOIN, "faults": fail_secondary,
         "name": f"8 start {secondary}, restore {', '.join(_region_paths(topology, secondary))}"}]
    number = 9
    for i, node in enumerate(others):
        paths = _region_paths(topology, node)
        fail = [{"kind": NODE, "target": node}] + [{"kind": PATH, "target": p} for p in paths]
        steps += [
            {"id": catalogue.fail_node_step(node), "kind": INJECT, "faults": fail,
             "name": f"{number} fail {node}, cut {', '.join(paths)}"},
            {"id": catalogue.observe_node_step(node), "kind": OBSERVE, "measure": True,
             "expect": expect_paths(topology, primary, paths),
             "name": f"{number + 1} on-prem still reaches {primary} while {node} is down"},
        ]
        number += 2
        if i < len(others) - 1:
            steps.append({"id": catalogue.rejoin_node_step(node), "kind": REJOIN, "faults": fail,
                          "name": f"{number} start {node}, restore {', '.join(paths)}"})
            number += 1
    return steps


def cut_addresses(step: Mapping[str, Any]) -> int:
    """How many forwarder addresses a planned step expects silent (its ``CUT`` expectations): what the
    on-prem resolver may have to fall back over (judge.recovery_budget)."""
    return sum(1 for want in (step.get("expect") or {}).values() if want == CUT)
