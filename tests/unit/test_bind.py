"""BIND rendering: named-checkconf on every render, ACL and forwarding facts, real named on loopback."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from regionha import bind
from regionha.errors import ConfigurationError

NAMED = shutil.which("named") or "/usr/sbin/named"
CHECKCONF = shutil.which("named-checkconf")
RNDC_CONFGEN = shutil.which("rndc-confgen") or "/usr/sbin/rndc-confgen"
needs_bind = pytest.mark.skipif(CHECKCONF is None, reason="bind9 (named-checkconf) is not installed")


def to_loopback(a: bind.Address) -> str:
    """The local runtime's address map: 10.a.b.c -> 127.a.b.c."""
    ip = ipaddress.IPv4Address(str(a))
    assert ip in ipaddress.IPv4Network("10.0.0.0/8"), f"not a cloud address: {ip}"
    return str(ipaddress.IPv4Address((127 << 24) | (int(ip) & 0xFFFFFF)))


def local_runtime(base: Path, name: str, port: int, controls_port: int, address: str) -> bind.NamedRuntime:
    home = base / name
    home.mkdir(parents=True, exist_ok=True)
    key_file = home / "rndc.key"
    if not key_file.exists():
        subprocess.run(
            [RNDC_CONFGEN, "-a", "-A", "hmac-sha256", "-k", f"rndc-{name}", "-c", str(key_file)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    return bind.NamedRuntime(
        directory=str(home),
        pid_file=str(home / "named.pid"),
        session_keyfile=str(home / "session.key"),
        port=port,
        upstream_port=port,
        controls=bind.Controls(address=address, port=controls_port, key_name=f"rndc-{name}", key_file=str(key_file)),
    )


def block(conf: str, header: str) -> str:
    """The body of the first `header { ... };` statement (named.conf blocks nest one level here)."""
    start = conf.index(header)
    depth = 0
    for i in range(conf.index("{", start), len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        if depth == 0:
            return conf[conf.index("{", start) + 1 : i]
    raise AssertionError(f"unterminated {header}")


def forwarder_list(text: str) -> list[str]:
    return re.findall(r"([\d.]+) port \d+;", block(text, "forwarders"))


# --- rendered facts ----------------------------------------------------------------------------------


def test_onprem_forwards_the_zone_only_to_every_forwarder_path(topology):
    conf = bind.render_onprem_conf(topology)

    zone = block(conf, 'zone "cluster.local"')
    assert "type forward;" in zone
    assert "forward only;" in zone
    assert forwarder_list(zone) == ["10.0.111.100", "10.0.111.101", "10.1.111.10"]
    assert "listen-on port 53 { 10.2.10.10; };" in conf


def test_onprem_answers_the_client_network_and_loopback_only(topology):
    conf = bind.render_onprem_conf(topology)

    assert "acl clients { 10.2.10.0/24; 127.0.0.1; };" in conf
    options = block(conf, "options")
    for stmt in ("allow-query", "allow-query-cache", "allow-recursion"):
        assert f"{stmt} {{ clients; }};" in options
    # BIND's "localhost" would admit every local address, i.e. every other instance on loopback.
    assert "localhost" not in conf
    assert "any;" not in conf
    assert "dnssec-validation no;" in options
    assert "max-cache-size 64m;" in options


def test_forwarder_sends_the_zone_to_its_vpc_resolver(topology):
    conf = bind.render_forwarder_conf(topology, "osaka-bind")

    zone = block(conf, 'zone "cluster.local"')
    assert "forward only;" in zone
    assert forwarder_list(zone) == ["10.1.0.2"]  # Osaka VPC 10.1.0.0/16, base + 2
    assert "acl clients { 10.2.10.0/24; };" in conf
    assert "listen-on port 53 { 10.1.111.10; };" in conf


@pytest.mark.parametrize("render", ["onprem", "osaka-bind"])
def test_no_server_ever_recurses_from_the_root(topology, render):
    conf = bind.render_onprem_conf(topology) if render == "onprem" else bind.render_forwarder_conf(topology, render)

    options = block(conf, "options")
    assert "forward only;" in options
    assert len(forwarder_list(options)) == 1


def test_local_variant_maps_every_address_and_port(topology, tmp_path):
    runtime = local_runtime(tmp_path, "onprem", 15353, 15354, "127.2.10.10")

    conf = bind.render_onprem_conf(topology, addr=to_loopback, runtime=runtime)

    assert not re.search(r"\b10\.\d+\.\d+\.\d+", conf), "a cloud address leaked into the local render"
    assert "listen-on port 15353 { 127.2.10.10; };" in conf
    assert "acl clients { 127.2.10.0/24; 127.0.0.1; };" in conf
    assert "127.0.111.100 port 15353;" in conf
    assert f'directory "{tmp_path / "onprem"}";' in conf
    assert 'keys { "rndc-onprem"; }' in conf


@pytest.mark.parametrize("render", ["onprem", "osaka-bind"])
def test_every_cache_is_bounded_by_the_record_ttl(topology, render):
    # Route 53's SOA allows 900 s of negative caching and BIND's own cap is 3 h: a record that is
    # briefly missing would stay unresolvable for 15x its TTL (case onprem-ncache-outlives-record).
    t = topology.model_copy(update={"dns": topology.dns.model_copy(
        update={"record": topology.dns.record.model_copy(update={"ttl": 45})})})
    conf = bind.render_onprem_conf(t) if render == "onprem" else bind.render_forwarder_conf(t, render)

    options = block(conf, "options")
    for stmt in ("max-cache-ttl 45;", "max-ncache-ttl 45;", "servfail-ttl 1;",
                 "stale-cache-enable no;", "stale-answer-enable no;", "min-cache-ttl 0;", "min-ncache-ttl 0;"):
        assert stmt in options, stmt


def test_forwarder_conf_refuses_a_resolver_endpoint_path(topology):
    with pytest.raises(ConfigurationError, match="not a BIND server"):
        bind.render_forwarder_conf(topology, "tokyo-resolver")
    with pytest.raises(ConfigurationError, match="no forwarder path"):
        bind.render_forwarder_conf(topology, "nowhere")


# --- named-checkconf ---------------------------------------------------------------------------------


def renders(topology, tmp_path: Path) -> list[tuple[str, str]]:
    """(label, conf) of every BIND server of the topology, EC2 and local variants."""
    out = []
    for server in topology.bind_servers():
        name = server.name
        for variant in ("ec2", "local"):
            kw = {}
            if variant == "local":
                kw = {
                    "addr": to_loopback,
                    "runtime": local_runtime(tmp_path, name, 15353, 15354, to_loopback(server.ip)),
                }
            if name == topology.client.dns_server.name:
                conf = bind.render_onprem_conf(topology, **kw)
            else:
                conf = bind.render_forwarder_conf(topology, name, **kw)
            out.append((f"{name}-{variant}", conf))
    return out


@needs_bind
# Any TTL Route 53 accepts: BIND caps max-ncache-ttl at 7 days, so a longer record TTL once made every
# render one that named refuses to start with (the forwarder path's server dead at first boot).
@pytest.mark.parametrize("ttl", [None, 0, 604801, 2147483647])
def test_named_checkconf_accepts_every_render(topology, tmp_path, ttl):
    if ttl is not None:
        topology = topology.model_copy(update={"dns": topology.dns.model_copy(
            update={"record": topology.dns.record.model_copy(update={"ttl": ttl})})})
    # The EC2 paths (/var/named, /run/named) do not exist here: check those inside a chroot that has them.
    root = tmp_path / "root"
    for d in ("var/named", "run/named"):
        (root / d).mkdir(parents=True)
    results = renders(topology, tmp_path)
    assert len(results) == 4
    for label, conf in results:
        if label.endswith("-ec2"):
            (root / "named.conf").write_text(conf)
            cmd = [CHECKCONF, "-t", str(root), "/named.conf"]
        else:
            path = tmp_path / f"{label}.conf"
            path.write_text(conf)
            cmd = [CHECKCONF, str(path)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, f"{label}: {result.stdout}{result.stderr}"


@needs_bind
def test_named_checkconf_catches_a_broken_render(topology, tmp_path):
    # Guards the test above: a checkconf run that cannot fail would prove nothing.
    runtime = local_runtime(tmp_path, "osaka", 15353, 15354, "127.1.111.10")
    conf = bind.render_forwarder_conf(topology, "osaka-bind", addr=to_loopback, runtime=runtime)
    good, broken = tmp_path / "good.conf", tmp_path / "broken.conf"
    good.write_text(conf)
    broken.write_text(conf.replace("forward only;", "forward always;", 1))
    assert subprocess.run([CHECKCONF, str(good)], capture_output=True, timeout=10).returncode == 0
    result = subprocess.run([CHECKCONF, str(broken)], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0
    assert "always" in result.stdout + result.stderr


# --- user-data ----------------------------------------------------------------------------------------


def test_user_data_installs_writes_and_starts_named(topology):
    conf = bind.render_forwarder_conf(topology, "osaka-bind")

    script = bind.user_data(conf)

    assert script.startswith("#!/bin/bash\n")
    assert "dnf install -y bind" in script
    assert conf.rstrip() in script
    assert "named-checkconf /etc/named.conf.regionha" in script
    assert "mv -f /etc/named.conf.regionha /etc/named.conf" in script
    assert "systemctl enable named" in script
    assert len(script.encode()) < bind.USER_DATA_LIMIT
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert syntax.returncode == 0, syntax.stderr


def test_user_data_refuses_what_ec2_would_refuse(topology):
    with pytest.raises(ConfigurationError, match="16384"):
        bind.user_data("// " + "x" * bind.USER_DATA_LIMIT)
    with pytest.raises(ConfigurationError, match="must not contain"):
        bind.user_data("REGIONHA_NAMED_CONF_EOF\n")


# --- real named on loopback ---------------------------------------------------------------------------


# A private hosted zone's SOA as Route 53 creates it: TTL 900, negative-caching field 86400.
R53_SOA = "ns-1536.awsdns-00.co.uk. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def loopback_addresses(addresses: list[str]) -> Iterator[None]:
    """named listens only on addresses that exist on an interface; add them to lo, and remove them after."""
    present = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    added = []
    try:
        for a in addresses:
            if f" {a}/" not in present:
                subprocess.run(["ip", "addr", "add", f"{a}/32", "dev", "lo"], check=True, timeout=10)
                added.append(a)
        yield
    finally:
        for a in added:
            subprocess.run(["ip", "addr", "del", f"{a}/32", "dev", "lo"], timeout=10)


class FakeVpcResolver(socketserver.ThreadingUDPServer):
    """Stands in for a VPC's resolver: answers one A record, NXDOMAIN otherwise; remembers who asked."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], name: str, ip: str):
        self.name, self.ip, self.sources = name, ip, []
        self.missing = False  # answer the name NXDOMAIN with Route 53's SOA, as while the record is absent
        super().__init__(address, _FakeHandler)


class _FakeHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        server: FakeVpcResolver = self.server  # type: ignore[assignment]
        query = dns.message.from_wire(data)
        server.sources.append(self.client_address[0])
        response = dns.message.make_response(query)
        q = query.question[0]
        if server.missing:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text("cluster.local.", 900, "IN", "SOA", R53_SOA))
        elif q.name.to_text().lower() == server.name and q.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(server.name, 60, "IN", "A", server.ip))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), self.client_address)


@contextmanager
def named(conf: str, path: Path) -> Iterator[subprocess.Popen]:
    path.write_text(conf)
    # -4: nothing in these configs needs IPv6; one less way for a packet to leave loopback.
    proc = subprocess.Popen([NAMED, "-g", "-4", "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ask(server: str, port: int, source: str, name: str = "sample.cluster.local.", timeout: float = 2.0):
    q = dns.message.make_query(name, dns.rdatatype.A)
    return dns.query.udp(q, server, port=port, source=source, timeout=timeout)


def wait_answering(server: str, port: int, source: str, procs: list[subprocess.Popen], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"named exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        try:
            ask(server, port, source, timeout=0.3)
            return
        except dns.exception.Timeout:
            continue
    raise AssertionError(f"{server}#{port} did not answer within {limit} s")


@dataclass
class Chain:
    """The on-prem resolver and the Osaka forwarder running as real named, the Osaka VPC resolver faked."""

    onprem: str
    osaka: str
    port: int
    fake: FakeVpcResolver


@contextmanager
def named_chain(topology, tmp_path: Path, client: str, *, missing: bool = False) -> Iterator[Chain]:
    port = free_port()
    onprem = to_loopback(topology.client.dns_server.ip)  # 127.2.10.10
    osaka = to_loopback(topology.forwarder_paths[1].ip)  # 127.1.111.10
    vpc_resolver = to_loopback(topology.vpc("osaka").resolver_ip())  # 127.1.0.2
    onprem_conf = bind.render_onprem_conf(
        topology, addr=to_loopback, runtime=local_runtime(tmp_path, "onprem", port, free_port(), onprem)
    )
    osaka_conf = bind.render_forwarder_conf(
        topology,
        "osaka-bind",
        addr=to_loopback,
        runtime=local_runtime(tmp_path, "osaka", port, free_port(), osaka),
    )
    fake = FakeVpcResolver((vpc_resolver, port), "sample.cluster.local.", "10.1.110.10")
    fake.missing = missing
    threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with (
            loopback_addresses([onprem, osaka]),
            named(osaka_conf, tmp_path / "osaka.conf") as p1,
            named(onprem_conf, tmp_path / "onprem.conf") as p2,
        ):
            wait_answering(osaka, port, client, [p1, p2])
            wait_answering(onprem, port, client, [p1, p2])
            yield Chain(onprem, osaka, port, fake)
    finally:
        fake.shutdown()
        fake.server_close()


needs_root_named = pytest.mark.skipif(not os.path.exists(NAMED) or os.geteuid() != 0, reason="needs root and named")


@pytest.mark.integration
@needs_root_named
def test_real_named_chain_answers_clients_and_refuses_others(topology, tmp_path):
    # GIVEN the on-prem resolver and the Osaka forwarder from local renders, the Osaka VPC resolver
    # faked, and the Tokyo Resolver endpoint absent (that path is down)
    client, stranger = "127.2.10.50", "127.9.9.9"  # inside / outside the client network
    with named_chain(topology, tmp_path, client) as c:
        # WHEN a client of the client network asks the on-prem resolver
        answer = ask(c.onprem, c.port, client, timeout=8.0)
        # THEN the name resolves through the Osaka path alone
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.address for rr in answer.answer for r in rr] == ["10.1.110.10"]
        # and the Osaka forwarder asked its VPC resolver from its own address
        assert set(c.fake.sources) == {c.osaka}

        # WHEN someone outside the client network asks either server THEN it is refused
        assert ask(c.onprem, c.port, stranger).rcode() == dns.rcode.REFUSED
        assert ask(c.osaka, c.port, stranger).rcode() == dns.rcode.REFUSED
        # while the forwarder answers the client network directly
        assert ask(c.osaka, c.port, client).rcode() == dns.rcode.NOERROR


@pytest.mark.integration
@needs_root_named
def test_real_named_chain_forgets_a_missing_record_within_its_ttl(topology, tmp_path):
    # GIVEN the chain rendered for a record TTL of 2 s, and the Osaka VPC resolver answering NXDOMAIN
    # with Route 53's SOA (900 s) while the record is absent
    ttl = 2
    t = topology.model_copy(update={"dns": topology.dns.model_copy(
        update={"record": topology.dns.record.model_copy(update={"ttl": ttl})})})
    client = "127.2.10.50"
    with named_chain(t, tmp_path, client, missing=True) as c:
        absent = ask(c.onprem, c.port, client, timeout=8.0)
        assert absent.rcode() == dns.rcode.NXDOMAIN
        # THEN both servers keep the negative answer at most the record TTL, not the SOA's 900 s
        assert [rr.ttl for rr in absent.authority] and all(rr.ttl <= ttl for rr in absent.authority)

        # WHEN the record exists again THEN the chain answers it once the TTL has run out
        c.fake.missing = False
        time.sleep(ttl + 1)
        answer = ask(c.onprem, c.port, client, timeout=8.0)
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.address for rr in answer.answer for r in rr] == ["10.1.110.10"]
