"""The drill's catalogue: scenarios, their steps and the drill state machine's states, from one source.

One spelling scheme everywhere: a step's id is its ASL state's name in kebab-case (state
``FailActiveNode`` runs step ``fail-active-node``), and a scenario is named by its first step where
that says it (``fail-active-node``, ``cut-path``). The plan (``regionha.drill.planner``), the state machine
(``statemachines/drill.asl.json``, checked against this module by tests/unit/test_drill_steps.py), the
report and the CLI all take their names from here. Pure: no AWS.
"""

from __future__ import annotations

import re

from regionha.errors import RegionhaError

# --- scenarios -----------------------------------------------------------------------------------------

ACCEPTANCE = "acceptance"  # the article's seven steps (and further nodes, if any)
FAIL_ACTIVE_NODE = "fail-active-node"  # fail the node the record names, watch every path move
CUT_PATH = "cut-path"  # cut one forwarder path, watch on-prem keep resolving through the others
SCENARIOS = (ACCEPTANCE, FAIL_ACTIVE_NODE, CUT_PATH)

# --- what a drill breaks (regionha.drill.faults applies and restores them) ------------------------------

NODE, PATH = "node", "path"  # a cluster node fails; a region's forwarder path is cut
CUTS = ("dns", "all")  # what a path cut denies: DNS (UDP and TCP 53) or all traffic from the client network

# --- step kinds (what a step does) ---------------------------------------------------------------------

ENSURE_NODE = "ensure_node"  # the record names a node (moved there in built-in mode)
OBSERVE = "observe"  # probe every path until each shows what the step expects, bounded
INJECT = "inject"  # record, then apply, faults
REJOIN = "rejoin"  # restore some faults, wait until the nodes and the paths are back

# --- step ids, per scenario, in the order the state machine runs them ---------------------------------

ENSURE_PRIMARY = "ensure-primary"
VERIFY_PRIMARY = "verify-primary"
FAIL_PRIMARY = "fail-primary"
OBSERVE_SECONDARY = "observe-secondary"
REJOIN_PRIMARY = "rejoin-primary"
FAIL_SECONDARY = "fail-secondary"
OBSERVE_PRIMARY = "observe-primary"
OBSERVE_ACTIVE_MOVED = "observe-active-moved"
OBSERVE_PATH_CUT = "observe-path-cut"
PREFLIGHT = "preflight"  # not a planned step: the report lists it first

SCENARIO_STEPS: dict[str, tuple[str, ...]] = {
    ACCEPTANCE: (ENSURE_PRIMARY, VERIFY_PRIMARY, FAIL_PRIMARY, OBSERVE_SECONDARY, REJOIN_PRIMARY, FAIL_SECONDARY,
                 OBSERVE_PRIMARY),
    FAIL_ACTIVE_NODE: (FAIL_ACTIVE_NODE, OBSERVE_ACTIVE_MOVED),
    CUT_PATH: (CUT_PATH, OBSERVE_PATH_CUT),
}
# The acceptance steps the state machine names one state each (kept under its historical name).
ACCEPTANCE_STEPS = SCENARIO_STEPS[ACCEPTANCE]

# Acceptance with more than two nodes: steps after the seven run one at a time in this Map state,
# in plan order; their ids name the node, so they have no state of their own.
MORE_STEPS_STATE = "RunMoreSteps"
REJOIN_SECONDARY = "rejoin-secondary"


def fail_node_step(node: str) -> str:
    return f"fail-node-{node}"


def observe_node_step(node: str) -> str:
    return f"observe-node-{node}"


def rejoin_node_step(node: str) -> str:
    return f"rejoin-node-{node}"


# --- the state machine's tasks (one drill function, one typed input per action) -------------------------

# ASL state name -> the ``action`` its task sends the drill function; every state of SCENARIO_STEPS
# sends ``step`` with its step id.
ACTION_STATES: dict[str, str] = {
    "Preflight": "preflight",
    "Restore": "restore",
    "RestoreFailed": "restore_failed",
    "CheckAlarms": "check_alarms",
    "Report": "report",
    "ReleaseLock": "release_lock",
}
STEP_ACTION = "step"
CHOOSE_SCENARIO_STATE = "ChooseScenario"
ACTIONS = (*ACTION_STATES.values(), STEP_ACTION)

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class StepNameError(RegionhaError):
    """A step id or state name outside the scheme (a programming error, never an input's)."""


class DrillStepFailed(RegionhaError):
    """A step did not reach what it expects within its bound: the drill fails (after restore)."""


class DrillAborted(RegionhaError):
    """A stop condition fired (a critical alarm while a path still resolved): restore, then FAILED."""


def state_name(step_id: str) -> str:
    """``fail-active-node`` -> ``FailActiveNode``: the ASL state that runs the step."""
    if not _KEBAB.match(step_id):
        raise StepNameError(f"step id {step_id!r} is not kebab-case")
    return "".join(word.capitalize() for word in step_id.split("-"))


def step_id(state: str) -> str:
    """``FailActiveNode`` -> ``fail-active-node``: the step an ASL state runs."""
    words = re.findall(r"[A-Z][a-z0-9]*", state)
    if not words or "".join(words) != state:
        raise StepNameError(f"state name {state!r} is not PascalCase")
    return "-".join(w.lower() for w in words)


def scenario_of(step: str) -> str | None:
    """The scenario whose named states include ``step`` (None: a further acceptance step or unknown)."""
    return next((s for s, ids in SCENARIO_STEPS.items() if step in ids), None)
