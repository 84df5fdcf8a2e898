"""DNS names in Route 53's canonical form: stored so by the topology model, compared so when read back.

Route 53 stores names lower case with a trailing dot and lists special characters as octal escapes
(``\\052`` for a wildcard); see regionha.topology.names. Field case record-name-uppercase-refused: a mixed-case
record name validated, then the build's UpsertRecord was refused.
"""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import yaml
from botocore.stub import Stubber
from test_converge_dns import build_network

from regionha.aws import Clients
from regionha.converge.dns import converge_private_zone, read_record, upsert_record
from regionha.topology import DEFAULT_TOPOLOGY, parse_topology
from regionha.topology.names import canonical_name, same_name

REFERENCE = yaml.safe_load(
    resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY).read_text(encoding="utf-8")
)


def with_names(zone: str, record: str):
    data = copy.deepcopy(REFERENCE)
    data["dns"]["zone"] = zone
    data["dns"]["record"]["name"] = record
    return parse_topology(data)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("Sample.Cluster.Local", "sample.cluster.local."),
        ("sample.cluster.local.", "sample.cluster.local."),
        ("SAMPLE.CLUSTER.LOCAL.", "sample.cluster.local."),
        ("\\052.cluster.local.", "*.cluster.local."),  # as ListResourceRecordSets returns a wildcard
        ("\\101pp.cluster.local", "app.cluster.local."),  # an escaped capital is folded too
        ("_svc.cluster.local", "_svc.cluster.local."),
        ("a\\056b.cluster.local.", "a\\056b.cluster.local."),  # a dot inside a label stays escaped
        ("a\\040b.cluster.local.", "a\\040b.cluster.local."),  # so does a space
        ("", "."),
        (" Sample.Cluster.Local \t", "sample.cluster.local."),  # quoted YAML with a pasted space
    ],
)
def test_canonical_name(given: str, canonical: str) -> None:
    assert canonical_name(given) == canonical


def test_same_name_ignores_case_trailing_dot_and_escapes() -> None:
    assert same_name("\\052.Cluster.Local", "*.cluster.local.")
    assert not same_name("sample.cluster.local.", "sample.cluster.example.")


def test_surrounding_whitespace_is_dropped_not_refused() -> None:
    topology = with_names(" Cluster.Local. ", "sample.cluster.local\t")
    assert (topology.dns.zone, topology.dns.record.name) == ("cluster.local.", "sample.cluster.local.")


@pytest.mark.parametrize(
    ("field", "zone", "record", "hint"),
    [
        ("dns.record.name", "cluster.local", "sämple.cluster.local", "as IDNA writes it: xn--smple-gra)"),
        ("dns.zone", "clüster.local", "a.clüster.local", "as IDNA writes it: xn--clster-4ya)"),
        ("dns.zone", "ＣＬＵＳＴＥＲ.local", "a.ＣＬＵＳＴＥＲ.local", "as IDNA writes it: cluster)"),  # full-width
    ],
)
def test_a_non_ascii_name_is_refused_with_its_ascii_spelling(field, zone, record, hint) -> None:
    from regionha.topology import TopologyError

    with pytest.raises(TopologyError) as refused:
        with_names(zone, record)
    mine = next(m for m in str(refused.value).split("; ") if f"{field}: " in m)
    assert mine.endswith(hint), str(refused.value)


def test_model_stores_zone_and_record_canonical() -> None:
    # GIVEN names as an operator copies them; WHEN the topology is read; THEN Route 53's own form.
    topology = with_names("Cluster.Local", "Sample.Cluster.Local")
    assert topology.dns.zone == topology.dns.zone_fqdn == "cluster.local."
    assert topology.dns.record.name == "sample.cluster.local."


def test_mixed_case_record_is_written_and_read_back(moto_aws) -> None:
    """The field case's right value: the build's UpsertRecord succeeds and the record reads back."""
    topology = with_names("Cluster.LOCAL", "Sample.Cluster.Local")
    build_network(topology)
    clients = Clients()
    converge_private_zone(topology, clients, "run-1")
    upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)
    assert read_record(topology, clients) == {"name": "sample.cluster.local.", "ip": "10.0.110.10", "ttl": 60}
    # A re-run compares the record it reads with the canonical name: nothing to write.
    assert [o.action for o in upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)] == ["unchanged"]


def test_wildcard_record_listed_with_an_octal_escape_is_found() -> None:
    """Route 53 lists ``*.cluster.local.`` as ``\\052.cluster.local.`` (moto does not): still our record."""
    topology = with_names("cluster.local", "*.cluster.local")
    clients = Clients()
    r53 = clients.route53()
    zone = {"Id": "/hostedzone/Z1", "Name": "cluster.local.", "CallerReference": "r",
            "Config": {"PrivateZone": True}}
    with Stubber(r53) as stub:
        stub.add_response(
            "list_hosted_zones_by_name",
            {"HostedZones": [zone], "IsTruncated": False, "MaxItems": "100"},
            {"DNSName": "cluster.local."},
        )
        stub.add_response(
            "list_tags_for_resources",
            {"ResourceTagSets": [{"ResourceType": "hostedzone", "ResourceId": "Z1",
                                  "Tags": [{"Key": "regionha:deployment", "Value": topology.deployment}]}]},
            {"ResourceType": "hostedzone", "ResourceIds": ["Z1"]},
        )
        stub.add_response(
            "list_resource_record_sets",
            {"ResourceRecordSets": [{"Name": "\\052.cluster.local.", "Type": "A", "TTL": 60,
                                     "ResourceRecords": [{"Value": "10.1.110.10"}]}],
             "IsTruncated": False, "MaxItems": "1"},
            {"HostedZoneId": "Z1", "StartRecordName": "*.cluster.local.", "StartRecordType": "A", "MaxItems": "1"},
        )
        record = read_record(topology, clients)
        stub.assert_no_pending_responses()
    assert record == {"name": "*.cluster.local.", "ip": "10.1.110.10", "ttl": 60}
