"""A unit of work: one write transaction, its buffered audit and outbox rows, and the
signals to send once it commits."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..metadata import Catalog
from . import signals
from . import tables as T
from .fastpath import compiled_insert, reserve_ids

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

_SIGNALS = {
    "created": signals.record_created,
    "updated": signals.record_updated,
    "deleted": signals.record_deleted,
}


def watched_entities(catalog: Catalog) -> frozenset[str]:
    """Entities some process or SLA listens to: only their changes need outbox rows (the
    workflow engine reads nothing else), which keeps saves without rules cheap."""

    def build():
        watched = {getattr(p, "entity", None) for p in catalog.processes.values()}
        watched |= {getattr(s, "entity", None) for s in catalog.slas.values()}
        return frozenset(w for w in watched if w)

    return catalog.artifact("outbox-entities", build)


def condition_fields(catalog: Catalog, entity: str) -> tuple[str, ...]:
    """The fields of ``entity`` that processes' ``if`` and ``was`` conditions read: an
    outbox row keeps their values as the change wrote them, so that a condition is judged
    on the change and not on the record as it is when the worker gets to it."""

    def build():
        from ..metadata.filters import conditions_of

        names: dict[str, None] = {}
        for process in catalog.processes.values():
            if getattr(process, "entity", None) != entity:
                continue
            for tree in (process.condition, process.was):
                for condition in conditions_of(tree):
                    names[condition.path[0]] = None
        fields = catalog.entities[entity].fields if entity in catalog.entities else {}
        return tuple(n for n in names if n in fields)

    return catalog.artifact(("outbox-condition-fields", entity), build)


#: How long a thread waiting for the interpreter waits before asking for it, while a unit
#: writes behind (Python's default is 5 ms).  The writer needs it only for a moment before
#: and after each statement; waiting 5 ms each time left the database idle a third of the
#: time, while asking sooner costs the thread preparing rows next to nothing.
HANDOFF_SECONDS = 0.0002
_handoff_lock = threading.Lock()
_handoff_users = 0
_handoff_before = 0.0


@contextlib.contextmanager
def _quick_handoff():
    """``sys.setswitchinterval(HANDOFF_SECONDS)`` for the block (process-wide, so counted:
    the last of overlapping blocks puts the interval back)."""
    global _handoff_users, _handoff_before
    with _handoff_lock:
        if _handoff_users == 0:
            _handoff_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_before, HANDOFF_SECONDS))
        _handoff_users += 1
    try:
        yield
    finally:
        with _handoff_lock:
            _handoff_users -= 1
            if _handoff_users == 0:
                sys.setswitchinterval(_handoff_before)


class _Converted:
    """Rows ``insert_converted`` holds back while the unit writes behind (bind parameters)."""

    __slots__ = ("values",)

    def __init__(self, values: list[list]):
        self.values = values


class DeferredWriteFailed(Exception):
    """A write the unit sent behind (``write_behind``) failed; the transaction is lost and
    the caller starts over without writing behind (``__cause__`` is the driver's error)."""


class UnitOfWork:
    """Inserts of new records are deferred: their ids are reserved up front, so ``create``
    returns at once, and the rows go out in executemany batches.  Anything that needs the
    database to be current goes through ``connection``, which writes the deferred rows
    first, in the order they were created (so foreign keys always find their targets).

    Inside ``write_behind`` those writes (and audit and outbox rows) go to a writer thread
    instead, in the same order, while the caller prepares the next rows: the driver lets go
    of the interpreter while the database works, so the two overlap on a second core.
    ``connection`` then waits for the writer first, so every read still sees every write."""

    def __init__(
        self, store: Store, connection: sa.Connection, catalog: Catalog, user_id: int | None
    ):
        self.store = store
        self._connection = connection
        self.pending: list[tuple[Any, dict]] = []  # (CompiledInsert, row), in creation order
        self._ids: dict[str, list[int]] = {}
        self._blocks: dict[str, int] = {}  # id blocks taken per table in this unit
        self._next_sqlite_id: dict[str, int] = {}
        self.catalog = catalog
        self.user_id = user_id
        self._now = None
        self.audit_rows: list[dict] = []
        self.outbox_rows: list[dict] = []
        self.events: list[tuple[str, dict]] = []
        self.cache: dict[Any, Any] = {}  # per-transaction memo (related records, counters)
        # Rollup sums/counts accumulate here and are applied once, before commit.
        self.rollup_deltas: dict[Any, dict[int, Any]] = {}
        # Then these run with the connection: parents' formulas that read the rollups.
        self.after_rollups: list[Callable[[sa.Connection], None]] = []
        # entity -> (whether its changes go to the outbox, the fields an outbox row keeps)
        self._event_plans: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self._writer: ThreadPoolExecutor | None = None  # while writing behind
        self._sent: list[Future] = []  # writes sent behind and not yet waited for
        self._failed = False  # a write behind failed: the rest are not run

    @property
    def connection(self) -> sa.Connection:
        """The transaction's connection, with every deferred insert written."""
        if self.pending:
            self.write_pending()
        if self._sent:
            self.wait_behind()
        return self._connection

    @property
    def raw_connection(self) -> sa.Connection:
        """The connection without writing deferred rows (for the deferral itself, and for
        reads whose caller knows the deferred rows itself: an import's duplicate keys);
        rows already sent behind are written first."""
        if self._sent:
            self.wait_behind()
        return self._connection

    @property
    def writing_behind(self) -> bool:
        return self._writer is not None

    @property
    def dialect(self) -> sa.Dialect:
        return self._connection.dialect

    def defer_insert(self, compiled, row: dict) -> None:
        self.pending.append((compiled, row))

    def write_pending(self) -> None:
        """Write the deferred rows in creation order (writing behind: send them)."""
        pending, self.pending = self.pending, []
        start = 0
        while start < len(pending):
            compiled, row = pending[start]
            end = start + 1
            if isinstance(row, _Converted):  # a batch ``insert_many`` held back
                values = row.values
            else:
                while end < len(pending) and pending[end][0] is compiled:
                    end += 1
                parameters = compiled.parameters
                values = [parameters(row, positional=True) for _, row in pending[start:end]]
            if self._writer is None:
                compiled.execute_converted(self._connection, values)
            else:
                self._sent.append(self._writer.submit(self._write, compiled, values))
            start = end

    def insert_many(self, compiled, rows: list[dict]) -> None:
        """Insert rows through a ``CompiledInsert``, after every row deferred before."""
        parameters = compiled.parameters
        self.insert_converted(compiled, [parameters(row, positional=True) for row in rows])

    def insert_converted(self, compiled, values: list[list]) -> None:
        """``insert_many`` of rows already made bind parameters (``parameters(row,
        positional=True)``).  Writing behind, they wait with the deferred rows until
        ``write_pending`` (or ``connection``) sends them: the writer then needs the
        interpreter only to bind them."""
        if self._writer is not None:
            self.pending.append((compiled, _Converted(values)))
            return
        if self.pending:
            self.write_pending()
        compiled.execute_converted(self._connection, values)

    def _write(self, compiled, values: list[list]) -> None:
        if not self._failed:
            try:
                compiled.execute_converted(self._connection, values)
            except BaseException:
                self._failed = True
                raise

    @contextlib.contextmanager
    def write_behind(self):
        """Send inserts to a writer thread for the block (for bulk work: an import).  A
        failed write surfaces as ``DeferredWriteFailed`` where the unit next needs the
        database, or at the end of the block; the transaction must then be given up."""
        if self._writer is not None:
            yield self
            return
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="xrm-write-behind")
        self._failed = False
        try:
            with _quick_handoff():
                yield self
                self.write_pending()
                self.wait_behind()
        finally:
            writer, self._writer = self._writer, None
            writer.shutdown(wait=True)  # never leave a write running on the connection
            self._sent = []

    def wait_behind(self) -> None:
        """Wait until every write sent behind is done; raise if one failed."""
        sent, self._sent = self._sent, []
        failure = None
        for future in sent:
            error = future.exception()
            if error is not None and failure is None:
                failure = error
        if failure is not None:
            raise DeferredWriteFailed(str(failure)) from failure

    def next_ids(self, table: sa.Table, count: int) -> list[int]:
        """Ids for new rows of a table.  PostgreSQL: blocks taken from the sequence.
        SQLite: the transaction holds the write lock, so after one look at the current
        maximum the ids are counted here (rows still deferred are not in the table yet)."""
        if self._connection.dialect.name == "sqlite":
            start = self._next_sqlite_id.get(table.name)
            if start is None:
                start = reserve_ids(self.raw_connection, table, 1)[0]
            self._next_sqlite_id[table.name] = start + count
            return list(range(start, start + count))
        block = self._ids.setdefault(table.name, [])
        if len(block) < count:
            # The first request takes exactly what it needs, so the ids users see stay
            # dense (a form or an API call creates one record, an import one batch); a unit
            # that keeps creating then takes blocks that double (16, 32, ... 2,048 ids): a
            # few round trips for many records, few ids left unused by a small unit.
            taken_before = self._blocks.get(table.name, 0)
            self._blocks[table.name] = taken_before + 1
            wanted = count - len(block)
            size = wanted if taken_before == 0 else max(wanted, 16 << min(taken_before - 1, 7))
            block.extend(reserve_ids(self.raw_connection, table, size))
        taken, self._ids[table.name] = block[:count], block[count:]
        return taken

    @property
    def now(self):
        """The unit's time: taken at its first write and kept for all of them, as
        PostgreSQL's ``now()`` is the transaction's start (records saved together carry one
        timestamp, and the driver converts it once)."""
        if self._now is None:
            self._now = self.store.clock.now()
        return self._now

    def dated(self, moment):
        """Writes made inside the ``with`` block carry ``moment`` as their time instead of
        the unit's own: sample data walks records through their past inside one
        transaction, so that it is all written or none of it."""
        return _Dated(self, moment)

    def record_event(
        self,
        event: str,
        entity: str,
        record_id: int,
        user_id: int | None,
        at,
        changes: dict | None,
        values=None,
    ) -> None:
        """A change for the outbox (entities some rule watches) or for signals only.
        ``values``: a callable giving the JSON values of the fields named, called only when
        an outbox row keeps them (``condition_fields``)."""
        plan = self._event_plans.get(entity)
        if plan is None:  # worked out once per entity: an import records thousands of events
            outbox = self.store.outbox == "all" or entity in watched_entities(self.catalog)
            plan = outbox, condition_fields(self.catalog, entity) if outbox else ()
            self._event_plans[entity] = plan
        if plan[0]:
            wanted = plan[1] if values is not None else ()
            kept = values(wanted) if wanted and event != "deleted" else None
            self._outbox(event, entity, record_id, user_id, at, changes, kept)
        else:
            self.events.append(
                (
                    event,
                    {
                        "entity": entity,
                        "record_id": record_id,
                        "user_id": user_id,
                        "changes": changes,
                    },
                )
            )

    def _outbox(self, event, entity, record_id, user_id, at, changes, kept=None) -> None:
        self.outbox_rows.append(
            {
                "entity": entity,
                "record_id": record_id,
                "event": event,
                "changes": {**(changes or {}), "_values": kept} if kept else changes,
                "user_id": user_id,
                "at": at,
                "processed_at": None,
            }
        )
        self.events.append(
            (
                event,
                {"entity": entity, "record_id": record_id, "user_id": user_id, "changes": changes},
            )
        )

    def add_rollup_deltas(self, statement, deltas: dict[int, Any]) -> None:
        pending = self.rollup_deltas.setdefault(statement, {})
        for parent_id, delta in deltas.items():
            pending[parent_id] = pending.get(parent_id, 0) + delta

    def flush(self) -> None:
        """Write deferred inserts, apply rollup deltas, write audit and outbox rows (writing
        behind, the rows wait to be sent with the next ones)."""
        if self._writer is None:
            self.write_pending()
        for statement, deltas in self.rollup_deltas.items():
            params = [{"_pid": pid, "_delta": delta} for pid, delta in deltas.items() if delta]
            if params:
                self.connection.execute(statement, params)
        self.rollup_deltas = {}
        after, self.after_rollups = self.after_rollups, []
        for refresh in after:
            refresh(self.connection)
        dialect = self._connection.dialect
        if self.audit_rows:
            rows, self.audit_rows = self.audit_rows, []
            self.insert_many(compiled_insert(self.catalog, T.audit, dialect, returning=False), rows)
        if self.outbox_rows:
            rows, self.outbox_rows = self.outbox_rows, []
            self.insert_many(
                compiled_insert(self.catalog, T.outbox, dialect, returning=False), rows
            )

    def after_commit(self) -> None:
        for event, payload in self.events:
            signal = _SIGNALS[event]
            if signal.receivers:
                signal.send(self.store, **payload)
        self.events = []


class _Dated:
    """``UnitOfWork.dated``: the unit's time set for a block, then put back."""

    def __init__(self, unit: UnitOfWork, moment):
        self.unit, self.moment, self.previous = unit, moment, None

    def __enter__(self):
        self.previous, self.unit._now = self.unit._now, self.moment
        return self.unit

    def __exit__(self, *exc):
        self.unit._now = self.previous
