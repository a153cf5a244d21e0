"""Dashboards in the browser: an index of the dashboards a user sees (by module), a
dashboard's page (its global filters as a GET form whose changes redraw the widgets in
place, every widget rendered on the server with how fresh its figures are), and the home
page, which is the user's chosen dashboard, else the first one their roles see.

Personal dashboards (``owner``) are made here: *Add to dashboard* on a report page puts
the report's chart, table or a KPI of a measure on one of the user's own dashboards or a
new "My dashboard", and the owner moves, removes and deletes on the dashboard's page.
Each change writes the dashboard's whole document to the customization layer, replacing
the earlier one, so the catalog's checker judges it like any pack's.

Figures come from ``xrm.reports.dashboards.run_dashboard`` as the signed-in user (the API
makes the same call).  Report widgets are drawn by the report page's pieces
(``ReportView``, ``static/js/reports.js``), so a bar or a KPI links to exactly the records
behind it; a widget that fails says why in its own cell and the others still render.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ...metadata.compiler import LAYER
from ...metadata.dashboards import GRID_COLUMNS, Dashboard, dashboard_document
from ...metadata.model import thaw
from ...metadata.problems import DefinitionError
from ...reports.dashboards import DashboardError, WidgetResult, run_dashboard, sees_dashboard
from . import context as C
from .guards import guard, htmx
from .layouts import view_named
from .reports import PERIODS, ReportView, Shown, period_label, refusal
from .reports import visible as report_visible

bp = guard(Blueprint("ui_dashboards", __name__))


def visible(catalog=None) -> list[Dashboard]:
    """The dashboards the user sees (their own personal ones, the ones published to their
    roles, and the ones for everyone that show something they may read), in the order the
    catalog holds them."""
    catalog = catalog or C.catalog()
    principal = C.principal()
    return [
        d
        for d in catalog.dashboards.values()
        if sees_dashboard(catalog, principal, d) and (d.roles or d.owner or _reads_any(catalog, d))
    ]


def _reads_any(catalog, dashboard: Dashboard) -> bool:
    """A dashboard for everyone is for everyone who may read its records: a user who may
    read none of its widgets' entities (a partner, and the core activities) is not offered
    it, in the menu or as their home page."""
    access = C.access()
    for widget in dashboard.widgets:
        if widget.report is not None and widget.report in catalog.reports:
            entity = catalog.reports[widget.report].entity
        elif widget.view is not None and widget.view in catalog.views:
            entity = catalog.views[widget.view].entity
        else:
            entity = widget.entity
        if entity is not None and access.scope_of(entity, "read") != "none":
            return True
    return False


def home_dashboard() -> Dashboard | None:
    """The user's chosen home dashboard if they still see it, else the first they see."""
    shown = visible()
    chosen = C.store().home_dashboard(C.principal().user_id)
    for dashboard in shown:
        if dashboard.name == chosen:
            return dashboard
    return shown[0] if shown else None


def by_module(catalog) -> dict[str, list[dict]]:
    """Solution name -> its dashboards' links, for the navigation."""
    out: dict[str, list[dict]] = {}
    for dashboard in visible(catalog):
        if dashboard.owner is not None:
            # the menu is cached per role set, so a personal dashboard is not in it: its
            # owner finds it on /dashboards (and may make it their home page)
            continue
        out.setdefault(dashboard.module, []).append(
            {
                "name": dashboard.name,
                "label": C.label(dashboard),
                "url": url_for("ui_dashboards.page", name=dashboard.name),
            }
        )
    return out


@bp.get("/dashboards")
def index():
    catalog = C.catalog()
    groups: dict[str, list[Dashboard]] = {}
    mine = []
    for dashboard in visible(catalog):
        if dashboard.owner is not None:
            mine.append(dashboard)
        else:
            groups.setdefault(dashboard.module, []).append(dashboard)
    modules = [{"label": C._("My dashboards"), "dashboards": mine, "mine": True}] if mine else []
    for name, dashboards in groups.items():
        solution = catalog.solutions.get(name)
        modules.append(
            {
                "label": C.label(solution) if solution is not None else C._("Customization"),
                "dashboards": dashboards,
            }
        )
    home = home_dashboard()
    return render_template(
        "ui/dashboards/index.html", modules=modules, home=home.name if home else None
    )


@bp.get("/dashboards/<name>")
def page(name: str):
    dashboard = _dashboard_or_404(name)
    return render(dashboard, "ui/dashboards/page.html")


@bp.post("/dashboards/<name>/home")
def make_home(name: str):
    dashboard = _dashboard_or_404(name)
    C.store().set_home_dashboard(C.principal().user_id, dashboard.name)
    return redirect(url_for("ui_shell.home"), code=303)


def _dashboard_or_404(name: str) -> Dashboard:
    dashboard = C.catalog().dashboards.get(name)
    if dashboard is None or dashboard not in visible():
        abort(404)
    return dashboard


def render(dashboard: Dashboard, template: str):
    """A dashboard's page (or, for htmx, its body alone) with the request's filters."""
    given = {k: v for k, v in request.args.items() if k in dashboard.filters}
    unknown = [k for k in request.args if k not in dashboard.filters and k != "refresh"]
    context = {"dashboard": dashboard, "controls": [], "widgets": [], "is_home": False}
    status = 200
    try:
        if unknown:
            raise DashboardError(unknown[0], "unknown filter")
        result = run_dashboard(
            C.store(), dashboard, given, C.principal(), fresh=bool(request.args.get("refresh"))
        )
    except DashboardError as exc:
        context["problem"] = C._("The filters are not valid: %(detail)s", detail=str(exc))
        context["controls"] = controls(dashboard, {})
        status = 400
    else:
        context["controls"] = controls(dashboard, result.filters)
        context["widgets"] = [widget_view(dashboard, w) for w in result.widgets]
    context["given"] = given
    context["editable"] = own(dashboard)  # its owner moves and removes widgets here
    context["is_home"] = (
        C.store().home_dashboard(C.principal().user_id) == dashboard.name
        or template == "ui/home.html"
    )
    if htmx() and request.headers.get("HX-Target") == "dashboard-body":
        return render_template("ui/dashboards/_body.html", **context), status
    return render_template(template, **context), status


def controls(dashboard: Dashboard, values) -> list[dict]:
    """The global filters as the form shows them."""
    out = []
    for name, flt in dashboard.filters.items():
        value = values.get(name) or ""
        control = {"name": name, "label": C.label(flt), "type": flt.type, "value": value}
        if flt.type == "period":
            options = list(PERIODS)
            if value and value not in options:
                options.append(value)
            control["value"] = value or "all"
            control["options"] = [(v, period_label(v)) for v in options]
        elif flt.type == "team":
            control["options"] = [(t, t) for t in C.store().teams()]
        else:
            control["url"] = url_for("ui_shell.lookup_users")
            if value.isdigit():
                C.titles().want("user", int(value))
                C.titles().resolve()
                control["selected"] = C.titles().title("user", int(value))
        out.append(control)
    return out


# ------------------------------------------------------------------------ widgets
def freshness(seconds: int) -> str:
    if seconds < 5:
        return C._("updated just now")
    if seconds < 60:
        return C._("updated %(count)s s ago", count=seconds)
    return C._("updated %(count)s min ago", count=seconds // 60)


def widget_view(dashboard: Dashboard, found: WidgetResult) -> dict:
    widget = found.widget
    catalog = C.catalog()
    report = found.report
    label = widget.label or (report.label if report is not None else None)
    if label is None and widget.view:
        label = catalog.views[widget.view].label
    if label is None:
        label = catalog.entity(widget.entity).plural
    out = {
        "index": widget.index,
        "kind": widget.kind,
        "width": widget.width,
        "label": label.get(C.locale()),
        "fresh": freshness(found.age()),
        "age": found.age(),
        "error": None,
        "link": None,
    }
    if found.error is not None:
        out["error"] = found.error
        return out
    if widget.kind == "list":
        return _list_view(widget, found, out)
    params = dict(found.parameters)
    out["link"] = url_for("ui_reports.page", name=report.name, **params)
    view = ReportView(report, found.result, params)
    if widget.kind == "report":
        out["view"] = view
        out["chart"] = view.chart() if widget.show in ("chart", "both") else None
        out["table"] = widget.show in ("table", "both") or (
            out["chart"] is None and report.chart is not None and report.chart.kind == "kpi"
        )
        out["kpis"] = view.kpis()
        return out
    show = Shown(report)
    out["value"] = show.measure(widget.measure, found.value) or "—"
    out["records"] = view.records_url({})
    if found.previous is not None:
        out["previous"] = show.measure(widget.measure, found.previous_value) or "—"
        change = found.change
        out["change"] = None if change is None else round(change * 100, 1)
    return out


def _list_view(widget, found: WidgetResult, out: dict) -> dict:
    entity = C.catalog().entity(widget.entity)
    fields = [C.field_at(entity, c) for c in found.columns]
    titles = C.titles()
    titles.want_records(entity, found.rows, found.columns)
    titles.resolve()
    out["headers"] = [C.path_label(entity, c) for c in found.columns]
    out["rows"] = [
        {
            "url": C.record_url(entity.name, row["id"]),
            "cells": [C.display(f, row.get(c), link=False) for c, f in zip(found.columns, fields)],
        }
        for row in found.rows
    ]
    out["count"] = found.count
    out["exact"] = found.exact
    if widget.view is not None and view_named(C.catalog(), widget.view) is not None:
        out["link"] = url_for("ui_lists.view", view_name=widget.view)
    else:
        params = {"cols": ",".join(found.columns)}
        if widget.filter is not None:
            params["filter"] = json.dumps(
                thaw(widget.filter), ensure_ascii=False, separators=(",", ":")
            )
        out["link"] = url_for("ui_lists.view", view_name=f"{entity.name}__all", **params)
    return out


# ------------------------------------------------------------------------ personal dashboards
#: The widths a widget added in the browser may take (columns out of 12).
WIDTHS = (4, 6, 8, 12)
#: What a report becomes on a dashboard: its chart, its table, or one measure as a KPI.
ADD_KINDS = ("chart", "table", "kpi")
NEW = "new"


class Refused(Exception):
    """A request to change a dashboard that saves nothing (its message is shown)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def own(dashboard: Dashboard) -> bool:
    """Whether the user may change a dashboard here: their own personal one (shared
    dashboards are edited as YAML by administrators)."""
    return (
        dashboard.owner is not None
        and dashboard.solution == LAYER
        and sees_dashboard(C.catalog(), C.principal(), dashboard)
    )


def mine(catalog=None) -> list[Dashboard]:
    return [d for d in visible(catalog) if own(d)]


@bp.app_template_global("dashboard_choices")
def dashboard_choices(report) -> dict:
    """What the report page's *Add to dashboard* form offers for a report."""
    kinds = [k for k in ADD_KINDS if k != "chart" or report.chart is not None]
    return {
        "dashboards": [(d.name, C.label(d)) for d in mine()],
        "kinds": [(k, kind_label(k)) for k in kinds],
        "measures": [(m.name, C.label(m)) for m in report.measures],
        "widths": WIDTHS,
    }


def kind_label(kind: str) -> str:
    return {"chart": C._("Chart"), "table": C._("Table"), "kpi": C._("KPI (one figure)")}[kind]


def new_dashboard_name(catalog) -> tuple[str, int]:
    """A free name for a new personal dashboard and its number (my_dashboard, then
    my_dashboard_2...): names are global, so another user's take theirs too."""
    taken = catalog.dashboards
    number = next(n for n in range(1, 100_000) if _numbered("my_dashboard", n) not in taken)
    return _numbered("my_dashboard", number), number


def _numbered(stem: str, number: int) -> str:
    return stem if number == 1 else f"{stem}_{number}"


def widget_of_form(report, form) -> dict:
    """The widget document a request asks for, or Refused with what is wrong."""
    kind = form.get("widget", "chart")
    if kind not in ADD_KINDS:
        raise Refused(C._("Unknown widget kind %(kind)s.", kind=repr(kind)))
    try:
        width = int(form.get("width") or 6)
    except ValueError:
        width = 0
    if width not in range(1, GRID_COLUMNS + 1):
        raise Refused(C._("A width is a number of columns from 1 to 12."))
    if kind != "kpi":
        return {"report": report.name, "show": kind, "width": width}
    measure = form.get("measure") or (report.measures[0].name if report.measures else "")
    # the change against the previous period needs exactly one period parameter
    periods = [p for p in report.parameters.values() if p.type == "period"]
    return {"kpi": report.name, "measure": measure, "compare": len(periods) == 1, "width": width}


def save_dashboard(name: str, spec: dict, replacing: bool) -> None:
    """Store a personal dashboard's document in the customization layer (replacing its
    earlier one); the whole catalog checks it, and its problems are the refusal."""
    try:
        C.store().customize_all(
            [("dashboards", {"dashboards": {name: spec}})],
            user_id=C.principal().user_id,
            replacing=[("dashboards", name)] if replacing else (),
        )
    except DefinitionError as exc:
        raise Refused("; ".join(p.message for p in exc.problems), 422) from None


def _own_or_404(name: str) -> Dashboard:
    dashboard = C.catalog().dashboards.get(name)
    if dashboard is None or not own(dashboard):
        abort(404)  # another user's dashboard answers as an unknown one
    return dashboard


@bp.errorhandler(Refused)
def _refused(exc: Refused):
    back = request.form.get("back") or request.referrer or url_for("ui_dashboards.index")
    return render_template(
        "ui/dashboards/refused.html", message=exc.message, back=_local(back)
    ), exc.status


def _local(url: str) -> str:
    """Only a path of this site is a place to go back to."""
    return url if url.startswith("/") and not url.startswith("//") else url_for("ui_shell.home")


@bp.post("/dashboards/add")
def add_widget():
    """Add a report (its chart, table or a KPI of a measure) to one of the user's personal
    dashboards, or to a new one ("My dashboard")."""
    name = request.form.get("report", "")
    report = report_visible(name)
    if report is None:  # unknown, or not shared with the user: the same answer
        raise Refused(C._("There is no report %(name)s you may see.", name=repr(name)), 404)
    why = refusal(report)
    if why is not None:
        raise Refused(C._("You may not run this report: %(detail)s", detail=why), 403)
    widget = widget_of_form(report, request.form)
    target = request.form.get("dashboard") or NEW
    catalog = C.catalog()
    if target == NEW:
        target, number = new_dashboard_name(catalog)
        suffix = "" if number == 1 else f" {number}"
        principal = C.principal()
        spec = {
            "label": {"en": f"My dashboard{suffix}", "ru": f"Мой дашборд{suffix}"},
            "owner": principal.email or str(principal.user_id),
            "widgets": [widget],
        }
        replacing = False
    else:
        dashboard = catalog.dashboards.get(target)
        if dashboard is None or not own(dashboard):
            raise Refused(C._("There is no dashboard %(name)s of yours.", name=repr(target)), 404)
        spec = dashboard_document(dashboard)
        spec["widgets"].append(widget)
        replacing = True
    save_dashboard(target, spec, replacing)
    flash(C._("The report is added to the dashboard."), "success")
    return redirect(url_for("ui_dashboards.page", name=target), code=303)


@bp.post("/dashboards/<name>/widgets/<int:index>/remove")
def remove_widget(name: str, index: int):
    dashboard = _own_or_404(name)
    spec = dashboard_document(dashboard)
    if index not in range(len(spec["widgets"])):
        abort(404)
    if len(spec["widgets"]) == 1:
        raise Refused(C._("A dashboard keeps at least one widget: delete the dashboard instead."))
    del spec["widgets"][index]
    save_dashboard(name, spec, True)
    flash(C._("The widget is removed."), "success")
    return redirect(url_for("ui_dashboards.page", name=name), code=303)


@bp.post("/dashboards/<name>/widgets/<int:index>/move")
def move_widget(name: str, index: int):
    dashboard = _own_or_404(name)
    spec = dashboard_document(dashboard)
    widgets = spec["widgets"]
    step = {"up": -1, "down": 1}.get(request.form.get("direction", ""))
    if index not in range(len(widgets)) or step is None:
        abort(404)
    other = index + step
    if other in range(len(widgets)):  # the first cannot go up nor the last down: no change
        widgets[index], widgets[other] = widgets[other], widgets[index]
        save_dashboard(name, spec, True)
    return redirect(url_for("ui_dashboards.page", name=name), code=303)


@bp.post("/dashboards/<name>/delete")
def delete(name: str):
    _own_or_404(name)
    store = C.store()
    store.uncustomize("dashboards", name)
    if store.home_dashboard(C.principal().user_id) == name:
        store.set_home_dashboard(C.principal().user_id, None)
    flash(C._("The dashboard is deleted."), "success")
    return redirect(url_for("ui_dashboards.index"), code=303)
