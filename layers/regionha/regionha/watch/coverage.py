"""The on-prem resolver's coverage: can it still resolve the record through each forwarder path on its own?

The canary probes every forwarder path address from the client site and the on-prem resolver as
clients use it. Neither notices the on-prem resolver's forwarder list drifting: with the Osaka path
gone from it, every probe still passes because Tokyo answers, until a drill cuts Tokyo. So the on-prem
agent (on the on-prem DNS server, every minute) checks, per forwarder path address of the topology:

1. **listed**: the address is in the forwarder list named applies to the record's zone, read from the
   configuration named loads (``named-checkconf -p`` of its config file: the canonical text named
   itself parses; ``forwarders`` of the zone's ``type forward`` statement, else of ``options``);
2. **answers**: asked on its own for the record, the way named forwards (recursion desired, from the
   on-prem resolver's own address, so security groups and network ACLs judge the on-prem server, and
   on the port named uses), it answers with addresses.

A path address is **covered** when both hold. ``OnPremPathCovered`` (Deployment, Path = the canary's
label of the address) is 1 or 0 per address, ``OnPremForwarderExtra`` (Deployment) counts listed
addresses that are no forwarder path of the topology; alarm ``onprem-coverage-<label>``
(``regionha.watch.alarms.coverage_down``). Published with PutMetricData (the agent is no Lambda).

Run it as ``python -m regionha.watch.coverage --topology FILE --conf /etc/named.conf [--publish]``.
IAM: cloudwatch:PutMetricData with ``--publish`` (namespace ``regionha``); nothing else.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from regionha import netguard
from regionha.errors import ConfigurationError
from regionha.topology import Topology
from regionha.watch.canary import FORWARDER_PATH, canary_targets
from regionha.watch.metrics import Datapoint
from regionha.watch.probe import ProbeConfig, ProbeResult, probe_many

DNS_PORT = 53
# named-checkconf is local and quick; a hung one must not hold the agent's minute.
_CHECKCONF_TIMEOUT = 20.0

Forwarder = tuple[str, int]  # (address, port) as named sends to it


# --- the effective forwarder list (pure) ------------------------------------------------------------


def _block(text: str, start: int) -> tuple[str, int]:
    """The text between the brace at ``start`` and its match, and the index after the match."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    raise ConfigurationError("named.conf: unbalanced braces")


def _statement(text: str, header: str) -> str | None:
    """The body of the first top-level-or-nested statement whose header matches ``header`` (a regex)."""
    match = re.search(header + r"\s*\{", text, re.IGNORECASE)
    if match is None:
        return None
    body, _ = _block(text, match.end() - 1)
    return body


def _forwarders_in(body: str, default_port: int) -> list[Forwarder] | None:
    """The ``forwarders [port P] { ADDR [port P]; ... };`` of one statement body; None when it has none."""
    match = re.search(r"\bforwarders\b\s*(?:port\s+(\d+)\s*)?(?:tls\s+\S+\s*)?\{", body, re.IGNORECASE)
    if match is None:
        return None
    inner, _ = _block(body, match.end() - 1)
    port = int(match.group(1)) if match.group(1) else default_port
    out = []
    for entry in inner.split(";"):
        words = entry.split()
        if not words:
            continue
        try:
            address = str(ipaddress.ip_address(words[0]))
        except ValueError as e:
            raise ConfigurationError(f"named.conf: forwarder {entry.strip()!r} is not an address") from e
        entry_port = int(words[words.index("port") + 1]) if "port" in words[1:-1] else port
        out.append((address, entry_port))
    return out


def zone_forwarders(canonical: str, zone: str, *, default_port: int = DNS_PORT) -> list[Forwarder]:
    """The forwarders named uses for names in ``zone``: the zone's ``type forward`` statement's list,
    else the ``options`` list (BIND 9 ARM, "forwarders"); [] when neither forwards.

    ``canonical`` is ``named-checkconf -p`` output (comments gone, one statement per block). A zone
    statement without ``forwarders`` inherits the global list; ``forwarders { };`` in it disables
    forwarding for the zone (an empty list). ConfigurationError on text that is not a config.
    """
    name = re.escape(zone.rstrip("."))
    options = _statement(canonical, r"(?m)^\s*options")
    global_list = (_forwarders_in(options, default_port) if options is not None else None) or []
    body = _statement(canonical, rf'\bzone\s+"{name}\.?"(?:\s+IN)?')
    if body is None:
        return global_list
    zone_type = re.search(r"\btype\s+(\w+)\s*;", body)
    if zone_type is not None and zone_type.group(1).lower() != "forward":
        return []  # the server is authoritative (primary/secondary) for the zone: nothing is forwarded
    own = _forwarders_in(body, default_port)
    return global_list if own is None else own


# --- the check ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathCoverage:
    """One forwarder path address (``label``: the canary's) as the on-prem resolver sees it."""

    label: str
    forwarder: str
    address: str  # the address named would send to (its loopback image in local mode)
    listed: bool
    answers: bool
    outcome: str | None  # the probe's outcome label; None when not listed (not asked)
    error: str | None = None

    @property
    def covered(self) -> bool:
        return self.listed and self.answers


@dataclass(frozen=True)
class CoverageReport:
    deployment: str
    zone: str
    effective: tuple[Forwarder, ...]
    paths: tuple[PathCoverage, ...]
    extra: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(p.covered for p in self.paths) and not self.extra

    def reasons(self) -> list[str]:
        """One line per finding, for the log and the agent's output."""
        out = []
        for p in self.paths:
            if not p.listed:
                out.append(f"{p.label}: {p.address} is not in the on-prem resolver's forwarders for {self.zone} "
                           "(config drift): the path is no longer used")
            elif not p.answers:
                out.append(f"{p.label}: {p.address} did not answer the record from the on-prem resolver "
                           f"({p.outcome}: {p.error})")
        out += [f"{a}: forwarder of {self.zone} that is no forwarder path of the topology" for a in self.extra]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "zone": self.zone, "ok": self.ok,
                "effective": [f"{a}#{p}" for a, p in self.effective], "extra": list(self.extra),
                "paths": [{"label": p.label, "forwarder": p.forwarder, "address": p.address, "listed": p.listed,
                           "answers": p.answers, "covered": p.covered, "outcome": p.outcome, "error": p.error}
                          for p in self.paths],
                "reasons": self.reasons()}


def check_coverage(
    topology: Topology,
    canonical: str,
    *,
    timeout: float | None = None,
    probe: Callable[[dict[str, ProbeConfig]], dict[str, ProbeResult]] = probe_many,
) -> CoverageReport:
    """Compare the effective forwarder list (``canonical``: ``named-checkconf -p`` text) with the
    topology's forwarder paths and ask each listed address for the record from the on-prem resolver's
    address, all at once (bounded by ``timeout``, default the topology's canary timeout).

    Addresses are compared as named has them: the topology's cloud addresses, mapped to loopback in
    local mode (``netguard.resolve_target``). Ports are named's, not compared.
    """
    zone = topology.dns.zone_fqdn
    effective = zone_forwarders(canonical, zone)
    port_of = {a: p for a, p in effective}
    source = netguard.resolve_target(str(topology.client.dns_server.ip))
    bound = timeout or topology.canary.timeout_seconds
    targets = [t for t in canary_targets(topology) if t.kind == FORWARDER_PATH]
    address_of = {t.path: netguard.resolve_target(t.server) for t in targets}
    configs = {
        t.path: ProbeConfig(name=topology.dns.record.name, server=address_of[t.path],
                            port=port_of[address_of[t.path]], timeout=bound / 2, lifetime=bound, tries=2,
                            source=source)
        for t in targets if address_of[t.path] in port_of
    }
    results = probe(configs) if configs else {}
    paths = []
    for t in targets:
        r = results.get(t.path)
        answered = r is not None and r.outcome in ("ok", "wrong_answer")
        paths.append(PathCoverage(t.path, str(t.forwarder), address_of[t.path], t.path in configs, answered,
                                  r.outcome if r else None, r.error if r else None))
    known = set(address_of.values())
    extra = tuple(a for a, _ in effective if a not in known)
    return CoverageReport(topology.deployment, zone, tuple(effective), tuple(paths), extra)


def datapoints(report: CoverageReport) -> list[Datapoint]:
    """OnPremPathCovered per forwarder path address (Deployment, Path), OnPremForwarderExtra (Deployment)."""
    dep = {"Deployment": report.deployment}
    points = [Datapoint("OnPremPathCovered", float(p.covered), "Count", dep | {"Path": p.label})
              for p in report.paths]
    return [*points, Datapoint("OnPremForwarderExtra", float(len(report.extra)), "Count", dep)]


def read_canonical(conf: str, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> str:
    """``named-checkconf -p CONF``: the configuration as named parses it. ConfigurationError when it
    does not parse (named would not load it either). The text holds included key secrets: never log it."""
    result = run(["named-checkconf", "-p", conf], capture_output=True, text=True, timeout=_CHECKCONF_TIMEOUT,
                 check=False)
    if result.returncode != 0:
        raise ConfigurationError(f"named-checkconf {conf}: {(result.stdout + result.stderr).strip()}")
    return result.stdout


# --- the agent's command ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Check once, print the report (JSON), publish with ``--publish``; exit 0 covered, 1 not, 2 bad input."""
    from regionha.topology import TopologyError, load_topology
    from regionha.watch import metrics

    parser = argparse.ArgumentParser(prog="python -m regionha.watch.coverage", description=__doc__.split("\n")[0])
    parser.add_argument("--topology", required=True, help="the deployment's topology file")
    parser.add_argument("--conf", default="/etc/named.conf", help="the on-prem resolver's named.conf")
    parser.add_argument("--publish", action="store_true", help="PutMetricData (namespace regionha)")
    parser.add_argument("--region", help="CloudWatch region for --publish (default: the SDK's)")
    parser.add_argument("--timeout", type=float, help="bound of each probe (default: the canary's)")
    args = parser.parse_args(argv)
    try:
        topology = load_topology(args.topology)
        report = check_coverage(topology, read_canonical(args.conf), timeout=args.timeout)
    except (ConfigurationError, TopologyError, OSError) as e:
        print(f"coverage: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json()))
    if args.publish:
        metrics.put_metric_data(datapoints(report), region=args.region)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
