"""Signed links to a public web form about one record: the satisfaction survey a resolved
case emails its customer, whose answer the form stores on that very case.

A link names the form, the record and when it was made, signed (itsdangerous, HMAC) with
a secret kept in the organization's settings (``form_link_secret``, made at first use), so
the worker that renders the email and every web process that serves the form read the
same secret from the database, and nobody can point a link at another record.  How long a
link stays good is the form's ``link_valid_for`` (``xrm/metadata/web_forms.py``); the web
layer (``xrm/web/public_forms.py``) checks it against the store's clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer

from .signing_keys import signing_key

SETTING = "form_link_secret"
SALT = "xrm.form-link"
#: The query parameter of a form's address that carries the signed record.
PARAMETER = "r"


def secret(conn: sa.Connection) -> str:
    """The organization's link secret (made at first use)."""
    return signing_key(conn, SETTING)


def sign(key: str, form: str, entity: str, record_id: int, issued: dt.datetime) -> str:
    payload = {"f": form, "e": entity, "r": int(record_id), "t": int(issued.timestamp())}
    return URLSafeSerializer(key, salt=SALT).dumps(payload)


@dataclass(frozen=True)
class Signed:
    form: str
    entity: str
    record_id: int
    issued: dt.datetime


def read(key: str, token) -> Signed | None:
    """What a token names, or None for anything not signed with ``key``."""
    if not isinstance(token, str) or not token or len(token) > 500:
        return None
    try:
        data = URLSafeSerializer(key, salt=SALT).loads(token)
        return Signed(
            str(data["f"]),
            str(data["e"]),
            int(data["r"]),
            dt.datetime.fromtimestamp(int(data["t"]), dt.UTC),
        )
    except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
        return None


class FormLinks:
    """``form_url`` in a template (``{{ record | form_url('case_survey') }}``): the absolute
    address of the form with the record signed into it, made at ``now``.  The secret is
    read on the first link, on the renderer's own connection."""

    def __init__(self, conn: sa.Connection, now: dt.datetime):
        self.conn, self.now, self._key = conn, now, None

    def url(self, formats, target, form: str) -> str:
        entity = getattr(target, "_entity", None)
        if entity is None or getattr(target, "id", None) is None:
            return ""  # not a record: nothing to link to
        if self._key is None:
            self._key = secret(self.conn)
        token = sign(self._key, form, entity.name, target.id, self.now)
        return formats.url(f"/f/{quote(form)}?{PARAMETER}={token}")
