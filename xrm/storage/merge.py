"""Merging two records that are the same thing (duplicates), and undoing a merge.

A merge keeps one record (the *master*) and removes the other, in one transaction:

1. the user must be allowed to update the master and to delete the other record, and may
   choose, for the fields they may write, the other record's value instead of the
   master's (the master's is kept by default);
2. everything that points at the removed record is moved to the master: lookups of every
   entity (found from the catalog), polymorphic ``regarding``-style lookups (activities,
   notes and their attachments) and many-to-many links (both sides).  The referencing
   rows are changed by the platform on the user's behalf, so the user need not be able
   to read them, and each change is an ordinary update of the records service: audited,
   rollups kept, processes told;
3. the other record is deleted through the records service (its audit trail stays under
   its id), the chosen values are written to the master, and a row of ``xrm_merge`` keeps
   what undoing needs: the removed record as stored, the master's values before, and the
   ids that were moved.  ``merge`` and ``merged`` audit rows put it in both histories.
   The deletion's outbox row names the merge, so that the workflow engine moves the
   removed record's waiting processes and SLA clocks to the master instead of cancelling
   them (``workflow/merging.py``).

Undo restores the removed record with its id and values, gives the master back the values
the merge wrote (unless they changed since), and moves back what was moved and still
points at the master; an outbox row tells the workflow engine to bring the record's
processes back.  Both run through the records service's own write steps (coercion,
formulas, rollups, keys of duplicate rules, audit); the restore is the one write that
inserts a row with a given id, which is why it lives here and uses the service's parts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..metadata import CoercionError, Entity, Field
from . import duplicates as D
from . import tables as T
from .records import NotFound, RecordError, Records, ValidationFailed, _jsonable
from .unit import watched_entities

if TYPE_CHECKING:  # pragma: no cover
    from .security import Principal
    from .store import Store
    from .unit import UnitOfWork

#: How a reference points at a record: a lookup column, a polymorphic lookup's two
#: columns, the target side of another entity's many-to-many link table, or the source
#: side of the entity's own many-to-many field.
LOOKUP, ANY_LOOKUP, LINK, OWN_LINK = "lookup", "any_lookup", "link", "own_link"


class MergeRefused(RecordError):
    """A merge or an undo that cannot be done, with the reason (nothing was written)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One place where records of ``entity`` (another or the same) point at the merged
    entity's records."""

    entity: str
    field: str
    kind: str


@dataclass
class MergeResult:
    merge_id: int
    master: dict
    moved: dict[str, int] = field(default_factory=dict)  # entity -> rows moved


@dataclass
class UndoResult:
    merge_id: int
    restored_id: int
    kept: list[str] = field(default_factory=list)  # master fields changed since: not reverted
    moved_back: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------- references
def references(catalog, entity: Entity) -> tuple[Reference, ...]:
    """Everything in the catalog that can point at a record of ``entity``."""

    def build():
        found: list[Reference] = []
        for other, lookup in catalog.children_of(entity.name):
            if lookup.stored:
                found.append(Reference(other.name, lookup.name, LOOKUP))
        for other in catalog.entities.values():
            for f in other.fields.values():
                if f.type == "any_lookup" and f.stored:
                    allowed = f.params.get("to")
                    if not allowed or entity.name in allowed:
                        found.append(Reference(other.name, f.name, ANY_LOOKUP))
                elif f.type == "many_to_many" and f.params.get("to") == entity.name:
                    found.append(Reference(other.name, f.name, LINK))
        for f in entity.fields.values():
            if f.type == "many_to_many":
                found.append(Reference(entity.name, f.name, OWN_LINK))
        return tuple(found)

    return catalog.artifact(("merge-references", entity.name), build)


def _pointing(tables, ref: Reference, entity: str, ident: int):
    """A select of the ids (link sources or targets) of ``ref`` that point at ``ident``."""
    if ref.kind == LOOKUP:
        table = tables[ref.entity]
        return sa.select(table.c.id).where(table.c[ref.field] == ident)
    if ref.kind == ANY_LOOKUP:
        table = tables[ref.entity]
        return sa.select(table.c.id).where(
            table.c[f"{ref.field}_entity"] == entity, table.c[f"{ref.field}_id"] == ident
        )
    link = tables.link(ref.entity, ref.field)
    if ref.kind == LINK:
        return sa.select(link.c.source_id).where(link.c.target_id == ident)
    return sa.select(link.c.target_id).where(link.c.source_id == ident)


def related_counts(
    store: Store, entity_name: str, record_id: int, *, principal: Principal | None = None
) -> list[tuple[Reference, int]]:
    """How many rows of each reference point at a record: what a merge would move.
    Without a principal the platform's count; for a reader only the rows they may read,
    through references they may read (the merge moves them all, but a count of records
    the reader may not see would tell them those records exist)."""
    catalog = store.refresh()
    entity = catalog.entity(entity_name)
    tables = T.tables_for(catalog)
    out = []
    with store.engine.connect() as conn:
        for ref in references(catalog, entity):
            pointing = _pointing(tables, ref, entity.name, record_id)
            if principal is not None:
                pointing = _readable(store, catalog, ref, principal, pointing)
                if pointing is None:
                    continue
            inner = pointing.subquery()
            count = conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one()
            if count:
                out.append((ref, count))
    return out


def _counted_entity(catalog, ref: Reference) -> tuple[str, str]:
    """(the entity whose records a reference's ids name, the entity holding the field)."""
    if ref.kind == OWN_LINK:
        return catalog.entity(ref.entity).fields[ref.field].params["to"], ref.entity
    return ref.entity, ref.entity


def _readable(store: Store, catalog, ref: Reference, principal: Principal, ids):
    """``ids`` (a select of one id column) narrowed to the records ``principal`` may read,
    or None when they may not read the entity or the referencing field at all."""
    counted, holder = _counted_entity(catalog, ref)
    holder_records = store.records(holder, principal=principal)
    if ref.field in holder_records.access.hidden(holder_records.entity):
        return None
    records = store.records(counted, principal=principal)
    if records.access.scopes_of(counted, "read") <= {"none"}:
        return None
    builder = records.builder()
    scope = records.scope(builder)
    if scope is None:
        return ids
    table = records.table
    inner = ids.subquery()
    return (
        sa.select(table.c.id)
        .select_from(builder.from_clause)
        .where(table.c.id.in_(sa.select(inner.c[0])), scope)
    )


def _moved_count(
    store: Store, catalog, ref: Reference, ids: list[int], principal: Principal | None
) -> int:
    """How many of the ids a merge moved through ``ref`` the principal may read (all of
    them for the platform; none through a reference gone from the catalog)."""
    if principal is None:
        return len(ids)
    holder = catalog.entity_of(ref.entity)
    if not ids or holder is None or ref.field not in holder.fields:
        return 0
    counted, _holder = _counted_entity(catalog, ref)
    table = T.tables_for(catalog)[counted]
    total = 0
    for start in range(0, len(ids), 500):
        pointing = sa.select(table.c.id).where(table.c.id.in_(ids[start : start + 500]))
        readable = _readable(store, catalog, ref, principal, pointing)
        if readable is None:
            return 0
        with store.engine.connect() as conn:
            total += conn.execute(
                sa.select(sa.func.count()).select_from(readable.subquery())
            ).scalar_one()
    return total


def snapshot_readable(users: Records, record: Mapping) -> bool:
    """Whether the reader could read a record as it was kept in a merge's copy of it (its
    values and system columns): their read scope checked on those values, the check every
    write makes on a loaded record.  The record itself is gone, so no query can say."""
    from .records import Forbidden

    if users.access is None:
        return True
    values = {**(record.get("system") or {}), **(record.get("values") or {})}
    try:
        users.access.check(users, "read", values)
    except Forbidden:
        return False
    return True


# ---------------------------------------------------------------------------- helpers
def _services(store: Store, entity: str, principal: Principal | None, user_id: int | None):
    """The caller's records service (their permissions) and the platform's, writing as
    the same user (so audit rows name them) and reading values as the user writes them."""
    uid = principal.user_id if principal is not None else user_id
    if principal is None:
        return store.records(entity, uid), store.records(entity, uid), uid
    users = store.records(entity, principal=principal)
    system = Records(
        store, users.catalog, users.entity, uid, tz=principal.tz, locale=principal.locale
    )
    return users, system, uid


def _json_record(entity: Entity, record: Mapping) -> dict:
    """A record as stored, as JSON: field values and the system columns."""
    values = {}
    for name, value in record.items():
        f = entity.fields.get(name)
        if f is not None:
            values[name] = _jsonable(f, value)
    system = {}
    for name in ("created_at", "created_by", "updated_at", "updated_by", "owner", "version"):
        value = record.get(name)
        system[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return {"values": values, "system": system}


def _from_json(f: Field, value):
    if value is None:
        return None
    try:
        return f.kind.coerce(f, value)
    except (CoercionError, ValueError, TypeError, ArithmeticError):
        return value  # the field changed since: the stored value as it was


def _moment(text) -> dt.datetime | None:
    if text is None:
        return None
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _audit(unit: UnitOfWork, entity: Entity, record_id, action, field_name, old, new, uid):
    if entity.audit:
        unit.audit_rows.append(
            {
                "entity": entity.name,
                "record_id": record_id,
                "action": action,
                "field": field_name,
                "old": old,
                "new": new,
                "user_id": uid,
                "at": unit.now,
            }
        )


def _merge_note(unit: UnitOfWork, entity: str, record_id: int, event: str, merge: dict) -> None:
    """Tell the workflow engine that the removed record's ``deleted`` outbox row was this
    merge, or (``restored``) that an undo brought the record back: a ``_merge`` key in
    the row's changes.  Entities no process or SLA watches have no outbox rows."""
    if event == "deleted":
        for row in reversed(unit.outbox_rows):
            if (row["event"], row["entity"], row["record_id"]) == (event, entity, record_id):
                row["changes"] = {**(row["changes"] or {}), "_merge": merge}
                return
        return
    if entity in watched_entities(unit.catalog):
        # not record_event: a restore is no signal's business, only the engine's
        unit.outbox_rows.append(
            {
                "entity": entity,
                "record_id": record_id,
                "event": event,
                "changes": {"_merge": merge},
                "user_id": unit.user_id,
                "at": unit.now,
                "processed_at": None,
            }
        )


def _update_as_platform(store: Store, entity_name: str, uid, ident: int, values: dict) -> None:
    """A referencing record changed by the merge (or its undo): the records service as the
    platform, so the user need not read the record, audited under the user's name."""
    try:
        store.records(entity_name, uid).update(ident, values)
    except ValidationFailed as exc:
        raise MergeRefused(f"{entity_name} #{ident} cannot be moved: {exc}") from None


def _links_of(conn, link: sa.Table, sources: Iterable[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {s: [] for s in sources}
    if out:
        rows = conn.execute(
            sa.select(link.c.source_id, link.c.target_id)
            .where(link.c.source_id.in_(list(out)))
            .order_by(link.c.source_id, link.c.target_id)
        )
        for source, target in rows:
            out[source].append(target)
    return out


def _choices(
    users: Records, master: dict, merged: dict, values: Mapping | None, take: Sequence[str]
) -> dict:
    """The values to write to the master: ``values`` as given and the ``take`` fields'
    values of the other record; only fields the caller may write, one value each."""
    entity = users.entity
    choosable = {
        name
        for name in users.writable_fields()
        if entity.fields[name].stored and entity.fields[name].type != "many_to_many"
    }
    errors: dict[str, list[str]] = {}
    chosen: dict[str, Any] = {}
    for name, value in [*(values or {}).items(), *((n, merged.get(n)) for n in take)]:
        if name not in entity.fields:
            errors.setdefault(name, []).append("unknown field")
        elif name not in choosable:
            errors.setdefault(name, []).append("cannot be chosen in a merge")
        elif name in chosen:
            errors.setdefault(name, []).append("chosen twice")
        else:
            chosen[name] = value
    if errors:
        raise ValidationFailed(errors)
    return chosen


def _points_at(entity: Entity, f: Field, value, ids: set[int]) -> bool:
    """Whether a value of the entity's field ``f`` names one of its records ``ids``."""
    if value is None:
        return False
    if f.type == "lookup" and f.stored and f.params.get("to") == entity.name:
        return value in ids
    if f.type == "any_lookup" and isinstance(value, Mapping):
        return value.get("entity") == entity.name and value.get("id") in ids
    return False


# ------------------------------------------------------------------------------- merge
def merge(
    store: Store,
    entity_name: str,
    master_id: int,
    merged_id: int,
    *,
    values: Mapping[str, Any] | None = None,
    take: Sequence[str] = (),
    principal: Principal | None = None,
    user_id: int | None = None,
) -> MergeResult:
    """Merge record ``merged_id`` into ``master_id`` (see the module's description).

    ``values``: field -> value to give the master; ``take``: fields whose value comes from
    the merged record.  Raises NotFound (a record the caller cannot read), Forbidden,
    ValidationFailed (a field that cannot be chosen, or a value the master refuses) or
    MergeRefused; in every case nothing is written."""
    if master_id == merged_id:
        raise MergeRefused("a record cannot be merged into itself")
    users, system, uid = _services(store, entity_name, principal, user_id)
    entity, catalog = system.entity, system.catalog
    tables = T.tables_for(catalog)
    with store.transaction(uid) as unit:
        for ident in (master_id, merged_id):
            users.get(ident, fields=["id"])  # NotFound unless the caller may read it
        master = system._load_for_write(unit, master_id)
        merged = system._load_for_write(unit, merged_id)
        if users.access is not None:
            users.access.check(users, "update", master)
            users.access.check(users, "delete", merged)
        chosen = _choices(users, master, merged, values, take)
        snapshot = _json_record(entity, merged)
        conn = unit.connection
        snapshot["links"] = {
            f.name: list(
                conn.execute(
                    sa.select(tables.link(entity.name, f.name).c.target_id)
                    .where(tables.link(entity.name, f.name).c.source_id == merged_id)
                    .order_by(tables.link(entity.name, f.name).c.target_id)
                ).scalars()
            )
            for f in entity.fields.values()
            if f.type == "many_to_many"
        }
        # A pointer of the master's at either record would point at itself: cleared.
        pair = {master_id, merged_id}
        for f in entity.fields.values():
            if _points_at(entity, f, chosen.get(f.name, master.get(f.name)), pair):
                chosen[f.name] = None
        chosen = {n: v for n, v in chosen.items() if v != master.get(n)}
        # Those that point at the other record now change before it goes (a restrict
        # lookup would stop the delete; set_null would clear it unaudited).
        early = {
            n: v
            for n, v in chosen.items()
            if _points_at(entity, entity.fields[n], master.get(n), {merged_id})
        }
        if early:
            system.update(master_id, early)
        moved = _move(store, unit, entity, tables, uid, merged_id, master_id)
        (users if principal is not None else system).delete(merged_id)
        rest = {n: v for n, v in chosen.items() if n not in early}
        after = system.update(master_id, rest) if rest else system._load_for_write(unit, master_id)
        changes = {
            name: [
                _jsonable(entity.fields[name], master.get(name)),
                _jsonable(entity.fields[name], after.get(name)),
            ]
            for name in chosen
            if after.get(name) != master.get(name)
        }
        merge_id = conn.execute(
            T.merges.insert()
            .values(
                entity=entity.name,
                master_id=master_id,
                merged_id=merged_id,
                user_id=uid,
                at=unit.now,
                record=snapshot,
                master=changes,
                moved=moved,
            )
            .returning(T.merges.c.id)
        ).scalar_one()
        # The workflow engine reads the removed record's deletion from the outbox: told it
        # was this merge, it moves the record's waiting processes to the master instead of
        # cancelling them (xrm/workflow/merging.py).
        _merge_note(unit, entity.name, merged_id, "deleted", {"id": merge_id, "into": master_id})
        _audit(
            unit,
            entity,
            master_id,
            "merge",
            None,
            None,
            {"merge": merge_id, "from": merged_id},
            uid,
        )
        _audit(
            unit,
            entity,
            merged_id,
            "merged",
            None,
            None,
            {"merge": merge_id, "into": master_id},
            uid,
        )
    # what moved, as far as the caller may read it (the platform: all of it)
    back = [
        (Reference(i["entity"], i["field"], i["kind"]), [int(x) for x in i["ids"]]) for i in moved
    ]
    return MergeResult(merge_id, users.get(master_id), _counts(store, catalog, back, principal))


def _counts(store: Store, catalog, moved, principal: Principal | None) -> dict[str, int]:
    """Entity -> how many of the (reference, ids) a merge or its undo moved the principal
    may read: a count of records they may not read would tell them those records exist."""
    counts: dict[str, int] = {}
    for ref, ids in moved:
        count = _moved_count(store, catalog, ref, ids, principal)
        if count:
            counts[ref.entity] = counts.get(ref.entity, 0) + count
    return counts


def _move(store, unit, entity: Entity, tables, uid, merged_id: int, master_id: int) -> list[dict]:
    """Point everything that points at ``merged_id`` at ``master_id``; returns what moved
    (what an undo moves back)."""
    conn = unit.connection
    catalog = store.refresh()
    moved: list[dict] = []
    for ref in references(catalog, entity):
        select = _pointing(tables, ref, entity.name, merged_id)
        if ref.kind == LOOKUP or ref.kind == ANY_LOOKUP:
            if ref.entity == entity.name:  # the two records themselves are not moved
                table = tables[ref.entity]
                select = select.where(table.c.id.notin_([merged_id, master_id]))
            ids = list(conn.execute(select.order_by(select.selected_columns[0])).scalars())
            target = master_id if ref.kind == LOOKUP else {"entity": entity.name, "id": master_id}
            for ident in ids:
                _update_as_platform(store, ref.entity, uid, ident, {ref.field: target})
            if ids:
                moved.append(
                    {"kind": ref.kind, "entity": ref.entity, "field": ref.field, "ids": ids}
                )
            continue
        link = tables.link(ref.entity, ref.field)
        other = catalog.entity(ref.entity)
        if ref.kind == LINK:
            sources = list(conn.execute(select.order_by(link.c.source_id)).scalars())
            if ref.entity == entity.name:
                sources = [s for s in sources if s != merged_id]  # its own links go with it
            if not sources:
                continue
            before = _links_of(conn, link, sources)
            had = [s for s in sources if master_id in before[s]]
            conn.execute(
                link.delete().where(link.c.target_id == merged_id, link.c.source_id.in_(sources))
            )
            added = [
                {"source_id": s, "target_id": master_id}
                for s in sources
                if s not in had and not (ref.entity == entity.name and s == master_id)
            ]
            if added:
                conn.execute(link.insert(), added)
            after = _links_of(conn, link, sources)
            for s in sources:
                _audit(unit, other, s, "update", ref.field, before[s], after[s], uid)
            moved.append(
                {"kind": LINK, "entity": ref.entity, "field": ref.field, "ids": sources, "had": had}
            )
        else:  # the merged record's own links: the master gets those it lacks
            targets = list(conn.execute(select.order_by(link.c.target_id)).scalars())
            before = _links_of(conn, link, [master_id])[master_id]
            skip = (
                {master_id, merged_id}
                if ref.entity == entity.name
                and other.fields[ref.field].params.get("to") == entity.name
                else set()
            )
            added = [t for t in targets if t not in before and t not in skip]
            if not added:
                continue
            conn.execute(link.insert(), [{"source_id": master_id, "target_id": t} for t in added])
            _audit(
                unit, entity, master_id, "update", ref.field, before, sorted([*before, *added]), uid
            )
            moved.append({"kind": OWN_LINK, "entity": ref.entity, "field": ref.field, "ids": added})
    return moved


# -------------------------------------------------------------------------------- undo
def undo(
    store: Store,
    entity_name: str,
    merge_id: int,
    *,
    principal: Principal | None = None,
    user_id: int | None = None,
) -> UndoResult:
    """Undo a merge: the removed record back with its id and values, the master's values
    the merge wrote reverted (those changed since are kept and named in the result), and
    what was moved and still points at the master moved back.  Needs update on the master
    and create on the entity; all or nothing."""
    users, system, uid = _services(store, entity_name, principal, user_id)
    entity, catalog = system.entity, system.catalog
    tables = T.tables_for(catalog)
    m = T.merges
    with store.transaction(uid) as unit:
        conn = unit.connection
        row = (
            conn.execute(
                sa.select(m).where(m.c.id == merge_id, m.c.entity == entity.name).with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"{entity.name} merge", merge_id)
        if row["undone_at"] is not None:
            raise MergeRefused("this merge was undone already")
        master_id, merged_id = row["master_id"], row["merged_id"]
        try:
            users.get(master_id, fields=["id"])
            master = system._load_for_write(unit, master_id)
        except NotFound:
            raise MergeRefused(
                f"the kept {entity.name} #{master_id} no longer exists (undo the merge that"
                " removed it first)"
            ) from None
        if users.access is not None:
            users.access.check(users, "update", master)
            users.access.check(users, "create", None)
        taken = conn.execute(
            sa.select(tables[entity.name].c.id).where(tables[entity.name].c.id == merged_id)
        ).first()
        if taken is not None:
            raise MergeRefused(f"a {entity.name} with id {merged_id} exists")
        # 1. the master's values, except pointers at the removed record (it is not back yet)
        revert, later, kept = {}, {}, []
        for name, (before, after) in (row["master"] or {}).items():
            f = entity.fields.get(name)
            if f is None or not f.stored:
                continue
            if master.get(name) != _from_json(f, after):
                kept.append(name)
                continue
            value = _from_json(f, before)
            (later if _points_at(entity, f, value, {merged_id}) else revert)[name] = value
        if revert:
            system.update(master_id, revert)
        # 2. the removed record, as it was stored
        _restore(store, system, unit, row["record"], merged_id)
        # its processes: those the merge moved to the master and still waiting there come
        # back, those it cancelled wait again (the workflow engine, from the outbox)
        _merge_note(unit, entity.name, merged_id, "restored", {"id": merge_id, "into": master_id})
        # 3. what was moved, where it still points at the master
        moved_back = _move_back(store, unit, entity, tables, uid, row["moved"] or [], row)
        if later:
            system.update(master_id, later)
        conn.execute(m.update().where(m.c.id == merge_id).values(undone_at=unit.now, undone_by=uid))
        _audit(
            unit,
            entity,
            master_id,
            "unmerge",
            None,
            None,
            {"merge": merge_id, "from": merged_id},
            uid,
        )
    return UndoResult(merge_id, merged_id, kept, _counts(store, catalog, moved_back, principal))


def _restore(store: Store, system: Records, unit: UnitOfWork, snapshot: dict, ident: int) -> None:
    """Insert the removed record again under its own id."""
    entity, conn, now = system.entity, unit.connection, unit.now
    tables = system.tables
    record: dict[str, Any] = {}
    for name, value in snapshot["values"].items():
        f = entity.fields.get(name)
        if f is None or not f.stored or f.type == "many_to_many":
            continue
        record[name] = _from_json(f, value)
    # Rollups start empty: the children moved back below add themselves, as on create.
    for f in entity.fields.values():
        if f.rollup is not None and f.stored:
            record[f.name] = f.kind.coerce(f, 0) if f.rollup.aggregate in ("sum", "count") else None
    # A lookup whose record was deleted since is cleared, as its deletion would have done.
    for f in system.plan.lookups:
        target = record.get(f.name)
        if target is None or target == ident or f.on_delete != "set_null":
            continue
        table = tables[f.params["to"]]
        if conn.execute(sa.select(table.c.id).where(table.c.id == target)).first() is None:
            record[f.name] = None
    system._compute(record, now)
    given = snapshot["system"]
    owner = given.get("owner")
    if owner is not None:
        found = conn.execute(sa.select(T.users.c.id).where(T.users.c.id == owner)).first()
        owner = owner if found else None
    record.update(
        id=ident,
        owner=owner,
        created_at=_moment(given.get("created_at")) or now,
        created_by=given.get("created_by"),
        updated_at=now,
        updated_by=system.user_id,
        version=int(given.get("version") or 0) + 1,
    )
    row = system._columns(record)
    if entity.duplicates:
        row.update(D.keys_for(system.catalog, entity).all(record))
    row.update(
        {
            n: record[n]
            for n in ("id", "created_at", "created_by", "updated_at", "updated_by", "version")
        }
    )
    try:
        with conn.begin_nested():
            conn.execute(system.table.insert().values(row))
    except sa.exc.IntegrityError as exc:
        failed = system._integrity(exc, unit, [row])
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in getattr(failed, "errors", {}).items())
        raise MergeRefused(
            f"the removed {entity.name} cannot be restored: {detail or failed}"
        ) from None
    for name, targets in (snapshot.get("links") or {}).items():
        f = entity.fields.get(name)
        if f is None or f.type != "many_to_many" or not targets:
            continue
        table = tables[f.params["to"]]
        alive = set(conn.execute(sa.select(table.c.id).where(table.c.id.in_(targets))).scalars())
        rows = [{"source_id": ident, "target_id": t} for t in targets if t in alive]
        if rows:
            conn.execute(tables.link(entity.name, name).insert(), rows)
    system._after_write(unit, [record], None, now)
    _audit(unit, entity, ident, "restore", None, None, system._snapshot(record), system.user_id)


def _move_back(
    store, unit, entity: Entity, tables, uid, moved: list, row
) -> list[tuple[Reference, list[int]]]:
    """Move back what a merge moved and still points at the master: each reference with
    the ids moved back (link sources, or for the master's own links their targets)."""
    conn = unit.connection
    catalog = store.refresh()
    master_id, merged_id = row["master_id"], row["merged_id"]
    out: list[tuple[Reference, list[int]]] = []
    for item in moved:
        kind, name, field_name = item["kind"], item["entity"], item["field"]
        other = catalog.entity_of(name)
        if other is None or field_name not in other.fields:
            continue  # the definition went away since
        ids = [int(i) for i in item["ids"]]
        done: list[int] = []
        if kind in (LOOKUP, ANY_LOOKUP):
            ref = Reference(name, field_name, kind)
            table = tables[name]
            still = _pointing(tables, ref, entity.name, master_id).where(table.c.id.in_(ids))
            back = merged_id if kind == LOOKUP else {"entity": entity.name, "id": merged_id}
            for ident in conn.execute(still.order_by(table.c.id)).scalars():
                _update_as_platform(store, name, uid, ident, {field_name: back})
                done.append(ident)
        elif kind == LINK:
            link = tables.link(name, field_name)
            source_table = tables[name]
            alive = set(
                conn.execute(
                    sa.select(source_table.c.id).where(source_table.c.id.in_(ids))
                ).scalars()
            )
            sources = [s for s in ids if s in alive]
            before = _links_of(conn, link, sources)
            had = set(item.get("had") or ())
            for s in sources:
                if merged_id not in before[s]:
                    conn.execute(link.insert().values(source_id=s, target_id=merged_id))
                if s not in had and master_id in before[s]:
                    conn.execute(
                        link.delete().where(link.c.source_id == s, link.c.target_id == master_id)
                    )
            after = _links_of(conn, link, sources)
            for s in sources:
                if before[s] != after[s]:
                    _audit(unit, other, s, "update", field_name, before[s], after[s], uid)
                    done.append(s)
        else:  # OWN_LINK: the links the master got from the removed record
            link = tables.link(name, field_name)
            before = _links_of(conn, link, [master_id])[master_id]
            gone = [t for t in ids if t in before]
            if gone:
                conn.execute(
                    link.delete().where(link.c.source_id == master_id, link.c.target_id.in_(gone))
                )
                after = [t for t in before if t not in gone]
                _audit(unit, entity, master_id, "update", field_name, before, after, uid)
                done = gone
        if done:
            out.append((Reference(name, field_name, kind), done))
    return out


# ----------------------------------------------------------------------------- reading
def merges_of(store: Store, entity_name: str, record_id: int) -> list[dict]:
    """The merges a record took part in (kept or removed), newest first."""
    m = T.merges
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.id, m.c.master_id, m.c.merged_id, m.c.user_id, m.c.at, m.c.undone_at)
            .where(
                m.c.entity == entity_name,
                sa.or_(m.c.master_id == record_id, m.c.merged_id == record_id),
            )
            .order_by(m.c.id.desc())
        ).mappings()
        return [dict(r) for r in rows]


def load(store: Store, entity_name: str, merge_id: int, *, principal: Principal | None = None):
    """One merge as its reader may see it: None unless they may read the kept record (or,
    once undone, either record).  The removed record's values and the master's changes
    leave out the fields hidden from the reader."""
    catalog = store.refresh()
    entity = catalog.entity(entity_name)
    m = T.merges
    with store.engine.connect() as conn:
        row = (
            conn.execute(sa.select(m).where(m.c.id == merge_id, m.c.entity == entity.name))
            .mappings()
            .first()
        )
    if row is None:
        return None
    users = (
        store.records(entity.name, principal=principal) if principal else store.records(entity.name)
    )
    reads: set[int] = set()
    for ident in (row["master_id"], row["merged_id"]):
        try:
            users.get(ident, fields=["id"])
            reads.add(ident)
        except NotFound:
            continue
    if not reads:
        return None
    hidden = users.access.hidden(entity) if users.access is not None else set()
    merge = dict(row)
    record = row["record"]
    # the removed record's values and history only for a reader who could read it (the
    # kept record being theirs does not make the other one theirs)
    merge["readable"] = snapshot_readable(users, record)
    merge["values"] = (
        {
            n: _from_json(entity.fields[n], v)
            for n, v in record["values"].items()
            if n in entity.fields and n not in hidden
        }
        if merge["readable"]
        else {}
    )
    merge["system"] = record["system"] if merge["readable"] else {}
    # the kept record's values before and after, only for a reader of the kept record
    # (after an undo, a reader of the restored one alone may open the merge too)
    master_readable = row["master_id"] in reads
    merge["changes"] = {
        n: (_from_json(entity.fields[n], b), _from_json(entity.fields[n], a))
        for n, (b, a) in (row["master"] or {}).items()
        if master_readable and n in entity.fields and n not in hidden
    }
    counts: dict[str, int] = {}
    for item in row["moved"] or []:
        ref = Reference(item["entity"], item["field"], item["kind"])
        count = _moved_count(store, catalog, ref, [int(i) for i in item["ids"]], principal)
        if count:
            counts[item["entity"]] = counts.get(item["entity"], 0) + count
    merge["counts"] = counts
    merge["history"] = _trail(store, entity, row["merged_id"], hidden) if merge["readable"] else []
    return merge


def _trail(store: Store, entity: Entity, record_id: int, hidden: set[str]) -> list[dict]:
    """A record's audit trail, oldest first, even once it is gone (the removed record's)."""
    a = T.audit
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(a.c.action, a.c.field, a.c.old, a.c.new, a.c.user_id, a.c.at)
            .where(a.c.entity == entity.name, a.c.record_id == record_id)
            .order_by(a.c.id)
        ).mappings()
        out = []
        for row in rows:
            entry = dict(row)
            if entry["field"] in hidden:
                continue
            for key in ("old", "new"):
                if isinstance(entry[key], dict) and hidden:
                    entry[key] = {k: v for k, v in entry[key].items() if k not in hidden}
            out.append(entry)
        return out


def summaries(store: Store, entity_name: str, merge_ids: Iterable[int]) -> dict[int, dict]:
    """A few merges at once (a history page's): ids, when undone, and the removed
    record's stored values (typed), without access checks (the caller's page has them)."""
    catalog = store.refresh()
    entity = catalog.entity(entity_name)
    m = T.merges
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.id, m.c.master_id, m.c.merged_id, m.c.undone_at, m.c.record).where(
                m.c.entity == entity.name, m.c.id.in_(list(merge_ids))
            )
        ).mappings()
        out = {}
        for row in rows:
            values = {
                n: _from_json(entity.fields[n], v)
                for n, v in row["record"]["values"].items()
                if n in entity.fields
            }
            out[row["id"]] = {**row, "values": values}
        return out
