"""Bringing an existing database's platform tables to the shape this code expects.

``create_all`` makes the platform tables a database lacks but leaves existing ones alone,
so a column added to a platform table in a later release (``xrm_user.session_generation``,
``xrm_token.expires_at``) would be missing from every database created before it.  Added
columns are nullable or have a server default, so adding them is a metadata-only change
on both databases and needs no data migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from . import tables as T


def missing_columns(
    conn: sa.Connection, metadata: sa.MetaData = T.platform
) -> list[tuple[sa.Table, sa.Column]]:
    """Columns of ``metadata``'s tables (default: the platform's) that the database's
    tables lack (one catalog query on PostgreSQL)."""
    names = [table.name for table in metadata.sorted_tables]
    existing = sa.inspect(conn).get_multi_columns(filter_names=names)
    have = {name: {c["name"] for c in columns} for (_schema, name), columns in existing.items()}
    return [
        (table, column)
        for table in metadata.sorted_tables
        if table.name in have
        for column in table.columns
        if column.name not in have[table.name]
    ]


def upgrade_platform(conn: sa.Connection) -> list[str]:
    """Add the missing platform columns; returns ``table.column`` for each one added.

    Runs inside the caller's write transaction, under its schema lock, so two processes
    starting at once do not both add a column."""
    return upgrade_tables(conn, T.platform)


def upgrade_tables(conn: sa.Connection, metadata: sa.MetaData) -> list[str]:
    """Add the columns ``metadata``'s existing tables lack (the workflow engine's tables
    use it too); returns ``table.column`` for each one added."""
    added = []
    operations = None
    for table, column in missing_columns(conn, metadata):
        if column.server_default is None and not column.nullable:
            raise RuntimeError(f"{table.name}.{column.name} needs a server default to be added")
        operations = operations or Operations(MigrationContext.configure(conn))
        default = column.server_default.arg if column.server_default is not None else None
        operations.add_column(
            table.name,
            sa.Column(column.name, column.type, nullable=column.nullable, server_default=default),
        )
        added.append(f"{table.name}.{column.name}")
    return added
