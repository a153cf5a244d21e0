"""Reports by email: a report run as one reader (their scope and field rules, through
``run_report``) and laid out for a message: a subject, a plain-text table, an HTML table
and an XLSX workbook to attach, every value in the reader's language, locale and time zone.

The workflow engine's ``send_report`` step calls ``report_mail`` once per recipient, so
each recipient's message holds only the figures they may see.  The HTML is rendered by a
Jinja2 environment with autoescaping: option labels and record titles are data, not markup.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import sqlalchemy as sa
from jinja2 import Environment

from ..metadata.aggregates import parse_group, parse_measure, value_type
from ..metadata.formats import Formats
from ..metadata.labels import Label
from ..metadata.reports import Report
from ..storage import tables as T
from ..storage.records import Forbidden
from .export import XLSX_MIMETYPE, report_table, to_xlsx
from .run import ReportResult, run_report

#: The message's own words; labels of reports, fields and options carry their own.
WORDS = {
    "en": {
        "total": "Total",
        "empty": "(empty)",
        "yes": "Yes",
        "no": "No",
        "week": "Week of {date}",
        "subject": "{report}: {date}",
        "nothing": "No records match this report for you at the moment, so there are no figures to show.",
        "open": "Open the report",
        "attached": "The figures are attached as a spreadsheet.",
    },
    "ru": {
        "total": "Итого",
        "empty": "(пусто)",
        "yes": "Да",
        "no": "Нет",
        "week": "Неделя с {date}",
        "subject": "{report}: {date}",
        "nothing": "Сейчас под условия отчёта не попадает ни одна доступная вам запись, поэтому цифр нет.",
        "open": "Открыть отчёт",
        "attached": "Цифры приложены в виде таблицы Excel.",
    },
}
FORMATS = ("table", "xlsx")

_HTML = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #212529">
<h2 style="font-size: 18px; margin: 0 0 4px">{{ title }}</h2>
{% if description %}<p style="color: #6c757d; margin: 0 0 12px">{{ description }}</p>{% endif %}
{% if empty %}<p>{{ nothing }}</p>
{% elif show_table %}
<table cellpadding="6" cellspacing="0" style="border-collapse: collapse; border: 1px solid #dee2e6">
<thead><tr>{% for c in columns %}<th style="background: #f8f9fa; border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ c.label }}</th>{% endfor %}</tr></thead>
<tbody>
{% for line in lines %}<tr>{% for c, v in zip(columns, line) %}<td style="border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
{% if totals %}<tfoot><tr>{% for c, v in zip(columns, totals) %}<th style="border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ v }}</th>{% endfor %}</tr></tfoot>{% endif %}
</table>
{% endif %}
{% if attached %}<p style="color: #6c757d">{{ attached }}</p>{% endif %}
<p><a href="{{ url }}">{{ open }}</a></p>
</body></html>
"""
)


@dataclass(frozen=True)
class ReportMail:
    """One reader's message: ``attachments`` as the email outbox keeps them
    (``{"filename", "content_type", "data"}``, the data in base64)."""

    subject: str
    text: str
    html: str | None
    attachments: list[dict] = field(default_factory=list)
    empty: bool = False


def report_mail(
    store,
    report: Report,
    params: Mapping[str, object],
    principal,
    formats: Formats,
    *,
    parts=FORMATS,
    subject: Label | None = None,
    now: dt.datetime | None = None,
) -> ReportMail:
    """The report run as ``principal`` and laid out in ``formats`` (the reader's locale,
    zone, the organization's currency and public address).  Raises what ``run_report``
    raises (``ReportRefused``, ``ParameterError``, ``ReportError``) and ``Forbidden``
    when the reader may not read the report's records at all."""
    given = {k: ",".join(v) if isinstance(v, list | tuple) else str(v) for k, v in params.items()}
    access = store.records(report.entity, principal=principal).access
    if access is not None and access.scope_of(report.entity, "read") == "none":
        # as the report page answers: not an empty report, a refusal
        raise Forbidden(f"may not read {report.entity} records")
    result = run_report(store, report, given, principal)
    lang = formats.locale.split("_")[0].split("-")[0]
    words = WORDS.get(lang, WORDS["en"])
    readable = Readable(store, report, principal, formats, words)
    readable.want(result)
    now = now or store.clock.now()
    today = formats.date(now, "medium")
    title = report.label.get(lang)
    wording = subject.get(lang) if subject is not None else words["subject"]
    line = wording.replace("{report}", title).replace("{date}", today)  # plain text: no format()
    columns, lines, totals = readable.lines(result)
    url = f"{formats.base_url}/reports/{report.name}"
    if given:
        url += "?" + urlencode(given)
    empty = not result.rows
    attachments = []
    if "xlsx" in parts:
        table = report_table(
            result,
            store.catalog,
            locale=lang,
            group_value=readable.cell,
            total_word=words["total"],
        )
        data = to_xlsx(table, title, formats.tz)
        attachments.append(
            {
                "filename": f"{report.name}-{formats.date(now, 'yyyy-MM-dd')}.xlsx",
                "content_type": XLSX_MIMETYPE,
                "data": base64.b64encode(data).decode("ascii"),
            }
        )
    html = _HTML.render(
        lang=lang,
        title=title,
        description=report.description.get(lang) if report.description else "",
        empty=empty,
        show_table="table" in parts,
        columns=columns,
        lines=lines,
        totals=totals,
        zip=zip,
        nothing=words["nothing"],
        attached=words["attached"] if attachments else "",
        url=url,
        open=words["open"],
    )
    text = _text(title, columns, lines, totals, "table" in parts, empty, words, url)
    return ReportMail(line, text, html, attachments, empty)


@dataclass(frozen=True)
class Heading:
    label: str
    number: bool  # right-aligned


def _text(title, columns, lines, totals, show, empty, words, url) -> str:
    """The plain-text part: the table in aligned columns, for mail readers without HTML."""
    out = [title, ""]
    if empty:
        out.append(words["nothing"])
    elif show:
        rows = [[c.label for c in columns], *lines, *([totals] if totals else [])]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(columns))]
        for row in rows:
            cells = [
                str(v).rjust(w) if c.number else str(v).ljust(w)
                for c, v, w in zip(columns, row, widths)
            ]
            out.append("  ".join(cells).rstrip())
    else:
        out.append(words["attached"])
    out += ["", f"{words['open']}: {url}"]
    return "\n".join(out) + "\n"


class Readable:
    """A result's groups and measures as one reader reads them: option labels, user names
    and record titles (read as the reader), date buckets as periods, numbers and money in
    their locale."""

    def __init__(self, store, report: Report, principal, formats: Formats, words: dict):
        self.store, self.report, self.principal = store, report, principal
        self.formats, self.words = formats, words
        self.lang = formats.locale.split("_")[0].split("-")[0]
        catalog = store.catalog
        self.entity = catalog.entity(report.entity)
        self.groups = {g: parse_group(self.entity, catalog.entity_of, g) for g in report.group_by}
        self.measures = {
            m.name: parse_measure(self.entity, catalog.entity_of, m.spec) for m in report.measures
        }
        self.titles: dict[tuple[str, object], str] = {}

    def want(self, result: ReportResult) -> None:
        """Read the names and titles the result shows, one query per entity."""
        wanted: dict[str, set] = {}
        for spec, group in self.groups.items():
            if group.bucket is not None or group.field.type not in ("lookup", "user"):
                continue
            values = result.columns if spec == self.report.pivot else [r[spec] for r in result.rows]
            wanted.setdefault(group.field.target, set()).update(v for v in values if v is not None)
        for target, ids in wanted.items():
            if ids:
                self.titles.update(self._titles(target, sorted(ids)))

    def _titles(self, target: str, ids: list) -> dict:
        if target == "user":
            statement = sa.select(T.users.c.id, T.users.c.name).where(T.users.c.id.in_(ids))
            unit = self.store.current_unit()  # a worker's batch: read in its transaction
            if unit is not None:
                rows = unit.connection.execute(statement).all()
            else:
                with self.store.engine.connect() as conn:
                    rows = conn.execute(statement).all()
            return {("user", r.id): r.name for r in rows}
        entity = self.store.catalog.entity_of(target)
        title = entity.title if entity is not None else None
        if title is None or title not in entity.fields or not entity.fields[title].stored:
            return {}
        # the reader's own read: a title they may not see stays a number
        records = self.store.records(target, principal=self.principal)
        try:
            rows = records.query(filter=["id", "in", ids], fields=[title], limit=len(ids)).rows
        except Exception:  # noqa: BLE001 - a title is a courtesy; the figures stand without it
            return {}
        f = entity.fields[title]
        return {
            (target, r["id"]): f.format(r[title], self.formats.locale, self.formats.tz)
            for r in rows
            if r.get(title) is not None
        }

    # -- cells
    def group(self, spec: str, value) -> str:
        if value is None:
            return self.words["empty"]
        group = self.groups[spec]
        if group.bucket is not None:
            return self.bucket(value, group.bucket)
        f = group.field
        if f.type == "boolean":
            return self.words["yes"] if value else self.words["no"]
        if f.type == "choice":
            option = f.option(value)
            return option.label.get(self.lang) if option is not None else str(value)
        if f.type in ("lookup", "user"):
            return self.titles.get((f.target, value)) or f"#{value}"
        return self._field(f, value)

    def cell(self, spec: str, value):
        """A group's value in the workbook: dates stay dates, the rest reads as in the table."""
        if value is None or self.groups[spec].bucket is not None:
            return value
        return self.group(spec, value)

    def bucket(self, day: dt.date, bucket: str) -> str:
        from babel.dates import format_date

        locale = self.formats.locale
        if bucket == "year":
            return str(day.year)
        if bucket == "quarter":
            return format_date(day, "QQQ yyyy", locale=locale)
        if bucket == "month":
            return format_date(day, "LLLL yyyy", locale=locale).capitalize()
        if bucket == "week":
            return self.words["week"].format(date=format_date(day, "medium", locale=locale))
        return format_date(day, "medium", locale=locale)

    def measure(self, name: str, value) -> str:
        if value is None:
            return ""
        measure = self.measures[name]
        if measure.kind in ("count", "distinct"):
            return self.formats.number(value)
        if (measure.kind == "avg" and measure.quantum is None) or (
            measure.kind == "weighted" and measure.value != value_type(measure.field)
        ):  # an average of whole numbers, a weighted sum of them divided: fractions
            return self.formats.number(round(value, 2))
        return self._field(measure.field, value)

    def _field(self, f, value) -> str:
        kind = value_type(f)
        if kind == "money":
            return self.formats.money(value, f.params.get("currency"))
        if kind == "datetime":
            return self.formats.datetime(value)
        if kind == "date":
            return self.formats.date(value)
        try:
            return f.kind.format(f, value, self.formats.locale, self.formats.tz)
        except (TypeError, ValueError, ArithmeticError, KeyError):
            return str(value)

    # -- the table
    def lines(self, result: ReportResult) -> tuple[list[Heading], list[list[str]], list | None]:
        """Headings, body lines and the totals line, as text (one layout with the export:
        groups, then measures; with a pivot, each column's measures and the row's own)."""
        report = self.report
        names = [m.name for m in report.measures]
        labels = {m.name: m.label.get(self.lang) for m in report.measures}
        columns = [Heading(self.groups[g].field.label.get(self.lang), False) for g in result.groups]
        if report.pivot is None:
            columns += [Heading(labels[n], True) for n in names]
        else:
            for value in result.columns:
                head = self.group(report.pivot, value)
                columns += [Heading(f"{head} {labels[n]}", True) for n in names]
            if result.totals is not None:
                columns += [Heading(f"{self.words['total']} {labels[n]}", True) for n in names]
        lines = [
            [*(self.group(g, row[g]) for g in result.groups), *self._figures(result, row)]
            for row in result.rows
        ]
        totals = None
        if result.totals is not None:
            heads = [self.words["total"] if i == 0 else "" for i in range(len(result.groups))]
            totals = [*heads, *self._figures(result, result.totals, is_total=True)]
        return columns, lines, totals

    def _figures(self, result: ReportResult, row: dict, is_total: bool = False) -> list[str]:
        names = [m.name for m in self.report.measures]
        if self.report.pivot is None:
            return [self.measure(n, row.get(n)) for n in names]
        out = []
        for cell in row["cells"]:
            out += [self.measure(n, None if cell is None else cell[n]) for n in names]
        if result.totals is not None:
            own = row if is_total else row.get("total") or {}
            out += [self.measure(n, own.get(n)) for n in names]
        return out
