"""The outbox consumer: record changes (written in the same transaction as the change)
become process instances, timers for date triggers, SLA clock moves and wake-ups.

It reads a batch of unprocessed outbox rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers share the feed), evaluates each listening process's trigger and
condition against the record as it is now (and ``was:`` against the values before the
change), and marks the rows processed in the same transaction as everything it wrote.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..metadata import Catalog
from ..metadata.filters import FilterContext
from ..metadata.processes import Process, Trigger
from ..storage import tables as T
from ..storage.database import WRITE, is_postgres
from . import sla as slas
from . import tables as W
from .effects import Effects, new_instance
from .loading import load_records, loader, python_values, record_matches
from .plan import plan_for
from .runner import MAX_DEPTH

DEFAULT_DATE_TIME = dt.time(9, 0)
CONSUMER_LOCK = 0x58524D4F  # "XRMO", with the schema: held by the worker reading the outbox
#: A date trigger whose moment passed longer ago than this when scheduled is not run.
STALE = dt.timedelta(days=1)


def date_moment(trigger: Trigger, record: dict, tz: str) -> dt.datetime | None:
    """When a date trigger fires for a record (None: the date or the duration is empty)."""
    value = record.get(trigger.date_field)
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.combine(
            value, trigger.time or DEFAULT_DATE_TIME, ZoneInfo(tz)
        ).astimezone(dt.UTC)
    moment += dt.timedelta(seconds=trigger.offset)
    if trigger.before_field is not None:
        before = record.get(trigger.before_field)
        if before is None:
            return None
        moment -= dt.timedelta(seconds=int(before))
    return moment


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
        entity_plan = self.plan.of(row["entity"])
        if entity_plan is None or row["entity"] not in self.catalog.entities:
            return
        event = row["event"]
        changes = dict(row["changes"] or {})
        origin = changes.pop("_origin", None) or {}
        depth = int(origin.get("depth", 0))
        old_json = {
            name: pair[0]
            for name, pair in changes.items()
            if isinstance(pair, list | tuple) and len(pair) == 2
        }
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
        key = (
            f"date:{process.name}:{row['record_id']}:{moment.isoformat()}"
            if moment is not None
            else None
        )
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
    """Process one batch of the outbox; returns (rows read, instances started)."""
    o = T.outbox
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        # One consumer at a time keeps each record's events in order (a record created and
        # then updated is never seen the other way round by two workers); running the
        # instances, the costly part, stays parallel.  SQLite serializes writers anyway.
        if (
            is_postgres(conn)
            and not conn.execute(
                sa.text("SELECT pg_try_advisory_xact_lock(:k, hashtext(current_schema()))"),
                {"k": CONSUMER_LOCK},
            ).scalar()
        ):
            return 0, 0
        rows = (
            conn.execute(
                sa.select(o)
                .where(o.c.processed_at.is_(None))
                .order_by(o.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .all()
        )
        if not rows:
            return 0, 0
        consumer = Consumer(conn, catalog, now, tz)
        plan = consumer.plan
        wanted: dict[str, set] = {}
        for row in rows:
            entity_plan = plan.of(row["entity"])
            if entity_plan is not None and not entity_plan.empty and row["event"] != "deleted":
                wanted.setdefault(row["entity"], set()).add(row["record_id"])
        current = {
            entity: load_records(conn, catalog, entity, ids)
            for entity, ids in wanted.items()
            if entity in catalog.entities
        }
        for entity, records in current.items():
            for ident, record in records.items():
                consumer.loader.records[(entity, ident)] = record
        consumer.read_initial_stages(rows)
        for row in rows:
            record = current.get(row["entity"], {}).get(row["record_id"])
            consumer.handle(row, record)
        consumer.effects.flush(conn, now)
        ids = [row["id"] for row in rows]
        for start in range(0, len(ids), 900):
            conn.execute(
                o.update().where(o.c.id.in_(ids[start : start + 900])).values(processed_at=now)
            )
    return len(rows), consumer.started


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
