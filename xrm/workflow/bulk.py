"""Writing a batch's rows fast: on PostgreSQL, COPY into a session-local staging table and
one set-based INSERT ... ON CONFLICT DO NOTHING (or UPDATE ... FROM); elsewhere, the
driver's executemany.

A worker writes a few rows per instance (its notification, its email, its new state); at
thousands of instances a second, per-row statements cost more than the work itself.
Staging tables are temporary (one set per database session, emptied at each commit), so
they never hold data beyond the transaction that filled them.
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from ..metadata.fieldtypes import UTCDateTime
from . import tables as W

_STAGED = "_xrm_staged"  # per DBAPI connection: staging tables created in this session


def _postgres(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _stage(conn: sa.Connection, table: sa.Table) -> tuple[object, str]:
    raw = conn.connection.driver_connection
    staged = conn.connection.info.setdefault(_STAGED, set())
    name = f"xrm_stage_{table.name}"
    if name not in staged:
        # same columns, no constraints or defaults: rows may carry only some columns
        conn.exec_driver_sql(
            f'CREATE TEMP TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS SELECT * FROM "{table.name}" WITH NO DATA'
        )
        staged.add(name)
    return raw, name


def _copy(conn: sa.Connection, name: str, columns: list[str], rows: list[dict], table) -> None:
    raw = conn.connection.driver_connection
    names = ", ".join(f'"{c}"' for c in columns)
    json_columns = {c.name for c in table.c if isinstance(c.type, sa.JSON)}
    moment_columns = {c.name for c in table.c if isinstance(c.type, UTCDateTime | sa.DateTime)}
    # a converter per column, chosen once: JSON goes as its text (COPY's text format is
    # what the server parses anyway), moments as naive UTC, the rest as they are
    plan = [
        (c, _json if c in json_columns else _moment if c in moment_columns else None)
        for c in columns
    ]
    with raw.cursor() as cursor, cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
        write = copy.write_row
        for row in rows:
            write([row[c] if convert is None else convert(row[c]) for c, convert in plan])


def _moment(value):
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)  # columns hold naive UTC
    return value


def _json(value):
    return None if value is None else _dumps(value)


#: Built once: ``json.dumps`` with options builds an encoder on every call.
_dumps = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":")).encode


def insert_new(conn: sa.Connection, table: sa.Table, rows: list[dict], conflict: list[str]) -> None:
    """Insert rows, skipping any whose ``conflict`` columns are taken already."""
    if not rows:
        return
    if not _postgres(conn):
        conn.execute(
            W.dialect_insert(conn, table).on_conflict_do_nothing(index_elements=conflict), rows
        )
        return
    columns = list(rows[0])
    _raw, name = _stage(conn, table)
    _copy(conn, name, columns, rows, table)
    names = ", ".join(f'"{c}"' for c in columns)
    target = ", ".join(f'"{c}"' for c in conflict)
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{name}" ON CONFLICT ({target}) DO NOTHING'
    )
    conn.exec_driver_sql(f'DELETE FROM "{name}"')


def update_by_id(conn: sa.Connection, table: sa.Table, rows: list[dict], statement) -> None:
    """Update rows by id; ``statement`` is the executemany form for other databases, with
    parameters named ``p_<column>``."""
    if not rows:
        return
    if not _postgres(conn):
        conn.execute(statement, rows)
        return
    columns = [key[2:] for key in rows[0]]
    _raw, name = _stage(conn, table)
    plain = [{key[2:]: value for key, value in row.items()} for row in rows]
    _copy(conn, name, columns, plain, table)
    assignments = ", ".join(f'"{c}" = s."{c}"' for c in columns if c != "id")
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" AS t SET {assignments} FROM "{name}" AS s WHERE t.id = s.id'
    )
    conn.exec_driver_sql(f'DELETE FROM "{name}"')


def among(conn: sa.Connection, column, ids):
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter whatever the
    number of ids (a statement with hundreds of placeholders costs more to parse than to run)."""
    ids = list(ids)
    if _postgres(conn):
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, ids, type_=ARRAY(sa.BigInteger())))
    return column.in_(ids)
