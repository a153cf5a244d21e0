"""Dashboards in the browser: an index of the dashboards a user sees (by module), a
dashboard's page (its global filters as a GET form whose changes redraw the widgets in
place, every widget rendered on the server with how fresh its figures are), and the home
page, which is the user's chosen dashboard, else the first one their roles see.

Figures come from ``xrm.reports.dashboards.run_dashboard`` as the signed-in user (the API
makes the same call).  Report widgets are drawn by the report page's pieces
(``ReportView``, ``static/js/reports.js``), so a bar or a KPI links to exactly the records
behind it; a widget that fails says why in its own cell and the others still render.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, redirect, render_template, request, url_for

from ...metadata.dashboards import Dashboard
from ...metadata.reports import _thaw
from ...reports.dashboards import DashboardError, WidgetResult, run_dashboard
from . import context as C
from .guards import guard, htmx
from .layouts import view_named
from .reports import PERIODS, ReportView, Shown, period_label

bp = guard(Blueprint("ui_dashboards", __name__))


def visible(catalog=None) -> list[Dashboard]:
    """The dashboards the user's roles see, in the order the catalog holds them."""
    catalog = catalog or C.catalog()
    principal = C.principal()
    return [
        d for d in catalog.dashboards.values() if d.visible_to(principal.roles, C.access().is_admin)
    ]


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
    for dashboard in visible(catalog):
        groups.setdefault(dashboard.module, []).append(dashboard)
    modules = []
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
                _thaw(widget.filter), ensure_ascii=False, separators=(",", ":")
            )
        out["link"] = url_for("ui_lists.view", view_name=f"{entity.name}__all", **params)
    return out
