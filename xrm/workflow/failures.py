"""Dead letters: outbox changes the engine parks, so that one hostile row cannot stop the
work of everybody else.

A change the consumer cannot handle (a record whose values make a trigger's arithmetic
fail, a malformed row) is copied with its error into ``xrm_wf_dead_letter`` and marked
processed; the outbox moves on.  An administrator fixes the data and retries it
(``consumer.retry_change``).  Errors of the database itself (a lost connection, a lock
timeout, a serialization failure) are not the row's fault: they are raised, and the whole
batch is tried again later.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..storage import tables as T
from ..storage.database import WRITE
from . import tables as W
from .runner import HISTORY_LIMIT
from .tables import ensure_tables

ERROR_LIMIT = 2000
STATUSES = ("failed", "done")  # waiting for a fix and a retry; a retry went through


def transient(exc: BaseException) -> bool:
    """An error of the database or the connection rather than of the data being handled."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]


def park_change(conn: sa.Connection, outbox_id: int, row: dict | None, error: str, now) -> None:
    """Dead-letter one outbox change and mark it processed, in the caller's transaction.
    ``row`` is the change as read; None when even reading it failed (its JSON is not JSON):
    then the columns that hold no JSON are kept."""
    o = T.outbox
    if row is None:
        row = dict(
            conn.execute(
                sa.select(o.c.entity, o.c.record_id, o.c.event, o.c.user_id).where(
                    o.c.id == outbox_id
                )
            )
            .mappings()
            .one()
        )
    conn.execute(
        W.dead_letters.insert().values(
            outbox_id=outbox_id,
            entity=row.get("entity"),
            record_id=row.get("record_id"),
            event=row.get("event"),
            changes=row.get("changes"),
            user_id=row.get("user_id"),
            at=row.get("at"),
            status="failed",
            attempts=1,
            error=error,
            failed_at=now,
        )
    )
    conn.execute(o.update().where(o.c.id == outbox_id).values(processed_at=now))


def as_change(letter: dict) -> dict:
    """A dead letter as the outbox row it was (its id is the outbox row's, so the instances
    a retry starts get the keys the first attempt would have given them)."""
    return {
        "id": letter["outbox_id"],
        "entity": letter["entity"],
        "record_id": letter["record_id"],
        "event": letter["event"],
        "changes": letter["changes"],
        "user_id": letter["user_id"],
        "at": letter["at"] or letter["failed_at"],
    }


def settle(conn: sa.Connection, letter_id: int, error: str | None, now) -> None:
    """Record a retry: done, or failed once more with its new error."""
    d = W.dead_letters
    if error is None:
        values = {"status": "done", "resolved_at": now}
    else:
        values = {"attempts": d.c.attempts + 1, "error": error, "failed_at": now}
    conn.execute(d.update().where(d.c.id == letter_id).values(**values))


def dead_letter(store, letter_id: int) -> dict | None:
    ensure_tables(store)
    d = W.dead_letters
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(d).where(d.c.id == letter_id)).mappings().first()
    return dict(row) if row else None


def dead_letters(
    store,
    *,
    status: str | None = "failed",
    entity: str | None = None,
    record_id: int | None = None,
    limit: int = 100,
) -> list[dict]:
    """Dead-lettered changes, newest failure first (default: the ones waiting for a retry)."""
    ensure_tables(store)
    d = W.dead_letters
    query = sa.select(d).order_by(d.c.failed_at.desc(), d.c.id.desc()).limit(limit)
    for column, value in ((d.c.status, status), (d.c.entity, entity), (d.c.record_id, record_id)):
        if value is not None:
            query = query.where(column == value)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def park_instance(engine: sa.Engine, instance_id: int, owner: str, error: str, now) -> bool:
    """Park (fail) a claimed instance whose run broke outside its own savepoint (its record
    cannot be read, its new state cannot be written), with the error in its history."""
    i = W.instances
    ours = (i.c.id == instance_id, i.c.lease_owner == owner, i.c.status == "running")
    entry = {
        "at": now.isoformat(),
        "path": None,
        "kind": "park",
        "status": "failed",
        "result": error[:500],
    }
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        try:
            history = conn.execute(sa.select(i.c.history).where(*ours)).first()
        except ValueError:  # history that is not JSON: start it again
            history = ([],)
        if history is None:  # no longer ours: reaped and claimed by another worker
            return False
        result = conn.execute(
            i.update()
            .where(*ours)
            .values(
                status="failed",
                error=error,
                lease_owner=None,
                lease_until=None,
                history=[*(history[0] or []), entry][-HISTORY_LIMIT:],
                updated_at=now,
            )
        )
    return result.rowcount == 1
