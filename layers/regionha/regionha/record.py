"""The record: the one place that finds the deployment's private zone and reads, compares and writes
``topology.dns.record`` (an A record) in it.

Everything else (the build's UpsertRecord step, the failover controller, the canary's truth, the
inventory, the audit, drills) goes through here, so the zone is always found the same way: every page
of ListHostedZonesByName, names compared in Route 53's canonical form (lower case, trailing dot, octal
escapes decoded: ``regionha.topology.names``), private zones only, the deployment's by tag or by the
comment the build creates it with.

Writes: ``upsert_record`` (converge: UPSERT, then wait bounded for INSYNC), ``swap_record`` (the
compare-and-swap a failover uses: one change batch DELETE of the value read + CREATE of the new one),
``delete_record`` (only while the record still holds a given value). Route 53 is global
(``clients.route53()``).

AWS docs followed: Route 53 API Reference, ListHostedZonesByName (paging by NextDNSName and
NextHostedZoneId), ListResourceRecordSets (starts at a name, returns the next one when there is none),
ChangeResourceRecordSets ("Change Batches and Transactional Changes": a batch is validated whole and
applied all or nothing; a DELETE must repeat the record exactly), GetChange (PENDING, INSYNC).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.aws import TAG_DEPLOYMENT
from regionha.converge import Outcome
from regionha.errors import ConfigurationError, TransientError
from regionha.topology.names import same_name

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

# Bounds every pagination loop: no account has this many pages of zones.
_MAX_PAGES = 1000


def _error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


# --- the zone -----------------------------------------------------------------------------------------


def zone_comment(deployment: str) -> str:
    """The comment the build creates the deployment's zone with (set atomically at creation)."""
    return f"managed by regionha, deployment {deployment}"


def zone_id(zone: dict[str, Any]) -> str:
    """``Z123`` from a HostedZone's ``/hostedzone/Z123``."""
    return zone["Id"].rsplit("/", 1)[-1]


def _private_zones_named(r53: Any, fqdn: str) -> list[dict[str, Any]]:
    """Private zones with exactly this name (several may exist, each for other VPCs), over every page."""
    zones: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"DNSName": fqdn}
    for _ in range(_MAX_PAGES):
        page = r53.list_hosted_zones_by_name(**kwargs)
        for zone in page["HostedZones"]:
            # Sorted by name from DNSName on: the first other name ends the run of ours.
            if not same_name(zone["Name"], fqdn):
                return zones
            if zone.get("Config", {}).get("PrivateZone"):
                zones.append(zone)
        if not page.get("IsTruncated"):
            break
        kwargs = {"DNSName": page["NextDNSName"], "HostedZoneId": page["NextHostedZoneId"]}
    return zones


def _zone_tags(r53: Any, zone_ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i in range(0, len(zone_ids), 10):  # ListTagsForResources takes at most 10 ids
        sets = r53.list_tags_for_resources(ResourceType="hostedzone", ResourceIds=zone_ids[i : i + 10])
        for s in sets["ResourceTagSets"]:
            out[s["ResourceId"]] = {t["Key"]: t["Value"] for t in s.get("Tags") or []}
    return out


def our_zones(r53: Any, topology: Topology) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """The deployment's zones with their tags: by tag, or by the creation comment when the tagging step
    was cut short. IAM: route53:ListHostedZonesByName, route53:ListTagsForResources."""
    candidates = _private_zones_named(r53, topology.dns.zone_fqdn)
    if not candidates:
        return []
    tags_of = _zone_tags(r53, [zone_id(z) for z in candidates])
    ours = []
    for zone in candidates:
        t = tags_of.get(zone_id(zone), {})
        comment = zone.get("Config", {}).get("Comment")
        if t.get(TAG_DEPLOYMENT) == topology.deployment or comment == zone_comment(topology.deployment):
            ours.append((zone, t))
    return ours


def find_zone(r53: Any, topology: Topology) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The deployment's private zone and its tags, or None. ConfigurationError when it owns several.
    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources."""
    ours = our_zones(r53, topology)
    if len(ours) > 1:
        ids = ", ".join(zone_id(z) for z, _ in ours)
        raise ConfigurationError(
            f"deployment {topology.deployment} owns several private zones {topology.dns.zone_fqdn} ({ids}); "
            "delete the extra ones"
        )
    return ours[0] if ours else None


def zone_id_or_raise(r53: Any, topology: Topology) -> str:
    """The zone's id; ConfigurationError when the build has not made it."""
    found = find_zone(r53, topology)
    if found is None:
        raise ConfigurationError(
            f"private zone {topology.dns.zone} of deployment {topology.deployment} not found; converge it first"
        )
    return zone_id(found[0])


def zone_summary(topology: Topology, clients: Clients) -> dict[str, Any] | None:
    """{"id", "name", "vpcs": sorted VPC ids} of the deployment's zone, or None. Read-only.
    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:GetHostedZone."""
    r53 = clients.route53()
    found = find_zone(r53, topology)
    if found is None:
        return None
    zone = found[0]
    vpcs = r53.get_hosted_zone(Id=zone_id(zone)).get("VPCs", [])
    return {"id": zone_id(zone), "name": zone["Name"], "vpcs": sorted(v["VPCId"] for v in vpcs)}


# --- reading and comparing ----------------------------------------------------------------------------


def record_set(r53: Any, zone: str, name: str) -> dict[str, Any] | None:
    """The A record set ``name`` in zone ``zone`` exactly as Route 53 lists it, or None.
    IAM: route53:ListResourceRecordSets."""
    page = r53.list_resource_record_sets(HostedZoneId=zone, StartRecordName=name, StartRecordType="A", MaxItems="1")
    for rrs in page["ResourceRecordSets"]:
        # The listing starts at the name, and returns the next record when there is none. Route 53
        # returns the name lower case and escaped (a wildcard as \052): compare canonical forms.
        if same_name(rrs["Name"], name) and rrs["Type"] == "A":
            return rrs
    return None


def values(rrs: dict[str, Any] | None) -> list[str]:
    """The addresses a record set holds (none for an absent or alias record)."""
    return [r["Value"] for r in (rrs or {}).get("ResourceRecords", [])]


def holds(rrs: dict[str, Any] | None, address: str, ttl: int) -> bool:
    """Whether the record set is exactly one address ``address`` with TTL ``ttl`` (not an alias)."""
    return rrs is not None and "AliasTarget" not in rrs and rrs.get("TTL") == ttl and values(rrs) == [address]


def read_record(topology: Topology, clients: Clients, *, zone: str | None = None) -> dict[str, Any] | None:
    """{"name", "ip", "ttl"} of the record, or None when the zone or the record does not exist. Read-only.
    ``zone``: the zone's id when the caller found it already (one API call instead of three: Route 53's
    API allows five requests a second per account).

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets.
    """
    r53 = clients.route53()
    if zone is None:
        found = find_zone(r53, topology)
        if found is None:
            return None
        zone = zone_id(found[0])
    rrs = record_set(r53, zone, topology.dns.record.name)
    if not values(rrs):
        return None
    return {"name": topology.dns.record.name, "ip": values(rrs)[0], "ttl": rrs.get("TTL") if rrs else None}


# --- writing ------------------------------------------------------------------------------------------


def _address(topology: Topology, ip: str) -> str:
    try:
        return str(ipaddress.IPv4Address(ip))
    except ValueError as e:
        raise ConfigurationError(f"record {topology.dns.record.name}: {ip!r} is not an IPv4 address") from e


def _a_record(name: str, ttl: int, address: str) -> dict[str, Any]:
    return {"Name": name, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": address}]}


def upsert_record(
    topology: Topology, clients: Clients, ip: str, *, wait_seconds: float = 60, poll_seconds: float = 2
) -> list[Outcome]:
    """Point the record (``topology.dns.record``) at ``ip`` with the topology's TTL, and wait, bounded,
    until Route 53 reports the change INSYNC. Writes nothing when the record already says so.

    Raises ConfigurationError for a bad IP or a missing zone, TransientError when the change is not
    INSYNC within ``wait_seconds`` (the record is written; a retry finds it unchanged).

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets,
    route53:ChangeResourceRecordSets, route53:GetChange.
    """
    address = _address(topology, ip)
    if wait_seconds < 0 or poll_seconds <= 0:
        raise ConfigurationError("wait_seconds must be >= 0 and poll_seconds > 0")
    r53 = clients.route53()
    name, ttl = topology.dns.record.name, topology.dns.record.ttl
    zone = zone_id_or_raise(r53, topology)
    current = record_set(r53, zone, name)
    if holds(current, address, ttl):
        return [Outcome("record", name, "unchanged", zone)]
    try:
        change = r53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": f"regionha {topology.deployment}: {name} -> {address}",
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": _a_record(name, ttl, address)}],
            },
        )["ChangeInfo"]
    except ClientError as e:
        if _error_code(e) == "InvalidChangeBatch":
            raise ConfigurationError(f"record {name}: Route 53 refused the change: {e}") from e
        raise
    wait_insync(r53, change, name, wait_seconds=wait_seconds, poll_seconds=poll_seconds)
    return [Outcome("record", name, "created" if current is None else "updated", zone)]


def wait_insync(
    r53: Any,
    change: dict[str, Any],
    name: str,
    *,
    wait_seconds: float,
    poll_seconds: float,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Wait, bounded, until ``change`` (a ChangeInfo) is INSYNC. Raises TransientError after
    ``wait_seconds`` (the change is made; only its propagation is unconfirmed). IAM: route53:GetChange."""
    # A counted loop: bounded even if the clock jumps.
    status = change["Status"]
    for _ in range(math.ceil(wait_seconds / poll_seconds)):
        if status == "INSYNC":
            break
        (sleep or time.sleep)(poll_seconds)  # looked up now: tests replace time.sleep
        status = r53.get_change(Id=change["Id"])["ChangeInfo"]["Status"]
    if status != "INSYNC":
        raise TransientError(f"record {name}: change {change['Id']} is {status} after {wait_seconds} s")


class RecordChanged(TransientError):
    """The record no longer holds the value a compare-and-swap expected: someone else moved it first."""


@dataclass(frozen=True)
class Swap:
    """An accepted compare-and-swap: ``change`` is Route 53's ChangeInfo (None when nothing was written)."""

    outcome: Outcome
    change: dict[str, Any] | None


def swap_record(
    topology: Topology,
    clients: Clients,
    expected_ip: str | None,
    ip: str,
    *,
    comment: str = "",
    zone: str | None = None,
) -> Swap:
    """Move the record from ``expected_ip`` (None: no record) to ``ip`` with the topology's TTL, only if it
    still holds ``expected_ip``: one change batch that DELETEs the record set exactly as it is and
    CREATEs the new one. Route 53 validates a batch as a whole and applies all or nothing; a DELETE
    whose TTL or values differ from the current ones, or a CREATE of an existing name, makes it refuse
    the batch with InvalidChangeBatch ("ChangeResourceRecordSets", Change Batches and Transactional
    Changes). So of several writers that read the same value, exactly one wins.

    Does not wait for INSYNC (``wait_insync``). Writes nothing when the record already names ``ip``.
    ``zone``: the zone's id when the caller found it already.
    Raises RecordChanged when the record holds something else than ``expected_ip`` (before or at the
    write), ConfigurationError for a bad IP or a missing zone; throttling is the caller's to retry.

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets,
    route53:ChangeResourceRecordSets (actions CREATE and DELETE, type A).
    """
    address = _address(topology, ip)
    r53 = clients.route53()
    name, ttl = topology.dns.record.name, topology.dns.record.ttl
    zone = zone or zone_id_or_raise(r53, topology)
    current = record_set(r53, zone, name)
    have = values(current)
    if have == [address] and current is not None and current.get("TTL") == ttl:
        return Swap(Outcome("record", name, "unchanged", zone), None)
    # The value the caller read (read_record's first): a record someone gave extra values still names
    # it, and the DELETE below repeats the whole set, so the batch stays a compare-and-swap.
    first = have[0] if have else None
    if (current is None) != (expected_ip is None) or (current is not None and first != expected_ip):
        raise RecordChanged(f"record {name} holds {', '.join(have) or 'nothing'}, expected {expected_ip or 'nothing'}")
    changes: list[dict[str, Any]] = []
    if current is not None:
        changes.append({"Action": "DELETE", "ResourceRecordSet": current})
    changes.append({"Action": "CREATE", "ResourceRecordSet": _a_record(name, ttl, address)})
    batch = {"Comment": comment or f"regionha {topology.deployment}: {name} -> {address}", "Changes": changes}
    try:
        change = r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch=batch)["ChangeInfo"]
    except ClientError as e:
        if _error_code(e) != "InvalidChangeBatch":
            raise
        if current is None or "already exists" not in str(e) or record_set(r53, zone, name) != current:
            raise RecordChanged(f"record {name} changed since it was read: {e}") from e
        # The record is exactly as read, yet the CREATE after its DELETE was refused: moto's journal
        # (AWS frees the name within the batch). The DELETE still makes the batch a compare-and-swap.
        changes[-1] = changes[-1] | {"Action": "UPSERT"}
        try:
            change = r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch=batch)["ChangeInfo"]
        except ClientError as again:
            if _error_code(again) == "InvalidChangeBatch":
                raise RecordChanged(f"record {name} changed since it was read: {again}") from again
            raise
    return Swap(Outcome("record", name, "created" if current is None else "updated", zone), change)


def delete_record(topology: Topology, clients: Clients, ip: str, *, comment: str = "") -> Outcome:
    """Delete the record, but only while it still holds exactly ``ip``: the DELETE repeats the record as
    read, so Route 53 refuses it if the record changed meanwhile (then nothing is deleted).

    Outcome action: "deleted", "absent" (no record) or "unchanged" (it holds another value).
    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets,
    route53:ChangeResourceRecordSets (action DELETE).
    """
    r53 = clients.route53()
    name = topology.dns.record.name
    zone = zone_id_or_raise(r53, topology)
    current = record_set(r53, zone, name)
    if current is None:
        return Outcome("record", name, "absent", zone)
    if values(current) != [_address(topology, ip)]:
        return Outcome("record", name, "unchanged", zone)
    try:
        r53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": comment or f"regionha {topology.deployment}: delete {name}",
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": current}],
            },
        )
    except ClientError as e:
        if _error_code(e) == "InvalidChangeBatch":
            return Outcome("record", name, "unchanged", zone)
        raise
    return Outcome("record", name, "deleted", zone)
