"""A drill's report as a self-contained HTML page (inline CSS and SVG, no script) and as SNS text.

The input is the drill's report JSON (``status``, ``steps``, ``recovery_seconds``, ``recovery``,
``budget``, ``timeline``, ``faults``, ``alarms``, ``restore``, ``error``). Reports come from executions
that may have been stopped half way, so every key may be missing or null: the page then says so
instead of failing. Every piece of text from the report is escaped; the SVG is well-formed XML.

Recovery is measured only for paths whose answer had to change (to another node after a fault, or
back after a cut was restored) and is compared with the budget: the record's TTL plus the failover's
detection time. Times on the page are seconds from the drill's start. The page is laid out for a
900 px wide window (the timeline is drawn 1:1 at that width and scales up beyond it).
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _utc(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _status(report: dict[str, Any]) -> str:
    status = str(report.get("status") or "UNKNOWN").upper()
    return status if status in ("PASSED", "FAILED") else "UNKNOWN"


def _duration(report: dict[str, Any]) -> float | None:
    start, end = _num(report.get("started_at")), _num(report.get("ended_at"))
    return end - start if start is not None and end is not None else None


def _detail(detail: Any, limit: int = 160) -> str:
    if detail is None or detail == "" or detail == {}:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(value: Any, limit: int = 300) -> str:
    """An error as one line: a Step Functions ``{"Error", "Cause"}`` whose cause is a Lambda error JSON
    becomes ``Error: errorMessage`` (its stack trace dropped); anything else its JSON."""
    if isinstance(value, str):
        parsed = _maybe_json(value)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            return _detail(f"{parsed.get('errorType') or 'Error'}: {parsed['errorMessage']}", limit)
        return _detail(" ".join(value.split()), limit)
    if isinstance(value, dict):
        name = value.get("Error") or value.get("error")
        cause = value.get("Cause") if "Cause" in value else value.get("cause")
        if name is not None or cause is not None:
            text = error_text(cause, limit) if cause is not None else ""
            if name and text.startswith(f"{name}: "):
                return text
            return _detail(": ".join(str(p) for p in (name, text) if p), limit)
    return _detail(value, limit)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _recovery(report: dict[str, Any]) -> dict[str, float | None]:
    return {str(k): _num(v) for k, v in _mapping(report.get("recovery_seconds")).items()}


@dataclass(frozen=True)
class Recovery:
    """One measured recovery: a path (canary label) answered ``node`` ``seconds`` after the fault."""

    key: str  # as in recovery_seconds: ``path`` or ``path@node``
    path: str
    node: str | None
    seconds: float | None
    step: str | None = None
    after: str = "fault"  # measured from the fault, or from the restore of the path's cut


def recoveries(report: dict[str, Any]) -> list[Recovery]:
    """``recovery_seconds`` as (path, node, seconds), with the measuring step and what it was measured
    from (``after``) taken from ``recovery`` when given."""
    known = {(str(r.get("path")), str(r.get("node") or None)): r for r in _dicts(report.get("recovery"))}
    out = []
    for key, seconds in _recovery(report).items():
        path, at, node = key.rpartition("@")
        path, node = (path, node) if at and path else (key, None)
        entry = known.get((path, str(node)), {})
        out.append(Recovery(key, path, node, seconds, None if entry.get("step") is None else str(entry["step"]),
                            "restore" if entry.get("after") == "restore" else "fault"))
    return out


def budget(report: dict[str, Any]) -> tuple[float | None, str]:
    """(seconds, how it is made up) of the recovery budget: the record's TTL plus detection plus the
    on-prem resolver's forwarder fallback (regionha.drill.judge.recovery_budget)."""
    b = _mapping(report.get("budget"))
    seconds = _num(b.get("seconds"))
    terms = [("TTL", _num(b.get("ttl"))), ("detection", _num(b.get("detection")))]
    if _num(b.get("forwarder_fallback")):  # none when no forwarder address was cut
        terms.append(("forwarder fallback", _num(b.get("forwarder_fallback"))))
    parts = " + ".join(f"{name} {v:g} s" for name, v in terms if v is not None)
    return seconds, parts


def _recovery_caption(r: Recovery) -> str:
    if r.after == "restore":
        return f"{r.path} back after its cut" + (f" → {r.node}" if r.node else "")
    return f"{r.path} → {r.node}" if r.node else r.path


def _transitions(seen: Any) -> list[str]:
    """Alarm states as seen, each run of one state once: OK, OK, ALARM, OK -> OK, ALARM, OK."""
    out: list[str] = []
    for state in seen if isinstance(seen, list) else []:
        if not out or out[-1] != str(state):
            out.append(str(state))
    return out


def _names(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else ""


def failed_steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _dicts(report.get("steps")) if s.get("ok") is not True]


def summary_text(report: dict[str, Any]) -> str:
    """A few plain lines for SNS and terminals: verdict, recovery per path, failed steps, alarms, error."""
    report = _mapping(report)
    lines = [
        f"regionha drill {_status(report)}: scenario {report.get('scenario') or '?'}, "
        f"deployment {report.get('deployment') or '?'}, execution {report.get('execution') or '?'}, "
        f"took {_seconds(_duration(report))}"
    ]
    recovery = _recovery(report)
    limit, parts = budget(report)
    if recovery:
        over = [k for k, s in recovery.items() if s is not None and limit is not None and s > limit]
        lines.append("recovery: " + ", ".join(
            f"{path} {_seconds(s) if s is not None else 'not recovered'}" for path, s in recovery.items()
        ) + (f" (budget {_seconds(limit)}: {parts}" + (f"; OVER: {', '.join(over)})" if over else ")")
             if limit is not None else ""))
    failed = failed_steps(report)
    for step in failed:
        detail = _detail(step.get("detail"), 200)
        lines.append(f"failed step: {step.get('name') or '?'}" + (f": {detail}" if detail else ""))
    not_run = _names(report.get("not_run"))
    if not_run:
        lines.append(f"not run: {not_run}")
    bad_alarms = [
        f"{name} (expected {_mapping(a).get('expected') or '?'}, saw "
        f"{' → '.join(_transitions(_mapping(a).get('seen'))) or 'nothing'})"
        for name, a in _mapping(report.get("alarms")).items() if _mapping(a).get("ok") is not True
    ]
    if bad_alarms:
        lines.append("alarm checks failed: " + "; ".join(bad_alarms))
    restore = _mapping(report.get("restore"))
    if restore and restore.get("ok") is False:
        broken = _names(restore.get("left_broken")) or error_text(restore.get("error") or restore)
        lines.append(f"RESTORE INCOMPLETE: {broken}" + (
            f" ({error_text(restore['error'])})" if restore.get("error") and restore.get("left_broken") else ""))
    if report.get("error"):
        lines.append(f"error: {error_text(report['error'])}")
    return "\n".join(lines)


def summary_subject(report: dict[str, Any]) -> str:
    """An SNS subject (at most 100 characters, one line)."""
    report = _mapping(report)
    text = f"regionha drill {_status(report)}: {report.get('scenario') or '?'} on {report.get('deployment') or '?'}"
    return " ".join(text.split())[:100]


# -- the timeline picture ------------------------------------------------------------------------------


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

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 20px auto; max-width: 1240px;
       color: #111827; padding: 0 16px; font-size: 15px; }
.banner { border-radius: 8px; padding: 14px 18px; color: #fff; margin-bottom: 16px; }
.banner.PASSED { background: #15803d; } .banner.FAILED { background: #b91c1c; }
.banner.UNKNOWN { background: #4b5563; }
.banner h1 { margin: 0 0 6px; font-size: 26px; } .banner p { margin: 0; opacity: .95; }
h2 { font-size: 18px; margin: 24px 0 8px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.step { min-width: 12em; }
.ok { color: #15803d; font-weight: 600; } .bad { color: #b91c1c; font-weight: 600; }
.detail { font-size: 13px; color: #374151; word-break: break-word; }
.detail div { margin: 1px 0; } .detail b { font-weight: 600; color: #111827; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #e5e7eb; border-left: 5px solid #9ca3af; border-radius: 6px; padding: 8px 14px;
        min-width: 190px; }
.card.within { border-left-color: #15803d; } .card.over { border-left-color: #b91c1c; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { font-size: 14px; color: #374151; }
.card .b { font-size: 13px; color: #4b5563; }
.error { background: #fef2f2; border: 1px solid #fecaca; padding: 8px 12px; border-radius: 6px; }
.note { font-size: 14px; color: #4b5563; margin: 0 0 6px; }
.empty { color: #6b7280; font-style: italic; } pre { white-space: pre-wrap; font-size: 13px; }
svg.timeline { display: block; min-width: 720px; }
.scroll { overflow-x: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 14px; margin: 8px 0 0; }
.legend .key { display: inline-flex; align-items: center; gap: 6px; }
.legend .sw { display: inline-block; width: 12px; height: 12px; border: 1.5px solid; box-sizing: border-box; }
footer { margin-top: 28px; color: #6b7280; font-size: 13px; }
"""


def _rel(t: Any, t0: float | None) -> str:
    value = _num(t)
    if value is None:
        return "-"
    return f"+{value - t0:.1f}" if t0 is not None else f"{value:.1f}"


def _value_text(value: Any, t0: float | None, limit: int = 400) -> str:
    """One value as words: epoch times relative to the start, errors as their message, objects as
    ``key value`` pairs, lists comma-separated (never raw JSON)."""
    number = _num(value)
    if number is not None:
        if t0 is not None and number > 1e9 and abs(number - t0) < 86400 * 7:
            return f"+{number - t0:.1f} s"
        return f"{number:g}"
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, str):
        return _detail(" ".join(value.split()), limit)
    if isinstance(value, dict):
        if {"Error", "Cause"} & set(value) or {"error", "cause"} == set(value):
            return error_text(value, limit)
        return _detail("; ".join(f"{k} {_value_text(v, t0, limit)}" for k, v in value.items()) or "none", limit)
    if isinstance(value, list):
        return _detail(", ".join(_value_text(v, t0, limit) for v in value) or "none", limit)
    return _detail(str(value), limit)


def _detail_html(detail: Any, t0: float | None) -> str:
    """A step's detail: one line per key, values in words."""
    if detail is None or detail == "" or detail == {}:
        return ""
    if not isinstance(detail, dict):
        return _e(_value_text(detail, t0))
    return "".join(f"<div><b>{_e(str(k).replace('_', ' '))}</b> {_e(_value_text(v, t0))}</div>"
                   for k, v in detail.items())


def _steps_table(report: dict[str, Any], t0: float | None) -> str:
    steps = _dicts(report.get("steps"))
    if not steps:
        return '<p class="empty">No steps ran.</p>'
    rows = ["<table><thead><tr><th>#</th><th>step</th><th>result</th><th>start</th><th>end</th>"
            "<th>took</th><th>detail</th></tr></thead><tbody>"]
    for i, s in enumerate(steps, 1):
        start, end = _num(s.get("start")), _num(s.get("end"))
        took = _seconds(end - start) if start is not None and end is not None else "-"
        result = '<span class="ok">ok</span>' if s.get("ok") is True else '<span class="bad">FAILED</span>'
        rows.append(f'<tr><td class="num">{i}</td><td class="step">{_e(s.get("name") or "?")}</td><td>{result}</td>'
                    f'<td class="num">{_rel(start, t0)} s</td><td class="num">{_rel(end, t0)} s</td>'
                    f'<td class="num">{took}</td><td class="detail">{_detail_html(s.get("detail"), t0)}</td></tr>')
    rows.append("</tbody></table>")
    rows.append('<p class="note">start and end: seconds from the drill\'s start.</p>')
    not_run = _names(report.get("not_run"))
    if not_run:
        rows.append(f'<p class="bad">not run: {_e(not_run)}</p>')
    return "\n".join(rows)


def _recovery_cards(report: dict[str, Any]) -> str:
    found = recoveries(report)
    limit, parts = budget(report)
    if not found:
        return ('<p class="empty">No recovery was measured. Recovery is measured only for paths whose answer '
                "had to change: to another node after a fault, or back after a cut was restored.</p>")
    cards = []
    for r in found:
        if r.seconds is None:
            value, verdict, cls = '<span class="bad">not recovered</span>', "", "over"
        else:
            value = f"{r.seconds:.1f} s"
            within = limit is None or r.seconds <= limit
            cls = "" if limit is None else ("within" if within else "over")
            over = f"{r.seconds - limit:.1f} s over the {limit:g} s budget" if limit is not None else ""
            verdict = "" if limit is None else (f"within the {limit:g} s budget" if within else over)
        step = f" · step {r.step}" if r.step else ""
        cards.append(f'<div class="card {cls}"><div class="v">{value}</div><div class="k">{_e(_recovery_caption(r))}'
                     f'</div><div class="b">{_e(verdict + step)}</div></div>')
    note = (f'<p class="note">Budget {limit:g} s = {_e(parts)}: the on-prem caches may keep the old answer for '
            "the TTL after the failover noticed the fault.</p>") if limit is not None else (
        '<p class="note">No budget in this report (no TTL known).</p>')
    return note + '<div class="cards">' + "".join(cards) + "</div>"


def _alarms_table(report: dict[str, Any]) -> str:
    alarms = _mapping(report.get("alarms"))
    note = _mapping(report.get("alarm_proof")).get("note")
    if not alarms:
        return '<p class="empty">No alarm checks.</p>' + (f'<p class="note">{_e(note)}</p>' if note else "")
    rows = ["<table><thead><tr><th>alarm</th><th>expected</th><th>states seen</th><th>check</th></tr>"
            "</thead><tbody>"]
    for name, check in alarms.items():
        check = _mapping(check)
        seen = _transitions(check.get("seen"))
        verdict = '<span class="ok">ok</span>' if check.get("ok") is True else '<span class="bad">FAILED</span>'
        rows.append(f"<tr><td>{_e(name)}</td><td>{_e(check.get('expected') or '?')}</td>"
                    f"<td>{_e(' → '.join(map(str, seen)) or 'nothing')}</td><td>{verdict}</td></tr>")
    rows.append("</tbody></table>")
    if note:
        rows.append(f'<p class="note">{_e(note)}</p>')
    return "\n".join(rows)


def _restore_section(report: dict[str, Any], t0: float | None) -> str:
    restore = report.get("restore")
    if not restore:
        return '<p class="empty">No restore record.</p>'
    if not isinstance(restore, dict):
        return f"<p>{_e(_value_text(restore, t0, 2000))}</p>"
    rows = []
    if restore.get("ok") is False:
        rows.append('<p class="error"><b>Restore is incomplete: something is left broken.</b></p>')
    rows.append("<table><tbody>")
    verdict = ('<span class="ok">everything put back</span>' if restore.get("ok") is True
               else '<span class="bad">incomplete</span>' if restore.get("ok") is False else "?")
    rows.append(f"<tr><th>result</th><td>{verdict}</td></tr>")
    for key, label in (("restored", "put back"), ("left_broken", "left broken"), ("failback", "fail-back"),
                       ("paths", "paths after restore"), ("seconds", "took"), ("note", "note"), ("error", "error")):
        if key not in restore:
            continue
        value = restore[key]
        if key == "seconds" and _num(value) is not None:
            cell = _e(_seconds(_num(value)))
        elif isinstance(value, list) and value:
            cell = "".join(f"<div>{_e(_value_text(v, t0))}</div>" for v in value)
        elif isinstance(value, dict) and value and key == "paths":
            cell = "".join(f"<div><b>{_e(k)}</b> {_e(_value_text(v, t0))}</div>" for k, v in value.items())
        else:
            cell = _e(_value_text(value, t0, 2000))
        rows.append(f'<tr><th>{_e(label)}</th><td class="detail">{cell or "none"}</td></tr>')
    for key, value in restore.items():
        if key not in ("ok", "restored", "left_broken", "failback", "paths", "seconds", "note", "error"):
            rows.append(f'<tr><th>{_e(key.replace("_", " "))}</th><td class="detail">'
                        f'{_e(_value_text(value, t0, 2000))}</td></tr>')
    rows.append("</tbody></table>")
    return "\n".join(rows)


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML page with no external asset and no script."""
    report = _mapping(report)
    status = _status(report)
    t0 = _num(report.get("started_at"))
    scenario, deployment = report.get("scenario") or "?", report.get("deployment") or "?"
    failed = failed_steps(report)
    error = report.get("error")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>regionha drill {status}: {_e(scenario)} on {_e(deployment)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<header class="banner {status}"><h1>Drill {status}</h1>',
        f"<p>scenario <b>{_e(scenario)}</b> · deployment <b>{_e(deployment)}</b> · execution "
        f"<b>{_e(report.get('execution') or '?')}</b></p>",
        f"<p>started {_e(_utc(t0))} · took {_e(_seconds(_duration(report)))} · "
        f"{len(_dicts(report.get('steps')))} steps, {len(failed)} failed</p></header>",
    ]
    if error:
        parts.append(f'<div class="error"><b>error:</b> <span class="detail">{_e(error_text(error, 2000))}'
                     '</span></div>')
    parts += [
        "<h2>Recovery per path</h2>",
        _recovery_cards(report),
        "<h2>Timeline</h2>",
        '<p class="note">One lane per path, seconds from the drill\'s start across. Each mark is one probe of '
        "the path, coloured by the node its answer named; shaded bands are faults, dashed lines restores; "
        "brackets measure a recovery.</p>",
        '<div class="scroll">' + timeline_svg(report) + "</div>",
        legend_html(report),
        "<h2>Steps</h2>",
        _steps_table(report, t0),
        "<h2>Alarm checks</h2>",
        _alarms_table(report),
        "<h2>Restore</h2>",
        _restore_section(report, t0),
        f"<footer>regionha drill report · ended {_e(_utc(_num(report.get('ended_at'))))}</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
