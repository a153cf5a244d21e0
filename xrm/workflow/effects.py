"""Effects a run produces, buffered until its batch commits, each under an idempotency key.

Notifications, queued emails, approval requests and new instances are collected per run,
so a run that fails drops its own effects and nothing else; the batch then writes them
with one multi-row INSERT per table, ``ON CONFLICT (key) DO NOTHING``, so a run repeated
after a crash or a lost lease cannot double any of them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..metadata.formats import DEFAULT_BASE_URL
from . import tables as W
from .bulk import insert_new


def message_id(key: str, sender: str) -> str:
    """A stable Message-ID derived from an email's idempotency key."""
    domain = sender.rpartition("@")[2] or "xrm.localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def sender_address(settings: dict | None = None) -> str:
    return os.environ.get("XRM_MAIL_FROM") or (settings or {}).get("mail_from") or "xrm@localhost"


def public_base_url(settings: dict | None = None) -> str:
    """Where people reach the web UI, for links in messages: ``XRM_BASE_URL``, else the
    ``base_url`` setting (``xrm setup --base-url``), else the address ``xrm run`` serves
    (it passes its host and port to its worker in ``XRM_SERVED_URL``)."""
    url = (
        os.environ.get("XRM_BASE_URL")
        or (settings or {}).get("base_url")
        or os.environ.get("XRM_SERVED_URL")
        or DEFAULT_BASE_URL
    )
    return url.rstrip("/")


@dataclass
class Effects:
    notifications: list[dict] = field(default_factory=list)
    emails: list[dict] = field(default_factory=list)
    approvals: list[dict] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)
    wake: set[int] = field(default_factory=set)  # instances to make due now

    def merge(self, other: Effects) -> None:
        self.notifications += other.notifications
        self.emails += other.emails
        self.approvals += other.approvals
        self.instances += other.instances
        self.wake |= other.wake

    def __bool__(self) -> bool:
        return bool(
            self.notifications or self.emails or self.approvals or self.instances or self.wake
        )

    def notification(
        self, key: str, user_id: int, title: str, body: str, entity, record_id, instance_id, now
    ) -> None:
        # columns left out (read_at) take their defaults
        self.notifications.append(
            {
                "key": key,
                "user_id": user_id,
                "title": title[:300],
                "body": body,
                "entity": entity,
                "record_id": record_id,
                "instance_id": instance_id,
                "created_at": now,
            }
        )

    def email(
        self,
        key: str,
        to: str,
        subject: str,
        body: str,
        sender: str,
        user_id,
        entity,
        record_id,
        now,
        *,
        html: str | None = None,
        attachments: list[dict] | None = None,
        due_at=None,
    ) -> None:
        # columns left out (status queued, no attempts, no lease) take their defaults; every
        # row names the same columns, as one multi-row INSERT writes them all
        self.emails.append(
            {
                "key": key,
                "message_id": message_id(key, sender),
                "to_address": to,
                "user_id": user_id,
                "subject": subject[:300],
                "body": body,
                "html": html,
                "attachments": attachments,
                "entity": entity,
                "record_id": record_id,
                "due_at": due_at if due_at is not None else now,  # later: a throttled mailing
                "created_at": now,
            }
        )

    def flush(self, conn: sa.Connection, now) -> None:
        for table, rows, index in (
            (W.notifications, self.notifications, ["key"]),
            (W.emails, self.emails, ["key"]),
            (W.approvals, self.approvals, ["instance_id", "path", "user_id"]),
            (W.instances, self.instances, ["key"]),
        ):
            insert_new(conn, table, rows, index)
        if self.wake:
            i = W.instances
            conn.execute(
                i.update()
                .where(i.c.id.in_(sorted(self.wake)), i.c.status == "waiting")
                .values(due_at=now, updated_at=now)
            )
        if self.instances or self.wake:
            W.notify(conn)


def new_instance(
    process: str,
    entity: str | None,
    record_id,
    now,
    *,
    key: str | None,
    due_at=None,
    context: dict | None = None,
    parent_id=None,
    user_id=None,
    started: bool = False,
) -> dict:
    """An instance row ready to insert: waiting, due at ``due_at`` (default: now)."""
    return {
        "process": process,
        "entity": entity,
        "record_id": record_id,
        "status": "waiting",
        "started": started,
        "position": None,
        "due_at": due_at if due_at is not None else now,
        "wake_on_change": False,
        "lease_owner": None,
        "lease_until": None,
        "attempts": 0,
        "error": None,
        "context": context or {},
        "history": [],
        "key": key,
        "parent_id": parent_id,
        "user_id": user_id,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
    }
