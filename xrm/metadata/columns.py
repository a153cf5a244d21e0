"""SQLAlchemy column types of the field-type registry.

Kept apart from ``fieldtypes`` so that loading and checking definitions (``xrm check``,
every cold start) does not pay for importing SQLAlchemy; storage imports this when it
builds tables.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

UTC = dt.UTC


class UTCDateTime(sa.types.TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC on every database."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text from an expression column
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


def json_column():
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
