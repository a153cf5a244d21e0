"""Dry runs: what a process would do to one record now, without keeping anything.

The run goes through the real step handlers in a transaction that is rolled back at the
end, so validation errors, rendered messages and chosen assignees are the real ones;
waits are stepped over (reporting until when they would wait), outside calls and
sub-processes are described, and an approval ends the run (its outcome is unknowable).
"""

from __future__ import annotations

from ..metadata.problems import did_you_mean
from .effects import new_instance
from .runner import Batch, Run
from .tables import ensure_tables


class _Rollback(Exception):
    pass


def dry_run(
    store,
    process_name: str,
    record_id: int | None = None,
    *,
    payload: dict | None = None,
    user_id: int | None = None,
) -> dict:
    ensure_tables(store)
    catalog = store.refresh()
    process = catalog.processes.get(process_name)
    if process is None:
        raise LookupError(
            f"unknown process {process_name!r}{did_you_mean(process_name, catalog.processes)}"
        )
    if process.entity is not None and record_id is None:
        raise ValueError(
            f"process {process_name!r} runs on {process.entity} records: give a record id"
        )
    report: dict = {}
    try:
        with store.transaction() as unit:
            now = store.clock.now()
            batch = Batch(store, unit, catalog, now, settings=store.settings(), dry=True)
            context = {"trigger": {"event": "dry_run"}, "payload": payload or {}, "vars": {}}
            if process.name.startswith("sla:"):
                context["sla"] = _sample_sla(catalog, process.name, now)
            row = new_instance(
                process.name,
                process.entity,
                record_id,
                now,
                key=None,
                context=context,
                user_id=user_id,  # who starts it (a step's "initiator")
            )
            row["id"] = 0
            run = Run(row, process)
            if process.entity is not None:
                run.record = batch.loader.record(process.entity, record_id)
                if run.record is None:
                    raise LookupError(f"{process.entity} {record_id} not found")
            condition = (
                batch.matches(process.condition, run.record)
                if process.condition is not None
                else True
            )
            batch.execute(run)
            effects = batch.effects
            report = {
                "process": process.name,
                "entity": process.entity,
                "record_id": record_id,
                "condition": condition,
                "status": run.status if run.status != "running" else "done",
                "error": run.error,
                "steps": run.history,
                "notifications": [
                    {"user_id": n["user_id"], "title": n["title"], "body": n["body"]}
                    for n in effects.notifications
                ],
                "emails": [
                    {"to": e["to_address"], "subject": e["subject"], "body": e["body"]}
                    for e in effects.emails
                ],
                "approvals": [{"user_id": a["user_id"]} for a in effects.approvals],
                "vars": run.vars,
            }
            raise _Rollback
    except _Rollback:
        pass
    return report


def _sample_sla(catalog, name: str, now) -> dict:
    """What an SLA's warning or breach steps see, for a dry run (the first metric, due now)."""
    _, sla_name, kind = name.split(":")
    sla = catalog.slas[sla_name]
    metric = sla.metrics[0]
    target = next(iter(metric.targets.values()))
    return {
        "name": sla_name,
        "metric": metric.name,
        "kind": kind,
        "deadline": now.isoformat(),
        "target": target,
        "priority": None,
        "elapsed": target,
    }


def describe(report: dict) -> str:
    """A dry run's report as lines of text (for the command line)."""
    lines = [
        f"process {report['process']}"
        + (f" on {report['entity']} {report['record_id']}" if report.get("entity") else "")
    ]
    lines.append(f"  condition: {'holds' if report['condition'] else 'does not hold'}")
    for entry in report["steps"]:
        where = f"[{entry['path']}] " if entry.get("path") else ""
        result = f": {entry['result']}" if entry.get("result") not in (None, {}) else ""
        lines.append(f"  {where}{entry.get('title') or entry['kind']} -> {entry['status']}{result}")
    for item in report["notifications"]:
        lines.append(f"  notify user {item['user_id']}: {item['title']}")
    for item in report["emails"]:
        lines.append(f"  email {item['to']}: {item['subject']}")
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    lines.append(f"  ends: {report['status']} (nothing was written)")
    return "\n".join(lines)
