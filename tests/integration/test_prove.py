"""``regionha prove``: the catch matrix.

The fast subset runs in the normal suite: the clean control and two defects (one the canary and the
audit both catch, one only the audit catches) on one local runtime, without the drill. The whole
catalogue, with the drill, is ``regionha prove`` (and ``benchmarks/prove_matrix.py``).

GIVEN a freshly built reference deployment,
WHEN each defect is injected on its own and the product's own schedules run,
THEN the control raises nothing while an audit runs, each defect is caught by the expected alarm and
audit finding with a detection time inside the watch window, and the world is clean again after each.
"""

from __future__ import annotations

import json

import pytest

from regionha.cli import main
from regionha.local import prove
from regionha.local.prove_catalogue import DEFECTS, Defect


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@pytest.mark.integration
def test_the_control_is_quiet_and_two_defects_are_caught_by_the_watch_alone():
    from regionha.local.runtime import LocalRuntime, local_topology
    from regionha.topology import load_topology

    chosen = prove.select(DEFECTS, ["clean", "dns-rule-revoked", "record-ttl-drifted"])
    runtime = LocalRuntime(local_topology(load_topology(), ttl=3))

    report = prove.Prove(runtime, chosen, drill=False, watch_minutes=6).run()

    rows = {r["defect"]: r for r in report["rows"]}
    assert list(rows) == ["clean", "dns-rule-revoked", "record-ttl-drifted"], report.get("error")
    clean, revoked, ttl = rows.values()
    assert (clean["alarms"], clean["findings"], clean["ok"]) == ([], [], True), clean
    assert clean["audit_runs"] >= 1 and clean["watched_seconds"] >= 6 * 60

    # Watching stops once every expected catcher caught: the endpoint's first path alarm at least.
    alarms = {c["what"] for c in revoked["alarms"]}
    assert alarms & {"path-down-tokyo-resolver-10.0.111.100", "path-down-tokyo-resolver-10.0.111.101"}, revoked
    assert "security-group-rule-missing" in {c["what"] for c in revoked["findings"]}, revoked
    assert [f for f in revoked["reasons"] if f.startswith("security-group-rule-missing tokyo/InboundEndpoint")]
    assert [c["what"] for c in ttl["findings"]] == ["record-ttl"], ttl
    assert "record-ttl record sample.cluster.local.: TTL 300 s, expected 3 s" in ttl["reasons"]

    for row in (revoked, ttl):
        assert row["ok"] and row["fresh"] and not row["missing"] and row["error"] is None, row
        assert 0 < row["detection_seconds"] <= row["watched_seconds"] <= 6 * 60 + 30
        # Catches are after the injection, on the emulated clock, within the window.
        assert all(0 < c["seconds"] <= row["watched_seconds"] for c in row["alarms"] + row["findings"])
    assert report["ok"] is True
    text = _render(report)
    assert "dns-rule-revoked" in text and "security-group-rule-missing" in text and "✔ quiet" in text


# --- the matrix without a runtime ----------------------------------------------------------------------


def _render(report) -> str:
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    prove.print_report(report, Console(file=out, width=200))
    return out.getvalue()


def row(defect, alarms=(), findings=(), expected=None, **kw):
    catches = [{"what": w, "seconds": s} for w, s in alarms]
    found = [{"what": w, "seconds": s} for w, s in findings]
    r = prove.Row(defect, defect, expected=expected or {}, audit_runs=1, **kw)
    r.alarms, r.findings = [prove.Catch(**c) for c in catches], [prove.Catch(**c) for c in found]
    return r.to_json()


def test_a_defect_the_watch_missed_or_a_false_alarm_fails_the_run_and_the_matrix_says_so():
    report = {"deployment": "d", "seconds": 1, "rows": [
        row("clean", alarms=[("path-down-osaka-bind", 95.0)]),
        row("record-moved", expected={"findings": ["record-value"]}, missing=["finding record-value"]),
        row("dns-rule-revoked", alarms=[("path-down-x", 120.0)], findings=[("security-group-rule-missing", 40.0)],
            expected={"alarms": ["*-path-down-*"]}),
        row("interconnect-route-gone", expected={"alarms": ["*interconnect*"]}, findings=[("route-missing", 200.0)],
            missing=["alarm *interconnect*"], awaiting="interconnect engineer: probe"),
    ]}
    clean, moved, revoked, interconnect = report["rows"]

    assert (clean["ok"], moved["ok"], revoked["ok"], interconnect["ok"]) == (False, False, True, True)
    assert revoked["detection_seconds"] == 40.0
    text = _render(report)
    assert "✘ false alarm" in text and "✘ missed" in text and "✔ 40 s" in text
    assert "— (awaiting interconnect engineer)" in text
    assert "2 of 3 defects caught by the watch alone; 1 false alarms in the control" in text
    assert "record-moved: expected finding record-value, not seen" in text


def test_a_defect_the_product_repaired_before_any_catch_is_shown_as_repaired_not_caught():
    r = prove.Row("drill-fault-left-behind", "t", expected={"alarms": ["*-path-down-osaka-bind"]}, audit_runs=1,
                  missing=["alarm *-path-down-osaka-bind"])
    assert not r.ok
    r.repaired = prove.Catch("fault sweeper", 95.0)
    assert r.ok and not r.caught and r.detection_seconds is None

    text = _render({"deployment": "d", "seconds": 1, "rows": [r.to_json()]})
    assert "✔ repaired by the fault sweeper 95 s, no alarm" in text
    assert "0 of 1 defects caught by the watch alone, 1 repaired by the product before any catch" in text


def test_a_quiet_control_without_an_audit_run_proves_nothing():
    r = prove.Row("clean", "clean", audit_runs=0)
    assert not r.ok
    r.audit_runs = 1
    assert r.ok


def test_the_catalogue_names_every_defect_of_the_issue_once_and_expects_real_audit_kinds():
    from regionha.watch import audit

    names = [d.name for d in DEFECTS]
    assert len(names) == len(set(names))
    assert {"clean", "controller-absent", "ttl-far-too-long", "dns-rule-revoked", "forwarder-misconfigured",
            "interconnect-route-gone", "interconnect-peering-gone", "record-moved", "record-ttl-drifted",
            "endpoint-address-gone", "onprem-forwarders-drifted", "drill-fault-left-behind"} == set(names)
    assert [d.name for d in DEFECTS if d.control] == ["clean"]
    assert all(k in audit.KINDS for d in DEFECTS for k in d.findings)


def test_a_users_catalogue_adds_defects_and_bad_input_is_refused_before_any_runtime(tmp_path, capsys):
    mine = tmp_path / "mine.py"
    mine.write_text("from regionha.local.prove_catalogue import Defect\n"
                    "DEFECTS = [Defect('my-defect', 'mine', lambda lab: (lambda: None), findings=('record-ttl',))]\n")
    assert main(["prove", "--catalogue", str(mine), "--only", "my-defect", "--list"]) == 0
    assert capsys.readouterr().out == "my-defect: mine\n"
    assert isinstance(prove.load_catalogue(str(mine))[0], Defect)

    assert main(["prove", "--only", "no-such-defect", "--list"]) == 2
    assert "unknown defect no-such-defect" in capsys.readouterr().err
    (tmp_path / "bad.py").write_text("DEFECTS = 3\n")
    assert main(["prove", "--catalogue", str(tmp_path / "bad.py")]) == 2
    assert "needs a module-level DEFECTS list" in capsys.readouterr().err
    assert main(["prove", "--watch-minutes", "0"]) == 2


def test_json_rows_round_trip():
    r = row("dns-rule-revoked", findings=[("security-group-rule-missing", 40.0)], expected={"findings": ["x"]})
    assert json.loads(json.dumps(r))["detection_seconds"] == 40.0
