"""Silent-drop cuts on lo, for real (root): datagrams vanish, TCP connects time out, nothing refuses.

Only loopback addresses are used (127.0.111.199 stands in for a Tokyo inbound endpoint address,
127.2.10.199 for the on-prem DNS server). The tests register in the shared state directory
like any runtime, so they coexist with a runtime running on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionha.local.host import network
from regionha.local.host.network import Flow, LocalNetwork

pytestmark = pytest.mark.integration

# Next to the images of the reference addresses, not on them: a BIND test running at the same time may
# own 127.0.111.100 and 127.2.10.10.
SERVER = "127.0.111.199"
CLIENT = "127.2.10.199"
OTHER_CLIENT = "127.2.11.199"  # outside the blocked source network
PORT = 45353
SILENCE = 0.5  # how long a cut path is listened to; a dropped packet never comes, however long we wait
ANSWER = 5.0  # how long a working path may take on a busy machine


def lo_state() -> tuple[str, str, str]:
    return (
        subprocess.run(["ip", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout,
        subprocess.run(["tc", "filter", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout,
        subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout,
    )


class EchoServers:
    """UDP echo and TCP echo on one address and port, in daemon threads that poll a stop flag."""

    def __init__(self, host: str, port: int):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, port))
        self.tcp.listen(16)
        for s in (self.udp, self.tcp):
            s.settimeout(0.1)
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._udp_loop, self._tcp_loop)]
        for t in self._threads:
            t.start()

    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(512)
            except TimeoutError:
                continue
            self.received.append(data)
            self.udp.sendto(data, peer)

    def _tcp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.sendall(conn.recv(512))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()


def udp_echo(src: str, payload: bytes, timeout: float = ANSWER) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.sendto(payload, (SERVER, PORT))
        return s.recv(512)


def tcp_echo(src: str, payload: bytes, timeout: float = ANSWER) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.connect((SERVER, PORT))
        s.sendall(payload)
        return s.recv(512)


@pytest.fixture
def state_dir() -> Path:
    return network.STATE_DIR


@pytest.fixture
def net(state_dir: Path) -> Iterator[LocalNetwork]:
    before = lo_state()
    n = LocalNetwork(state_dir)
    yield n
    n.close()
    assert SERVER not in lo_state()[0]
    if "7268:" not in before[2] and not list(state_dir.glob("*.json")):
        assert "7268:" not in lo_state()[2]


def test_a_cut_is_a_silent_drop_and_lifting_it_restores_the_path(net: LocalNetwork) -> None:
    for ip in (SERVER, CLIENT, OTHER_CLIENT):
        assert net.add_address(ip) is True
    servers = EchoServers(SERVER, PORT)
    try:
        # GIVEN a working path
        assert udp_echo(CLIENT, b"before") == b"before"
        assert tcp_echo(CLIENT, b"before") == b"before"

        # WHEN DNS-like traffic from 127.2.10.0/24 to the server is cut, UDP and TCP separately
        applied = net.set_blocked(
            {Flow(f"{CLIENT}/24", SERVER, "udp", PORT), Flow(f"{CLIENT}/24", SERVER, "tcp", PORT)}
        )
        assert len(applied["added"]) == 2

        # THEN the datagram never arrives (a timeout, not ConnectionRefused) and TCP never connects
        seen = len(servers.received)
        with pytest.raises(TimeoutError):
            udp_echo(CLIENT, b"cut", SILENCE)
        assert len(servers.received) == seen
        with pytest.raises(TimeoutError):
            tcp_echo(CLIENT, b"cut", SILENCE)
        # ... while a source outside the cut network still gets through
        assert udp_echo(OTHER_CLIENT, b"other") == b"other"
        assert tcp_echo(OTHER_CLIENT, b"other") == b"other"

        # Re-applying the same set changes nothing; cutting UDP only lifts the TCP cut.
        assert net.set_blocked(net.blocked) == {"added": [], "lifted": []}
        applied = net.set_blocked({Flow(f"{CLIENT}/24", SERVER, "udp", PORT)})
        assert applied == {"added": [], "lifted": [f"tcp 127.2.10.0/24 -> {SERVER}:{PORT}"]}
        assert tcp_echo(CLIENT, b"tcp back") == b"tcp back"
        with pytest.raises(TimeoutError):
            udp_echo(CLIENT, b"still cut", SILENCE)

        # WHEN every cut is lifted THEN the path works again
        net.set_blocked(set())
        assert udp_echo(CLIENT, b"after") == b"after"
        assert tcp_echo(CLIENT, b"after") == b"after"
    finally:
        servers.close()


def test_close_leaves_no_address_and_no_filter_behind(state_dir: Path) -> None:
    net = LocalNetwork(state_dir)
    net.add_address(SERVER)
    net.set_blocked({Flow("127.2.10.0/24", SERVER, "any", PORT), Flow("127.2.10.0/24", SERVER)})
    addr, filters, qdiscs = lo_state()
    assert f"{SERVER}/32" in addr and "lo:rha" in addr
    assert "flowid 7268:1" in filters and "htb 7268:" in qdiscs
    ours = set(net._prefs())
    assert len(ours) == 3  # "any" with a port is one filter each for UDP and TCP
    assert ours <= network.filter_prefs()

    net.close()
    net.close()  # idempotent
    addr, filters, qdiscs = lo_state()
    assert SERVER not in addr
    assert not ours & network.filter_prefs()
    assert not any(f"pref {p} " in filters for p in ours)
    if not list(state_dir.glob("*.json")):  # no other runtime on this machine: lo is back to default
        assert "lo:rha" not in addr and "7268:" not in filters + qdiscs
    assert net._state_file not in list(state_dir.glob("*.json"))


def test_an_address_that_was_already_there_is_not_ours_to_remove(net: LocalNetwork) -> None:
    assert net.add_address("127.0.0.1") is False
    net.close()
    assert "127.0.0.1/8" in lo_state()[0]


def test_cleanup_stale_removes_what_a_dead_owner_left(state_dir: Path) -> None:
    # GIVEN an owner process that made an address and a cut and was then killed without closing
    script = (
        "import os, sys\n"
        "from regionha.local.host.network import Flow, LocalNetwork\n"
        f"n = LocalNetwork({str(state_dir)!r})\n"
        f"n.add_address({SERVER!r})\n"
        f"n.set_blocked({{Flow('127.2.10.0/24', {SERVER!r}, 'udp', {PORT})}})\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    left = [json.loads(p.read_text()) for p in state_dir.glob("*.json")]
    assert [SERVER] in [s["addresses"] for s in left]
    assert SERVER in lo_state()[0]

    # WHEN the stale state is cleaned up
    removed = network.cleanup_stale(state_dir)

    # THEN its address and filter are gone
    assert SERVER in removed["addresses"] and removed["filters"] >= 1
    assert SERVER not in lo_state()[0]
    assert [SERVER] not in [json.loads(p.read_text())["addresses"] for p in state_dir.glob("*.json")]


def test_two_owners_share_lo_without_stepping_on_each_other(state_dir: Path) -> None:
    with LocalNetwork(state_dir) as a, LocalNetwork(state_dir) as b:
        a.add_address(SERVER)
        servers = EchoServers(SERVER, PORT)
        try:
            a.set_blocked({Flow("127.2.10.0/24", SERVER, "udp", PORT)})
            b.set_blocked({Flow("127.2.11.0/24", SERVER, "udp", PORT)})
            assert not set(a._prefs()) & set(b._prefs())
            a.close()  # b's cut must survive a's departure
            with pytest.raises(TimeoutError):
                udp_echo(OTHER_CLIENT, b"b still cuts", SILENCE)
            assert udp_echo(CLIENT, b"a lifted") == b"a lifted"
        finally:
            servers.close()
