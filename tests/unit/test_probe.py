"""DNS probes against real UDP+TCP servers on loopback with scripted behaviour (tests/dnsfake.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

import regionha
from regionha.errors import ConfigurationError
from regionha.watch import probe as probe_module
from regionha.watch.probe import OUTCOMES, ProbeConfig, ProbeResult, probe, probe_many

# The fake server lives in tests/ so integration tests can use it too; tests/ is not a package.
TESTS_DIR = str(Path(__file__).resolve().parents[1])
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
from dnsfake import (  # noqa: E402
    Action,
    FakeDNSServer,
    answer,
    cname,
    drop,
    late,
    no_answer,
    rcode,
    sequence,
    truncated,
)

NAME = "db.cluster.local."
PRIMARY = "10.1.0.10"
SECONDARY = "10.2.0.10"
# Short enough to keep the suite fast, long enough that loopback replies (well under 10 ms) always fit.
FAST = {"timeout": 0.25, "lifetime": 0.6, "tries": 2}


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A loopback-only stand-in for regionha.netguard that records every destination it was asked about."""
    asked: list[str] = []

    def check(address: str) -> None:
        asked.append(address)
        if not ipaddress.IPv4Address(address).is_loopback:
            raise ConfigurationError(f"test guard: {address} is not loopback")

    monkeypatch.setattr(probe_module, "_check_destination", check)
    return asked


def config(server: FakeDNSServer, **overrides: object) -> ProbeConfig:
    values: dict = {"name": NAME, "server": server.address, "port": server.port, **FAST}
    values.update(overrides)
    return ProbeConfig(**values)


def forged_id() -> Action:
    """A reply whose ID does not match the query: a stray or spoofed datagram."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = answer(SECONDARY)(query, transport)
        reply.id = (query.id + 1) % 65536
        return reply

    return act


def cname_loop() -> Action:
    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(NAME, 60, "IN", "CNAME", "loop.cluster.local."))
        reply.answer.append(dns.rrset.from_text("loop.cluster.local.", 60, "IN", "CNAME", NAME))
        return reply

    return act


@dataclass
class Case:
    id: str
    action: Action
    outcome: str
    rcode: str | None = "NOERROR"
    answers: tuple[str, ...] = ()
    ttl: int | None = None
    tcp: bool = False
    tries: int = 1
    udp_queries: int = 1
    tcp_queries: int = 0
    tcp_listener: bool = True
    overrides: dict = field(default_factory=dict)


CASES = [
    Case("ok", answer(PRIMARY, ttl=30), "ok", answers=(PRIMARY,), ttl=30,
         overrides={"expected": frozenset({PRIMARY})}),
    Case("ok-any-answer-sorted", answer("10.2.0.9", PRIMARY), "ok", answers=(PRIMARY, "10.2.0.9"), ttl=60),
    Case("ok-through-cname", cname("db-a.cluster.local.", PRIMARY, ttl=20), "ok", answers=(PRIMARY,), ttl=20,
         overrides={"expected": frozenset({PRIMARY})}),
    Case("wrong-answer", answer(SECONDARY), "wrong_answer", answers=(SECONDARY,), ttl=60,
         overrides={"expected": frozenset({PRIMARY})}),
    Case("wrong-answer-extra-address", answer(PRIMARY, SECONDARY), "wrong_answer",
         answers=(PRIMARY, SECONDARY), ttl=60, overrides={"expected": frozenset({PRIMARY})}),
    Case("wrong-answer-missing-address", answer(PRIMARY), "wrong_answer", answers=(PRIMARY,), ttl=60,
         overrides={"expected": frozenset({PRIMARY, SECONDARY})}),
    Case("cname-loop-is-servfail", cname_loop(), "servfail"),
    Case("servfail", rcode(dns.rcode.SERVFAIL), "servfail", rcode="SERVFAIL"),
    Case("other-error-rcode-is-servfail", rcode(dns.rcode.NOTIMP), "servfail", rcode="NOTIMP"),
    Case("nxdomain", rcode(dns.rcode.NXDOMAIN), "nxdomain", rcode="NXDOMAIN"),
    Case("refused", rcode(dns.rcode.REFUSED), "refused", rcode="REFUSED"),
    Case("noanswer", no_answer(), "noanswer"),
    Case("noanswer-cname-to-nothing", cname("gone.cluster.local."), "noanswer"),
    Case("truncated-then-tcp", truncated(answer(PRIMARY)), "ok", answers=(PRIMARY,), ttl=60, tcp=True,
         tcp_queries=1, overrides={"expected": frozenset({PRIMARY})}),
    Case("truncated-tcp-answer-checked", truncated(answer(SECONDARY)), "wrong_answer", answers=(SECONDARY,),
         ttl=60, tcp=True, tcp_queries=1, overrides={"expected": frozenset({PRIMARY})}),
    # Documented choice: with nothing listening on TCP the kernel resets the connection at once, so a
    # path broken only for TCP shows as network_error, not as a timeout.
    Case("truncated-no-tcp-listener", truncated(answer(PRIMARY)), "network_error", rcode=None, tcp=True,
         tcp_listener=False),
    Case("truncated-tcp-silent", truncated(drop()), "timeout", rcode=None, tcp=True, tcp_queries=1),
    Case("dropped", drop(), "timeout", rcode=None, tries=2, udp_queries=2),
    Case("dropped-three-tries", drop(), "timeout", rcode=None, tries=3, udp_queries=3,
         overrides={"timeout": 0.1, "lifetime": 0.6, "tries": 3}),
    Case("dropped-then-answer", sequence(drop(), answer(PRIMARY)), "ok", answers=(PRIMARY,), ttl=60, tries=2,
         udp_queries=2, overrides={"expected": frozenset({PRIMARY})}),
    Case("reply-after-timeout-is-a-retry", late(0.4, answer(PRIMARY)), "timeout", rcode=None, tries=2,
         udp_queries=2),
    Case("forged-reply-ignored", forged_id(), "timeout", rcode=None, tries=2, udp_queries=2),
    Case("forged-then-real-reply", sequence(forged_id(), answer(PRIMARY)), "ok", answers=(PRIMARY,), ttl=60,
         tries=2, udp_queries=2),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_outcomes(case: Case, guard: list[str]) -> None:
    with FakeDNSServer(case.action, tcp=case.tcp_listener) as server:
        cfg = config(server, **case.overrides)
        result = probe(cfg, path="onprem-to-tokyo")

    assert (result.outcome, result.rcode, result.answers, result.ttl) == (
        case.outcome,
        case.rcode,
        case.answers,
        case.ttl,
    ), result.error
    assert (result.tcp, result.tries) == (case.tcp, case.tries)
    assert (server.count("udp"), server.count("tcp")) == (case.udp_queries, case.tcp_queries)
    assert {(r.name, r.rdtype) for r in server.received} <= {(NAME, "A")}
    assert result.ok() is (case.outcome == "ok")
    assert (result.error is None) is (case.outcome in ("ok", "nxdomain", "refused", "noanswer")), result.error
    assert result.path == "onprem-to-tokyo" and result.server == "127.0.0.1" and result.port == server.port
    assert 0 < result.latency_ms < cfg.lifetime * 1000 + 500
    assert result.outcome in OUTCOMES
    assert guard == ["127.0.0.1"]
    assert server.errors == []


def test_nothing_listening_is_a_timeout() -> None:
    # An unconnected UDP socket never sees the ICMP port-unreachable, so a dead server looks silent.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probe(ProbeConfig(name=NAME, server="127.0.0.1", port=port, **FAST))
    assert (result.outcome, result.tries, result.tcp) == ("timeout", 2, False)


def test_lifetime_caps_the_tries() -> None:
    with FakeDNSServer(drop()) as server:
        result = probe(config(server, timeout=0.15, lifetime=0.4, tries=10))
    assert result.outcome == "timeout"
    # 0.15 + 0.15 + 0.1 fill the lifetime: far fewer than the 10 tries allowed.
    assert 2 <= result.tries <= 4
    assert server.count("udp") == result.tries


def test_sends_from_the_source_address() -> None:
    # The local runtime sends from the client site's mapped loopback address; any 127.x is local on Linux.
    with FakeDNSServer(answer(PRIMARY)) as server:
        result = probe(config(server, source="127.0.0.2"))
    assert result.ok()
    assert [r.peer[0] for r in server.received] == ["127.0.0.2"]


def test_to_json_is_plain_json() -> None:
    with FakeDNSServer(answer(PRIMARY)) as server:
        result = probe(config(server), path="p")
    data = json.loads(json.dumps(result.to_json()))
    assert data["answers"] == [PRIMARY]
    assert data["outcome"] == "ok" and data["path"] == "p" and data["tcp"] is False
    assert set(data) == set(ProbeResult.__dataclass_fields__)
    assert ProbeResult(**{**data, "answers": tuple(data["answers"])}) == result


# -- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "db.cluster.local"},
        {"name": "."},
        {"name": "a" * 64 + ".cluster.local."},
        {"name": "db..cluster.local."},
        {"timeout": 3.0, "lifetime": 3.0},
        {"timeout": 4.0, "lifetime": 3.0},
        {"timeout": 0, "lifetime": 3.0},
        {"tries": 0},
        {"tries": True},
        {"port": 0},
        {"port": 70000},
        {"port": "53"},
        {"server": "localhost"},
        {"server": "::1"},
        {"source": "not-an-address"},
        {"expected": "10.1.0.10"},
        {"expected": frozenset({"10.1.0.300"})},
    ],
    ids=lambda o: ",".join(f"{k}={v!r}"[:40] for k, v in o.items()),
)
def test_bad_config_raises(overrides: dict) -> None:
    values = {"name": NAME, "server": "127.0.0.1", **overrides}
    with pytest.raises(ConfigurationError):
        ProbeConfig(**values)


def test_config_normalises_addresses() -> None:
    cfg = ProbeConfig(
        name=NAME, server=ipaddress.IPv4Address("127.0.0.1"), expected=[PRIMARY, PRIMARY, SECONDARY]
    )
    assert cfg.server == "127.0.0.1"
    assert cfg.expected == frozenset({PRIMARY, SECONDARY})
    assert (cfg.port, cfg.timeout, cfg.lifetime, cfg.tries, cfg.source) == (53, 1.0, 3.0, 2, None)


# -- the network guard ---------------------------------------------------------------------------------


def refuse_everything(address: str) -> None:
    raise ConfigurationError(f"refused {address}")


def test_guard_refusal_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeDNSServer(answer(PRIMARY)) as server:
        monkeypatch.setattr(probe_module, "_check_destination", refuse_everything)
        with pytest.raises(ConfigurationError):
            probe(config(server))
    assert server.count() == 0


def test_probe_many_checks_every_destination_before_sending(guard: list[str]) -> None:
    with FakeDNSServer(answer(PRIMARY)) as server:
        configs = {
            "good": config(server),
            # Validated as an address, refused by the guard: must stop the whole run before any packet.
            "private": ProbeConfig(name=NAME, server="10.0.0.2"),
        }
        with pytest.raises(ConfigurationError):
            probe_many(configs)
    assert server.count() == 0
    assert guard == ["127.0.0.1", "10.0.0.2"]


def test_guard_fails_closed_without_netguard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real seam, not the autouse stand-in
    # Both needed: an earlier import leaves the module as an attribute of the package too.
    monkeypatch.setitem(sys.modules, "regionha.netguard", None)
    monkeypatch.delattr(regionha, "netguard", raising=False)
    monkeypatch.setattr(dns.query, "udp", _no_packets)
    with pytest.raises(ImportError):
        probe(ProbeConfig(name=NAME, server="127.0.0.1", port=9))


def test_real_guard_refuses_private_address_in_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    netguard = pytest.importorskip("regionha.netguard")
    monkeypatch.undo()
    # Outside local mode the guard lets 10.x through (a Lambda in a VPC must reach it).
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    # Belt and braces for the network safety rule: if the guard let it through, still send nothing.
    monkeypatch.setattr(dns.query, "udp", _no_packets)
    monkeypatch.setattr(dns.query, "tcp", _no_packets)
    with pytest.raises(netguard.UnsafeDestination):
        probe(ProbeConfig(name=NAME, server="10.0.0.2"))


def test_real_guard_lets_loopback_through_in_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    netguard = pytest.importorskip("regionha.netguard")
    monkeypatch.undo()
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    with FakeDNSServer(answer(PRIMARY)) as server:
        assert probe(config(server)).ok()


def _no_packets(*args: object, **kwargs: object) -> None:
    raise AssertionError("a packet was about to be sent")


# -- probe_many ----------------------------------------------------------------------------------------


def test_probe_many_runs_probes_at_the_same_time() -> None:
    # Each server holds its reply until all three have a query. Run one after another, the first
    # probe would time out with the other two not yet asked; only concurrent probes all get answers.
    held = threading.Barrier(3, timeout=2.0)

    def hold_then(then: Action) -> Action:
        def act(query: dns.message.Message, transport: str) -> dns.message.Message | None:
            held.wait()
            return then(query, transport)

        return act

    addresses = ("10.1.0.10", "10.2.0.10", "10.3.0.10")
    with contextlib.ExitStack() as stack:
        servers = {a: stack.enter_context(FakeDNSServer(hold_then(answer(a)))) for a in addresses}
        configs = {
            f"path-{a}": config(s, timeout=1.0, lifetime=2.0, tries=1, expected=frozenset({a}))
            for a, s in servers.items()
        }
        results = probe_many(configs)

    assert list(results) == list(configs)
    assert {p: (r.outcome, r.path, r.answers) for p, r in results.items()} == {
        f"path-{a}": ("ok", f"path-{a}", (a,)) for a in addresses
    }
    assert [s.count("udp") for s in servers.values()] == [1, 1, 1]


def test_probe_many_dropping_servers_each_use_all_tries() -> None:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(FakeDNSServer(drop())) for _ in range(3)]
        results = probe_many({f"p{i}": config(s) for i, s in enumerate(servers)})
    assert [(r.outcome, r.tries) for r in results.values()] == [("timeout", 2)] * 3
    assert [s.count("udp") for s in servers] == [2, 2, 2]


def test_probe_many_of_nothing() -> None:
    assert probe_many({}) == {}
