"""Cron schedules: each scheduled process keeps one waiting "tick" instance for its next
time; a tick queues the next tick and then runs the process (no entity) or starts it for
every record that matches its condition."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..metadata import Catalog
from ..storage import query as Q
from ..storage.database import WRITE
from ..storage.tables import tables_for
from . import tables as W
from .effects import new_instance
from .plan import plan_for

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Batch, Run

MAX_RECORDS_PER_TICK = 10_000


def next_time(cron: str, after: dt.datetime, tz: str) -> dt.datetime:
    from croniter import croniter

    local = after.astimezone(ZoneInfo(tz))
    return croniter(cron, local).get_next(dt.datetime).astimezone(dt.UTC)


def _tick(process_name: str, entity, at: dt.datetime, now) -> dict:
    return new_instance(
        process_name,
        entity,
        None,
        now,
        key=f"cron:{process_name}:{at.isoformat()}",
        due_at=at,
        context={"tick": True, "at": at.isoformat(), "vars": {}},
    )


def seed(store, catalog: Catalog, now: dt.datetime, tz: str) -> int:
    """Queue the next tick of every scheduled process that has none waiting."""
    plan = plan_for(catalog)
    if not plan.schedules:
        return 0
    i = W.instances
    added = 0
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        for process in plan.schedules:
            trigger = process.trigger("schedule")
            pending = conn.execute(
                sa.select(i.c.id)
                .where(
                    i.c.process == process.name,
                    i.c.status.in_(("waiting", "running")),
                    i.c.key.like(f"cron:{process.name}:%"),
                )
                .limit(1)
            ).first()
            if pending is None:
                at = next_time(trigger.cron, now, trigger.time_zone or tz)
                conn.execute(
                    W.dialect_insert(conn, i).on_conflict_do_nothing(index_elements=["key"]),
                    [_tick(process.name, process.entity, at, now)],
                )
                added += 1
    return added


def tick(batch: Batch, run: Run) -> bool:
    """Handle a tick: queue the next one and start the process's runs, each an instance of
    its own, so that a run that fails (and is retried or parked) never takes the schedule
    down with it: the tick itself has nothing left that can fail.  Returns False (the tick
    never goes on to the steps itself)."""
    process = run.process
    trigger = process.trigger("schedule")
    if trigger is None or not process.enabled:
        run.status = "cancelled"
        run.note(batch.now, "schedule", "cancelled", result="the process is no longer scheduled")
        return False
    at = run.context["at"]
    following = next_time(trigger.cron, batch.now, trigger.time_zone or batch.tz)
    run.effects.instances.append(_tick(process.name, process.entity, following, batch.now))
    run.context.pop("tick", None)
    run.context["trigger"] = {"event": "schedule", "kind": "schedule", "at": at}
    if process.entity is None:
        context = {"trigger": {"event": "schedule", "kind": "schedule", "at": at}, "vars": {}}
        run.effects.instances.append(
            # "run:" rather than "cron:": seed() looks for a waiting tick by that prefix,
            # and a run waiting in a step is not one.
            new_instance(
                process.name, None, None, batch.now, key=f"run:{process.name}:{at}", context=context
            )
        )
        run.status = "done"
        run.note(batch.now, "schedule", "ok", result={"started": 1, "next": following.isoformat()})
        return False
    entity = batch.catalog.entity(process.entity)
    table = tables_for(batch.catalog)[entity.name]
    builder = Q.builder(batch.catalog, entity, batch.ctx, batch.conn.dialect.name)
    conditions = [builder.compile(process.condition)] if process.condition is not None else []
    ids = list(
        batch.conn.execute(
            sa.select(table.c.id)
            .select_from(builder.from_clause)
            .where(*conditions)
            .order_by(table.c.id)
            .limit(MAX_RECORDS_PER_TICK)
        ).scalars()
    )
    for ident in ids:
        context = {
            "trigger": {"event": "schedule", "kind": "schedule", "at": at},
            "checked": True,
            "vars": {},
        }
        run.effects.instances.append(
            new_instance(
                process.name,
                entity.name,
                ident,
                batch.now,
                key=f"cron:{process.name}:{at}:{ident}",
                context=context,
            )
        )
    run.status = "done"
    run.note(
        batch.now, "schedule", "ok", result={"started": len(ids), "next": following.isoformat()}
    )
    return False
