"""Writing the records packs ship (``data/`` always, ``demo/`` when asked) inside the
install's own transaction, through the records service: the same coercion, validation,
audit and processes as any write.  A record whose key is already present is updated (only
the fields that differ), so installing or upgrading again never adds a second copy; a
record the file no longer lists is left alone (people may have linked to it).  Any
problem is reported at the record's line and the whole install rolls back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from ..metadata.pack_data import key_fields
from ..metadata.packs import PackSource
from ..metadata.problems import Problems
from ..metadata.source import Position, node_position
from .records import RecordError, ValidationFailed
from .tables import tables_for
from .unit import UnitOfWork

_FALLBACK = Position("<unknown>", 1, 1)


def load_pack_data(
    store, conn: sa.Connection, catalog, packs: Sequence[PackSource], *, demo: bool
) -> tuple[UnitOfWork, dict[str, int]]:
    """Upsert the packs' records; the unit of work (to run its after-commit signals once
    the install commits) and the count of records created or changed per entity."""
    kinds = ("data", "demo") if demo else ("data",)
    unit = UnitOfWork(store, conn, catalog, None)
    pinned, current = store._pinned.set(catalog), store._current.set(unit)
    problems = Problems()
    counts: dict[str, int] = {}
    try:
        for pack in packs:
            for document in pack.documents:
                if document.kind in kinds:
                    _load(store, unit, catalog, document.data, document.kind, problems, counts)
        problems.raise_if_any()
        unit.flush()
    finally:
        store._current.reset(current)
        store._pinned.reset(pinned)
    return unit, counts


def _load(store, unit, catalog, data: Mapping, kind: str, problems, counts) -> None:
    entity = catalog.entity(data[kind])
    table = tables_for(catalog)[entity.name]
    keys = key_fields(data)
    service = store.records(entity.name)
    records = data["records"]
    for index, raw in enumerate(records):
        where = node_position(records, index, _FALLBACK)
        values = {}
        for name, value in raw.items():
            field = entity.fields[name]
            if field.type == "lookup" and isinstance(value, Mapping):
                found = _find(unit, catalog, field.target, value)
                if len(found) != 1:
                    problems.add(
                        node_position(raw, name, where),
                        entity.name,
                        f"{name}: {'no' if not found else len(found)} {field.target} "
                        f"record{'s' if len(found) > 1 else ''} with "
                        + ", ".join(f"{k} = {v!r}" for k, v in value.items()),
                    )
                    continue
                value = found[0]
            values[name] = value
        if len(problems):
            continue
        try:
            key = {k: entity.fields[k].kind.coerce(entity.fields[k], values[k]) for k in keys}
            existing = unit.connection.execute(
                sa.select(table.c.id).where(*(table.c[k] == v for k, v in key.items()))
            ).all()
            if len(existing) > 1:
                problems.add(where, entity.name, f"{len(existing)} records have the key {key}")
                continue
            if existing:
                current = service.get(existing[0].id)
                changed = {
                    k: v
                    for k, v in values.items()
                    if current.get(k) != entity.fields[k].kind.coerce(entity.fields[k], v)
                }
                if changed:
                    service.update(existing[0].id, changed)
                    counts[entity.name] = counts.get(entity.name, 0) + 1
            else:
                service.create(values)
                counts[entity.name] = counts.get(entity.name, 0) + 1
        except ValidationFailed as exc:
            for field_name, messages in exc.errors.items():
                at = node_position(raw, field_name, where) if field_name in raw else where
                problems.add(at, entity.name, f"{field_name}: {'; '.join(messages)}")
        except (RecordError, ValueError, TypeError) as exc:
            problems.add(where, entity.name, str(exc))


def _find(unit, catalog, target: str, fields: Mapping) -> list[int]:
    entity = catalog.entity(target)
    table = tables_for(catalog)[target]
    conditions = []
    for name, value in fields.items():
        field = entity.fields.get(name)
        if field is None:
            return []
        conditions.append(table.c[name] == field.kind.coerce(field, value))
    return [row.id for row in unit.connection.execute(sa.select(table.c.id).where(*conditions))]
