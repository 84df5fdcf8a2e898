"""The Amazon-provided VPC resolver, played locally: a DNS server that answers from one VPC's private zones.

In AWS every VPC has a resolver at its base address plus two, and a Route 53 Resolver inbound endpoint
answers exactly as the resolver of its VPC. Both see the private hosted zones associated with the VPC,
and nothing else of Route 53. ``VpcResolver`` reproduces that against the Route 53 state held by moto:
one instance per VPC, listening on every address that answers as that VPC (the mapped base+2 address and
the mapped inbound endpoint IPs), over UDP and TCP.

What it answers, per query:

- a name inside an associated zone (the longest matching zone name wins, as in Route 53): the record
  set with its own TTL and AA set; NXDOMAIN for a name that does not exist there, NOERROR with no data
  for a type it does not have, both with the zone's SOA in the authority section (negative caching);
  CNAMEs are followed inside the associated zones, wildcards and alias records to names in them work;
- a name outside every associated zone: REFUSED. The real resolver would recurse to the internet; there
  is no internet here, and a local server must never send a packet off the machine, so it never
  recurses and never forwards;
- while the VPC does not exist (the build has not created it yet) or Route 53 cannot be read: SERVFAIL,
  which makes a forwarding BIND try its other forwarder, as it would with a broken path.

Zone data is read through the boto3 Route 53 client it is given and kept for ``cache_seconds`` (0.5 s by
default): an UPSERT becomes visible almost at once without a Route 53 call per query. Downstream caches
honour the record's TTL, because that is the TTL answered.

Not emulated: routing policies (of several record sets with one name and type, a failover PRIMARY or
else the first listed answers), health checks, EC2 internal host names, DNSSEC, zone transfers.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from botocore.exceptions import BotoCoreError, ClientError

from regionha.aws import deployment_filter

log = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 0.5
# A client without EDNS accepts at most this over UDP (RFC 1035); larger answers go out truncated.
UDP_PLAIN_LIMIT = 512
# What we accept to send over UDP to an EDNS client, whatever it offers (DNS flag day 2020).
EDNS_PAYLOAD = 1232
_MAX_CHAIN = 8  # CNAME/alias hops followed inside the zones before giving up
_TCP_IDLE_SECONDS = 5.0  # a TCP client that sends nothing for this long is dropped
_POLL_SECONDS = 0.1  # how quickly stop() is noticed by the serving threads
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# Route 53's SOA as it creates it for every zone (TTL 900, negative caching 86400). Used when the stored
# SOA cannot be read: moto 5.2.5 returns the SOA value of a new zone as the text of a Python dict.
_DEFAULT_SOA_TTL = 900
_DEFAULT_SOA = "ns-2048.awsdns-64.com. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"

VpcIdLookup = Callable[[], "str | None"]


class Unavailable(Exception):
    """The resolver cannot see its zones right now (no VPC yet, Route 53 unreadable): SERVFAIL."""


# -- zone data ---------------------------------------------------------------------------------------


def route53_name(text: str) -> dns.name.Name:
    """A Route 53 record or zone name as a DNS name.

    Route 53 writes special characters as three-digit *octal* escapes (``\\052`` is ``*``), where DNS
    presentation format reads three digits as decimal; convert before parsing.
    """
    decimal = _OCTAL_ESCAPE.sub(lambda m: f"\\{int(m.group(1), 8):03d}", text)
    return dns.name.from_text(decimal)


@dataclass(frozen=True)
class Zone:
    """One private hosted zone as the resolver sees it."""

    zone_id: str
    origin: dns.name.Name
    # (owner, type) -> record set, owners as stored (case-insensitive keys: dns.name hashes lowercased)
    rrsets: Mapping[tuple[dns.name.Name, int], dns.rrset.RRset]
    # (owner, type) -> the alias target's name
    aliases: Mapping[tuple[dns.name.Name, int], dns.name.Name]
    # every owner and each of its ancestors inside the zone: a name in here exists, maybe without data
    names: frozenset[dns.name.Name]

    def negative_soa(self) -> dns.rrset.RRset | None:
        """The SOA for the authority section of a negative answer, TTL capped by SOA MINIMUM (RFC 2308)."""
        soa = self.rrsets.get((self.origin, dns.rdatatype.SOA))
        if soa is None:
            return None
        ttl = min(soa.ttl, min(rd.minimum for rd in soa))
        return dns.rrset.from_rdata_list(soa.name, ttl, list(soa))

    def owner_for(self, qname: dns.name.Name) -> dns.name.Name | None:
        """The owner whose data answers ``qname``: itself, a wildcard of its closest encloser, or none."""
        if qname in self.names:
            return qname
        encloser = qname.parent()
        while encloser != self.origin and encloser not in self.names:
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*",) + encloser.labels)
        return wildcard if wildcard in self.names else None


def zone_from_record_sets(zone_id: str, zone_name: str, record_sets: Iterable[Mapping[str, Any]]) -> Zone:
    """Build a ``Zone`` from ``ListResourceRecordSets`` entries; an unparsable value is logged and skipped."""
    origin = route53_name(zone_name)
    rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    aliases: dict[tuple[dns.name.Name, int], dns.name.Name] = {}
    primary: set[tuple[dns.name.Name, int]] = set()
    for rs in record_sets:
        owner = route53_name(rs["Name"])
        if not owner.is_subdomain(origin):
            continue
        rdtype = dns.rdatatype.from_text(rs["Type"])
        key = (owner, rdtype)
        # Several sets of one name and type only exist under a routing policy; without health checks
        # the failover PRIMARY is the answer, otherwise the first one listed.
        is_primary = rs.get("Failover") == "PRIMARY"
        if (key in rrsets or key in aliases) and (key in primary or not is_primary):
            continue
        if is_primary:
            primary.add(key)
        if "AliasTarget" in rs:
            aliases[key] = route53_name(rs["AliasTarget"]["DNSName"])
            rrsets.pop(key, None)
            continue
        rdatas = []
        for rr in rs.get("ResourceRecords", []):
            try:
                rdatas.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, rr["Value"], relativize=False))
            except dns.exception.DNSException as e:
                # Route 53 validates values, so this is an emulator's artefact; the SOA has a fallback.
                level = logging.DEBUG if rdtype == dns.rdatatype.SOA else logging.WARNING
                log.log(level, "zone %s: skipping %s %s %r: %s", zone_id, owner, rs["Type"], rr["Value"], e)
        if rdatas:
            rrsets[key] = dns.rrset.from_rdata_list(owner, int(rs.get("TTL", 300)), rdatas)
            aliases.pop(key, None)
    if (origin, dns.rdatatype.SOA) not in rrsets:
        soa = dns.rrset.from_text(origin, _DEFAULT_SOA_TTL, "IN", "SOA", _DEFAULT_SOA)
        rrsets[(origin, dns.rdatatype.SOA)] = soa
    names = {origin}
    for owner, _ in (*rrsets, *aliases):
        while owner != origin:
            names.add(owner)
            owner = owner.parent()
    return Zone(zone_id, origin, rrsets, aliases, frozenset(names))


def fetch_vpc_zones(route53: Any, vpc_id: str, region: str) -> tuple[Zone, ...]:
    """The private hosted zones associated with one VPC, with all their record sets.

    IAM: route53:ListHostedZonesByVPC (which in AWS also needs ec2:DescribeVpcs),
    route53:ListResourceRecordSets.
    """
    summaries: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"VPCId": vpc_id, "VPCRegion": region}
    while True:
        page = route53.list_hosted_zones_by_vpc(**kwargs)
        summaries.extend(page.get("HostedZoneSummaries", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    paginator = route53.get_paginator("list_resource_record_sets")
    zones = []
    for summary in summaries:
        zone_id = summary["HostedZoneId"].rsplit("/", 1)[-1]
        pages = paginator.paginate(HostedZoneId=zone_id)
        record_sets = [rs for page in pages for rs in page["ResourceRecordSets"]]
        zones.append(zone_from_record_sets(zone_id, summary["Name"], record_sets))
    return tuple(zones)


def vpc_id_by_tags(ec2: Any, deployment: str, name: str) -> VpcIdLookup:
    """A ``vpc_id_lookup`` that finds the VPC regionha tagged ``deployment``/``name``; None until it exists.

    IAM: ec2:DescribeVpcs.
    """

    def lookup() -> str | None:
        vpcs = ec2.describe_vpcs(Filters=deployment_filter(deployment, name))["Vpcs"]
        return vpcs[0]["VpcId"] if vpcs else None

    return lookup


# -- answering ---------------------------------------------------------------------------------------


@dataclass
class Resolution:
    """What a lookup found: the rcode and the sections, and whether it came from zone data (AA)."""

    rcode: dns.rcode.Rcode
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    authoritative: bool = False


def _closest_zone(zones: Sequence[Zone], qname: dns.name.Name) -> Zone | None:
    candidates = [z for z in zones if qname.is_subdomain(z.origin)]
    return max(candidates, key=lambda z: len(z.origin), default=None)


def resolve(zones: Sequence[Zone], qname: dns.name.Name, rdtype: int) -> Resolution:
    """Answer ``qname``/``rdtype`` from ``zones`` alone, as the VPC resolver does for private zones."""
    zone = _closest_zone(zones, qname)
    if zone is None:
        return Resolution(dns.rcode.REFUSED)
    result = Resolution(dns.rcode.NOERROR, authoritative=True)
    name = qname
    for _ in range(_MAX_CHAIN):
        owner = zone.owner_for(name)
        if owner is None:
            result.rcode = dns.rcode.NXDOMAIN
            break
        if rdtype == dns.rdatatype.ANY:
            found_all = [_renamed(rrset, name) for (o, _), rrset in zone.rrsets.items() if o == owner]
            if found_all:
                result.answer += found_all
                return result
            break
        found = _data(zones, zone, owner, rdtype)
        if found is not None:
            result.answer.append(_renamed(found, name))
            return result
        cname = zone.rrsets.get((owner, dns.rdatatype.CNAME))
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        result.answer.append(_renamed(cname, name))
        name = cname[0].target
        zone = _closest_zone(zones, name)
        if zone is None:
            # The real resolver would go on to the internet; there is none, so the chain ends here.
            return result
    else:
        log.warning("CNAME chain from %s longer than %d hops", qname, _MAX_CHAIN)
        return Resolution(dns.rcode.SERVFAIL)
    # Negative (NXDOMAIN or no data, maybe at the end of a CNAME chain): the SOA tells how long to cache it.
    soa = zone.negative_soa()
    if soa is not None:
        result.authority.append(soa)
    return result


def _data(zones: Sequence[Zone], zone: Zone, owner: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
    """The record set of ``owner``/``rdtype``, following alias records (which carry the target's TTL)."""
    for _ in range(_MAX_CHAIN):
        rrset = zone.rrsets.get((owner, rdtype))
        if rrset is not None:
            return rrset
        target = zone.aliases.get((owner, rdtype))
        if target is None:
            return None
        target_zone = _closest_zone(zones, target)
        if target_zone is None:
            return None  # an alias to an AWS service endpoint: nothing to answer with here
        zone, owner = target_zone, target_zone.owner_for(target)
        if owner is None:
            return None
    return None


def _renamed(rrset: dns.rrset.RRset, name: dns.name.Name) -> dns.rrset.RRset:
    # The answer carries the name as asked (its case, and the asked name for a wildcard match).
    return dns.rrset.from_rdata_list(name, rrset.ttl, list(rrset))


def _formerr(wire: bytes) -> bytes | None:
    """A FORMERR reply built from the header alone, for a query dnspython cannot parse."""
    if len(wire) < 12:
        return None
    (qid, flags) = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    reply_flags = dns.flags.QR | (flags & (dns.flags.RD | 0x7800)) | dns.rcode.FORMERR  # keep opcode and RD
    return struct.pack("!HHHHHH", qid, reply_flags, 0, 0, 0, 0)


# -- the server --------------------------------------------------------------------------------------


class VpcResolver:
    """The resolver of one VPC (base+2, and the inbound endpoint IPs of that VPC) as a real DNS server.

    ``listen`` holds (host, port) pairs; each gets a UDP and a TCP socket on the same port, port 0
    picking a free one. ``start()`` returns the bound (host, port) pairs, also in ``addresses``.
    IAM (through ``route53_client``): route53:ListHostedZonesByVPC, route53:ListResourceRecordSets.
    """

    def __init__(
        self,
        region: str,
        vpc_id_lookup: VpcIdLookup,
        route53_client: Any,
        listen: Sequence[tuple[str, int]],
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        ttl: Callable[[int], int] | None = None,
    ) -> None:
        if not listen:
            raise ValueError("VpcResolver needs at least one (host, port) to listen on")
        self.region = region
        self.name = name or region
        self.cache_seconds = cache_seconds
        self._clock = clock
        # Answered TTLs as real caches should keep them (the local runtime's one clock, clock.real_ttl).
        self._ttl = ttl
        self._vpc_id_lookup = vpc_id_lookup
        self._route53 = route53_client
        self._listen = [(host, int(port)) for host, port in listen]
        self._lock = threading.Lock()  # guards the zone cache; one Route 53 read at a time
        self._cached: tuple[Zone, ...] | Unavailable | None = None
        self._cached_at = 0.0
        self._state_lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.addresses: list[tuple[str, int]] = []

    # -- lifecycle

    def __enter__(self) -> VpcResolver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def start(self) -> list[tuple[str, int]]:
        """Bind every listen address (UDP and TCP) and serve in threads; a second call does nothing."""
        with self._state_lock:
            if self._servers:
                return list(self.addresses)
            try:
                for host, port in self._listen:
                    udp, tcp = self._bind_pair(host, port)
                    self._servers += [udp, tcp]
                    self.addresses.append((host, udp.server_address[1]))
            except OSError:
                self._close_servers()
                raise
            for server in self._servers:
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": _POLL_SECONDS},
                    name=f"vpcdns-{self.name}-{server.server_address[0]}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            log.info("VPC resolver %s listening on %s", self.name, self.addresses)
            return list(self.addresses)

    def stop(self) -> None:
        """Stop serving and close the sockets; safe to call when not running."""
        with self._state_lock:
            for server in self._servers:
                server.shutdown()
            for thread in self._threads:
                thread.join(timeout=5)
            self._threads.clear()
            self._close_servers()

    def _close_servers(self) -> None:
        for server in self._servers:
            server.server_close()
        self._servers.clear()
        self.addresses.clear()

    def _bind_pair(self, host: str, port: int) -> tuple[socketserver.BaseServer, socketserver.BaseServer]:
        # With port 0 the UDP port is free, but the same number may be taken for TCP: try a few.
        for _ in range(1 if port else 20):
            udp = _UdpServer((host, port), self)
            try:
                tcp = _TcpServer((host, udp.server_address[1]), self)
            except OSError:
                udp.server_close()
                if port:
                    raise
                continue
            return udp, tcp
        raise OSError(f"no port on {host} is free for both UDP and TCP")

    # -- answering

    def zones(self) -> tuple[Zone, ...]:
        """The associated zones, read from Route 53 at most once per ``cache_seconds``; raises Unavailable."""
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached_at >= self.cache_seconds:
                self._cached, self._cached_at = self._read_zones(), now
            if isinstance(self._cached, Unavailable):
                raise self._cached
            return self._cached

    def _read_zones(self) -> tuple[Zone, ...] | Unavailable:
        # A failure is cached like data, so an absent VPC or a broken Route 53 is not asked per query.
        try:
            vpc_id = self._vpc_id_lookup()
            if vpc_id is None:
                return Unavailable(f"the VPC of resolver {self.name} does not exist (yet)")
            return fetch_vpc_zones(self._route53, vpc_id, self.region)
        except (ClientError, BotoCoreError) as e:
            log.warning("resolver %s cannot read its zones: %s", self.name, e)
            return Unavailable(str(e))

    def reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The wire reply to one query (None: nothing to send, e.g. the packet was a response)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.message.ShortHeader:
            return None
        except Exception:  # whatever a packet holds, the server answers FORMERR and lives on
            return _formerr(wire)
        if query.flags & dns.flags.QR:
            return None
        # RA as the real resolver sets it; it recurses for clients, only there is no internet here.
        response = dns.message.make_response(query, recursion_available=True, our_payload=EDNS_PAYLOAD)
        try:
            self._answer(query, response)
        except Exception:
            log.exception("resolver %s failed on %s", self.name, query.question)
            response = dns.message.make_response(query, recursion_available=True, our_payload=EDNS_PAYLOAD)
            response.set_rcode(dns.rcode.SERVFAIL)
        if tcp:
            limit = 65535
        elif query.edns >= 0:
            limit = max(UDP_PLAIN_LIMIT, min(query.payload, EDNS_PAYLOAD))
        else:
            limit = UDP_PLAIN_LIMIT
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            for section in (response.answer, response.authority, response.additional):
                section.clear()
            if tcp:
                response.set_rcode(dns.rcode.SERVFAIL)
            else:
                response.flags |= dns.flags.TC  # the client asks again over TCP
            return response.to_wire()

    def _answer(self, query: dns.message.Message, response: dns.message.Message) -> None:
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        # Zone transfers are not something a VPC resolver offers.
        transfer = question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
        if question.rdclass != dns.rdataclass.IN or transfer:
            response.set_rcode(dns.rcode.REFUSED)
            return
        try:
            zones = self.zones()
        except Unavailable:
            response.set_rcode(dns.rcode.SERVFAIL)
            return
        result = resolve(zones, question.name, question.rdtype)
        if self._ttl is not None:
            for rrset in (*result.answer, *result.authority):
                rrset.ttl = self._ttl(rrset.ttl)
        response.set_rcode(result.rcode)
        response.answer.extend(result.answer)
        response.authority.extend(result.authority)
        if result.authoritative:
            response.flags |= dns.flags.AA


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], resolver: VpcResolver) -> None:
        self.resolver = resolver
        super().__init__(address, _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted resolver must get its port back despite TIME_WAIT

    def __init__(self, address: tuple[str, int], resolver: VpcResolver) -> None:
        self.resolver = resolver
        super().__init__(address, _TcpHandler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        wire, sock = self.request
        reply = self.server.resolver.reply(wire, tcp=False)  # type: ignore[attr-defined]
        if reply is not None:
            try:
                sock.sendto(reply, self.client_address)
            except OSError as e:
                log.debug("UDP reply to %s lost: %s", self.client_address, e)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(_TCP_IDLE_SECONDS)
        try:
            while True:
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                wire = _recv_exact(conn, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                reply = self.server.resolver.reply(wire, tcp=True)  # type: ignore[attr-defined]
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError as e:  # includes the idle timeout
            log.debug("TCP connection from %s ended: %s", self.client_address, e)


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
