"""A drill's report as a self-contained HTML page (inline CSS and SVG, no script): banner, recovery
cards against the budget, the timeline (regionha.drill.timeline), steps and restore as tables with
times relative to the drill's start, the alarm proof. Input and missing keys as regionha.drill.report
says; every piece of text from the report is escaped. Laid out for a 900 px wide window.
"""

from __future__ import annotations

from typing import Any

from regionha.drill.report import (
    _detail,
    _dicts,
    _duration,
    _e,
    _mapping,
    _names,
    _num,
    _recovery_caption,
    _seconds,
    _status,
    _transitions,
    _utc,
    budget,
    error_text,
    failed_steps,
    recoveries,
)
from regionha.drill.timeline import legend_html, timeline_svg

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
    # No row number: the step names carry the article's own numbers ("1 ensure…"; preflight has none).
    rows = ["<table><thead><tr><th>step</th><th>result</th><th>start</th><th>end</th>"
            "<th>took</th><th>detail</th></tr></thead><tbody>"]
    for s in steps:
        start, end = _num(s.get("start")), _num(s.get("end"))
        took = _seconds(end - start) if start is not None and end is not None else "-"
        result = '<span class="ok">ok</span>' if s.get("ok") is True else '<span class="bad">FAILED</span>'
        rows.append(f'<tr><td class="step">{_e(s.get("name") or "?")}</td><td>{result}</td>'
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
