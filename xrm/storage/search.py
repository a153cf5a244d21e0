"""Full-text search indexes: FTS5 on SQLite, a GIN tsvector expression index on PostgreSQL.

On SQLite an external-content FTS5 table mirrors the searchable columns and triggers keep
it current, so every write path (records service, bulk import, raw SQL) stays indexed.
On PostgreSQL the index is on an expression, which queries repeat (query.tsvector_expression).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from ..metadata import Entity
from .query import fts_table_name, search_fields, tsvector_expression


def index_name(entity: Entity) -> str:
    """The PostgreSQL search index of an entity (schema sync leaves it to this module)."""
    return f"ix_{entity.name}_search"[:60]


def _wanted_columns(entity: Entity) -> list[str]:
    return [f.name for f in search_fields(entity)]


def needs_rebuild(conn: sa.Connection, inspector, entity: Entity) -> bool:
    wanted = _wanted_columns(entity)
    if conn.dialect.name == "postgresql":
        if not wanted:
            return False
        row = conn.execute(
            sa.text(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = :n"
            ),
            {"n": index_name(entity)},
        ).first()
        # an index made before punctuation was taken out is not the expression queries use
        return row is None or _pg_columns(row[0]) != wanted or "regexp_replace" not in row[0]
    name = fts_table_name(entity)
    exists = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type='table' AND name=:n"), {"n": name}
    ).first()
    if not wanted:
        return exists is not None
    return exists is None or _sqlite_signature(wanted) not in exists[0]


def _pg_columns(indexdef: str) -> list[str]:
    """The columns an existing search index covers, in order (each is COALESCEd)."""
    return re.findall(r'COALESCE\("?(\w+)"?,', indexdef)


def _sqlite_signature(columns: list[str]) -> str:
    return "fts5(" + ", ".join(columns) + ","


def rebuild(conn: sa.Connection, entity: Entity, table: sa.Table) -> None:
    columns = _wanted_columns(entity)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index_name(entity)}"'))
        if columns:
            # An expression index needs a table to be created against; a detached copy keeps
            # it out of the catalog's cached Table (whose indexes are the planned ones).
            shadow = table.to_metadata(sa.MetaData())
            index = sa.Index(
                index_name(entity),
                tsvector_expression(shadow, search_fields(entity)),
                postgresql_using="gin",
            )
            shadow.append_constraint(index)
            index.create(conn)
        return
    name = fts_table_name(entity)
    for suffix in ("ai", "ad", "au"):
        conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}_{suffix}"')
    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
    if not columns:
        return
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE \"{name}\" USING fts5({cols}, content='{entity.name}', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    conn.exec_driver_sql(
        f'CREATE TRIGGER "{name}_ai" AFTER INSERT ON "{entity.name}" BEGIN '
        f'INSERT INTO "{name}"(rowid, {cols}) VALUES (new.id, {new}); END'
    )
    conn.exec_driver_sql(
        f'CREATE TRIGGER "{name}_ad" AFTER DELETE ON "{entity.name}" BEGIN '
        f'INSERT INTO "{name}"("{name}", rowid, {cols}) VALUES (\'delete\', old.id, {old}); END'
    )
    conn.exec_driver_sql(
        f'CREATE TRIGGER "{name}_au" AFTER UPDATE OF {cols} ON "{entity.name}" BEGIN '
        f'INSERT INTO "{name}"("{name}", rowid, {cols}) VALUES (\'delete\', old.id, {old}); '
        f'INSERT INTO "{name}"(rowid, {cols}) VALUES (new.id, {new}); END'
    )
    conn.exec_driver_sql(f'INSERT INTO "{name}"("{name}") VALUES (\'rebuild\')')
