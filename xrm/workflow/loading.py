"""Reading records and users for the engine in batches, inside the engine's transaction."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from ..metadata import Catalog, CoercionError
from ..metadata.evaluate import matches, record_getter
from ..metadata.filters import FilterContext
from ..storage import tables as T
from ..storage.tables import tables_for
from .bulk import among
from .context import Loader

USER_COLUMNS = (
    T.users.c.id,
    T.users.c.name,
    T.users.c.email,
    T.users.c.locale,
    T.users.c.time_zone,
    T.users.c.active,
)


def _as_record(entity, row) -> dict:
    record = dict(row)
    for f in entity.fields.values():
        if f.type == "any_lookup":
            kind, ident = record.pop(f"{f.name}_entity", None), record.pop(f"{f.name}_id", None)
            record[f.name] = {"entity": kind, "id": ident} if ident is not None else None
    return record


def load_records(
    conn: sa.Connection, catalog: Catalog, entity: str, ids: Iterable[int]
) -> dict[int, dict]:
    """id -> record (stored fields and system columns) for the ids that exist."""
    ids = sorted({i for i in ids if i is not None})
    if not ids:
        return {}
    table = tables_for(catalog)[entity]
    model = catalog.entity(entity)
    found = {}
    convert = any(f.type == "any_lookup" for f in model.fields.values())
    columns = T.record_columns(table)  # not the hidden duplicate keys
    names = [c.key for c in columns]
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        result = conn.execute(sa.select(*columns).where(among(conn, table.c.id, chunk)))
        # plain tuples zipped with the names: a RowMapping per row costs more than the zip
        for values in result.all():
            row = dict(zip(names, values, strict=True))
            found[row["id"]] = _as_record(model, row) if convert else row
    return found


def load_users(conn: sa.Connection, ids: Iterable[int]) -> dict[int, dict]:
    ids = sorted({i for i in ids if i is not None})
    if not ids:
        return {}
    rows = conn.execute(sa.select(*USER_COLUMNS).where(T.users.c.id.in_(ids))).mappings()
    return {row["id"]: dict(row) for row in rows}


def loader(conn: sa.Connection, catalog: Catalog) -> Loader:
    return Loader(
        lambda entity, ident: load_records(conn, catalog, entity, [ident]).get(ident),
        lambda ident: load_users(conn, [ident]).get(ident),
    )


def record_matches(tree, record: dict, loader: Loader, ctx: FilterContext) -> bool:
    """The filter language's Python back end, with lookups read through the batch loader."""
    if tree is None:
        return True
    return matches(tree, record_getter(record, loader.record), ctx)


def python_values(catalog: Catalog, entity: str, values: dict) -> dict:
    """Values from an outbox row's JSON (ISO dates...) back as Python values."""
    model = catalog.entity(entity)
    out = {}
    for name, value in values.items():
        f = model.fields.get(name)
        if f is None or value is None:
            out[name] = value
            continue
        try:
            out[name] = f.kind.coerce(f, value)
        except (CoercionError, TypeError, ValueError):
            out[name] = value
    return out
