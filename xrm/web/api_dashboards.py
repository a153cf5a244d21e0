"""Dashboards in the REST API: ``GET /api/v1/dashboards/{name}`` runs a dashboard of the
catalog as the caller (its global filters as query arguments) and answers each widget's
figures as JSON: a report widget as ``GET /api/v1/reports/{name}`` answers it, a KPI as
its value, the previous period's and the change, a list as its rows.  A widget that fails
carries its own ``error`` and ``status``; the others are answered.  Figures come from
``xrm.reports.dashboards.run_dashboard`` (the page's call and cache), so each widget
says when it was read."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, request

from ..metadata.problems import did_you_mean
from ..reports.dashboards import DashboardError, run_dashboard, sees_dashboard
from . import current_store, openapi
from .api import _plain, guard_api, json_response, locale
from .api_reports import _body as report_body
from .api_reports import _plain_row
from .problems import BAD_REQUEST, NOT_FOUND, Problem

bp = Blueprint("api_dashboards", __name__, url_prefix=openapi.API_PREFIX)

guard_api(bp)


def _visible(catalog, principal) -> dict:
    # a personal dashboard of someone else is left out: it answers 404 like an unknown one
    return {n: d for n, d in catalog.dashboards.items() if sees_dashboard(catalog, principal, d)}


@bp.get("/dashboards/<name>")
def get_dashboard(name: str):
    shown = _visible(g.catalog, g.principal)
    dashboard = shown.get(name)
    if dashboard is None:
        raise Problem(404, f"unknown dashboard {name!r}{did_you_mean(name, shown)}", type=NOT_FOUND)
    given = {k: v for k, v in request.args.items() if k != "refresh"}
    try:
        result = run_dashboard(
            current_store(), dashboard, given, g.principal, fresh=bool(request.args.get("refresh"))
        )
    except DashboardError as exc:
        raise Problem(400, str(exc), type=BAD_REQUEST, parameter=exc.name) from None
    return json_response(
        {
            "dashboard": dashboard.name,
            "label": dashboard.label.get(locale()),
            "filters": dict(result.filters),
            "widgets": [_widget(w) for w in result.widgets],
        }
    )


def _widget(found) -> dict:
    widget = found.widget
    label = widget.label or (found.report.label if found.report is not None else None)
    out = {
        "index": widget.index,
        "kind": widget.kind,
        "label": label.get(locale()) if label is not None else widget.view or widget.entity,
        "width": widget.width,
        "updated_at": dt.datetime.fromtimestamp(found.computed_at, dt.UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "age_seconds": found.age(),
    }
    if found.error is not None:
        return {**out, "error": found.error, "status": found.status}
    if widget.kind == "report":
        out["report"] = report_body(found.result)
        out["parameters"] = dict(found.parameters)
    elif widget.kind == "kpi":
        out.update(
            report=widget.report,
            measure=widget.measure,
            parameters=dict(found.parameters),
            value=_plain(found.value),
            previous=_plain(found.previous_value) if found.previous is not None else None,
            change=found.change,
        )
    else:
        out.update(
            entity=widget.entity,
            view=widget.view,
            columns=list(found.columns),
            rows=[_plain_row(row) for row in found.rows],
            count=found.count,
            exact=found.exact,
        )
    return out


def document(spec, catalog) -> None:
    """Add the dashboards endpoint to the API's OpenAPI document."""
    names = sorted(catalog.dashboards)
    spec.tag({"name": "dashboards", "description": "dashboards of the catalog, run as the caller"})
    row = {"type": "object", "additionalProperties": True}
    spec.components.schema(
        "dashboards.Widget",
        component={
            "type": "object",
            "required": ["index", "kind", "label", "width", "updated_at", "age_seconds"],
            "properties": {
                "index": {"type": "integer"},
                "kind": {"enum": ["report", "kpi", "list"]},
                "label": {"type": "string"},
                "width": {"type": "integer"},
                "updated_at": {"type": "string", "format": "date-time"},
                "age_seconds": {"type": "integer", "description": "how old the figures are"},
                "error": {"type": "string", "description": "why this widget has no figures"},
                "status": {"type": "integer"},
                "report": {"description": "a report widget's figures (as GET /reports/{name})"},
                "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                "measure": {"type": "string"},
                "value": {"description": "a kpi's figure"},
                "previous": {"description": "a kpi's figure over the previous period"},
                "change": {"type": ["number", "null"], "description": "0.25: up 25 %"},
                "entity": {"type": "string"},
                "view": {"type": ["string", "null"]},
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": row},
                "count": {"type": "integer"},
                "exact": {"type": "boolean"},
            },
        },
    )
    spec.components.schema(
        "dashboards.Result",
        component={
            "type": "object",
            "required": ["dashboard", "label", "filters", "widgets"],
            "properties": {
                "dashboard": {"type": "string"},
                "label": {"type": "string"},
                "filters": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                "widgets": {"type": "array", "items": openapi._ref("dashboards.Widget")},
            },
        },
    )
    spec.path(
        path=f"{openapi.API_PREFIX}/dashboards/{{name}}",
        operations={
            "get": {
                "tags": ["dashboards"],
                "operationId": "run_dashboard",
                "summary": "Run a dashboard as the caller: each widget's figures",
                "description": "Each global filter of the dashboard is a query argument "
                "(a period such as this_month, me or a user id, a team name); it fills "
                "the report parameters of the same type in every widget that leaves "
                "them free. Figures may be up to 60 seconds old (age_seconds says how "
                "old); refresh=1 reads them again.",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", **({"enum": names} if names else {})},
                    },
                    {
                        "name": "refresh",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the widgets' figures",
                        "content": {
                            "application/json": {"schema": openapi._ref("dashboards.Result")}
                        },
                    },
                    "400": openapi._problem("a bad filter value or an unknown filter"),
                    "401": openapi._problem("no valid credentials"),
                    "404": openapi._problem("no such dashboard for the caller's roles"),
                },
            }
        },
    )
