"""How a report's values read for one reader, the same on every output (the page and its
charts, the CSV/XLSX exports, the emails): option labels, boolean words, user names and
record titles read as the reader (their scope: a title they may not read stays ``#id``),
date buckets as periods in their locale, counts, fractions, money, percents and days in
their locale and the organization's currency.

Framework-free: the web hands in the reader's ``Formats`` (and, if it likes, its own
per-request titles cache); the workflow hands in each recipient's.  A measure may be
of another entity (a report's ``targets:``): it is parsed on ``m.entity_name``, never
on the report's own entity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from ..metadata.aggregates import parse_group, value_type
from ..metadata.filters import ReadRefused
from ..metadata.formats import Formats
from ..metadata.reports import Report
from ..storage import tables as T
from ..storage.records import Forbidden
from .export import DAYS, PERCENT, figure_kind, parsed_measure, report_table

#: The words of a report's values; labels of reports, fields and options carry their own.
WORDS = {
    "en": {
        "total": "Total",
        "empty": "(empty)",
        "yes": "Yes",
        "no": "No",
        "week": "Week of {date}",
    },
    "ru": {
        "total": "Итого",
        "empty": "(пусто)",
        "yes": "Да",
        "no": "Нет",
        "week": "Неделя с {date}",
    },
}
#: ``titles(target, ids)`` -> ``{id: text}``: how linked records and users are named.
Titles = Callable[[str, list], Mapping]


def language(locale: str) -> str:
    """``ru_RU`` -> ``ru``: the key of label and word mappings."""
    return (locale or "en").replace("-", "_").split("_")[0]


def words_for(locale: str) -> dict:
    return WORDS.get(language(locale), WORDS["en"])


def value_text(formats: Formats, f, value) -> str:
    """A field's value as text (money in its currency, else the organization's); a
    linked record is the caller's to name (``read_titles``)."""
    if value is None:
        return ""
    if value_type(f) == "money":
        return formats.money(value, f.params.get("currency"))
    try:
        return f.kind.format(f, value, formats.locale, formats.tz)
    except (TypeError, ValueError, ArithmeticError, KeyError):
        return str(value)


@dataclass(frozen=True)
class Heading:
    label: str
    number: bool  # right-aligned


def read_titles(store, principal, formats: Formats, target: str, ids: list) -> dict:
    """``{id: text}``: users' names and records' titles as ``principal`` reads them."""
    if target == "user":
        statement = sa.select(T.users.c.id, T.users.c.name).where(T.users.c.id.in_(ids))
        unit = store.current_unit()  # a worker's batch: read in its transaction
        if unit is not None:
            return {r.id: r.name for r in unit.connection.execute(statement)}
        with store.engine.connect() as conn:
            return {r.id: r.name for r in conn.execute(statement)}
    entity = store.catalog.entity_of(target)
    title = entity.title if entity is not None else None
    if title is None or title not in entity.fields or not entity.fields[title].stored:
        return {}
    # the reader's own read: a title they may not see stays a number
    records = store.records(target, principal=principal)
    try:
        rows = records.query(filter=["id", "in", ids], fields=[title], limit=len(ids)).rows
    except (Forbidden, ReadRefused):  # may not read them: the figures stand without names
        return {}
    f = entity.fields[title]
    return {
        r["id"]: f.format(r[title], formats.locale, formats.tz)
        for r in rows
        if r.get(title) is not None
    }


class Display:
    """One report's groups and measures as one reader reads them."""

    def __init__(
        self,
        store,
        report: Report,
        principal,
        formats: Formats,
        *,
        words: Mapping[str, str] | None = None,
        titles: Titles | None = None,
    ):
        self.store, self.report, self.principal, self.formats = store, report, principal, formats
        self.lang = language(formats.locale)
        self.words = {**words_for(formats.locale), **(words or {})}
        self._titles = titles or self._read_titles
        catalog = store.catalog
        self.entity = catalog.entity(report.entity)
        self.groups = {g: parse_group(self.entity, catalog.entity_of, g) for g in report.group_by}
        self.measures = {m.name: parsed_measure(catalog, report, m) for m in report.measures}
        self.kinds = {m.name: figure_kind(report, m) for m in report.measures}
        self.titles: dict[tuple[str, object], str] = {}

    # -- linked titles
    def want(self, result) -> None:
        """Read the names and titles the result shows, one query per entity."""
        wanted: dict[str, set] = {}
        for spec, group in self.groups.items():
            if group.bucket is not None or group.field.type not in ("lookup", "user"):
                continue
            values = result.columns if spec == self.report.pivot else [r[spec] for r in result.rows]
            wanted.setdefault(group.field.target, set()).update(v for v in values if v is not None)
        for target, ids in wanted.items():
            if ids:
                found = self._titles(target, sorted(ids))
                self.titles.update({(target, i): text for i, text in found.items()})

    def _read_titles(self, target: str, ids: list) -> dict:
        return read_titles(self.store, self.principal, self.formats, target, ids)

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
        if f.type in ("lookup", "user"):
            return self.titles.get((f.target, value)) or f"#{value}"
        return self._field(f, value) or str(value)

    def cell(self, spec: str, value):
        """A group's value in a workbook: dates stay dates, the rest reads as in the table."""
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
            return self.words["week"].replace("{date}", format_date(day, "medium", locale=locale))
        return format_date(day, "medium", locale=locale)

    def measure(self, name: str, value) -> str:
        if value is None:
            return ""
        kind, measure, locale = self.kinds[name], self.measures[name], self.formats.locale
        if kind == PERCENT:
            from babel.numbers import format_percent

            return format_percent(float(value) / 100, "#,##0.#%", locale=locale)
        if kind == DAYS:
            from babel.units import format_unit

            return format_unit(value, "duration-day", format="#,##0.#", locale=locale)
        if measure.kind in ("count", "distinct"):
            return self.formats.number(value)
        if (measure.kind == "avg" and measure.quantum is None) or (
            measure.kind == "weighted" and measure.value != value_type(measure.field)
        ):  # an average of whole numbers, a weighted sum of them divided: fractions
            from babel.numbers import format_decimal

            return format_decimal(value, format="#,##0.##", locale=locale)
        return self._field(measure.field, value)

    def _field(self, f, value) -> str:
        return value_text(self.formats, f, value)

    # -- the table
    def table(self, result):
        """The result as ``export.Table`` (one layout for every output): groups as they
        read (dates stay dates), figures as values, for a workbook or a CSV file."""
        return report_table(
            result,
            self.store.catalog,
            locale=self.lang,
            group_value=self.cell,
            total_word=self.words["total"],
        )

    def lines(self, result) -> tuple[list[Heading], list[list[str]], list | None]:
        """The table as text: headings, body lines and the totals line."""
        table = report_table(
            result,
            self.store.catalog,
            locale=self.lang,
            group_value=self.group,
            total_word=self.words["total"],
        )
        columns = [Heading(c.label, c.measure is not None) for c in table.columns]

        def read(line):
            return [
                self.measure(c.measure, v) if c.measure else ("" if v is None else str(v))
                for c, v in zip(table.columns, line)
            ]

        totals = read(table.totals) if table.totals is not None else None
        return columns, [read(line) for line in table.rows], totals
