"""SLA clocks: started, paused, resumed, re-targeted and stopped as records change, with a
warning timer and a breach timer while they run.

A clock keeps the business seconds used before its current running stretch
(``elapsed_s``) and when that stretch began (``resumed_at``); its deadline is the calendar
walked forward by what is left.  Pauses and priority changes move the deadline and
replace the timers; a timer that fires for a deadline that has since moved does nothing.
Every transition uses the time of the change itself (the outbox row's ``at``), so a busy
worker never eats into anybody's SLA.

A switched-off SLA (``enabled: false``) starts no clock, and its running and paused clocks
are cancelled with their timers when a worker first sees the catalog that switched it off,
as Dynamics 365 cancels the KPI instances of a deactivated SLA: nobody is warned about, or
measured against, an agreement that no longer applies.  Switching it on again starts
clocks for records as they next change; a cancelled clock stays cancelled.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..metadata import Catalog
from ..metadata.processes import Sla
from ..storage.database import WRITE
from . import tables as W
from .calendar import BusinessHours
from .effects import new_instance
from .loading import record_matches

if TYPE_CHECKING:  # pragma: no cover
    from .consumer import Consumer
    from .runner import Batch, Run


def hours_for(catalog: Catalog, sla: Sla) -> BusinessHours:
    return catalog.artifact(
        ("business-hours", sla.calendar),
        lambda: BusinessHours(catalog.calendars.get(sla.calendar) if sla.calendar else None),
    )


def on_event(consumer: Consumer, sla: Sla, row, record: dict | None, changes: dict) -> None:
    conn, catalog = consumer.conn, consumer.catalog
    c = W.sla_clocks
    at = row["at"]
    clocks = {
        r["metric"]: dict(r)
        for r in conn.execute(
            sa.select(c).where(
                c.c.sla == sla.name, c.c.entity == row["entity"], c.c.record_id == row["record_id"]
            )
        ).mappings()
    }
    if row["event"] == "deleted" or record is None:
        if clocks:
            conn.execute(
                c.update()
                .where(c.c.id.in_([k["id"] for k in clocks.values()]))
                .values(status="cancelled", resumed_at=None, deadline=None, updated_at=at)
            )
            _replace_timers(consumer, sla, row, [])
        return
    hours = hours_for(catalog, sla)
    match = lambda tree: record_matches(tree, record, consumer.loader, consumer.ctx)  # noqa: E731
    applies = match(sla.condition)
    paused = sla.pause is not None and match(sla.pause)
    priority = record.get(sla.priority_field) if sla.priority_field else None
    changed = False
    for metric in sla.metrics:
        clock = clocks.get(metric.name)
        finished = match(metric.done)
        target = sla.target(metric, priority)
        if clock is None:
            if not applies or target is None:
                continue
            values = {
                "sla": sla.name,
                "metric": metric.name,
                "entity": row["entity"],
                "record_id": row["record_id"],
                "priority": priority,
                "target_s": target,
                "elapsed_s": 0,
                "started_at": at,
                "warned_at": None,
                "breached_at": None,
                "updated_at": at,
            }
            if finished:
                values.update(status="done", resumed_at=None, deadline=None, done_at=at)
            elif paused:
                values.update(status="paused", resumed_at=None, deadline=None, done_at=None)
            else:
                values.update(
                    status="running", resumed_at=at, deadline=hours.add(at, target), done_at=None
                )
            values["id"] = conn.execute(c.insert().values(**values).returning(c.c.id)).scalar_one()
            clocks[metric.name] = values
            changed = True
            continue
        if clock["status"] in ("done", "cancelled"):
            continue
        running = clock["status"] == "running"
        elapsed = clock["elapsed_s"] + (
            hours.elapsed(clock["resumed_at"], at) if running and clock["resumed_at"] else 0
        )
        update: dict | None = None
        if finished:
            update = {
                "status": "done",
                "elapsed_s": elapsed,
                "resumed_at": None,
                "deadline": None,
                "done_at": at,
            }
        elif paused and running:
            update = {
                "status": "paused",
                "elapsed_s": elapsed,
                "resumed_at": None,
                "deadline": None,
            }
        elif not paused and (not running or (target is not None and target != clock["target_s"])):
            target = target if target is not None else clock["target_s"]
            update = {
                "status": "running",
                "elapsed_s": elapsed,
                "resumed_at": at,
                "deadline": hours.add(at, max(target - elapsed, 0)),
                "target_s": target,
                "priority": priority,
            }
        elif paused and target is not None and target != clock["target_s"]:
            update = {"target_s": target, "priority": priority}
        if update is None:
            continue
        update["updated_at"] = at
        conn.execute(c.update().where(c.c.id == clock["id"]).values(**update))
        clock.update(update)
        changed = True
    if changed:
        _replace_timers(
            consumer, sla, row, [k for k in clocks.values() if k["status"] == "running"]
        )


def _replace_timers(consumer: Consumer, sla: Sla, row, running: list[dict]) -> None:
    """Cancel this record's SLA timers that no longer apply; queue the ones that now do."""
    catalog, now = consumer.catalog, consumer.now
    hours = hours_for(catalog, sla)
    wanted = []
    for clock in running:
        deadline = clock["deadline"]
        base = {
            "name": sla.name,
            "metric": clock["metric"],
            "clock": clock["id"],
            "deadline": deadline.isoformat(),
            "target": clock["target_s"],
            "priority": clock.get("priority"),
        }
        if sla.breach_process and clock.get("breached_at") is None:
            wanted.append(
                (
                    sla.breach_process,
                    f"sla:{clock['id']}:breach:{deadline.isoformat()}",
                    deadline,
                    {**base, "kind": "breach"},
                )
            )
        if sla.warning_process and clock.get("warned_at") is None:
            before = sla.warning_before(clock["target_s"])
            left_at_warning = clock["target_s"] - before - clock["elapsed_s"]
            warn_at = (
                hours.add(clock["resumed_at"], left_at_warning)
                if left_at_warning > 0
                else clock["resumed_at"]
            )
            if warn_at < deadline:
                wanted.append(
                    (
                        sla.warning_process,
                        f"sla:{clock['id']}:warning:{deadline.isoformat()}",
                        warn_at,
                        {**base, "kind": "warning"},
                    )
                )
    i = W.instances
    processes = [p for p in (sla.breach_process, sla.warning_process) if p]
    if processes:
        consumer.conn.execute(
            i.update()
            .where(
                i.c.entity == row["entity"],
                i.c.record_id == row["record_id"],
                i.c.process.in_(processes),
                i.c.status == "waiting",
                i.c.key.not_in([key for _, key, _, _ in wanted] or [""]),
            )
            .values(status="cancelled", finished_at=now, updated_at=now)
        )
    for process, key, due, info in wanted:
        consumer.effects.instances.append(
            new_instance(
                process,
                sla.entity,
                row["record_id"],
                now,
                key=key,
                due_at=due,
                context={
                    "trigger": {"event": "sla", "kind": info["kind"]},
                    "sla": info,
                    "vars": {},
                },
            )
        )


def stop_disabled(store, catalog: Catalog, now: dt.datetime) -> int:
    """Cancel the running and paused clocks of the catalog's switched-off SLAs, and their
    waiting warning and breach timers; returns how many clocks stopped."""
    off = [sla for sla in catalog.slas.values() if not sla.enabled]
    if not off:
        return 0
    c, i = W.sla_clocks, W.instances
    names = [sla.name for sla in off]
    hooks = [p for sla in off for p in (sla.warning_process, sla.breach_process) if p]
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        stopped = conn.execute(
            c.update()
            .where(c.c.sla.in_(names), c.c.status.in_(("running", "paused")))
            .values(status="cancelled", resumed_at=None, deadline=None, updated_at=now)
        ).rowcount
        if hooks:
            conn.execute(
                i.update()
                .where(i.c.process.in_(hooks), i.c.status == "waiting")
                .values(status="cancelled", finished_at=now, updated_at=now)
            )
    return stopped


def fire(batch: Batch, run: Run) -> bool:
    """Whether an SLA timer still stands (its clock runs toward the same deadline, and its
    SLA is on); if so, mark the clock warned or breached in the run's transaction."""
    info = run.context["sla"]
    sla = batch.catalog.slas.get(info["name"])
    if sla is None or not sla.enabled:
        return False
    c = W.sla_clocks
    clock = batch.conn.execute(sa.select(c).where(c.c.id == info["clock"])).mappings().first()
    if clock is None or clock["status"] != "running" or clock["deadline"] is None:
        return False
    if abs((clock["deadline"] - dt.datetime.fromisoformat(info["deadline"])).total_seconds()) >= 1:
        return False
    column = "breached_at" if info["kind"] == "breach" else "warned_at"
    if clock[column] is not None:
        return False
    with batch.write(run):
        batch.conn.execute(
            c.update()
            .where(c.c.id == clock["id"])
            .values({column: batch.now, "updated_at": batch.now})
        )
    hours = hours_for(batch.catalog, sla)
    info["elapsed"] = clock["elapsed_s"] + hours.elapsed(clock["resumed_at"], batch.now)
    return True


def clocks(store, entity: str, record_id: int) -> list[dict]:
    """A record's SLA clocks with business time used and left, as of now."""
    from .tables import ensure_tables

    ensure_tables(store)
    catalog = store.refresh()
    now = store.clock.now()
    c = W.sla_clocks
    with store.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(c)
                .where(c.c.entity == entity, c.c.record_id == record_id)
                .order_by(c.c.sla, c.c.metric)
            )
            .mappings()
            .all()
        )
    result = []
    for row in rows:
        item = dict(row)
        sla = catalog.slas.get(row["sla"])
        elapsed = row["elapsed_s"]
        if sla is not None and row["status"] == "running" and row["resumed_at"] is not None:
            elapsed += hours_for(catalog, sla).elapsed(row["resumed_at"], now)
        item["used_s"] = elapsed
        item["left_s"] = row["target_s"] - elapsed
        item["breached"] = row["breached_at"] is not None or (
            row["status"] == "running" and row["deadline"] is not None and row["deadline"] <= now
        )
        result.append(item)
    return result
