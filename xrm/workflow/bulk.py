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
from operator import itemgetter

import sqlalchemy as sa

from ..metadata.fieldtypes import UTCDateTime
from . import tables as W

_FILLED = "_xrm_filled"  # per DBAPI connection: (transaction, staging tables it filled)


def _postgres(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _stage(conn: sa.Connection, table: sa.Table) -> str:
    """The staging table for ``table``, empty.  Temporary tables live as long as the
    session, and commits and rollbacks empty them; but one created in a transaction that
    rolled back is gone, so each transaction says ``IF NOT EXISTS`` once (a note per
    session would believe it still there).  Emptied here only when this transaction
    filled it already (a batch inserts new instances and updates the claimed ones)."""
    info = conn.connection.info
    name = f"xrm_stage_{table.name}"
    # the transaction object names it: an id reused after a transaction ended costs only
    # a needless statement
    transaction = id(conn.get_transaction())
    used = info.get(_FILLED)
    if used is None or used[0] != transaction:
        used = info[_FILLED] = (transaction, set())
    if name in used[1]:
        conn.exec_driver_sql(f'DELETE FROM "{name}"')
    else:
        # same columns, no constraints or defaults: rows may carry only some columns
        conn.exec_driver_sql(
            f'CREATE TEMP TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS SELECT * FROM "{table.name}" WITH NO DATA'
        )
        used[1].add(name)
    return name


def _copy(conn: sa.Connection, name: str, columns: list[str], rows: list[dict], table) -> None:
    raw = conn.connection.driver_connection
    names = ", ".join(f'"{c}"' for c in columns)
    kinds = _plan(table, tuple(columns))
    texts: dict = {}  # moment -> its text, for this copy: a batch's rows share their moments

    def moment(value):
        if value is None:
            return None
        text = texts.get(value)
        if text is None:
            text = texts[value] = _moment_text(value)
        return text

    converted = [
        (index, _json if kind == "json" else moment)
        for index, kind in enumerate(kinds)
        if kind is not None
    ]
    values_of = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
        write = copy.write_row
        for row in rows:
            values = list(values_of(row))
            for index, convert in converted:
                values[index] = convert(values[index])
            write(values)


_PLANS: dict = {}


def _plan(table: sa.Table, columns: tuple) -> list:
    """What each column carries (json, moment, None: anything else), found once per table
    and columns.  JSON goes as its text (COPY's text format is what the server parses
    anyway), moments as the text of naive UTC: the driver would ask each one for its ISO
    text, which costs more than the rest of its row."""
    key = (table.name, columns)
    plan = _PLANS.get(key)
    if plan is None:
        kinds = {}
        for c in table.c:
            if isinstance(c.type, sa.JSON):
                kinds[c.name] = "json"
            elif isinstance(c.type, UTCDateTime | sa.DateTime):
                kinds[c.name] = "moment"
        plan = _PLANS[key] = [kinds.get(c) for c in columns]
    return plan


def _moment_text(value) -> str:
    """A moment as the text of naive UTC (what the columns hold)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(" ")
    return value.isoformat()


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
    name = _stage(conn, table)
    _copy(conn, name, columns, rows, table)
    names = ", ".join(f'"{c}"' for c in columns)
    target = ", ".join(f'"{c}"' for c in conflict)
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{name}" ON CONFLICT ({target}) DO NOTHING'
    )


def update_by_id(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """Update rows by their ``id``; every row names the same columns."""
    if not rows:
        return
    columns = list(rows[0])
    if not _postgres(conn):
        statement = _update_statement(table, tuple(columns))
        conn.execute(statement, [{f"p_{k}": v for k, v in row.items()} for row in rows])
        return
    name = _stage(conn, table)
    _copy(conn, name, columns, rows, table)
    assignments = ", ".join(f'"{c}" = s."{c}"' for c in columns if c != "id")
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" AS t SET {assignments} FROM "{name}" AS s WHERE t.id = s.id'
    )


_UPDATES: dict = {}


def _update_statement(table: sa.Table, columns: tuple):
    """``UPDATE table SET c = :p_c ... WHERE id = :p_id`` for executemany, built once per
    table and columns (SQLAlchemy reserves a column's own name for its SET value)."""
    key = (table.name, columns)
    statement = _UPDATES.get(key)
    if statement is None:
        statement = _UPDATES[key] = (
            table.update()
            .where(table.c.id == sa.bindparam("p_id", type_=table.c.id.type))
            .values(
                {
                    table.c[c]: sa.bindparam(f"p_{c}", type_=table.c[c].type)
                    for c in columns
                    if c != "id"
                }
            )
        )
    return statement


def among(conn: sa.Connection, column, ids):
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter whatever the
    number of ids (a statement with hundreds of placeholders costs more to parse than to run)."""
    ids = list(ids)
    if _postgres(conn):
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, ids, type_=ARRAY(sa.BigInteger())))
    return column.in_(ids)
