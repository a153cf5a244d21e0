"""Process instances for people and the admin area: start one by hand, read one's history,
list them, retry a parked one, cancel one, and see a record's stage history."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import sqlalchemy as sa

from ..storage import tables as T
from ..storage.database import WRITE
from . import claims
from . import tables as W
from .effects import new_instance
from .tables import ensure_tables

log = logging.getLogger("xrm.workflow")

#: Seconds a start's first pass holds its instance; should the web process die meanwhile,
#: the reaper gives it to a worker after that.
FIRST_PASS_LEASE = 60.0


class StartRefused(PermissionError):
    pass


def start(
    store,
    process_name: str,
    record_id: int | None = None,
    *,
    user_id: int | None = None,
    payload: dict | None = None,
    key: str | None = None,
    trigger: str = "manual",
    check: bool = False,
) -> int:
    """Queue an instance now (a manual button, an inbound webhook, the API); returns its id.

    With ``user_id``, the process needs a manual trigger, the user one of its roles (if it
    names any) and the right to update the record.

    With ``check``, its first pass runs at once and is kept only when a step cannot go on
    (no approvers, nobody to tell, a record gone: ``blocked.py``): then the instance is
    parked and people are told before this returns, so the caller can say so (read the
    instance's status and ``context["blocked"]``).  Otherwise the pass is rolled back and
    the instance waits for a worker as usual.
    """
    ensure_tables(store)
    catalog = store.refresh()
    process = catalog.processes.get(process_name)
    if process is None or not process.enabled:
        raise StartRefused(f"no enabled process {process_name!r}")
    if process.entity is not None and record_id is None:
        raise StartRefused(
            f"process {process_name!r} runs on {process.entity} records: give a record id"
        )
    if user_id is not None:
        manual = process.trigger("manual")
        if manual is None:
            raise StartRefused(f"process {process_name!r} cannot be started by hand")
        principal = store.principal(user_id)
        if principal is None:
            raise StartRefused("unknown or inactive user")
        if manual.roles and not principal.is_admin and not set(manual.roles) & set(principal.roles):
            raise StartRefused(f"only {', '.join(manual.roles)} may start {process_name!r}")
        if process.entity is not None:
            records = store.records(process.entity, principal=principal)
            record = records.get(record_id, fields=["id", "owner"])
            records._check_access("update", record)
    elif process.entity is not None:
        store.records(process.entity).get(record_id, fields=["id"])  # NotFound for a bad id
    now = store.clock.now()
    context = {
        "trigger": {"event": trigger, "kind": trigger, "at": now.isoformat(), "user_id": user_id},
        "payload": payload or {},
        "vars": {},
    }
    row = new_instance(
        process.name, process.entity, record_id, now, key=key, context=context, user_id=user_id
    )
    # Checked: inserted as claimed by this call, so that no worker takes it meanwhile.
    owner = f"start:{uuid.uuid4().hex[:12]}" if check else None
    if owner is not None:
        lease_until = now + dt.timedelta(seconds=FIRST_PASS_LEASE)
        row.update(status="running", lease_owner=owner, lease_until=lease_until, attempts=1)
    i = W.instances
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        if key is not None:
            existing = conn.execute(sa.select(i.c.id).where(i.c.key == key)).scalar()
            if existing is not None:
                return existing
        ident = conn.execute(i.insert().values(**row).returning(i.c.id)).scalar_one()
        if owner is None:
            W.notify(conn)
    if owner is not None and not _first_pass(store, ident, owner):
        _hand_to_workers(store, ident, owner)
    return ident


class _Queue(Exception):
    """The first pass went on normally: roll it back, the worker runs it."""


def _first_pass(store, ident: int, owner: str) -> bool:
    """Run a new instance up to its first wait and keep that only if a step stopped it for
    good; True when it did (the instance is parked, people are told)."""
    from .runner import Batch, load_runs

    if store.current_unit() is not None:
        return False  # inside the caller's transaction a rollback would undo their work
    try:
        with store.transaction() as unit:
            now = store.clock.now()
            conn = unit.connection
            if ident not in claims.fence(conn, [ident], owner, now, FIRST_PASS_LEASE):
                return False
            i = W.instances
            columns = [i.c[name] for name in claims.RUN_COLUMNS]
            row = dict(conn.execute(sa.select(*columns).where(i.c.id == ident)).mappings().one())
            batch = Batch(store, unit, unit.catalog, now, settings=store.settings())
            runs = load_runs(batch, [row])
            batch.execute(runs[0])
            if runs[0].blocked is None or runs[0].status != "failed":
                raise _Queue
            batch.persist(runs)
        return True
    except _Queue:
        return False
    except Exception:  # whatever broke here, a worker meets it again and reports it
        log.warning("workflow: the first pass of instance %s failed", ident, exc_info=True)
        return False


def _hand_to_workers(store, ident: int, owner: str) -> None:
    i = W.instances
    now = store.clock.now()
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(
            i.update()
            .where(i.c.id == ident, i.c.lease_owner == owner, i.c.status == "running")
            .values(
                status="waiting",
                lease_owner=None,
                lease_until=None,
                attempts=0,
                due_at=now,
                updated_at=now,
            )
        )
        W.notify(conn)


def instance(store, instance_id: int) -> dict | None:
    ensure_tables(store)
    with store.engine.connect() as conn:
        row = (
            conn.execute(sa.select(W.instances).where(W.instances.c.id == instance_id))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def instances(
    store,
    *,
    process: str | None = None,
    entity: str | None = None,
    record_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """Newest first, without the bulky context and history columns."""
    ensure_tables(store)
    i = W.instances
    columns = [c for c in i.c if c.name not in ("context", "history")]
    query = sa.select(*columns).order_by(i.c.id.desc()).limit(limit)
    for column, value in (
        (i.c.process, process),
        (i.c.entity, entity),
        (i.c.record_id, record_id),
        (i.c.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def retry(store, instance_id: int) -> bool:
    """Make a parked (failed) instance run again now, from the step that failed."""
    return _set(
        store, instance_id, ("failed",), status="waiting", attempts=0, due_at=store.clock.now()
    )


def cancel(store, instance_id: int) -> bool:
    """Stop a waiting or parked instance; approvals it was waiting for are withdrawn."""
    now = store.clock.now()
    return _set(
        store,
        instance_id,
        ("waiting", "failed"),
        withdraw=True,
        status="cancelled",
        due_at=None,
        finished_at=now,
    )


def _set(store, instance_id: int, from_status, *, withdraw: bool = False, **values) -> bool:
    ensure_tables(store)
    i, a = W.instances, W.approvals
    now = store.clock.now()
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        result = conn.execute(
            i.update()
            .where(i.c.id == instance_id, i.c.status.in_(from_status))
            .values(updated_at=now, **values)
        )
        if withdraw and result.rowcount == 1:
            conn.execute(
                a.update()
                .where(a.c.instance_id == instance_id, a.c.decision.is_(None))
                .values(decision="withdrawn", decided_at=now)
            )
        W.notify(conn)
    return result.rowcount == 1


def stage_history(store, entity: str, record_id: int) -> list[dict]:
    """A record's stays in the stages of its stage flow, oldest first, with durations."""
    h = T.stage_history
    now = store.clock.now()
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(h)
            .where(h.c.entity == entity, h.c.record_id == record_id)
            .order_by(h.c.entered_at, h.c.id)
        ).mappings()
        result = []
        for row in rows:
            item = dict(row)
            item["seconds"] = int(((row["left_at"] or now) - row["entered_at"]).total_seconds())
            result.append(item)
    return result
