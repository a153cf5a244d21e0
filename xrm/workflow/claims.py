"""Claiming due work, renewing leases, and re-readying work whose worker died.

PostgreSQL, the fast path (:func:`take`): the batch's own transaction locks its due rows
with ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED LIMIT n``, so any number of workers take
disjoint batches without waiting for each other, and the claim commits (or vanishes)
together with the batch's effects: no lease to write first and clear afterwards, nothing
to re-ready when a worker dies.  What a death cannot undo is counting: a run that kills
its worker every time must still be parked after ``MAX_CLAIMS`` tries, so the worker notes
the batch's ids in ``xrm_wf_inflight`` (one row, its own short transaction) before the
steps run, and the batch's commit deletes the note; a note left behind is a batch its
worker died in, and the reaper adds an attempt to each of its runs.

Leases (:func:`claim_instances`): ``UPDATE ... WHERE id IN (SELECT ... FOR NO KEY UPDATE
SKIP LOCKED LIMIT n) RETURNING ...`` in a short transaction of its own; a claimed row
carries its worker's name and a lease end; a worker that dies stops renewing, and the
reaper makes its rows due again.  SQLite claims this way (inside ``BEGIN IMMEDIATE``,
which serializes writers; a second connection could not note a batch meanwhile), and so
do a run waiting for its outside call and a failed batch retried one run at a time.
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


def claim_instances(
    engine: sa.Engine, owner: str, now, lease: float, limit: int, ids=None
) -> list[dict]:
    """Lease up to ``limit`` due instances (only those of ``ids``, given) to ``owner``."""
    i = W.instances
    ready = [i.c.status == "waiting", i.c.due_at <= now]
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        if ids is not None:
            ready.append(among(conn, i.c.id, ids))
        rows = _claim(
            conn,
            i,
            ready,
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


def _take_statement():
    i = W.instances
    return (
        sa.select(*(i.c[name] for name in RUN_COLUMNS))
        .where(i.c.status == "waiting", i.c.due_at <= sa.bindparam("now", type_=i.c.due_at.type))
        .order_by(i.c.due_at)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .with_for_update(skip_locked=True, key_share=True)
    )


_TAKE = _take_statement()  # one statement text, so the driver prepares it once


def take(conn: sa.Connection, now, limit: int) -> list[dict]:
    """Lock up to ``limit`` due instances for the caller's transaction (PostgreSQL); rows
    other transactions hold are skipped, so concurrent workers take disjoint batches."""
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # The statistics rarely know how many timers came due since the last ANALYZE (a
        # backlog after downtime, a burst), and guessing few, the planner reads every due
        # row through a bitmap and sorts them all, on disk, for each batch: 30 ms for 500
        # rows out of 50,000, against 1 ms walking the (status, due_at) index in order.
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    result = conn.execute(_TAKE, {"now": now, "limit": limit})
    # plain tuples zipped with the names: a RowMapping per row costs more than the zip
    rows = [dict(zip(RUN_COLUMNS, row, strict=True)) for row in result.all()]
    if postgres:  # the batch's other statements plan as usual
        conn.exec_driver_sql("RESET enable_bitmapscan")
    return rows


def note_batch(engine: sa.Engine, owner: str, ids: list[int], until) -> None:
    """Note, in a transaction of its own, that ``owner`` runs ``ids`` (until ``until``,
    which its heartbeat extends); the batch's commit deletes the note (:func:`done_batch`).
    The note need not reach the disk before the batch goes on: only a worker's death is
    guarded against, and a crash of the database loses the batch's locks with it."""
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        conn.execute(
            _upsert_note(conn),
            {"owner": owner, "ids": ids, "until": until},
        )


def _upsert_note(conn):
    f = W.inflight
    statement = W.dialect_insert(conn, f).values(
        owner=sa.bindparam("owner"), ids=sa.bindparam("ids"), until=sa.bindparam("until")
    )
    return statement.on_conflict_do_update(
        index_elements=[f.c.owner],
        set_={"ids": statement.excluded.ids, "until": statement.excluded.until},
    )


def done_batch(conn: sa.Connection, owner: str) -> None:
    """Delete ``owner``'s note inside its batch's transaction (they commit together)."""
    f = W.inflight
    conn.execute(f.delete().where(f.c.owner == owner))


def count_dead_batches(conn: sa.Connection, now) -> int:
    """Notes whose worker stopped renewing them: one more attempt for each of their runs
    still waiting (a run another worker holds right now is skipped: it is being tried)."""
    f, i = W.inflight, W.instances
    notes = conn.execute(f.delete().where(f.c.until < now).returning(f.c.ids)).scalars().all()
    ids = sorted({ident for note in notes for ident in (note or [])})
    if not ids:
        return 0
    waiting = (
        sa.select(i.c.id)
        .where(among(conn, i.c.id, ids), i.c.status == "waiting")
        .with_for_update(skip_locked=True, key_share=True)
    )
    result = conn.execute(
        i.update().where(i.c.id.in_(waiting.scalar_subquery())).values(attempts=i.c.attempts + 1)
    )
    return result.rowcount


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
        f = W.inflight
        conn.execute(f.update().where(f.c.owner == owner).values(until=until))
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
        count += count_dead_batches(conn, now)
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
