"""``regionha onprem named-conf``: the on-prem site's DNS server configuration, from the topology.

A real on-prem site's DNS server is the user's (docs/onprem.md): regionha does not build it, but the
zone stanza and the cache bounds it needs come from the same render the twin runs with a real named
(``regionha.bind.render_onprem_conf``): forward the cluster zone only, to every forwarder path
address, and keep no answer longer than the record's TTL. ``--check`` runs ``named-checkconf`` on it.

Exit codes: 0 printed (and checked), 2 bad topology or arguments, 1 named-checkconf refused it.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from regionha.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_OK


def cmd_named_conf(args: argparse.Namespace) -> int:
    from regionha import bind
    from regionha.cli import _report, default_topology_path, read_topology
    from regionha.errors import ConfigurationError
    from regionha.topology import TopologyError

    try:
        topology = read_topology(Path(args.topology) if args.topology else default_topology_path())
    except TopologyError as e:
        return _report(e)
    try:
        upstream = [ipaddress.IPv4Address(a) for a in args.upstream] if args.upstream else None
        conf = bind.render_onprem_conf(topology, upstream=upstream)
    except (ValueError, ConfigurationError) as e:
        print(f"regionha onprem named-conf: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            # The same render with this host's directory: named-checkconf changes into it.
            conf_file = Path(tmp) / "named.conf"
            conf_file.write_text(bind.render_onprem_conf(topology, upstream=upstream,
                                                         runtime=bind.NamedRuntime(directory=tmp)))
            try:
                found = subprocess.run(["named-checkconf", str(conf_file)], capture_output=True, text=True,
                                       timeout=30)
            except FileNotFoundError:
                print("regionha onprem named-conf: --check needs named-checkconf (BIND 9)", file=sys.stderr)
                return EXIT_INVALID
        if found.returncode != 0:
            print(f"regionha onprem named-conf: named-checkconf: {(found.stdout + found.stderr).strip()}",
                  file=sys.stderr)
            return EXIT_FAILED
    print(conf, end="")
    return EXIT_OK


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("onprem", help="what a real on-prem site runs (client.kind: onprem)")
    commands = group.add_subparsers(dest="onprem_command", required=True, metavar="COMMAND")
    conf = commands.add_parser(
        "named-conf",
        help="print the on-prem DNS server's named.conf (BIND 9) for the topology",
        description="Print the on-prem resolver's named.conf: the cluster zone forwarded, forward only, to "
        "every forwarder path address, caches bounded by the record TTL. Merge its options and zone into "
        "your server's configuration (docs/onprem.md).",
    )
    conf.add_argument("--topology", metavar="FILE", help="topology YAML (default: the reference deployment)")
    conf.add_argument("--upstream", action="append", default=[], metavar="IP",
                      help="forward names outside the cluster zone here, forward only (repeatable; default: "
                      "your server's own options decide, or the client VPC's resolver for a VPC site)")
    conf.add_argument("--check", action="store_true", help="check the result with named-checkconf first")
    conf.set_defaults(handler=cmd_named_conf)
