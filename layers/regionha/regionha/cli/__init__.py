"""The ``regionha`` command line.

Each command group is a ``register(subparsers)`` function that adds its subcommands and binds each to a
handler ``(args) -> exit code`` with ``set_defaults(handler=...)``; ``COMMAND_GROUPS`` lists them. Groups
(``build``/``teardown``, ``local``, ``canary``, ``drill``) add their own register function to that tuple and
import their heavy dependencies inside the handler, so that ``regionha topology validate`` stays offline and fast.

Exit codes: 0 success, 2 invalid input (a usage error or a topology with problems).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from regionha import __version__
from regionha.cli.audit import register as register_audit
from regionha.cli.build import register as register_build
from regionha.cli.canary import register as register_canary
from regionha.cli.drill import register as register_drill
from regionha.cli.local import register_local
from regionha.cli.onprem import register as register_onprem
from regionha.local.prove import register_prove
from regionha.topology import DEFAULT_TOPOLOGY, Topology, TopologyError, _one_line, load_topology
from regionha.topology.validation import topology_warnings

EXIT_OK = 0
EXIT_INVALID = 2

Subparsers = Any  # argparse's _SubParsersAction is private; its type is not worth importing


def default_topology_path() -> Path:
    """The shipped reference deployment, as a real file (the package is installed from a directory)."""
    return Path(str(resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY)))


def read_topology(path: Path) -> Topology:
    """Read, parse and check a topology file (TopologyError names the file and every problem)."""
    return load_topology(path)



def _report(err: TopologyError) -> int:
    for problem in err.problems:
        print(f"{err.source}: {problem.field}: {_one_line(problem.message)}", file=sys.stderr)
    return EXIT_INVALID


def _topology_file(args: argparse.Namespace) -> Path:
    return Path(args.file) if args.file is not None else default_topology_path()


def _summary(topology: Topology) -> str:
    paths = ", ".join(f"{p.name} ({p.kind})" for p in topology.forwarder_paths)
    return (
        f"deployment {topology.deployment}: {len(topology.vpcs)} VPCs, {len(topology.peerings)} peerings, "
        f"zone {topology.dns.zone_fqdn} record {topology.dns.record.name}, forwarder paths {paths}, "
        f"nodes {', '.join(n.name for n in topology.nodes)} (primary {topology.primary.name})"
    )


def cmd_topology_validate(args: argparse.Namespace) -> int:
    path = _topology_file(args)
    try:
        topology = read_topology(path)
    except TopologyError as e:
        return _report(e)
    for warning in topology_warnings(topology):
        print(f"{path}: {warning.field}: warning: {_one_line(warning.message)}", file=sys.stderr)
    print(f"{path}: OK: {_summary(topology)}")
    return EXIT_OK


def cmd_topology_show(args: argparse.Namespace) -> int:
    try:
        topology = read_topology(_topology_file(args))
    except TopologyError as e:
        return _report(e)
    print(json.dumps(topology.to_json(), indent=2))
    return EXIT_OK


def register_topology(subparsers: Subparsers) -> None:
    topology = subparsers.add_parser("topology", help="check and inspect a topology file")
    commands = topology.add_subparsers(dest="topology_command", required=True, metavar="COMMAND")
    file_help = "topology YAML file (default: the shipped reference deployment)"

    validate = commands.add_parser(
        "validate",
        help="check a topology file offline (no AWS call)",
        description="Check a topology file offline. Exit 0 if valid, 2 with one line per problem.",
    )
    validate.add_argument("file", nargs="?", metavar="FILE", help=file_help)
    validate.set_defaults(handler=cmd_topology_validate)

    show = commands.add_parser("show", help="print the validated, normalised topology as JSON")
    show.add_argument("file", nargs="?", metavar="FILE", help=file_help)
    show.set_defaults(handler=cmd_topology_show)


COMMAND_GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    register_topology, register_build, register_canary, register_local, register_drill, register_audit,
    register_prove, register_onprem,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regionha",
        description="Build, watch and drill a multi-region HA cluster on AWS whose failover works by "
        "DNS name control.",
    )
    parser.add_argument("--version", action="version", version=f"regionha {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse exits with 2 itself on a usage error)."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
