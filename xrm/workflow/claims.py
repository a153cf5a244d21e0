"""Claiming due work with a lease, renewing leases, and re-readying expired ones.

PostgreSQL: one statement, ``UPDATE ... WHERE id IN (SELECT ... FOR NO KEY UPDATE SKIP
LOCKED LIMIT n) RETURNING ...``, so any number of workers take disjoint batches without
waiting for each other.  SQLite: the same statement inside ``BEGIN IMMEDIATE``, which
serializes writers.  A claimed row carries its worker's name and a lease end; a worker
that dies stops renewing, and the reaper makes its rows due again for someone else.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ..storage.database import WRITE
from . import tables as W
from .bulk import among

#: What a run needs of its instance row (not its timestamps).
RUN_COLUMNS = (
    "id",
    "process",
    "entity",
    "record_id",
    "status",
    "started",
    "position",
    "due_at",
    "attempts",
    "error",
    "context",
    "history",
    "key",
    "parent_id",
    "user_id",
    "lease_owner",
    "lease_until",
)


def _claim(
    conn: sa.Connection,
    table: sa.Table,
    ready,
    owner: str,
    now,
    lease: float,
    limit: int,
    extra: dict,
    order,
    returning=(),
):
    candidates = (
        sa.select(table.c.id)
        .where(*ready)
        .order_by(order)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
    )
    statement = (
        table.update()
        .where(table.c.id.in_(candidates.scalar_subquery()))
        .values(
            lease_owner=owner,
            lease_until=now + dt.timedelta(seconds=lease),
            attempts=table.c.attempts + 1,
            **extra,
        )
        .returning(*(table.c[name] for name in returning) if returning else table.c)
    )
    return [dict(row) for row in conn.execute(statement).mappings()]


def claim_instances(engine: sa.Engine, owner: str, now, lease: float, limit: int) -> list[dict]:
    i = W.instances
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        rows = _claim(
            conn,
            i,
            (i.c.status == "waiting", i.c.due_at <= now),
            owner,
            now,
            lease,
            limit,
            {"status": "running", "updated_at": now},
            i.c.due_at,
            RUN_COLUMNS,
        )
    rows.sort(key=lambda r: (r["due_at"], r["id"]))
    return rows


def claim_emails(engine: sa.Engine, owner: str, now, lease: float, limit: int) -> list[dict]:
    e = W.emails
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        return _claim(
            conn,
            e,
            (e.c.status == "queued", e.c.due_at <= now),
            owner,
            now,
            lease,
            limit,
            {"status": "sending"},
            e.c.due_at,
        )


def fence(conn: sa.Connection, ids: list[int], owner: str, now, lease: float) -> set[int]:
    """Lock, for this transaction, the claimed rows this worker still holds; the ids
    returned are the ones still ours (a row reaped and claimed again by another worker
    is not).  The lock keeps the reaper off them until the batch commits."""
    i = W.instances
    if not ids:
        return set()
    statement = (
        sa.select(i.c.id)
        .where(among(conn, i.c.id, ids), i.c.lease_owner == owner, i.c.status == "running")
        .with_for_update(key_share=True)
    )
    return set(conn.execute(statement).scalars())


def renew(engine: sa.Engine, owner: str, now, lease: float) -> int:
    """Extend every lease this worker holds (the heartbeat of a long batch)."""
    until = now + dt.timedelta(seconds=lease)
    count = 0
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        for table, status in ((W.instances, "running"), (W.emails, "sending")):
            result = conn.execute(
                table.update()
                .where(table.c.lease_owner == owner, table.c.status == status)
                .values(lease_until=until)
            )
            count += result.rowcount
    return count


def reap(engine: sa.Engine, now) -> int:
    """Make rows whose lease ran out due again (their worker died or hung)."""
    count = 0
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        for table, running, ready in (
            (W.instances, "running", "waiting"),
            (W.emails, "sending", "queued"),
        ):
            result = conn.execute(
                table.update()
                .where(table.c.status == running, table.c.lease_until < now)
                .values(status=ready, lease_owner=None, lease_until=None)
            )
            count += result.rowcount
        if count:
            W.notify(conn)
    return count


def release(engine: sa.Engine, ids: list[int], owner: str) -> None:
    """Give claimed instances back untouched (a worker stopping, or a batch it gave up)."""
    if not ids:
        return
    i = W.instances
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(
            i.update()
            .where(i.c.id.in_(ids), i.c.lease_owner == owner, i.c.status == "running")
            .values(status="waiting", lease_owner=None, lease_until=None, attempts=i.c.attempts - 1)
        )


def next_due(engine: sa.Engine):
    """When the earliest waiting instance or queued email comes due (None: nothing timed)."""
    i, e = W.instances, W.emails
    with engine.connect() as conn:
        first = conn.execute(
            sa.select(sa.func.min(i.c.due_at)).where(i.c.status == "waiting")
        ).scalar()
        mail = conn.execute(
            sa.select(sa.func.min(e.c.due_at)).where(e.c.status == "queued")
        ).scalar()
    found = [d for d in (first, mail) if d is not None]
    return min(found) if found else None
