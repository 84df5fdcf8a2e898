"""Real BIND processes of the local runtime, forwarding to the local VPC resolver (moto in-process).

The chain is the Osaka path of the reference deployment, mapped to loopback:
on-prem named (127.2.10.10) -> BIND forwarder osaka-bind (127.1.111.10) -> Osaka VPC resolver
(127.1.0.2, a ``VpcResolver`` in this test process) -> the private zone in moto.

Ports: one high port for every server, not 53. ``regionha.bind`` gives all forwarders of a config one
upstream port, so the servers must share a number; 53 on these addresses is what the local runtime
itself uses, so a test run beside it (or beside another engineer's run) would clash or, worse, query
the other run's servers. The port is picked free on every address, below the ephemeral range that
named and dnspython draw their query source ports from.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import boto3
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from regionha.bind import render_forwarder_conf, render_onprem_conf
from regionha.errors import ConfigurationError
from regionha.local.aws.vpcdns import VpcResolver
from regionha.local.host.named import NamedProcess, NamedStartError, local_runtime
from regionha.netguard import to_local

pytestmark = pytest.mark.integration

OSAKA = "ap-northeast-3"
RESOLVER = "127.1.0.2"  # Osaka VPC base+2
FORWARDER = "127.1.111.10"  # osaka-bind
ONPREM = "127.2.10.10"  # onprem-dns
NAME = "sample.cluster.local."
WAIT = 20.0  # bound of every poll below; the record TTL is 2 s


def _lo_addresses() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@pytest.fixture
def lo_address() -> Iterator[Callable[[str], None]]:
    """Put 127.x addresses on lo for the test; remove those it added (not ones that were there)."""
    added: list[str] = []

    def add(ip: str) -> None:
        if ip in _lo_addresses():
            return
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True, timeout=10)
        added.append(ip)

    yield add
    for ip in added:
        subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], check=False, timeout=10)


def _port_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _free_port(hosts: list[str]) -> int:
    """A port P with P (DNS) and P+1 (rndc) free for UDP and TCP on every host."""
    for _ in range(100):
        port = random.randrange(20000, 32000, 2)
        if all(_port_free(h, p) for h in hosts for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair found")


def _a(server: str, port: int, name: str = NAME) -> tuple[int, list[str]]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, server, port=port, timeout=2.0, source="127.0.0.1")
    addresses = sorted(rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)
    return reply.rcode(), addresses


def _poll_a(server: str, port: int, want: list[str]) -> list[str]:
    """Ask until the answer is ``want`` or WAIT has passed; the last answer seen."""
    deadline = time.monotonic() + WAIT
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            _, seen = _a(server, port)
        except dns.exception.Timeout:
            seen = []
        if seen == want:
            break
        time.sleep(0.2)
    return seen


def _upsert(route53, zone_id: str, address: str) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": NAME, "Type": "A", "TTL": 2, "ResourceRecords": [{"Value": address}]}}]},
    )


def _processes_running(argument: str) -> list[int]:
    """The pids of processes with ``argument`` on their command line."""
    pids = []
    for proc in os.scandir("/proc"):
        if proc.name.isdigit():
            try:
                with open(f"/proc/{proc.name}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")
            except OSError:
                continue
            if argument.encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_onprem_named_resolves_through_the_forwarder_and_sees_an_upsert(moto_aws, topology, lo_address) -> None:
    # GIVEN the Osaka VPC with the private zone, its resolver, and the two named of the Osaka path
    ec2 = boto3.client("ec2", region_name=OSAKA)
    route53 = boto3.client("route53", region_name="us-east-1")
    vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    zone_id = route53.create_hosted_zone(
        Name="cluster.local", CallerReference="named-test", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": OSAKA, "VPCId": vpc_id},
    )["HostedZone"]["Id"]
    _upsert(route53, zone_id, "10.0.110.10")
    lo_address(FORWARDER)
    lo_address(ONPREM)
    port = _free_port([RESOLVER, FORWARDER, ONPREM])

    resolver = VpcResolver(OSAKA, lambda: vpc_id, route53, [(RESOLVER, port)], name="osaka")
    forwarder = NamedProcess(
        "osaka-bind",
        lambda f: render_forwarder_conf(topology, "osaka-bind", addr=to_local, runtime=local_runtime(
            f, port=port, upstream_port=port, controls=(FORWARDER, port + 1))),
        (FORWARDER, port),
    )
    onprem = NamedProcess(
        "onprem-dns",
        lambda f: render_onprem_conf(topology, addr=to_local, runtime=local_runtime(
            f, port=port, upstream_port=port, controls=(ONPREM, port + 1))),
        (ONPREM, port),
    )
    with resolver, forwarder, onprem:
        pids = [forwarder.pid, onprem.pid]
        directories = [forwarder.files.directory, onprem.files.directory]

        # WHEN the client asks the on-prem server
        first = _poll_a(ONPREM, port, ["10.0.110.10"])
        # AND the record moves to the other node
        _upsert(route53, zone_id, "10.1.110.10")
        second = _poll_a(ONPREM, port, ["10.1.110.10"])
        logs = onprem.log_tail() + forwarder.log_tail()

    # THEN both answers came through the chain, and nothing is left running or on disk
    assert first == ["10.0.110.10"], logs
    assert second == ["10.1.110.10"], logs
    assert [_alive(pid) for pid in pids] == [False, False]
    assert [d.exists() for d in directories] == [False, False]
    assert not resolver.running


def test_the_resolver_answers_named_with_nxdomain_inside_the_zone(moto_aws, topology, lo_address) -> None:
    ec2 = boto3.client("ec2", region_name=OSAKA)
    route53 = boto3.client("route53", region_name="us-east-1")
    vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    route53.create_hosted_zone(
        Name="cluster.local", CallerReference="named-nx", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": OSAKA, "VPCId": vpc_id},
    )
    lo_address(FORWARDER)
    port = _free_port([RESOLVER, FORWARDER])
    resolver = VpcResolver(OSAKA, lambda: vpc_id, route53, [(RESOLVER, port)])
    forwarder = NamedProcess(
        "osaka-bind-nx",
        lambda f: render_forwarder_conf(topology, "osaka-bind", addr=to_local,
                                        runtime=local_runtime(f, port=port, upstream_port=port)),
        (FORWARDER, port),
    )
    with resolver, forwarder:
        # The forwarder answers the client network only; a query from 127.2.10.x is one from there.
        query = dns.message.make_query("missing.cluster.local.", "A")
        reply = dns.query.udp(query, FORWARDER, port=port, timeout=3.0, source="127.2.10.77")

    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_a_bad_config_is_refused_with_named_checkconfs_message() -> None:
    directories = []

    def conf(f):
        directories.append(f.directory)
        return f'options {{ directory "{f.directory}"; bogus-option yes; }};\n'

    named = NamedProcess("bad", conf, ("127.0.0.1", 1))

    with pytest.raises(ConfigurationError, match="unknown option 'bogus-option'"):
        named.start()

    assert named.pid is None
    assert [d.exists() for d in directories] == [False]  # the temporary directory went with it


@pytest.mark.parametrize(
    ("options", "zones", "complaint"),
    [
        ("recursion yes;", "", "forward only"),
        ("recursion yes; forward only; forwarders { 127.1.0.2; };",
         'zone "x" { type forward; forward first; forwarders { 127.1.0.2; }; };', "forward first"),
        ("recursion yes; forward only; forwarders { 10.1.0.2; };", "", "10.1.0.2"),
        ("recursion no;", 'zone "x" { type secondary; file "x.db"; primaries { 192.0.2.1; }; };', "192.0.2.1"),
    ],
)
def test_a_config_that_could_leave_the_machine_is_refused(options: str, zones: str, complaint: str) -> None:
    def conf(f):
        return f'options {{ directory "{f.directory}"; pid-file "{f.pid_file}"; {options} }};\n{zones}\n'

    named = NamedProcess("unsafe", conf, ("127.0.0.1", 1))

    with pytest.raises(ConfigurationError, match=complaint):
        named.start()

    assert named.pid is None
    named.stop()


def test_named_that_never_answers_is_stopped_and_reported(tmp_path) -> None:
    # 127.3.3.3 is not on an interface, so named starts but never listens there.
    def conf(f):
        return (f'options {{ directory "{f.directory}"; pid-file "{f.pid_file}"; '
                f'session-keyfile "{f.session_keyfile}"; listen-on port 25353 {{ 127.3.3.3; }}; '
                "listen-on-v6 { none; }; recursion no; max-cache-size 64m; };\n")

    named = NamedProcess("silent", conf, ("127.3.3.3", 25353), directory=tmp_path, ready_timeout=1.0)

    with pytest.raises(NamedStartError, match="did not answer"):
        named.start()

    assert _processes_running(str(named.files.conf)) == []
    assert not named.running
    assert "running" in (tmp_path / "named.log").read_text()  # a given directory is kept, with named's log


def test_reload_applies_a_new_config() -> None:
    port = _free_port(["127.0.0.1"])

    def conf(version: str):
        return lambda f: (
            f'options {{ directory "{f.directory}"; pid-file "{f.pid_file}"; '
            f'session-keyfile "{f.session_keyfile}"; listen-on port {port} {{ 127.0.0.1; }}; '
            f'listen-on-v6 {{ none; }}; recursion no; max-cache-size 64m; version "{version}"; }};\n'
        )

    def version() -> str:
        query = dns.message.make_query("version.bind.", "TXT", "CH")
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2.0)
        return b"".join(reply.answer[0][0].strings).decode() if reply.answer else ""

    with NamedProcess("reload", conf("one"), ("127.0.0.1", port)) as named:
        before = version()
        named.reload(conf("two"))
        deadline = time.monotonic() + WAIT
        after = version()
        while after != "two" and time.monotonic() < deadline:
            time.sleep(0.05)
            after = version()

    assert (before, after) == ("one", "two")
