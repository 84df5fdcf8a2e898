"""``regionha local up|demo|exec``: the local runtime from the command line.

The runtime runs in a network namespace of its own holding only loopback (``regionha.local.host.netns``);
its state file (``--local-state FILE``, the same flag ``drill``/``build``/``audit`` read it with) names
it, and ``regionha local exec -- CMD`` runs a command in there.

``--output text|json`` means what it means everywhere (``regionha.cli.output``): text prints the
progress and a summary on stdout; json prints one JSON document on stdout (``up``: the state file's
content once built; ``demo``: the demo's report) and the progress on stderr. ``demo --report-json FILE``
also writes the demo's report to FILE.

Scheduled functions (canary, health checks, audit) are held until the build has saved its inventory:
before that they could only fail. SIGINT (Ctrl-C) and SIGTERM stop the runtime cleanly: every thread,
process and address goes with its namespace, the state file written by this process and the temporary
folder of the named instances are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from regionha.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_OK, Out, add_output_argument
from regionha.topology import TopologyError, load_topology

DEFAULT_STATE_FILE = Path("out/local-state.json")
# Exit codes of a command stopped by a signal, as a shell reports them (128 + the signal number).
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwind and stop the runtime (a BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def wait_for_signal() -> None:
    """Sleep until a signal handler raises (``stop_on_signals``). Not ``signal.pause()``: the kernel may
    deliver the signal to any of the runtime's threads, and pause() in the main thread would then never
    return (seen: `local up` deaf to SIGINT); Python runs the handler in the main thread once it wakes."""
    while True:
        time.sleep(0.5)


@contextlib.contextmanager
def stop_on_signals(out: Out) -> Iterator[Callable[[], None]]:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread until the yielded ``shield()`` is called;
    after that (the runtime is stopping) a further signal only says to wait, so a second Ctrl-C cannot
    leave half a runtime behind. The previous handlers come back on exit."""
    shielded = False

    def handler(signum: int, _frame: Any) -> None:
        if shielded:
            out.line("stopping; please wait", "yellow")
            return
        raise Stopped(signum)

    def shield() -> None:
        nonlocal shielded
        shielded = True

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_SIGNAL}
    try:
        yield shield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def register_local(subparsers: Any) -> None:
    local = subparsers.add_parser("local", help="run the product locally: emulated AWS, real DNS on loopback")
    commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--topology", type=Path, metavar="FILE",
                        help="topology YAML file (default: the reference deployment)")
    common.add_argument(
        "--compression", type=float, default=20.0,
        help="emulated time runs this many times faster for schedules and alarms (default 20)",
    )
    common.add_argument("--workdir", type=Path, metavar="DIR",
                        help="where named instances keep their files (default: a temporary folder, removed "
                        "on exit)")
    add_output_argument(common)
    state_file = argparse.ArgumentParser(add_help=False)
    state_file.add_argument("--local-state", "--state-file", dest="local_state", type=Path,
                            default=DEFAULT_STATE_FILE, metavar="FILE",
                            help=f"the runtime's state file (default {DEFAULT_STATE_FILE})")

    up = commands.add_parser(
        "up", parents=[common, state_file],
        help="start, build, write the state file and stay up until Ctrl-C (or SIGTERM)",
    )
    up.set_defaults(handler=cmd_up)

    demo = commands.add_parser(
        "demo", parents=[common],
        help="start → build → resolve → canary → acceptance drill → teardown, with a report",
    )
    demo.add_argument("--report-json", type=Path, metavar="FILE", help="also write the demo's report JSON to FILE")
    # Before --output existed, --json FILE wrote the report file; kept for old scripts, not shown.
    demo.add_argument("--json", dest="legacy_json", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    demo.add_argument(
        "--ttl", type=int, default=3,
        help="record TTL for the demo (default 3 s, so that failovers show within seconds; 0 keeps the file's)",
    )
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser(
        "exec", parents=[state_file],
        help="run a command inside a running local runtime's network namespace",
        description="Run COMMAND inside the network namespace of the runtime that `regionha local up` "
        "started (named in its state file), with AWS_ENDPOINT_URL, the region and fake credentials "
        "pointing at its emulated AWS, and REGIONHA_LOCAL=1 (regionha commands in local mode). "
        "Same as `ip netns exec NAME COMMAND`. Example: "
        "regionha local exec -- dig @127.2.10.10 -b 127.2.10.4 sample.cluster.local",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")
    run.set_defaults(handler=cmd_exec)


@contextlib.contextmanager
def _workdir(args: argparse.Namespace) -> Iterator[Path]:
    """``--workdir``, else a temporary folder removed on the way out (whatever happens)."""
    if args.workdir is not None:
        yield args.workdir
        return
    path = Path(tempfile.mkdtemp(prefix="regionha-local-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _runtime(args: argparse.Namespace, workdir: Path, out: Out) -> Any:
    # The handlers log every step as JSON; on a terminal the phases say enough (set it to INFO to see).
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    from regionha.local.runtime import LocalRuntime, local_topology

    ttl = getattr(args, "ttl", None) or None
    topology = local_topology(load_topology(args.topology), ttl=ttl)
    return LocalRuntime(topology, compression=args.compression, workdir=workdir, progress=out.line)


def _invalid(err: TopologyError) -> int:
    for problem in err.problems:
        print(f"{err.source}: {problem}", file=sys.stderr)
    return EXIT_INVALID


def cmd_demo(args: argparse.Namespace) -> int:
    from regionha.local.demo import Demo, write_report

    out = Out(args.output)
    report_file = args.report_json or args.legacy_json
    if args.legacy_json is not None:
        out.line("regionha local demo: --json FILE is now --report-json FILE (--output json prints the report "
                 "on stdout)", "yellow")
    with _workdir(args) as workdir, stop_on_signals(out) as shield:
        try:
            runtime = _runtime(args, workdir, out)
        except TopologyError as e:
            return _invalid(e)
        demo = Demo(runtime, out.line)
        try:
            report = demo.run(on_stop=shield)
        except Stopped as e:
            out.line(f"demo interrupted ({e}); the local runtime is stopped and nothing is left behind", "yellow")
            return EXIT_SIGNAL[e.signum]
    if report_file:
        write_report(report, report_file)
        out.line(f"demo report: {report_file}")
    out.result(report)
    passed = report["ok"]
    out.line(f"demo {'PASSED' if passed else 'FAILED'} in {report['seconds']:.1f} s",
             "bold green" if passed else "bold red")
    return EXIT_OK if passed else EXIT_FAILED


def cmd_up(args: argparse.Namespace) -> int:
    from regionha.local.demo import held_schedules

    out = Out(args.output)
    with _workdir(args) as workdir, stop_on_signals(out) as shield:
        try:
            runtime = _runtime(args, workdir, out)
        except TopologyError as e:
            return _invalid(e)
        try:
            runtime.start()
            out.line("building (build state machine)")
            with held_schedules(runtime) as held:
                execution = runtime.build()
            if execution.status != "SUCCEEDED":
                out.line(f"build {execution.status}: {execution.error}: {execution.cause}", "bold red")
                return EXIT_FAILED
            runtime.settle()
            state = runtime.state()
            args.local_state.parent.mkdir(parents=True, exist_ok=True)
            args.local_state.write_text(json.dumps(state, indent=2) + "\n")
            out.line(f"built {runtime.topology.deployment} in {execution.seconds:.1f} s"
                     + (f"; {len(held)} schedules held until its inventory was saved" if held else "")
                     + f"; state file {args.local_state}", "bold")
            for line in _how_to_enter(state, args.local_state):
                out.text(line)
            out.result(state)
            out.line("up; Ctrl-C (or SIGTERM) to stop")
            wait_for_signal()
            return EXIT_OK
        except Stopped as e:
            out.line(f"{e}: stopping")
            return EXIT_OK
        finally:
            shield()
            runtime.stop()
            if args.local_state.exists() and _state_names(args.local_state, runtime):
                args.local_state.unlink()
            out.line("stopped: namespace, processes and addresses removed")


def _how_to_enter(state: dict[str, Any], path: Path) -> Iterator[str]:
    enter = "regionha local exec"
    if path != DEFAULT_STATE_FILE:
        enter += f" --local-state {path}"
    yield (f"everything runs in network namespace {state['netns']}; enter it with "
           f"`{enter} -- CMD` (or `ip netns exec {state['netns']} CMD`):")
    yield (f"  {enter} -- aws stepfunctions list-executions --state-machine-arn "
           f"{state['state_machines'].get('BuildStateMachine')}")
    for path_name, where in state["dns"].items():
        host, port = where.split(":")
        yield f"  {enter} -- dig @{host} -p {port} -b {state['client_source']} {state['record']}   # {path_name}"
    for node, where in state["nodes"].items():
        yield f"  {enter} -- curl http://{where}/   # {node}"


def _state_names(path: Path, runtime: Any) -> bool:
    """Whether the state file at ``path`` is this runtime's (not one another runtime wrote since)."""
    try:
        return json.loads(path.read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        return False


def cmd_exec(args: argparse.Namespace) -> int:
    from regionha.local.host import netns

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("regionha local exec: give a command after --, e.g. "
              "regionha local exec -- dig @127.2.10.10 -b 127.2.10.4 sample.cluster.local", file=sys.stderr)
        return 2
    try:
        state = json.loads(args.local_state.read_text())
        name = state["netns"]
    except FileNotFoundError:
        print(f"regionha local exec: no state file {args.local_state}; start the runtime with "
              "`regionha local up`", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"regionha local exec: {args.local_state} names no network namespace ({e!r})", file=sys.stderr)
        return 2
    if name not in netns.namespaces():
        print(f"regionha local exec: namespace {name} of {args.local_state} is gone: the runtime is not "
              "running (start it with `regionha local up`)", file=sys.stderr)
        return 2
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": state.get("endpoint_url", ""),
        "AWS_REGION": state.get("region", ""),
        "AWS_DEFAULT_REGION": state.get("region", ""),
        # The emulated AWS checks no signature; fixed credentials keep a real profile out of it.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        # regionha commands run in here are in local mode: cloud addresses map onto loopback.
        "REGIONHA_LOCAL": "1",
    }
    env.pop("AWS_PROFILE", None)
    try:
        os.execvpe("ip", ["ip", "netns", "exec", name, *argv], env)
    except OSError as e:
        print(f"regionha local exec: ip netns exec: {e}", file=sys.stderr)
        return 2
