"""Import of a CSV or XLSX file into the records of one entity, through the records service.

Columns are matched to fields by name or by label in any language the catalog carries (or
as the caller maps them); lookup and user columns are resolved to records by the target's
title, or by the field a mapping names (``account.code``), among the records the importer
may read.  Cell text is parsed in the importer's locale by the field registry and every
row is validated and written by the records service (its bulk path for new records), so an
import can save nothing a form or the API would refuse.

Modes: ``create`` adds every row; ``update`` changes the record a row matches (by a key
field, the ``id`` column, or a duplicate rule); ``upsert`` does either.  With ``dedupe``
rules, a row whose duplicate exists (a stored record the importer may read, or an earlier
row of the file) is skipped when creating and written into that record when updating.
Only an earlier row that was written (or in a dry run would be) counts: a row repeating a
rejected row is judged on its own.

All or nothing by default: one transaction, and any rejected row rolls everything back.
``partial`` keeps the good rows: each chunk of rows commits with the count of rows done
(``xrm_counter``, in the same transaction), so an interrupted import continues where it
stopped (``resume``) and a row is never written twice.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..metadata import CoercionError, Entity, Field
from ..metadata.bulk import collector_paused
from ..metadata.duplicates import DuplicateRule, fuzzy_value, key_function
from ..metadata.problems import did_you_mean, one_of
from ..storage import duplicates as D
from ..storage import tables as T
from ..storage.records import ALL_KEY, Forbidden, NotFound, RecordError, ValidationFailed
from ..storage.unit import DeferredWriteFailed
from .sources import Source, SourceError

MODES = ("create", "update", "upsert")
#: Rows validated and written together (one bulk create; one commit in partial mode).
CHUNK = 2000
#: Rows a preview reads.
PREVIEW_ROWS = 20
#: Field types an import cannot fill from one cell.
NOT_IMPORTABLE = ("children", "many_to_many", "file", "json", "any_lookup")
#: Headers of the rejected-rows file.
REJECT_HEADERS = ("row", "column", "value", "message")
#: What a system column is called in a header (besides its name).
SYSTEM_LABELS = {"id": ("ID", "Идентификатор"), "owner": ("Owner", "Ответственный", "Владелец")}
COUNTER_PREFIX = "import:"
_NUMBER = re.compile(r"^#\d{1,18}$")

Progress = Callable[["ImportProgress"], None]


class ImportRefused(ValueError):
    """The import cannot start (a mapping, key or rule problem); nothing was written."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ImportCancelled(Exception):
    """Raised by a progress callback to stop an import (a chunk never ends half-done)."""


# ------------------------------------------------------------------------------ results
@dataclass
class Column:
    """A column of the file and the field it fills (None: not imported, ``note`` says why)."""

    index: int
    header: str
    field: str | None = None
    by: str | None = None  # a lookup's: the target field a cell names the record by
    note: str | None = None

    @property
    def target(self) -> str:
        return f"{self.field}.{self.by}" if self.by else (self.field or "")


@dataclass
class Reject:
    row: int
    column: str
    value: str
    message: str


@dataclass
class Duplicate:
    """A row whose duplicate exists: a stored record (``record_id``) or an earlier row."""

    row: int
    rules: list[str]
    action: str  # skipped (create) or updated (update, upsert)
    record_id: int | None = None
    title: str = ""
    of_row: int | None = None


@dataclass
class RowOutcome:
    """What happened to one row (kept for previews)."""

    row: int
    action: str  # created, updated, skipped, rejected
    values: dict = field(default_factory=dict)
    record_id: int | None = None


@dataclass
class ImportProgress:
    rows: int  # rows read so far (in this run)
    total: int | None  # rows in the file, about (None: unknown)
    created: int
    updated: int
    skipped: int
    rejected: int


@dataclass
class ImportResult:
    entity: str
    mode: str
    rows: int = 0  # data rows read in this run
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejects: list[Reject] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    committed: bool = False  # whether anything was written (and kept)
    dry_run: bool = False
    resumed_after: int | None = None  # the row a resumed import continued after
    outcomes: list[RowOutcome] = field(default_factory=list)

    @property
    def rejected_rows(self) -> int:
        return len({r.row for r in self.rejects})

    def as_json(self) -> dict:
        return {
            "entity": self.entity,
            "mode": self.mode,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "rejected": self.rejected_rows,
            "committed": self.committed,
            "dry_run": self.dry_run,
            "resumed_after": self.resumed_after,
            "duplicates": [d.__dict__ for d in self.duplicates[:100]],
            "rejects": [r.__dict__ for r in self.rejects[:100]],
        }


# ------------------------------------------------------------------------------ matching
def _normal(text: str) -> str:
    """A header or label compared without case, spaces, ``_``, ``-``, ``.`` and a trailing
    ``*`` or ``:`` (a required mark): "E-mail", "email" and "EMAIL:" are one."""
    text = str(text).casefold().strip().rstrip("*:")
    return re.sub(r"[\s_.\-]+", "", text)


def field_names(entity: Entity) -> dict[str, str]:
    """Normal header -> field name: each field's name and its label in every language,
    and the system columns a file may carry (``id``, ``owner``)."""
    names: dict[str, str] = {}
    for system, labels in SYSTEM_LABELS.items():
        for text in (system, *labels):
            names.setdefault(_normal(text), system)
    for f in entity.fields.values():
        names.setdefault(_normal(f.name), f.name)
    for f in entity.fields.values():
        for _locale, text in f.label.texts:
            names.setdefault(_normal(text), f.name)
    return names


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """``["Company=account.code", "Notes="]`` as {header: field path} ("" skips)."""
    mapping: dict[str, str] = {}
    for item in items:
        header, sep, target = item.partition("=")
        if not sep or not header.strip():
            raise ImportRefused([f"--map {item!r}: write COLUMN=FIELD (COLUMN= skips a column)"])
        mapping[header.strip()] = target.strip()
    return mapping


# ------------------------------------------------------------------------------ importer
class Importer:
    """One file into one entity, as one user (or as the platform, ``principal=None``)."""

    def __init__(
        self,
        store,
        entity: str,
        source: Source,
        *,
        principal=None,
        mapping: Mapping[str, str] | None = None,
        mode: str = "create",
        key: str | None = None,
        dedupe: Sequence[str] = (),
        partial: bool = False,
        chunk_size: int = CHUNK,
        locale: str | None = None,
        tz: str | None = None,
    ):
        self.store = store
        catalog = store.refresh()
        found = catalog.entity_of(entity)
        if found is None:
            names = sorted(catalog.entities)
            raise ImportRefused([f"unknown entity {entity!r}{did_you_mean(entity, names)}"])
        self.entity = found
        self.source = source
        self.principal = principal
        self.records = store.records(found.name, principal=principal)
        if locale:
            self.records.locale = locale
        if tz:
            self.records.tz = tz
        self.mode = mode
        self.partial = partial
        self.chunk_size = max(1, int(chunk_size))
        self.problems: list[str] = []
        if mode not in MODES:
            self.problems.append(f"unknown mode {mode!r} (expected one of {one_of(MODES)})")
        self.columns = self._plan_columns(dict(mapping or {}))
        self.by_field = {c.field: c for c in self.columns if c.field}
        self.key = self._plan_key(key)
        self.rules = self._plan_rules(dedupe)
        self._check_required()
        self._lookup_cache: dict[tuple[str, str], dict] = {}
        # an all-or-nothing run writes behind (``UnitOfWork.write_behind``) unless that
        # failed once; a partial run commits each chunk, so it writes as it goes
        self.write_behind = True

    # -------------------------------------------------------------- the plan
    @property
    def locale(self) -> str:
        return self.records.locale

    @property
    def tz(self) -> str:
        return self.records.tz

    def _writable(self) -> set[str]:
        names = set(self.records.writable_fields())
        if (
            self.principal is None
            or self.records.access.scope_of(self.entity.name, "create") != "none"
        ):
            names.add("owner")
        return names

    def _plan_columns(self, mapping: dict[str, str]) -> list[Column]:
        entity = self.entity
        headers = self.source.headers
        lowered = {h.casefold(): i for i, h in enumerate(headers) if h}
        for header in mapping:
            if header.casefold() not in lowered:
                shown = ", ".join(repr(h) for h in headers if h)
                self.problems.append(
                    f"--map {header!r}: no such column in the file{did_you_mean(header, [h for h in headers if h])} (columns: {shown})"
                )
        explicit = {lowered[h.casefold()]: t for h, t in mapping.items() if h.casefold() in lowered}
        names = field_names(entity)
        writable = self._writable()
        columns: list[Column] = []
        taken: dict[str, str] = {}
        for index, header in enumerate(headers):
            column = Column(index, header)
            columns.append(column)
            if not header:
                column.note = "no header"
                continue
            if index in explicit:
                target = explicit[index]
                if not target:
                    column.note = "skipped by the mapping"
                    continue
                problem = self._assign(column, target, writable)
                if problem:
                    self.problems.append(f"column {header!r}: {problem}")
                    continue
            else:
                name = names.get(_normal(header))
                path = header.strip()
                if name is None and "." in path and path.split(".", 1)[0] in entity.fields:
                    name = path
                if name is None:
                    column.note = "no field of this name or label"
                    continue
                problem = self._assign(column, name, writable)
                if problem:
                    column.field, column.by, column.note = None, None, problem
                    continue
            if column.field in taken:
                self.problems.append(
                    f"columns {taken[column.field]!r} and {header!r} both fill {column.field}: map one of them elsewhere or skip it (--map '{header}=')"
                )
                column.field = None
                continue
            taken[column.field] = header
        return columns

    def _assign(self, column: Column, target: str, writable: set[str]) -> str | None:
        """Point a column at a field path; the problem, or None."""
        entity = self.entity
        name, _, by = target.partition(".")
        if name == "id":
            if by:
                return "id has no fields"
            column.field = "id"
            return None
        f = entity.fields.get(name)
        if f is None and name != "owner":
            known = [*entity.fields, "id", "owner"]
            return f"{entity.name} has no field {name!r}{did_you_mean(name, known)}"
        if name not in writable:
            if f is not None and f.computed:
                return f"{name} is computed and cannot be imported"
            return f"you may not write {name}"
        kind = "user" if name == "owner" else f.type
        if kind in NOT_IMPORTABLE:
            return f"{kind} fields cannot be imported from a column"
        if by:
            if kind == "user":
                if by not in ("email", "name", "id"):
                    return f"a user is found by email, name or id, not {by!r}"
            elif kind != "lookup":
                return f"{name} is not a lookup, so {target!r} names nothing"
            else:
                target_entity = self.store.catalog.entity(f.target)
                tf = target_entity.fields.get(by)
                if by != "id" and (tf is None or not tf.stored or tf.type in NOT_IMPORTABLE):
                    known = [n for n, x in target_entity.fields.items() if x.stored]
                    return f"{f.target} has no field {by!r} to find records by{did_you_mean(by, known)}"
        elif kind == "lookup":
            target_entity = self.store.catalog.entity(f.target)
            title = target_entity.fields.get(target_entity.title or "")
            if title is None or not title.stored:
                return f"say which field of {f.target} finds the record: {name}.FIELD"
        if kind == "lookup":
            problem = self._unreadable_key(f.target, by or target_entity.title)
            if problem:
                return problem
        column.field, column.by = name, by or None
        return None

    def _unreadable_key(self, target: str, by: str) -> str | None:
        """A lookup column finds records as the importer reads them: by a field they may
        read, among the records they may read (else a cell would tell whether a record with
        a hidden value exists)."""
        if self.principal is None:
            return None
        service = self.store.records(target, principal=self.principal)
        if service.access.scopes_of(target, "read") <= {"none"}:
            return f"you may not read {target} records"
        if by != "id" and by in service.access.hidden(service.entity):
            return f"you may not read {target}.{by}"
        return None

    def _plan_key(self, key: str | None) -> str | None:
        if self.mode == "create":
            if key:
                self.problems.append("--key is for --mode update or upsert")
            return None
        if key:
            if key != "id" and key not in self.entity.fields:
                self.problems.append(
                    f"--key {key!r}: {self.entity.name} has no such field{did_you_mean(key, list(self.entity.fields))}"
                )
                return None
            if key not in self.by_field:
                self.problems.append(f"--key {key}: no column of the file fills {key}")
                return None
            if self.by_field[key].by:
                self.problems.append(f"--key {key}: a key is matched by its own value")
                return None
            return key
        if "id" in self.by_field:
            return "id"
        return None

    def _plan_rules(self, names: Sequence[str]) -> list[DuplicateRule]:
        rules = {r.name: r for r in self.entity.duplicates}
        usable = {r.name for r in D.usable_rules(self.records)}
        chosen = []
        for name in names:
            rule = rules.get(name)
            if rule is None:
                known = ", ".join(rules) or "none"
                self.problems.append(
                    f"--dedupe {name!r}: {self.entity.name} has no such duplicate rule{did_you_mean(name, list(rules))} (rules: {known})"
                )
                continue
            if name not in usable:
                self.problems.append(f"--dedupe {name}: you may not read the fields it compares")
                continue
            missing = [n for n in rule.fields if n not in self.by_field]
            if missing:
                self.problems.append(
                    f"--dedupe {name}: no column of the file fills {', '.join(missing)}"
                )
                continue
            chosen.append(rule)
        if self.mode in ("update", "upsert") and self.key is None and not chosen:
            self.problems.append(
                f"--mode {self.mode} needs a way to find each record: --key FIELD, an id column or --dedupe RULE"
            )
        return chosen

    def _check_required(self) -> None:
        if self.mode == "update":
            return
        for f in self.entity.fields.values():
            if f.required and f.default is None and not f.computed and f.name not in self.by_field:
                self.problems.append(
                    f"required field {f.name} ({f.label.get(self.locale)}) has no column in the file"
                )

    def check(self) -> None:
        if self.problems:
            raise ImportRefused(self.problems)

    # -------------------------------------------------------------- running
    def job_key(self) -> str:
        """What identifies this import for resuming: the file's bytes, the entity, the
        mode and the plan."""
        plan = repr(
            (
                self.entity.name,
                self.mode,
                self.key,
                [r.name for r in self.rules],
                [(c.header, c.target) for c in self.columns],
                self.source.sheet,
            )
        )
        digest = hashlib.sha256((self.source.digest() + plan).encode()).hexdigest()[:32]
        return COUNTER_PREFIX + digest

    def resume_point(self) -> int | None:
        """The last row an earlier partial run of this import committed, if it stopped."""
        with self.store.engine.connect() as conn:
            return conn.execute(
                sa.select(T.counters.c.value).where(T.counters.c.key == self.job_key())
            ).scalar()

    def run(
        self,
        *,
        dry_run: bool = False,
        resume: bool = False,
        restart: bool = False,
        progress: Progress | None = None,
        limit: int | None = None,
        keep_outcomes: bool = False,
    ) -> ImportResult:
        """Import the rows (the first ``limit``, for a preview).  All or nothing unless
        ``partial``; a dry run writes nothing and says what would happen."""
        self.check()
        result = ImportResult(self.entity.name, self.mode, dry_run=dry_run)
        run = _Run(self, result, progress, keep_outcomes)
        rows = self.source.rows()
        if limit is not None:
            rows = _first(rows, limit)
        if self.partial and not dry_run:
            job = self.job_key()
            done = self.resume_point()
            if done is not None and not (resume or restart):
                raise ImportRefused(
                    [
                        f"an earlier partial import of this file stopped after row {done}: "
                        "continue it with --resume, or start over with --restart"
                    ]
                )
            if resume and done is not None:
                result.resumed_after = done
                rows = (r for r in rows if r[0] > done)
            for chunk in _chunks(rows, self.chunk_size):
                with self.store.transaction(self.records.user_id) as unit:
                    run.chunk(unit, chunk)
                    _set_counter(unit.connection, job, chunk[-1][0])
                result.committed = True
                run.report()
            with self.store.engine.begin() as conn:
                conn.execute(T.counters.delete().where(T.counters.c.key == job))
            return result
        try:
            with self.store.transaction(self.records.user_id) as unit:
                # New records' rows go to the database on a second thread while the next
                # chunk is read and checked (one transaction, so nothing is half-done).
                with unit.write_behind() if self.write_behind else contextlib.nullcontext():
                    for chunk in _chunks(rows, self.chunk_size):
                        run.chunk(unit, chunk)
                        run.report()
                if dry_run or (result.rejects and not self.partial):
                    raise _RollBack
        except _RollBack:
            return result
        except DeferredWriteFailed:
            # The database refused rows written behind (a race on a unique value, say):
            # nothing was kept, so the import runs again writing as it goes, where a
            # refused batch is retried row by row and the bad row gets its own message.
            self.write_behind = False
            return self.run(
                dry_run=dry_run, progress=progress, limit=limit, keep_outcomes=keep_outcomes
            )
        result.committed = True
        return result

    def preview(self, rows: int = PREVIEW_ROWS) -> Preview:
        """The first rows as they would be imported (a dry run): each cell as parsed, the
        records service's messages, the duplicates found."""
        if self.problems:  # the cells as they parse; nothing can be tried yet
            result = ImportResult(self.entity.name, self.mode, dry_run=True)
        else:
            result = self.run(dry_run=True, limit=rows, keep_outcomes=True)
        cells: dict[int, list[PreviewCell]] = {}
        for number, raw in _first(self.source.rows(), rows):
            cells[number] = [self._preview_cell(c, raw) for c in self.columns]
        return Preview(self, result, cells)

    def _preview_cell(self, column: Column, raw: list) -> PreviewCell:
        value = raw[column.index] if column.index < len(raw) else ""
        text = _text(value)
        if column.field is None or text == "":
            return PreviewCell(text, "", None)
        if column.field == "id" or column.field == "owner" or column.by:
            return PreviewCell(text, text, None)
        f = self.entity.fields[column.field]
        if f.type in ("lookup", "user"):
            return PreviewCell(text, text, None)
        try:
            parsed = f.kind.coerce_input(f, _typed(f, value), tz=self.tz, locale=self.locale)
        except CoercionError as exc:
            return PreviewCell(text, "", exc.message)
        return PreviewCell(text, f.format(parsed, self.locale, self.tz), None)

    # -------------------------------------------------------------- resolving cells
    def resolve(self, column: Column, texts: set[str]) -> dict[str, int | str]:
        """Cell text -> record id (or the problem, as text) for a lookup or user column."""
        cache = self._lookup_cache.setdefault((column.field, column.by or ""), {})
        wanted = [t for t in texts if t not in cache]
        if wanted:
            if column.field == "owner" or self.entity.fields[column.field].type == "user":
                cache.update(self._find_users(column, wanted))
            else:
                cache.update(self._find_records(column, wanted))
            if len(cache) > 100_000:  # a file naming ever new records: keep memory bounded
                cache.clear()
                return self.resolve(column, texts)
        return {t: cache[t] for t in texts}

    def _find_records(self, column: Column, texts: list[str]) -> dict[str, int | str]:
        f = self.entity.fields[column.field]
        target = self.store.catalog.entity(f.target)
        by = column.by or target.title
        service = self.store.records(target.name, principal=self.principal)
        service.locale, service.tz = self.locale, self.tz
        by_field = None if by == "id" else target.fields[by]
        values: dict[object, list[str]] = {}
        out: dict[str, int | str] = {}
        for text in texts:
            try:
                if by_field is None:
                    value = int(text.lstrip("#"))
                else:
                    value = by_field.kind.coerce_input(
                        by_field, text, tz=self.tz, locale=self.locale
                    )
            except (CoercionError, ValueError):
                out[text] = f"{text!r} is not a {by} of {target.name}"
                continue
            values.setdefault(value, []).append(text)
        found: dict[object, list[int]] = {}
        keys = list(values)
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            after = None
            while True:
                page = service.query(filter=[by, "in", part], fields=[by], limit=1000, after=after)
                for row in page.rows:
                    found.setdefault(row[by], []).append(row["id"])
                if not page.next_cursor:
                    break
                after = page.next_cursor
        numbered = self._by_number(service, [t for t in texts if t not in out and _NUMBER.match(t)])
        for value, cell_texts in values.items():
            ids = found.get(value, [])
            for text in cell_texts:
                if len(ids) == 1:
                    out[text] = ids[0]
                elif not ids and text in numbered:
                    out[text] = numbered[
                        text
                    ]  # "#12", as an export writes a record without a title
                elif not ids:
                    out[text] = f"no {target.name} with {by} {text!r}"
                else:
                    out[text] = (
                        f"{len(ids)} {target.name} records have {by} {text!r}: "
                        f"map the column by a field that tells them apart ({column.field}.FIELD)"
                    )
        return out

    @staticmethod
    def _by_number(service, texts: list[str]) -> dict[str, int]:
        """``#12`` -> 12 for the records among them this user may read."""
        ids = {int(t[1:]): t for t in texts}
        if not ids:
            return {}
        page = service.query(filter=["id", "in", list(ids)], fields=["id"], limit=len(ids))
        return {ids[row["id"]]: row["id"] for row in page.rows}

    def _find_users(self, column: Column, texts: list[str]) -> dict[str, int | str]:
        u = T.users
        by = column.by
        out: dict[str, int | str] = {}
        with self.store.engine.connect() as conn:
            for text in texts:
                if by == "id" or (by is None and text.isdigit()):
                    condition = u.c.id == int(text) if text.isdigit() else sa.false()
                elif by == "email" or (by is None and "@" in text):
                    condition = sa.func.lower(u.c.email) == text.lower()
                else:
                    condition = u.c.name == text
                ids = list(conn.execute(sa.select(u.c.id).where(condition).limit(2)).scalars())
                if len(ids) == 1:
                    out[text] = ids[0]
                else:
                    out[text] = (
                        f"no user {text!r}" if not ids else f"several users are called {text!r}"
                    )
        return out


@dataclass
class PreviewCell:
    raw: str
    shown: str
    problem: str | None


class Preview:
    """The first rows of an import as they would go in."""

    def __init__(self, importer: Importer, result: ImportResult, cells: dict):
        self.importer = importer
        self.result = result
        self.columns = importer.columns
        rejects: dict[int, list[Reject]] = {}
        for reject in result.rejects:
            rejects.setdefault(reject.row, []).append(reject)
        duplicates = {d.row: d for d in result.duplicates}
        self.rows = [
            {
                "row": number,
                "cells": row_cells,
                "action": next((o.action for o in result.outcomes if o.row == number), "rejected"),
                "rejects": rejects.get(number, []),
                "duplicate": duplicates.get(number),
            }
            for number, row_cells in cells.items()
        ]


class _RollBack(Exception):
    pass


def _first(rows: Iterator, limit: int) -> Iterator:
    for count, row in enumerate(rows):
        if count >= limit:
            return
        yield row


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _set_counter(conn: sa.Connection, key: str, value: int) -> None:
    updated = conn.execute(
        T.counters.update().where(T.counters.c.key == key).values(value=value)
    ).rowcount
    if not updated:
        conn.execute(T.counters.insert().values(key=key, value=value))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _typed(f: Field, value):
    """A workbook's typed cell as its field takes it: a date field gets a date from a
    spreadsheet's moment (which is how spreadsheets keep dates)."""
    if isinstance(value, str):
        return value.strip()
    kind = f.type
    if kind == "date" and isinstance(value, dt.datetime):
        return value.date()
    if kind in ("text", "long_text", "phone", "email", "url", "choice", "tags", "multi_choice"):
        return _text(value)
    return value


@contextlib.contextmanager
def _savepoint(unit):
    """A savepoint that also forgets what the unit of work collected inside it (audit and
    outbox rows, signals, rollup deltas) when it rolls back."""
    state = (
        len(unit.audit_rows),
        len(unit.outbox_rows),
        len(unit.events),
        copy.deepcopy(unit.rollup_deltas),
    )
    unit.write_pending()
    try:
        with unit.connection.begin_nested():
            yield
            unit.write_pending()
    except BaseException:
        del unit.audit_rows[state[0] :]
        del unit.outbox_rows[state[1] :]
        del unit.events[state[2] :]
        unit.rollup_deltas = state[3]
        unit.pending = []
        unit.cache.clear()
        raise


# ------------------------------------------------------------------------------ one run
class _Run:
    """The state of one import run: keys seen in the file, counts, rejects."""

    def __init__(self, importer: Importer, result: ImportResult, progress, keep: bool):
        self.im = importer
        self.result = result
        self.progress = progress
        self.keep = keep
        self.total = importer.source.estimated_rows() if progress else None
        # rule -> key -> (row, record id or None while the row's record is not written);
        # a fuzzy rule's rows by block key, found again by similarity
        self.seen: dict[str, dict | _Similar] = {
            r.name: {} if r.fuzzy is None else _Similar(r) for r in importer.rules
        }
        self.key_of = {r.name: key_function(r) for r in importer.rules}  # rule_key, once
        self.keys_seen: dict[object, tuple[int, int | None]] = {}
        # row -> the (map, key) entries it made, filled in with the id once it is written
        self.row_keys: dict[int, list[tuple[dict, object]]] = {}
        self.created_rows: dict[int, int] = {}  # row -> the id of the record it created
        self.value_columns = [
            c for c in importer.columns if c.field is not None and c.field != "id"
        ]
        self.header_of = {c.field: c.header for c in importer.columns if c.field}
        entity = importer.entity
        title = entity.fields.get(entity.title or "")
        hidden = importer.records.access.hidden(entity) if importer.records.access else set()
        self.title = (
            title if title is not None and title.stored and title.name not in hidden else None
        )

    def report(self) -> None:
        if self.progress is not None:
            r = self.result
            self.progress(
                ImportProgress(r.rows, self.total, r.created, r.updated, r.skipped, r.rejected_rows)
            )

    def reject(self, row: int, column: str, value, message: str) -> None:
        self.result.rejects.append(Reject(row, column, _text(value), message))

    def outcome(self, row: int, action: str, values: dict | None = None, record_id=None) -> None:
        if self.keep:
            self.result.outcomes.append(RowOutcome(row, action, values or {}, record_id))

    # -------------------------------------------------------------- a chunk
    def chunk(self, unit, rows: list[tuple[int, list]]) -> None:
        first_reject = len(self.result.rejects)
        try:
            # A chunk's rows, records, column rows and audit rows all live until it is
            # written, so Python's cyclic collector kept walking them (and at every
            # promotion all the others): a quarter of an import's time, for no garbage
            # (a chunk leaves a few dozen cyclic objects, no row leaves any).  It waits
            # for the chunk, as it does for a catalog build; between chunks it runs.
            with collector_paused():
                self._chunk(unit, rows)
        finally:  # a chunk's rejects in the order of its rows
            self.result.rejects[first_reject:] = sorted(
                self.result.rejects[first_reject:], key=lambda r: r.row
            )

    def _chunk(self, unit, rows: list[tuple[int, list]]) -> None:
        im = self.im
        # rows of earlier chunks are found through the keys they left in ``seen``
        self.created_rows.clear()
        self.result.rows += len(rows)
        resolved = self._resolve_lookups(rows)
        prepared: list[tuple[int, list, dict]] = []
        width = len(im.source.headers)
        # (column, field, the lookup's resolved texts or None), worked out once a chunk
        plan = [
            (c, f, resolved[c.field] if self._is_lookup(c, f) else None)
            for c in self.value_columns
            for f in (im.entity.fields.get(c.field),)
        ]
        for number, cells in rows:
            values: dict = {}
            bad = False
            if len(cells) > width:
                extra = len(cells) - width
                self.reject(
                    number,
                    "",
                    "",
                    f"{extra} cell(s) more than the header has: a delimiter or quote is out of place",
                )
                continue
            for column, f, lookup in plan:
                value = cells[column.index] if column.index < len(cells) else ""
                if value == "" or (isinstance(value, str) and not value.strip()):
                    continue
                if lookup is not None:
                    found = lookup.get(_text(value))
                    if isinstance(found, str):
                        self.reject(number, column.header, value, found)
                        bad = True
                        continue
                    values[column.field] = found
                else:
                    values[column.field] = value if isinstance(value, str) else _typed(f, value)
            if bad:
                continue
            prepared.append((number, cells, values))
        if im.mode == "create" and not im.rules:
            self._create(unit, prepared)
            return
        first_duplicate = len(self.result.duplicates)
        while prepared:
            # Rows that repeated an earlier row of the chunk which was then rejected are
            # judged again, on their own, against what was written (never against the
            # rejected row): the earlier row's keys were forgotten when it was rejected.
            prepared = self._decide(unit, prepared)
        duplicates = self.result.duplicates[first_duplicate:]
        for duplicate in duplicates:
            if duplicate.record_id is None and duplicate.of_row in self.created_rows:
                duplicate.record_id = self.created_rows[duplicate.of_row]
        self.result.duplicates[first_duplicate:] = sorted(duplicates, key=lambda d: d.row)

    def _decide(self, unit, prepared: list[tuple[int, list, dict]]) -> list:
        """Match, create, update or skip the rows; returns the rows to judge again: those
        that repeated an earlier row of this chunk that turned out not to be written."""
        im = self.im
        matches = self._match(unit, prepared)
        # The previous chunk's rows, held back while this chunk's duplicate keys were
        # looked up, go to the database now (behind, while this chunk is prepared).
        unit.write_pending()
        creates: list[tuple[int, list, dict]] = []
        # create mode: rows repeating an earlier row of the chunk wait for that row's
        # batch, so that the chunk stays one bulk create (no flush per repeated row)
        waiting: list[tuple[int, list, dict, object]] = []
        again: list[tuple[int, list, dict]] = []
        for number, cells, values in prepared:
            match = matches.get(number)
            if isinstance(match, str):
                self._forget(number)
                self.reject(number, self._key_header(), self._key_value(cells), match)
                continue
            if match is None:
                if im.mode == "update":
                    self._forget(number)
                    self.reject(
                        number,
                        self._key_header(),
                        self._key_value(cells),
                        f"no {im.entity.name} matches this row",
                    )
                    continue
                creates.append((number, cells, values))
                continue
            self._forget(number)  # a row that writes no new record: later rows cannot repeat it
            record_id, duplicate = match
            if record_id is None and im.mode == "create":
                waiting.append((number, cells, values, duplicate))
                continue
            if duplicate is not None and im.mode == "create":
                self._skip(number, values, record_id, duplicate)
                continue
            if record_id is None:  # an earlier row of this chunk creates it: write those first
                self._create(unit, creates)
                creates = []
                record_id = self._written_id(duplicate)
                if record_id is None:  # that row was rejected: this one is judged anew
                    again.append((number, cells, values))
                    continue
            if isinstance(duplicate, Duplicate):
                self.result.duplicates.append(duplicate)
            self._update(unit, number, cells, values, record_id)
        self._create(unit, creates)
        for number, cells, values, duplicate in waiting:
            record_id = self._written_id(duplicate)
            if record_id is None:
                again.append((number, cells, values))
            else:
                self._skip(number, values, record_id, duplicate)
        again.sort(key=lambda row: row[0])
        return again

    def _skip(self, number: int, values: dict, record_id, duplicate) -> None:
        if isinstance(duplicate, Duplicate) and duplicate.record_id is None:
            duplicate.record_id = record_id
        self.result.skipped += 1
        self.result.duplicates.append(duplicate)
        self.outcome(number, "skipped", values, record_id)

    def _key_header(self) -> str:
        key = self.im.key
        return self.header_of.get(key, "") if key else ""

    def _key_value(self, cells: list) -> str:
        column = self.im.by_field.get(self.im.key) if self.im.key else None
        if column is None or column.index >= len(cells):
            return ""
        return _text(cells[column.index])

    @staticmethod
    def _is_lookup(column: Column, f: Field | None) -> bool:
        """Whether a column's cells name records (a lookup, a user, the owner)."""
        return bool(column.by or column.field == "owner" or f.type in ("lookup", "user"))

    def _resolve_lookups(self, rows) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for column in self.value_columns:
            f = self.im.entity.fields.get(column.field)
            if not self._is_lookup(column, f):
                continue
            texts = set()
            for _number, cells in rows:
                if column.index < len(cells):
                    text = _text(cells[column.index])
                    if text:
                        texts.add(text)
            out[column.field] = self.im.resolve(column, texts) if texts else {}
        return out

    # -------------------------------------------------------------- matching rows to records
    def _match(self, unit, prepared) -> dict[int, object]:
        """Row -> (record id, Duplicate or None) for a row that matches a record (the id is
        None while the matching row of the file is not written yet), or the problem."""
        im = self.im
        out: dict[int, object] = {}
        if im.key is not None:
            self._match_keys(unit, prepared, out)
        for rule in im.rules:
            self._match_rule(unit, rule, prepared, out)
        return out

    def _coerce_key(self, f: Field | None, value):
        if f is None:  # id
            return int(_text(value).lstrip("#"))
        return f.kind.coerce_input(f, _typed(f, value), tz=self.im.tz, locale=self.im.locale)

    def _match_keys(self, unit, prepared, out: dict) -> None:
        im = self.im
        key = im.key
        f = None if key == "id" else im.entity.fields[key]
        wanted: dict[int, object] = {}
        for number, _cells, values in prepared:
            raw = values.get(key) if key != "id" else None
            if key == "id":
                column = im.by_field["id"]
                raw = _cells[column.index] if column.index < len(_cells) else ""
            if raw is None or _text(raw) == "":
                if im.mode == "update":
                    out[number] = f"the key {key} is empty"
                continue
            try:
                wanted[number] = self._coerce_key(f, raw)
            except (CoercionError, ValueError) as exc:
                out[number] = f"the key {key} is not valid: {getattr(exc, 'message', exc)}"
        table = im.records.table
        builder = im.records.builder()
        scope = im.records.scope(builder)
        found: dict[object, list[int]] = {}
        distinct = list(dict.fromkeys(wanted.values()))
        for start in range(0, len(distinct), 500):
            statement = (
                sa.select(table.c.id, table.c[key])
                .select_from(builder.from_clause)
                .where(table.c[key].in_(distinct[start : start + 500]))
            )
            if scope is not None:
                statement = statement.where(scope)
            for ident, value in unit.connection.execute(statement):
                found.setdefault(value, []).append(ident)
        for number, value in wanted.items():
            ids = found.get(value, [])
            earlier = self.keys_seen.get(value)
            if len(ids) > 1:
                out[number] = f"{len(ids)} {im.entity.name} records have {key} {value!r}"
            elif ids:
                out[number] = (ids[0], None)
            elif earlier is not None:
                out[number] = (
                    (earlier[1], None) if earlier[1] is not None else (None, ("row", earlier[0]))
                )
            else:
                self._remember(self.keys_seen, value, number)

    def _match_rule(self, unit, rule: DuplicateRule, prepared, out: dict) -> None:
        im = self.im
        seen = self.seen[rule.name]
        keys: dict[int, str] = {}
        for number, _cells, values in prepared:
            if number in out and not _pending(out[number]):
                continue
            key = self._rule_key(rule, values)
            if key is not None:
                keys[number] = key
        found: dict[str, list[tuple[int, str]]] = {}
        fuzzy = rule.fuzzy  # a property that searches the rule's items: once, not per row
        if fuzzy is None:
            table = im.records.table
            builder = im.records.builder()
            scope = im.records.scope(builder)
            title = self.title
            distinct = list(dict.fromkeys(keys.values()))
            for start in range(0, len(distinct), 500):
                columns = [table.c.id, table.c[rule.column]]
                if title is not None:
                    columns.append(table.c[title.name])
                statement = (
                    sa.select(*columns)
                    .select_from(builder.from_clause)
                    .where(table.c[rule.column].in_(distinct[start : start + 500]))
                    .order_by(table.c.id)
                )
                if scope is not None:
                    statement = statement.where(scope)
                # Rows this run wrote are known by their keys in ``seen``, so the rows it
                # still holds back need not be written for this look (``raw_connection``).
                for row in unit.raw_connection.execute(statement):
                    found.setdefault(row[1], []).append((row[0], self._title(row)))
        for number, _cells, values in prepared:
            # A row repeating an earlier row of the chunk still holds its keys of the
            # other rules (without changing its match): should the earlier row be
            # rejected, the rows repeating this one are judged again after it, in order.
            pending = number in out
            if pending and not _pending(out[number]):
                continue
            key = keys.get(number)
            if key is None:
                continue
            if fuzzy is not None:
                candidates = [
                    (c.id, c.title)
                    for c in im.records.find_duplicates(
                        {n: values.get(n) for n in rule.fields}, limit=2
                    )
                    if rule.name in c.rules
                ]
                # an earlier row of the file by the rule's similarity, as a stored record
                value = fuzzy_value(rule, values)
                earlier = seen.find(key, value)
            else:
                candidates = found.get(key, [])
                earlier = seen.get(key)
            if pending:
                if not candidates and earlier is None:
                    self._remember(seen, key if fuzzy is None else seen.add(key, value), number)
                continue
            # An earlier row of the file that was written (or is about to be) comes first:
            # its record may not be in the table yet, and either way the row repeats it.
            if earlier is not None:
                action = "skipped" if im.mode == "create" else "updated"
                duplicate = Duplicate(number, [rule.name], action, earlier[1], of_row=earlier[0])
                out[number] = (earlier[1], duplicate)
                continue
            if candidates:
                if len(candidates) > 1 and im.mode != "create":
                    out[number] = (
                        f"{len(candidates)} {im.entity.name} records are duplicates of this row by {rule.name}: "
                        "update them one by one, or match by --key"
                    )
                    continue
                ident, title = candidates[0]
                action = "skipped" if im.mode == "create" else "updated"
                out[number] = (ident, Duplicate(number, [rule.name], action, ident, title))
                continue
            self._remember(seen, key if fuzzy is None else seen.add(key, value), number)

    def _rule_key(self, rule: DuplicateRule, values: Mapping) -> str | None:
        record = {}
        for item in rule.match:
            value = values.get(item.field)
            if value is None:
                return None
            f = self.im.entity.fields[item.field]
            if item.normalize == "exact" and f.type not in ("lookup", "user"):
                try:
                    value = f.kind.coerce_input(
                        f, _typed(f, value), tz=self.im.tz, locale=self.im.locale
                    )
                except CoercionError:
                    return None  # the records service rejects the row
            elif not isinstance(value, str | int):
                value = _text(value)
            record[item.field] = value
        return self.key_of[rule.name](record)

    def _title(self, row) -> str:
        if self.title is None or len(row) < 3 or row[2] is None:
            return f"#{row[0]}"
        return self.title.format(row[2], self.im.locale, self.im.tz)

    def _written_id(self, duplicate) -> int | None:
        """The record an earlier row of the file created (matched by a rule or a key)."""
        if isinstance(duplicate, Duplicate):
            row = duplicate.of_row
        else:
            row = duplicate[1] if isinstance(duplicate, tuple) else None
        return self.created_rows.get(row)

    # -------------------------------------------------------------- writing
    def _create(self, unit, rows: list[tuple[int, list, dict]]) -> None:
        if not rows:
            return
        im = self.im
        # Writing behind, the batch's refusal would come later and undo the whole run (see
        # ``Importer.run``), so no savepoint: one would make each chunk wait for its writes.
        guard = contextlib.nullcontext() if unit.writing_behind else _savepoint(unit)
        try:
            with guard:
                outcome = im.records.bulk_create(
                    [values for _, _, values in rows], partial=True, batch_size=len(rows)
                )
        except ValidationFailed:
            # The database refused a batch (a rare race on a unique value): one by one, so
            # the good rows still go in and the bad one gets its own message.
            for number, cells, values in rows:
                self._create_one(unit, number, cells, values)
            return
        except Forbidden as exc:
            for number, _cells, _values in rows:
                self.reject(number, "", "", str(exc))
            return
        failures = outcome.failures
        ids = iter(outcome.ids)
        for index, (number, cells, values) in enumerate(rows):
            errors = failures.get(index)
            if errors:
                self._reject_errors(number, cells, errors)
                self._forget(number)
                continue
            ident = next(ids)
            self._created(number, values, ident)

    def _create_one(self, unit, number: int, cells: list, values: dict) -> None:
        try:
            try:
                with _savepoint(unit):
                    record = self.im.records.create(values)
            except sa.exc.IntegrityError as exc:  # refused when the savepoint wrote the row
                raise self.im.records.refusal(exc, unit) from None
        except ValidationFailed as exc:
            self._reject_errors(number, cells, exc.errors)
            self._forget(number)
            return
        except RecordError as exc:
            self.reject(number, "", "", str(exc))
            self._forget(number)
            return
        self._created(number, values, record["id"])

    def _created(self, number: int, values: dict, ident: int) -> None:
        self.created_rows[number] = ident
        self.result.created += 1
        for seen, key in self.row_keys.pop(number, ()):
            seen[key] = (number, ident)
        self.outcome(number, "created", values, ident)

    def _forget(self, number: int) -> None:
        """A row that was not written is no row later rows can repeat."""
        for seen, key in self.row_keys.pop(number, ()):
            seen.pop(key, None)

    def _remember(self, seen: dict, key, number: int) -> None:
        seen[key] = (number, None)
        self.row_keys.setdefault(number, []).append((seen, key))

    def _update(self, unit, number: int, cells: list, values: dict, record_id: int | None) -> None:
        if record_id is None:
            self.reject(number, "", "", "the row it repeats was not imported")
            return
        values = {k: v for k, v in values.items() if k != self.im.key}
        try:
            with _savepoint(unit):
                self.im.records.update(record_id, values)
        except ValidationFailed as exc:
            self._reject_errors(number, cells, exc.errors)
            return
        except (Forbidden, NotFound) as exc:
            self.reject(number, self._key_header(), self._key_value(cells), str(exc))
            return
        except RecordError as exc:
            self.reject(number, "", "", str(exc))
            return
        self.result.updated += 1
        self.outcome(number, "updated", values, record_id)

    def _reject_errors(self, number: int, cells: list, errors: Mapping[str, list[str]]) -> None:
        for name, messages in errors.items():
            column = self.im.by_field.get(name) if name != ALL_KEY else None
            value = ""
            if column is not None and column.index < len(cells):
                value = cells[column.index]
            header = column.header if column is not None else ("" if name == ALL_KEY else name)
            for message in messages:
                self.reject(number, header, value, message)


class _Similar:
    """The rows of an import by one fuzzy rule, by block key: an earlier row is found by
    the rule's similarity, as a stored record is (not by sharing the block, which only
    says two names begin alike).  It takes ``_Run``'s two dict operations on the entries
    ``add`` makes: set the (row, record id) once the row is written, and pop (forget)."""

    def __init__(self, rule: DuplicateRule):
        self.threshold = rule.fuzzy.fuzzy
        self.blocks: dict[str, list[list]] = {}  # block key -> [row, value, record id, key]

    def find(self, key: str, value: str | None) -> tuple[int, int | None] | None:
        """The earlier row most like ``value`` (among the block's newest, as for records)."""
        best, best_score = None, 0.0
        for entry in self.blocks.get(key, ())[-D.FUZZY_CANDIDATES :]:
            score = 1.0 if entry[1] == value else D.similarity(value, entry[1], self.threshold)
            if score is not None and score > best_score:
                best, best_score = entry, score
        return None if best is None else (best[0], best[2])

    def add(self, key: str, value: str | None) -> list:
        entry = [None, value, None, key]
        self.blocks.setdefault(key, []).append(entry)
        return entry

    def __setitem__(self, entry: list, seen: tuple[int, int | None]) -> None:
        entry[0], entry[2] = seen

    def pop(self, entry: list, default=None):
        block = self.blocks.get(entry[3], [])
        self.blocks[entry[3]] = [e for e in block if e is not entry]
        return default


def _pending(match) -> bool:
    """Whether a row's match is an earlier row of the chunk whose record is not written yet."""
    return isinstance(match, tuple) and match[0] is None


# ------------------------------------------------------------------------------ rejects
def write_rejects(path, rejects: Iterable[Reject], *, append: bool = False) -> int:
    """The rejected rows as CSV (row, column, value, message; UTF-8 with a BOM so that
    spreadsheets read it); returns the number of lines written."""
    count = 0
    exists = append and _nonempty(path)
    with open(
        path, "a" if append else "w", encoding="utf-8-sig" if not exists else "utf-8", newline=""
    ) as handle:
        writer = csv.writer(handle)
        if not exists:
            writer.writerow(REJECT_HEADERS)
        for reject in rejects:
            writer.writerow([reject.row, reject.column, reject.value, reject.message])
            count += 1
    return count


def _nonempty(path) -> bool:
    try:
        with open(path, "rb") as handle:
            return bool(handle.read(1))
    except OSError:
        return False


def rejects_csv(rejects: Iterable[Reject]) -> bytes:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REJECT_HEADERS)
    for reject in rejects:
        writer.writerow([reject.row, reject.column, reject.value, reject.message])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


__all__ = [
    "Column",
    "Duplicate",
    "ImportCancelled",
    "ImportProgress",
    "ImportRefused",
    "ImportResult",
    "Importer",
    "Preview",
    "Reject",
    "SourceError",
    "parse_mapping",
    "write_rejects",
]
