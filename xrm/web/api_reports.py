"""Reports in the REST API: ``GET /api/v1/reports/{name}`` runs a report of the catalog as
the caller (its parameters as query arguments) and answers its rows, pivot columns and
totals as JSON, or as CSV with ``format=csv``.  Every figure comes from
``xrm.reports.run_report``, so the caller's scope and field rules apply as to any read."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, g, request

from ..metadata.aggregates import parse_group
from ..metadata.problems import did_you_mean
from ..reports import ParameterError, ReportError, ReportRefused, run_report
from . import current_store, openapi
from .api import _plain, guard_api, json_response, locale
from .problems import BAD_REQUEST, FORBIDDEN, NOT_FOUND, Problem

bp = Blueprint("api_reports", __name__, url_prefix=openapi.API_PREFIX)
FORMATS = ("json", "csv")

guard_api(bp)


@bp.get("/reports/<name>")
def get_report(name: str):
    report = g.catalog.reports.get(name)
    if report is None:
        raise Problem(
            404, f"unknown report {name!r}{did_you_mean(name, g.catalog.reports)}", type=NOT_FOUND
        )
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
    if wanted == "csv":
        return _csv(result)
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


def _csv(result) -> Response:
    """One line per row: the groups, then the measures (with a pivot, each column's
    measures, then the row's totals); a last line of totals when the report has them."""
    groups, measures = _labels(result)
    row_groups = [g_ for g_ in groups if g_["key"] != result.report.pivot]
    names = [m["key"] for m in measures]
    header = [g_["label"] for g_ in row_groups]
    if result.report.pivot is None:
        header += [m["label"] for m in measures]
    else:
        header += [f"{_text(c)} {m['label']}" for c in result.columns for m in measures]
        if result.totals is not None:
            header += [f"Total {m['label']}" for m in measures]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in [*result.rows, *([result.totals] if result.totals is not None else [])]:
        is_total = row is result.totals
        line = [
            "Total" if is_total and i == 0 else ("" if is_total else _text(row[g_["key"]]))
            for i, g_ in enumerate(row_groups)
        ]
        if result.report.pivot is None:
            line += [_text(row[n]) for n in names]
        else:
            for cell in row["cells"]:
                line += [_text(None if cell is None else cell[n]) for n in names]
            if result.totals is not None:
                total = row if is_total else row.get("total") or {}
                line += [_text(total.get(n)) for n in names]
        writer.writerow(line)
    filename = f"{result.report.name}.csv"
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _text(value) -> str:
    value = _plain(value)
    return "" if value is None else str(value)


def document(spec, catalog) -> None:
    """Add the reports endpoint to the API's OpenAPI document (the catalog's report names
    are the path's values)."""
    names = sorted(catalog.reports)
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
                "options separated by commas); a parameter left out takes its default.",
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
