"""Queries over entity tables: the filter language's SQL back end, dotted paths through
lookups, sorting, keyset pages, full-text search and counts that stay fast.

Every leaf compiles to a two-valued SQL expression (never NULL), matching the Python
evaluator in ``metadata.evaluate`` so that a list, a rule and a report agree about which
records match.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..metadata import Catalog, Entity, Field
from ..metadata.filters import (
    All,
    AnyOf,
    Condition,
    FilterContext,
    FilterError,
    Not,
    date_range,
    datetime_range,
    resolve_path,
)
from .security import rollup_child, rollup_filter
from .tables import EntityTables, tables_for

MAX_PAGE = 1000


class BadCursor(ValueError):
    pass


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlBuilder:
    """Compiles typed filter trees for one entity, adding outer joins for dotted paths."""

    def __init__(
        self,
        catalog: Catalog,
        entity: Entity,
        tables: EntityTables,
        ctx: FilterContext,
        access=None,
    ):
        self.catalog = catalog
        self.entity = entity
        self.tables = tables
        self.ctx = ctx
        # With an ``Access``, every join carries the target's read scope: a path through a
        # lookup to a record the reader may not see reads as empty, in selects, filters,
        # sorts and groups alike.
        self.access = access
        self.base = tables[entity.name]
        self.joins: dict[tuple[str, ...], sa.FromClause] = {}
        self._from: sa.FromClause = self.base

    # -- columns and joins
    def table_for(self, lookups: tuple[Field, ...]) -> sa.FromClause:
        current: sa.FromClause = self.base
        key: tuple[str, ...] = ()
        for lookup in lookups:
            key = (*key, lookup.name)
            alias = self.joins.get(key)
            if alias is None:
                target = self.tables[lookup.params["to"]]
                # Aliases are immutable and costly to build (a proxy per column): one per
                # path and catalog version serves every query.
                alias = self.catalog.artifact(
                    ("join-alias", self.entity.name, key),
                    lambda t=target, k=key: t.alias(f"j_{'_'.join(k)}"),
                )
                on = alias.c.id == current.c[lookup.name]
                if self.access is not None:
                    scope = self.access.scope_condition(alias, lookup.params["to"], "read")
                    if scope is not None:
                        on = sa.and_(on, scope)
                self._from = self._from.outerjoin(alias, on)
                self.joins[key] = alias
            current = alias
        return current

    def column(self, path: str) -> sa.ColumnElement:
        field, lookups = resolve_path(self.entity, path, self.catalog.entity_of)
        if not field.stored:
            raise FilterError(f"{field.type} field {path!r} has no column", path)
        table = self.table_for(lookups)
        if field.type == "any_lookup":
            return table.c[f"{field.name}_id"]
        return self.value_column(table, lookups, field)

    def value_column(self, table: sa.FromClause, lookups, field: Field) -> sa.ColumnElement:
        """A field's value in a joined table: its column, or a rollup as the reader sees it."""
        if field.rollup is not None and self.access is not None:
            owner = self.catalog.entity(lookups[-1].params["to"]) if lookups else self.entity
            scoped = self.rollup_column(table, owner, field)
            if scoped is not None:
                return scoped
        return table.c[field.name]

    def rollup_column(self, table: sa.FromClause, entity: Entity, field: Field):
        """A rollup as this reader sees it: over the children they may read, when their
        read scope on the child entity is not ``all`` (a correlated subquery; the stored
        total would count records they may not see).  None: the stored column serves."""
        if self.access is None or field.name not in self.access.scoped_rollups(entity):
            return None
        child, via = rollup_child(self.catalog, entity, field)
        rows = self.tables[child.name].alias()
        inner = SqlBuilder(self.catalog, child, self.tables, self.ctx, self.access)
        inner._dialect = self._dialect
        inner.base = inner._from = rows
        where = [rows.c[via] == table.c.id]
        scope = self.access.scope_condition(rows, child.name, "read")
        if scope is not None:
            where.append(scope)
        rollup = field.rollup
        tree = rollup_filter(self.catalog, entity, field)
        if tree is not None:
            where.append(inner.compile(tree))
        if rollup.aggregate == "count":
            value = sa.func.count(rows.c.id)
        else:
            value = getattr(sa.func, rollup.aggregate)(rows.c[rollup.field])
        if rollup.aggregate in ("count", "sum"):
            value = sa.func.coalesce(value, 0)
        subquery = sa.select(value).select_from(inner.from_clause).where(*where).scalar_subquery()
        return sa.type_coerce(subquery, table.c[field.name].type)

    @property
    def from_clause(self) -> sa.FromClause:
        return self._from

    # -- filters
    def compile(self, node) -> sa.ColumnElement[bool]:
        if isinstance(node, Condition):
            return self._leaf(node)
        if isinstance(node, All):
            return sa.and_(sa.true(), *(self.compile(c) for c in node.children))
        if isinstance(node, AnyOf):
            return sa.or_(sa.false(), *(self.compile(c) for c in node.children))
        if isinstance(node, Not):
            return sa.not_(self.compile(node.child))
        raise TypeError(f"not a filter node: {node!r}")

    def _leaf(self, cond: Condition) -> sa.ColumnElement[bool]:
        field, op = cond.field, cond.op
        table = self.table_for(cond.lookups)
        value = self.ctx.bind(cond.value)
        if field.type == "many_to_many":
            return self._m2m(cond, table, value)
        if field.type == "any_lookup":
            return self._any_lookup(cond, table, value)
        col = self.value_column(table, cond.lookups, field)
        present = col.is_not(None)
        json_array = field.kind.json_type == "array"
        if field.kind.json_type in ("array", "object"):  # None may be stored as JSON null
            present = sa.and_(present, self._json_type(col) != "null")
        if op == "is_empty":
            return sa.or_(col.is_(None), self._json_empty(col)) if json_array else sa.not_(present)
        if op == "is_not_empty":
            return sa.and_(present, sa.not_(self._json_empty(col))) if json_array else present
        if json_array:
            hit = self._json_contains_any(col, value)
            return (
                sa.and_(present, hit) if op == "contains" else sa.or_(col.is_(None), sa.not_(hit))
            )
        if op == "eq":
            return sa.and_(present, col == value)
        if op == "ne":
            return sa.or_(col.is_(None), col != value)
        if op in ("in", "not_in"):
            # NULL in a list (current_user with nobody asking) would make the leaf NULL
            value = [v for v in value if v is not None]
        if op == "in":
            return sa.and_(present, col.in_(value)) if value else sa.false()
        if op == "not_in":
            return sa.or_(col.is_(None), col.not_in(value)) if value else sa.true()
        if op in ("lt", "le", "gt", "ge"):
            compare = {
                "lt": col < value,
                "le": col <= value,
                "gt": col > value,
                "ge": col >= value,
            }[op]
            return sa.and_(present, compare)
        if op == "between":
            return sa.and_(present, col >= value[0], col <= value[1])
        if op in ("contains", "starts_with"):
            pattern = _like_escape(value.lower())
            pattern = f"%{pattern}%" if op == "contains" else f"{pattern}%"
            return sa.and_(present, sa.func.lower(col).like(pattern, escape="\\"))
        # relative dates, as half-open ranges
        if field.type == "datetime" or (
            field.type == "formula" and field.params.get("result") == "datetime"
        ):
            start, end = datetime_range(op, value, self.ctx.current_now(), self.ctx.tz)
        else:
            start, end = date_range(op, value, self.ctx.today())
        parts = [present]
        if start is not None:
            parts.append(col >= start)
        if end is not None:
            parts.append(col < end)
        return sa.and_(*parts)

    def _json_type(self, col):
        return (
            sa.func.jsonb_typeof(col) if self._dialect == "postgresql" else sa.func.json_type(col)
        )

    def _json_empty(self, col):
        """JSON null or an empty array (the length of a scalar is an error on PostgreSQL)."""
        kind = self._json_type(col)
        length = (
            sa.func.jsonb_array_length(col)
            if self._dialect == "postgresql"
            else sa.func.json_array_length(col)
        )
        return sa.or_(kind == "null", sa.case((kind == "array", length), else_=-1) == 0)

    def _json_contains_any(self, col, values):
        values = list(values or ())
        if not values:
            return sa.false()
        if self._dialect == "postgresql":
            return col.op("?|", is_comparison=True)(
                sa.cast(sa.literal(values, sa.ARRAY(sa.Text)), sa.ARRAY(sa.Text))
            )
        each = sa.func.json_each(col).table_valued("value")
        return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value.in_(values)))

    def _m2m(self, cond: Condition, table, value):
        link = self.tables.link(cond.field.entity, cond.field.name)
        linked = sa.select(link.c.source_id).where(link.c.source_id == table.c.id)
        if cond.op == "contains":
            return sa.exists(linked.where(link.c.target_id.in_(list(value))))
        if cond.op == "is_empty":
            return sa.not_(sa.exists(linked))
        return sa.exists(linked)

    def _any_lookup(self, cond: Condition, table, value):
        entity_col = table.c[f"{cond.field.name}_entity"]
        id_col = table.c[f"{cond.field.name}_id"]
        if cond.op == "is_empty":
            return id_col.is_(None)
        if cond.op == "is_not_empty":
            return id_col.is_not(None)
        if cond.op == "in":  # any of several records: one IN list per entity
            by_entity: dict[str, list] = {}
            for each in value:
                by_entity.setdefault(each["entity"], []).append(each["id"])
            return sa.or_(
                sa.false(),
                *(
                    sa.and_(id_col.is_not(None), entity_col == name, id_col.in_(ids))
                    for name, ids in by_entity.items()
                ),
            )
        same = sa.and_(id_col.is_not(None), entity_col == value["entity"], id_col == value["id"])
        return same if cond.op == "eq" else sa.not_(same)

    _dialect = "sqlite"


def builder(
    catalog: Catalog, entity: Entity, ctx: FilterContext, dialect: str, access=None
) -> SqlBuilder:
    """A builder for one read; with ``access``, joined paths follow the reader's scopes."""
    b = SqlBuilder(catalog, entity, tables_for(catalog), ctx, access)
    b._dialect = dialect
    return b


# ------------------------------------------------------------------------------ sorting
class SortSpec(list):
    """(path, direction) pairs, and the entity they sort: a cursor is bound to both."""

    def __init__(self, items=(), entity: str = ""):
        super().__init__(items)
        self.entity = entity


def normalize_sort(entity: Entity, catalog: Catalog, sort) -> SortSpec:
    """Sort spec (``[["close_date", "asc"]]``, ``"-amount,name"``) as (path, dir) pairs."""
    if not sort:
        return SortSpec((), entity.name)
    if isinstance(sort, str):
        items = []
        for part in sort.split(","):
            part = part.strip()
            if part:
                items.append((part[1:], "desc") if part.startswith("-") else (part, "asc"))
        sort = items
    result = SortSpec((), entity.name)
    for item in sort:
        if isinstance(item, str):
            path, direction = item, "asc"
        elif isinstance(item, list | tuple) and len(item) == 2:
            path, direction = item
        else:
            raise FilterError("sort items are field names or [field, asc|desc]")
        if direction not in ("asc", "desc"):
            raise FilterError(f"sort direction {direction!r} is not asc or desc", str(path))
        field, _ = resolve_path(entity, path, catalog.entity_of)
        if not field.stored or field.kind.json_type in ("array", "object"):
            raise FilterError(f"cannot sort by {field.type} field", path)
        result.append((path, direction))
        if path == "id":
            break  # ids are unique: nothing after them changes the order
    return result


def _encode(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> list:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise BadCursor("cursor is not valid") from None
    if not isinstance(values, list) or len(values) < 2:
        raise BadCursor("cursor is not valid")
    return values


def sort_signature(sort: list[tuple[str, str]]) -> str:
    key = (getattr(sort, "entity", ""), [tuple(item) for item in sort])
    return hashlib.sha1(repr(key).encode()).hexdigest()[:8]


@dataclass
class Keyset:
    """Where the next page starts: the last row's sort values and id."""

    sort: list[tuple[str, str]]
    values: list[Any]
    last_id: int

    def encode(self, fields: list[Field]) -> str:
        encoded = [
            f.kind.to_json(f, v) if v is not None else None for f, v in zip(fields, self.values)
        ]
        return _encode([sort_signature(self.sort), *encoded, self.last_id])

    @classmethod
    def decode(cls, cursor: str, sort: list[tuple[str, str]], fields: list[Field]) -> Keyset:
        values = _decode(cursor)
        if values[0] != sort_signature(sort) or len(values) != len(sort) + 2:
            raise BadCursor("cursor belongs to another sort order")
        last_id = values[-1]
        if type(last_id) is not int:
            raise BadCursor("cursor is not valid")
        typed = []
        for field, raw in zip(fields, values[1:-1]):
            try:
                typed.append(
                    None
                    if raw is None
                    else field.kind.python_value(field, field.kind.coerce(field, raw))
                )
            except (ValueError, TypeError):
                raise BadCursor("cursor is not valid") from None
        return cls(sort, typed, last_id)


def keyset_condition(
    columns: list[sa.ColumnElement], sort: list[tuple[str, str]], id_col, keyset: Keyset
):
    """Rows after the keyset in (sort..., id) order, with empty values sorting last."""
    id_after = (
        id_col > keyset.last_id
        if (sort[-1][1] if sort else "asc") == "asc"
        else id_col < keyset.last_id
    )
    if not sort:
        return id_after
    # Lexicographic expansion; NULLs sort last in both directions.
    clauses = []
    equal_prefix: list = []
    for col, (_, direction), value in zip(columns, sort, keyset.values):
        if value is None:
            # After NULL only more NULLs (in this column) can follow.
            equal_prefix.append(col.is_(None))
            continue
        value = sa.literal(value, col.type)  # typed: a bare True/False cannot be compared
        after = col > value if direction == "asc" else col < value
        clauses.append(sa.and_(*equal_prefix, sa.or_(after, col.is_(None))))
        equal_prefix.append(col == value)
    clauses.append(sa.and_(*equal_prefix, id_after))
    return sa.or_(*clauses)


def order_by(columns, sort, id_col):
    clauses = []
    for col, (_, direction) in zip(columns, sort):
        clauses.append(col.asc().nulls_last() if direction == "asc" else col.desc().nulls_last())
    last = sort[-1][1] if sort else "asc"
    clauses.append(id_col.asc() if last == "asc" else id_col.desc())
    return clauses


# ------------------------------------------------------------------------------ search
_WORD = re.compile(r"\w+", re.UNICODE)


def search_fields(entity: Entity) -> list[Field]:
    return [f for f in entity.fields.values() if f.searchable and f.stored]


def fts_table_name(entity: Entity) -> str:
    return f"{entity.name}__fts"


def search_words(text: str | None) -> list[str]:
    """The words a search matches (as prefixes): at most eight."""
    return _WORD.findall(text or "")[:8]


def _fts_match(words: list[str], columns: list[str] | None = None) -> str:
    """An FTS5 query: every word as a quoted prefix, in the named columns (else all)."""
    match = " ".join('"' + w.replace('"', "") + '"*' for w in words)
    return f"{{{' '.join(columns)}}} : {match}" if columns is not None else match


def search_condition(
    entity: Entity, table, text: str, dialect: str, exclude: set[str] = frozenset()
):
    words = search_words(text)
    fields = search_fields(entity)
    if not words:
        return sa.true()
    if not fields:
        raise FilterError(f"{entity.name} has no searchable fields")
    if exclude and any(f.name in exclude for f in fields):
        # The user may not read some indexed fields: match only the ones they may read.
        visible = [f for f in fields if f.name not in exclude]
        if not visible:
            return sa.false()
        if dialect != "postgresql":
            fts = sa.table(fts_table_name(entity), sa.column("rowid"))
            return table.c.id.in_(
                sa.select(fts.c.rowid).where(
                    sa.text(f'"{fts_table_name(entity)}" MATCH :fts_query').bindparams(
                        fts_query=_fts_match(words, [f.name for f in visible])
                    )
                )
            )
        return sa.and_(
            *(
                sa.or_(
                    *(
                        sa.func.lower(table.c[f.name]).like(
                            f"%{_like_escape(w.lower())}%", escape="\\"
                        )
                        for f in visible
                    )
                )
                for w in words
            )
        )
    if dialect == "postgresql":
        return tsvector_expression(table, fields).op("@@")(_tsquery(words))
    fts = sa.table(fts_table_name(entity), sa.column("rowid"))
    return table.c.id.in_(
        sa.select(fts.c.rowid).where(
            sa.text(f'"{fts_table_name(entity)}" MATCH :fts_query').bindparams(
                fts_query=_fts_match(words)
            )
        )
    )


def _tsquery(words: list[str]):
    query = " & ".join(f"{w.lower()}:*" for w in words)
    return sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), query)


#: How much more a match in the record's title weighs than one in another field.
TITLE_WEIGHT = 10.0


def ranked_search(
    entity: Entity,
    table,
    text: str,
    dialect: str,
    exclude: set[str] = frozenset(),
    title: str | None = None,
):
    """``(condition, rank)``: the records ``search_condition`` matches, and how well each
    matches (higher is better) by the indexed fields the reader may read, a match in the
    ``title`` field weighing ``TITLE_WEIGHT`` times more: BM25 of the FTS5 table on
    SQLite, ``ts_rank`` on PostgreSQL (the title's words weighted A, the others D).  The
    SQLite condition joins the FTS table's ranked matches in (``bm25()`` only runs in a
    query of the table itself)."""
    words = search_words(text)
    if not words:
        raise FilterError("nothing to search for")
    fields = search_fields(entity)
    visible = [f for f in fields if f.name not in exclude]
    if not visible:
        raise FilterError(f"{entity.name} has no searchable fields")
    if dialect == "postgresql":
        condition = search_condition(entity, table, text, dialect, exclude)
        others = [f for f in visible if f.name != title]
        vector = tsvector_expression(table, others) if others else None
        if len(others) < len(visible):
            titled = sa.func.setweight(
                tsvector_expression(table, [entity.fields[title]]), sa.literal_column("'A'")
            )
            vector = titled if vector is None else titled.op("||")(vector)
        return condition, sa.func.ts_rank(vector, _tsquery(words))
    name = fts_table_name(entity)
    fts = sa.table(name, sa.column("rowid"))
    columns = [f.name for f in visible] if len(visible) < len(fields) else None
    weights = [TITLE_WEIGHT if f.name == title else 1.0 for f in fields]
    ranked = (
        sa.select(
            fts.c.rowid.label("rowid"),
            (-sa.func.bm25(sa.literal_column(f'"{name}"'), *weights)).label("search_rank"),
        )
        .where(
            sa.text(f'"{name}" MATCH :fts_rank_query').bindparams(
                fts_rank_query=_fts_match(words, columns)
            )
        )
        .subquery(f"{name}_ranked")
    )
    return table.c.id == ranked.c.rowid, ranked.c.search_rank


#: ASCII punctuation, which PostgreSQL's search text has turned into spaces (a literal in
#: the index expression; no quote or backslash in it).
PG_SEPARATORS = "[!-/:-@[-`{-~]+"


def tsvector_expression(table, fields: list[Field]):
    """The searched text of a row as a tsvector.  PostgreSQL's parser keeps an email address,
    a host name or a hyphenated word as one token (``a@acme-corp.com``), where SQLite's
    FTS5 (unicode61) splits at every punctuation mark; punctuation becomes spaces first, so
    ``acme`` or ``acme-corp`` find the address on both databases."""
    parts = [sa.func.coalesce(table.c[f.name], "") for f in fields]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.op("||")(" ").op("||")(part)
    spaced = sa.func.regexp_replace(
        joined,
        sa.literal_column(f"'{PG_SEPARATORS}'"),
        sa.literal_column("' '"),
        sa.literal_column("'g'"),
    )
    return sa.func.to_tsvector(sa.literal_column("'simple'::regconfig"), spaced)
