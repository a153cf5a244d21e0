"""Reports in the browser: an index of the reports a user may run (by module), and a
report's page: its parameters as a GET form (so a URL is a shareable report), the figures
as a table with totals and a chart (Chart.js, drawn by ``static/js/reports.js`` from a
JSON block), exports to CSV and XLSX, and a link from every figure to the list of the
records behind it.

Every figure comes from ``xrm.reports.run_report`` as the signed-in user, the same call
the API makes, so the page, the API and the exports agree, and a report on a field the
user may not read is refused with the API's words.  The records behind a figure are the
report's filter (parameters filled in) plus the figure's group values, handed to the list
as a filter-language ``filter`` argument: the list compiles and checks it like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Blueprint, abort, render_template, request, url_for

from ...metadata.aggregates import parse_group
from ...metadata.fieldtypes import RELATIVE_DATE_OPS
from ...metadata.filters import FilterError
from ...metadata.formats import Formats
from ...metadata.reports import N_PERIOD, Report, fill_filter, sample_condition
from ...reports import ParameterError, ReportError, ReportRefused, run_report
from ...reports.display import Display
from ...reports.drill import records_filter
from ...reports.export import parsed_measure
from ...storage.records import Forbidden
from .. import api_reports
from . import context as C
from .filtering import OPERATOR_WORDS
from .guards import guard, htmx
from .layouts import main_view

bp = guard(Blueprint("ui_reports", __name__))

#: The periods a period parameter offers (its default and the URL's value are added).
PERIODS = (
    "all",
    "this_week",
    "this_month",
    "last_month",
    "next_month",
    "this_quarter",
    "last_quarter",
    "next_quarter",
    "this_year",
    "last_year",
    "last_30_days",
    "last_3_months",
    "last_12_months",
    "next_3_months",
)
#: Chart.js draws these kinds; a kpi is cards of numbers on the page.
DRAWN = ("bar", "stacked_bar", "line", "pie", "funnel")
GROUP_SEPARATOR = " · "


# ------------------------------------------------------------------------ who may run what
def refusal(report: Report) -> str | None:
    """Why the user may not run a report (None: they may), found without running it: the
    entity, then each field its filter, groups and measures read (the checks the run
    makes, so the index lists exactly what the page would show)."""
    entity = C.catalog().entity_of(report.entity)
    if entity is None:
        return f"unknown entity {report.entity!r}"
    if not C.can(entity.name, "read"):
        return f"you may not read {entity.name} records"
    records = C.records(entity)
    samples = {n: sample_condition(p) for n, p in report.parameters.items()}
    raw = fill_filter(report.filter, samples) if report.filter is not None else None
    paths = [parse_group(entity, C.catalog().entity_of, g).path for g in report.group_by]
    theirs: dict[str, list] = {}  # a target's fields, read on its own entity
    for m in report.measures:
        measure = parsed_measure(C.catalog(), report, m)
        if m.entity_name is None:
            paths += measure.paths
        else:
            theirs.setdefault(m.entity_name, []).extend(measure.paths)
    try:
        records._check_reads(records.parse_filter(raw), paths)
        for name, fields in theirs.items():
            if not C.can(name, "read"):
                return f"you may not read {name} records"
            C.records(name)._check_reads(None, fields)
    except FilterError as exc:
        return str(exc)
    return None


def visible(name: str) -> Report | None:
    """The report if the user sees it (its owner, its roles: ``api_reports.visible_report``,
    which every channel asks), else None."""
    return api_reports.visible_report(C.catalog(), C.principal(), name)


def _report_or_404(name: str) -> Report:
    report = visible(name)
    if report is None:  # another user's personal report answers as an unknown one
        abort(404)
    if not C.can(report.entity, "read"):  # as a list of those records answers
        raise Forbidden(f"you may not read {report.entity} records")
    return report


@bp.get("/reports")
def index():
    catalog = C.catalog()
    modules = []
    placed = set()
    for solution in [*catalog.solutions.values(), None]:
        entries = []
        for report in catalog.reports.values():
            owner = catalog.solutions.get(report.solution)
            if report.name in placed or (solution is not None and owner is not solution):
                continue
            placed.add(report.name)
            if visible(report.name) is None or refusal(report) is not None:
                continue
            entity = catalog.entity(report.entity)
            entries.append(
                {
                    "name": report.name,
                    "label": C.label(report),
                    "description": report.description.get(C.locale()) if report.description else "",
                    "entity": C.plural(entity),
                    "chart": report.chart.kind if report.chart else None,
                    "url": url_for("ui_reports.page", name=report.name),
                }
            )
        if entries:
            label = C.label(solution) if solution is not None else C._("Customization")
            modules.append({"label": label, "reports": sorted(entries, key=_by_label)})
    return render_template("ui/reports/index.html", modules=modules)


def _by_label(entry: dict) -> str:
    return entry["label"].casefold()


# ------------------------------------------------------------------------ the page
@bp.get("/reports/<name>")
def page(name: str):
    report = _report_or_404(name)
    given = given_parameters(report)
    context = {"report": report, "form": parameter_controls(report, given), "given": given}
    status = 200
    try:
        result = run_report(C.store(), report, given, C.principal())
    except ReportRefused as exc:
        message = C._("You may not run this report: %(detail)s", detail=str(exc))
        return render_template("ui/error.html", message=message, status=403), 403
    except ParameterError as exc:
        context["problem"] = C._("The parameters are not valid: %(detail)s", detail=str(exc))
        status = 400
    except ReportError as exc:
        context["problem"] = C._("The report cannot run: %(detail)s", detail=str(exc))
        status = 400
    else:
        context["view"] = ReportView(report, result, given)
    if htmx() and request.headers.get("HX-Target") == "report-body":
        return render_template("ui/reports/_body.html", **context), status
    return render_template("ui/reports/page.html", **context), status


@bp.get("/reports/<name>/export.<fmt>")
def export(name: str, fmt: str):
    """The report as the page shows it (option labels, names), through the API's writer."""
    if fmt not in ("csv", "xlsx"):
        abort(404)
    report = _report_or_404(name)
    try:
        result = run_report(C.store(), report, given_parameters(report), C.principal())
    except ReportRefused as exc:
        message = C._("You may not run this report: %(detail)s", detail=str(exc))
        return render_template("ui/error.html", message=message, status=403), 403
    except (ParameterError, ReportError) as exc:
        message = C._("The report cannot run: %(detail)s", detail=str(exc))
        return render_template("ui/error.html", message=message, status=400), 400
    show = Shown(report)
    show.want(result)
    return api_reports.export_response(
        result,
        fmt,
        locale=C.locale(),
        tz=C.tz(),
        group_value=show.cell,
        total_word=show.words["total"],
        bom=True,
    )


def given_parameters(report: Report) -> dict[str, str]:
    """The report's parameters in the query string, as text (several options joined by
    commas); the others are left out and take their defaults."""
    given = {}
    for name, parameter in report.parameters.items():
        if name not in request.args:
            continue
        values = [v.strip() for v in request.args.getlist(name) if v.strip()]
        given[name] = ",".join(values) if parameter.multiple else (values[0] if values else "")
    return given


# ------------------------------------------------------------------------ parameters
def period_label(value: str) -> str:
    if value == "all":
        return C._("Any time")
    if value in RELATIVE_DATE_OPS:
        words = C._(OPERATOR_WORDS.get(value, value))
        return words[:1].upper() + words[1:]
    match = N_PERIOD.match(value)
    if match:
        direction, count, unit = match.groups()
        texts = {
            ("last", "days"): C._("Last %(count)s days", count=count),
            ("next", "days"): C._("Next %(count)s days", count=count),
            ("last", "months"): C._("Last %(count)s months", count=count),
            ("next", "months"): C._("Next %(count)s months", count=count),
        }
        return texts[(direction, unit)]
    return value


def parameter_controls(report: Report, given: dict[str, str]) -> list[dict]:
    """What the form shows for each parameter: its label, control and current value."""
    entity = C.catalog().entity(report.entity)
    controls = []
    for name, parameter in report.parameters.items():
        default = parameter.default
        if isinstance(default, tuple | list):
            default = ",".join(map(str, default))
        value = given.get(name) or ("" if default is None else str(default))
        control = {
            "name": name,
            "label": C.label(parameter),
            "type": parameter.type,
            "value": value,
            "multiple": parameter.multiple,
            "options": [],
            "required": default is not None,  # empty means the default, not "any"
        }
        if parameter.type == "period":
            values = list(PERIODS)
            for extra in (str(default) if default else None, value):
                if extra and extra not in values:
                    values.append(extra)
            control["value"] = value or "all"
            control["options"] = [(v, period_label(v)) for v in values]
        elif parameter.type == "team":
            control["options"] = [(t, t) for t in C.store().teams()]
        elif parameter.type == "choice":
            field = C.field_at(entity, parameter.field)
            control["options"] = [(o.value, C.label(o)) for o in field.choices]
            control["selected"] = [v for v in value.split(",") if v]
        elif parameter.type == "user":
            control["url"] = url_for("ui_shell.lookup_users")
            if value.isdigit():
                C.titles().want("user", int(value))
                C.titles().resolve()
                control["selected"] = C.titles().title("user", int(value))
        controls.append(control)
    return controls


# ------------------------------------------------------------------------ values shown
class Shown(Display):
    """One report's values as the signed-in user reads them (``xrm.reports.display``):
    their locale, zone and the organization's currency; linked titles through the
    request's titles cache, which the rest of the page shares."""

    def __init__(self, report: Report):
        formats = Formats(C.locale(), C.tz(), C.settings().get("currency"))
        super().__init__(C.store(), report, C.principal(), formats, titles=_request_titles)


def _request_titles(target: str, ids: list) -> dict:
    titles = C.titles()
    for ident in ids:
        titles.want(target, ident)
    titles.resolve()
    return {ident: titles.title(target, ident) for ident in ids}


def number(value) -> float | None:
    """A measure's value for a chart (dates and empty values are not drawn)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Cell:
    text: str
    url: str
    measure: str


class ReportView:
    """A result ready for the template: header lines, body lines, totals, chart data and
    the links of every figure to its records."""

    def __init__(self, report: Report, result, given: dict[str, str]):
        self.report, self.result, self.given = report, result, given
        self.show = Shown(report)
        self.show.want(result)
        self.records = C.records(report.entity)
        view = main_view(C.catalog(), self.show.entity)
        self.columns = ",".join(view.columns) if view.kind == "list" else ""
        self.list_view = f"{report.entity}__all"
        self.measures = [(m.name, C.label(m)) for m in report.measures]
        self.groups = [
            (g, C.path_label(self.show.entity, self.show.groups[g].path)) for g in result.groups
        ]
        self.pivot_columns = [
            (value, self.show.group(report.pivot, value)) for value in result.columns
        ]

    @property
    def empty(self) -> bool:
        return not self.result.rows

    # -- links
    def records_url(self, values: dict) -> str:
        raw = records_filter(self.records, self.result, values)
        params = {}
        if raw is not None:
            params["filter"] = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
        if self.columns:
            params["cols"] = self.columns
        return url_for("ui_lists.view", view_name=self.list_view, **params)

    def row_values(self, row: dict) -> dict:
        return {g: row[g] for g in self.result.groups}

    def export_url(self, fmt: str) -> str:
        return url_for("ui_reports.export", name=self.report.name, fmt=fmt, **self.given)

    def api_url(self) -> str:
        return url_for("api_reports.get_report", name=self.report.name, **self.given)

    # -- the table
    def lines(self) -> list[dict]:
        out = []
        for row in self.result.rows:
            values = self.row_values(row)
            heads = [self.show.group(g, row[g]) for g in self.result.groups]
            out.append({"heads": heads, "cells": self._cells(row, values)})
        return out

    def totals(self) -> list[Cell] | None:
        if self.result.totals is None:
            return None
        return self._cells(self.result.totals, {}, total=True)

    def _cells(self, row: dict, values: dict, total: bool = False) -> list[Cell]:
        pivot = self.report.pivot
        names = [n for n, _ in self.measures]
        if pivot is None:
            url = self.records_url(values)
            return [Cell(self.show.measure(n, row[n]), url, n) for n in names]
        cells = []
        for (column, _text), figures in zip(self.pivot_columns, row["cells"]):
            url = self.records_url({**values, pivot: column})
            for n in names:
                value = None if figures is None else figures[n]
                cells.append(Cell(self.show.measure(n, value), url, n))
        if self.result.totals is not None:
            own = row if total else row.get("total") or {}
            url = self.records_url(values)
            cells += [Cell(self.show.measure(n, own.get(n)), url, n) for n in names]
        return cells

    # -- the chart
    def kpis(self) -> list[dict]:
        chart = self.report.chart
        if chart is None or chart.kind != "kpi":
            return []
        figures = self.result.totals
        if figures is None and not self.result.groups and self.result.rows:
            figures = self.result.rows[0]
        labels = dict(self.measures)
        url = self.records_url({})
        return [
            {
                "name": n,
                "label": labels[n],
                "value": self.show.measure(n, (figures or {}).get(n)),
                "url": url,
            }
            for n in chart.measures
        ]

    def chart(self) -> dict | None:
        chart = self.report.chart
        if chart is None or chart.kind not in DRAWN or self.empty:
            return None
        labels = dict(self.measures)
        rows = self.result.rows
        categories = [
            GROUP_SEPARATOR.join(self.show.group(g, row[g]) for g in self.result.groups)
            for row in rows
        ]
        datasets = []
        if self.report.pivot is None:
            for n in chart.measures:
                datasets.append(
                    {
                        "label": labels[n],
                        "data": [number(row[n]) for row in rows],
                        "text": [self.show.measure(n, row[n]) for row in rows],
                        "links": [self.records_url(self.row_values(row)) for row in rows],
                    }
                )
        else:
            n = chart.measures[0]
            for index, (column, title) in enumerate(self.pivot_columns):
                values = [(row["cells"][index] or {}).get(n) for row in rows]
                datasets.append(
                    {
                        "label": title,
                        "data": [number(v) for v in values],
                        "text": [self.show.measure(n, v) for v in values],
                        "links": [
                            self.records_url({**self.row_values(row), self.report.pivot: column})
                            for row in rows
                        ],
                    }
                )
        return {
            "kind": chart.kind,
            "labels": categories,
            "datasets": datasets,
            "measure": labels[chart.measures[0]] if len(chart.measures) == 1 else "",
            "locale": C.locale(),
        }
