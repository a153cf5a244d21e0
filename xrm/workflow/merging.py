"""What a merge of two records does to the removed record's processes, and what its undo
brings back (the outbox consumer calls these; ``storage/merge.py`` marks the rows).

A deletion cancels a record's waiting instances and stops its SLA clocks.  A record
removed by a merge is the same thing as the record kept, so its work goes on there:

* its running and paused SLA clocks move to the kept record, unless that one has a clock
  of the same SLA and metric already (that one goes on; the removed one's stops, as a
  deletion stops it);
* its waiting and parked (failed) instances of a process the kept record does not run
  (waiting, running or parked) move to it: a parked one stays parked there, to be
  retried on the kept record; those of a process the kept record runs already are
  cancelled with a note naming the merge.  An SLA warning or breach timer goes where its
  clock goes;
* a timer that moves is timed for the kept record: a date trigger's pending start again
  from the kept record's date (``dates.date_moment``, as a change of that date would time
  it; an empty date, a moment more than a day gone or one the kept record started the
  process for already cancel it instead), a wait that re-checks on every change of its
  record (``until:`` a date field, a condition) is woken to re-check on the kept record,
  and a ``wait: {for: ...}`` keeps its moment.

Every instance keeps what happened in ``context["merge"]`` and a history entry; the
clocks moved and stopped are kept in the merge's row (``record["workflow"]``).  Undoing
the merge moves back what is still waiting or parked on the kept record (a date
trigger's pending start timed from the restored record's date again, and brought back
even when a change of the kept record's date cancelled it meanwhile), lets the cancelled
instances wait (or stay parked) again and puts the clocks back as they were.  What ran in
between stays done: an instance that ran on the kept record is not run again.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..storage import tables as T
from . import tables as W
from .dates import STALE, date_key, date_moment
from .loading import load_records

if TYPE_CHECKING:  # pragma: no cover
    from .consumer import Consumer

#: Statuses in which a kept record "runs" a process already.
RUNS = ("waiting", "running", "failed")
#: Statuses of the removed record's instances that go on on the kept record.
CARRIED = ("waiting", "failed")
CLOCK_STATE = ("status", "resumed_at", "deadline", "elapsed_s")
INSTANCE = ("id", "process", "status", "started", "wake_on_change", "error", "context", "history")


def _iso(moment) -> str | None:
    return moment.isoformat() if isinstance(moment, dt.datetime) else moment


def _entry(now, status: str, result: str) -> dict:
    return {"at": _iso(now), "path": None, "kind": "merge", "status": status, "result": result}


def _date_trigger(consumer: Consumer, instance):
    """The date trigger whose pending start the instance is, or None."""
    if instance["started"]:
        return None
    process = consumer.catalog.processes.get(instance["process"])
    trigger = process.trigger("date") if process is not None else None
    kind = ((instance["context"] or {}).get("trigger") or {}).get("kind")
    return trigger if trigger is not None and kind == "date" else None


def _timed_for(
    consumer: Consumer, entity: str, instance, context: dict, record_id: int
) -> tuple[dict, str | None]:
    """How an instance moving to record ``record_id`` is timed there: (column values, None),
    or ({}, why it cannot go on there).  A date trigger's pending start is timed from that
    record's date, as a change of the date would time it (``context`` takes the moment);
    a wait that re-checks on every change of its record is woken to re-check on this one;
    any other timer keeps its moment."""
    if instance["status"] != "waiting":
        return {}, None  # a parked instance runs again when retried, from where it failed
    trigger = _date_trigger(consumer, instance)
    if trigger is None:
        return ({"due_at": consumer.now} if instance["wake_on_change"] else {}), None
    conn = consumer.conn
    record = load_records(conn, consumer.catalog, entity, [record_id]).get(record_id) or {}
    moment = date_moment(trigger, record, consumer.tz)
    if moment is None:
        return {}, f"#{record_id} has no {' or no '.join(trigger.fields)}"
    if moment < consumer.now - STALE:
        return (
            {},
            f"#{record_id}'s {trigger.date_field} puts the start at {_iso(moment)},"
            " more than a day ago",
        )
    key = date_key(instance["process"], record_id, moment)
    i = W.instances
    taken = conn.execute(sa.select(i.c.id).where(i.c.key == key, i.c.id != instance["id"])).first()
    if taken is not None:
        return {}, (
            f"#{record_id} had this process started for {_iso(moment)} already"
            f" (instance {taken[0]})"
        )
    context["trigger"] = {**context["trigger"], "at": moment.isoformat()}
    return {"due_at": moment, "key": key}, None


def _due(timing: dict) -> str:
    """For the history: a date trigger's start timed again for its new record."""
    return f", due {_iso(timing['due_at'])}" if "key" in timing else ""


def carry_over(consumer: Consumer, row, merge: dict) -> None:
    """The removed record's waiting and parked work to the kept record (before its
    deletion is handled, which then finds nothing of it left waiting)."""
    conn, now = consumer.conn, consumer.now
    entity, gone = row["entity"], row["record_id"]
    kept, merge_id = int(merge["into"]), int(merge["id"])
    i, c = W.instances, W.sla_clocks
    on_master = {
        (r.sla, r.metric)
        for r in conn.execute(
            sa.select(c.c.sla, c.c.metric).where(c.c.entity == entity, c.c.record_id == kept)
        )
    }
    moved_clocks: list[int] = []
    stopped: list[dict] = []
    for clock in conn.execute(
        sa.select(c)
        .where(
            c.c.entity == entity,
            c.c.record_id == gone,
            c.c.status.in_(("running", "paused")),
        )
        .order_by(c.c.id)
    ).mappings():
        if (clock["sla"], clock["metric"]) in on_master:
            # the deletion stops it; an undo puts it back as it was
            stopped.append({"id": clock["id"], **{k: _iso(clock[k]) for k in CLOCK_STATE}})
            continue
        conn.execute(c.update().where(c.c.id == clock["id"]).values(record_id=kept))
        moved_clocks.append(clock["id"])
    runs = set(
        conn.execute(
            sa.select(i.c.process).where(
                i.c.entity == entity, i.c.record_id == kept, i.c.status.in_(RUNS)
            )
        ).scalars()
    )
    carried = conn.execute(
        sa.select(*(i.c[name] for name in INSTANCE))
        .where(i.c.entity == entity, i.c.record_id == gone, i.c.status.in_(CARRIED))
        .order_by(i.c.id)
    ).mappings()
    for instance in list(carried):
        context = dict(instance["context"] or {})
        history = list(instance["history"] or [])
        clock = (context.get("sla") or {}).get("clock")
        follows = clock in moved_clocks if clock is not None else instance["process"] not in runs
        why = None if follows else "which runs this process already"
        timing: dict = {}
        if follows:
            timing, reason = _timed_for(consumer, entity, instance, context, kept)
            why = reason and f"and {reason}"
        if why is None:
            context["merge"] = {"id": merge_id, "from": gone, "moved": True}
            moved = f"moved from #{gone} to #{kept} by merge #{merge_id}{_due(timing)}"
            history.append(_entry(now, "ok", moved))
            values = {"record_id": kept, **timing}
        else:
            error = f"the record was merged into #{kept} (merge #{merge_id}), {why}"
            # what it was, for an undo: a parked instance is parked again, with its error
            context["merge"] = {
                "id": merge_id,
                "from": gone,
                "cancelled": True,
                "was": instance["status"],
                "error": instance["error"],
            }
            history.append(_entry(now, "cancelled", error))
            values = {"status": "cancelled", "finished_at": now, "error": error}
        conn.execute(
            i.update()
            .where(i.c.id == instance["id"], i.c.status == instance["status"])
            .values(context=context, history=history, updated_at=now, **values)
        )
    if moved_clocks or stopped:
        _remember(conn, merge_id, {"clocks": moved_clocks, "stopped": stopped})


def _remember(conn, merge_id: int, workflow: dict) -> None:
    m = T.merges
    record = conn.execute(sa.select(m.c.record).where(m.c.id == merge_id)).scalar()
    if record is not None:
        conn.execute(
            m.update().where(m.c.id == merge_id).values(record={**record, "workflow": workflow})
        )


def bring_back(consumer: Consumer, row, merge: dict) -> None:
    """After an undo restored the removed record: what the merge moved and is still
    waiting or parked on the kept record comes back, what it cancelled waits (or is
    parked) again, and the clocks are as they were."""
    conn, now = consumer.conn, consumer.now
    entity, back = row["entity"], row["record_id"]
    kept, merge_id = int(merge["into"]), int(merge["id"])
    i, c = W.instances, W.sla_clocks
    candidates = conn.execute(
        sa.select(i.c.record_id, *(i.c[name] for name in INSTANCE))
        .where(
            i.c.entity == entity,
            sa.or_(
                sa.and_(i.c.record_id == kept, i.c.status.in_(CARRIED)),
                # a moved date trigger's start that a change of the kept record's date
                # cancelled: the restored record has its own date again
                sa.and_(i.c.record_id == kept, i.c.status == "cancelled", i.c.started.is_(False)),
                sa.and_(i.c.record_id == back, i.c.status == "cancelled"),
            ),
        )
        .order_by(i.c.id)
    ).mappings()
    for instance in list(candidates):
        context = dict(instance["context"] or {})
        note = context.get("merge") or {}
        if note.get("id") != merge_id:
            continue
        on_kept = instance["record_id"] == kept
        if note.get("moved") and on_kept and instance["status"] in CARRIED:
            values = {"record_id": back}
        elif note.get("moved") and on_kept and _date_trigger(consumer, instance) is not None:
            values = {"record_id": back, "status": "waiting", "finished_at": None, "error": None}
        elif note.get("cancelled") and not on_kept:
            # waiting again, or parked again with its own error
            values = {
                "status": note.get("was") or "waiting",
                "finished_at": None,
                "error": note.get("error"),
            }
        else:
            continue
        context.pop("merge")
        history = list(instance["history"] or [])
        back_as = {**instance, "status": values.get("status", instance["status"])}
        timing, reason = _timed_for(consumer, entity, back_as, context, back)
        if reason is None:
            history.append(
                _entry(now, "ok", f"back on #{back}: merge #{merge_id} undone{_due(timing)}")
            )
            values.update(timing)
        else:
            error = f"merge #{merge_id} undone, but {reason}"
            history.append(_entry(now, "cancelled", error))
            values.update(record_id=back, status="cancelled", finished_at=now, error=error)
        conn.execute(
            i.update()
            .where(i.c.id == instance["id"], i.c.status == instance["status"])
            .values(context=context, history=history, updated_at=now, **values)
        )
    record = conn.execute(sa.select(T.merges.c.record).where(T.merges.c.id == merge_id)).scalar()
    workflow = (record or {}).get("workflow") or {}
    if workflow.get("clocks"):
        conn.execute(
            c.update()
            .where(c.c.id.in_(workflow["clocks"]), c.c.record_id == kept)
            .values(record_id=back, updated_at=now)
        )
    for clock in workflow.get("stopped") or ():
        state = {
            k: dt.datetime.fromisoformat(v) if k in ("resumed_at", "deadline") and v else v
            for k, v in clock.items()
            if k in CLOCK_STATE
        }
        conn.execute(
            c.update()
            .where(c.c.id == clock["id"], c.c.record_id == back, c.c.status == "cancelled")
            .values(updated_at=now, **state)
        )
