"""The drill report's timeline (inline SVG, well-formed XML, no script): one lane per path, each sample
coloured by the node it named (or grey: timeout, red: error, amber: wrong answer), the faults as bands,
the record's node as a line, recoveries anchored to the sample that ended them; and its legend.
Drawn 1:1 for a 900 px window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from regionha.drill.report import (
    Recovery,
    _dicts,
    _e,
    _mapping,
    _num,
    _utc,
    recoveries,
)

NODE_COLOURS = ("#2563eb", "#9333ea", "#0891b2", "#c026d3", "#4f46e5", "#0f766e")
TIMEOUT_COLOUR = "#9ca3af"
ERROR_COLOUR = "#dc2626"
WRONG_COLOUR = "#f59e0b"
PASS_COLOUR = "#15803d"
FAIL_COLOUR = "#b91c1c"
ERROR_OUTCOMES = ("servfail", "nxdomain", "noanswer", "refused", "network_error")

# SVG geometry (user units; the picture scales to the page width).
_WIDTH = 840
_LEFT = 200
_RIGHT = 130
_LANE = 36
_LABEL_ROW = 17
_CHAR = 6.9  # rough width of one 12px character, to keep marker labels apart
NODE_BAND, PATH_BAND = "#fde68a", "#fecaca"
NODE_LINE = "#b45309"
_FAULT_WORDS = re.compile(r"fail|stop|cut|break|inject", re.IGNORECASE)
_RESTORE_WORDS = re.compile(r"restore|heal|rejoin|failback|fail-back|uncut", re.IGNORECASE)


@dataclass(frozen=True)
class Marker:
    """A fault (a band from start to end) or, when derived from a step, a single line (end is None)."""

    label: str
    start: float
    end: float | None
    kind: str  # node | path | step
    target: str | None
    open_ended: bool = False  # a fault that was never restored


def fault_markers(report: dict[str, Any], horizon: float) -> list[Marker]:
    """The report's faults; without a ``faults`` list, lines at the steps that injected or restored one."""
    faults = report.get("faults")
    if isinstance(faults, list):
        markers = []
        for f in _dicts(faults):
            start = _num(f.get("start"))
            if start is None:
                continue
            end = _num(f.get("end"))
            kind = str(f.get("kind") or "fault")
            target = None if f.get("target") is None else str(f["target"])
            verb = {"node": "down", "path": "cut"}.get(kind, kind)
            label = f"{target or '?'} {verb}" + (" (not restored)" if end is None else "")
            markers.append(Marker(label, start, end if end is not None else horizon,
                                  kind, target, open_ended=end is None))
        return sorted(markers, key=lambda m: m.start)
    markers = []
    for step in _dicts(report.get("steps")):
        start, name = _num(step.get("start")), str(step.get("name") or "")
        if start is not None and (_FAULT_WORDS.search(name) or _RESTORE_WORDS.search(name)):
            markers.append(Marker(name, start, None, "step", None))
    return sorted(markers, key=lambda m: m.start)


def _lanes(report: dict[str, Any]) -> list[str]:
    lanes: list[str] = []
    for sample in _dicts(report.get("timeline")):
        path = sample.get("path")
        if path is not None and str(path) not in lanes:
            lanes.append(str(path))
    for r in recoveries(report):
        if r.path not in lanes:
            lanes.append(r.path)
    return lanes


def _node_colours(report: dict[str, Any]) -> dict[str, str]:
    nodes = sorted({str(s["node"]) for s in _dicts(report.get("timeline")) if s.get("node")})
    return {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(nodes)}


def _sample_style(sample: dict[str, Any], colours: dict[str, str]) -> tuple[str, str, set[str]]:
    """(fill, stroke, legend keys) of one sample's mark.

    The colour is the node the answer named; hollow when that node did not answer; an amber strip
    on top (drawn by the caller) when the answer was not the record's value.
    """
    outcome = str(sample.get("outcome") or "")
    node = sample.get("node")
    stale = {"stale"} if outcome == "wrong_answer" else set()
    if node and str(node) in colours and outcome in ("ok", "wrong_answer"):
        colour = colours[str(node)]
        if sample.get("node_reachable") is False:
            return "#ffffff", colour, {str(node), "down"} | stale
        return colour, colour, {str(node)} | stale
    if outcome == "timeout":
        return TIMEOUT_COLOUR, TIMEOUT_COLOUR, {"timeout"}
    if outcome in ERROR_OUTCOMES:
        return ERROR_COLOUR, ERROR_COLOUR, {"error"}
    return WRONG_COLOUR, WRONG_COLOUR, {"wrong"}


def _nice_step(span: float) -> float:
    raw = span / 10
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step >= raw:
            return step
    return 3600 * math.ceil(raw / 3600)


def _rows_for(items: Iterable[tuple[float, str]], max_rows: int = 4) -> list[int]:
    """Greedy rows for labels at x positions so that none overlaps the one before it in its row."""
    ends: list[float] = []
    rows = []
    for x, text in items:
        width = len(text) * _CHAR + 8
        for row, end in enumerate(ends):
            if x >= end:
                ends[row] = x + width
                rows.append(row)
                break
        else:
            if len(ends) < max_rows:
                ends.append(x + width)
                rows.append(len(ends) - 1)
            else:
                row = min(range(len(ends)), key=lambda r: ends[r])
                ends[row] = max(ends[row], x + width)
                rows.append(row)
    return rows


def _recovery_anchor(r: Recovery, samples: list[dict[str, Any]], starts: list[float],
                     step_starts: dict[str, float]) -> float | None:
    """The fault start a recovery was measured from.

    Recovery runs from a fault to the first answer naming the node while that node answers, so the
    right fault is the one whose start plus the recovery lands on the first such answer after it
    (faults after the measuring step's start are not candidates when the report names the step).
    """
    if not starts or r.seconds is None:
        return None
    if r.step is not None and r.step in step_starts:
        starts = [t for t in starts if t <= step_starts[r.step] + 1e-6] or starts
    good = sorted(t for s in samples if s.get("outcome") == "ok" and s.get("node_reachable") is not False
                  and (r.node is None or s.get("node") == r.node) and (t := _num(s.get("t"))) is not None)

    def miss(start: float) -> float:
        first = next((t for t in good if t >= start), None)
        return math.inf if first is None else abs(start + r.seconds - first)

    best = min(starts, key=miss)
    return best if miss(best) < math.inf else max(starts)


def timeline_svg(report: dict[str, Any]) -> str:
    """One lane per path, time across; each probe a mark coloured by what the path answered."""
    report = _mapping(report)
    lanes = _lanes(report)
    samples = [s for s in _dicts(report.get("timeline")) if _num(s.get("t")) is not None]
    steps = [s for s in _dicts(report.get("steps")) if _num(s.get("start")) is not None]
    times = [_num(s["t"]) for s in samples] + [_num(s["start"]) for s in steps]
    times += [_num(s.get("end")) for s in steps]
    for f in _dicts(report.get("faults")):
        times += [_num(f.get("start")), _num(f.get("end"))]
    known = [t for t in times if t is not None]
    t0 = _num(report.get("started_at"))
    t1 = _num(report.get("ended_at"))
    t0 = min([t0, *known]) if t0 is not None else (min(known) if known else None)
    t1 = max([t1, *known]) if t1 is not None else (max(known) if known else None)
    if not lanes or t0 is None or t1 is None:
        return '<p class="empty">No timeline was recorded.</p>'
    span = max(t1 - t0, 1.0)
    markers = fault_markers(report, t1)
    colours = _node_colours(report)
    plot_w = _WIDTH - _LEFT - _RIGHT

    def x(t: float) -> float:
        return _LEFT + (t - t0) / span * plot_w

    label_items = []
    for m in markers:
        label_items.append((x(m.start), m.label))
        if m.kind != "step" and not m.open_ended and m.end is not None:
            label_items.append((x(m.end), f"restored {m.target or ''}".strip()))
    label_items.sort(key=lambda item: item[0])
    label_rows = _rows_for(label_items)
    top = 12 + _LABEL_ROW * (max(label_rows) + 1 if label_rows else 0) + 6
    lanes_bottom = top + _LANE * len(lanes)
    steps_top = lanes_bottom + 8
    axis_y = steps_top + (_LANE if steps else 0) + 4
    height = axis_y + 26

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" width="100%" '
        f'role="img" aria-label="timeline of every path\'s answers" class="timeline" '
        f'font-family="system-ui, sans-serif" font-size="12">'
    ]
    # Lanes and their names.
    for i, lane in enumerate(lanes):
        y = top + i * _LANE
        fill = "#f8fafc" if i % 2 == 0 else "#f1f5f9"
        out.append(f'<rect x="{_LEFT}" y="{y}" width="{plot_w}" height="{_LANE}" fill="{fill}"/>')
        out.append(f'<text x="{_LEFT - 8}" y="{y + _LANE / 2 + 4}" text-anchor="end" font-size="13" '
                   f'class="lane">{_e(lane)}</text>')
    # Fault bands under the marks, so the marks stay readable.
    for m in markers:
        if m.kind == "step":
            continue
        x0, x1 = x(m.start), x(m.end if m.end is not None else t1)
        fill = NODE_BAND if m.kind == "node" else PATH_BAND
        out.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" height="{lanes_bottom - top}" '
                   f'fill="{fill}" fill-opacity="0.45" class="fault"><title>{_e(m.label)}: {_utc(m.start)} → '
                   f'{"not restored" if m.open_ended else _utc(m.end)}</title></rect>')
        if m.kind == "path" and m.target:
            for i, lane in enumerate(lanes):
                if lane == m.target or lane.split("/", 1)[0] == m.target:
                    y = top + i * _LANE
                    out.append(f'<rect x="{x0:.1f}" y="{y + 1}" width="{max(x1 - x0, 1):.1f}" '
                               f'height="{_LANE - 2}" fill="none" stroke="{ERROR_COLOUR}" '
                               f'stroke-dasharray="4 3"/>')
    # Samples: each mark reaches towards the next sample of its lane, so dense probing reads as a band.
    by_lane: dict[str, list[dict[str, Any]]] = {lane: [] for lane in lanes}
    for s in samples:
        if s.get("path") is not None:
            by_lane[str(s["path"])].append(s)
    for i, lane in enumerate(lanes):
        y = top + i * _LANE + 7
        ordered = sorted(by_lane[lane], key=lambda s: _num(s["t"]))
        for j, s in enumerate(ordered):
            t = _num(s["t"])
            nxt = _num(ordered[j + 1]["t"]) if j + 1 < len(ordered) else None
            width = min(max((x(nxt) - x(t) - 1) if nxt is not None else 4, 2), 14)
            fill, stroke, keys = _sample_style(s, colours)
            tip = (f"{lane} +{t - t0:.1f} s: {s.get('outcome') or '?'}"  # a tooltip, no script needed
                   f"{' ' + str(s['answer']) if s.get('answer') else ''}"
                   f"{' (' + str(s['node']) + ')' if s.get('node') else ''}"
                   f"{' node not answering' if s.get('node_reachable') is False else ''}")
            out.append(f'<rect x="{x(t):.1f}" y="{y}" width="{width:.1f}" height="{_LANE - 18}" fill="{fill}" '
                       f'stroke="{stroke}" stroke-width="1.2" class="sample"><title>{_e(tip)}</title></rect>')
            if "stale" in keys:
                out.append(f'<rect x="{x(t):.1f}" y="{y - 5}" width="{width:.1f}" height="3" fill="{WRONG_COLOUR}" '
                           f'class="stale"/>')
    # Recovery: a bracket from the fault to the first good answer, and the figures in the right margin.
    starts = [m.start for m in markers if m.kind != "step" or _FAULT_WORDS.search(m.label)]
    step_starts: dict[str, float] = {}
    for st in steps:
        for key in ("id", "name"):
            if st.get(key) is not None:
                step_starts.setdefault(str(st[key]), _num(st["start"]))
    per_lane: dict[str, list[Recovery]] = {}
    for r in recoveries(report):
        per_lane.setdefault(r.path, []).append(r)
    for i, lane in enumerate(lanes):
        y = top + i * _LANE
        found = per_lane.get(lane, [])
        for k, r in enumerate(found[:2]):  # the margin holds two lines; the cards list them all
            who = f" → {r.node}" if r.node else ""
            if r.seconds is None:
                text, colour = f"not recovered{who}", FAIL_COLOUR
            else:
                text, colour = f"{r.seconds:.1f} s{who}", "#111827"
                if r.after == "restore":  # from the end of this lane's cut
                    ends = [m.end for m in markers if m.kind == "path" and not m.open_ended and m.end is not None
                            and m.target in (lane, lane.split("/", 1)[0])]
                    anchor = _recovery_anchor(r, by_lane[lane], ends, {})
                else:
                    anchor = _recovery_anchor(r, by_lane[lane], starts, step_starts)
                if anchor is not None:
                    xa, xb, yb = x(anchor), x(anchor + r.seconds), y + _LANE - 5
                    out.append(f'<path d="M{xa:.1f} {yb - 3} V{yb} H{xb:.1f} V{yb - 3}" fill="none" '
                               f'stroke="#111827" stroke-width="1.2" class="recovery"/>')
                    out.append(f'<text x="{(xa + xb) / 2:.1f}" y="{yb - 1}" text-anchor="middle" font-size="11" '
                               f'stroke="#ffffff" stroke-width="3" paint-order="stroke" fill="#111827">'
                               f'{r.seconds:.1f} s</text>')
            ty = y + _LANE / 2 + 4 if len(found) == 1 else y + 15 + k * 14
            out.append(f'<text x="{_WIDTH - _RIGHT + 8}" y="{ty}" fill="{colour}" '
                       f'class="recovery-figure">{_e(text)}</text>')
    # Steps as a row of bars: which part of the drill ran when.
    if steps:
        out.append(f'<text x="{_LEFT - 8}" y="{steps_top + _LANE / 2 + 4}" text-anchor="end" font-size="13" '
                   f'fill="#374151">steps</text>')
        for k, s in enumerate(steps):
            start = _num(s["start"])
            end = _num(s.get("end"))
            end = end if end is not None else t1
            colour = PASS_COLOUR if s.get("ok") is True else FAIL_COLOUR
            ys = steps_top + (4 if k % 2 == 0 else _LANE / 2)
            x0, w = x(start), max(x(end) - x(start), 2)
            name = str(s.get("name") or "?")
            out.append(f'<rect x="{x0:.1f}" y="{ys}" width="{w:.1f}" height="{_LANE / 2 - 5}" fill="{colour}" '
                       f'fill-opacity="0.75" class="step"><title>{_e(name)}: +{start - t0:.1f} s → '
                       f'+{end - t0:.1f} s {"ok" if s.get("ok") is True else "FAILED"}</title></rect>')
            if len(name) * 6.2 < w - 4:
                out.append(f'<text x="{x0 + 3:.1f}" y="{ys + 10}" font-size="11" fill="#ffffff">{_e(name)}</text>')
    # Marker lines and labels over everything.
    labels = iter(zip(label_items, label_rows, strict=True))
    positions = {}
    for (lx, text), row in labels:
        positions.setdefault((round(lx, 1), text), row)
    bottom = axis_y
    for m in markers:
        lines = [(x(m.start), m.label, NODE_LINE if m.kind == "node" else ERROR_COLOUR)]
        if m.kind == "step":
            lines = [(x(m.start), m.label, "#374151")]
        elif not m.open_ended and m.end is not None:
            lines.append((x(m.end), f"restored {m.target or ''}".strip(), PASS_COLOUR))
        for lx, text, colour in lines:
            row = positions.get((round(lx, 1), text), 0)
            ly = 12 + row * _LABEL_ROW + 10
            out.append(f'<line x1="{lx:.1f}" y1="{ly + 3}" x2="{lx:.1f}" y2="{bottom}" stroke="{colour}" '
                       f'stroke-width="1.5" stroke-dasharray="{"5 3" if text.startswith("restored") else "none"}" '
                       f'class="marker"/>')
            out.append(f'<text x="{lx + 3:.1f}" y="{ly}" fill="{colour}" class="marker-label">{_e(text)}</text>')
    # Time axis: seconds since the drill started.
    out.append(f'<line x1="{_LEFT}" y1="{axis_y}" x2="{_LEFT + plot_w}" y2="{axis_y}" stroke="#6b7280"/>')
    tick = _nice_step(span)
    n = 0
    while n * tick <= span + 1e-9:
        tx = x(t0 + n * tick)
        out.append(f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 5}" stroke="#6b7280"/>')
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 17}" text-anchor="middle" fill="#4b5563">'
                   f'+{n * tick:g} s</text>')
        n += 1
    out.append("</svg>")
    return "\n".join(out)


def legend_html(report: dict[str, Any]) -> str:
    """The timeline's legend as HTML (it wraps at any width): every colour, band and line it uses."""
    report = _mapping(report)
    samples = [s for s in _dicts(report.get("timeline")) if _num(s.get("t")) is not None]
    if not samples:
        return ""
    colours = _node_colours(report)
    used = set().union(*(_sample_style(s, colours)[2] for s in samples))

    def swatch(style: str, label: str) -> str:
        return f'<span class="key"><span class="sw" style="{style}"></span>{_e(label)}</span>'

    keys = [swatch(f"background:{c};border-color:{c}", f"answer names {node}") for node, c in colours.items()
            if node in used]
    keys += [swatch(style, label) for key, style, label in (
        ("down", "background:#fff;border-color:#6b7280", "names a node that does not answer (hollow)"),
        ("stale", f"background:#fff;border-color:{WRONG_COLOUR};border-top:4px solid {WRONG_COLOUR}",
         "answer is not the record (amber top)"),
        ("timeout", f"background:{TIMEOUT_COLOUR};border-color:{TIMEOUT_COLOUR}", "no answer (timeout)"),
        ("error", f"background:{ERROR_COLOUR};border-color:{ERROR_COLOUR}",
         "SERVFAIL / NXDOMAIN / no answer / refused / network error"),
        ("wrong", f"background:{WRONG_COLOUR};border-color:{WRONG_COLOUR}", "an address of no node"),
    ) if key in used]
    faults = _dicts(report.get("faults"))
    kinds = {str(f.get("kind")) for f in faults}
    if "node" in kinds:
        keys.append(swatch(f"background:{NODE_BAND};border-color:{NODE_BAND};width:22px",
                           "node down (band; line at the fault)"))
    if "path" in kinds:
        keys.append(swatch(f"background:{PATH_BAND};border:1px dashed {ERROR_COLOUR};width:22px",
                           "path cut (band; the cut lane outlined)"))
    if any(f.get("end") is not None for f in faults):
        keys.append(swatch(f"border:0;border-left:2px dashed {PASS_COLOUR};width:2px", "fault restored"))
    if recoveries(report):
        keys.append(swatch("border:1.5px solid #111827;border-top:0;height:5px;width:22px",
                           "recovery: fault (or restore) → first answer naming a node that answers"))
    if _dicts(report.get("steps")):
        keys.append(swatch(f"background:{PASS_COLOUR};border-color:{PASS_COLOUR};width:22px", "step passed"))
        keys.append(swatch(f"background:{FAIL_COLOUR};border-color:{FAIL_COLOUR};width:22px", "step failed"))
    return '<div class="legend">' + "".join(keys) + "</div>"


# -- the page ------------------------------------------------------------------------------------------
