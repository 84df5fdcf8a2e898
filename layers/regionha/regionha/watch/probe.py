"""DNS probes: ask one explicit server for one name's A record and say what happened.

Shaped after blackbox_exporter's ``prober/dns.go``: a validated ``ProbeConfig`` goes into ``probe``,
which returns a ``ProbeResult`` (outcome label, rcode, answers, TTL, latency, whether TCP was used).
A probe that fails is a result, never an exception: canaries and drills count and alarm on outcomes.
Only a bad configuration, or a destination the network guard refuses, raises ``ConfigurationError``.

Outcome labels (stable: they become metric dimensions and drill verdicts):

- ``ok``            NOERROR with A records (equal to ``expected`` when that is given)
- ``wrong_answer``  NOERROR with A records that differ from ``expected``
- ``noanswer``      NOERROR and no A record for the name (also after following a CNAME)
- ``nxdomain``      NXDOMAIN
- ``servfail``      SERVFAIL; also any other error rcode and a response that cannot be used
                    (malformed, a CNAME loop): the server answered but could not resolve
- ``refused``       REFUSED (the server does not serve this client or name)
- ``timeout``       no reply within the UDP tries, or the TCP retry, inside ``lifetime``
- ``network_error`` the operating system refused: connection reset/refused (nothing listening on
                    TCP), network unreachable, the source address not local

Queries are always type A (never ANY) with recursion desired and without EDNS, so a large answer
comes back truncated over UDP and is fetched again over TCP, as a stub resolver does.

Nothing here calls AWS: no IAM actions are needed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from regionha.errors import ConfigurationError

OK = "ok"
TIMEOUT = "timeout"
SERVFAIL = "servfail"
NXDOMAIN = "nxdomain"
NOANSWER = "noanswer"
REFUSED = "refused"
WRONG_ANSWER = "wrong_answer"
NETWORK_ERROR = "network_error"
OUTCOMES = (OK, TIMEOUT, SERVFAIL, NXDOMAIN, NOANSWER, REFUSED, WRONG_ANSWER, NETWORK_ERROR)

# A try shorter than this cannot see a real reply; starting one only adds a query to the count.
_MIN_TRY = 0.01
# probe_many runs every probe at once up to this many; canary runs hold a handful of paths.
_MAX_WORKERS = 32


def _ipv4(value: object, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError as e:
        raise ConfigurationError(f"{what} must be an IPv4 address, got {value!r}") from e


@dataclass(frozen=True)
class ProbeConfig:
    """One probe: which name to ask which server, how long to wait, and what the answer must be.

    Validated on construction, so a bad config fails where it is built, not at the first probe.
    """

    name: str
    server: str
    port: int = 53
    timeout: float = 1.0
    lifetime: float = 3.0
    tries: int = 2
    source: str | None = None
    expected: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.endswith(".") or self.name == ".":
            raise ConfigurationError(
                f"probe name must be fully qualified with a trailing dot, got {self.name!r}"
            )
        try:
            dns.name.from_text(self.name)
        except dns.exception.DNSException as e:
            raise ConfigurationError(f"probe name {self.name!r} is not a valid DNS name: {e}") from e
        # Frozen: normalised values go in through object.__setattr__ (callers may pass IPv4Address).
        object.__setattr__(self, "server", _ipv4(self.server, "probe server"))
        if self.source is not None:
            object.__setattr__(self, "source", _ipv4(self.source, "probe source"))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigurationError(f"probe port must be an integer 1-65535, got {self.port!r}")
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 1:
            raise ConfigurationError(f"probe tries must be a positive integer, got {self.tries!r}")
        if not self.timeout > 0:
            raise ConfigurationError(f"probe timeout must be positive, got {self.timeout!r}")
        if not self.timeout < self.lifetime:
            raise ConfigurationError(
                f"probe timeout ({self.timeout}) must be below lifetime ({self.lifetime}), "
                "otherwise no retry ever fits"
            )
        if isinstance(self.expected, str):
            raise ConfigurationError("probe expected must be a set of addresses, not one string")
        object.__setattr__(
            self, "expected", frozenset(_ipv4(a, "probe expected answer") for a in self.expected)
        )


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw.

    ``tries`` counts UDP queries sent; ``tcp`` says a TCP retry followed a truncated reply;
    ``latency_ms`` runs from the first query to the outcome (lost tries included); ``ttl`` is the
    smallest TTL along the answer's CNAME chain; ``answers`` are sorted; ``error`` says why for every
    outcome that is not a plain reply (ok, nxdomain, refused, noanswer).
    """

    path: str | None
    server: str
    port: int
    name: str
    outcome: str
    rcode: str | None
    answers: tuple[str, ...]
    ttl: int | None
    latency_ms: float
    tcp: bool
    tries: int
    started_at: float
    error: str | None

    def ok(self) -> bool:
        return self.outcome == OK

    def to_json(self) -> dict:
        """A plain dict for Lambda results, state machine payloads and log lines."""
        data = asdict(self)
        data["answers"] = list(self.answers)
        return data


def _check_destination(address: str) -> None:
    """Refuse (``ConfigurationError``) any destination the network guard does not allow.

    Imported at call time so this module loads without the guard; if the guard cannot be imported
    the import error propagates and no packet is sent (fail closed).
    """
    from regionha import netguard

    netguard.check_destination(address)


def probe(config: ProbeConfig, path: str | None = None) -> ProbeResult:
    """Ask ``config.server`` for the A record of ``config.name`` and classify the reply.

    UDP first, retried on timeout up to ``tries`` times, each try at most ``timeout`` and all of it
    within ``lifetime``; a truncated UDP reply is asked again once over TCP with what remains of the
    lifetime. Raises only ``ConfigurationError`` (from the network guard); every failure of the
    server or the path is returned as a result.
    """
    _check_destination(config.server)

    query = dns.message.make_query(dns.name.from_text(config.name), dns.rdatatype.A, dns.rdataclass.IN)
    started_at = time.time()
    start = time.monotonic()
    deadline = start + config.lifetime
    tries = 0
    used_tcp = False

    def result(outcome: str, response: dns.message.Message | None = None, **extra: object) -> ProbeResult:
        values: dict = {
            "path": path,
            "server": config.server,
            "port": config.port,
            "name": config.name,
            "outcome": outcome,
            "rcode": dns.rcode.to_text(response.rcode()) if response is not None else None,
            "answers": (),
            "ttl": None,
            "latency_ms": round((time.monotonic() - start) * 1000.0, 3),
            "tcp": used_tcp,
            "tries": tries,
            "started_at": started_at,
            "error": None,
        }
        values.update(extra)
        return ProbeResult(**values)

    response: dns.message.Message | None = None
    try:
        while tries < config.tries:
            remaining = deadline - time.monotonic()
            if remaining < _MIN_TRY:
                break
            tries += 1
            try:
                response = dns.query.udp(
                    query,
                    config.server,
                    timeout=min(config.timeout, remaining),
                    port=config.port,
                    source=config.source,
                    # A stray or forged datagram must not end the try: keep listening for ours.
                    ignore_unexpected=True,
                    ignore_errors=True,
                    raise_on_truncation=True,
                )
                break
            except dns.message.Truncated:
                used_tcp = True
                remaining = deadline - time.monotonic()
                if remaining < _MIN_TRY:
                    return result(TIMEOUT, error="truncated over UDP and no lifetime left for TCP")
                response = dns.query.tcp(
                    query, config.server, timeout=remaining, port=config.port, source=config.source
                )
                break
            except dns.exception.Timeout:
                continue
    except dns.exception.Timeout:
        return result(TIMEOUT, error="no reply over TCP")
    except OSError as e:
        return result(NETWORK_ERROR, error=f"{type(e).__name__}: {e}")
    except dns.exception.DNSException as e:
        # Only reachable over TCP (UDP ignores bad datagrams): a reply we cannot use.
        return result(SERVFAIL, error=f"unusable reply: {type(e).__name__}: {e}")

    if response is None:
        return result(TIMEOUT, error=f"no reply to {tries} UDP tries")
    return _classify(config, response, result)


def _classify(
    config: ProbeConfig, response: dns.message.Message, result: Callable[..., ProbeResult]
) -> ProbeResult:
    code = response.rcode()
    if code == dns.rcode.NXDOMAIN:
        return result(NXDOMAIN, response)
    if code == dns.rcode.REFUSED:
        return result(REFUSED, response)
    if code != dns.rcode.NOERROR:
        return result(SERVFAIL, response, error=f"rcode {dns.rcode.to_text(code)}")
    try:
        # Follows CNAMEs inside the answer, as a stub would; the TTL is the chain's smallest.
        chain = response.resolve_chaining()
    except dns.exception.DNSException as e:
        return result(SERVFAIL, response, error=f"unusable answer: {type(e).__name__}: {e}")
    if chain.answer is None or len(chain.answer) == 0:
        return result(NOANSWER, response)
    answers = tuple(sorted((rdata.address for rdata in chain.answer), key=ipaddress.IPv4Address))
    ttl = chain.minimum_ttl
    if config.expected and frozenset(answers) != config.expected:
        expected = ", ".join(sorted(config.expected, key=ipaddress.IPv4Address))
        return result(WRONG_ANSWER, response, answers=answers, ttl=ttl, error=f"expected {expected}")
    return result(OK, response, answers=answers, ttl=ttl)


def probe_many(configs: dict[str, ProbeConfig]) -> dict[str, ProbeResult]:
    """Run one probe per path, all at once in threads: a run takes about as long as its slowest probe.

    Every destination is checked by the network guard before any probe starts, so a refused one
    raises ``ConfigurationError`` with nothing sent to any path. Results keep the input's order.
    """
    for config in configs.values():
        _check_destination(config.server)
    if not configs:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(configs), _MAX_WORKERS), thread_name_prefix="probe") as pool:
        futures = {path: pool.submit(probe, config, path) for path, config in configs.items()}
        return {path: future.result() for path, future in futures.items()}
