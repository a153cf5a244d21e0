"""The file store: bytes of uploaded files, kept in the database under a random key.

File fields hold only ``{key, name, size, content_type}``; the bytes live here, so every
web worker on every machine serves the same file.  A key is 256 random bits, but knowing
it is not enough: a download needs the right to read a record holding the file (or to
have uploaded it), and a write may only set a file field to a file its writer uploaded
(or leave the record's own file in place), so that nobody attaches, and then reads, a file
they were never shown.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

import sqlalchemy as sa

from . import tables as T
from .database import WRITE
from .tables import tables_for

#: What ``put_file`` makes (token_urlsafe of 32 bytes); anything else names no file and
#: never reaches the database (PostgreSQL refuses text holding NUL, for one).
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_key(text) -> bool:
    return isinstance(text, str) and KEY_PATTERN.fullmatch(text) is not None


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
    if not is_key(key):
        return None
    with store.engine.connect() as conn:
        return conn.execute(sa.select(T.files).where(T.files.c.key == key)).first()


def uploads_of(store, user_id: int | None, keys) -> dict[str, dict]:
    """The files among ``keys`` that ``user_id`` uploaded: key -> the value a file field
    takes, with the name, size and type the file store recorded (not what a client says)."""
    keys = {k for k in keys if is_key(k)}
    if user_id is None or not keys:
        return {}
    f = T.files
    query = sa.select(f.c.key, f.c.name, f.c.size, f.c.content_type).where(
        f.c.key.in_(keys), f.c.created_by == user_id
    )
    with store.engine.connect() as conn:
        return {row.key: dict(row._mapping) for row in conn.execute(query)}


def file_fields(catalog) -> list[tuple]:
    """(entity, field) of every stored file field of the catalog."""
    return [
        (entity, f)
        for entity in catalog.entities.values()
        for f in entity.fields.values()
        if f.type == "file" and f.stored
    ]


def may_read_file(store, catalog, access, key: str) -> bool:
    """Whether the principal of ``access`` may download the file ``key``: they uploaded
    it (a form that failed to save shows the upload again), or they may read a record
    holding it in a file field that is not hidden from them.

    One indexed read, then one query per file field until a readable holder turns up.  The
    key inside the JSON value is not indexed, so each of those scans its table (file fields
    are few: notes and e-mails in the shipped packs)."""
    if not is_key(key):
        return False
    user_id = access.principal.user_id
    if uploads_of(store, user_id, [key]):
        return True
    tables = tables_for(catalog)
    with store.engine.connect() as conn:
        for entity, f in file_fields(catalog):
            if f.name in access.hidden(entity):
                continue
            table = tables[entity.name]
            scope = access.scope_condition(table, entity.name, "read")
            query = sa.select(table.c.id).where(table.c[f.name]["key"].as_string() == key)
            if scope is not None:
                query = query.where(scope)
            if conn.execute(query.limit(1)).first() is not None:
                return True
    return False


#: One message for a key nobody uploaded and for another user's upload: which keys exist
#: is none of the writer's business.
NOT_YOUR_UPLOAD = "unknown file: upload it first"


def check_file_values(
    store, entity, values: dict, current: Mapping | None, user_id: int | None
) -> dict[str, list[str]]:
    """Refuse file values their writer did not upload: ``{field: [message]}``.

    A file field may be set to a file the writer uploaded (its name, size and type are
    then taken from the file store, not from the request), or keep the file the record
    already holds (``current``: the record before an update; its value is kept as stored).
    ``values`` is changed in place; values that are not file references are left to the
    records service's coercion, which says what is wrong with them.
    """
    errors: dict[str, list[str]] = {}
    wanted: dict[str, str] = {}
    for name, value in values.items():
        f = entity.fields.get(name)
        if f is None or f.type != "file" or not isinstance(value, Mapping):
            continue
        key = value.get("key")
        held = (current or {}).get(name)
        if isinstance(held, Mapping) and isinstance(key, str) and held.get("key") == key:
            values[name] = dict(held)
            continue
        wanted[name] = key
    own = uploads_of(store, user_id, wanted.values())
    for name, key in wanted.items():
        if key in own:
            values[name] = dict(own[key])
        else:
            errors[name] = [NOT_YOUR_UPLOAD]
    return errors
