"""Reports in the REST API: ``GET /api/v1/reports/{name}`` runs a report of the catalog as
the caller (its parameters as query arguments) and answers its rows, pivot columns and
totals as JSON, or as CSV with ``format=csv`` and as an XLSX workbook with ``format=xlsx``
(typed cells: numbers, dates, a bold totals line).  Every figure comes from
``xrm.reports.run_report``, so the caller's scope and field rules apply as to any read."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from ..metadata.aggregates import parse_group
from ..metadata.problems import did_you_mean
from ..reports import ParameterError, ReportError, ReportRefused, run_report, sees_report
from ..reports.export import XLSX_MIMETYPE, report_table, to_csv, to_xlsx
from . import current_store, openapi
from .api import _plain, guard_api, json_response, locale
from .problems import BAD_REQUEST, FORBIDDEN, NOT_FOUND, Problem

bp = Blueprint("api_reports", __name__, url_prefix=openapi.API_PREFIX)
FORMATS = ("json", "csv", "xlsx")

guard_api(bp)


def visible_report(catalog, principal, name: str):
    """The report of that name if the reader sees it, else None, for every channel (the
    API, the report pages and their exports, the index): a personal report (``owner``)
    is its owner's alone, one published to ``roles`` is theirs and the administrators'.
    A report the reader does not see answers as an unknown one, so its name stays
    private; whether they may read its records is the run's own check."""
    report = catalog.reports.get(name)
    return report if report is not None and sees_report(catalog, principal, report) else None


def visible_names(catalog, principal) -> list[str]:
    """The names of the reports the reader sees."""
    return [n for n in catalog.reports if visible_report(catalog, principal, n) is not None]


@bp.get("/reports/<name>")
def get_report(name: str):
    report = visible_report(g.catalog, g.principal, name)
    if report is None:
        known = visible_names(g.catalog, g.principal)
        raise Problem(404, f"unknown report {name!r}{did_you_mean(name, known)}", type=NOT_FOUND)
    params = {k: v for k, v in request.args.items() if k != "format"}
    wanted = request.args.get("format", "json")
    if wanted not in FORMATS:
        raise Problem(400, f"format: expected one of {', '.join(FORMATS)}", type=BAD_REQUEST)
    try:
        result = run_report(current_store(), report, params, g.principal)
    except ParameterError as exc:
        raise Problem(400, str(exc), type=BAD_REQUEST, parameter=exc.name) from None
    except ReportRefused as exc:
        raise Problem(403, str(exc), type=FORBIDDEN) from None
    except ReportError as exc:
        raise Problem(400, str(exc), type=BAD_REQUEST) from None
    if wanted in ("csv", "xlsx"):
        return export_response(result, wanted, locale=locale(), tz=g.principal.tz or "UTC")
    return json_response(_body(result))


def _labels(result) -> tuple[list[dict], list[dict]]:
    entity = g.catalog.entity(result.report.entity)
    groups = []
    for spec in result.report.group_by:
        field = parse_group(entity, g.catalog.entity_of, spec).field
        groups.append({"key": spec, "label": field.label.get(locale())})
    measures = [{"key": m.name, "label": m.label.get(locale())} for m in result.report.measures]
    return groups, measures


def _body(result) -> dict:
    report = result.report
    groups, measures = _labels(result)
    return {
        "report": report.name,
        "label": report.label.get(locale()),
        "entity": report.entity,
        "groups": groups,
        "measures": measures,
        "pivot": report.pivot,
        "columns": [_plain(c) for c in result.columns],
        "rows": [_plain_row(row) for row in result.rows],
        "totals": None if result.totals is None else _plain_row(result.totals),
        "chart": None
        if report.chart is None
        else {"kind": report.chart.kind, "measures": list(report.chart.measures)},
    }


def _plain_row(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if key == "cells":
            out[key] = [None if c is None else _plain_row(c) for c in value]
        elif key == "total":
            out[key] = _plain_row(value)
        else:
            out[key] = _plain(value)
    return out


def export_response(
    result,
    fmt: str,
    *,
    locale: str,
    tz: str = "UTC",
    group_value=None,
    total_word: str = "Total",
    bom: bool = False,
) -> Response:
    """The report as a CSV or XLSX download (``xrm.reports.export`` lays it out): here
    with the values as the JSON has them; the report page passes ``group_value`` to show
    option labels and names instead, and a byte-order mark so that spreadsheets read its
    CSV as UTF-8."""
    table = report_table(
        result, g.catalog, locale=locale, group_value=group_value, total_word=total_word
    )
    if fmt == "csv":
        body, mimetype = ("\ufeff" if bom else "") + to_csv(table), "text/csv"
    else:
        body = to_xlsx(table, result.report.label.get(locale), tz)
        mimetype = XLSX_MIMETYPE
    response = Response(body, mimetype=mimetype)
    response.headers.set(
        "Content-Disposition", "attachment", filename=f"{result.report.name}.{fmt}"
    )
    return response


def document(spec, catalog) -> None:
    """Add the reports endpoint to the API's OpenAPI document (the catalog's report names
    are the path's values)."""
    # The document is one per catalog, not per reader: a personal report's name is no
    # one else's business, so only the reports without an owner are listed.
    names = sorted(n for n, r in catalog.reports.items() if r.owner is None)
    spec.tag({"name": "reports", "description": "reports of the catalog, run as the caller"})
    value = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}
    row = {"type": "object", "additionalProperties": True}
    spec.components.schema(
        "reports.Result",
        component={
            "type": "object",
            "required": ["report", "label", "entity", "groups", "measures", "rows"],
            "properties": {
                "report": {"type": "string"},
                "label": {"type": "string"},
                "entity": {"type": "string"},
                "groups": {"type": "array", "items": {"type": "object"}},
                "measures": {"type": "array", "items": {"type": "object"}},
                "pivot": {"type": ["string", "null"]},
                "columns": {"type": "array", "items": value},
                "rows": {"type": "array", "items": row},
                "totals": {"oneOf": [row, {"type": "null"}]},
                "chart": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "kind": {"type": "string"},
                                "measures": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        {"type": "null"},
                    ],
                    "description": "how the report is drawn (bar, stacked_bar, line, pie, "
                    "funnel, kpi) and which measures",
                },
            },
        },
    )
    spec.path(
        path=f"{openapi.API_PREFIX}/reports/{{name}}",
        operations={
            "get": {
                "tags": ["reports"],
                "operationId": "run_report",
                "summary": "Run a report as the caller: rows, pivot columns and totals",
                "description": "Each parameter of the report is a query argument (a period "
                "such as this_quarter or last_12_months, me or a user id, a team name, "
                "options separated by commas); a parameter left out takes its default. "
                "format=csv answers CSV text and format=xlsx an XLSX workbook: a header "
                "of labels, a line per row (with a pivot, each column's measures, then "
                "the row's totals) and a last line of totals; values as the JSON has "
                "them, numbers and dates typed in the workbook.",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", **({"enum": names} if names else {})},
                    },
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(FORMATS), "default": "json"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the report's figures",
                        "content": {
                            "application/json": {"schema": openapi._ref("reports.Result")},
                            "text/csv": {"schema": {"type": "string"}},
                            XLSX_MIMETYPE: {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "400": openapi._problem("a bad parameter value or an unknown parameter"),
                    "401": openapi._problem("no valid credentials"),
                    "403": openapi._problem("the report reads a field the caller may not read"),
                    "404": openapi._problem("no such report"),
                },
            }
        },
    )
