"""Inserts without per-statement overhead, for the records service's hot paths.

SQLAlchemy compiles the statement and supplies each column type's bind processor once
per catalog version; each insert (or batch, through the driver's executemany) then goes
straight to the DBAPI cursor.  This removes the execution-context setup and per-row
parameter construction that cost more than the inserts themselves.

On SQLite a batch goes out as multi-row ``INSERT ... VALUES (...), (...)`` statements
rather than an executemany of one-row statements: each statement opens a savepoint, and an
FTS5 index (kept by an ``AFTER INSERT`` trigger) flushes its pending terms to a new
segment at every savepoint, so one statement per row made the full-text index cost three
times the rest of the insert.  One statement per few hundred rows keeps it to one flush.
"""

from __future__ import annotations

import itertools

import sqlalchemy as sa


class CompiledInsert:
    """An INSERT of every column (``id`` only when ``with_id``), compiled for one dialect;
    ``RETURNING id`` when ``returning``."""

    def __init__(
        self, table: sa.Table, dialect: sa.Dialect, *, with_id: bool = False, returning: bool = True
    ):
        self.columns = [c for c in table.columns if with_id or c.name != "id"]
        statement = table.insert().values(
            {c.name: sa.bindparam(c.name, type_=c.type) for c in self.columns}
        )
        if returning:
            statement = statement.returning(table.c.id)
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = dialect.positional
        names = list(compiled.positiontup) if dialect.positional else [c.name for c in self.columns]
        self.names = names
        by_name = {c.name: c for c in self.columns}
        self.processors = [
            (n, by_name[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names
        ]
        self.integrity_error = dialect.dbapi.IntegrityError
        self.copy_sql = None
        if dialect.name == "postgresql" and not returning:
            quote = dialect.identifier_preparer.quote
            columns = ", ".join(quote(n) for n in names)
            self.copy_sql = (
                f"COPY {dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
            )
        # Only the columns with a bind processor need a look at their value; the rest are
        # taken as they are, by one C-level map over the row.
        self._converted = [(i, p) for i, (_n, p) in enumerate(self.processors) if p is not None]
        self._memo = [(object(), None)] * len(self.processors)
        self.multirow = None
        if dialect.name == "sqlite" and not returning and self.positional:
            head, sep, group = self.sql.rpartition(" VALUES ")
            if sep and group.startswith("(") and group.endswith(")"):
                # SQLite takes at most 32,766 parameters a statement (older builds 999)
                most = max(1, min(MULTIROW_MAX, _variable_limit(dialect) // len(names)))
                # the longest statement the limit allows, then fixed smaller ones
                sizes = {most, *(4**k for k in range(5) if 4**k <= most)}
                self.statement_sizes = sorted(sizes, reverse=True)
                self.multirow = (head + sep, group)
                self._multirow_sql: dict[int, str] = {}

    def parameters(self, row: dict, positional: bool = False):
        # NULL stays NULL (no JSON 'null'); a batch shares one timestamp object, so the
        # last conversion per column is remembered by identity.  (A hot loop: kept flat.)
        values = list(map(row.get, self.names))
        memo = self._memo
        for index, processor in self._converted:
            value = values[index]
            if value is None:
                continue
            last = memo[index]
            if last[0] is value:
                values[index] = last[1]
            else:
                out = processor(value)
                # a timestamp shared by the batch, True, False: the same object again
                if type(value) is bool or not isinstance(value, str | int):
                    memo[index] = (value, out)
                values[index] = out
        if self.positional or positional:
            return values
        return dict(zip(self.names, values))

    def _cursor(self, connection: sa.Connection):
        return connection.connection.driver_connection.cursor()

    def execute(self, connection: sa.Connection, row: dict) -> int:
        """Insert one row in the connection's current transaction; returns the new id."""
        cursor = self._cursor(connection)
        try:
            cursor.execute(self.sql, self.parameters(row))
            return cursor.fetchone()[0]
        except self.integrity_error as exc:
            raise sa.exc.IntegrityError(self.sql, None, exc) from exc
        finally:
            cursor.close()

    def execute_converted(self, connection: sa.Connection, values: list[list]) -> None:
        """Insert many rows, each as ``parameters(row, positional=True)`` made it (so that a
        writer thread needs the interpreter only to bind them): SQLite's executemany loops
        in C; PostgreSQL takes them with COPY, several times faster than even a pipelined
        executemany."""
        cursor = self._cursor(connection)
        try:
            if self.copy_sql is not None:
                with cursor.copy(self.copy_sql) as copy:
                    for row in values:
                        copy.write_row(row)
                return
            if self.multirow is not None:
                self._execute_multirow(cursor, values)
                return
            if not self.positional:
                values = [dict(zip(self.names, row)) for row in values]
            cursor.executemany(self.sql, values)
        except self.integrity_error as exc:
            raise sa.exc.IntegrityError(self.sql, None, exc) from exc
        finally:
            cursor.close()

    def _execute_multirow(self, cursor, values: list[list]) -> None:
        # Statements of a few fixed sizes (the longest, then 256, 64, 16, 4 and 1 rows): SQLite
        # keeps each prepared statement, and one per batch length would fill its cache.
        start = 0
        for size in self.statement_sizes:
            while len(values) - start >= size:
                batch = values[start : start + size]
                cursor.execute(
                    self._statement_for(size), list(itertools.chain.from_iterable(batch))
                )
                start += size

    def _statement_for(self, count: int) -> str:
        sql = self._multirow_sql.get(count)
        if sql is None:
            head, group = self.multirow
            sql = self._multirow_sql[count] = head + ", ".join([group] * count)
        return sql


#: Rows in the longest multi-row INSERT on SQLite (fewer, when the table's columns would pass
#: the parameter limit).  An import's 2,000-row chunk of contacts (32 columns) goes out as two
#: statements of 1,000 rather than eight of 256: about 4 us a row less for the insert.
MULTIROW_MAX = 1000


def _variable_limit(dialect: sa.Dialect) -> int:
    """The most parameters one SQLite statement takes (999 before SQLite 3.32)."""
    version = getattr(dialect, "dbapi", None) and dialect.dbapi.sqlite_version_info
    return 32766 if version and tuple(version) >= (3, 32, 0) else 999


def compiled_insert(
    catalog, table: sa.Table, dialect: sa.Dialect, *, with_id: bool = False, returning: bool = True
) -> CompiledInsert:
    """The cached CompiledInsert of a table for this catalog version."""
    key = ("compiled-insert", table.name, dialect.name, with_id, returning)
    return catalog.artifact(
        key, lambda: CompiledInsert(table, dialect, with_id=with_id, returning=returning)
    )


def reserve_ids(connection: sa.Connection, table: sa.Table, count: int) -> list[int]:
    """Ids for ``count`` new rows, taken before inserting them.

    PostgreSQL hands out a block from the table's sequence in one statement.  On SQLite
    the caller holds the write lock (BEGIN IMMEDIATE), so the ids after the current
    maximum are ours until commit.
    """
    if count <= 0:
        return []
    if connection.dialect.name == "postgresql":
        statement = sa.text(  # one row back, however large the block
            "SELECT array_agg(nextval(pg_get_serial_sequence(:table, 'id')))"
            " FROM generate_series(1, :count)"
        )
        return connection.execute(statement, {"table": table.name, "count": count}).scalar_one()
    # Entity tables use AUTOINCREMENT, so ids of deleted records are never handed out
    # again (their audit trail and outbox rows stay theirs): start after the larger of the
    # sequence and the current maximum.
    used = connection.execute(
        sa.text(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = :table), 0), "
            f'coalesce((SELECT max(id) FROM "{table.name}"), 0))'
        ),
        {"table": table.name},
    ).scalar_one()
    return list(range(used + 1, used + 1 + count))
