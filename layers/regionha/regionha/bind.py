"""named.conf rendering for the BIND servers of a deployment, and the EC2 user-data that runs them.

Pure functions: no AWS calls, no files written. The same render serves two runtimes:

- EC2 (Amazon Linux 2023): the defaults; cloud addresses as they are, port 53, /var/named.
- the local runtime: ``addr`` maps every cloud address to loopback (10.a.b.c -> 127.a.b.c) and a
  ``NamedRuntime`` gives each instance its own port, directory, pid file and rndc channel, so that
  several ``named -g -c CONF`` run side by side on one machine.

Every server forwards in ``forward only`` mode and never recurses from the root hints itself: names
outside the cluster zone go to the server's own VPC resolver. Locally that keeps named's traffic on
loopback; on EC2 it is what the instance's own resolver would do anyway.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regionha.errors import ConfigurationError

if TYPE_CHECKING:
    from regionha.topology import Topology

Address = str | ipaddress.IPv4Address
# Cloud address -> the address written in named.conf (identity on EC2; 10.a.b.c -> 127.a.b.c locally).
# Networks (the client ACL) map through their base address and keep their prefix length.
AddressMap = Callable[[Address], str]

# EC2 refuses user-data larger than this (before base64).
USER_DATA_LIMIT = 16 * 1024


@dataclass(frozen=True)
class Controls:
    """An rndc channel of its own, for one of several named instances on one machine.

    ``key_file`` holds ``key "<key_name>" {...};``, as written by
    ``rndc-confgen -a -A hmac-sha256 -k <key_name> -c <key_file>``.
    """

    address: str
    port: int
    key_name: str
    key_file: str


@dataclass(frozen=True)
class NamedRuntime:
    """Where and how one named instance runs. The defaults are Amazon Linux 2023's bind package."""

    directory: str = "/var/named"
    pid_file: str = "/run/named/named.pid"
    session_keyfile: str = "/run/named/session.key"
    port: int = 53  # listen-on port
    upstream_port: int = 53  # port of the forwarders this server sends to
    # None: named's default channel (127.0.0.1#953, key from /etc/rndc.key, made by named.service).
    controls: Controls | None = None
    max_cache_size: str = "64m"  # the default is 90% of RAM


EC2 = NamedRuntime()


def _network(net: ipaddress.IPv4Network, addr: AddressMap) -> str:
    # A network maps with its base address; the prefix length stays.
    return f"{addr(net.network_address)}/{net.prefixlen}"


def _address_list(items: Iterable[str]) -> str:
    return " ".join(f"{i};" for i in items)


def _forwarders(addresses: Iterable[Address], addr: AddressMap, port: int) -> str:
    return " ".join(f"{addr(a)} port {port};" for a in addresses)


def _check_port(port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"{what} must be a port number 1-65535, not {port}")


_BUILT_BY = "// Rendered by regionha.bind; edits are overwritten by the next build."


def _render(
    *,
    comment: str,
    listen: str,
    clients: list[str],
    zone: str,
    zone_forwarders: list[Address],
    default_forwarders: list[Address],
    addr: AddressMap,
    runtime: NamedRuntime,
    record_ttl: int,
) -> str:
    _check_port(runtime.port, "port")
    _check_port(runtime.upstream_port, "upstream_port")
    if not zone_forwarders:
        raise ConfigurationError(f"zone {zone}: no forwarder addresses")
    lines = [
        f"// {comment}",
        _BUILT_BY,
        "",
        f"acl clients {{ {_address_list(clients)} }};",
        "",
    ]
    if runtime.controls is not None:
        c = runtime.controls
        _check_port(c.port, "controls port")
        allow = f"allow {{ {c.address}; 127.0.0.1; }}"
        lines += [
            f'include "{c.key_file}";',
            f'controls {{ inet {c.address} port {c.port} {allow} keys {{ "{c.key_name}"; }}; }};',
            "",
        ]
    lines += [
        "options {",
        f'    directory "{runtime.directory}";',
        f'    pid-file "{runtime.pid_file}";',
        f'    session-keyfile "{runtime.session_keyfile}";',
        f"    listen-on port {runtime.port} {{ {listen}; }};",
        "    listen-on-v6 { none; };",
        # From the listening address, so that the next hop's ACL sees who is asking (on loopback the
        # kernel would otherwise pick 127.0.0.1).
        f"    query-source address {listen};",
        "    recursion yes;",
        "    allow-query { clients; };",
        "    allow-query-cache { clients; };",
        "    allow-recursion { clients; };",
        "    allow-transfer { none; };",
        "    notify no;",
        *_default_forwarding(default_forwarders, addr, runtime.upstream_port),
        *_validation(zone, own_upstream=bool(default_forwarders)),
        f"    max-cache-size {runtime.max_cache_size};",
        *_cache_bounds(record_ttl),
        "};",
        "",
        f'zone "{zone}" {{',
        "    type forward;",
        # "forward first" would recurse to the root when every forwarder fails, and could cache a
        # wrong NXDOMAIN for the private name.
        "    forward only;",
        f"    forwarders {{ {_forwarders(zone_forwarders, addr, runtime.upstream_port)} }};",
        "};",
        "",
    ]
    return "\n".join(lines)


def _validation(zone: str, *, own_upstream: bool) -> list[str]:
    if own_upstream:
        # The zone is private: its answers carry no signatures to validate.
        return ["    dnssec-validation no;"]
    # A user's server validates the internet's answers; only the private zone (no secure delegation
    # from the root) is exempt, or its answers would be bogus (BIND 9 ARM, "validate-except").
    return [f'    validate-except {{ "{zone}"; }};']


def _default_forwarding(upstream: list[Address], addr: AddressMap, port: int) -> list[str]:
    if not upstream:
        # An on-prem site's server: its own options decide the rest (root hints, its own upstream).
        return ["    // Names outside the cluster zone: your server's own upstream (not regionha's to decide)."]
    # Names outside the cluster zone: the server's own VPC resolver, never the root servers.
    return ["    forward only;", f"    forwarders {{ {_forwarders(upstream, addr, port)} }};"]


# The largest max-ncache-ttl BIND 9 accepts (7 days).
MAX_NCACHE_TTL = 604800


def _cache_bounds(record_ttl: int) -> list[str]:
    """Options that keep every cached answer for the record at most its TTL (BIND 9.18 ARM, "Tuning"
    and "Serve stale"): without them a negative answer lives as long as the zone's SOA allows (Route 53:
    900 s, BIND's cap 3 h) and a positive one up to a week if an upstream over-states the TTL."""
    if record_ttl < 0:
        raise ConfigurationError(f"record TTL must be at least 0, not {record_ttl}")
    return [
        f"    // Caches bounded by the record TTL ({record_ttl} s): a failover reaches clients within it.",
        f"    max-cache-ttl {record_ttl};",
        # BIND refuses a max-ncache-ttl above 7 days (named-checkconf: "out of range"); Route 53 TTLs
        # go to 2^31 - 1.
        f"    max-ncache-ttl {min(record_ttl, MAX_NCACHE_TTL)};",
        "    min-cache-ttl 0;",
        "    min-ncache-ttl 0;",
        # A SERVFAIL (every path down for a moment) is retried after at most 1 s (BIND's default).
        f"    servfail-ttl {min(1, record_ttl)};",
        # Serve-stale would answer the old node after the TTL while the forwarder paths are failing.
        "    stale-cache-enable no;",
        "    stale-answer-enable no;",
    ]


def _zone(topology: Topology) -> str:
    return topology.dns.zone_fqdn.rstrip(".")


def render_onprem_conf(
    topology: Topology,
    *,
    addr: AddressMap = str,
    runtime: NamedRuntime = EC2,
    upstream: Iterable[Address] | None = None,
) -> str:
    """named.conf of the on-prem resolver (``topology.client.dns_server``).

    Recursive for the client network and the loopback address only; the cluster zone goes to every
    forwarder path (Resolver endpoint IPs and BIND forwarder IPs), forward only, so that losing one
    path still leaves the other; every cache bounded by the record TTL.

    ``upstream``: where names outside the cluster zone go (forward only). A VPC client site's default
    is its VPC's resolver (base + 2). A real on-prem site (``client.kind: onprem``) has no VPC: its
    server's own upstream is the user's, so without ``upstream`` the render forwards only the cluster
    zone and says so in a comment (``regionha onprem named-conf`` prints it: docs/onprem.md).

    The loopback address is written out instead of BIND's ``localhost`` ACL, which means every
    address of every interface: in the local runtime that is every other instance on loopback.
    """
    server = topology.client.dns_server
    forwarders = [a for path in topology.forwarder_paths for a in path.addresses()]
    if upstream is None:
        upstream = [] if topology.client_vpc is None else [topology.vpc(topology.client_vpc).resolver_ip()]
    conf = _render(
        comment=f"on-prem resolver {server.name} of deployment {topology.deployment}",
        listen=addr(server.ip),
        clients=[_network(topology.client.cidr, addr), "127.0.0.1"],
        zone=_zone(topology),
        zone_forwarders=forwarders,
        default_forwarders=list(upstream),
        addr=addr,
        runtime=runtime,
        record_ttl=topology.dns.record.ttl,
    )
    if topology.client_vpc is None:
        # A real site's server is the user's: regionha renders this stanza for them and never builds it.
        conf = conf.replace(_BUILT_BY, "// Rendered by `regionha onprem named-conf` for your own server: regionha "
                                       "never edits it; re-render after a topology change.", 1)
    return conf


def render_forwarder_conf(
    topology: Topology, path_name: str, *, addr: AddressMap = str, runtime: NamedRuntime = EC2
) -> str:
    """named.conf of a region's BIND forwarder path: answers the client network only, and sends the
    cluster zone to its VPC's resolver (base + 2), which sees the private hosted zone."""
    path = next((p for p in topology.forwarder_paths if p.name == path_name), None)
    if path is None:
        raise ConfigurationError(f"no forwarder path named {path_name!r}")
    if path.kind != "bind":
        raise ConfigurationError(f"forwarder path {path_name!r} is a {path.kind}, not a BIND server")
    resolver = topology.vpc(path.vpc).resolver_ip()
    return _render(
        comment=f"BIND forwarder path {path.name} of deployment {topology.deployment}",
        listen=addr(path.ip),
        clients=[_network(topology.client.cidr, addr)],
        zone=_zone(topology),
        zone_forwarders=[resolver],
        default_forwarders=[resolver],
        addr=addr,
        runtime=runtime,
        record_ttl=topology.dns.record.ttl,
    )


def user_data(conf: str, *, conf_path: str = "/etc/named.conf", install_attempts: int = 10) -> str:
    """User-data (a bash script run by cloud-init) for Amazon Linux 2023: install bind, write the
    config, check it, enable and start named. Raises ConfigurationError above EC2's 16 KB limit."""
    delimiter = "REGIONHA_NAMED_CONF_EOF"
    if delimiter in conf:
        raise ConfigurationError(f"named.conf must not contain the line {delimiter}")
    if install_attempts < 1:
        raise ConfigurationError("install_attempts must be at least 1")
    path = shlex.quote(conf_path)
    script = f"""#!/bin/bash
# regionha: BIND server. Re-running this script converges the same state.
set -euo pipefail

# The package mirror may not be reachable in the first seconds after boot; bounded retries.
for attempt in $(seq 1 {install_attempts}); do
    if dnf install -y bind; then break; fi
    if [ "$attempt" -eq {install_attempts} ]; then echo "dnf install bind failed" >&2; exit 1; fi
    sleep 15
done

install -d -m 0770 -o root -g named /var/named
cat > {path}.regionha <<'{delimiter}'
{conf.rstrip()}
{delimiter}
chown root:named {path}.regionha
chmod 0640 {path}.regionha
named-checkconf {path}.regionha
mv -f {path}.regionha {path}
if command -v restorecon >/dev/null; then restorecon {path} || true; fi

systemctl enable named
systemctl restart named
"""
    size = len(script.encode())
    if size > USER_DATA_LIMIT:
        raise ConfigurationError(f"user-data is {size} bytes, EC2 accepts at most {USER_DATA_LIMIT}")
    return script
