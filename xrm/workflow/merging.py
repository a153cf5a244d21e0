"""What a merge of two records does to the removed record's processes, and what its undo
brings back (the outbox consumer calls these; ``storage/merge.py`` marks the rows).

A deletion cancels a record's waiting instances and stops its SLA clocks.  A record
removed by a merge is the same thing as the record kept, so its work goes on there:

* its running and paused SLA clocks move to the kept record, unless that one has a clock
  of the same SLA and metric already (that one goes on; the removed one's stops, as a
  deletion stops it);
* its waiting instances of a process the kept record does not run (waiting, running or
  parked) move to it, timers included (a ``wait``'s, a date trigger's); those of a process
  the kept record runs already are cancelled with a note naming the merge.  An SLA
  warning or breach timer goes where its clock goes.

Every instance keeps what happened in ``context["merge"]`` and a history entry; the
clocks moved and stopped are kept in the merge's row (``record["workflow"]``).  Undoing
the merge moves back what is still waiting on the kept record, lets the cancelled
instances wait again and puts the clocks back as they were.  What ran in between stays
done: an instance that ran on the kept record is not run again.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..storage import tables as T
from . import tables as W

if TYPE_CHECKING:  # pragma: no cover
    from .consumer import Consumer

#: Statuses in which a kept record "runs" a process already.
RUNS = ("waiting", "running", "failed")
CLOCK_STATE = ("status", "resumed_at", "deadline", "elapsed_s")


def _iso(moment) -> str | None:
    return moment.isoformat() if isinstance(moment, dt.datetime) else moment


def _entry(now, status: str, result: str) -> dict:
    return {"at": _iso(now), "path": None, "kind": "merge", "status": status, "result": result}


def carry_over(consumer: Consumer, row, merge: dict) -> None:
    """The removed record's waiting work to the kept record (before its deletion is
    handled, which then finds nothing of it left waiting)."""
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
    waiting = conn.execute(
        sa.select(i.c.id, i.c.process, i.c.context, i.c.history)
        .where(i.c.entity == entity, i.c.record_id == gone, i.c.status == "waiting")
        .order_by(i.c.id)
    ).mappings()
    for instance in waiting:
        context = dict(instance["context"] or {})
        history = list(instance["history"] or [])
        clock = (context.get("sla") or {}).get("clock")
        follows = clock in moved_clocks if clock is not None else instance["process"] not in runs
        if follows:
            context["merge"] = {"id": merge_id, "from": gone, "moved": True}
            history.append(_entry(now, "ok", f"moved from #{gone} to #{kept} by merge #{merge_id}"))
            values = {"record_id": kept}
        else:
            error = (
                f"the record was merged into #{kept} (merge #{merge_id}),"
                " which runs this process already"
            )
            context["merge"] = {"id": merge_id, "from": gone, "cancelled": True}
            history.append(_entry(now, "cancelled", error))
            values = {"status": "cancelled", "finished_at": now, "error": error}
        conn.execute(
            i.update()
            .where(i.c.id == instance["id"], i.c.status == "waiting")
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
    waiting on the kept record comes back, what it cancelled waits again, and the clocks
    are as they were."""
    conn, now = consumer.conn, consumer.now
    entity, back = row["entity"], row["record_id"]
    kept, merge_id = int(merge["into"]), int(merge["id"])
    i, c = W.instances, W.sla_clocks
    candidates = conn.execute(
        sa.select(i.c.id, i.c.record_id, i.c.status, i.c.context, i.c.history).where(
            i.c.entity == entity,
            sa.or_(
                sa.and_(i.c.record_id == kept, i.c.status == "waiting"),
                sa.and_(i.c.record_id == back, i.c.status == "cancelled"),
            ),
        )
    ).mappings()
    for instance in candidates:
        context = dict(instance["context"] or {})
        note = context.get("merge") or {}
        if note.get("id") != merge_id:
            continue
        context.pop("merge")
        history = list(instance["history"] or [])
        history.append(_entry(now, "ok", f"back on #{back}: merge #{merge_id} undone"))
        if note.get("moved") and instance["record_id"] == kept:
            values = {"record_id": back}
        elif note.get("cancelled") and instance["record_id"] == back:
            values = {"status": "waiting", "finished_at": None, "error": None}
        else:
            continue
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
