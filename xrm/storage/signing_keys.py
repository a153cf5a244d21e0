"""Signing keys kept in the organization's settings: one per purpose (unsubscribe links,
form links), made at first use by whichever process comes first, so that the worker that
writes an email and every web process that serves its link sign with the same key."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import tables as T


def signing_key(conn: sa.Connection, setting: str) -> str:
    """The key stored under ``setting``, made (once, whoever comes first) when missing."""
    found = conn.execute(
        sa.select(T.settings.c.value).where(T.settings.c.key == setting)
    ).scalar_one_or_none()
    if isinstance(found, str) and found:
        return found
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(T.settings)
    # two processes making it at once: the first insert wins, both read what it wrote
    conn.execute(
        insert.values(key=setting, value=secrets.token_urlsafe(48)).on_conflict_do_nothing(
            index_elements=["key"]
        )
    )
    return conn.execute(
        sa.select(T.settings.c.value).where(T.settings.c.key == setting)
    ).scalar_one()
