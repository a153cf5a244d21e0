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

from jinja2 import DictLoader, Environment

from ..metadata.filters import resolve_path
from ..metadata.formats import Formats
from ..metadata.labels import Label
from ..metadata.reports import Report
from ..storage.records import Forbidden
from .display import Display, Heading, language, read_titles, value_text, words_for
from .export import (
    PERCENT,
    XLSX_MIMETYPE,
    Column,
    Table,
    measure_format,
    to_workbook,
    to_xlsx,
)
from .run import run_report

#: The message's own words; labels of reports, fields and options carry their own.
WORDS = {
    "en": {
        "subject": "{report}: {date}",
        "nothing": "No records match this report for you at the moment, so there are no figures to show.",
        "open": "Open the report",
        "attached": "The figures are attached as a spreadsheet.",
        "open_dashboard": "Open the dashboard",
        "previous": "Previous period",
        "change": "Change",
        "hidden": "Not shown to you: {reason}",
        "more": "The first {shown} of {count} records.",
        "none": "No records.",
        "dashboard_attached": "The figures are attached as a spreadsheet, a sheet per widget.",
    },
    "ru": {
        "subject": "{report}: {date}",
        "nothing": "Сейчас под условия отчёта не попадает ни одна доступная вам запись, поэтому цифр нет.",
        "open": "Открыть отчёт",
        "attached": "Цифры приложены в виде таблицы Excel.",
        "open_dashboard": "Открыть панель",
        "previous": "Прошлый период",
        "change": "Изменение",
        "hidden": "Вам не показывается: {reason}",
        "more": "Первые {shown} из {count} записей.",
        "none": "Нет записей.",
        "dashboard_attached": "Цифры приложены в виде таблицы Excel, по листу на виджет.",
    },
}
FORMATS = ("table", "xlsx")

_TEMPLATES = {
    "table": """{% macro table(columns, lines, totals) -%}
<table cellpadding="6" cellspacing="0" style="border-collapse: collapse; border: 1px solid #dee2e6">
<thead><tr>{% for c in columns %}<th style="background: #f8f9fa; border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ c.label }}</th>{% endfor %}</tr></thead>
<tbody>
{% for line in lines %}<tr>{% for c, v in zip(columns, line) %}<td style="border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
{% if totals %}<tfoot><tr>{% for c, v in zip(columns, totals) %}<th style="border: 1px solid #dee2e6; text-align: {{ 'right' if c.number else 'left' }}">{{ v }}</th>{% endfor %}</tr></tfoot>{% endif %}
</table>
{%- endmacro %}""",
    "report": """{% from "table" import table %}<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #212529">
<h2 style="font-size: 18px; margin: 0 0 4px">{{ title }}</h2>
{% if description %}<p style="color: #6c757d; margin: 0 0 12px">{{ description }}</p>{% endif %}
{% if empty %}<p>{{ nothing }}</p>
{% elif show_table %}
{{ table(columns, lines, totals) }}
{% endif %}
{% if attached %}<p style="color: #6c757d">{{ attached }}</p>{% endif %}
<p><a href="{{ url }}">{{ open }}</a></p>
</body></html>
""",
    "dashboard": """{% from "table" import table %}<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #212529">
<h2 style="font-size: 18px; margin: 0 0 12px">{{ title }}</h2>
{% for s in sections %}
<h3 style="font-size: 16px; margin: 16px 0 4px" data-widget="{{ s.index }}">{{ s.title }}</h3>
{% if s.columns %}{{ table(s.columns, s.lines, s.totals) }}{% endif %}
{% if s.note %}<p style="color: #6c757d; margin: 4px 0">{{ s.note }}</p>{% endif %}
{% endfor %}
{% if attached %}<p style="color: #6c757d">{{ attached }}</p>{% endif %}
<p><a href="{{ url }}">{{ open }}</a></p>
</body></html>
""",
}
_HTML = Environment(loader=DictLoader(_TEMPLATES), autoescape=True)
_HTML.globals["zip"] = zip


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
    lang = language(formats.locale)
    words = {**words_for(formats.locale), **WORDS.get(lang, WORDS["en"])}
    readable = Display(store, report, principal, formats)
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
        data = to_xlsx(readable.table(result), title, formats.tz)
        attachments.append(
            {
                "filename": f"{report.name}-{formats.date(now, 'yyyy-MM-dd')}.xlsx",
                "content_type": XLSX_MIMETYPE,
                "data": base64.b64encode(data).decode("ascii"),
            }
        )
    html = _HTML.get_template("report").render(
        lang=lang,
        title=title,
        description=report.description.get(lang) if report.description else "",
        empty=empty,
        show_table="table" in parts,
        columns=columns,
        lines=lines,
        totals=totals,
        nothing=words["nothing"],
        attached=words["attached"] if attachments else "",
        url=url,
        open=words["open"],
    )
    text = _text(title, columns, lines, totals, "table" in parts, empty, words, url)
    return ReportMail(line, text, html, attachments, empty)


def _text(title, columns, lines, totals, show, empty, words, url) -> str:
    """The plain-text part: the table in aligned columns, for mail readers without HTML."""
    out = [title, ""]
    if empty:
        out.append(words["nothing"])
    elif show:
        out += _aligned(columns, lines, totals)
    else:
        out.append(words["attached"])
    out += ["", f"{words['open']}: {url}"]
    return "\n".join(out) + "\n"


def _aligned(columns, lines, totals) -> list[str]:
    """A table as lines of text in aligned columns (numbers to the right)."""
    rows = [[c.label for c in columns], *lines, *([totals] if totals else [])]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(
            str(v).rjust(w) if c.number else str(v).ljust(w)
            for c, v, w in zip(columns, row, widths)
        ).rstrip()
        for row in rows
    ]


# ------------------------------------------------------------------------ dashboards
@dataclass
class Section:
    """One widget of a dashboard in a message: a titled table, or a note in its place."""

    index: int
    title: str
    columns: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    totals: list | None = None
    note: str = ""
    sheet: Table | None = None  # its sheet of the workbook


def dashboard_mail(
    store,
    dashboard,
    params: Mapping[str, object],
    principal,
    formats: Formats,
    *,
    parts=FORMATS,
    subject: Label | None = None,
    now: dt.datetime | None = None,
) -> ReportMail:
    """A dashboard run as ``principal`` (``run_dashboard``, fresh: no one's cached
    figures), each widget a titled table (a kpi: its figure and its change against the
    previous period; a list: its first records), a widget the reader may not see a
    one-line note, and one workbook with a sheet per widget.  Raises LookupError when the
    reader does not see the dashboard at all."""
    from .dashboards import run_dashboard  # dashboards build on reports, not on mail

    given = {k: ",".join(v) if isinstance(v, list | tuple) else str(v) for k, v in params.items()}
    result = run_dashboard(store, dashboard, given, principal, fresh=True)
    lang = language(formats.locale)
    words = {**words_for(formats.locale), **WORDS.get(lang, WORDS["en"])}
    sections = [_section(store, w, principal, formats, words) for w in result.widgets]
    now = now or store.clock.now()
    title = dashboard.label.get(lang)
    wording = subject.get(lang) if subject is not None else words["subject"]
    line = wording.replace("{report}", title).replace("{date}", formats.date(now, "medium"))
    url = f"{formats.base_url}/dashboards/{dashboard.name}"
    if given:
        url += "?" + urlencode(given)
    sheets = [(s.title, s.sheet) for s in sections if s.sheet is not None]
    attachments = []
    if sheets and "xlsx" in parts:
        data = to_workbook(sheets, formats.tz)
        attachments.append(
            {
                "filename": f"{dashboard.name}-{formats.date(now, 'yyyy-MM-dd')}.xlsx",
                "content_type": XLSX_MIMETYPE,
                "data": base64.b64encode(data).decode("ascii"),
            }
        )
    attached = words["dashboard_attached"] if attachments else ""
    html = _HTML.get_template("dashboard").render(
        lang=lang,
        title=title,
        sections=sections if "table" in parts else [],
        attached=attached,
        url=url,
        open=words["open_dashboard"],
    )
    text = [title, ""]
    for s in sections:
        text += [s.title, *(_aligned(s.columns, s.lines, s.totals) if s.columns else [])]
        text += [s.note, ""] if s.note else [""]
    text += [attached, "", f"{words['open_dashboard']}: {url}"]
    empty = all(not s.lines for s in sections)
    return ReportMail(line, "\n".join(text) + "\n", html, attachments, empty)


def _section(store, found, principal, formats: Formats, words: dict) -> Section:
    widget, report, lang = found.widget, found.report, language(formats.locale)
    catalog = store.catalog
    if widget.label is not None:
        title = widget.label.get(lang)
    elif report is not None:
        title = report.label.get(lang)
    elif widget.view and widget.view in catalog.views:
        title = catalog.views[widget.view].label.get(lang)
    else:
        title = catalog.entity(widget.entity).plural.get(lang)
    section = Section(widget.index, title)
    if found.error is not None:
        section.note = words["hidden"].replace("{reason}", found.error)
        return section
    if widget.kind == "list":
        return _list_section(section, store, found, principal, formats, words)
    show = Display(store, report, principal, formats)
    if widget.kind == "kpi":
        [measure] = [m for m in report.measures if m.name == widget.measure]
        fmt = measure_format(catalog, report, measure)
        label = measure.label.get(lang)
        section.columns = [Heading(label, True)]
        line = [show.measure(measure.name, found.value) or "—"]
        row = [found.value]
        sheet = [Column(label, fmt, measure.name)]
        if widget.compare:
            change = found.change
            section.columns += [Heading(words["previous"], True), Heading(words["change"], True)]
            line += [
                show.measure(measure.name, found.previous_value) or "—",
                "—" if change is None else _signed_percent(change, formats.locale),
            ]
            row += [found.previous_value, None if change is None else round(change * 100, 1)]
            sheet += [
                Column(words["previous"], fmt, measure.name),
                Column(words["change"], PERCENT),
            ]
        section.lines, section.sheet = [line], Table(sheet, [row])
        return section
    show.want(found.result)
    if not found.result.rows:
        section.note = words["nothing"]
    else:
        section.columns, section.lines, section.totals = show.lines(found.result)
    section.sheet = show.table(found.result)
    return section


def _list_section(section, store, found, principal, formats, words) -> Section:
    """A list widget's records as a short table: its columns the reader may read, linked
    records named as the reader reads them."""
    lang = language(formats.locale)
    entity = store.catalog.entity(
        found.widget.entity or store.catalog.views[found.widget.view].entity
    )
    fields = [resolve_path(entity, c, store.catalog.entity_of)[0] for c in found.columns]
    wanted: dict[str, set] = {}
    for f, path in zip(fields, found.columns):
        if f.type in ("lookup", "user"):
            ids = {r.get(path) for r in found.rows} - {None}
            wanted.setdefault(f.target, set()).update(ids)
    titles = {
        (target, i): text
        for target, ids in wanted.items()
        if ids
        for i, text in read_titles(store, principal, formats, target, sorted(ids)).items()
    }

    def read(f, value) -> str:
        if value is not None and f.type in ("lookup", "user"):
            return titles.get((f.target, value)) or f"#{value}"
        return value_text(formats, f, value)

    section.columns = [Heading(f.label.get(lang), False) for f in fields]
    section.lines = [[read(f, r.get(p)) for f, p in zip(fields, found.columns)] for r in found.rows]
    section.sheet = Table([Column(h.label) for h in section.columns], section.lines)
    if not found.rows:
        section.note = words["none"]
    elif found.count is not None and found.count > len(found.rows):
        shown, count = formats.number(len(found.rows)), formats.number(found.count)
        section.note = words["more"].replace("{shown}", shown).replace("{count}", count)
    return section


def _signed_percent(fraction: float, locale: str) -> str:
    from babel.numbers import format_percent

    return format_percent(fraction, "+#,##0.#%;-#,##0.#%", locale=locale)
