"""The outbox consumer: record changes (written in the same transaction as the change)
become process instances, timers for date triggers, SLA clock moves and wake-ups.

It reads a batch of unprocessed outbox rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers share the feed), evaluates each listening process's trigger and
condition against the record as it is now (and ``was:`` against the values before the
change), and marks the rows processed in the same transaction as everything it wrote.

A batch that fails is handled again row by row, each row in a savepoint; a row that fails
by itself is dead-lettered (``failures``) and the others go through.  The happy path pays
nothing for this: no savepoints unless a batch has failed.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from ..metadata import Catalog
from ..metadata.filters import FilterContext
from ..metadata.processes import Process, Trigger
from ..storage import tables as T
from ..storage.database import WRITE, is_postgres
from . import merging
from . import sla as slas
from . import tables as W
from .dates import STALE, date_key, date_moment
from .effects import Effects, new_instance
from .failures import as_change, error_text, park_change, settle, transient
from .loading import load_records, loader, python_values, record_matches
from .plan import plan_for
from .runner import MAX_DEPTH
from .tables import ensure_tables

log = logging.getLogger("xrm.workflow")

CONSUMER_LOCK = 0x58524D4F  # "XRMO", with the schema: held by the worker reading the outbox


class Consumer:
    def __init__(self, conn: sa.Connection, catalog: Catalog, now: dt.datetime, tz: str):
        self.conn = conn
        self.catalog = catalog
        self.now = now
        self.tz = tz
        self.plan = plan_for(catalog)
        self.effects = Effects()
        self.loader = loader(conn, catalog)
        self.ctx = FilterContext(tz=tz, now=now)
        self.started = 0
        #: (entity, record id) -> the stage a record was created in (from stage history:
        #: the record may have moved on by the time its created event is read)
        self.initial_stages: dict = {}
        #: entity -> record id -> the record as it is now
        self.current: dict[str, dict[int, dict]] = {}

    def preload(self, rows) -> None:
        """Read the records the rows are about (one query per entity) and the stages new
        records were created in."""
        wanted: dict[str, set] = {}
        for row in rows:
            entity_plan = self.plan.of(row["entity"])
            if entity_plan is not None and not entity_plan.empty and row["event"] != "deleted":
                wanted.setdefault(row["entity"], set()).add(row["record_id"])
        for entity, ids in wanted.items():
            if entity not in self.catalog.entities:
                continue
            records = load_records(self.conn, self.catalog, entity, ids)
            self.current.setdefault(entity, {}).update(records)
            for ident, record in records.items():
                self.loader.records[(entity, ident)] = record
        self.read_initial_stages(rows)

    def record_of(self, row) -> dict | None:
        return self.current.get(row["entity"], {}).get(row["record_id"])

    def handle_alone(self, outbox_id: int, row: dict | None = None) -> tuple[dict | None, str]:
        """Read (unless given) and handle one change in a savepoint of its own, writing its
        effects there.  Returns the row as read and the error text ("" when it went
        through); a failed row's own work is rolled back, the others' stays."""
        started = self.started
        savepoint = self.conn.begin_nested()
        try:
            if row is None:
                o = T.outbox
                row = self.conn.execute(sa.select(o).where(o.c.id == outbox_id)).mappings().one()
            self.preload([row])
            self.handle(row, self.record_of(row))
            self.effects.flush(self.conn, self.now)
            savepoint.commit()
            return row, ""
        except Exception as exc:
            savepoint.rollback()
            if transient(exc):
                raise
            self.started = started
            return row, error_text(exc)
        finally:
            self.effects = Effects()

    def read_initial_stages(self, rows) -> None:
        created: dict[str, set] = {}
        for row in rows:
            entity_plan = self.plan.of(row["entity"])
            if row["event"] == "created" and entity_plan is not None and entity_plan.enter_stage:
                created.setdefault(row["entity"], set()).add(row["record_id"])
        h = T.stage_history
        for entity, ids in created.items():
            first = (
                sa.select(h.c.record_id, sa.func.min(h.c.id).label("first"))
                .where(h.c.entity == entity, h.c.record_id.in_(sorted(ids)))
                .group_by(h.c.record_id)
                .subquery()
            )
            rows = self.conn.execute(
                sa.select(h.c.record_id, h.c.stage, h.c.previous).join(
                    first, first.c.first == h.c.id
                )
            )
            for record_id, stage, previous in rows:
                if previous is None:
                    self.initial_stages[(entity, record_id)] = stage

    def handle(self, row, record: dict | None) -> None:
        event = row["event"]
        changes = dict(row["changes"] or {})
        # a record removed by a merge: its waiting work goes on on the kept record; an
        # undo brings it back (storage/merge.py marks the rows, merging.py moves things)
        merge = changes.pop("_merge", None)
        if merge is not None and row["entity"] in self.catalog.entities:
            if event == "deleted":
                merging.carry_over(self, row, merge)
            elif event == "restored":
                merging.bring_back(self, row, merge)
        if event == "restored":
            return
        entity_plan = self.plan.of(row["entity"])
        if entity_plan is None or row["entity"] not in self.catalog.entities:
            return
        origin = changes.pop("_origin", None) or {}
        written = changes.pop("_values", None)
        depth = int(origin.get("depth", 0))
        old_json = {
            name: pair[0]
            for name, pair in changes.items()
            if isinstance(pair, list | tuple) and len(pair) == 2
        }
        # Conditions are judged on the record as this change left it (the values it wrote,
        # kept in the row), not as it is now: a record moved received -> negotiating ->
        # accepted before the worker runs starts an "if stage is accepted" process once.
        if record is not None and isinstance(written, dict):
            record = {**record, **python_values(self.catalog, row["entity"], written)}
        old = (
            {**(record or {}), **python_values(self.catalog, row["entity"], old_json)}
            if record is not None
            else None
        )
        if event == "deleted":
            self._cancel_record(row)
            record = self._snapshot(row)
        for process, trigger in self._matching(
            entity_plan, event, changes, record, old, row["record_id"]
        ):
            if depth > MAX_DEPTH:
                continue  # a chain of processes re-triggering each other stops here
            if process.was is not None and not record_matches(
                process.was, old or {}, self.loader, self.ctx
            ):
                continue
            if process.condition is not None and not record_matches(
                process.condition, record or {}, self.loader, self.ctx
            ):
                continue
            context = {
                "trigger": {
                    "event": event,
                    "kind": trigger.kind,
                    "changed": sorted(changes),
                    "at": row["at"].isoformat(),
                    "user_id": row["user_id"],
                    "outbox": row["id"],
                },
                "old": old_json,
                "depth": depth,
                "checked": True,
                "vars": {},
            }
            if event == "deleted":
                context["snapshot"] = _jsonable(self.catalog, row["entity"], record or {})
            self.effects.instances.append(
                new_instance(
                    process.name,
                    process.entity,
                    row["record_id"],
                    self.now,
                    key=f"o{row['id']}:{process.name}",
                    context=context,
                    user_id=row["user_id"],
                )
            )
            self.started += 1
        if event != "deleted" and record is not None:
            for process in entity_plan.date:
                trigger = process.trigger("date")
                if event == "created" or set(trigger.fields) & set(changes):
                    self._schedule_date(process, trigger, row, record, fresh=event == "created")
        for sla in entity_plan.slas:
            slas.on_event(self, sla, row, record, changes)
        if event == "updated" and entity_plan.waits_on_change:
            i = W.instances
            self.conn.execute(
                i.update()
                .where(
                    i.c.entity == row["entity"],
                    i.c.record_id == row["record_id"],
                    i.c.status == "waiting",
                    i.c.wake_on_change.is_(True),
                )
                .values(due_at=self.now, updated_at=self.now)
            )

    def _matching(self, plan, event: str, changes: dict, record, old, row_id):
        if event == "created":
            yield from ((p, p.trigger("created")) for p in plan.created)
            for p in plan.enter_stage:
                trigger = p.trigger("enter_stage")
                if self.initial_stages.get((p.entity, row_id)) in trigger.stages:
                    yield p, trigger
        elif event == "updated":
            for p in plan.updated:
                trigger = p.trigger("updated")
                if not trigger.fields or set(trigger.fields) & set(changes):
                    yield p, trigger
            for kind, side in (("enter_stage", 1), ("exit_stage", 0)):
                for p in getattr(plan, kind):
                    trigger = p.trigger(kind)
                    pair = changes.get(trigger.fields[0])
                    if pair is not None and pair[side] in trigger.stages:
                        yield p, trigger
        elif event == "deleted":
            yield from ((p, p.trigger("deleted")) for p in plan.deleted)

    def _schedule_date(
        self, process: Process, trigger: Trigger, row, record: dict, *, fresh: bool
    ) -> None:
        moment = date_moment(trigger, record, self.tz)
        key = date_key(process.name, row["record_id"], moment) if moment is not None else None
        if not fresh:
            i = W.instances
            self.conn.execute(
                i.update()
                .where(
                    i.c.process == process.name,
                    i.c.entity == row["entity"],
                    i.c.record_id == row["record_id"],
                    i.c.status == "waiting",
                    i.c.started.is_(False),
                    *([i.c.key != key] if key else []),
                )
                .values(status="cancelled", finished_at=self.now, updated_at=self.now)
            )
        if moment is None or moment < self.now - STALE:
            return
        context = {
            "trigger": {
                "event": "date",
                "kind": "date",
                "field": trigger.date_field,
                "at": moment.isoformat(),
            },
            "vars": {},
        }
        self.effects.instances.append(
            new_instance(
                process.name,
                process.entity,
                row["record_id"],
                self.now,
                key=key,
                due_at=moment,
                context=context,
            )
        )

    def _cancel_record(self, row) -> None:
        i = W.instances
        self.conn.execute(
            i.update()
            .where(
                i.c.entity == row["entity"],
                i.c.record_id == row["record_id"],
                i.c.status == "waiting",
            )
            .values(
                status="cancelled",
                finished_at=self.now,
                updated_at=self.now,
                error="the record was deleted",
            )
        )

    def _snapshot(self, row) -> dict:
        """A deleted record's last values, from its audit trail."""
        a = T.audit
        old = self.conn.execute(
            sa.select(a.c.old)
            .where(
                a.c.entity == row["entity"],
                a.c.record_id == row["record_id"],
                a.c.action == "delete",
            )
            .order_by(a.c.id.desc())
            .limit(1)
        ).scalar()
        values = python_values(self.catalog, row["entity"], old or {})
        values["id"] = row["record_id"]
        return values


def _jsonable(catalog: Catalog, entity: str, record: dict) -> dict:
    model = catalog.entity(entity)
    out = {}
    for name, value in record.items():
        f = model.fields.get(name)
        out[name] = (
            f.kind.to_json(f, value)
            if f is not None and value is not None
            else (value.isoformat() if isinstance(value, dt.datetime) else value)
        )
    return out


def consume(
    store, catalog: Catalog, now: dt.datetime, tz: str, limit: int = 500
) -> tuple[int, int]:
    """Process one batch of the outbox; returns (rows read, instances started).

    The batch is handled in one transaction.  Should that fail for a reason other than
    the database's, it is handled again row by row, and the rows that fail by themselves
    are dead-lettered: one hostile row never holds back the changes behind it."""
    try:
        return _consume(store, catalog, now, tz, limit, alone=False)
    except Exception as exc:
        if transient(exc):
            raise
        log.warning("workflow: an outbox batch failed (%s); handling it row by row", exc)
    return _consume(store, catalog, now, tz, limit, alone=True)


def _consume(
    store, catalog: Catalog, now: dt.datetime, tz: str, limit: int, *, alone: bool
) -> tuple[int, int]:
    o = T.outbox
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        if not _lock(conn):
            return 0, 0
        pending = (
            sa.select(o.c.id if alone else o)
            .where(o.c.processed_at.is_(None))
            .order_by(o.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if alone:
            # only the ids: a row whose JSON cannot be read fails by itself, below
            ids = list(conn.execute(pending).scalars())
            consumer = Consumer(conn, catalog, now, tz)
            for ident in ids:
                row, error = consumer.handle_alone(ident)
                if error:
                    log.warning("workflow: outbox row %s dead-lettered: %s", ident, error)
                    park_change(conn, ident, row, error, now)
        else:
            rows = conn.execute(pending).mappings().all()
            if not rows:
                return 0, 0
            ids = [row["id"] for row in rows]
            consumer = Consumer(conn, catalog, now, tz)
            consumer.preload(rows)
            for row in rows:
                consumer.handle(row, consumer.record_of(row))
            consumer.effects.flush(conn, now)
        if not ids:
            return 0, 0
        for start in range(0, len(ids), 900):
            conn.execute(
                o.update()
                .where(o.c.id.in_(ids[start : start + 900]), o.c.processed_at.is_(None))
                .values(processed_at=now)
            )
    return len(ids), consumer.started


def _lock(conn: sa.Connection, *, wait: bool = False) -> bool:
    """One consumer at a time keeps each record's events in order (a record created and
    then updated is never seen the other way round by two workers); running the
    instances, the costly part, stays parallel.  SQLite serializes writers anyway."""
    if not is_postgres(conn):
        return True
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    taken = conn.execute(
        sa.text(f"SELECT {function}(:k, hashtext(current_schema()))"), {"k": CONSUMER_LOCK}
    ).scalar()
    return wait or bool(taken)


def retry_change(store, letter_id: int) -> str:
    """Handle a dead-lettered change again now (once its data is fixed).  Returns ""
    when it went through (the dead letter is then done), else the new error (its
    attempts count up).  LookupError: no failed change with that id."""
    ensure_tables(store)
    catalog = store.refresh()
    tz = store.settings().get("time_zone") or "UTC"
    now = store.clock.now()
    d = W.dead_letters
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        _lock(conn, wait=True)  # in order with the worker that reads the outbox
        letter = (
            conn.execute(
                sa.select(d).where(d.c.id == letter_id, d.c.status == "failed").with_for_update()
            )
            .mappings()
            .first()
        )
        if letter is None:
            raise LookupError(f"no failed change {letter_id}")
        change = as_change(dict(letter))
        _row, error = Consumer(conn, catalog, now, tz).handle_alone(change["id"], change)
        settle(conn, letter_id, error or None, now)
    return error


def purge_outbox(store, before: dt.datetime, limit: int = 10000) -> int:
    """Delete processed outbox rows older than ``before`` (the feed is not an archive)."""
    o = T.outbox
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        ids = list(
            conn.execute(
                sa.select(o.c.id)
                .where(o.c.processed_at.is_not(None), o.c.processed_at < before)
                .order_by(o.c.id)
                .limit(limit)
            ).scalars()
        )
        if ids:
            conn.execute(o.delete().where(o.c.id.in_(ids)))
    return len(ids)
