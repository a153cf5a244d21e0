"""Export of records to CSV or XLSX, streamed: rows are read a keyset page at a time
through the records service (so an export shows exactly what the reader's list would:
their row scope, no hidden field) and written as they come, CSV as text chunks and XLSX
by openpyxl's write-only workbook, so memory does not grow with the number of rows.

The browser's list export and ``xrm export`` both use ``Export``; each says how a value
reads in a cell (``cell``) and may look at each page first (``on_page``: the web resolves
titles there).  The default cells are plain: numbers, dates and booleans stay typed, an
option is its label, a lookup is its target's title (``#id`` without one), a user is their
name, so a file exported this way can be imported back.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa

from ..metadata import Entity, Field
from ..metadata.fieldtypes import in_zone
from ..metadata.filters import resolve_path
from ..reports.export import csv_text
from ..storage import tables as T

#: Rows read per query (the records service's largest page).
PAGE = 1000
FORMATS = ("csv", "xlsx")
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Cell = Callable[[Field, object], object]
#: Headers of the system columns (English, Russian).
SYSTEM_LABELS = {
    "id": ("ID", "ID"),
    "owner": ("Owner", "Ответственный"),
    "created_at": ("Created", "Создано"),
    "updated_at": ("Modified", "Изменено"),
    "created_by": ("Created by", "Кем создано"),
    "updated_by": ("Modified by", "Кем изменено"),
    "version": ("Version", "Версия"),
}


class Export:
    """The rows of one query as cells: ``headers`` and ``rows()``."""

    def __init__(
        self,
        records,
        columns: Sequence[str],
        *,
        filter=None,
        sort=None,
        search: str | None = None,
        limit: int | None = None,
        headers: Sequence[str] | None = None,
        cell: Cell | None = None,
        on_page: Callable[[list[dict]], None] | None = None,
    ):
        self.records = records
        self.entity: Entity = records.entity
        self.columns = list(columns)
        catalog = records.catalog
        self.fields = [resolve_path(self.entity, p, catalog.entity_of)[0] for p in self.columns]
        self.headers = list(headers) if headers is not None else self._labels()
        self.filter = filter
        self.sort = sort
        self.search = search
        self.limit = limit
        self.on_page = on_page
        self._default_cells = cell is None
        if cell is not None:
            self.cell: Cell = cell
            self.selected = self.columns
        else:
            self.cell = self._plain
            self._titles = self._title_paths()
            self.selected = list(dict.fromkeys([*self.columns, *self._titles.values()]))
            self._users: dict[int, str] = {}

    def _labels(self) -> list[str]:
        locale = self.records.locale
        out = []
        for path, f in zip(self.columns, self.fields):
            if "." in path:
                head = self.entity.fields.get(path.split(".", 1)[0])
                prefix = head.label.get(locale) + " " if head is not None else ""
                out.append(prefix + f.label.get(locale))
            elif path in self.entity.fields:
                out.append(f.label.get(locale))
            else:
                labels = SYSTEM_LABELS.get(path, (path, path))
                out.append(labels[1] if locale.startswith("ru") else labels[0])
        return out

    def _title_paths(self) -> dict[str, str]:
        """Lookup column -> the dotted path of its target's title (selected alongside,
        through the same scoped joins, so a title the reader may not read is empty)."""
        catalog = self.records.catalog
        access = self.records.access
        out = {}
        for path, f in zip(self.columns, self.fields):
            if f.type != "lookup":
                continue
            target = catalog.entity(f.target)
            title = target.fields.get(target.title or "")
            if title is None or not title.stored or title.type in ("lookup", "any_lookup"):
                continue
            if access is not None and (
                access.scopes_of(target.name, "read") <= {"none"}
                or title.name in access.hidden(target)
            ):
                continue  # a title the reader may not read: the cell is the id (#12)
            titled = f"{path}.{title.name}"
            if titled.count(".") <= 2:
                out[path] = titled
        return out

    # ------------------------------------------------------------------ reading
    def pages(self) -> Iterator[list[dict]]:
        after = None
        sent = 0
        while self.limit is None or sent < self.limit:
            size = PAGE if self.limit is None else min(PAGE, self.limit - sent)
            page = self.records.query(
                filter=self.filter,
                sort=self.sort,
                fields=self.selected,
                limit=size,
                after=after,
                search=self.search,
            )
            if page.rows:
                if self.on_page is not None:
                    self.on_page(page.rows)
                yield page.rows
            sent += len(page.rows)
            if not page.next_cursor:
                return
            after = page.next_cursor

    def rows(self) -> Iterator[list]:
        """Every row as a list of cells.  The first page is read at once, so a filter the
        records service refuses fails here and not halfway through a file."""
        pages = self.pages()
        first = next(pages, None)
        return self._cells(first, pages)

    def _cells(self, first, pages) -> Iterator[list]:
        if first is None:
            return
        columns, fields = self.columns, self.fields
        if not self._default_cells:
            cell = self.cell
            for page in _chain(first, pages):
                for row in page:
                    yield [cell(f, row.get(p)) for p, f in zip(columns, fields)]
            return
        getters = []
        for path, f in zip(columns, fields):
            titled = self._titles.get(path)
            if titled is not None:
                getters.append(lambda row, p=path, t=titled: _titled(row.get(p), row.get(t)))
            else:
                getters.append(lambda row, p=path, f=f: self._plain(f, row.get(p)))
        for page in _chain(first, pages):
            self._load_users(page)
            for row in page:
                yield [get(row) for get in getters]

    # ------------------------------------------------------------------ plain cells
    def _load_users(self, page: list[dict]) -> None:
        wanted = {
            row.get(p)
            for p, f in zip(self.columns, self.fields)
            if f.type == "user" or p.split(".")[-1] in ("owner", "created_by", "updated_by")
            for row in page
        }
        wanted = {w for w in wanted if isinstance(w, int) and w not in self._users}
        if not wanted:
            return
        with self.records.store.engine.connect() as conn:
            for ident, name in conn.execute(
                sa.select(T.users.c.id, T.users.c.name).where(T.users.c.id.in_(wanted))
            ):
                self._users[ident] = name
        if len(self._users) > 50_000:
            self._users.clear()

    def _plain(self, field: Field, value):
        if value is None or value == [] or value == "":
            return None
        locale, tz = self.records.locale, self.records.tz
        kind = field.type
        if kind in ("formula", "rollup"):
            kind = field.params.get("result") or ("decimal" if kind == "rollup" else "text")
        if isinstance(value, bool):
            return value
        if kind == "lookup":
            return f"#{value}"
        if kind == "user" or isinstance(value, int) and field.name in ("owner", "created_by"):
            return self._users.get(value, f"#{value}")
        if isinstance(value, int | decimal.Decimal) and kind not in ("choice", "text"):
            return value
        if isinstance(value, dt.datetime):
            return in_zone(value, tz).replace(tzinfo=None)
        if isinstance(value, dt.date):
            return value
        if kind in ("choice", "multi_choice", "tags", "duration", "time", "boolean"):
            return field.format(value, locale, tz)
        if kind == "file" and isinstance(value, dict):
            return value.get("name")
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, default=str)
        return str(value)


def _titled(ident, title):
    if ident is None:
        return None
    return str(title) if title not in (None, "") else f"#{ident}"


def _chain(first, pages):
    yield first
    yield from pages


# ------------------------------------------------------------------------------ writers
def csv_value(value) -> str:
    """A cell as CSV text: a moment as local wall time, decimals exact, booleans yes/no,
    text guarded against being run as a spreadsheet formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, int | float):
        return str(value)
    return csv_text(str(value))


def iter_csv(
    headers: Sequence[str], rows: Iterator[list], *, value: Callable = csv_value, bom: bool = True
) -> Iterator[str]:
    """CSV text in chunks of about a page, a UTF-8 BOM first (so spreadsheets open
    Cyrillic text correctly)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if bom:
        buffer.write("\ufeff")
    writer.writerow([csv_text(h) for h in headers])
    for count, row in enumerate(rows, start=1):
        writer.writerow([value(v) for v in row])
        if count % PAGE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_xlsx(headers: Sequence[str], rows: Iterator[list], out, *, title: str = "export") -> int:
    """A one-sheet workbook written as rows come (openpyxl's write-only mode keeps rows on
    disk, not in memory); ``out`` is a path or a binary file.  Returns the row count."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=_sheet_title(title))
    bold = Font(bold=True)
    header_cells = []
    for text in headers:
        c = WriteOnlyCell(sheet, value=str(text))
        c.data_type = "s"
        c.font = bold
        header_cells.append(c)
    sheet.append(header_cells)
    formats = {dt.datetime: "yyyy-mm-dd hh:mm", dt.date: "yyyy-mm-dd"}
    count = 0
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, str):
                if value[:1] == "=":  # text, never a formula
                    c = WriteOnlyCell(sheet, value=value)
                    c.data_type = "s"
                    value = c
            elif type(value) in formats:
                c = WriteOnlyCell(sheet, value=value)
                c.number_format = formats[type(value)]
                value = c
            cells.append(value)
        sheet.append(cells)
        count += 1
    workbook.save(out)
    return count


def _sheet_title(title: str) -> str:
    import re

    return re.sub(r"[\[\]:*?/\\]", " ", title).strip()[:31] or "export"


def _counted(rows, tick):
    for row in rows:
        tick()
        yield row


def export_to(export: Export, fmt: str, out, *, title: str | None = None) -> int:
    """Write an export to ``out`` (a path, or a text file for CSV / a binary one for XLSX);
    returns the number of rows."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (csv or xlsx)")
    counter = [0]

    def tick():
        counter[0] += 1

    rows = _counted(export.rows(), tick)
    if fmt == "xlsx":
        write_xlsx(export.headers, rows, out, title=title or export.entity.name)
        return counter[0]
    if isinstance(out, str | bytes) or hasattr(out, "__fspath__"):
        with open(out, "w", encoding="utf-8", newline="") as handle:
            for chunk in iter_csv(export.headers, rows):
                handle.write(chunk)
    else:
        for chunk in iter_csv(export.headers, rows):
            out.write(chunk)
    return counter[0]
