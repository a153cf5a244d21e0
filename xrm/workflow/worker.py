"""The worker: consumes the outbox, runs due instances, sends email; once or forever.

``Worker(store).run_once()`` does everything that is due now and returns counts (tests
drive it with an injected clock).  ``run_forever()`` repeats it, sleeping until the next
timer comes due, a PostgreSQL NOTIFY arrives (a record changed, an approval came in), or
the poll interval passes; a heartbeat thread renews the leases it holds meanwhile.
Any number of workers may run against one PostgreSQL database; on SQLite, one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter

import sqlalchemy as sa

from ..storage.database import WRITE, is_postgres
from . import claims, heartbeat
from . import tables as W
from .consumer import consume, purge_outbox
from .failures import error_text, park_instance, transient
from .mail import Mailer, smtp_url
from .runner import Batch, load_runs
from .schedule import seed
from .sla import stop_disabled
from .tables import ensure_tables
from .webhooks import call

log = logging.getLogger("xrm.workflow")


class Worker:
    def __init__(
        self,
        store,
        *,
        name: str | None = None,
        batch_size: int = 200,
        outbox_batch: int = 1000,
        lease: float = 30.0,
        poll: float = 1.0,
        retry_base: float = 10.0,
        smtp: str | None = None,
        max_rounds: int = 1000,
        keep_outbox: dt.timedelta = dt.timedelta(days=7),
        freeze_gc: bool = False,
    ):
        self.store = store
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.outbox_batch = outbox_batch
        self.lease = lease
        self.poll = poll
        self.retry_base = retry_base
        self.max_rounds = max_rounds
        self.keep_outbox = keep_outbox
        url = smtp if smtp is not None else smtp_url()
        self.mailer = (
            Mailer(store, url, self.name, lease=lease, retry_base=retry_base * 3) if url else None
        )
        self._stop = threading.Event()
        self._seeded_version = None
        self._frozen_version = None
        self.freeze_gc = freeze_gc
        self._purged_at = 0.0
        ensure_tables(store)

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> dict:
        """Do all the work that is due now; returns what was done."""
        store = self.store
        catalog = store.refresh()
        settings = store.settings()
        tz = settings.get("time_zone") or "UTC"
        stats: Counter = Counter()
        if self.freeze_gc and self._frozen_version != catalog.version:
            _freeze_gc()
            self._frozen_version = catalog.version
        stats["reaped"] += claims.reap(store.engine, store.clock.now())
        if self._seeded_version != catalog.version:
            stats["scheduled"] += seed(store, catalog, store.clock.now(), tz)
            stats["sla_stopped"] += stop_disabled(store, catalog, store.clock.now())
            self._seeded_version = catalog.version
        for _ in range(self.max_rounds):
            read, started = consume(store, catalog, store.clock.now(), tz, self.outbox_batch)
            stats["events"] += read
            stats["started"] += started
            ran = self.run_due(settings)
            stats["ran"] += ran
            if not read and not ran:
                break
        if self.mailer is not None:
            while sent := self.mailer.send_due():
                stats["sent"] += sent
        if time.monotonic() - self._purged_at > 3600:
            self._purged_at = time.monotonic()
            purge_outbox(store, store.clock.now() - self.keep_outbox)
        return {k: v for k, v in stats.items() if v}

    def run_due(self, settings: dict | None = None) -> int:
        """Claim and run one batch of due instances; returns how many were claimed."""
        settings = settings if settings is not None else self.store.settings()
        if not is_postgres(self.store.engine):
            return self._run_leased(settings)
        taken: list[int] = []
        try:
            pending = self._run_batch(settings, taken)
        except Exception as exc:
            if not taken:
                raise
            # The batch rolled back, its claims with it.  Its note would count an attempt
            # the one-at-a-time pass below counts again.
            with contextlib.suppress(Exception), self.store.engine.connect() as conn, conn.begin():
                claims.done_batch(conn, self.name)
            if transient(exc):
                raise
            # A run that breaks outside its own savepoint (its record cannot be read, its
            # state cannot be written) took the batch down: lease the batch's runs again
            # and run them one at a time, so that only that one is parked.
            log.warning("workflow worker %s: a batch failed (%s); one at a time", self.name, exc)
            store = self.store
            rows = claims.claim_instances(
                store.engine, self.name, store.clock.now(), self.lease, len(taken), ids=taken
            )
            pending = self._one_by_one(rows, settings)
        for run in pending:
            self._call_out(run, settings)
        return len(taken)

    def _run_batch(self, settings: dict, taken: list[int]) -> list:
        """Claim due instances inside the batch's own transaction (PostgreSQL), run them,
        write their effects and states, and commit all of it at once; ``taken`` gets the
        claimed ids.  Returns the runs that wait for an outside call."""
        store = self.store
        with store.transaction() as unit:
            now = store.clock.now()
            rows = claims.take(unit.connection, now, self.batch_size)
            if not rows:
                return []
            taken += [row["id"] for row in rows]
            until = now + dt.timedelta(seconds=self.lease)
            claims.note_batch(store.engine, self.name, taken, until)
            for row in rows:
                # what a lease claim writes, here kept in memory: it commits with the batch
                # (a run that waits for an outside call keeps the lease once committed)
                row["attempts"] += 1
                row["lease_owner"] = self.name
                row["lease_until"] = until
            runs = self._run(unit, rows, settings, now)
            claims.done_batch(unit.connection, self.name)
        return [run for run in runs if run.io_step is not None]

    def _run_leased(self, settings: dict) -> int:
        """Lease a batch in a transaction of its own, then run it in another (SQLite)."""
        store = self.store
        rows = claims.claim_instances(
            store.engine, self.name, store.clock.now(), self.lease, self.batch_size
        )
        if not rows:
            return 0
        try:
            pending = self._execute(rows, settings)
        except Exception as exc:
            if transient(exc):
                self._give_back([r["id"] for r in rows])
                raise
            # A run that breaks outside its own savepoint (its record cannot be read, its
            # state cannot be written) took the batch down: run them one at a time, so
            # that only that one is parked.  Rare, so the happy path stays one transaction.
            log.warning("workflow worker %s: a batch failed (%s); one at a time", self.name, exc)
            pending = self._one_by_one(rows, settings)
        for run in pending:
            self._call_out(run, settings)
        return len(rows)

    def _one_by_one(self, rows: list[dict], settings: dict) -> list:
        pending = []
        for index, row in enumerate(rows):
            try:
                pending += self._execute([row], settings)
            except Exception as exc:
                if transient(exc):
                    self._give_back([r["id"] for r in rows[index:]])
                    raise
                self._park(row["id"], exc)
        return pending

    def _park(self, instance_id: int, exc: Exception) -> None:
        error = error_text(exc)
        log.warning("workflow worker %s: instance %s parked: %s", self.name, instance_id, error)
        park_instance(self.store.engine, instance_id, self.name, error, self.store.clock.now())

    def _execute(self, rows: list[dict], settings: dict, io_result=None) -> list:
        store = self.store
        with store.transaction() as unit:
            now = store.clock.now()
            mine = claims.fence(
                unit.connection, [r["id"] for r in rows], self.name, now, self.lease
            )
            if io_result is not None:  # a continuation: read the row as it is now
                rows = [
                    dict(r)
                    for r in unit.connection.execute(
                        sa.select(W.instances).where(W.instances.c.id.in_(mine))
                    ).mappings()
                ]
            rows = [r for r in rows if r["id"] in mine]
            runs = self._run(unit, rows, settings, now, io_result)
        return [run for run in runs if run.io_step is not None]

    def _run(self, unit, rows: list[dict], settings: dict, now, io_result=None) -> list:
        """Run claimed rows as one batch in ``unit``'s transaction and write the outcome."""
        batch = Batch(
            self.store, unit, unit.catalog, now, settings=settings, retry_base=self.retry_base
        )
        runs = load_runs(batch, rows)
        for run in runs:
            if io_result is not None:
                run.io_result = io_result
            batch.execute(run)
        batch.persist(runs)
        return runs

    def _call_out(self, run, settings: dict) -> None:
        """Make a run's outside call after its batch committed, then continue the run."""
        while run is not None:
            result = call(run.context["io"])
            try:
                following = self._execute([run.row], settings, io_result=result)
            except Exception as exc:
                if transient(exc):
                    raise
                self._park(run.id, exc)
                return
            run = following[0] if following else None

    def _give_back(self, ids: list[int]) -> None:
        i = W.instances
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(
                i.update()
                .where(i.c.id.in_(ids), i.c.lease_owner == self.name, i.c.status == "running")
                .values(status="waiting", lease_owner=None, lease_until=None)
            )

    # ------------------------------------------------------------------ forever
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run_forever(self) -> None:
        """Work until ``stop()``; errors are logged and retried after the poll interval.
        The worker's heartbeat row says it runs meanwhile (``heartbeat.py``)."""
        try:
            heartbeat.register(self.store, self.name)
        except Exception:  # the next beat registers it again
            log.exception("workflow worker %s: registering its heartbeat failed", self.name)
        beating = threading.Thread(
            target=self._heartbeat, name=f"xrm-heartbeat-{self.name}", daemon=True
        )
        beating.start()
        listener = _Listener(self.store.engine) if is_postgres(self.store.engine) else None
        try:
            while not self._stop.is_set():
                try:
                    stats = self.run_once()
                except Exception:
                    log.exception("workflow worker %s: a pass failed", self.name)
                    stats = {}
                    self._stop.wait(self.poll)
                if stats.get("ran") or stats.get("events") or stats.get("sent"):
                    continue
                self._sleep(listener)
        finally:
            if listener is not None:
                listener.close()
            with contextlib.suppress(Exception):  # gone either way; the row would age out
                heartbeat.forget(self.store, self.name)

    def _sleep(self, listener) -> None:
        seconds = self.poll
        try:
            due = claims.next_due(self.store.engine)
        except sa.exc.DBAPIError:
            due = None
        if due is not None:
            seconds = max(0.0, min(seconds, (due - self.store.clock.now()).total_seconds()))
        if seconds <= 0:
            return
        if listener is not None:
            listener.wait(seconds, self._stop)
        else:
            self._stop.wait(seconds)

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.lease / 3, heartbeat.BEAT_EVERY)):
            try:
                claims.renew(self.store.engine, self.name, self.store.clock.now(), self.lease)
            except Exception:
                log.exception("workflow worker %s: lease renewal failed", self.name)
            try:
                heartbeat.beat(self.store, self.name)
            except Exception:
                log.exception("workflow worker %s: heartbeat failed", self.name)

    def start(self) -> threading.Thread:
        """Run forever in a daemon thread (the embedded worker beside the web server)."""
        thread = threading.Thread(
            target=self.run_forever, name=f"xrm-worker-{self.name}", daemon=True
        )
        thread.start()
        return thread


def _freeze_gc() -> None:
    """Move what is alive now (the catalog, its caches, the imported modules) out of the
    cyclic garbage collector's sight.  A batch allocates enough to set off full collections
    every few seconds, and each walked the whole catalog again: about a quarter of a
    worker's time.  Called again when the catalog changes, after a collection that frees
    the previous one.  Only for worker processes: it is the whole process's setting.

    The youngest generation is collected after 20,000 new objects rather than 700: a
    batch's rows, dicts and texts mostly die young and are freed by their counts, and a
    collection every 700 allocations walked the survivors of the moment again and again
    (3% of a reminder's instructions)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


class _Listener:
    """LISTEN on the workflow channel over its own autocommit connection."""

    def __init__(self, engine: sa.Engine):
        import psycopg

        url = engine.url.set(drivername="postgresql")
        self.connection = psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True
        )
        self.connection.execute(f"LISTEN {W.CHANNEL}")

    def wait(self, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in self.connection.notifies(timeout=min(left, 1.0), stop_after=1):
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.connection.close()


def serve(
    url: str,
    engine_options: dict | None = None,
    ready=None,
    parent: int | None = None,
    **worker_options,
) -> None:
    """A worker process: open the store at ``url`` and work until SIGTERM, or until the
    process that started it is gone; ``ready`` (a queue) gets the worker's name once it is
    up.  ``xrm worker --processes N`` and ``xrm run`` start these.

    A parent stops its workers with SIGTERM rather than a shared multiprocessing Event: a
    process that dies while waiting on such an Event leaves it unusable, and the parent's
    ``set()`` then waits forever for the dead waiter.  ``parent`` is the pid to outlive
    no longer (default: the parent now; given, a parent that died while this process was
    still starting is noticed too)."""
    import signal

    import xrm

    parent = parent or os.getppid()
    store = xrm.open(url, **(engine_options or {}))
    worker = Worker(store, **{"freeze_gc": True, **worker_options})
    if ready is not None:
        ready.put(worker.name)

    def watch_parent():
        while not worker.stopped:
            if os.getppid() != parent:  # orphaned: the parent was killed
                worker.stop()
                return
            time.sleep(1)

    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    threading.Thread(target=watch_parent, name="xrm-parent-watch", daemon=True).start()
    try:
        worker.run_forever()
    finally:
        store.close()
