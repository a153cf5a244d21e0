"""Processes and their instances in the admin area: the catalog's processes and SLAs with
instance counts, a process's diagram, triggers and condition in words and a dry run, a
filterable list of instances with the record changes the engine could not handle (dead
letters, with Retry), and one instance's history with Retry and Cancel.

Everything is read from the workflow engine's tables and API (``xrm.workflow``); the only
writes are ``retry``, ``cancel`` and ``retry_change``, which the engine makes atomic on the
instance's or the dead letter's status.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from .... import workflow
from ....metadata import Entity
from ....metadata.fieldtypes import format_duration
from ....metadata.filters import All, AnyOf, Condition, CurrentUser, Not, system_field
from ....metadata.processes import Process, Trigger
from ....workflow import heartbeat
from ....workflow import tables as W
from ....workflow.blocked import reason_for
from ...routing import parse_id
from .. import context as C
from ..filtering import NO_VALUE_OPS, OPERATOR_WORDS
from ..guards import htmx
from . import bp

PAGE = 50  # instances a page, unless ?limit= says otherwise
MAX_PAGE = 500
RECENT = 10  # instances shown on a process's page
STATUSES = ("waiting", "running", "done", "failed", "cancelled", "skipped")
BADGES = {
    "waiting": "text-bg-info",
    "running": "text-bg-primary",
    "done": "text-bg-success",
    "failed": "text-bg-danger",
    "cancelled": "text-bg-secondary",
    "skipped": "text-bg-light border",
}
RETRYABLE = ("failed",)  # what xrm.workflow.retry accepts
CANCELLABLE = ("waiting", "failed")  # what xrm.workflow.cancel accepts
# Every instance column but the bulky JSON ones (a list needs none of them).
_LIST_COLUMNS = [c for c in W.instances.c if c.name not in ("context", "history")]
# Times are formatted like any datetime field: Babel, the admin's locale and zone.
_MOMENT = system_field("xrm_wf_instance", "created_at")


# ------------------------------------------------------------------------ words
def status_text(status: str) -> str:
    words = {
        "waiting": C._("Waiting"),
        "running": C._("Running"),
        "done": C._("Done"),
        "failed": C._("Parked"),
        "cancelled": C._("Cancelled"),
        "skipped": C._("Skipped"),
    }
    return words.get(status, status)


def clock_text(status: str) -> str:
    words = {
        "running": C._("Running"),
        "paused": C._("Paused"),
        "done": C._("Met"),
        "cancelled": C._("Cancelled"),
    }
    return words.get(status, status)


def entry_text(status: str) -> str:
    """The status of one history entry (a step's outcome); an instance's own statuses
    read as in ``status_text``."""
    words = {
        "ok": C._("OK"),
        "stopped": C._("Stopped"),
        "calling": C._("Calling out"),
        "error": C._("Error"),
    }
    return words[status] if status in words else status_text(status)


def when(value) -> str:
    """A moment (a datetime, or the ISO text the engine keeps in history and context) in the
    admin's locale and time zone."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return _MOMENT.format(value, C.locale(), C.tz())


def business_span(seconds: int) -> str:
    """SLA time in hours and minutes (``40h``, not ``1d 16h``: a business day is no 24h)."""
    hours, rest = divmod(abs(int(seconds)), 3600)
    minutes = rest // 60
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return ("-" if seconds < 0 else "") + (text or "0m")


def _offset_text(seconds: int) -> str:
    return ("+" if seconds > 0 else "") + format_duration(seconds)


def _fields_text(entity: Entity | None, names) -> str:
    return ", ".join(C.path_label(entity, n) if entity else n for n in names)


def _stages_text(entity: Entity | None, stages) -> str:
    field = entity.fields.get(entity.stages.field) if entity and entity.stages else None
    return ", ".join(_value_words(field, s) if field else str(s) for s in stages)


def trigger_words(process: Process, trigger: Trigger) -> str:
    """One trigger as a sentence for administrators."""
    entity = C.catalog().entity_of(process.entity) if process.entity else None
    kind = trigger.kind
    if kind == "created":
        return C._("When a record is created")
    if kind == "updated":
        if trigger.fields:
            return C._(
                "When a record is updated and one of these changes: %(fields)s",
                fields=_fields_text(entity, trigger.fields),
            )
        return C._("When a record is updated")
    if kind == "deleted":
        return C._("When a record is deleted")
    if kind == "enter_stage":
        return C._("When the stage becomes %(stages)s", stages=_stages_text(entity, trigger.stages))
    if kind == "exit_stage":
        return C._("When the stage leaves %(stages)s", stages=_stages_text(entity, trigger.stages))
    if kind == "schedule":
        zone = trigger.time_zone or C.settings().get("time_zone") or "UTC"
        text = C._("On the schedule %(cron)s (%(zone)s)", cron=trigger.cron, zone=zone)
        if entity is not None:
            text += "; " + C._("for every matching record")
        return text
    if kind == "date":
        field = _fields_text(entity, [trigger.date_field])
        text = C._("At the time in %(field)s", field=field)
        if trigger.before_field:
            text += ", " + C._(
                "minus the duration in %(field)s",
                field=_fields_text(entity, [trigger.before_field]),
            )
        if trigger.offset:
            text += ", " + C._("offset %(offset)s", offset=_offset_text(trigger.offset))
        if trigger.time is not None:
            text += ", " + C._("at %(time)s for a date", time=trigger.time.strftime("%H:%M"))
        return text
    if kind == "manual":
        text = C._("Started by hand")
        if trigger.label:
            text += f" («{C.label(trigger.label)}»)"
        if trigger.roles:
            text += "; " + C._("by the roles %(roles)s", roles=", ".join(trigger.roles))
        return text
    if kind == "webhook":
        return C._(
            "From an inbound webhook (signature: %(signature)s)", signature=trigger.signature
        )
    return kind


def _value_words(field, value) -> str:
    if isinstance(value, CurrentUser):
        return C._("the current user")
    if isinstance(value, list | tuple):
        return ", ".join(_value_words(field, v) for v in value)
    if field is None:
        return str(value)
    if field.type == "choice":
        option = field.option(value)
        return C.label(option) if option else str(value)
    try:
        return C.text(field, value) or str(value)
    except (TypeError, ValueError, KeyError, AttributeError):
        return str(value)


def condition_words(entity: Entity | None, node, nested: bool = False) -> str:
    """A typed filter as a sentence: "Priority is one of High, Urgent and Agent is empty"."""
    if node is None:
        return ""
    if isinstance(node, Condition):
        subject = C.path_label(entity, node.dotted) if entity else node.dotted
        words = C._(OPERATOR_WORDS.get(node.op, node.op))
        if node.op in NO_VALUE_OPS:
            return f"{subject} {words}"
        if node.op in ("last_n_days", "next_n_days", "older_than_days"):
            return f"{subject} {words} (N = {node.value})"
        return f"{subject} {words} {_value_words(node.field, node.value)}"
    if isinstance(node, All | AnyOf):
        joiner = f" {C._('and')} " if isinstance(node, All) else f" {C._('or')} "
        text = joiner.join(condition_words(entity, c, True) for c in node.children)
        return f"({text})" if nested and len(node.children) > 1 else text
    if isinstance(node, Not):
        return f"{C._('not')} ({condition_words(entity, node.child)})"
    return str(node)


def pretty(value) -> str:
    """JSON for people: indented, keys sorted, non-ASCII kept (escaped by the template)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short(value, size: int = 160) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= size else text[: size - 1] + "…"


def _helpers() -> dict:
    """What every template of this module uses to show statuses, times and values."""
    return {
        "statuses": STATUSES,
        "badges": BADGES,
        "status_text": status_text,
        "entry_text": entry_text,
        "clock_text": clock_text,
        "when": when,
        "short": short,
    }


# ------------------------------------------------------------------------ reading
def _process_or_404(name: str) -> Process:
    process = C.catalog().processes.get(name)
    if process is None:
        abort(404)
    return process


def _counts(where=None) -> dict[str, dict[str, int]]:
    """Instances per process and status, in one grouped query."""
    i = W.instances
    query = sa.select(i.c.process, i.c.status, sa.func.count()).group_by(i.c.process, i.c.status)
    if where is not None:
        query = query.where(where)
    counts: dict[str, dict[str, int]] = {}
    with C.store().engine.connect() as conn:
        for process, status, number in conn.execute(query):
            counts.setdefault(process, {})[status] = number
    return counts


def _sla_counts() -> dict[str, dict[str, int]]:
    c = W.sla_clocks
    counts: dict[str, dict[str, int]] = {}
    with C.store().engine.connect() as conn:
        for sla, status, number in conn.execute(
            sa.select(c.c.sla, c.c.status, sa.func.count()).group_by(c.c.sla, c.c.status)
        ):
            counts.setdefault(sla, {})[status] = number
    return counts


def _rows(query) -> list[dict]:
    with C.store().engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _describe(rows: list[dict]) -> list[dict]:
    """Instance rows with what a page shows: process label, record title and link."""
    catalog = C.catalog()
    titles = C.titles()
    for row in rows:
        if row["entity"] in catalog.entities and row["record_id"] is not None:
            titles.want(row["entity"], row["record_id"])
        titles.want("user", row.get("user_id"))
    titles.resolve()
    reasons = _blocked_reasons([row["id"] for row in rows if row["status"] == "failed"])
    for row in rows:
        process = catalog.processes.get(row["process"])
        row["process_label"] = C.label(process) if process else row["process"]
        row["process_defined"] = process is not None
        row["record"] = _record_ref(row["entity"], row["record_id"])
        if row["id"] in reasons:
            # why it is parked, in the reader's words, with the values they may read
            row["error"] = reason_for(reasons[row["id"]], C.locale(), catalog, C.principal())
    return rows


def _blocked_reasons(ids: list[int]) -> dict[int, dict]:
    """Instance id -> the reason it is parked (``context["blocked"]``), for those that are
    parked waiting for a fix."""
    if not ids:
        return {}
    i = W.instances
    rows = _rows(sa.select(i.c.id, i.c.context).where(i.c.id.in_(ids)))
    return {r["id"]: r["context"]["blocked"] for r in rows if (r["context"] or {}).get("blocked")}


def _record_ref(entity_name: str | None, record_id) -> dict | None:
    if entity_name is None or record_id is None:
        return None
    entity = C.catalog().entity_of(entity_name)
    titles = C.titles()
    if entity is None:
        return {"title": f"{entity_name} #{record_id}", "url": None, "entity": entity_name}
    title = titles.title(entity_name, record_id)  # fetched with the page's others if wanted
    return {
        "title": title,
        # a deleted record has no title: nothing to link to
        "url": C.record_url(entity_name, record_id)
        if titles.readable(entity_name, record_id)
        else None,
        "entity": C.label(entity),
    }


# ------------------------------------------------------------------------ processes
@bp.get("/processes")
def processes():
    workflow.ensure_tables(C.store())
    catalog = C.catalog()
    counts = _counts()
    # SLA warning and breach steps are compiled into processes named sla:<sla>:<hook>;
    # they are listed with their SLA rather than as processes of their own
    own = [p for p in catalog.processes.values() if ":" not in p.name]
    rows = []
    for process in sorted(own, key=lambda p: C.label(p).lower()):
        entity = catalog.entity_of(process.entity) if process.entity else None
        rows.append(
            {
                "process": process,
                "entity": C.label(entity) if entity else "",
                "triggers": [trigger_words(process, t) for t in process.triggers],
                "counts": counts.get(process.name, {}),
            }
        )
    gone = sorted(name for name in counts if name not in catalog.processes)
    sla_counts = _sla_counts()
    slas = []
    for sla in sorted(catalog.slas.values(), key=lambda s: C.label(s).lower()):
        entity = catalog.entity_of(sla.entity)
        hooks = [
            (name, catalog.processes.get(name), counts.get(name, {}))
            for name in (sla.warning_process, sla.breach_process)
            if name
        ]
        slas.append(
            {
                "sla": sla,
                "entity": C.label(entity) if entity else sla.entity,
                "metrics": [(m.name, _targets_text(entity, sla, m)) for m in sla.metrics],
                "hooks": [(n, p) for n, p, _ in hooks if p is not None],
                "clocks": sla_counts.get(sla.name, {}),
            }
        )
    return render_template(
        "admin/processes.html",
        **_helpers(),
        rows=rows,
        gone=[(name, counts[name]) for name in gone],
        slas=slas,
        worker=_worker(),
    )


def _worker() -> dict | None:
    """The worker that beat last, with how long ago in words; None when none ever did."""
    worker = heartbeat.latest(C.store())
    if worker is not None:
        worker["ago"] = format_duration(max(1, round(worker["age_s"])))
    return worker


def _targets_text(entity: Entity | None, sla, metric) -> str:
    """``High: 4h, any other: 8h`` (business time per priority)."""
    field = entity.fields.get(sla.priority_field) if entity and sla.priority_field else None
    return ", ".join(
        f"{C._('any other') if priority == '*' else _value_words(field, priority)}: "
        + business_span(seconds)
        for priority, seconds in metric.targets.items()
    )


def _process_page(process: Process, *, record_id: str = "", report=None, problem=None):
    store = C.store()
    workflow.ensure_tables(store)
    catalog = C.catalog()
    entity = catalog.entity_of(process.entity) if process.entity else None
    recent = _describe(workflow.instances(store, process=process.name, limit=RECENT))
    return render_template(
        "admin/process.html",
        **_helpers(),
        process=process,
        # not "entity": the page's sidebar would take it for the entity being browsed
        process_entity=entity,
        svg=Markup(workflow.diagram(process)),  # diagram() escapes every text it draws
        triggers=[trigger_words(process, t) for t in process.triggers],
        condition=condition_words(entity, process.condition),
        was=condition_words(entity, process.was),
        counts=_counts(W.instances.c.process == process.name).get(process.name, {}),
        recent=recent,
        record_id=record_id,
        report=_report_view(report) if report is not None else None,
        problem=problem,
    )


@bp.get("/processes/<name>")
def process(name: str):
    return _process_page(_process_or_404(name))


@bp.post("/processes/<name>/dry-run")
def dry_run(name: str):
    """What the process would do to one record now; the engine rolls everything back."""
    process = _process_or_404(name)
    raw = request.form.get("record_id", "").strip()
    report, problem = None, None
    if raw and parse_id(raw) is None:
        problem = C._("A record id is a whole number, such as 42.")
    elif process.entity is not None and not raw:
        entity = C.catalog().entity_of(process.entity)
        problem = C._(
            "This process runs on %(entity)s records: enter the id of one.",
            entity=C.label(entity) if entity else process.entity,
        )
    else:
        record_id = parse_id(raw) if process.entity is not None else None
        try:
            report = workflow.dry_run(C.store(), name, record_id)
        except LookupError:
            entity = C.catalog().entity_of(process.entity) if process.entity else None
            problem = C._(
                "There is no %(entity)s with id %(id)s.",
                entity=C.label(entity) if entity else process.entity,
                id=raw,
            )
    status = 422 if problem else 200
    if htmx():
        view = _report_view(report) if report is not None else None
        return render_template(
            "admin/_process_dry_run.html",
            **_helpers(),
            process=process,
            report=view,
            problem=problem,
            record_id=raw,
        ), status
    return _process_page(process, record_id=raw, report=report, problem=problem), status


def _report_view(report: dict) -> dict:
    """A dry run's report with users' names and the record's title, for the page."""
    titles = C.titles()
    for item in report["notifications"] + report["approvals"]:
        titles.want("user", item["user_id"])
    if report.get("entity") in C.catalog().entities and report.get("record_id") is not None:
        titles.want(report["entity"], report["record_id"])
    titles.resolve()
    return {
        **report,
        "record": _record_ref(report.get("entity"), report.get("record_id")),
        "notifications": [
            {**n, "user": titles.title("user", n["user_id"])} for n in report["notifications"]
        ],
        "approvals": [
            {**a, "user": titles.title("user", a["user_id"])} for a in report["approvals"]
        ],
        "vars_json": pretty(report.get("vars") or {}),
    }


# ------------------------------------------------------------------------ instances
@bp.get("/instances")
def instances():
    """Instances newest first, filtered by process, status, entity and record; a page ends
    at ``before`` (an id), so paging stays cheap however many there are."""
    store = C.store()
    workflow.ensure_tables(store)
    args = request.args
    i = W.instances
    filters: dict[str, Any] = {}
    query = sa.select(*_LIST_COLUMNS).order_by(i.c.id.desc())
    for name in ("process", "entity"):
        value = args.get(name, "").strip()
        if value:
            filters[name] = value
            query = query.where(i.c[name] == value)
    status = args.get("status", "")
    if status in STATUSES:
        filters["status"] = status
        query = query.where(i.c.status == status)
    record_id = parse_id(args.get("record_id", "").strip())
    if record_id is not None:
        filters["record_id"] = str(record_id)
        query = query.where(i.c.record_id == record_id)
    before = parse_id(args.get("before"))
    if before is not None:
        query = query.where(i.c.id < before)
    limit = parse_id(args.get("limit"))
    size = min(limit, MAX_PAGE) if limit is not None else PAGE
    if limit is not None:
        filters["limit"] = size
    rows = _rows(query.limit(size + 1))
    more = len(rows) > size
    letters = workflow.dead_letters(
        store,
        entity=filters.get("entity"),
        record_id=int(filters["record_id"]) if "record_id" in filters else None,
        limit=PAGE,
    )
    rows = _describe(rows[:size])
    letters = _describe_letters(letters)
    catalog = C.catalog()
    record, clocks = None, []
    entity_name = filters.get("entity")
    if entity_name in catalog.entities and "record_id" in filters:
        # a record's own workflow view: its instances, and its SLA clocks beside them
        record = _record_ref(entity_name, int(filters["record_id"]))
        clocks = _clock_view(workflow.sla_clocks(store, entity_name, int(filters["record_id"])))
    return render_template(
        "admin/instances.html",
        **_helpers(),
        rows=rows,
        filters=filters,
        next_url=url_for("ui_admin.instances", **filters, before=rows[-1]["id"])
        if more and rows
        else None,
        first_url=url_for("ui_admin.instances", **filters) if before is not None else None,
        processes=sorted(catalog.processes.values(), key=lambda p: C.label(p).lower()),
        entities=sorted(catalog.entities.values(), key=lambda e: C.label(e).lower()),
        record=record,
        clocks=clocks,
        letters=letters,
    )


def _describe_letters(letters: list[dict]) -> list[dict]:
    """Dead letters with what the page shows: the record's title and link, the event."""
    titles = C.titles()
    catalog = C.catalog()
    for letter in letters:
        if letter["entity"] in catalog.entities and letter["record_id"] is not None:
            titles.want(letter["entity"], letter["record_id"])
    titles.resolve()
    for letter in letters:
        letter["record"] = _record_ref(letter["entity"], letter["record_id"])
        letter["event_text"] = _event_words(letter["event"], letter["event"])
    return letters


def _clock_view(rows: list[dict]) -> list[dict]:
    catalog = C.catalog()
    view = []
    for row in rows:
        sla = catalog.slas.get(row["sla"])
        view.append(
            {
                **row,
                "sla_label": C.label(sla) if sla else row["sla"],
                "used": business_span(row["used_s"]),
                "left": business_span(row["left_s"]),
                "target": business_span(row["target_s"]),
            }
        )
    return view


@bp.get("/instances/<recid:instance_id>")
def instance(instance_id: int):
    row = workflow.instance(C.store(), instance_id)
    if row is None:
        abort(404)
    catalog = C.catalog()
    process = catalog.processes.get(row["process"])
    context = row["context"] or {}
    trigger = context.get("trigger") or {}
    titles = C.titles()
    who_id = trigger.get("user_id") or row["user_id"]
    titles.want("user", who_id)
    [row] = _describe([row])
    entity = catalog.entity_of(row["entity"]) if row["entity"] else None
    history = []
    for entry in row["history"] or []:
        step = _step_at(process, entry.get("path"))
        title = entry.get("title") or (step.title if step else "")
        history.append(
            {
                **entry,
                "when": when(entry.get("at")),
                "title": "" if title == entry.get("kind") else title,  # a step without a name
                "result_text": short(entry.get("result"), 400),
            }
        )
    position = row["position"]
    next_step = None
    if process is not None and position is not None and row["status"] not in ("done",):
        try:
            next_step = process.step_at(position)
        except (KeyError, IndexError):  # the process changed since: the path is gone
            next_step = None
    return render_template(
        "admin/instance.html",
        **_helpers(),
        row=row,
        process=process,
        trigger={
            "who": titles.title("user", who_id) if who_id else C._("System"),
            "event": _event_words(trigger.get("kind"), trigger.get("event")),
            "changed": _fields_text(entity, trigger.get("changed") or []),
            "field": _fields_text(entity, [trigger["field"]]) if trigger.get("field") else "",
            "at": when(trigger.get("at") or row["created_at"]),
            "parent_id": row["parent_id"] or trigger.get("parent"),
        },
        history=history,
        next_step=next_step,
        position=".".join(str(p) for p in position) if position else "",
        traceback=context.get("traceback"),
        vars_json=pretty(context.get("vars") or {}),
        context_json=pretty(context),
        attempt_limit=_attempt_limit(process, next_step),
        can_retry=row["status"] in RETRYABLE,
        can_cancel=row["status"] in CANCELLABLE,
    )


def _attempt_limit(process: Process | None, step) -> int | None:
    """How often the engine tries the next step before parking (webhooks: retries + 1)."""
    if process is None:
        return None
    if step is not None and step.kind == "webhook":
        return int(step.spec.get("retries", 5)) + 1
    return process.max_attempts


def _step_at(process: Process | None, path: str | None):
    """The step a history entry names (``0.then.1``), if the process still has it."""
    if process is None or not path or path == "start":
        return None
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    try:
        return process.step_at(parts)
    except (KeyError, IndexError, TypeError):
        return None


def _event_words(kind: str | None, event: str | None) -> str:
    """What started an instance: the trigger's kind (enter_stage) says more than the
    record event behind it (updated); SLA timers and sub-processes have only an event."""
    words = {
        "created": C._("The record was created"),
        "updated": C._("The record was updated"),
        "deleted": C._("The record was deleted"),
        "enter_stage": C._("The record entered a stage"),
        "exit_stage": C._("The record left a stage"),
        "schedule": C._("The schedule came due"),
        "date": C._("A date field came due"),
        "manual": C._("Started by hand"),
        "webhook": C._("An inbound webhook"),
        "subprocess": C._("Started by another process"),
        "sla": C._("An SLA timer"),
    }
    return words.get(kind or "") or words.get(event or "") or kind or event or C._("Unknown")


def _back(instance_id: int):
    target = C.safe_next(request.form.get("next"))
    return redirect(target or url_for("ui_admin.instance", instance_id=instance_id), code=303)


@bp.post("/instances/<recid:instance_id>/retry")
def retry_instance(instance_id: int):
    store = C.store()
    if workflow.retry(store, instance_id):
        flash(
            C._("Instance #%(id)s will run again from the step that failed.", id=instance_id),
            "success",
        )
    else:
        row = workflow.instance(store, instance_id)
        if row is None:
            abort(404)
        flash(
            C._(
                "Instance #%(id)s is %(status)s: only a parked instance can be retried.",
                id=instance_id,
                status=status_text(row["status"]).lower(),
            ),
            "warning",
        )
    return _back(instance_id)


@bp.post("/instances/<recid:instance_id>/cancel")
def cancel_instance(instance_id: int):
    store = C.store()
    if workflow.cancel(store, instance_id):
        flash(C._("Instance #%(id)s cancelled: it will not run again.", id=instance_id), "success")
    else:
        row = workflow.instance(store, instance_id)
        if row is None:
            abort(404)
        flash(
            C._(
                "Instance #%(id)s is %(status)s: only a waiting or parked instance can be cancelled.",
                id=instance_id,
                status=status_text(row["status"]).lower(),
            ),
            "warning",
        )
    return _back(instance_id)


@bp.post("/changes/<recid:change_id>/retry")
def retry_change(change_id: int):
    """Handle a dead-lettered record change again, once its data has been fixed."""
    store = C.store()
    letter = workflow.dead_letter(store, change_id)
    if letter is None:
        abort(404)
    try:
        error = workflow.retry_change(store, change_id)
    except LookupError:
        flash(C._("Change #%(id)s was handled already.", id=change_id), "info")
    else:
        if error:
            flash(
                C._("Change #%(id)s failed again: %(error)s", id=change_id, error=error), "danger"
            )
        else:
            flash(C._("Change #%(id)s went through.", id=change_id), "success")
    target = C.safe_next(request.form.get("next"))
    return redirect(target or url_for("ui_admin.instances"), code=303)
