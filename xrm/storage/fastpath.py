"""Single-row inserts without per-statement overhead, for the records service's hot path.

SQLAlchemy compiles the statement and supplies each column type's bind processor once
per catalog version; each insert then goes straight to the DBAPI cursor.  This removes
the execution-context setup that costs more than the insert itself on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa


class CompiledInsert:
    """``INSERT ... RETURNING id`` for every column but id, compiled for one dialect."""

    def __init__(self, table: sa.Table, dialect: sa.Dialect):
        self.columns = [c for c in table.columns if c.name != "id"]
        statement = table.insert().values({c.name: sa.bindparam(c.name, type_=c.type) for c in self.columns}).returning(table.c.id)
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = dialect.positional
        names = list(compiled.positiontup) if dialect.positional else [c.name for c in self.columns]
        self.names = names
        by_name = {c.name: c for c in self.columns}
        self.processors = [(n, by_name[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names]
        self.integrity_error = dialect.dbapi.IntegrityError

    def parameters(self, row: dict):
        if self.positional:
            return [p(row.get(n)) if p else row.get(n) for n, p in self.processors]
        return {n: (p(row.get(n)) if p else row.get(n)) for n, p in self.processors}

    def execute(self, connection: sa.Connection, row: dict) -> int:
        """Insert one row in the connection's current transaction; returns the new id."""
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.execute(self.sql, self.parameters(row))
            return cursor.fetchone()[0]
        except self.integrity_error as exc:
            raise sa.exc.IntegrityError(self.sql, None, exc) from exc
        finally:
            cursor.close()
