"""A scripted DNS server for tests: real UDP and TCP sockets on one loopback port.

Modelled on dnspython's ``tests/nanonameserver.py`` and blackbox_exporter's ``startDNSServer``: a test
decides, query by query, what the server does (answer, an error rcode, truncate, stay silent, answer
late) and afterwards reads what the server received, per transport, to check retries and TCP fallback.

    with FakeDNSServer(sequence(drop(), answer("10.1.0.10"))) as server:
        ...  # query 127.0.0.1:server.port
        assert server.count("udp") == 2

Only loopback addresses are accepted (our network safety rule). Any 127.x address works on Linux
without configuring an interface, so a test can stand up several servers on distinct addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

UDP = "udp"
TCP = "tcp"


@dataclass(frozen=True)
class Received:
    """One query as the server saw it."""

    transport: str
    peer: tuple[str, int]
    name: str
    rdtype: str


@dataclass(frozen=True)
class Delayed:
    """A reply to send only after ``seconds``, without holding up other queries."""

    reply: dns.message.Message | None
    seconds: float


# An action gets the parsed query and the transport and returns the reply, None to stay silent,
# or a Delayed reply.
Action = Callable[[dns.message.Message, str], "dns.message.Message | Delayed | None"]


def answer(*addresses: str, ttl: int = 60) -> Action:
    """NOERROR with one A rrset holding ``addresses`` (no addresses: NOERROR with an empty answer)."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        question = query.question[0]
        if addresses and question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", "A", list(addresses)))
        return reply

    return act


def cname(target: str, *addresses: str, ttl: int = 60) -> Action:
    """NOERROR with the asked name a CNAME to ``target``, and ``target``'s A rrset in the same answer."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        question = query.question[0]
        target_name = dns.name.from_text(target)
        reply.answer.append(dns.rrset.from_text(question.name, ttl, "IN", "CNAME", target_name.to_text()))
        if addresses:
            reply.answer.append(dns.rrset.from_text_list(target_name, ttl, "IN", "A", list(addresses)))
        return reply

    return act


def no_answer(soa_ttl: int = 30) -> Action:
    """NOERROR, nothing in the answer, an SOA in the authority section (a name with no A record)."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.authority.append(_soa(query, soa_ttl))
        return reply

    return act


def rcode(code: dns.rcode.Rcode) -> Action:
    """An empty reply with ``code`` (SERVFAIL, NXDOMAIN, REFUSED, ...)."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.set_rcode(code)
        if code == dns.rcode.NXDOMAIN:
            reply.authority.append(_soa(query, 30))
        return reply

    return act


def drop() -> Action:
    """Stay silent, like a path whose packets are lost."""

    def act(query: dns.message.Message, transport: str) -> None:
        return None

    return act


def truncated(then: Action) -> Action:
    """Over UDP an empty reply with TC set (as BIND sends when the answer does not fit); over TCP ``then``."""

    def act(query: dns.message.Message, transport: str) -> dns.message.Message | Delayed | None:
        if transport == TCP:
            return then(query, transport)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        return reply

    return act


def late(seconds: float, then: Action) -> Action:
    """``then``'s reply, sent ``seconds`` after the query arrived."""

    def act(query: dns.message.Message, transport: str) -> Delayed:
        reply = then(query, transport)
        if isinstance(reply, Delayed):
            return Delayed(reply.reply, reply.seconds + seconds)
        return Delayed(reply, seconds)

    return act


def sequence(*actions: Action) -> Action:
    """The n-th query (any transport) gets the n-th action; the last action repeats."""
    if not actions:
        raise ValueError("sequence needs at least one action")
    lock = threading.Lock()
    index = 0

    def act(query: dns.message.Message, transport: str) -> dns.message.Message | Delayed | None:
        nonlocal index
        with lock:
            chosen = actions[min(index, len(actions) - 1)]
            index += 1
        return chosen(query, transport)

    return act


def _soa(query: dns.message.Message, ttl: int) -> dns.rrset.RRset:
    zone = query.question[0].name.parent() if len(query.question[0].name) > 1 else dns.name.root
    return dns.rrset.from_text(zone, ttl, "IN", "SOA", f"ns.{zone} hostmaster.{zone} 1 60 30 600 {ttl}")


class FakeDNSServer:
    """UDP and TCP listeners on the same loopback port, answering with ``action``.

    ``tcp=False`` leaves TCP closed: a connection attempt is reset at once, which is how a path where
    only TCP is broken looks from the client. An action that raises sends nothing; the exception is
    kept in ``errors`` so the test can look at it.
    """

    def __init__(self, action: Action, address: str = "127.0.0.1", *, tcp: bool = True) -> None:
        if not ipaddress.IPv4Address(address).is_loopback:
            raise ValueError(f"the fake DNS server only listens on loopback, not {address}")
        self.action = action
        self.address = address
        self.port = 0
        self.errors: list[BaseException] = []
        self._want_tcp = tcp
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> FakeDNSServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._bind()
        self._spawn(self._serve_udp)
        if self._tcp is not None:
            self._spawn(self._serve_tcp)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    def _bind(self) -> None:
        # Port 0 picks a free UDP port; the same number may be taken for TCP, so try a few.
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.address, 0))
            port = udp.getsockname()[1]
            tcp = None
            if self._want_tcp:
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    tcp.bind((self.address, port))
                except OSError:
                    tcp.close()
                    udp.close()
                    continue
                tcp.listen(16)
                tcp.settimeout(0.05)
            udp.settimeout(0.05)
            self._udp = udp
            self._tcp = tcp
            self.port = port
            return
        raise OSError("could not find a port free for both UDP and TCP")

    def _spawn(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    # -- what was received ---------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def count(self, transport: str | None = None) -> int:
        """Queries received over ``transport`` (``"udp"``/``"tcp"``), or over both."""
        return sum(1 for r in self.received if transport is None or r.transport == transport)

    def _record(self, query: dns.message.Message, transport: str, peer: tuple[str, int]) -> None:
        question = query.question[0] if query.question else None
        with self._lock:
            self._received.append(
                Received(
                    transport=transport,
                    peer=(peer[0], peer[1]),
                    name=question.name.to_text() if question is not None else "",
                    rdtype=dns.rdatatype.to_text(question.rdtype) if question is not None else "",
                )
            )

    # -- serving -------------------------------------------------------------------------------

    def _respond(
        self, wire: bytes, transport: str, peer: tuple[str, int], send: Callable[[bytes], None]
    ) -> None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return  # not DNS: a real server ignores it too
        self._record(query, transport, peer)
        try:
            reply = self.action(query, transport)
        except Exception as e:
            with self._lock:
                self.errors.append(e)
            return
        delay = 0.0
        if isinstance(reply, Delayed):
            reply, delay = reply.reply, reply.seconds
        if reply is None:
            return
        data = reply.to_wire()
        if delay > 0:
            timer = threading.Timer(delay, self._send_quietly, args=(send, data))
            timer.daemon = True
            timer.start()
        else:
            self._send_quietly(send, data)

    @staticmethod
    def _send_quietly(send: Callable[[bytes], None], data: bytes) -> None:
        # The client may have given up and closed; there is nobody left to tell.
        with contextlib.suppress(OSError):
            send(data)

    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            # One thread per query so that a held or slow reply never delays the next query.
            self._spawn_quiet(self._respond, wire, UDP, peer, lambda data, peer=peer: sock.sendto(data, peer))

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                conn, peer = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn_quiet(self._serve_connection, conn, peer)

    def _spawn_quiet(self, target: Callable[..., None], *args: object) -> None:
        # Per-query threads are not joined: they end by themselves (daemon) and keeping them would
        # make stop() wait for replies the test deliberately holds back.
        threading.Thread(target=target, args=args, daemon=True).start()

    def _serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.settimeout(2.0)
        with conn:
            while not self._stop.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _recv_exact(conn, length)
                if wire is None:
                    return
                self._respond(wire, TCP, peer, lambda data: conn.sendall(struct.pack("!H", len(data)) + data))


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
