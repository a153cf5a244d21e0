"""Workers' heartbeats: a running worker keeps one row in ``xrm_wf_worker`` (host, pid,
when it started, when it last beat), so the web side can tell whether anyone is doing the
work: ``GET /health`` and the administrators' processes page read :func:`latest`.

A worker registers when ``run_forever`` starts, beats from its lease-renewal thread and
deletes its row when it stops.  A worker that was killed leaves its row behind; the row
ages, reads as stale after :data:`STALE_AFTER`, and is deleted by the next worker that
registers once it is :data:`FORGET_AFTER` old.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

import sqlalchemy as sa

from ..storage.database import WRITE
from . import tables as W

#: Seconds between beats (at most; a shorter lease beats as often as it is renewed).
BEAT_EVERY = 10.0
#: A worker silent this long is taken for gone: six beats missed, which no busy database
#: explains, while a restart with back-off is back well within it.
STALE_AFTER = 60.0
#: Rows of workers gone this long are deleted.
FORGET_AFTER = dt.timedelta(days=1)


def register(store, name: str) -> None:
    """The worker ``name`` of this process is running (its first beat)."""
    W.ensure_tables(store)
    w = W.workers
    now = store.clock.now()
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(w.delete().where(w.c.beat_at < now - FORGET_AFTER))
        conn.execute(w.delete().where(w.c.name == name))
        conn.execute(
            w.insert().values(
                name=name,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
                beat_at=now,
            )
        )


def beat(store, name: str) -> None:
    """The worker ``name`` is alive; registers it again if its row went missing."""
    w = W.workers
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        updated = conn.execute(w.update().where(w.c.name == name).values(beat_at=store.clock.now()))
    if updated.rowcount == 0:
        register(store, name)


def forget(store, name: str) -> None:
    """The worker ``name`` stopped on purpose: nothing to wait for."""
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(W.workers.delete().where(W.workers.c.name == name))


def latest(store) -> dict | None:
    """The worker that beat last: ``name, host, pid, started_at, beat_at`` and
    ``age_s`` (seconds since its beat by the store's clock); None when none ever did."""
    W.ensure_tables(store)
    with store.engine.connect() as conn:
        row = (
            conn.execute(sa.select(W.workers).order_by(W.workers.c.beat_at.desc()).limit(1))
            .mappings()
            .first()
        )
    if row is None:
        return None
    age = (store.clock.now() - row["beat_at"]).total_seconds()
    return {**row, "age_s": max(0.0, age), "stale": age > STALE_AFTER}
