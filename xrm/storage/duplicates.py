"""Duplicate detection in the database: the hidden key columns of an entity's duplicate
rules, kept by the records service's write path, filled for existing rows when a rule is
added, and the search for the likely duplicates of a record as one reader sees them.

Every rule has one indexed column (``DuplicateRule.column``).  An exact rule stores its
whole key there, so finding its matches is one index lookup.  A fuzzy rule stores a block
key (its exact parts and the first characters of the fuzzy value): the rows sharing it are
narrowed in SQL and scored in Python by ``difflib.SequenceMatcher``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..metadata import Catalog, CoercionError, Entity
from ..metadata.duplicates import DuplicateRule, fuzzy_value, key_function, rule_key

if TYPE_CHECKING:  # pragma: no cover
    from .records import Records
    from .tables import EntityTables

#: Rows sharing a fuzzy rule's block key that are scored, at most (the newest first).
FUZZY_CANDIDATES = 2000
#: Rows read and written at a time when keys are filled for existing records.
FILL_BATCH = 1000


class DuplicateKeys:
    """The key columns of one entity's rules and how a record fills them (per catalog)."""

    def __init__(self, entity: Entity):
        self.rules: tuple[DuplicateRule, ...] = entity.duplicates
        self.fields = frozenset(name for rule in self.rules for name in rule.fields)
        # each rule's column and key function, worked out once
        self._columns = [(rule.column, rule, key_function(rule)) for rule in self.rules]

    def all(self, record: Mapping) -> dict[str, str | None]:
        return {column: key(record) for column, _rule, key in self._columns}

    def changed(self, record: Mapping, names: Iterable[str]) -> dict[str, str | None]:
        """The keys of the rules over any of the changed fields."""
        names = set(names)
        return {
            column: key(record)
            for column, rule, key in self._columns
            if names.intersection(rule.fields)
        }


def keys_for(catalog: Catalog, entity: Entity) -> DuplicateKeys:
    return catalog.artifact(("duplicate-keys", entity.name), lambda: DuplicateKeys(entity))


# ------------------------------------------------------------------------ filling keys
def columns_to_fill(tables: EntityTables, added: Iterable[tuple[str, str]]) -> list:
    """Of the columns a schema plan adds to existing tables, the duplicate keys: their
    rows need keys computed (a new table has no rows)."""
    out = []
    for table_name, column in added:
        entity = tables.catalog.entity_of(table_name)
        if entity is not None and any(r.column == column for r in entity.duplicates):
            out.append((table_name, column))
    return out


def fill(connection: sa.Connection, tables: EntityTables, table_name: str, column: str) -> int:
    """Compute a rule's key for every existing row (inside the schema change's
    transaction, in batches by id); returns the number of rows given a key."""
    entity = tables.catalog.entity_of(table_name)
    rule = next(r for r in entity.duplicates if r.column == column)
    table = tables[entity.name]
    columns = [table.c.id, *(table.c[name] for name in rule.fields)]
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("_id"))
        .values({column: sa.bindparam("_key")})
    )
    last, filled = 0, 0
    while True:
        rows = connection.execute(
            sa.select(*columns).where(table.c.id > last).order_by(table.c.id).limit(FILL_BATCH)
        ).all()
        if not rows:
            return filled
        last = rows[-1][0]
        keyed = []
        for row in rows:
            key = rule_key(rule, dict(zip(rule.fields, row[1:], strict=True)))
            if key is not None:
                keyed.append({"_id": row[0], "_key": key})
        if keyed:
            connection.execute(update, keyed)
            filled += len(keyed)


# ------------------------------------------------------------------------------ finding
@dataclass
class Candidate:
    """A record that is likely the same as the one being written."""

    id: int
    title: str
    score: float
    rules: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "score": round(self.score, 3),
            "rules": list(self.rules),
            "values": dict(self.values),
        }


def coerce_values(entity: Entity, values: Mapping[str, Any], names: Iterable[str]) -> dict:
    """The values of the named fields as stored values; text is parsed the way a form's
    or a query string's would be.  A value that does not parse takes part in no rule,
    unless it is text for a text field (normalizers read text as it comes)."""
    out = {}
    for name in names:
        if name not in values:
            continue
        f = entity.fields[name]
        value = values[name]
        try:
            out[name] = f.kind.parse_text(f, value) if isinstance(value, str) else f.coerce(value)
        except (CoercionError, ValueError, TypeError, ArithmeticError):
            # Text the field refuses (a phone in another region's form, an email not yet
            # complete) still means something to its normalizer.
            if isinstance(value, str) and f.kind.json_type == "string":
                out[name] = value
    return out


def usable_rules(records: Records) -> tuple[DuplicateRule, ...]:
    """The rules whose every field the reader may read: a match on a hidden field would
    tell them what it holds."""
    rules = records.entity.duplicates
    if not rules or records.access is None:
        return rules
    if records.access.scope_of(records.entity.name, "read") == "none":
        return ()
    hidden = records.access.hidden(records.entity)
    return tuple(rule for rule in rules if not hidden.intersection(rule.fields))


def find(
    records: Records,
    values: Mapping[str, Any],
    *,
    exclude_id: int | None = None,
    limit: int = 10,
) -> list[Candidate]:
    """Records of the entity that match ``values`` by any rule, best first, among the
    records the reader may read."""
    rules = usable_rules(records)
    if not rules:
        return []
    entity, table = records.entity, records.table
    given = coerce_values(entity, values, {n for rule in rules for n in rule.fields})
    keyed = [(rule, rule_key(rule, given)) for rule in rules]
    keyed = [(rule, key) for rule, key in keyed if key is not None]
    if not keyed:
        return []
    builder = records.builder()
    scope = records.scope(builder)
    title = entity.fields.get(entity.title) if entity.title else None
    hidden = records.access.hidden(entity) if records.access else set()
    if title is not None and (
        not title.stored or title.name in hidden or title.type == "any_lookup"
    ):
        title = None
    found: dict[int, Candidate] = {}
    with records._reading() as conn:
        for rule, key in keyed:
            names = list(dict.fromkeys([*rule.fields, *([title.name] if title else [])]))
            statement = (
                sa.select(table.c.id, *(table.c[n] for n in names))
                .select_from(builder.from_clause)
                .where(table.c[rule.column] == key)
            )
            if scope is not None:
                statement = statement.where(scope)
            if exclude_id is not None:
                statement = statement.where(table.c.id != exclude_id)
            fuzzy = rule.fuzzy
            if fuzzy is None:
                statement = statement.order_by(table.c.id).limit(limit)
            else:
                statement = statement.order_by(table.c.id.desc()).limit(FUZZY_CANDIDATES)
                wanted = fuzzy_value(rule, given)
            for row in conn.execute(statement):
                record = dict(zip(names, row[1:], strict=True))
                score = 1.0
                if fuzzy is not None:
                    score = similarity(wanted, fuzzy_value(rule, record), fuzzy.fuzzy)
                    if score is None:
                        continue
                candidate = found.get(row[0])
                if candidate is None:
                    candidate = found[row[0]] = Candidate(
                        row[0], _title(records, title, record, row[0]), score
                    )
                candidate.score = max(candidate.score, score)
                candidate.rules.append(rule.name)
                for name in rule.fields:
                    f = entity.fields[name]
                    value = record[name]
                    candidate.values[name] = None if value is None else f.kind.to_json(f, value)
    ranked = sorted(found.values(), key=lambda c: (-c.score, -len(c.rules), c.id))
    return ranked[:limit]


def similarity(wanted: str | None, other: str | None, threshold: float) -> float | None:
    """How alike two normalized values of a fuzzy rule are (0..1), or None below the
    rule's threshold."""
    if not wanted or not other:
        return None
    matcher = difflib.SequenceMatcher(None, wanted, other, autojunk=False)
    # the cheap upper bounds first: most rows of a block are far from the value
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return None
    ratio = matcher.ratio()
    return ratio if ratio >= threshold else None


def _title(records: Records, title, record: Mapping, ident: int) -> str:
    if title is None:
        return f"{records.entity.label.get(records.locale)} #{ident}"
    value = record.get(title.name)
    if value is None or value == "":
        return f"#{ident}"
    if title.type in ("lookup", "user"):
        return f"#{ident}"
    return title.format(value, records.locale, records.tz)


# ------------------------------------------------------------------ groups (the view)
#: Records shown per group of the duplicates view (the group's size is counted in full).
GROUP_MEMBERS = 10
#: A fuzzy rule's groups: the records of a block sorted by their normalized value, each
#: compared with the next few (the sorted-neighbourhood method), so a block costs n*w.
FUZZY_WINDOW = 8
#: Blocks of a fuzzy rule read for one page at most (a page may then hold fewer groups).
FUZZY_BLOCKS = 50


@dataclass
class Member:
    id: int
    title: str
    values: dict[str, Any]  # the rule's fields, as stored
    score: float = 1.0


@dataclass
class Group:
    key: str
    size: int
    members: list[Member]


@dataclass
class GroupPage:
    rule: DuplicateRule
    groups: list[Group]
    next_after: str | None  # the cursor of the next page (None: this is the last)


def groups(
    records: Records, rule_name: str, *, after: str | None = None, limit: int = 20
) -> GroupPage:
    """Groups of likely duplicates among the records the reader may read, by one rule: for
    an exact rule, the records sharing a key (``GROUP BY`` over the indexed key column,
    paged by key); for a fuzzy rule, the similar records within each block."""
    rule = next((r for r in usable_rules(records) if r.name == rule_name), None)
    if rule is None:
        raise LookupError(f"no duplicate rule {rule_name!r} of {records.entity.name} to read")
    table = records.table
    builder = records.builder()
    scope = records.scope(builder)
    key = table.c[rule.column]
    size = sa.func.count(table.c.id).label("size")
    keys = (
        sa.select(key, size)
        .select_from(builder.from_clause)
        .where(key.is_not(None))
        .group_by(key)
        .having(sa.func.count(table.c.id) > 1)
        .order_by(key)
    )
    if scope is not None:
        keys = keys.where(scope)
    if after is not None:
        keys = keys.where(key > after)
    with records._reading() as conn:
        if rule.fuzzy is None:
            found = conn.execute(keys.limit(limit + 1)).all()
            more = len(found) > limit
            found = found[:limit]
            members = _members(records, conn, rule, builder, scope, [k for k, _ in found])
            page = [Group(k, n, members.get(k, [])) for k, n in found]
            return GroupPage(rule, page, found[-1][0] if more else None)
        blocks = conn.execute(keys.limit(FUZZY_BLOCKS + 1)).all()
        more = len(blocks) > FUZZY_BLOCKS
        page, last = [], None
        for block, _n in blocks[:FUZZY_BLOCKS]:
            page.extend(_fuzzy_groups(records, conn, rule, builder, scope, block))
            last = block
            if len(page) >= limit:
                more = more or block != blocks[-1][0]
                break
        return GroupPage(rule, page, last if more else None)


def _title_field(records: Records):
    entity = records.entity
    title = entity.fields.get(entity.title) if entity.title else None
    hidden = records.access.hidden(entity) if records.access else set()
    if title is None or not title.stored or title.name in hidden or title.type == "any_lookup":
        return None
    return title


def _member_columns(records: Records, rule: DuplicateRule) -> tuple[list[str], Any]:
    title = _title_field(records)
    names = list(dict.fromkeys([*rule.fields, *([title.name] if title else [])]))
    return names, title


def _members(records, conn, rule, builder, scope, keys: list[str]) -> dict[str, list[Member]]:
    """The first records of each group (by id), in one query for the page's groups."""
    if not keys:
        return {}
    table = records.table
    key = table.c[rule.column]
    names, title = _member_columns(records, rule)
    number = sa.func.row_number().over(partition_by=key, order_by=table.c.id).label("n")
    inner = (
        sa.select(key.label("k"), table.c.id, *(table.c[n] for n in names), number)
        .select_from(builder.from_clause)
        .where(key.in_(keys))
    )
    if scope is not None:
        inner = inner.where(scope)
    inner = inner.subquery()
    statement = (
        sa.select(inner.c.k, inner.c.id, *(inner.c[n] for n in names))
        .where(inner.c.n <= GROUP_MEMBERS)
        .order_by(inner.c.k, inner.c.id)
    )
    out: dict[str, list[Member]] = {}
    for row in conn.execute(statement):
        record = dict(zip(names, row[2:], strict=True))
        out.setdefault(row[0], []).append(
            Member(
                row[1],
                _title(records, title, record, row[1]),
                {n: record[n] for n in rule.fields},
            )
        )
    return out


def _fuzzy_groups(records, conn, rule, builder, scope, block: str) -> list[Group]:
    """The clusters of similar records in one block of a fuzzy rule."""
    table = records.table
    names, title = _member_columns(records, rule)
    statement = (
        sa.select(table.c.id, *(table.c[n] for n in names))
        .select_from(builder.from_clause)
        .where(table.c[rule.column] == block)
        .order_by(table.c.id.desc())
        .limit(FUZZY_CANDIDATES)
    )
    if scope is not None:
        statement = statement.where(scope)
    rows = []
    for row in conn.execute(statement):
        record = dict(zip(names, row[1:], strict=True))
        value = fuzzy_value(rule, record)
        if value:
            rows.append((value, row[0], record))
    rows.sort(key=lambda item: (item[0], item[1]))
    parent = list(range(len(rows)))
    best = [0.0] * len(rows)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    threshold = rule.fuzzy.fuzzy
    for i, (value, _id, _record) in enumerate(rows):
        for j in range(i + 1, min(i + 1 + FUZZY_WINDOW, len(rows))):
            score = 1.0 if rows[j][0] == value else similarity(value, rows[j][0], threshold)
            if score is None:
                continue
            best[i], best[j] = max(best[i], score), max(best[j], score)
            parent[root(j)] = root(i)
    clusters: dict[int, list[int]] = {}
    for i in range(len(rows)):
        clusters.setdefault(root(i), []).append(i)
    out = []
    for indexes in clusters.values():
        if len(indexes) < 2:
            continue
        indexes.sort(key=lambda i: rows[i][1])
        members = [
            Member(
                rows[i][1],
                _title(records, title, rows[i][2], rows[i][1]),
                {n: rows[i][2][n] for n in rule.fields},
                best[i],
            )
            for i in indexes[:GROUP_MEMBERS]
        ]
        out.append(Group(block, len(indexes), members))
    out.sort(key=lambda g: g.members[0].id)
    return out
