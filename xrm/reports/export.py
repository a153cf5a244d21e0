"""A report's figures as a table of typed cells (one layout for every export), written as
CSV text or as an XLSX workbook (openpyxl): numbers stay numbers with a number format,
dates stay dates, the header row holds labels and the totals row is bold.

Without a pivot a line holds the row's groups, then its measures; with one, the row's
groups, each pivot column's measures, then (with totals) the row's own measures.  The
last line holds the totals.  How a group value reads (an option's label, a user's name,
or the raw value as the API gives it) is the caller's choice (``group_value``).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..metadata.aggregates import Measure, parse_group, parse_measure
from ..metadata.reports import Report, ReportMeasure
from .run import ReportResult

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Number formats of a spreadsheet column by what it holds.
FORMATS = {
    "integer": "#,##0",
    "decimal": "#,##0.00",
    "fraction": "#,##0.##",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
    "day": "yyyy-mm-dd",
    "week": "yyyy-mm-dd",
    "month": "mmm yyyy",
    "quarter": "yyyy-mm-dd",
    "year": "yyyy",
    "percent": "0.0%",  # the value / 100: a spreadsheet's percent
    "days": "#,##0.0#",
}
#: What a figure is beyond its aggregate: a percent (a share, a funnel's conversion) or
#: a number of days (a funnel's median stay); None: as its measure and field say.
PERCENT, DAYS = "percent", "days"
FUNNEL_FIGURES = {"conversion": PERCENT, "median_days": DAYS}
_SHEET_NAME = re.compile(r"[\[\]:*?/\\]")


@dataclass(frozen=True)
class Column:
    label: str
    format: str | None = None  # a key of FORMATS
    measure: str | None = None  # the measure a figure's column holds (None: a group)


@dataclass
class Table:
    columns: list[Column]
    rows: list[list] = field(default_factory=list)
    totals: list | None = None


def report_table(
    result: ReportResult,
    catalog,
    *,
    locale: str = "en",
    group_value: Callable[[str, object], object] | None = None,
    total_word: str = "Total",
) -> Table:
    """The result laid out as lines of cells.  ``group_value(spec, value)`` is what a
    group's cell holds (default: the value itself: option values, record and user ids,
    the first day of a date bucket)."""
    report = result.report
    entity = catalog.entity(report.entity)
    show = group_value or (lambda _spec, value: value)
    groups = {spec: parse_group(entity, catalog.entity_of, spec) for spec in report.group_by}
    measures = [
        (m.name, m.label.get(locale), measure_format(catalog, report, m)) for m in report.measures
    ]
    columns = [
        Column(groups[spec].field.label.get(locale), groups[spec].bucket) for spec in result.groups
    ]
    if report.pivot is None:
        columns += [Column(label, fmt, name) for name, label, fmt in measures]
    else:
        for value in result.columns:
            title = text(show(report.pivot, value))
            columns += [Column(f"{title} {label}", fmt, name) for name, label, fmt in measures]
        if result.totals is not None:
            columns += [Column(f"{total_word} {label}", fmt, name) for name, label, fmt in measures]
    table = Table(columns)
    names = [name for name, _, _ in measures]
    for row in result.rows:
        table.rows.append(_line(result, row, names, [show(g, row[g]) for g in result.groups]))
    if result.totals is not None:
        heads = [total_word if i == 0 else None for i in range(len(result.groups))]
        table.totals = _line(result, result.totals, names, heads, is_total=True)
    return table


def _line(result, row, names, heads, is_total=False) -> list:
    if result.report.pivot is None:
        return [*heads, *(row[n] for n in names)]
    line = list(heads)
    for cell in row["cells"]:
        line += [None if cell is None else cell[n] for n in names]
    if result.totals is not None:
        total = row if is_total else row.get("total") or {}
        line += [total.get(n) for n in names]
    return line


def figure_kind(report: Report, measure: ReportMeasure) -> str | None:
    """PERCENT, DAYS or None (see ``FUNNEL_FIGURES``)."""
    if measure.share is not None:
        return PERCENT
    if report.kind == "conversion_funnel":
        return FUNNEL_FIGURES.get(measure.name)
    return None


def parsed_measure(catalog, report: Report, measure: ReportMeasure) -> Measure:
    """The aggregate of a report's measure, on the entity it belongs to (a target's own)."""
    entity = catalog.entity(measure.entity_name or report.entity)
    return parse_measure(entity, catalog.entity_of, measure.spec)


def measure_format(catalog, report: Report, measure: ReportMeasure) -> str:
    """The number format of a measure's column (a key of ``FORMATS``)."""
    kind = figure_kind(report, measure)
    if kind is not None:
        return kind
    parsed = parsed_measure(catalog, report, measure)
    if parsed.kind in ("count", "distinct"):
        return "integer"
    if parsed.value in ("date", "datetime"):
        return parsed.value
    if parsed.quantum is not None:
        return "decimal"
    if parsed.kind == "avg":
        return "fraction"
    return "integer" if parsed.value in ("integer", "duration", "rating") else "fraction"


# ------------------------------------------------------------------------ CSV
def text(value) -> str:
    """A cell as CSV text: dates in ISO form, moments in UTC, decimals exact."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([c.label for c in table.columns])
    for line in [*table.rows, *([table.totals] if table.totals is not None else [])]:
        writer.writerow([_csv_cell(value) for value in line])
    return buffer.getvalue()


def _csv_cell(value) -> str:
    out = text(value)
    return csv_text(out) if isinstance(value, str) else out


_NUMBER = re.compile(r"^[+-]?\d+([.,]\d+)?$")


def csv_text(value: str) -> str:
    """Text for a CSV cell that a spreadsheet will not run as a formula ("=1+2" becomes
    "'=1+2"; a signed number stays a number).  Every CSV export writes text through it."""
    if value[:1] in ("=", "+", "-", "@") and not _NUMBER.match(value):
        return "'" + value
    return value


def as_text(cell) -> None:
    """Mark an openpyxl cell holding a string as text, so "=..." is never a formula (a
    quote in front would be part of the value in a workbook)."""
    if isinstance(cell.value, str):
        cell.data_type = "s"


# ------------------------------------------------------------------------ XLSX
def to_xlsx(table: Table, title: str, tz: str = "UTC") -> bytes:
    """The table as a workbook of one sheet."""
    return to_workbook([(title, table)], tz)


def to_workbook(sheets: list[tuple[str, Table]], tz: str = "UTC") -> bytes:
    """Tables as a workbook, a sheet each (named by its title, made unique): a bold
    header of labels, typed cells with the number format of their column, a bold totals
    line."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    taken: set[str] = set()
    for title, table in sheets:
        name = _SHEET_NAME.sub(" ", title).strip()[:31] or "report"
        for n in range(2, 100):
            if name.casefold() not in taken:
                break
            suffix = f" ({n})"
            name = name[: 31 - len(suffix)] + suffix
        taken.add(name.casefold())
        _write_sheet(workbook.create_sheet(name), table, tz)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _write_sheet(sheet, table: Table, tz: str) -> None:
    from openpyxl.styles import Font

    bold = Font(bold=True)
    sheet.append([c.label for c in table.columns])
    for cell in sheet[1]:
        cell.font = bold
    zone = ZoneInfo(tz)
    lines = [*table.rows, *([table.totals] if table.totals is not None else [])]
    for index, line in enumerate(lines, start=2):
        is_total = table.totals is not None and index == len(lines) + 1
        for column, (spec, value) in enumerate(zip(table.columns, line), start=1):
            cell = sheet.cell(row=index, column=column)
            if spec.format == PERCENT and isinstance(value, int | float | decimal.Decimal):
                value = value / 100  # 12.5 (percent) is 0.125 in a cell formatted 0.0%
            cell.value = _xlsx_value(value, zone)
            as_text(cell)
            typed = cell.value is not None and not isinstance(cell.value, str | bool)
            if spec.format and typed:
                cell.number_format = FORMATS[spec.format]
            if is_total:
                cell.font = bold
    sheet.freeze_panes = "A2"
    for column, spec in enumerate(table.columns, start=1):
        letter = sheet.cell(row=1, column=column).column_letter
        sheet.column_dimensions[letter].width = max(10, min(40, len(spec.label) + 2))


def _xlsx_value(value, zone: ZoneInfo):
    if isinstance(value, dt.datetime):  # a spreadsheet has no zones: the local wall clock
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(zone).replace(tzinfo=None)
    if isinstance(value, int | float | decimal.Decimal | dt.date | str | bool) or value is None:
        return value
    return str(value)
