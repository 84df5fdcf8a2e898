"""The drill report: HTML page (well-formed, escaped, complete) and the SNS summary."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from regionha.drill.report import error_text, render_html, summary_subject, summary_text
from regionha.drill.timeline import ERROR_COLOUR, TIMEOUT_COLOUR

T0 = 1_700_000_000.0
TOKYO_A, TOKYO_B, OSAKA, ONPREM = "tokyo-resolver/10.0.111.100", "tokyo-resolver/10.0.111.101", "osaka-bind", "onprem"
IP = {"Server-A": "10.0.110.10", "Server-B": "10.1.110.10"}
SVG = "{http://www.w3.org/2000/svg}"


def _sample(t: float, step: str, path: str, node: str | None, outcome: str = "ok", up: bool = True) -> dict[str, Any]:
    return {"t": round(T0 + t, 3), "step": step, "path": path, "outcome": outcome,
            "answer": IP[node] if node else None, "node": node, "node_reachable": up if node else False,
            "success": outcome == "ok" and up, "latency_ms": 1.5}


def _observe(step: str, start: float, end: float, record_moves: float, old: str, new: str, cut: set[str],
             fault_time: float, timeline: list, recovery: list) -> None:
    """Probe every 0.5 s like the drill: cut paths time out, the record moves at ``record_moves``."""
    first_ok: dict[str, float] = {}
    t = start
    while t < end:
        node = new if t >= record_moves else old
        for path in (TOKYO_A, TOKYO_B, OSAKA, ONPREM):
            if path.split("/")[0] in cut:
                timeline.append(_sample(t, step, path, None, "timeout"))
            elif path == ONPREM and t == start:
                timeline.append(_sample(t, step, path, None, "servfail"))  # named switches forwarder
            else:
                timeline.append(_sample(t, step, path, node, up=node == new))
                if node == new and path not in first_ok:
                    first_ok[path] = t
        t += 0.5
    recovery += [{"step": step, "path": p, "node": new, "seconds": round(ft - fault_time, 3)}
                 for p, ft in first_ok.items()]


def acceptance_report() -> dict[str, Any]:
    """The acceptance drill as drill.compose_report writes it: Server-A fails with Tokyo cut, then back."""
    timeline: list[dict[str, Any]] = []
    recovery: list[dict[str, Any]] = []
    _observe("verify-primary", 1.5, 3, 0, "Server-A", "Server-A", set(), 0, timeline, [])
    _observe("observe-secondary", 3.6, 30, 15.1, "Server-A", "Server-B", {"tokyo-resolver"}, 3.0, timeline,
             recovery)
    _observe("observe-primary", 45.5, 70, 57.0, "Server-B", "Server-A", {"osaka-bind"}, 45.0, timeline, recovery)
    steps = [
        ("preflight", "preflight", 0, 1, {"lock": "taken"}),
        ("ensure-primary", "1 ensure the record names Server-A", 1, 1.5, {}),
        ("verify-primary", "2 every path reaches Server-A", 1.5, 3, {}),
        ("fail-primary", "3 fail Server-A, cut tokyo-resolver", 3, 3.6, {"fault_time": T0 + 3}),
        ("observe-secondary", "4 on-prem reaches Server-B through osaka-bind", 3.6, 30, {"rounds": 53}),
        ("rejoin-primary", "5 start Server-A, restore tokyo-resolver", 30, 44, {"left_broken": []}),
        ("fail-secondary", "6 fail Server-B, cut osaka-bind", 45, 45.5, {}),
        ("observe-primary", "7 on-prem reaches Server-A through tokyo-resolver", 45.5, 70, {"rounds": 49}),
        ("restore", "restore", 70, 80, {}),
        ("check-alarms", "check alarms", 80, 82, None),
    ]
    return {
        "status": "PASSED",
        "scenario": "acceptance",
        "deployment": "regionha",
        "execution": "drill-20231114T221320Z-1a2b",
        "mode": "builtin",
        "started_at": T0,
        "ended_at": T0 + 82,
        "steps": [{"id": i, "name": n, "ok": True, "start": T0 + a, "end": T0 + b, "detail": d}
                  for i, n, a, b, d in steps],
        "not_run": [],
        "recovery_seconds": {f"{r['path']}@{r['node']}": r["seconds"] for r in recovery},
        "recovery": recovery,
        "budget": {"ttl": 3, "detection": 10, "seconds": 13},
        "timeline": timeline,
        "faults": [
            {"kind": "node", "target": "Server-A", "start": T0 + 3.0, "end": T0 + 40},
            {"kind": "path", "target": "tokyo-resolver", "start": T0 + 3.2, "end": T0 + 31},
            {"kind": "node", "target": "Server-B", "start": T0 + 45.0, "end": T0 + 78},
            {"kind": "path", "target": "osaka-bind", "start": T0 + 45.2, "end": T0 + 72},
        ],
        "alarms": {
            "regionha-path-tokyo-resolver": {"path": TOKYO_A, "critical": False,
                                             "expected": "ALARM during the cut, then OK",
                                             "seen": ["OK", "ALARM", "OK"], "ok": True},
            "regionha-path-osaka-bind": {"path": OSAKA, "critical": False, "expected": "ALARM during the cut, then OK",
                                         "seen": ["OK", "ALARM", "OK"], "ok": True},
            "regionha-critical": {"path": None, "critical": True, "expected": "never ALARM", "seen": ["OK"],
                                  "ok": True},
        },
        "alarm_proof": {"checked": True, "ok": True, "critical_fired": [], "note": None},
        "restore": {"ok": True, "left_broken": [], "failback": {"node": "Server-A"}},
        "error": None,
    }


def failed_report() -> dict[str, Any]:
    """External mode with nothing moving the record: the name never reaches Server-B, restore runs."""
    report = acceptance_report()
    timeline: list[dict[str, Any]] = []
    _observe("verify-primary", 1.5, 3, 0, "Server-A", "Server-A", set(), 0, timeline, [])
    _observe("observe-secondary", 3.6, 28.6, 1e9, "Server-A", "Server-B", {"tokyo-resolver"}, 3.0, timeline, [])
    report.update(
        status="FAILED", timeline=timeline, recovery_seconds={}, recovery=[], ended_at=T0 + 45,
        not_run=["rejoin-primary", "fail-secondary", "observe-primary"],
        error={"Error": "DrillStepFailed", "Cause": "observe-secondary: not reached within 25 s"},
    )
    report["steps"] = report["steps"][:5] + [
        {"id": "restore", "name": "restore", "ok": True, "start": T0 + 29, "end": T0 + 41, "detail": {}}]
    report["steps"][4].update(ok=False, end=T0 + 28.6, detail={
        "error": "DrillStepFailed", "cause": f"want Server-B, saw {OSAKA} -> Server-A (down)"})
    report["faults"] = report["faults"][:2]
    report["faults"][0]["end"] = T0 + 40
    report["faults"][1]["end"] = None  # the NACL entries could not be removed
    report["restore"] = {"ok": False, "left_broken": ["path tokyo-resolver: NACL entry 32000 still present"]}
    report["alarms"]["regionha-critical"].update(seen=["OK", "ALARM"], ok=False)
    return report


class _Collector(HTMLParser):
    """Tracks open elements, so that an unclosed or mismatched tag shows up as a failure."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def _svg(page: str) -> ET.Element:
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    return ET.fromstring(page[start:end])


def _texts(svg: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]


def _classed(svg: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter(f"{SVG}{tag}") if e.get("class") == cls]


def test_acceptance_report_is_complete_and_well_formed() -> None:
    report = acceptance_report()

    page = render_html(report)

    parsed = _parse(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external to load
    text = " ".join(parsed.text)
    assert "Drill PASSED" in text and "acceptance" in text and "drill-20231114T221320Z-1a2b" in text
    assert "took 82.0 s" in text
    svg = _svg(page)
    labels = _texts(svg)
    assert [e.text for e in _classed(svg, "text", "lane")] == [TOKYO_A, TOKYO_B, OSAKA, ONPREM]
    # Fault markers: each fault's label and each restore, drawn as marker lines over shaded bands.
    for label in ("Server-A down", "tokyo-resolver cut", "Server-B down", "osaka-bind cut",
                  "restored tokyo-resolver", "restored Server-A", "restored osaka-bind", "restored Server-B"):
        assert label in labels
    assert len(_classed(svg, "line", "marker")) == 8
    assert len(_classed(svg, "rect", "fault")) == 4
    # Recovery: every measured figure in the margin, one bracket each, one card each.
    figures = [e.text for e in _classed(svg, "text", "recovery-figure")]
    assert sorted(figures) == sorted(["12.0 s → Server-A"] * 3 + ["12.1 s → Server-B"] * 2)
    assert len(_classed(svg, "path", "recovery")) == 5
    assert page.count('class="card within"') == 5 and "onprem → Server-B" in text and "onprem → Server-A" in text
    assert "Budget 13 s = TTL 3 s + detection 10 s" in text
    # One mark per probe; a cut path timing out is drawn in the timeout colour.
    samples = _classed(svg, "rect", "sample")
    assert len(samples) == len(report["timeline"])
    cut = [s for s in report["timeline"] if s["path"] == TOKYO_A and s["outcome"] == "timeout"]
    drawn = [e for e in samples if e.findtext(f"{SVG}title").startswith(TOKYO_A) and e.get("fill") == TIMEOUT_COLOUR]
    assert len(drawn) == len(cut) > 0
    assert any(e.get("fill") == ERROR_COLOUR for e in samples)  # onprem's SERVFAIL while named switches
    # Steps and alarm checks are tabulated.
    assert page.count(">3 fail Server-A, cut tokyo-resolver</td>") == 1
    assert page.count("<td>regionha-critical</td>") == 1 and "OK → ALARM → OK" in text


def test_recovery_bracket_starts_at_the_fault_it_measures() -> None:
    report = acceptance_report()

    svg = _svg(render_html(report))

    label_x = {e.text: float(e.get("x")) - 3 for e in _classed(svg, "text", "marker-label")}
    starts = [float(e.get("d").split()[0][1:]) for e in _classed(svg, "path", "recovery")]
    # Lanes in order: Tokyo x2 (back to Server-A after Server-B failed), Osaka (to Server-B after Server-A
    # failed), on-prem twice. Each from its step's first fault (the node), not the path cut 0.2 s later.
    server_a, server_b = label_x["Server-A down"], label_x["Server-B down"]
    assert starts == [pytest.approx(x, abs=0.05) for x in (server_b, server_b, server_a, server_a, server_b)]
    assert label_x["tokyo-resolver cut"] - server_a > 1


def test_failed_report_shows_what_failed() -> None:
    report = failed_report()

    page = render_html(report)
    text = " ".join(_parse(page).text)

    assert "Drill FAILED" in text and "No recovery was measured." in text
    assert "observe-secondary: not reached within 25 s" in text and "NACL entry 32000 still present" in text
    assert "rejoin-primary, fail-secondary, observe-primary" in text  # the steps that never ran
    labels = _texts(_svg(page))
    assert "tokyo-resolver cut (not restored)" in labels
    assert "restored tokyo-resolver" not in labels  # the unrestored fault runs to the end, no restore line
    summary = summary_text(report)
    assert summary.startswith("regionha drill FAILED: scenario acceptance")
    assert "failed step: 4 on-prem reaches Server-B through osaka-bind: {\"cause\": \"want Server-B" in summary
    assert "not run: rejoin-primary, fail-secondary, observe-primary" in summary
    assert "regionha-critical (expected never ALARM, saw OK → ALARM)" in summary
    assert "RESTORE INCOMPLETE" in summary and "NACL entry 32000" in summary


def test_a_path_that_never_recovered_says_so() -> None:
    report = acceptance_report()
    report["recovery_seconds"] = {f"{OSAKA}@Server-B": None}
    report["recovery"] = []

    page = render_html(report)

    assert [e.text for e in _classed(_svg(page), "text", "recovery-figure")] == ["not recovered → Server-B"]
    assert f"{OSAKA}@Server-B not recovered" in summary_text(report)


def test_text_from_the_report_is_escaped() -> None:
    report = acceptance_report()
    evil = "<script>alert(1)</script>"
    for sample in report["timeline"]:
        if sample["path"] == OSAKA:
            sample["path"] = evil
    report["recovery_seconds"][f"{evil}@Server-B"] = report["recovery_seconds"].pop(f"{OSAKA}@Server-B")
    report["steps"][0]["name"] = evil
    report["scenario"] = "<b>x</b>&"
    report["alarms"][evil] = {"expected": evil, "seen": [evil], "ok": False}

    page = render_html(report)

    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _parse(page)
    assert "script" not in parsed.tags
    svg = _svg(page)
    assert evil in [e.text for e in _classed(svg, "text", "lane")]
    assert evil in summary_text(report)


def test_markers_come_from_steps_when_faults_are_absent() -> None:
    report = acceptance_report()
    del report["faults"]

    svg = _svg(render_html(report))

    labels = [e.text for e in _classed(svg, "text", "marker-label")]
    assert labels == ["3 fail Server-A, cut tokyo-resolver", "5 start Server-A, restore tokyo-resolver",
                      "6 fail Server-B, cut osaka-bind", "restore"]
    assert _classed(svg, "rect", "fault") == []
    assert len(_classed(svg, "path", "recovery")) == 5  # anchored on the fault steps


@pytest.mark.parametrize("report", [
    {},
    {"status": "PASSED"},
    {"status": "FAILED", "timeline": [], "steps": [], "recovery_seconds": {}, "alarms": {}, "faults": []},
    {"status": "weird", "steps": None, "timeline": None, "recovery_seconds": None, "started_at": "soon"},
    {"steps": [{"name": "Preflight"}], "timeline": [{"path": "onprem"}], "recovery_seconds": {"onprem": 3}},
    {"steps": [{"start": T0, "end": "later"}], "faults": [{"kind": "node"}], "alarms": {"a": None},
     "recovery_seconds": {"@": 1, "x@": None}, "restore": "done", "error": {"Error": "X"}},
    {"started_at": T0, "ended_at": T0, "timeline": [_sample(0, "verify-primary", ONPREM, "Server-A")]},
])
def test_minimal_reports_render(report: dict[str, Any]) -> None:
    page = render_html(copy.deepcopy(report))
    _parse(page)
    if "<svg" in page:
        _svg(page)
    assert summary_text(report).startswith("regionha drill ")
    assert len(summary_subject(report)) <= 100


def test_summary_lists_recovery_per_path() -> None:
    summary = summary_text(acceptance_report())

    assert summary.splitlines()[0] == ("regionha drill PASSED: scenario acceptance, deployment regionha, "
                                       "execution drill-20231114T221320Z-1a2b, took 82.0 s")
    assert summary.splitlines()[1] == (
        f"recovery: {OSAKA}@Server-B 12.1 s, {ONPREM}@Server-B 12.1 s, {TOKYO_A}@Server-A 12.0 s, "
        f"{TOKYO_B}@Server-A 12.0 s, {ONPREM}@Server-A 12.0 s (budget 13.0 s: TTL 3 s + detection 10 s)")
    assert len(summary.splitlines()) == 2


def cut_path_report() -> dict[str, Any]:
    """A cut-path drill on osaka-bind: the other paths never change their answer; the cut one comes back."""
    timeline: list[dict[str, Any]] = []
    _observe("observe-path-cut", 1.0, 10, 0, "Server-A", "Server-A", {"osaka-bind"}, 0.5, timeline, [])
    _observe("restore", 10.5, 14, 0, "Server-A", "Server-A", set(), 10.2, timeline, [])
    return {
        "status": "PASSED", "scenario": "cut-path", "deployment": "regionha", "execution": "drill-cut",
        "started_at": T0, "ended_at": T0 + 15,
        "steps": [{"id": "cut-path", "name": "cut osaka-bind", "ok": True, "start": T0 + 0.4, "end": T0 + 0.6,
                   "detail": {"faults": [{"fault": "path osaka-bind cut (2 NACL entries in ap-northeast-3)"}],
                              "fault_time": T0 + 0.5}},
                  {"id": "observe-path-cut", "name": "on-prem still reaches Server-A, osaka-bind does not answer",
                   "ok": True, "start": T0 + 1, "end": T0 + 10,
                   "detail": {"recovery_seconds": {}, "rounds": 18, "last": {OSAKA: "timeout"}}}],
        "recovery_seconds": {f"{OSAKA}@Server-A": 0.3},
        "recovery": [{"step": "restore", "path": OSAKA, "node": "Server-A", "seconds": 0.3, "after": "restore"}],
        "budget": {"ttl": 60, "detection": 60, "seconds": 120},
        "timeline": timeline,
        "faults": [{"kind": "path", "target": "osaka-bind", "start": T0 + 0.5, "end": T0 + 10.2}],
        "restore": {"ok": True, "left_broken": [], "restored": [{"fault": "path osaka-bind cut", "removed": 2}],
                    "failback": {"action": "none", "record": "Server-A"}, "paths": {OSAKA: "ok 10.0.110.10"},
                    "seconds": 3.9},
    }


def test_a_cut_path_drill_shows_recovery_for_the_cut_path_only() -> None:
    report = cut_path_report()

    page = render_html(report)

    text = " ".join(_parse(page).text)
    assert page.count('class="card within"') == 1
    assert "osaka-bind back after its cut → Server-A" in text and "within the 120 s budget" in text
    assert TOKYO_A + " →" not in text and "onprem →" not in text
    svg = _svg(page)
    assert [e.text for e in _classed(svg, "text", "recovery-figure")] == ["0.3 s → Server-A"]
    # The bracket starts where the cut was restored.
    restored_x = next(float(e.get("x")) - 3 for e in _classed(svg, "text", "marker-label")
                      if e.text == "restored osaka-bind")
    assert float(_classed(svg, "path", "recovery")[0].get("d").split()[0][1:]) == pytest.approx(restored_x, abs=0.05)


def test_recovery_over_the_budget_is_flagged() -> None:
    report = acceptance_report()
    report["budget"] = {"ttl": 3, "detection": 8, "seconds": 11}

    page = render_html(report)

    assert page.count('class="card over"') == 5
    assert "1.1 s over the 11 s budget" in page
    assert "OVER: " + f"{OSAKA}@Server-B" in summary_text(report)


def test_steps_and_restore_are_tables_in_words_with_times_from_the_start() -> None:
    report = cut_path_report()

    page = render_html(report)

    steps = page[page.index("<h2>Steps</h2>"):page.index("<h2>Alarm checks</h2>")]
    restore = page[page.index("<h2>Restore</h2>"):]
    assert "<b>fault time</b> +0.5 s" in steps and "+0.4 s" in steps and "+10.0 s" in steps
    assert "<b>last</b> osaka-bind timeout" in steps
    for part in (steps, restore):
        assert "{" not in part and "…" not in part and str(int(T0)) not in part
    assert "<th>put back</th>" in restore and "path osaka-bind cut" in restore
    assert "<th>paths after restore</th>" in restore and "<th>took</th><td class=\"detail\">3.9 s" in restore


def test_the_legend_names_every_colour_band_and_line() -> None:
    page = render_html(acceptance_report())

    legend = page[page.index('<div class="legend">'):]
    legend = legend[:legend.index("</div>")]
    for words in ("answer names Server-A", "answer names Server-B", "no answer (timeout)", "SERVFAIL",
                  "node down (band", "path cut (band", "fault restored", "recovery: fault", "step passed"):
        assert words in legend


def test_a_failed_drill_with_a_measured_recovery_shows_it() -> None:
    report = failed_report()
    report["recovery_seconds"] = {f"{OSAKA}@Server-B": None, f"{ONPREM}@Server-B": 12.0}

    text = " ".join(_parse(render_html(report)).text)

    assert "No recovery was measured" not in text
    assert "not recovered" in text and "12.0 s" in text


LAMBDA_CAUSE = json.dumps({"errorType": "DrillAborted", "errorMessage": "restore: critical alarm fired",
                           "stackTrace": ["  File \"/var/task/app.py\", line 12, in lambda_handler"]})


@pytest.mark.parametrize(("error", "text"), [
    ({"Error": "DrillAborted", "Cause": LAMBDA_CAUSE}, "DrillAborted: restore: critical alarm fired"),
    ({"Error": "States.Timeout", "Cause": None}, "States.Timeout"),
    ({"error": "DrillStepFailed", "cause": "observe: not reached\nwithin 25 s"},
     "DrillStepFailed: observe: not reached within 25 s"),
    (LAMBDA_CAUSE, "DrillAborted: restore: critical alarm fired"),
    ("plain words", "plain words"),
    ({"left_broken": ["x"]}, '{"left_broken": ["x"]}'),
    (None, ""),
])
def test_error_text_drops_the_stack_trace(error: Any, text: str) -> None:
    assert error_text(error) == text


def test_a_lambda_error_reads_as_its_message() -> None:
    report = failed_report()
    report["error"] = {"Error": "DrillAborted", "Cause": LAMBDA_CAUSE}
    report["restore"] = {"ok": False, "error": {"Error": "DrillAborted", "Cause": LAMBDA_CAUSE}}

    page = render_html(report)
    summary = summary_text(report)

    assert "stackTrace" not in page and "stackTrace" not in summary
    assert "error: DrillAborted: restore: critical alarm fired" in summary
    assert "RESTORE INCOMPLETE: DrillAborted: restore: critical alarm fired" in summary
