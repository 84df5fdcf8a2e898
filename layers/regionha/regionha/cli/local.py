"""``regionha local up|demo|exec``: the local runtime from the command line.

The runtime runs in a network namespace of its own holding only loopback (``regionha.local.host.netns``);
its state file names it, and ``regionha local exec -- CMD`` runs a command in there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from regionha.topology import TopologyError, load_topology

DEFAULT_STATE_FILE = Path("out/local-state.json")


def register_local(subparsers: Any) -> None:
    local = subparsers.add_parser("local", help="run the product locally: emulated AWS, real DNS on loopback")
    commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--topology", type=Path, help="topology YAML file (default: the reference deployment)")
    common.add_argument(
        "--compression", type=float, default=20.0,
        help="emulated time runs this many times faster for schedules and alarms (default 20)",
    )
    common.add_argument("--workdir", type=Path, help="where named instances keep their files")

    up = commands.add_parser(
        "up", parents=[common], help="start, build, write the state file and stay up until Ctrl-C"
    )
    up.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE)
    up.set_defaults(handler=cmd_up)

    demo = commands.add_parser(
        "demo", parents=[common], help="start → build → resolve through every path → teardown, with a report"
    )
    demo.add_argument("--json", type=Path, help="write the JSON report here")
    demo.add_argument(
        "--ttl", type=int, default=3,
        help="record TTL for the demo (default 3 s, so that failovers show within seconds; 0 keeps the file's)",
    )
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser(
        "exec",
        help="run a command inside a running local runtime's network namespace",
        description="Run COMMAND inside the network namespace of the runtime that `regionha local up` "
        "started (named in its state file), with AWS_ENDPOINT_URL, the region and fake credentials "
        "pointing at its emulated AWS, and REGIONHA_LOCAL=1 (regionha commands in local mode). "
        "Same as `ip netns exec NAME COMMAND`. Example: "
        "regionha local exec -- dig @127.2.10.10 -b 127.2.10.4 sample.cluster.local",
    )
    run.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")
    run.set_defaults(handler=cmd_exec)


def _say(text: str) -> None:
    print(text, flush=True)


def _runtime(args: argparse.Namespace) -> Any:
    # The handlers log every step as JSON; on a terminal the phases say enough (set it to INFO to see).
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    from regionha.local.runtime import LocalRuntime, local_topology

    ttl = getattr(args, "ttl", None) or None
    topology = local_topology(load_topology(args.topology), ttl=ttl)
    return LocalRuntime(topology, compression=args.compression, workdir=args.workdir, progress=_say)


def _invalid(err: TopologyError) -> int:
    for problem in err.problems:
        print(f"{err.source}: {problem}", file=sys.stderr)
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    from regionha.local.demo import Demo, write_report

    try:
        runtime = _runtime(args)
    except TopologyError as e:
        return _invalid(e)
    report = Demo(runtime, _say).run()
    if args.json:
        write_report(report, args.json)
        _say(f"report: {args.json}")
    _say(f"demo {'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']:.1f} s")
    return 0 if report["ok"] else 1


def cmd_up(args: argparse.Namespace) -> int:
    try:
        runtime = _runtime(args)
    except TopologyError as e:
        return _invalid(e)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        runtime.start()
        execution = runtime.build()
        if execution.status != "SUCCEEDED":
            _say(f"build {execution.status}: {execution.error}: {execution.cause}")
            return 1
        runtime.settle()
        state = runtime.state()
        args.state_file.parent.mkdir(parents=True, exist_ok=True)
        args.state_file.write_text(json.dumps(state, indent=2) + "\n")
        _say(f"built {runtime.topology.deployment}; state file {args.state_file}")
        enter = "regionha local exec"
        if args.state_file != DEFAULT_STATE_FILE:
            enter += f" --state-file {args.state_file}"
        _say(f"everything runs in network namespace {state['netns']}; enter it with "
             f"`{enter} -- CMD` (or `ip netns exec {state['netns']} CMD`):")
        _say(f"  {enter} -- aws stepfunctions list-executions --state-machine-arn "
             f"{state['state_machines'].get('BuildStateMachine')}")
        for path, where in state["dns"].items():
            host, port = where.split(":")
            _say(f"  {enter} -- dig @{host} -p {port} -b {state['client_source']} {state['record']}   # {path}")
        for node, where in state["nodes"].items():
            _say(f"  {enter} -- curl http://{where}/   # {node}")
        _say("up; Ctrl-C to stop")
        done.wait()
        return 0
    finally:
        _say("stopping")
        runtime.stop()
        if args.state_file.exists() and _state_names(args.state_file, runtime):
            args.state_file.unlink()


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
        state = json.loads(args.state_file.read_text())
        name = state["netns"]
    except FileNotFoundError:
        print(f"regionha local exec: no state file {args.state_file}; start the runtime with "
              "`regionha local up`", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"regionha local exec: {args.state_file} names no network namespace ({e!r})", file=sys.stderr)
        return 2
    if name not in netns.namespaces():
        print(f"regionha local exec: namespace {name} of {args.state_file} is gone: the runtime is not "
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
