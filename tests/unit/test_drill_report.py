"""The drill report: HTML page (well-formed, escaped, complete) and the SNS summary."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from regionha.drill_report import ERROR_COLOUR, TIMEOUT_COLOUR, render_html, summary_subject, summary_text

T0 = 1_700_000_000.0
TOKYO_A, TOKYO_B, OSAKA, ONPREM = "tokyo-resolver/10.0.111.100", "tokyo-resolver/10.0.111.101", "osaka-bind", "onprem"
IP = {"Server-A": "10.0.110.10", "Server-B": "10.1.110.10"}
SVG = "{http://www.w3.org/2000/svg}"


def _sample(t: float, path: str, node: str | None, outcome: str = "ok", up: bool = True) -> dict[str, Any]:
    return {"t": T0 + t, "step": "Observe", "path": path, "outcome": outcome,
            "answer": IP[node] if node else None, "node": node, "node_reachable": up if node else False}


def acceptance_report() -> dict[str, Any]:
    """The acceptance drill as the state machine reports it: Server-A fails with Tokyo cut, then back."""
    timeline = []
    for t in range(0, 86):
        # The record names Server-A until the failover controller moves it at +15, back at +58.
        active = "Server-A" if t < 15 or t >= 58 else "Server-B"
        active_up = not (3 <= t < 15 or 45 <= t < 58)
        for path in (TOKYO_A, TOKYO_B):
            cut = 5 <= t < 30
            timeline.append(_sample(t, path, None, "timeout") if cut else _sample(t, path, active, up=active_up))
        cut = 47 <= t < 70
        timeline.append(_sample(t, OSAKA, None, "timeout") if cut else _sample(t, OSAKA, active, up=active_up))
        if t in (5, 47):
            timeline.append(_sample(t, ONPREM, None, "servfail"))
        else:
            timeline.append(_sample(t, ONPREM, active, up=active_up))
    steps = [
        ("Preflight", 0, 2.5, True, {"lock": "taken"}),
        ("FailNode", 3, 4, True, {"node": "Server-A", "mode": "builtin"}),
        ("CutPath", 5, 5.5, True, {"path": "tokyo-resolver", "acl_entries": [32700, 32701]}),
        ("ObserveFailover", 5.5, 29, True, {"expect": "Server-B"}),
        ("Restore", 30, 44, True, {"started": ["Server-A"], "acl_removed": 2}),
        ("FailNode", 45, 46, True, {"node": "Server-B"}),
        ("CutPath", 47, 47.5, True, {"path": "osaka-bind"}),
        ("ObserveFailback", 47.5, 69, True, {"expect": "Server-A"}),
        ("Restore", 70, 84, True, {}),
        ("Report", 85, 86, True, None),
    ]
    return {
        "status": "PASSED",
        "scenario": "acceptance",
        "deployment": "regionha",
        "execution": "drill-20231114T221320Z-1a2b",
        "started_at": T0,
        "ended_at": T0 + 86,
        "steps": [{"name": n, "ok": ok, "start": T0 + s, "end": T0 + e, "detail": d} for n, s, e, ok, d in steps],
        "recovery_seconds": {TOKYO_A: 13.0, TOKYO_B: 13.0, OSAKA: 12.0, ONPREM: 12.0},
        "timeline": timeline,
        "faults": [
            {"kind": "node", "target": "Server-A", "start": T0 + 3, "end": T0 + 30},
            {"kind": "path", "target": "tokyo-resolver", "start": T0 + 5, "end": T0 + 30},
            {"kind": "node", "target": "Server-B", "start": T0 + 45, "end": T0 + 70},
            {"kind": "path", "target": "osaka-bind", "start": T0 + 47, "end": T0 + 70},
        ],
        "alarms": {
            "regionha-path-tokyo-resolver": {"expected": "fire", "seen": ["OK", "ALARM", "OK"], "ok": True},
            "regionha-path-osaka-bind": {"expected": "fire", "seen": ["OK", "ALARM", "OK"], "ok": True},
            "regionha-critical": {"expected": "quiet", "seen": ["OK"], "ok": True},
        },
        "restore": {"ok": True, "acl_entries_removed": 4, "nodes_started": ["Server-A", "Server-B"]},
        "error": None,
    }


def failed_report() -> dict[str, Any]:
    """External mode with nothing moving the record: the name never reaches Server-B."""
    report = acceptance_report()
    report["status"] = "FAILED"
    report["recovery_seconds"] = {TOKYO_A: None, TOKYO_B: None, OSAKA: None, ONPREM: None}
    report["steps"][3].update(ok=False, detail={"error": "WaitTimeoutError", "cause": "osaka-bind still Server-A"})
    report["steps"] = report["steps"][:5]
    report["faults"][1]["end"] = None
    report["alarms"]["regionha-critical"] = {"expected": "quiet", "seen": ["OK", "ALARM"], "ok": False}
    report["error"] = "ObserveFailover: no path reached Server-B within 60 s"
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


def test_acceptance_report_is_complete_and_well_formed() -> None:
    report = acceptance_report()

    page = render_html(report)

    parsed = _parse(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external to load
    text = " ".join(parsed.text)
    assert "Drill PASSED" in text and "acceptance" in text and "drill-20231114T221320Z-1a2b" in text
    assert "took 86.0 s" in text
    svg = _svg(page)
    labels = _texts(svg)
    for lane in (TOKYO_A, TOKYO_B, OSAKA, ONPREM):
        assert lane in labels
    # Fault markers: each fault's label and each restore, drawn as marker lines.
    for label in ("Server-A down", "tokyo-resolver cut", "Server-B down", "osaka-bind cut",
                  "restored tokyo-resolver", "restored Server-B"):
        assert label in labels
    assert len([e for e in svg.iter(f"{SVG}line") if e.get("class") == "marker"]) == 8
    assert len([e for e in svg.iter(f"{SVG}rect") if e.get("class") == "fault"]) == 4
    # Recovery figures in the margin and as brackets.
    assert labels.count("recovered 13.0 s") == 2 and labels.count("recovered 12.0 s") == 2
    assert len([e for e in svg.iter(f"{SVG}path") if e.get("class") == "recovery"]) == 4
    # One mark per probe; a cut path timing out is drawn in the timeout colour.
    samples = [e for e in svg.iter(f"{SVG}rect") if e.get("class") == "sample"]
    assert len(samples) == len(report["timeline"])
    tokyo_timeouts = [e for e in samples if e.findtext(f"{SVG}title").startswith(TOKYO_A)
                      and e.get("fill") == TIMEOUT_COLOUR]
    assert len(tokyo_timeouts) == 25
    assert any(e.get("fill") == ERROR_COLOUR for e in samples)  # onprem's SERVFAIL while forwarders switch
    # Steps and alarm checks are tabulated.
    assert page.count("<td>FailNode</td>") == 2 and page.count("<td>regionha-critical</td>") == 1
    assert "OK → ALARM → OK" in text


def test_recovery_bracket_starts_at_the_fault_it_measures() -> None:
    report = acceptance_report()

    svg = _svg(render_html(report))

    brackets = [e.get("d") for e in svg.iter(f"{SVG}path") if e.get("class") == "recovery"]
    label_x = {"".join(t.itertext()): float(t.get("x")) for t in svg.iter(f"{SVG}text")
               if t.get("class") == "marker-label"}
    starts = [float(d.split()[0][1:]) for d in brackets]  # lanes in order: Tokyo x2, Osaka, on-prem
    # Tokyo answered Server-A again 13 s after Server-B failed; Osaka named Server-B 12 s after Server-A failed.
    assert starts[0] == starts[1] == pytest.approx(label_x["Server-B down"] - 3, abs=0.05)
    assert starts[2] == starts[3] == pytest.approx(label_x["Server-A down"] - 3, abs=0.05)


def test_failed_report_shows_what_failed() -> None:
    report = failed_report()

    page = render_html(report)
    text = " ".join(_parse(page).text)

    assert "Drill FAILED" in text
    assert "no path reached Server-B" in text and "WaitTimeoutError" in text
    labels = _texts(_svg(page))
    assert labels.count("not recovered") == 4
    assert "tokyo-resolver cut (not restored)" in labels
    assert "restored tokyo-resolver" not in labels  # the unrestored fault runs to the end, no restore line
    summary = summary_text(report)
    assert summary.startswith("regionha drill FAILED: scenario acceptance")
    assert f"{OSAKA} not recovered" in summary
    assert "failed step: ObserveFailover" in summary and "WaitTimeoutError" in summary
    assert "regionha-critical (expected quiet, saw OK → ALARM)" in summary


def test_text_from_the_report_is_escaped() -> None:
    report = acceptance_report()
    evil = "<script>alert(1)</script>"
    for sample in report["timeline"]:
        if sample["path"] == OSAKA:
            sample["path"] = evil
    report["recovery_seconds"][evil] = report["recovery_seconds"].pop(OSAKA)
    report["steps"][0]["name"] = evil
    report["scenario"] = "<b>x</b>&"

    page = render_html(report)

    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert evil in _texts(_svg(page))


def test_markers_come_from_steps_when_faults_are_absent() -> None:
    report = acceptance_report()
    del report["faults"]

    labels = _texts(_svg(render_html(report)))

    assert labels.count("FailNode") >= 2 and labels.count("CutPath") >= 2 and "Restore" in labels


@pytest.mark.parametrize("report", [
    {},
    {"status": "PASSED"},
    {"status": "FAILED", "timeline": [], "steps": [], "recovery_seconds": {}, "alarms": {}, "faults": []},
    {"status": "weird", "steps": None, "timeline": None, "recovery_seconds": None, "started_at": "soon"},
    {"steps": [{"name": "Preflight"}], "timeline": [{"path": "onprem"}], "recovery_seconds": {"onprem": 3}},
    {"started_at": T0, "ended_at": T0, "timeline": [_sample(0, ONPREM, "Server-A")]},
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
                                       "execution drill-20231114T221320Z-1a2b, took 86.0 s")
    assert f"recovery: {TOKYO_A} 13.0 s, {TOKYO_B} 13.0 s, {OSAKA} 12.0 s, {ONPREM} 12.0 s" in summary
    assert "failed step" not in summary and "error" not in summary
