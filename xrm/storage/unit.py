"""A unit of work: one write transaction, its buffered audit and outbox rows, and the
signals to send once it commits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..metadata import Catalog
from . import signals
from . import tables as T
from .fastpath import compiled_insert

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

_SIGNALS = {
    "created": signals.record_created,
    "updated": signals.record_updated,
    "deleted": signals.record_deleted,
}


class UnitOfWork:
    def __init__(self, store: Store, connection: sa.Connection, catalog: Catalog, user_id: int | None):
        self.store = store
        self.connection = connection
        self.catalog = catalog
        self.user_id = user_id
        self.audit_rows: list[dict] = []
        self.outbox_rows: list[dict] = []
        self.events: list[tuple[str, dict]] = []
        self.cache: dict[Any, Any] = {}  # per-transaction memo (related records, counters)
        # Rollup sums/counts accumulate here and are applied once, before commit.
        self.rollup_deltas: dict[Any, dict[int, Any]] = {}

    def record_event(self, event: str, entity: str, record_id: int, user_id: int | None, at, changes: dict | None) -> None:
        self.outbox_rows.append(
            {"entity": entity, "record_id": record_id, "event": event, "changes": changes, "user_id": user_id, "at": at, "processed_at": None}
        )
        self.events.append((event, {"entity": entity, "record_id": record_id, "user_id": user_id, "changes": changes}))

    def add_rollup_deltas(self, statement, deltas: dict[int, Any]) -> None:
        pending = self.rollup_deltas.setdefault(statement, {})
        for parent_id, delta in deltas.items():
            pending[parent_id] = pending.get(parent_id, 0) + delta

    def flush(self) -> None:
        """Apply buffered rollup deltas; write audit and outbox rows in multi-row statements."""
        for statement, deltas in self.rollup_deltas.items():
            params = [{"_pid": pid, "_delta": delta} for pid, delta in deltas.items() if delta]
            if params:
                self.connection.execute(statement, params)
        self.rollup_deltas = {}
        dialect = self.connection.dialect
        if self.audit_rows:
            compiled_insert(self.catalog, T.audit, dialect, returning=False).execute_many(self.connection, self.audit_rows)
            self.audit_rows = []
        if self.outbox_rows:
            compiled_insert(self.catalog, T.outbox, dialect, returning=False).execute_many(self.connection, self.outbox_rows)
            self.outbox_rows = []

    def after_commit(self) -> None:
        for event, payload in self.events:
            signal = _SIGNALS[event]
            if signal.receivers:
                signal.send(self.store, **payload)
        self.events = []
