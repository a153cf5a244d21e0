"""Reading a spreadsheet file for an import: CSV (its encoding and delimiter found out) or
XLSX, as a header row and then data rows, streamed so that a large file is never held in
memory.  Every problem with the file itself is a ``SourceError`` naming the line."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Bytes read to find out the encoding and the delimiter.
SAMPLE = 256 * 1024
#: Encodings an undeclared, non-UTF-8 file may be in (charset-normalizer chooses among
#: them): the Western and Cyrillic single-byte code pages people's spreadsheets save.
LEGACY_ENCODINGS = ("cp1251", "cp1252", "latin_1", "koi8_r", "cp866", "iso8859_5")
DELIMITERS = ",;\t|"
XLSX_SUFFIXES = (".xlsx", ".xlsm")
#: A cell may hold this many characters (csv's own limit is 128 KB).
FIELD_LIMIT = 10 * 1024 * 1024


class SourceError(ValueError):
    """The file cannot be read as a table (with the line when one is to blame)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass
class Source:
    """A table to import: ``headers`` and ``rows()``, each row with its number as a
    spreadsheet shows it (the header is row 1; in a CSV file, the line it starts on)."""

    path: Path
    kind: str  # csv or xlsx
    headers: list[str]
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    header_row: int = 1
    size: int = 0
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> Iterator[tuple[int, list]]:
        if self.kind == "xlsx":
            return _xlsx_rows(self)
        return _csv_rows(self)

    def estimated_rows(self) -> int | None:
        """About how many data rows the file has (for a progress bar), cheaply."""
        if self.kind == "xlsx":
            return None
        lines, last = 0, b""
        with open(self.path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last and last != b"\n":
            lines += 1  # the last line has no line break
        return max(0, lines - self.header_row)

    def digest(self) -> str:
        """A hash of the file's bytes: what a resumed import checks it continues."""
        with open(self.path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()


def open_source(
    path: str | Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    name: str | None = None,
) -> Source:
    """The file at ``path`` as a table (``name``: the file's name as uploaded, whose
    extension says what it is when the path has none)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(SAMPLE)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    suffix = Path(name or path.name).suffix.lower()
    if suffix == ".xls" or head.startswith(b"\xd0\xcf\x11\xe0"):
        raise SourceError("old Excel files (.xls) cannot be read: save the sheet as .xlsx or CSV")
    if suffix in XLSX_SUFFIXES or head.startswith(b"PK\x03\x04"):
        return _open_xlsx(path, sheet, size)
    if sheet:
        raise SourceError("--sheet is for XLSX files; this is a CSV file")
    if not head.strip():
        raise SourceError("the file is empty")
    encoding = _encoding(head, encoding, complete=size <= SAMPLE)
    text = head.decode(encoding, errors="ignore")
    delimiter = _delimiter(text, delimiter)
    source = Source(path, "csv", [], encoding=encoding, delimiter=delimiter, size=size)
    reader = _reader(source)
    for number, cells in reader:
        if any(c.strip() for c in cells):
            source.headers = [c.strip() for c in cells]
            source.header_row = number
            break
    else:
        raise SourceError("the file has no header row")
    _check_headers(source)
    return source


# ------------------------------------------------------------------------------ CSV
def _encoding(head: bytes, given: str | None, complete: bool) -> str:
    if given:
        try:
            return codecs.lookup(given).name
        except LookupError:
            raise SourceError(
                f"unknown encoding {given!r} (for example utf-8, cp1251, latin-1)"
            ) from None
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # a sample may end inside a character: the incremental decoder keeps that part
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a dependency of the platform's requests stack
        raise SourceError(
            "the file is not UTF-8; give its encoding with --encoding (cp1251, latin-1, ...)"
        ) from None
    best = from_bytes(head, cp_isolation=list(LEGACY_ENCODINGS)).best()
    if best is None:
        raise SourceError(
            "cannot tell the file's encoding: it is not UTF-8 nor a known code page; "
            "give it with --encoding (cp1251, latin-1, ...)"
        )
    return codecs.lookup(best.encoding).name


def _delimiter(text: str, given: str | None) -> str:
    if given:
        given = {"tab": "\t", "\\t": "\t"}.get(given, given)
        if len(given) != 1:
            raise SourceError(f"a delimiter is one character, not {given!r}")
        return given
    lines = text.splitlines()[:50]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may cut the last line short
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        first = lines[0] if lines else ""
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _reader(source: Source) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, cells) for every row, blank ones included."""
    csv.field_size_limit(FIELD_LIMIT)
    try:
        with open(source.path, "rb") as handle:
            yield from _records(source, handle)
    except OSError as exc:
        raise SourceError(f"cannot read {source.path}: {exc.strerror or exc}") from None


def _lines(source: Source, handle, at: list[int]) -> Iterator[str]:
    """The file's lines as text, ``at[0]`` the number of the last one read.  Decoded a line
    at a time, so a byte the encoding refuses is reported on its own line (UTF-16, whose
    line breaks are two bytes, is decoded as a stream)."""
    if source.encoding.startswith("utf-16"):
        text = io.TextIOWrapper(handle, encoding=source.encoding, newline="")
        for line in text:
            at[0] += 1
            yield line
        return
    decode = codecs.getdecoder(source.encoding)
    for raw in handle:
        at[0] += 1
        if at[0] == 1 and source.encoding == "utf-8-sig":
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield decode(raw)[0]
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"the file is not valid {source.encoding} here (byte 0x{raw[exc.start]:02x}); "
                "give its encoding with --encoding",
                at[0],
            ) from None


def _records(source: Source, handle) -> Iterator[tuple[int, list[str]]]:
    at = [0]
    reader = csv.reader(_lines(source, handle, at), delimiter=source.delimiter, strict=True)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SourceError(f"broken row: {exc}", line) from None
        yield line, cells
        line = at[0] + 1


def _csv_rows(source: Source) -> Iterator[tuple[int, list]]:
    for number, cells in _reader(source):
        if number <= source.header_row or not any(c.strip() for c in cells):
            continue
        yield number, cells


# ------------------------------------------------------------------------------ XLSX
def _workbook(path: Path):
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    try:
        return load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, KeyError, OSError, ValueError) as exc:
        raise SourceError(f"not a readable XLSX workbook: {exc}") from None


def _worksheet(workbook, sheet: str | None):
    if sheet is None:
        return workbook.worksheets[0]
    if sheet not in workbook.sheetnames:
        names = ", ".join(repr(n) for n in workbook.sheetnames)
        raise SourceError(f"no sheet {sheet!r} in the workbook (sheets: {names})")
    return workbook[sheet]


def _open_xlsx(path: Path, sheet: str | None, size: int) -> Source:
    workbook = _workbook(path)
    try:
        ws = _worksheet(workbook, sheet)
        for number, values in enumerate(ws.iter_rows(values_only=True), start=1):
            if any(_cell(v) != "" for v in values):
                headers = [str(_cell(v)).strip() for v in values]
                while headers and not headers[-1]:
                    headers.pop()
                source = Source(path, "xlsx", headers, sheet=ws.title, header_row=number, size=size)
                _check_headers(source)
                return source
        raise SourceError(f"the sheet {ws.title!r} has no header row")
    finally:
        workbook.close()


def _xlsx_rows(source: Source) -> Iterator[tuple[int, list]]:
    workbook = _workbook(source.path)
    try:
        ws = _worksheet(workbook, source.sheet)
        start = source.header_row + 1
        for number, values in enumerate(ws.iter_rows(min_row=start, values_only=True), start=start):
            cells = [_cell(v) for v in values]
            if any(c != "" for c in cells):
                yield number, cells
    finally:
        workbook.close()


def _cell(value):
    """A workbook cell as the importer takes it: text, a number (a whole float as an
    integer, as a spreadsheet shows it), a date or a moment, a boolean; empty is ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dt.time):
        return value.isoformat()
    return value


def _check_headers(source: Source) -> None:
    seen: dict[str, int] = {}
    for index, header in enumerate(source.headers, start=1):
        if not header:
            continue
        key = header.casefold()
        if key in seen:
            raise SourceError(
                f"columns {seen[key]} and {index} are both headed {header!r}: rename one",
                source.header_row,
            )
        seen[key] = index
