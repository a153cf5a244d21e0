"""A user's in-app inbox: notifications with unread counts, and approvals waiting on them
(approve, reject, delegate)."""

from __future__ import annotations

import sqlalchemy as sa

from ..storage import query as Q
from ..storage.database import WRITE
from ..storage.records import Forbidden
from . import tables as W
from .tables import ensure_tables


class ApprovalError(ValueError):
    pass


# --------------------------------------------------------------------------- notifications
def unread_count(store, user_id: int) -> int:
    ensure_tables(store)
    n = W.notifications
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(n.c.user_id == user_id, n.c.read_at.is_(None))
        ).scalar_one()


def notifications(
    store, user_id: int, *, unread: bool = False, limit: int = 50, before: int | None = None
) -> list[dict]:
    """Newest first; ``before`` (an id) pages back."""
    ensure_tables(store)
    n = W.notifications
    query = sa.select(n).where(n.c.user_id == user_id).order_by(n.c.id.desc()).limit(limit)
    if unread:
        query = query.where(n.c.read_at.is_(None))
    if before is not None:
        query = query.where(n.c.id < before)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def mark_read(store, user_id: int, ids: list[int] | None = None) -> int:
    """Mark some (or all) of a user's notifications read; returns how many changed."""
    ensure_tables(store)
    n = W.notifications
    statement = (
        n.update()
        .where(n.c.user_id == user_id, n.c.read_at.is_(None))
        .values(read_at=store.clock.now())
    )
    if ids is not None:
        statement = statement.where(n.c.id.in_(list(ids)))
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        return conn.execute(statement).rowcount


def counts(store, user_id: int) -> tuple[int, int]:
    """(unread notifications, approvals waiting) of a user, in one statement: what the
    inbox badge on every page shows."""
    ensure_tables(store)
    n, a, i = W.notifications, W.approvals, W.instances
    unread = (
        sa.select(sa.func.count())
        .select_from(n)
        .where(n.c.user_id == user_id, n.c.read_at.is_(None))
        .scalar_subquery()
    )
    pending = (
        sa.select(sa.func.count())
        .select_from(a.join(i, i.c.id == a.c.instance_id))
        .where(*_waiting_for(user_id))
        .scalar_subquery()
    )
    with store.engine.connect() as conn:
        return tuple(conn.execute(sa.select(unread, pending)).one())


# --------------------------------------------------------------------------- as read
def about_readable(store, principal, rows: list[dict]) -> list[dict]:
    """``rows`` (notifications, approvals) with the record each is about left out —
    ``entity`` and ``record_id`` None — where ``principal`` may not read that record now:
    it was handed to someone else, or a role was taken away, since the entry was made.
    Decided by the records service (the reader's scope, one query per entity), so an
    entry names, numbers and links only what its reader may read, like a timeline."""
    wanted: dict[str, set[int]] = {}
    for row in rows:
        if row.get("entity") and row.get("record_id") is not None:
            wanted.setdefault(row["entity"], set()).add(row["record_id"])
    readable: set[tuple[str, int]] = set()
    catalog = store.refresh()
    for entity, ids in wanted.items():
        if catalog.entity_of(entity) is None:
            continue  # its pack was removed: nothing of it can be read
        records = store.records(entity, principal=principal)
        ordered = sorted(ids)
        for start in range(0, len(ordered), Q.MAX_PAGE):
            chunk = ordered[start : start + Q.MAX_PAGE]
            try:
                found = records.query(["id", "in", chunk], fields=["id"], limit=len(chunk)).rows
            except Forbidden:  # no read scope on the entity at all
                break
            readable.update((entity, row["id"]) for row in found)
    return [
        row
        if row.get("record_id") is None or (row.get("entity"), row["record_id"]) in readable
        else {**row, "entity": None, "record_id": None}
        for row in rows
    ]


# --------------------------------------------------------------------------- approvals
def _waiting_for(user_id: int) -> tuple:
    """Approvals a user has yet to decide, of instances still waiting for them."""
    a, i = W.approvals, W.instances
    return (a.c.user_id == user_id, a.c.decision.is_(None), i.c.status == "waiting")


def pending_approvals(store, user_id: int) -> list[dict]:
    ensure_tables(store)
    a, i = W.approvals, W.instances
    query = (
        sa.select(a, i.c.process, i.c.entity, i.c.record_id)
        .join(i, i.c.id == a.c.instance_id)
        .where(*_waiting_for(user_id))
        .order_by(a.c.id)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def decide(
    store, approval_id: int, user_id: int, decision: str, comment: str | None = None
) -> None:
    """Record an approver's decision and wake the waiting instance to weigh it."""
    if decision not in ("approved", "rejected"):
        raise ApprovalError("decision is approved or rejected")
    ensure_tables(store)
    a = W.approvals
    now = store.clock.now()
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        row = _pending(conn, approval_id, user_id)
        conn.execute(
            a.update()
            .where(a.c.id == approval_id)
            .values(decision=decision, comment=comment, decided_at=now)
        )
        _wake(conn, row["instance_id"], now)


def delegate(
    store, approval_id: int, user_id: int, to_user_id: int, comment: str | None = None
) -> int:
    """Hand an approval to someone else; returns the delegate's approval id."""
    ensure_tables(store)
    a = W.approvals
    now = store.clock.now()
    if store.user(to_user_id) is None:
        raise ApprovalError(f"no user {to_user_id}")
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        row = _pending(conn, approval_id, user_id)
        existing = conn.execute(
            sa.select(a.c.id).where(
                a.c.instance_id == row["instance_id"],
                a.c.path == row["path"],
                a.c.user_id == to_user_id,
            )
        ).scalar()
        if existing is not None:
            raise ApprovalError("that user is an approver of this step already")
        conn.execute(
            a.update()
            .where(a.c.id == approval_id)
            .values(decision="delegated", comment=comment, decided_at=now)
        )
        _wake(conn, row["instance_id"], now)  # so the worker asks the delegate
        return conn.execute(
            a.insert()
            .values(
                instance_id=row["instance_id"],
                path=row["path"],
                user_id=to_user_id,
                decision=None,
                delegated_from=user_id,
                created_at=now,
            )
            .returning(a.c.id)
        ).scalar_one()


def _wake(conn, instance_id: int, now) -> None:
    """Make a waiting instance due now, so a worker weighs the approvals again."""
    i = W.instances
    conn.execute(
        i.update()
        .where(i.c.id == instance_id, i.c.status == "waiting")
        .values(due_at=now, updated_at=now)
    )
    W.notify(conn)


def _pending(conn, approval_id: int, user_id: int) -> dict:
    a = W.approvals
    row = conn.execute(sa.select(a).where(a.c.id == approval_id)).mappings().first()
    if row is None or row["user_id"] != user_id:
        raise ApprovalError("no such approval for this user")
    if row["decision"] is not None:
        raise ApprovalError(f"already {row['decision']}")
    return dict(row)
