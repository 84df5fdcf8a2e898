"""The drill's pure judging (regionha.drill.judge, .proof, .plan, .steps): no AWS SDK, no moto.

The recovery tests replay what the demo saw when it flaked: the on-prem resolver named Server-B, then,
during the hold for the cut path's alarms, timed out once while BIND fell back over the cut forwarder
(its cache of the 3 s TTL answer had expired). The recovery must keep the node of the sample that met
the expectation: ``onprem@Server-B``, never the bare ``onprem`` (which means "did not recover").
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from regionha.drill.judge import (
    BIND_FORWARDER_RETRY_SECONDS,
    CUT,
    TRUTH,
    RecoveryClock,
    compose_report,
    forwarder_fallback_seconds,
    measured_paths,
    meets,
    recovery_budget,
    recovery_key,
)

FAULT_AT = 100.0
EXPECT = {"onprem": "Server-B", "osaka-bind": CUT, "tokyo-resolver/10.0.111.100": "Server-B"}


def sample(node=None, outcome="ok", reachable=True):
    if node is None:
        return {"outcome": outcome, "node": None, "node_reachable": False, "success": False, "answer": None}
    return {"outcome": outcome, "node": node, "node_reachable": reachable, "success": True, "answer": "10.0.0.1"}


def rounds(*onprem):
    """Rounds 0.5 s apart from the fault: on-prem's sample as given, the others already where expected."""
    return [(FAULT_AT + 0.5 * (i + 1), {"onprem": s, "osaka-bind": sample(outcome="timeout"),
                                        "tokyo-resolver/10.0.111.100": sample("Server-B")})
            for i, s in enumerate(onprem)]


def test_the_pure_modules_load_no_aws_sdk():
    code = ("import sys, regionha.drill.judge, regionha.drill.proof, regionha.drill.planner, regionha.drill.steps;"
            "print(sorted(m for m in ('boto3', 'botocore', 'moto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_timeout_after_the_path_recovered_keeps_the_node_it_recovered_to():
    clock = RecoveryClock(EXPECT, measured_paths(EXPECT, FAULT_AT, "Server-A"))
    for t, samples in rounds(sample("Server-A"), sample("Server-B"), sample(outcome="timeout"),
                             sample(outcome="timeout")):
        clock.feed(t, samples)

    entries = clock.entries("observe-secondary", reached=True, after="fault")

    assert {recovery_key(e): e["seconds"] for e in entries} == {
        "onprem@Server-B": 1.0, "tokyo-resolver/10.0.111.100@Server-B": 0.5}


def test_a_recovery_ends_only_when_the_answer_names_the_expected_node_and_it_answers():
    clock = RecoveryClock(EXPECT, measured_paths(EXPECT, FAULT_AT, "Server-A"))
    for t, samples in rounds(sample("Server-A"), sample(outcome="timeout"), sample("Server-B", reachable=False),
                             sample("Server-B")):
        clock.feed(t, samples)

    (onprem,) = [e for e in clock.entries("s", reached=True, after="fault") if e["path"] == "onprem"]

    assert (onprem["node"], onprem["seconds"]) == ("Server-B", 2.0)


def test_a_path_that_never_recovered_is_keyed_bare_with_no_seconds():
    clock = RecoveryClock(EXPECT, measured_paths(EXPECT, FAULT_AT, "Server-A"))
    for t, samples in rounds(sample("Server-A"), sample(outcome="timeout")):
        clock.feed(t, samples)

    (onprem,) = [e for e in clock.entries("s", reached=False, after="fault") if e["path"] == "onprem"]

    assert (recovery_key(onprem), onprem["seconds"]) == ("onprem", None)


def test_only_paths_whose_answer_had_to_change_are_measured():
    expect = {"onprem": "Server-A", "osaka-bind": CUT, "tokyo": "Server-A", "seoul": TRUTH}
    # A cut path keeps answering the same node: nothing to measure after the fault.
    assert measured_paths(expect, FAULT_AT, "Server-A") == {}
    assert measured_paths(expect, FAULT_AT, "Server-B") == {"onprem": FAULT_AT, "tokyo": FAULT_AT}
    assert measured_paths(expect, None, "Server-B", {"osaka-bind": 7.0}) == {"osaka-bind": 7.0}


@pytest.mark.parametrize(("want", "s", "met"), [
    (CUT, sample(outcome="timeout"), True),
    (CUT, sample(outcome="network_error"), True),
    (CUT, sample(outcome="servfail"), False),
    (CUT, sample("Server-A"), False),
    (TRUTH, sample("Server-A"), True),
    (TRUTH, sample(outcome="timeout"), False),
    ("Server-B", sample("Server-B"), True),
    ("Server-B", sample("Server-B", reachable=False), False),
    ("Server-B", sample("Server-A"), False),
])
def test_meets(want, s, met):
    assert meets(want, s) is met


def test_the_budget_is_ttl_plus_detection_plus_bind_falling_back_over_each_cut_forwarder_address():
    assert BIND_FORWARDER_RETRY_SECONDS == 0.85  # BIND 9's 0.8 s retry interval + its 50 ms RTT fudge
    assert forwarder_fallback_seconds(0) == 0
    assert recovery_budget(3, 3.0, 2) == {"ttl": 3, "detection": 3.0, "forwarder_fallback": 1.7, "seconds": 7.7}
    assert recovery_budget(60, 60.0)["seconds"] == 120.0


def test_the_report_keys_each_recovery_by_the_node_it_recovered_to():
    record = {"plan": [{"id": "observe-secondary"}], "steps": [
        {"id": "preflight", "name": "preflight", "ok": True, "start": 1, "end": 2},
        {"id": "observe-secondary", "name": "o", "ok": True, "start": 2, "end": 3}],
        "restore": {"ok": True}, "alarm_proof": {"ok": True},
        "recovery": [{"step": "observe-secondary", "path": "onprem", "node": "Server-B", "seconds": 1.0},
                     {"step": "observe-node-x", "path": "onprem", "node": "Server-B", "seconds": 2.5}]}

    report = compose_report(record, [])

    assert report["status"] == "PASSED"
    assert report["recovery_seconds"] == {"onprem@Server-B": 2.5}  # the slowest of the two
