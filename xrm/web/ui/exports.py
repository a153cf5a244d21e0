"""Export of a list as it stands (view filter, quick filters, advanced filter, search,
sort) to CSV or XLSX through the streaming exporter of ``xrm/data/exports.py`` (keyset
pages through the records service, so an export never shows a row the list would not);
values read as the list shows them."""

from __future__ import annotations

import datetime as dt
import decimal
import tempfile
from zoneinfo import ZoneInfo

from flask import Response, current_app, stream_with_context

from ...data.exports import XLSX_MIMETYPE, Export, iter_csv, write_xlsx
from ...metadata import Entity, Field, View
from ...metadata.fieldtypes import in_zone
from ...reports.export import csv_text
from ...storage.query import search_fields
from . import context as C
from . import filtering as F


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


def _csv_cell(plain) -> str:
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
    """The list as a download, streamed: CSV goes out a page at a time; a workbook is
    written to a temporary file as the rows come and then sent from it."""
    limit = int(current_app.config.get("XRM_EXPORT_MAX", 100_000))
    tree = F.effective_filter(state, entity, C.catalog().entity_of)
    titles = C.titles()

    def on_page(rows: list[dict]) -> None:
        titles.want_records(entity, rows, columns)
        titles.resolve()

    export = Export(
        C.records(entity),
        columns,
        filter=tree,
        sort=state.sort_spec,
        search=state.q if state.q and search_fields(entity) else None,
        limit=limit,
        headers=[C.path_label(entity, p) for p in columns],
        cell=_plain,
        on_page=on_page,
    )
    # the first page is read here, before any writer starts: a filter the records service
    # refuses fails now, not halfway through a download
    rows = export.rows()
    if fmt == "csv":
        chunks = iter_csv(export.headers, rows, value=_csv_cell)
        response = Response(stream_with_context(_encoded(chunks)), mimetype="text/csv")
    else:
        handle = tempfile.TemporaryFile()  # noqa: SIM115 - the response's iterator closes it
        try:
            write_xlsx(export.headers, rows, handle, title=C.label(view))
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        response = Response(_file_chunks(handle), mimetype=XLSX_MIMETYPE)
    response.headers.set("Content-Disposition", "attachment", filename=_filename(view, fmt))
    return response


def _encoded(chunks):
    for chunk in chunks:
        yield chunk.encode("utf-8")


def _file_chunks(handle, size: int = 1 << 16):
    with handle:
        while block := handle.read(size):
            yield block
