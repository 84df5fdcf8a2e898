"""``regionha prove``: the product proves that its watch notices every defect of the catalogue.

One local runtime, one build; then, for each defect of the catalogue (``regionha.local.prove_catalogue``)
on a fresh world, one at a time:

1. inject it (at emulated time t0);
2. watch, on the runtime's emulated clock, what the product itself does on its own schedule: the
   canary's alarms going to ALARM (every metric and composite alarm of the deployment and the stack,
   from the alarm history) and the scheduled readiness audit's findings (its ``AuditFindings``
   metric, per kind, from each scheduled run after t0); until every expected catcher has caught or
   the watch window (``watch_minutes``, emulated) is over;
3. optionally run the acceptance drill on the broken world and keep its verdict;
4. undo it and make the world fresh again: the defect's own undo (a build converge for those that
   need it), then wait, bounded, until the audit finds nothing and no alarm is in ALARM; a world that
   does not get clean is converged by the build state machine and checked again.

The result is the catch matrix: per defect, each catcher's catches with their detection time (emulated
seconds from injection to the alarm's transition or to the audit run that found it), the drill's
verdict, what was expected and not seen (and who is building that catcher), and whether the watch
alone caught it. The control must raise nothing. ``ok`` is true when every defect was caught by the
watch and the control stayed quiet.

The audit's alarm (``<stack>-audit-drift``) is the audit's, not the canary's: the audit column reads
the audit's metric directly, which is what that alarm watches.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI registers this command on every start: the heavy imports wait for a run
    from regionha.local.prove_catalogue import Defect
    from regionha.watch import audit

AUDIT_ALARM_SUFFIX = "-audit-drift"
WATCH_MINUTES = 7.0  # the audit runs every 5 minutes; alarms need 2-3 one-minute periods
CLEAN_MINUTES = 8.0  # bound on getting a world fresh again
POLL = 0.25  # real seconds between looks
AUDIT_GRACE = 20.0  # real seconds an audit run started in the window may take to publish


@dataclass
class Catch:
    """One catcher noticing: an alarm (its name) or an audit finding kind, ``seconds`` after injection."""

    what: str
    seconds: float


@dataclass
class Row:
    """One defect's line of the matrix."""

    defect: str
    title: str
    alarms: list[Catch] = field(default_factory=list)
    findings: list[Catch] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    drill: str | None = None  # PASSED / FAILED; None: not run
    drill_error: str | None = None
    expected: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    awaiting: str = ""
    watched_seconds: float = 0.0
    audit_runs: int = 0  # scheduled audit runs read in the watch window
    fresh: bool = True  # the world was clean before the injection
    real_seconds: float = 0.0  # wall time of inject, watch, drill and restore
    repaired: Catch | None = None  # the product removed the defect on its own (who, when)
    error: str | None = None

    @property
    def control(self) -> bool:
        return not (self.expected.get("alarms") or self.expected.get("findings"))

    @property
    def detection_seconds(self) -> float | None:
        """The first catch of the watch (alarm or audit), in emulated seconds from injection."""
        times = [c.seconds for c in self.alarms + self.findings]
        return min(times) if times else None

    @property
    def caught(self) -> bool:
        return bool(self.alarms or self.findings)

    @property
    def ok(self) -> bool:
        """Control: nothing fired. Defect: the watch caught it (without the drill)."""
        if self.error or not self.fresh:
            return False
        # A quiet control proves something only if the audit ran in it (every 5 emulated minutes).
        if self.control:
            return not self.caught and self.audit_runs >= 1
        return self.caught or self.repaired is not None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(control=self.control, caught=self.caught, ok=self.ok, detection_seconds=self.detection_seconds)
        return out


class Prove:
    """Runs the catalogue on one local runtime (``runtime`` not started yet; ``run()`` starts, builds,
    proves and stops it)."""

    def __init__(self, runtime: Any, defects: Sequence[Defect], *, drill: bool = True,
                 watch_minutes: float = WATCH_MINUTES, say: Callable[[str], None] = lambda _: None):
        self.runtime = runtime
        self.defects = list(defects)
        self.drill = drill
        self.watch_minutes = watch_minutes
        self.say = say

    # -- the whole run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from regionha.local.demo import Demo

        started = time.time()
        rt = self.runtime
        demo = Demo(rt, lambda _: None)
        report: dict[str, Any] = {"deployment": rt.topology.deployment, "compression": rt.compression,
                                  "watch_minutes": self.watch_minutes, "drill": self.drill, "rows": []}
        try:
            self.say(f"regionha prove: deployment {rt.topology.deployment}, {len(self.defects)} defects, "
                     f"watch {self.watch_minutes:g} emulated minutes each, clock {rt.compression:g}x")
            demo.start()
            ok, detail = demo.build()
            if not ok:
                report.update(ok=False, error=f"build failed: {detail}")
                return report
            self.say("built; waiting for a clean world")
            fresh = self._wait_clean()
            for i, defect in enumerate(self.defects):
                began = time.monotonic()
                row = self._prove(defect, fresh)
                # After the last defect the runtime stops: undo, but no need to wait for a clean world.
                fresh = self._restore(defect, row, wait=i + 1 < len(self.defects))
                row.real_seconds = round(time.monotonic() - began, 1)
                report["rows"].append(row.to_json())
                self.say(_line(row))
        finally:
            rt.stop()
        rows = report["rows"]
        report["ok"] = bool(rows) and all(r["ok"] for r in rows)
        report["seconds"] = round(time.time() - started, 1)
        return report

    # -- one defect ---------------------------------------------------------------------------------

    def _prove(self, defect: Defect, fresh: bool) -> Row:
        from regionha.local.prove_catalogue import Lab

        rt = self.runtime
        row = Row(defect.name, defect.title, fresh=fresh, awaiting=defect.awaiting,
                  expected={"alarms": list(defect.alarms), "findings": list(defect.findings), "drill": defect.drill})
        lab = Lab(rt, rt.topology, rt.clients)
        t0 = rt.clock.now()
        try:
            self._undo = defect.inject(lab)
        except Exception as e:  # a defect that cannot be injected is a failed row, not a crash
            self._undo = None
            row.error = f"inject: {type(e).__name__}: {e}"
            return row
        rt.settle()
        seen_runs: set[datetime] = set()
        end = t0 + timedelta(minutes=self.watch_minutes)
        deadline = time.monotonic() + self.watch_minutes * 60 / rt.compression * 3 + 30
        while rt.clock.now() < end and time.monotonic() < deadline:
            row.alarms = self._alarm_catches(t0)
            row.findings = self._audit_catches(t0, row.findings, seen_runs)
            if not defect.control and _all_expected(defect, row):
                break
            if lab.present is not None and not lab.present():
                gone = round((rt.clock.now() - t0).total_seconds(), 1)
                row.repaired = Catch(defect.repaired_by or "the product", gone)
                break  # gone: nothing is left to catch
            time.sleep(POLL)
        row.watched_seconds = round((rt.clock.now() - t0).total_seconds(), 1)
        # An audit run started in the window counts once it has published (a loaded machine is slow).
        until, grace = rt.clock.now(), time.monotonic() + AUDIT_GRACE
        while len(seen_runs) < len(self._audit_runs(t0, until)) and time.monotonic() < grace:
            time.sleep(POLL)
            row.findings = self._audit_catches(t0, row.findings, seen_runs, until)
        row.audit_runs = len(seen_runs)
        row.reasons = [str(f) for f in self._audit_now()]
        row.missing = [f"alarm {p}" for p in defect.alarms if not _matched(p, row.alarms)]
        row.missing += [f"finding {k}" for k in defect.findings if k not in {c.what for c in row.findings}]
        if self.drill:
            row.drill, row.drill_error = self._run_drill()
            if defect.drill and row.drill != defect.drill:
                row.missing.append(f"drill {defect.drill}")
        return row

    def _restore(self, defect: Defect, row: Row, *, wait: bool = True) -> bool:
        """Undo, converge if needed, and wait until the world is clean; returns whether it is."""
        if self._undo is not None:
            try:
                self._undo()
            except Exception as e:
                row.error = (row.error or "") + f" undo: {type(e).__name__}: {e}"
        if not wait:
            return True
        if defect.rebuild or not self._wait_clean():
            # A re-run of the build, as an operator would start it: the schedules keep running.
            self.runtime.build()
            self.runtime.settle()
            return self._wait_clean()
        return True

    # -- what the watch said ------------------------------------------------------------------------

    def _alarm_catches(self, t0: datetime) -> list[Catch]:
        from regionha.watch.alarms import alarm_prefix

        first: dict[str, float] = {}
        for t in self.runtime.alarm_transitions(t0):
            if t["new"] == "ALARM" and not t["alarm"].endswith(AUDIT_ALARM_SUFFIX) and t["alarm"] not in first:
                first[t["alarm"]] = (datetime.fromisoformat(t["time"]) - t0).total_seconds()
        prefix = alarm_prefix(self.runtime.topology.deployment)
        return [Catch(name.removeprefix(prefix), round(s, 1)) for name, s in first.items()]

    def _audit_runs(self, since: datetime, until: datetime | None = None) -> list[datetime]:
        """Emulated times of the scheduled audit's runs since ``since`` (and up to ``until``)."""
        name = self.runtime.stack.physical_id("AuditDeploymentFunction")
        return [d.time for d in self.runtime.schedules.log.all()
                if d.ok and d.target_arn.endswith(f":{name}") and d.time >= since
                and (until is None or d.time <= until)]

    def _audit_catches(self, t0: datetime, catches: list[Catch], seen: set[datetime],
                       until: datetime | None = None) -> list[Catch]:
        """Each scheduled audit run after ``t0`` once its metrics are in: the kinds it counted."""
        found = {c.what: c for c in catches}
        runs = self._audit_runs(t0, until)
        for i, run in enumerate(runs):
            if run in seen:
                continue
            # The run's datapoints are stamped when it ends: anywhere before the next run starts.
            counts = self._audit_counts(run, runs[i + 1] if i + 1 < len(runs) else None)
            if counts is None:
                continue  # not published yet: look again
            seen.add(run)
            for kind, n in counts.items():
                if n >= 1 and kind not in found:
                    found[kind] = Catch(kind, round((run - t0).total_seconds(), 1))
        return list(found.values())

    def _audit_counts(self, run: datetime, following: datetime | None) -> dict[str, float] | None:
        """``AuditFindings`` per kind published by the run started at ``run`` (before ``following``,
        the next run, if any); None while it has published nothing."""
        from regionha.watch import audit

        rt = self.runtime
        cw = rt.clients.client("cloudwatch", rt.region)
        dims = [{"Name": "Deployment", "Value": rt.topology.deployment}]
        queries = [{"Id": f"k{i}", "Label": kind, "ReturnData": True,
                    "MetricStat": {"Metric": {"Namespace": "regionha", "MetricName": audit.METRIC,
                                              "Dimensions": [*dims, {"Name": "Kind", "Value": kind}]},
                                   "Period": 60, "Stat": "Maximum"}}
                   for i, kind in enumerate(audit.KINDS)]
        end = following or rt.clock.now() + timedelta(minutes=1)
        period = 60 * (int((end - run).total_seconds()) // 60 + 1)  # one bucket from the run's start
        for q in queries:
            q["MetricStat"]["Period"] = period
        results = cw.get_metric_data(MetricDataQueries=queries, StartTime=run - timedelta(seconds=1),
                                     EndTime=end)["MetricDataResults"]
        if not any(r["Values"] for r in results):
            return None
        return {r["Label"]: max(r["Values"] or [0.0]) for r in results}

    def _audit_now(self) -> list[audit.Finding]:
        """The audit, run directly (read-only): for the reasons shown and to judge a world clean."""
        from regionha.watch import audit

        rt = self.runtime
        world = audit.describe_world(rt.topology, rt.clients, table=rt.stack.physical_id("StateTable"),
                                     table_region=rt.region, now=rt.clock.now().timestamp(),
                                     controller=rt.stack.physical_id("FailoverControllerFunction"))
        return audit.audit(rt.topology, world)

    def _wait_clean(self) -> bool:
        """Bounded: the audit finds nothing and no alarm (but the audit's own, which follows its
        5-minute schedule) is in ALARM, for a whole emulated minute with a canary run in it."""
        rt = self.runtime
        began = rt.clock.now()
        end = began + timedelta(minutes=CLEAN_MINUTES)
        deadline = time.monotonic() + CLEAN_MINUTES * 60 / rt.compression * 3 + 30
        clean_since: datetime | None = None
        while rt.clock.now() < end and time.monotonic() < deadline:
            now = rt.clock.now()
            alarming = [n for n, s in rt.alarm_states().items() if s == "ALARM" and not n.endswith(AUDIT_ALARM_SUFFIX)]
            if alarming or self._audit_now():
                clean_since = None
            else:
                clean_since = clean_since or now
                canary_ran = any("Canary" in d.rule and d.ok and d.time >= clean_since
                                 for d in rt.schedules.log.all())
                if now - clean_since >= timedelta(minutes=1) and canary_ran:
                    return True
            time.sleep(POLL * 4)
        return False

    def _run_drill(self) -> tuple[str, str | None]:
        from regionha.local.demo import drill_input, drill_report_of

        rt = self.runtime
        execution = rt.run_state_machine("DrillStateMachine", drill_input(rt.topology, rt.compression),
                                         kind="drill", timeout=300)
        report = drill_report_of(rt, execution)
        return str(report.get("status") or "FAILED"), _drill_why(report.get("error") or execution.error)


def _drill_why(error: Any) -> str | None:
    """The drill's error as one line: a task failure's ``errorMessage`` (``step: why``), else its text."""
    import json

    if not error:
        return None
    if isinstance(error, dict):
        try:
            cause = json.loads(error.get("Cause") or "{}")
        except ValueError:
            cause = {}
        error = cause.get("errorMessage") or error.get("Cause") or error.get("Error")
    return str(error).splitlines()[0][:300]


def _matched(pattern: str, catches: list[Catch]) -> bool:
    return any(fnmatch.fnmatchcase(f"-{c.what}", pattern) or fnmatch.fnmatchcase(c.what, pattern) for c in catches)


def _all_expected(defect: Defect, row: Row) -> bool:
    return (all(_matched(p, row.alarms) for p in defect.alarms)
            and all(k in {c.what for c in row.findings} for k in defect.findings))


def _catches_text(catches: list[Catch]) -> str:
    return ", ".join(f"{c.what} {c.seconds:.0f} s" for c in sorted(catches, key=lambda c: c.seconds))


def _line(row: Row) -> str:
    mark = "✔" if row.ok else "✘"
    if row.error:
        return f"{mark} {row.defect}: {row.error}"
    if row.control:
        if row.caught:
            return f"{mark} {row.defect}: FALSE ALARM {_catches_text(row.alarms + row.findings)}"
        return f"{mark} {row.defect}: quiet, {row.audit_runs} audit runs in {row.watched_seconds:.0f} s"
    when = (f"caught in {row.detection_seconds:.0f} s" if row.caught
            else f"repaired by the {row.repaired.what} in {row.repaired.seconds:.0f} s, before any catch"
            if row.repaired else "NOT CAUGHT by the watch")
    return f"{mark} {row.defect}: {when}" + (f"; missing {', '.join(row.missing)}" if row.missing else "")


def select(defects: Sequence[Defect], names: Sequence[str] | None) -> list[Defect]:
    """The defects named (in catalogue order), all when ``names`` is empty. Raises KeyError naming
    the unknown ones."""
    if not names:
        return list(defects)
    known = {d.name for d in defects}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown defect {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [d for d in defects if d.name in names]


def load_catalogue(path: str) -> list[Defect]:
    """``DEFECTS`` of a user's Python file (a list of ``Defect``). Raises ValueError when it has none."""
    import importlib.util

    from regionha.local.prove_catalogue import Defect

    spec = importlib.util.spec_from_file_location("regionha_user_catalogue", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defects = getattr(module, "DEFECTS", None)
    if not isinstance(defects, list) or not all(isinstance(d, Defect) for d in defects):
        raise ValueError(f"{path}: needs a module-level DEFECTS list of regionha.local.prove_catalogue.Defect")
    return defects


# --- what users see -------------------------------------------------------------------------------------


def matrix_table(report: dict[str, Any]) -> Any:
    """The catch matrix as a ``rich`` table."""
    from rich.table import Table

    table = Table(title=f"catch matrix: {report['deployment']} (detection: emulated s from injection)")
    for column in ("defect", "canary alarm", "audit finding", "drill verdict", "watch"):
        table.add_column(column, overflow="fold")
    for r in report["rows"]:
        row = Row(**{k: v for k, v in r.items() if k in Row.__dataclass_fields__})
        row.alarms = [Catch(**c) for c in r["alarms"]]
        row.findings = [Catch(**c) for c in r["findings"]]
        row.repaired = Catch(**r["repaired"]) if r.get("repaired") else None
        awaiting = f" (awaiting {row.awaiting.split(':')[0]})" if row.awaiting else ""
        alarms = _catches_text(row.alarms) or ("—" + (awaiting if any(m.startswith("alarm") for m in row.missing)
                                                    else ""))
        findings = _catches_text(row.findings) or "—"
        drill = row.drill or "not run"
        if row.drill == "FAILED" and row.drill_error:
            drill += f" ({row.drill_error.split(':')[0][:40]})"
        if row.error:
            watch = f"✘ {row.error}"
        elif not row.caught and row.repaired is not None:
            watch = f"✔ repaired by the {row.repaired.what} {row.repaired.seconds:.0f} s, no alarm"
        elif row.control:
            watch = "✘ false alarm" if row.caught else "✔ quiet" if row.ok else "✘ quiet, but no audit ran"
        else:
            watch = f"✔ {row.detection_seconds:.0f} s" if row.caught else "✘ missed"
        if not row.fresh:
            watch += " (world not clean before)"
        table.add_row(row.defect, alarms, findings, drill, watch)
    return table


def print_report(report: dict[str, Any], console: Any = None) -> None:
    import sys

    console = console or _console(sys.stdout)
    if report.get("error"):
        console.print(f"prove: {report['error']}")
        return
    console.print(matrix_table(report))
    defects = [r for r in report["rows"] if not r["control"]]
    caught = [r for r in defects if r["caught"]]
    false_alarms = sum(len(r["alarms"]) + len(r["findings"]) for r in report["rows"] if r["control"])
    repaired = [r for r in defects if not r["caught"] and r.get("repaired")]
    console.print(f"{len(caught)} of {len(defects)} defects caught by the watch alone"
                  + (f", {len(repaired)} repaired by the product before any catch" if repaired else "")
                  + (f"; {false_alarms} false alarms in the control" if any(r["control"] for r in report["rows"])
                     else "; no control run") + f"; {report.get('seconds', 0):.0f} s")
    for r in report["rows"]:
        for m in r["missing"]:
            why = f" (awaiting {r['awaiting']})" if r["awaiting"] and not m.startswith("drill") else ""
            console.print(f"  {r['defect']}: expected {m}, not seen{why}")


# --- regionha prove -------------------------------------------------------------------------------------


def register_prove(subparsers: Any) -> None:
    """``regionha prove``: registered by ``regionha.cli`` (COMMAND_GROUPS)."""
    from pathlib import Path

    prove = subparsers.add_parser(
        "prove", help="inject each defect of a catalogue into a local deployment and print the catch matrix",
        description="Build the deployment in the local runtime, inject each defect of the catalogue one at a "
        "time on a fresh world, and print the catch matrix: defect x (canary alarm, audit finding, drill "
        "verdict) with the detection time in emulated seconds. Exit 0 when every defect was caught by the "
        "watch alone and the clean control raised nothing, 1 otherwise, 2 on bad input. Needs root (the "
        "runtime's network namespace). See docs/prove.md.")
    prove.add_argument("--topology", type=Path, metavar="FILE",
                       help="topology YAML file (default: the reference deployment)")
    prove.add_argument("--ttl", type=int, default=3, help="record TTL (default 3 s, as the demo; 0 keeps the file's)")
    prove.add_argument("--compression", type=float, default=20.0, help="emulated clock speed-up (default 20)")
    prove.add_argument("--only", action="append", metavar="DEFECT", help="prove only this defect (repeatable)")
    prove.add_argument("--catalogue", metavar="FILE", help="a Python file (.py) whose DEFECTS list is added")
    prove.add_argument("--no-drill", dest="drill", action="store_false", help="skip the drill column (faster)")
    prove.add_argument("--watch-minutes", type=float, default=WATCH_MINUTES,
                       help=f"emulated minutes to watch each defect (default {WATCH_MINUTES:g})")
    prove.add_argument("--list", action="store_true", help="list the catalogue and exit")
    prove.add_argument("--output", choices=("text", "json"), default="text", help="text (a table) or json")
    prove.add_argument("--workdir", type=Path, metavar="DIR", help="where named instances keep their files")
    prove.set_defaults(handler=cmd_prove)


def cmd_prove(args: Any) -> int:
    import json
    import os
    import sys

    from regionha.local.prove_catalogue import DEFECTS
    from regionha.topology import TopologyError, load_topology

    try:
        defects = list(DEFECTS) + (load_catalogue(args.catalogue) if args.catalogue else [])
        chosen = select(defects, args.only)
        topology = load_topology(args.topology)
    except (KeyError, ValueError, OSError, SyntaxError) as e:
        print(f"regionha prove: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    except TopologyError as e:
        for problem in e.problems:
            print(f"{e.source}: {problem}", file=sys.stderr)
        return 2
    if args.list:
        for d in chosen:
            print(f"{d.name}: {d.title}" + (f" [awaiting {d.awaiting}]" if d.awaiting else ""))
        return 0
    if args.watch_minutes <= 0:
        print("regionha prove: --watch-minutes must be > 0", file=sys.stderr)
        return 2
    # The handlers log every step as JSON; the matrix says enough.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    from regionha.local.runtime import LocalRuntime, local_topology

    runtime = LocalRuntime(local_topology(topology, ttl=args.ttl or None), compression=args.compression,
                           workdir=args.workdir)
    text = args.output == "text"
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    # The handlers' logs (a failing drill's errors are expected here) go to stderr: stdout is the
    # matrix, or one JSON document.
    os.dup2(2, 1)
    try:
        report = Prove(runtime, chosen, drill=args.drill, watch_minutes=args.watch_minutes,
                       say=(lambda line: print(line, file=out, flush=True)) if text else (lambda _: None)).run()
    finally:
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)
    with out:
        if text:
            print_report(report, _console(out))
        else:
            print(json.dumps(report, indent=2, default=str), file=out)
    return 0 if report.get("ok") else 1


def _console(out: Any) -> Any:
    from rich.console import Console

    # Not a terminal (a pipe, a log): wide enough that the matrix's rows stay one line each.
    return Console(file=out, width=None if out.isatty() else 160)
