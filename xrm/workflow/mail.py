"""Sending the email outbox through SMTP (``XRM_SMTP_URL``), with retries.

Emails are claimed like instances (a lease; the reaper re-queues them if a sender dies),
sent, and marked sent in their own small transaction right after the server accepted
them, so only a crash between those two moments sends one twice, and then with the same
Message-ID (derived from the email's idempotency key) for the receiver to drop.

URL forms: ``smtp://host:25``, ``smtp://user:password@host:587?starttls=1``,
``smtps://user:password@host:465``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa

from ..storage.database import WRITE
from . import tables as W
from .claims import claim_emails
from .effects import sender_address
from .runner import backoff

MAX_ATTEMPTS = 8


class SmtpSettings:
    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"not an SMTP URL: {url!r} (expected smtp://host:port or smtps://...)")
        self.ssl = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.ssl else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        self.starttls = query.get("starttls", ["0"])[0] in ("1", "true", "yes")
        self.timeout = float(query.get("timeout", ["20"])[0])

    def connect(self) -> smtplib.SMTP:
        if self.ssl:
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                client.starttls()
        if self.user:
            client.login(self.user, self.password or "")
        return client


def smtp_url() -> str | None:
    return os.environ.get("XRM_SMTP_URL") or None


class Mailer:
    def __init__(
        self,
        store,
        url: str,
        owner: str,
        *,
        lease: float = 60.0,
        batch: int = 50,
        retry_base: float = 30.0,
    ):
        self.store = store
        self.settings = SmtpSettings(url)
        self.owner = owner
        self.lease = lease
        self.batch = batch
        self.retry_base = retry_base

    def message(self, row: dict, sender: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = row["to_address"]
        message["Subject"] = row["subject"]
        message["Message-ID"] = row["message_id"]
        message["Date"] = format_datetime(row["created_at"])
        message["X-XRM-Key"] = row["key"]
        message.set_content(row["body"] or "")
        if row.get("html"):
            message.add_alternative(row["html"], subtype="html")
        for item in row.get("attachments") or ():
            maintype, _, subtype = item["content_type"].partition("/")
            message.add_attachment(
                base64.b64decode(item["data"]),
                maintype=maintype,
                subtype=subtype,
                filename=item["filename"],
            )
        return message

    def send_due(self) -> int:
        """Send one batch of due emails; returns how many the server accepted."""
        now = self.store.clock.now()
        rows = claim_emails(self.store.engine, self.owner, now, self.lease, self.batch)
        if not rows:
            return 0
        sender = sender_address(self.store.settings())
        sent = 0
        try:
            client = self.settings.connect()
        except (OSError, smtplib.SMTPException) as exc:
            for row in rows:
                self._failed(
                    row, f"cannot connect to {self.settings.host}:{self.settings.port}: {exc}"
                )
            return 0
        try:
            for row in rows:
                try:
                    client.send_message(self.message(row, sender))
                except smtplib.SMTPRecipientsRefused as exc:
                    self._failed(row, f"refused: {exc.recipients}", final=True)
                    continue
                except (OSError, smtplib.SMTPException) as exc:
                    self._failed(row, str(exc))
                    continue
                self._sent(row)
                sent += 1
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
        return sent

    def _sent(self, row: dict) -> None:
        e = W.emails
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(
                e.update()
                .where(e.c.id == row["id"], e.c.lease_owner == self.owner)
                .values(
                    status="sent",
                    sent_at=self.store.clock.now(),
                    lease_owner=None,
                    lease_until=None,
                    last_error=None,
                )
            )

    def _failed(self, row: dict, error: str, final: bool = False) -> None:
        e = W.emails
        now = self.store.clock.now()
        attempts = row["attempts"]
        done = final or attempts >= MAX_ATTEMPTS
        values = {
            "status": "failed" if done else "queued",
            "lease_owner": None,
            "lease_until": None,
            "last_error": error[:2000],
        }
        if not done:
            values["due_at"] = now + dt.timedelta(seconds=backoff(attempts, self.retry_base))
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(
                e.update()
                .where(e.c.id == row["id"], e.c.lease_owner == self.owner)
                .values(**values)
            )


def outbox(store, *, status: str | None = None, limit: int = 100) -> list[dict]:
    """The email outbox, newest first (for the admin area and tests)."""
    e = W.emails
    query = sa.select(e).order_by(e.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(e.c.status == status)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
