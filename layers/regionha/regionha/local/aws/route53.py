"""Route 53 change batches as AWS validates them, which moto (5.2) does not.

AWS (ChangeResourceRecordSets, "Change Batches and Transactional Changes"): a batch is validated as a
whole against the zone's current record sets and then applied all or nothing; a DELETE must repeat the
record set exactly (TTL and values) and a CREATE must not meet an existing one, else the whole batch is
refused with ``InvalidChangeBatch`` ("Tried to delete resource record set [name='…', type='A'] but the
values provided do not match the current values" / "… but it was not found" / "Tried to create
resource record set … but it already exists").

moto's gaps, closed here: a DELETE passes if the record set was *ever* written (its journal), and then
removes whatever record set has that name and type; a CREATE of an existing name passes unless the
identical change is in the journal, leaving two record sets; and a CREATE that is in the journal is
refused even when the batch's own DELETE frees the name (a swap back to an earlier value). The first two
would let two failover controllers that read the same value both "win" (the compare-and-swap
``regionha.failover`` relies on); the last would refuse a legitimate failback.

``install()`` wraps moto's backend once per process; the local runtime and in-process tests get it by
importing ``regionha.local``.
"""

from __future__ import annotations

from typing import Any

_original: Any = None


def _key(rrset: dict[str, Any]) -> tuple[str, str, str | None]:
    name = rrset["Name"].lower()
    return (name if name.endswith(".") else name + ".", rrset.get("Type") or "", rrset.get("SetIdentifier"))


def _values(records: list[Any]) -> list[str]:
    return sorted(r["Value"] if isinstance(r, dict) else str(r) for r in records or [])


def _same(current: Any, wanted: dict[str, Any]) -> bool:
    if "AliasTarget" in wanted or current.alias_target:
        return (current.alias_target or {}).get("DNSName") == (wanted.get("AliasTarget") or {}).get("DNSName")
    ttl = wanted.get("TTL")
    return (
        current.ttl is not None
        and ttl is not None
        and int(current.ttl) == int(ttl)
        and _values(current.records) == _values(wanted.get("ResourceRecords", []))
    )


def validate_batch(zone: Any, changes: list[dict[str, Any]]) -> None:
    """Raise moto's ``InvalidChangeBatch``-coded error when AWS would refuse ``changes`` on ``zone``.

    The changes are checked in order against the zone as the earlier ones leave it, as AWS does.
    """
    from moto.route53.exceptions import Route53ClientError

    def refuse(what: str) -> Route53ClientError:
        return Route53ClientError("InvalidChangeBatch", f"Tried to {what}")

    present = {_key({"Name": r.name, "Type": r.type, "SetIdentifier": r.set_identifier}): r for r in zone.rrsets}
    for change in changes:
        rrset, action = change["ResourceRecordSet"], change["Action"]
        key = _key(rrset)
        label = f"[name='{key[0]}', type='{key[1]}'" + (f", set-identifier='{key[2]}'" if key[2] else "") + "]"
        if action == "DELETE":
            current = present.get(key)
            if current is None:
                raise refuse(f"delete resource record set {label} but it was not found")
            if not _same(current, rrset):
                raise refuse(f"delete resource record set {label} "
                             "but the values provided do not match the current ones")
            del present[key]
        elif action == "CREATE":
            if key in present:
                raise refuse(f"create resource record set {label} but it already exists")
            present[key] = _Pending(rrset)
        elif action == "UPSERT":
            present[key] = _Pending(rrset)


class _Pending:
    """A record set as an earlier change of the same batch leaves it."""

    def __init__(self, rrset: dict[str, Any]) -> None:
        self.ttl = rrset.get("TTL")
        self.records = rrset.get("ResourceRecords", [])
        self.alias_target = rrset.get("AliasTarget")


def install() -> None:
    """Make moto's Route 53 refuse what AWS refuses (idempotent)."""
    global _original
    from moto.route53.models import Route53Backend

    if _original is not None:
        return
    _original = original = Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self: Any, zoneid: str, change_list: list[dict[str, Any]]) -> None:
        validate_batch(self.get_hosted_zone(zoneid), change_list)
        # Validated as AWS does; moto's own CREATE check would refuse a CREATE it has journaled before
        # (a swap back to an earlier value) while the DELETE before it in the batch frees the name.
        # A validated CREATE meets no record set, so UPSERT applies it identically.
        as_upserts = [c | {"Action": "UPSERT"} if c["Action"] == "CREATE" else c for c in change_list]
        return original(self, zoneid, as_upserts)

    Route53Backend.change_resource_record_sets = change_resource_record_sets  # type: ignore[method-assign]


def uninstall() -> None:
    """moto as it comes (tests prove the product also copes with plain moto)."""
    global _original
    from moto.route53.models import Route53Backend

    if _original is not None:
        Route53Backend.change_resource_record_sets = _original  # type: ignore[method-assign]
        _original = None
