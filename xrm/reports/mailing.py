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

from jinja2 import Environment

from ..metadata.formats import Formats
from ..metadata.labels import Label
from ..metadata.reports import Report
from ..storage.records import Forbidden
from .display import Display, language, words_for
from .export import XLSX_MIMETYPE, to_xlsx
from .run import run_report

#: The message's own words; labels of reports, fields and options carry their own.
WORDS = {
    "en": {
        "subject": "{report}: {date}",
        "nothing": "No records match this report for you at the moment, so there are no figures to show.",
        "open": "Open the report",
        "attached": "The figures are attached as a spreadsheet.",
    },
    "ru": {
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
