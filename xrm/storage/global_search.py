"""Global search: one text looked up in every entity a reader may read, ranked and grouped
by entity, each hit with its title and a highlighted snippet of the field that matched;
and the records the reader opened lately.

Everything goes through the reader's records services, so the answer holds exactly what a
list would show them: the row scope is a condition of each entity's statement, joined
titles carry their target's scope (``SqlBuilder``), and fields hidden from the reader are
neither matched (the FTS5 column filter, or the visible columns on PostgreSQL) nor shown.
Each entity costs one statement: its matches ranked in SQL (``query.ranked_search``:
BM25 on SQLite, ``ts_rank`` on PostgreSQL), best first, at most ``limit + 1`` rows.  The
snippet is cut in Python from the few rows returned.

Recent records are kept per user in ``xrm_recent_record``, written when a record's page
opens (``remember``), at most ``RECENT_KEEP`` per user.  The write is best-effort: it
waits a moment for the write lock and gives up quietly rather than slow or fail the page.
"""

from __future__ import annotations

import html
import logging
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..metadata import Catalog, Entity, Field
from ..metadata.filters import FilterError, resolve_path
from . import query as Q
from . import tables as T
from .database import WRITE

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 5  # hits per entity
MAX_LIMIT = 50
MAX_TEXT = 200  # characters of the search text looked at
RECENT_KEEP = 50  # recent records kept per user
RECENT_LIMIT = 10  # recent records shown
SNIPPET_WIDTH = 90  # characters of a snippet, ellipses aside
_LOCK_WAIT_MS = 200  # how long remembering a view waits for the write lock

RecordsOf = Callable[[str], "object"]  # entity name -> the reader's Records service


class SearchError(ValueError):
    """A search that cannot run as asked (an unknown entity, a bad limit)."""

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Snippet:
    """Some text of one field with the matched words marked: ``marks`` are ``(start, end)``
    offsets into ``text``."""

    field: str
    text: str
    marks: tuple[tuple[int, int], ...]

    def parts(self) -> list[tuple[str, bool]]:
        """``[(text, marked), ...]`` in order, for templates to escape and mark up."""
        return split_marks(self.text, self.marks)


@dataclass(frozen=True)
class Hit:
    entity: str
    id: int
    title: str
    title_marks: tuple[tuple[int, int], ...] = ()
    rank: float = 0.0
    snippet: Snippet | None = None

    def title_parts(self) -> list[tuple[str, bool]]:
        return split_marks(self.title, self.title_marks)


@dataclass(frozen=True)
class Group:
    """The hits of one entity, best first; ``more`` says there are others beyond them."""

    entity: str
    hits: tuple[Hit, ...]
    more: bool


@dataclass(frozen=True)
class Results:
    text: str
    words: tuple[str, ...]
    groups: tuple[Group, ...]

    @property
    def count(self) -> int:
        return sum(len(g.hits) for g in self.groups)


# ------------------------------------------------------------------------------ titles
def title_path(catalog: Catalog, entity: Entity, depth: int = 0) -> str | None:
    """The path that names a record: its title field, through a lookup's title if the
    title is a lookup (at most two steps); None when it has no usable title."""
    name = entity.title
    if not name or name not in entity.fields:
        return None
    field = entity.fields[name]
    if field.type == "lookup" and depth < 2:
        target = catalog.entity_of(field.params["to"])
        inner = title_path(catalog, target, depth + 1) if target else None
        return f"{name}.{inner}" if inner else name
    if not field.stored or field.kind.json_type in ("array", "object"):
        return None
    return name


def _readable_title(records, path: str | None) -> str | None:
    """The title path if the reader may read every step of it, else None."""
    if path is None:
        return None
    try:
        records._check_reads(None, [path])
    except FilterError:
        return None
    return path


# ------------------------------------------------------------------------------ marks
def _fold(text: str) -> str:
    """What the indexes compare: lower case, accents dropped (FTS5 ``remove_diacritics``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def find_marks(text: str, words: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Where the words match in ``text``: each word of the text that starts with a
    searched word, as far as that word goes."""
    folded = [_fold(w) for w in words if w]
    if not text or not folded:
        return ()
    marks = []
    for match in Q._WORD.finditer(text):
        token = match.group()
        best = 0
        for word in folded:
            if _fold(token).startswith(word):
                best = max(best, _prefix_length(token, word))
        if best:
            marks.append((match.start(), match.start() + best))
    return tuple(marks)


def _prefix_length(token: str, folded_word: str) -> int:
    """How many characters of ``token`` the folded prefix ``folded_word`` covers."""
    length = 0
    for index, char in enumerate(token, 1):
        length += len(_fold(char))
        if length >= len(folded_word):
            return index
    return len(token)


def split_marks(text: str, marks: Iterable[tuple[int, int]]) -> list[tuple[str, bool]]:
    parts: list[tuple[str, bool]] = []
    at = 0
    for start, end in marks:
        if start > at:
            parts.append((text[at:start], False))
        parts.append((text[start:end], True))
        at = end
    if at < len(text):
        parts.append((text[at:], False))
    return parts


def cut_snippet(text: str, marks: tuple[tuple[int, int], ...], width: int = SNIPPET_WIDTH):
    """``(text, marks)`` of at most ``width`` characters around the first mark, on word
    boundaries where it can, with an ellipsis where text was cut."""
    text = " ".join(text.split())  # one line: newlines and runs of spaces as one space
    if not marks or len(text) <= width:
        return text, marks
    first = marks[0][0]
    start = max(0, first - width // 3)
    if start:
        space = text.rfind(" ", 0, start + 1)
        start = space + 1 if space >= 0 and first - space < width // 2 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start + width // 2, end)
        end = space if space > 0 else end
    lead = "…" if start else ""
    tail = "…" if end < len(text) else ""
    shift = len(lead) - start
    kept = tuple(
        (max(s, start) + shift, min(e, end) + shift) for s, e in marks if e > start and s < end
    )
    return lead + text[start:end] + tail, kept


def _plain(field: Field, value, locale: str, tz: str) -> str:
    """A searched field's value as text to show: rich text without its markup, others as
    the field registry formats them for the reader."""
    if value is None:
        return ""
    if field.type == "rich_text":
        import nh3

        return html.unescape(nh3.clean(str(value), tags=set()))
    try:
        return field.format(value, locale, tz)
    except (TypeError, ValueError, ArithmeticError, KeyError):
        return str(value)


def _snippet(fields: Sequence[Field], row, words, locale: str, tz: str, skip: str | None):
    """The first searched field (the title aside) where a word matches, cut around it."""
    for f in fields:
        if f.name == skip:
            continue
        value = row._mapping.get(f"_s_{f.name}")
        shown = _plain(f, value, locale, tz)
        marks = find_marks(shown, words)
        if not marks and value is not None and str(value) != shown:
            shown = str(value)  # a phone shown grouped, matched as stored
            marks = find_marks(shown, words)
        if marks:
            text, marks = cut_snippet(shown, marks)
            return Snippet(f.name, text, marks)
    return None


# ------------------------------------------------------------------------------ search
def searchable_entities(catalog: Catalog, records_of: RecordsOf) -> list[Entity]:
    """Entities with searchable fields that the reader may read (in catalog order)."""
    out = []
    for entity in catalog.entities.values():
        if not Q.search_fields(entity):
            continue
        if _may_read(records_of(entity.name)):
            out.append(entity)
    return out


def _may_read(records) -> bool:
    access = records.access
    return access is None or access.scope_of(records.entity.name, "read") != "none"


def search(
    catalog: Catalog,
    records_of: RecordsOf,
    text: str,
    *,
    entities: Sequence[str] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Results:
    """The reader's best ``limit`` matches of ``text`` in each entity (``entities``: only
    these), grouped by entity; groups whose best hit names every word in its title come
    first, then by their best rank."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SearchError(f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
    text = (text or "").strip()[:MAX_TEXT]
    words = tuple(Q.search_words(text))
    allowed = searchable_entities(catalog, records_of)
    if entities:
        by_name = {e.name: e for e in allowed}
        chosen = []
        for name in dict.fromkeys(entities):
            if name not in by_name:
                raise SearchError(_unknown(catalog, records_of, name, by_name), "entities")
            chosen.append(by_name[name])
        allowed = chosen
    if not words:
        return Results(text, words, ())
    groups = []
    services = [records_of(entity.name) for entity in allowed]
    if not services:
        return Results(text, words, ())
    with services[0]._reading() as conn:  # one connection for every entity's statement
        for entity, records in zip(allowed, services, strict=True):
            group = _search_entity(conn, catalog, records, entity, text, words, limit)
            if group is not None:
                groups.append(group)
    groups.sort(key=lambda g: (not _names_all(g.hits[0], words), -g.hits[0].rank))
    return Results(text, words, tuple(groups))


def _unknown(catalog: Catalog, records_of: RecordsOf, name: str, searchable) -> str:
    from ..metadata.problems import did_you_mean

    entity = catalog.entity_of(name)
    if entity is not None and _may_read(records_of(name)) and not Q.search_fields(entity):
        return f"{name} has no searchable fields"
    return f"unknown entity {name!r}{did_you_mean(name, searchable)}"


def _names_all(hit: Hit, words: Sequence[str]) -> bool:
    """Whether every searched word starts a word of the hit's title."""
    tokens = [_fold(t) for t in Q._WORD.findall(hit.title)]
    return all(any(t.startswith(_fold(w)) for t in tokens) for w in words)


def _search_entity(conn, catalog, records, entity: Entity, text: str, words, limit: int):
    table = records.table
    hidden = records.access.hidden(entity) if records.access is not None else set()
    fields = [f for f in Q.search_fields(entity) if f.name not in hidden]
    if not fields:
        return None
    builder = records.builder()
    path = _readable_title(records, title_path(catalog, entity))
    condition, rank = Q.ranked_search(
        entity, table, text, records.dialect, hidden, title=_title_field(entity, path)
    )
    columns = [table.c.id.label("id")]
    if path is not None:
        columns.append(builder.column(path).label("_title"))
    columns += [table.c[f.name].label(f"_s_{f.name}") for f in fields]
    ranking = rank.label("_rank")
    columns.append(ranking)
    where = [condition]
    scope = records.scope(builder)
    if scope is not None:
        where.append(scope)
    statement = (
        sa.select(*columns)
        .select_from(builder.from_clause)
        .where(*where)
        .order_by(ranking.desc(), table.c.id.desc())
        .limit(limit + 1)
    )
    rows = conn.execute(statement).all()
    if not rows:
        return None
    title_field = resolve_path(entity, path, catalog.entity_of)[0] if path else None
    hits = []
    for row in rows[:limit]:
        title = _title_text(title_field, row._mapping.get("_title"), row.id, records)
        hits.append(
            Hit(
                entity=entity.name,
                id=row.id,
                title=title,
                title_marks=find_marks(title, words),
                rank=float(row._rank or 0.0),
                snippet=_snippet(
                    fields, row, words, records.locale, records.tz, _title_field(entity, path)
                ),
            )
        )
    # SQL ranked the title's field above the others; a title made by a formula of other
    # fields is only known here: hits naming every word in their title go first.
    hits.sort(key=lambda h: not _names_all(h, words))
    return Group(entity.name, tuple(hits), len(rows) > limit)


def _title_field(entity: Entity, path: str | None) -> str | None:
    """The searched field the title shows (its snippet would repeat the title)."""
    return path if path is not None and "." not in path else None


def _title_text(field: Field | None, value, ident: int, records) -> str:
    if field is None or value is None or value == "":
        return f"#{ident}"
    return _plain(field, value, records.locale, records.tz) or f"#{ident}"


# ------------------------------------------------------------------------------ recent
def remember(store, user_id: int | None, entity: str, record_id: int) -> None:
    """Note that ``user_id`` opened a record, keeping their ``RECENT_KEEP`` latest.  Waits
    at most a moment for the write lock; a busy database skips the note."""
    if user_id is None:
        return
    table = T.recent_records
    now = store.clock.now()
    values = {"user_id": user_id, "entity": entity, "record_id": record_id, "viewed_at": now}
    newest = (
        sa.select(table.c.viewed_at)
        .where(table.c.user_id == user_id)
        .order_by(table.c.viewed_at.desc())
        .offset(RECENT_KEEP - 1)
        .limit(1)
        .scalar_subquery()
    )
    trim = table.delete().where(table.c.user_id == user_id, table.c.viewed_at < newest)
    sqlite = store.engine.dialect.name == "sqlite"
    if sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    upsert = insert(table).values(**values)
    upsert = upsert.on_conflict_do_update(
        index_elements=["user_id", "entity", "record_id"], set_={"viewed_at": now}
    )
    try:
        with store.engine.connect() as conn:
            # The driver's own connection: a pragma needs no transaction (and must not
            # open the write transaction it is there to bound).
            driver = conn.connection.driver_connection if sqlite else None
            if driver is not None:
                driver.execute(f"PRAGMA busy_timeout={_LOCK_WAIT_MS}")
            try:
                with conn.execution_options(**WRITE).begin():
                    if driver is None:
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_WAIT_MS}ms'")
                    conn.execute(upsert)
                    conn.execute(trim)
            finally:
                if driver is not None:
                    driver.execute("PRAGMA busy_timeout=30000")
    except sa.exc.OperationalError as exc:  # locked or timed out: the note is not worth a wait
        log.info("recent record not noted: %s", exc)


def recent(
    catalog: Catalog, records_of: RecordsOf, store, user_id: int | None, limit: int = RECENT_LIMIT
) -> list[Hit]:
    """The records ``user_id`` opened lately, newest first, as far as they may still read
    them (one statement per entity among them)."""
    if user_id is None:
        return []
    table = T.recent_records
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.entity, table.c.record_id)
            .where(table.c.user_id == user_id)
            .order_by(table.c.viewed_at.desc(), table.c.record_id.desc())
            .limit(RECENT_KEEP)
        ).all()
    wanted: dict[str, list[int]] = {}
    for row in rows:
        wanted.setdefault(row.entity, []).append(row.record_id)
    found: dict[tuple[str, int], Hit] = {}
    for name, ids in wanted.items():
        entity = catalog.entity_of(name)
        if entity is None:
            continue
        records = records_of(name)
        if not _may_read(records):
            continue
        for hit in _titles(catalog, records, entity, ids):
            found[(name, hit.id)] = hit
    ordered = [found[(r.entity, r.record_id)] for r in rows if (r.entity, r.record_id) in found]
    return ordered[:limit]


def _titles(catalog, records, entity: Entity, ids: list[int]) -> list[Hit]:
    table = records.table
    builder = records.builder()
    path = _readable_title(records, title_path(catalog, entity))
    columns = [table.c.id.label("id")]
    if path is not None:
        columns.append(builder.column(path).label("_title"))
    where = [table.c.id.in_(ids)]
    scope = records.scope(builder)
    if scope is not None:
        where.append(scope)
    statement = sa.select(*columns).select_from(builder.from_clause).where(*where)
    with records._reading() as conn:
        rows = conn.execute(statement).all()
    title_field = resolve_path(entity, path, catalog.entity_of)[0] if path else None
    return [
        Hit(
            entity.name,
            row.id,
            _title_text(title_field, row._mapping.get("_title"), row.id, records),
        )
        for row in rows
    ]
