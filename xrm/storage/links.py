"""Adding records to a many-to-many field and taking them out, one change at a time: what
a related list's "Add existing" and "Remove" do.

A link change is an ordinary update of the field through the records service, in one
transaction: the record is read as the user may read it, the ids to add are checked
against what the user may read of the target entity (a record they may not read is
answered as missing, as everywhere), and the new set of ids is written with the version
just read, so that two changes made at once cannot lose one another (the second is a
Conflict).  The update applies the update permission on the record, field-level security,
validation and the rest of the write path.

The records service records the change as any other: one audit row with the ids before
and after, and the field's pair of id lists in the ``updated`` event, so that processes
triggered by a change of the field run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .records import Forbidden, Records, ValidationFailed

#: The message for an id the user may not read or that does not exist (the same words as
#: the records service, so that a probe cannot tell the two apart).
MISSING = "a linked record does not exist"


@dataclass(frozen=True)
class LinkChange:
    """What a link change did: the ids linked and unlinked by it (those already linked,
    or not linked, are left out), and the record's ids afterwards."""

    added: tuple[int, ...]
    removed: tuple[int, ...]
    ids: tuple[int, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _ids(values: Iterable) -> set[int]:
    out = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationFailed({"__all__": [f"{value!r} is not a record id"]})
        out.add(value)
    return out


def _link_field(service: Records, field_name: str):
    f = service.entity.fields.get(field_name)
    if f is None or f.type != "many_to_many":
        raise ValidationFailed(
            {"__all__": [f"{service.entity.name} has no many-to-many field {field_name!r}"]}
        )
    if field_name not in service.readable_fields():
        raise Forbidden(f"you may not read {field_name}")
    if field_name not in service.writable_fields():
        raise Forbidden(f"you may not change {field_name}")
    return f


def _check_readable(service: Records, target_name: str, field_name: str, ids: set[int]) -> None:
    """ValidationFailed unless the user may read every one of ``ids`` of the target."""
    if not ids:
        return
    target = Records(
        service.store,
        service.catalog,
        service.catalog.entity(target_name),
        service.user_id,
        tz=service.tz,
        locale=service.locale,
        access=service.access,
    )
    found = target.query(filter=["id", "in", sorted(ids)], fields=["id"], limit=len(ids)).rows
    if len(found) != len(ids):
        raise ValidationFailed({field_name: [MISSING]})


def change_links(
    service: Records,
    record_id: int,
    field_name: str,
    *,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
) -> LinkChange:
    """Link ``add`` to the record's ``field_name`` and unlink ``remove``, as the service's
    user.  Ids already linked (or not linked, for ``remove``) change nothing; a change
    that changes nothing writes nothing, but the user must still be allowed to make it.

    Raises NotFound (a record the user may not read), Forbidden (no update permission on
    it, or the field is closed to them), ValidationFailed (an id to add the user may not
    read or that does not exist, or any rule of the entity) and Conflict (the record
    changed while this ran)."""
    f = _link_field(service, field_name)
    adding, removing = _ids(add), _ids(remove)
    both = adding & removing
    if both:
        raise ValidationFailed(
            {field_name: [f"record {min(both)} is both to be added and to be removed"]}
        )
    with service.store.transaction(service.user_id):
        record = service.get(record_id)
        if service.access is not None:
            service.access.check(service, "update", record)
        _check_readable(service, f.params["to"], field_name, adding)
        before = set(record.get(field_name) or ())
        after = (before | adding) - removing
        change = LinkChange(
            added=tuple(sorted(after - before)),
            removed=tuple(sorted(before - after)),
            ids=tuple(sorted(after)),
        )
        if not change.changed:
            return change
        service.update(record_id, {field_name: sorted(after)}, version=record["version"])
        return change
