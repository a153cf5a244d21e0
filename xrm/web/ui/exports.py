"""Export of a list as it stands (view filter, quick filters, advanced filter, search,
sort) to CSV or XLSX, page by page through the records service, so an export never shows
a row the list would not."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import itertools
from zoneinfo import ZoneInfo

from flask import Response, current_app

from ...metadata import Entity, Field, View
from ...metadata.fieldtypes import in_zone
from ...reports.export import as_text, csv_text
from ...storage.query import search_fields
from . import context as C
from . import filtering as F

BATCH = 1000


def _rows(entity: Entity, state: F.ListState, columns: list[str]):
    """Every row of the list (up to XRM_EXPORT_MAX), a batch at a time."""
    limit = int(current_app.config.get("XRM_EXPORT_MAX", 100_000))
    tree = F.effective_filter(state, entity, C.catalog().entity_of)
    search = state.q if state.q and search_fields(entity) else None
    service = C.records(entity)
    after = None
    sent = 0
    while sent < limit:
        page = service.query(
            filter=tree,
            sort=state.sort_spec,
            fields=columns,
            limit=min(BATCH, limit - sent),
            after=after,
            search=search,
        )
        titles = C.titles()
        titles.want_records(entity, page.rows, columns)
        titles.resolve()
        yield from page.rows
        sent += len(page.rows)
        if not page.next_cursor:
            return
        after = page.next_cursor


def _plain(field: Field, value):
    """A cell value for a spreadsheet: numbers and dates stay typed, the rest is text."""
    if value is None or value == [] or value == "":
        return None
    kind = field.type
    result = field.params.get("result") if kind in ("formula", "rollup") else None
    effective = result or kind
    if effective in ("integer", "rating") and isinstance(value, int):
        return value
    if effective in ("decimal", "money", "percent") and isinstance(value, int | decimal.Decimal):
        return value
    if effective == "boolean" and isinstance(value, bool):
        return value
    if effective == "datetime" and isinstance(value, dt.datetime):
        return in_zone(value, C.tz()).replace(tzinfo=None)
    if effective == "date" and isinstance(value, dt.date):
        return value
    return C.text(field, value)


def _csv_cell(field: Field, value) -> str:
    plain = _plain(field, value)
    if plain is None:
        return ""
    if isinstance(plain, bool):
        return C._("Yes") if plain else C._("No")
    if isinstance(plain, dt.datetime):
        return plain.strftime("%Y-%m-%d %H:%M")
    if isinstance(plain, decimal.Decimal):
        return format(plain, "f")
    return csv_text(str(plain))


def _filename(view: View, fmt: str) -> str:
    stamp = dt.datetime.now(ZoneInfo(C.tz())).strftime("%Y%m%d-%H%M")
    return f"{view.name}-{stamp}.{fmt}"


def respond(
    view: View, entity: Entity, state: F.ListState, columns: list[str], fmt: str
) -> Response:
    fields = [C.field_at(entity, p) for p in columns]
    headers = [C.path_label(entity, p) for p in columns]
    pages = _rows(entity, state, columns)
    # the first page read before any writer starts: a filter the records service refuses
    # fails here, not halfway through a workbook (whose writer would be left open)
    rows = itertools.chain(list(itertools.islice(pages, 1)), pages)
    if fmt == "csv":
        buffer = io.StringIO()
        buffer.write("\ufeff")  # so spreadsheets open UTF-8 (Cyrillic) correctly
        writer = csv.writer(buffer)
        writer.writerow(headers)
        for row in rows:
            writer.writerow([_csv_cell(f, row.get(p)) for p, f in zip(columns, fields)])
        body = buffer.getvalue().encode("utf-8")
        mimetype = "text/csv"
    else:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet(title=C.label(view)[:31] or "export")
        sheet.append(headers)
        for row in rows:
            cells = []
            for p, f in zip(columns, fields):
                cell = WriteOnlyCell(sheet, value=_plain(f, row.get(p)))
                as_text(cell)
                cells.append(cell)
            sheet.append(cells)
        buffer = io.BytesIO()
        workbook.save(buffer)
        body = buffer.getvalue()
        mimetype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    response = Response(body, mimetype=mimetype)
    response.headers.set("Content-Disposition", "attachment", filename=_filename(view, fmt))
    return response
