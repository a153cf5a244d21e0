"""Unsubscribe links of mass emails: a signed token naming one record and the consent
field the link clears (``xrm/web/unsubscribe.py`` serves it; the workflow's
``mass_email`` step makes it).

The token is signed (itsdangerous, HMAC) with a secret kept in the organization's
settings (``unsubscribe_secret``, made at first use), so the worker that writes the email
and every web process that serves ``/u/<token>`` read the same secret from the database,
and nobody can make a link for another record or another field.  A token does not expire:
an unsubscribe link has to keep working as long as the email may be read.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer

from .signing_keys import signing_key

SETTING = "unsubscribe_secret"
SALT = "xrm.unsubscribe"


def secret(conn: sa.Connection) -> str:
    """The organization's unsubscribe secret (made at first use)."""
    return signing_key(conn, SETTING)


@dataclass(frozen=True)
class Unsubscribe:
    """What a link names: the record and its consent field."""

    entity: str
    record_id: int
    field: str


def sign(key: str, entity: str, record_id: int, field: str) -> str:
    return URLSafeSerializer(key, salt=SALT).dumps({"e": entity, "r": int(record_id), "f": field})


def read(key: str, token) -> Unsubscribe | None:
    """What a token names, or None for anything not signed with ``key``."""
    if not isinstance(token, str) or not token or len(token) > 500:
        return None
    try:
        data = URLSafeSerializer(key, salt=SALT).loads(token)
        return Unsubscribe(str(data["e"]), int(data["r"]), str(data["f"]))
    except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
        return None


def link(base_url: str, key: str, entity: str, record_id: int, field: str) -> str:
    """The absolute address of the unsubscribe page for one record."""
    return f"{base_url.rstrip('/')}/u/{sign(key, entity, record_id, field)}"
