"""The local VPC resolver: real UDP/TCP queries against zones held by moto in-process."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import boto3
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from regionha.aws import tag_spec
from regionha.local.aws.vpcdns import VpcResolver, resolve, route53_name, vpc_id_by_tags, zone_from_record_sets

REGION = "ap-northeast-1"
TIMEOUT = 2.0


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    ec2: object
    route53: object
    vpc_id: str
    other_vpc_id: str
    zone_id: str


def _upsert(route53, zone_id: str, name: str, rtype: str, values: list[str], ttl: int = 60) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": rtype,
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": v} for v in values],
                    },
                }
            ]
        },
    )


def _private_zone(route53, name: str, vpc_id: str) -> str:
    zone = route53.create_hosted_zone(
        Name=name,
        CallerReference=f"test-{name}",
        HostedZoneConfig={"PrivateZone": True, "Comment": "test"},
        VPC={"VPCRegion": REGION, "VPCId": vpc_id},
    )
    return zone["HostedZone"]["Id"].rsplit("/", 1)[-1]


@pytest.fixture
def world(moto_aws: None) -> World:
    ec2 = boto3.client("ec2", region_name=REGION)
    route53 = boto3.client("route53", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=tag_spec("vpc", "t", "tokyo"))
    vpc_id = vpc["Vpc"]["VpcId"]
    other = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    zone_id = _private_zone(route53, "cluster.local", vpc_id)
    _upsert(route53, zone_id, "sample.cluster.local.", "A", ["10.0.110.10"], ttl=42)
    _upsert(route53, zone_id, "alias.cluster.local.", "CNAME", ["sample.cluster.local."], ttl=30)
    _upsert(route53, zone_id, "many.cluster.local.", "A", [f"10.0.1.{i}" for i in range(1, 61)])
    hidden = _private_zone(route53, "hidden.internal", other)
    _upsert(route53, hidden, "secret.hidden.internal.", "A", ["10.9.0.9"])
    return World(ec2, route53, vpc_id, other, zone_id)


@pytest.fixture
def resolver(world: World):
    server = VpcResolver(REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0)], cache_seconds=0)
    server.start()
    yield server
    server.stop()


def _udp(server: VpcResolver, name: str, rdtype: str = "A", **kwargs) -> dns.message.Message:
    host, port = server.addresses[0]
    return dns.query.udp(dns.message.make_query(name, rdtype, **kwargs), host, port=port, timeout=TIMEOUT)


def _tcp(server: VpcResolver, name: str, rdtype: str = "A") -> dns.message.Message:
    host, port = server.addresses[0]
    return dns.query.tcp(dns.message.make_query(name, rdtype), host, port=port, timeout=TIMEOUT)


def _addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)


@pytest.mark.parametrize("ask", [_udp, _tcp], ids=["udp", "tcp"])
def test_a_record_is_answered_with_its_ttl_and_aa(resolver: VpcResolver, ask) -> None:
    reply = ask(resolver, "sample.cluster.local.")

    assert reply.rcode() == dns.rcode.NOERROR
    assert _addresses(reply) == ["10.0.110.10"]
    assert reply.answer[0].ttl == 42
    assert reply.flags & dns.flags.AA


def test_missing_name_in_the_zone_is_nxdomain_with_the_soa(resolver: VpcResolver) -> None:
    reply = _udp(resolver, "nothere.cluster.local.")

    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]
    # Negative caching: the SOA's TTL, capped by its MINIMUM field.
    assert reply.authority[0].ttl == min(900, reply.authority[0][0].minimum)


def test_missing_type_is_noerror_without_data(resolver: VpcResolver) -> None:
    reply = _udp(resolver, "sample.cluster.local.", "AAAA")

    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


def test_names_outside_the_associated_zones_are_refused(resolver: VpcResolver) -> None:
    names = ["example.com.", "cluster.locals.", "local.", "."]
    replies = [_udp(resolver, name) for name in names]

    assert [r.rcode() for r in replies] == [dns.rcode.REFUSED] * len(names)
    assert [r.answer for r in replies] == [[]] * len(names)


def test_a_zone_associated_only_with_another_vpc_is_invisible(world: World, resolver: VpcResolver) -> None:
    assert _udp(resolver, "secret.hidden.internal.").rcode() == dns.rcode.REFUSED

    other = VpcResolver(REGION, lambda: world.other_vpc_id, world.route53, [("127.0.0.1", 0)])
    with other:
        assert _addresses(_udp(other, "secret.hidden.internal.")) == ["10.9.0.9"]
        assert _udp(other, "sample.cluster.local.").rcode() == dns.rcode.REFUSED


def test_cname_inside_the_zone_is_followed(resolver: VpcResolver) -> None:
    reply = _udp(resolver, "alias.cluster.local.")

    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert _addresses(reply) == ["10.0.110.10"]


def test_upsert_is_served_once_the_cache_window_has_passed(world: World) -> None:
    clock = FakeClock()
    server = VpcResolver(REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0)], clock=clock)
    with server:
        assert _addresses(_udp(server, "sample.cluster.local.")) == ["10.0.110.10"]

        _upsert(world.route53, world.zone_id, "sample.cluster.local.", "A", ["10.1.110.10"], ttl=42)
        clock.now += server.cache_seconds / 2
        inside_window = _addresses(_udp(server, "sample.cluster.local."))
        clock.now += server.cache_seconds
        after_window = _addresses(_udp(server, "sample.cluster.local."))

    assert inside_window == ["10.0.110.10"]
    assert after_window == ["10.1.110.10"]


def test_route53_is_read_once_per_cache_window(world: World) -> None:
    reads = []
    world.route53.meta.events.register(
        "before-call.route53.ListResourceRecordSets", lambda **kwargs: reads.append(kwargs["params"])
    )
    clock = FakeClock()
    server = VpcResolver(REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0)], clock=clock)
    with server:
        for _ in range(5):
            _udp(server, "sample.cluster.local.")

    assert len(reads) == 1


def test_servfail_until_the_vpc_exists(world: World) -> None:
    clock = FakeClock()
    lookup = vpc_id_by_tags(world.ec2, "t", "late")
    server = VpcResolver(REGION, lookup, world.route53, [("127.0.0.1", 0)], clock=clock)
    with server:
        before = _udp(server, "sample.cluster.local.").rcode()
        vpc_id = world.ec2.create_vpc(CidrBlock="10.5.0.0/16", TagSpecifications=tag_spec("vpc", "t", "late"))
        world.route53.associate_vpc_with_hosted_zone(
            HostedZoneId=world.zone_id, VPC={"VPCRegion": REGION, "VPCId": vpc_id["Vpc"]["VpcId"]}
        )
        clock.now += server.cache_seconds
        after = _addresses(_udp(server, "sample.cluster.local."))

    assert before == dns.rcode.SERVFAIL
    assert after == ["10.0.110.10"]


def test_large_answer_is_truncated_over_udp_without_edns_and_complete_over_tcp(resolver: VpcResolver) -> None:
    plain = _udp(resolver, "many.cluster.local.")
    with_edns = _udp(resolver, "many.cluster.local.", use_edns=0, payload=1232)
    over_tcp = _tcp(resolver, "many.cluster.local.")

    assert plain.flags & dns.flags.TC
    assert plain.answer == []
    assert not with_edns.flags & dns.flags.TC
    assert len(_addresses(with_edns)) == 60
    assert len(_addresses(over_tcp)) == 60


def test_every_listen_address_answers_as_the_same_vpc(world: World) -> None:
    # The VPC's base+2 and its inbound endpoint IPs are one resolver.
    server = VpcResolver(REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0), ("127.0.0.2", 0)])
    with server:
        query = dns.message.make_query("sample.cluster.local.", "A")
        replies = [dns.query.udp(query, host, port=port, timeout=TIMEOUT) for host, port in server.addresses]

    assert [_addresses(r) for r in replies] == [["10.0.110.10"], ["10.0.110.10"]]


def test_start_and_stop_are_idempotent_and_stop_closes_the_port(world: World) -> None:
    server = VpcResolver(REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0)])
    first = server.start()
    second = server.start()
    server.stop()
    server.stop()

    assert first == second
    assert first[0][1] > 0
    assert not server.running
    with pytest.raises(ConnectionRefusedError), socket.create_connection(first[0], timeout=TIMEOUT):
        pass


@pytest.mark.parametrize(
    ("qname", "rdtype", "rcode", "answer"),
    [
        ("x.wild.z.", "A", dns.rcode.NOERROR, ["x.wild.z. 50 IN A 10.0.0.5"]),
        ("deep.x.wild.z.", "A", dns.rcode.NOERROR, ["deep.x.wild.z. 50 IN A 10.0.0.5"]),
        ("b.a.z.", "A", dns.rcode.NOERROR, ["b.a.z. 60 IN A 10.0.0.1"]),
        ("a.z.", "A", dns.rcode.NOERROR, []),  # an empty non-terminal exists
        ("c.a.z.", "A", dns.rcode.NXDOMAIN, []),
        ("SAMPLE.Z.", "A", dns.rcode.NOERROR, ["SAMPLE.Z. 10 IN A 10.0.0.2"]),
        ("top.z.", "A", dns.rcode.NOERROR, ["top.z. 10 IN A 10.0.0.2"]),  # alias: the target's TTL
        ("loop1.z.", "A", dns.rcode.SERVFAIL, []),
        ("out.z.", "A", dns.rcode.NOERROR, ["out.z. 5 IN CNAME example.com."]),
        ("n.sub.z.", "A", dns.rcode.NOERROR, ["n.sub.z. 7 IN A 10.0.0.7"]),  # the more specific zone wins
    ],
)
def test_resolve(qname: str, rdtype: str, rcode: dns.rcode.Rcode, answer: list[str]) -> None:
    soa = {"Name": "z.", "Type": "SOA", "TTL": 900, "ResourceRecords": [{"Value": "ns. h. 1 2 3 4 60"}]}
    zone = zone_from_record_sets(
        "Z1",
        "z.",
        [
            soa,
            {"Name": "\\052.wild.z.", "Type": "A", "TTL": 50, "ResourceRecords": [{"Value": "10.0.0.5"}]},
            {"Name": "b.a.z.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.0.0.1"}]},
            {"Name": "sample.z.", "Type": "A", "TTL": 10, "ResourceRecords": [{"Value": "10.0.0.2"}]},
            {"Name": "top.z.", "Type": "A", "AliasTarget": {"HostedZoneId": "Z1", "DNSName": "sample.z."}},
            {"Name": "loop1.z.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "loop2.z."}]},
            {"Name": "loop2.z.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "loop1.z."}]},
            {"Name": "out.z.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "example.com."}]},
            {"Name": "n.sub.z.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": "10.9.9.9"}]},
        ],
    )
    sub_record = {"Name": "n.sub.z.", "Type": "A", "TTL": 7, "ResourceRecords": [{"Value": "10.0.0.7"}]}
    sub = zone_from_record_sets("Z2", "sub.z.", [sub_record])

    result = resolve([zone, sub], dns.name.from_text(qname), dns.rdatatype.from_text(rdtype))

    assert result.rcode == rcode
    assert [line for rrset in result.answer for line in rrset.to_text().splitlines()] == answer


def test_negative_answer_ttl_is_capped_by_soa_minimum() -> None:
    soa = {"Name": "z.", "Type": "SOA", "TTL": 900, "ResourceRecords": [{"Value": "ns. h. 1 2 3 4 60"}]}
    zone = zone_from_record_sets("Z1", "z.", [soa])

    result = resolve([zone], dns.name.from_text("none.z."), dns.rdatatype.A)

    assert result.rcode == dns.rcode.NXDOMAIN
    assert [(rrset.rdtype, rrset.ttl) for rrset in result.authority] == [(dns.rdatatype.SOA, 60)]


def test_route53_octal_escapes_become_dns_labels() -> None:
    assert route53_name("\\052.z.").labels[0] == b"*"
    assert route53_name("a\\100b.z.") == dns.name.from_text("a@b.z.")


def test_malformed_queries_get_formerr_and_responses_get_nothing(resolver: VpcResolver) -> None:
    query = dns.message.make_query("sample.cluster.local.", "A")
    wire = query.to_wire()
    garbage = wire[:12] + b"\xff" * 5  # a header that promises a question the packet does not hold
    response = dns.message.make_response(query).to_wire()
    notify = dns.message.make_query("cluster.local.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)

    formerr = dns.message.from_wire(resolver.reply(garbage, tcp=False), question_only=True)
    notimp = dns.message.from_wire(resolver.reply(notify.to_wire(), tcp=False))

    assert (formerr.id, formerr.rcode()) == (query.id, dns.rcode.FORMERR)
    assert resolver.reply(response, tcp=False) is None
    assert resolver.reply(b"\x00\x01", tcp=False) is None
    assert notimp.rcode() == dns.rcode.NOTIMP
