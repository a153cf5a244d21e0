"""The file store: bytes of uploaded files, kept in the database under a random key.

File fields hold only ``{key, name, size, content_type}``; the bytes live here, so every
web worker on every machine serves the same file.  A key is 256 random bits, so knowing
it is what grants a signed-in user the download (the key is only ever shown to users who
may read the record that holds it).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from . import tables as T
from .database import WRITE


def put_file(
    store, data: bytes, name: str, content_type: str | None = None, user_id: int | None = None
) -> dict:
    """Store bytes; returns the value a file field takes."""
    key = secrets.token_urlsafe(32)
    value = {
        "key": key,
        "name": (name or "file").replace("/", "_").replace("\\", "_")[:255],
        "size": len(data),
        "content_type": (content_type or "application/octet-stream")[:128],
    }
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(
            T.files.insert().values(
                data=data, created_by=user_id, created_at=store.clock.now(), **value
            )
        )
    return value


def get_file(store, key: str):
    """The stored file (a row with name, content_type, size, data), or None."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(T.files).where(T.files.c.key == key)).first()
