"""Scheduling a report by email, for administrators: a report's schedules (the processes
whose ``send_report`` steps send it), a form to add one (daily, weekly, monthly or a cron
expression; roles and users; the report's parameters; a table and/or a workbook) and a way
to remove one.

A schedule is an ordinary process in the customization layer (``store.customize("process",
...)``): the workflow engine's scheduler runs it, ``xrm check`` and the export of
customizations see it like any other, and a pack's own scheduled processes are listed too
(they are switched on or off in their pack).  Removing one takes its document out of the
layer and cancels its waiting tick, so nothing is left to fail later.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ...metadata.problems import DefinitionError
from ...metadata.processes import as_list
from ...metadata.reports import Report
from ...workflow import cancel, instances
from ...workflow.schedule import next_time
from . import context as C
from .guards import guard
from .reports import PERIODS, period_label

bp = guard(Blueprint("ui_report_schedules", __name__), admin=True)

#: What the presets mean, for a time HH:MM, a weekday (0 Sunday .. 6) and a day of month.
PRESETS = ("daily", "weekdays", "weekly", "monthly", "custom")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class FormProblem(ValueError):
    """A form value that cannot make a schedule (said to the administrator as is)."""


def _report_or_404(name: str) -> Report:
    report = C.catalog().reports.get(name)
    if report is None:
        abort(404)
    return report


def schedules_of(report: Report) -> list[dict]:
    """The processes that email this report: name, label, when, to whom, whether on, and
    whether the administrators' layer holds them (only those can be removed here)."""
    catalog = C.catalog()
    out = []
    tz = C.settings().get("time_zone") or "UTC"
    for process in catalog.processes.values():
        steps = [
            s
            for s in process.walk()
            if s.kind == "send_report" and s.spec.get("report") == report.name
        ]
        trigger = process.trigger("schedule")
        if not steps or trigger is None:
            continue
        zone = trigger.time_zone or tz
        upcoming = None
        if process.enabled:
            upcoming = next_time(trigger.cron, C.store().clock.now(), zone)
        out.append(
            {
                "name": process.name,
                "label": C.label(process),
                "cron": trigger.cron,
                "time_zone": zone,
                "to": ", ".join(str(t) for s in steps for t in as_list(s.spec["to"])),
                "parameters": ", ".join(
                    f"{k}={v}" for s in steps for k, v in (s.spec.get("parameters") or {}).items()
                ),
                "enabled": process.enabled,
                "next": _moment(upcoming) if upcoming else "",
                "removable": process.solution == _layer(),
            }
        )
    return sorted(out, key=lambda s: s["label"].casefold())


def _layer() -> str:
    from ...metadata.compiler import LAYER

    return LAYER


def _moment(moment: dt.datetime) -> str:
    """A moment in the user's zone and locale."""
    from babel.dates import format_datetime

    local = moment.astimezone(ZoneInfo(C.tz()))
    return format_datetime(local, "medium", tzinfo=local.tzinfo, locale=C.locale())


def form_context(report: Report, values: dict | None = None) -> dict:
    values = values or {}
    users = [u for u in C.store().users() if u.active]
    roles = C.catalog().roles
    parameters = []
    for name, parameter in report.parameters.items():
        control = {"name": name, "label": C.label(parameter), "type": parameter.type}
        if parameter.type == "period":
            control["options"] = [(p, period_label(p)) for p in PERIODS]
        elif parameter.type == "choice":
            field = C.field_at(C.catalog().entity(report.entity), parameter.field)
            control["options"] = [(o.value, C.label(o)) for o in field.choices]
        elif parameter.type == "team":
            control["options"] = [(t, t) for t in C.store().teams()]
        else:  # a user parameter: each reader (me) or anyone
            control["options"] = [("me", C._("The reader"))]
        parameters.append(control)
    return {
        "report": report,
        "schedules": schedules_of(report),
        "roles": [(name, C.label(role)) for name, role in roles.items()],
        "users": [(u.email, f"{u.name} <{u.email}>") for u in users],
        "parameters": parameters,
        "presets": [(p, C._(p.capitalize())) for p in PRESETS],
        "weekdays": [(str(i), C._(day)) for i, day in enumerate(WEEKDAYS)],
        "values": values,
    }


@bp.get("/reports/<name>/schedules")
def page(name: str):
    report = _report_or_404(name)
    return render_template("ui/reports/schedules.html", **form_context(report))


def cron_of(form) -> str:
    """The cron expression a preset stands for (``custom``: the one typed)."""
    preset = form.get("preset", "weekly")
    if preset == "custom":
        from ...metadata.process_compiler import check_cron

        cron = " ".join(form.get("cron", "").split())
        problem = check_cron(cron) if cron else C._("Give a cron expression.")
        if problem:
            raise FormProblem(problem)
        return cron
    if preset not in PRESETS:
        raise FormProblem(C._("Choose how often."))
    match = _TIME.match(form.get("time", "").strip())
    if match is None:
        raise FormProblem(C._("Give the time as HH:MM."))
    minute, hour = int(match[2]), int(match[1])
    if preset == "daily":
        return f"{minute} {hour} * * *"
    if preset == "weekdays":
        return f"{minute} {hour} * * 1-5"
    if preset == "weekly":
        weekday = form.get("weekday", "1")
        if weekday not in {str(i) for i in range(7)}:
            raise FormProblem(C._("Choose a day of the week."))
        return f"{minute} {hour} * * {weekday}"
    day = form.get("day", "1").strip()
    if not day.isdigit() or not 1 <= int(day) <= 28:
        raise FormProblem(C._("Choose a day of the month from 1 to 28."))
    return f"{minute} {hour} {int(day)} * *"


def document_of(report: Report, form) -> dict:
    """The process document a filled form makes."""
    recipients = [f"role:{r}" for r in form.getlist("roles") if r]
    recipients += [f"user:{u}" for u in form.getlist("users") if u]
    if not recipients:
        raise FormProblem(C._("Choose at least one role or user to send it to."))
    parameters = {}
    for name, parameter in report.parameters.items():
        chosen = [v for v in form.getlist(f"param-{name}") if v.strip()]
        if chosen:
            parameters[name] = chosen if parameter.multiple else chosen[0]
    formats = [f for f in ("table", "xlsx") if form.get(f"format-{f}")]
    if not formats:
        raise FormProblem(C._("Choose a table in the message, a spreadsheet, or both."))
    step: dict = {"report": report.name, "to": recipients, "formats": formats}
    if parameters:
        step["parameters"] = parameters
    typed = form.get("label", "").strip()
    if typed:  # the schedule's name is the message's subject too
        step["subject"] = f"{typed}: {{date}}"
    return {
        "process": _free_name(report.name),
        "label": {  # the administrator's words in both languages, else the report's name
            "en": typed or f"{report.label.get('en')} by email",
            "ru": typed or f"{report.label.get('ru')} по почте",
        },
        "on": {"schedule": cron_of(form)},
        "steps": [{"send_report": step}],
    }


def _free_name(report: str) -> str:
    taken = C.catalog().processes
    stem = f"email_{report}"[:58]
    return next(f"{stem}_{n}" for n in range(1, 10_000) if f"{stem}_{n}" not in taken)


@bp.post("/reports/<name>/schedules")
def create(name: str):
    report = _report_or_404(name)
    try:
        document = document_of(report, request.form)
        C.store().customize("process", document, user_id=C.principal().user_id)
    except FormProblem as exc:
        return _refused(report, [str(exc)])
    except DefinitionError as exc:
        return _refused(report, [p.message for p in exc.problems])
    flash(C._("The report is scheduled."), "success")
    return redirect(url_for("ui_report_schedules.page", name=name), code=303)


def _refused(report: Report, errors: list[str]):
    context = form_context(report, request.form)
    return render_template("ui/reports/schedules.html", errors=errors, **context), 422


@bp.post("/reports/<name>/schedules/<process>/delete")
def remove(name: str, process: str):
    report = _report_or_404(name)
    if not any(s["name"] == process and s["removable"] for s in schedules_of(report)):
        abort(404)
    store = C.store()
    store.uncustomize("process", process)
    # its next tick would find no process and fail: cancel it now
    for row in instances(store, process=process, status="waiting"):
        cancel(store, row["id"])
    flash(C._("The schedule is removed."), "success")
    return redirect(url_for("ui_report_schedules.page", name=name), code=303)
