"""Schema sync: compare a catalog's tables with the database, plan, and apply the plan.

The plan is what ``xrm db plan`` prints and what an administrator sees before a change:
tables, columns and indexes to add; columns no definition uses any more (kept, with their
data, until an explicit purge); type changes, which are applied only when no data can be
lost, or, for the conversions that cut or drop values, when the caller allows the loss by
name (``Loss``: text shortened, decimals rounded, option values taken out while records
hold them; ``--allow-loss`` on the command line).  Applying runs inside the caller's transaction (DDL is transactional on SQLite with
our BEGIN handling, and on PostgreSQL), so a failed change leaves nothing half-applied.
Adding a nullable column never rewrites a table on either database.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from . import duplicates, search
from .tables import EntityTables, column_specs

PLATFORM_PREFIX = "xrm_"


def _family(type_: sa.types.TypeEngine) -> tuple:
    """A comparable description of a column type across declared and reflected forms."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance if hasattr(type_, "impl_instance") else type_.impl
    name = type(type_).__name__.upper()
    if isinstance(type_, sa.Boolean) or name == "BOOLEAN":
        return ("bool",)
    if isinstance(type_, sa.Integer):
        return ("int",)
    if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float):
        return ("numeric", type_.precision, type_.scale)
    if isinstance(type_, sa.Float):
        return ("float",)
    if isinstance(type_, sa.DateTime):
        return ("datetime",)
    if isinstance(type_, sa.Date):
        return ("date",)
    if isinstance(type_, sa.Time):
        return ("time",)
    if isinstance(type_, sa.JSON) or name in ("JSON", "JSONB"):
        return ("json",)
    if (
        isinstance(type_, sa.Text)
        and not isinstance(type_, sa.String | sa.Unicode)
        or name == "TEXT"
    ):
        return ("text", None)
    if isinstance(type_, sa.String):
        return ("text", type_.length)
    return (name.lower(),)


def _declared(column: sa.Column, dialect) -> tuple:
    return _family(
        column.type.dialect_impl(dialect)
        if not isinstance(column.type, sa.types.TypeDecorator)
        else column.type
    )


@dataclass
class Loss:
    """Data a change would cut or drop, named as ``--allow-loss`` names it: ``entity.field``
    (``table.column``), or a table.  Applied only when allowed; ``rows`` is how many rows
    hold what would go when the plan was made."""

    key: str
    table: str
    column: str | None
    rows: int
    what: str  # "values longer than 50 characters are cut to 50"
    kind: str  # shorten, round, options, drop
    detail: tuple = ()  # shorten: (length,); round: (scale,); options: (values, multi)
    allowed: bool = False

    def line(self) -> str:
        rows = f"{self.rows} row{'s' if self.rows != 1 else ''}"
        if self.allowed:
            return f"! data loss {self.key}: {self.what} ({rows}; allowed)"
        return (
            f"! data loss {self.key}: {self.what} ({rows}; allow it with --allow-loss {self.key})"
        )

    def allowed_by(self, names) -> bool:
        return self.key in names or self.table in names


@dataclass
class TypeChange:
    table: str
    column: str
    old: tuple
    new: tuple
    safe: bool
    reason: str = ""
    #: a conversion that cuts values (shorter text, fewer decimals): applied when allowed
    loss: Loss | None = None


@dataclass
class SchemaPlan:
    create_tables: list[str] = field(default_factory=list)
    add_columns: list[tuple[str, str]] = field(default_factory=list)
    add_indexes: list[tuple[str, str]] = field(default_factory=list)
    drop_indexes: list[tuple[str, str]] = field(default_factory=list)
    type_changes: list[TypeChange] = field(default_factory=list)
    kept_columns: list[tuple[str, str]] = field(default_factory=list)
    kept_tables: list[str] = field(default_factory=list)
    search_indexes: list[str] = field(
        default_factory=list
    )  # entities whose search index is (re)built
    # duplicate-rule key columns added to tables with rows: keys computed for every row
    fill_keys: list[tuple[str, str]] = field(default_factory=list)
    # (table, old column, new column): a field declared with renamed_from, data kept
    renames: list[tuple[str, str, str]] = field(default_factory=list)
    # option values taken out of a choice field while rows hold them (see option_losses)
    data_losses: list[Loss] = field(default_factory=list)

    @property
    def refused(self) -> list[TypeChange]:
        return [c for c in self.type_changes if not c.safe and not (c.loss and c.loss.allowed)]

    @property
    def losses(self) -> list[Loss]:
        """Every loss the plan names: lossy type changes and option values in use."""
        return [c.loss for c in self.type_changes if c.loss] + self.data_losses

    @property
    def unallowed(self) -> list[Loss]:
        return [loss for loss in self.losses if not loss.allowed]

    @property
    def blocked(self) -> bool:
        """True when applying would be refused: a change that cannot be made, or a loss
        not allowed."""
        return bool(self.refused or self.unallowed)

    def allow(self, names) -> list[str]:
        """Mark the losses ``names`` name as allowed; returns the names that name none."""
        names = set(names)
        used = set()
        for loss in self.losses:
            if loss.allowed_by(names):
                loss.allowed = True
                used |= {loss.key, loss.table} & names
        return sorted(names - used)

    @property
    def empty(self) -> bool:
        return not (
            self.create_tables
            or self.renames
            or self.add_columns
            or self.add_indexes
            or self.drop_indexes
            or any(c.safe or (c.loss and c.loss.allowed) for c in self.type_changes)
            or any(loss.allowed for loss in self.data_losses)
            or self.search_indexes
        )

    def lines(self) -> list[str]:
        out = [f"+ table {t}" for t in self.create_tables]
        out += [f"~ rename column {t}.{o} -> {t}.{n} (data kept)" for t, o, n in self.renames]
        out += [f"+ column {t}.{c}" for t, c in self.add_columns]
        out += [f"+ index {n} on {t}" for t, n in self.add_indexes]
        out += [f"- index {n} on {t} (no longer needed)" for t, n in self.drop_indexes]
        for change in self.type_changes:
            verdict = "change" if change.safe or change not in self.refused else "REFUSED"
            out.append(
                f"~ {verdict} {change.table}.{change.column}: {change.old} -> {change.new}{' (' + change.reason + ')' if change.reason else ''}"
            )
        out += [loss.line() for loss in self.losses]
        out += [f"+ search index for {e}" for e in self.search_indexes]
        out += [f"+ duplicate keys {t}.{c} computed for existing rows" for t, c in self.fill_keys]
        out += [
            f"= kept column {t}.{c} (no longer defined; data kept until purge)"
            for t, c in self.kept_columns
        ]
        out += [
            f"= kept table {t} (no longer defined; data kept until purge)" for t in self.kept_tables
        ]
        return out or ["nothing to change"]

    def as_dict(self) -> dict:
        return {
            "create_tables": self.create_tables,
            "add_columns": [f"{t}.{c}" for t, c in self.add_columns],
            "add_indexes": [f"{t}.{n}" for t, n in self.add_indexes],
            "drop_indexes": [f"{t}.{n}" for t, n in self.drop_indexes],
            "type_changes": [
                {
                    "column": f"{c.table}.{c.column}",
                    "old": list(c.old),
                    "new": list(c.new),
                    "safe": c.safe,
                    "reason": c.reason,
                }
                for c in self.type_changes
            ],
            "kept_columns": [f"{t}.{c}" for t, c in self.kept_columns],
            "kept_tables": self.kept_tables,
            "renames": [f"{t}.{o}->{n}" for t, o, n in self.renames],
            "search_indexes": self.search_indexes,
            "fill_keys": [f"{t}.{c}" for t, c in self.fill_keys],
            "losses": [
                {"name": x.key, "rows": x.rows, "what": x.what, "allowed": x.allowed}
                for x in self.losses
            ],
        }


class SchemaChangeRefused(Exception):
    def __init__(self, plan: SchemaPlan):
        self.plan = plan
        details = "; ".join(
            f"{c.table}.{c.column}: {c.reason}"
            + (
                f" ({_rows(c.loss.rows)}; allow it with --allow-loss {c.loss.key})"
                if c.loss
                else ""
            )
            for c in plan.refused
        )
        details = "; ".join(
            [details] * bool(details)
            + [
                f"{x.key}: {x.what} ({_rows(x.rows)}; allow it with --allow-loss {x.key})"
                for x in plan.data_losses
                if not x.allowed
            ]
        )
        super().__init__(f"schema change refused, data could be lost: {details}")


class LossNotNamed(ValueError):
    """``--allow-loss`` named something the plan would not lose (a typo must not pass)."""

    def __init__(self, names: list[str], plan_losses: list[Loss]):
        self.names = names
        would = ", ".join(x.key for x in plan_losses) or "nothing"
        super().__init__(
            f"--allow-loss {', '.join(names)}: this change would not lose that "
            f"(it would lose: {would})"
        )


def _rows(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''} affected"


def _type_change(table: str, column: str, old: tuple, new: tuple) -> TypeChange | None:
    if old == new:
        return None
    if old[0] == new[0] == "text":
        if new[1] is None or (old[1] is not None and new[1] >= old[1]):
            return TypeChange(table, column, old, new, True, "wider")
        key = f"{table}.{column}"
        loss = Loss(
            key,
            table,
            column,
            0,
            f"text longer than {new[1]} characters is cut to {new[1]}",
            "shorten",
            (new[1],),
        )
        return TypeChange(
            table, column, old, new, False, f"would shorten text to {new[1]} characters", loss
        )
    if old[0] == new[0] == "numeric":
        op, os_ = old[1] or 0, old[2] or 0
        np_, ns = new[1] or 0, new[2] or 0
        if ns >= os_ and (np_ - ns) >= (op - os_):
            return TypeChange(table, column, old, new, True, "wider")
        if (np_ - ns) >= (op - os_):  # fewer decimals only: values are rounded
            loss = Loss(
                f"{table}.{column}",
                table,
                column,
                0,
                f"values with more than {ns} decimal places are rounded to {ns}",
                "round",
                (ns,),
            )
            return TypeChange(table, column, old, new, False, "would lose digits", loss)
        # fewer whole digits: a value too large has no number to become
        return TypeChange(table, column, old, new, False, "would lose digits")
    if old[0] == "int" and new[0] == "numeric":
        return TypeChange(table, column, old, new, True, "integer to decimal")
    if new == ("text", None) and old[0] in ("text",):
        return TypeChange(table, column, old, new, True, "to unbounded text")
    return TypeChange(
        table,
        column,
        old,
        new,
        False,
        f"{old[0]} cannot become {new[0]} without a declared conversion",
    )


def type_key(type_: sa.types.TypeEngine) -> tuple:
    """A comparable description of a declared type: its class and the constructor settings
    ``repr`` would show, at a fraction of its cost (every column of a catalog version is
    compared on each change)."""
    key: tuple = (type(type_).__name__,) + tuple(
        getattr(type_, name, None) for name in _settings(type(type_))
    )
    if isinstance(type_, sa.types.TypeDecorator):
        key += type_key(type_.impl_instance)
    return key


@functools.cache
def _settings(kind: type) -> tuple[str, ...]:
    parameters = inspect.signature(kind.__init__).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def table_signature(table: sa.Table) -> tuple:
    """What the schema of a table depends on: its columns, their types, its indexes."""
    return (
        tuple(
            (c.name, type_key(c.type), tuple(fk.target_fullname for fk in c.foreign_keys))
            for c in table.columns
        ),
        tuple(
            sorted((ix.name, tuple(c.name for c in ix.columns), ix.unique) for ix in table.indexes)
        ),
    )


def spec_signature(tables: EntityTables, entity) -> tuple:
    """``table_signature`` of an entity's table, from its column specs (nothing built)."""
    return (
        tuple(
            (s.name, type_key(s.type), (s.references,) if s.references else ())
            for s in column_specs(entity)
        ),
        tuple(
            sorted((name, cols, unique) for name, (cols, unique) in tables.indexes(entity).items())
        ),
    )


def signatures(tables: EntityTables) -> dict[str, tuple]:
    """Table name -> signature for every table of a catalog version (kept with the tables:
    the next change compares against them without recomputing)."""
    found = getattr(tables, "_signatures", None)
    if found is None:
        found = {e.table_name: spec_signature(tables, e) for e in tables.catalog.entities.values()}
        for entity, field in tables.link_fields():
            link = tables.link(entity.name, field.name)
            found[link.name] = table_signature(link)
        tables._signatures = found
    return found


def changed_tables(old: EntityTables | None, new: EntityTables) -> set[str] | None:
    """Names of the tables whose definition differs between two catalogs (None: unknown,
    compare everything).  Search indexes depend on the entity's searchable fields."""
    if old is None:
        return None
    before = signatures(old)
    changed = {name for name, sig in signatures(new).items() if before.get(name) != sig}
    for name, entity in new.catalog.entities.items():
        previous = old.catalog.entities.get(name)
        if previous is None or [f.name for f in previous.fields.values() if f.searchable] != [
            f.name for f in entity.fields.values() if f.searchable
        ]:
            changed.add(name)
    return changed


def _names_in_database(
    connection: sa.Connection, known: list[str], tables: list[str]
) -> tuple[set[str], dict[str, tuple[set, set]]]:
    """Which of the ``known`` tables exist, and the column and index names of ``tables``, in
    one query of the system catalogs' name indexes: enough to plan a change that only adds
    to tables known to match their previous definition."""
    found: dict[str, tuple[set, set]] = {}
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            sa.text(
                "WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace"
                " WHERE nspname = current_schema())"
                " SELECT 't', c.relname, NULL FROM pg_catalog.pg_class c, ns"
                " WHERE c.relname = ANY(:known) AND c.relnamespace = ns.oid"
                " AND c.relkind IN ('r', 'p')"
                " UNION ALL SELECT 'c', c.relname, a.attname FROM pg_catalog.pg_attribute a"
                " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid, ns"
                " WHERE c.relname = ANY(:names) AND c.relnamespace = ns.oid"
                " AND a.attnum > 0 AND NOT a.attisdropped"
                " UNION ALL SELECT 'i', c.relname, i.relname FROM pg_catalog.pg_index x"
                " JOIN pg_catalog.pg_class c ON c.oid = x.indrelid"
                " JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid, ns"
                " WHERE c.relname = ANY(:names) AND c.relnamespace = ns.oid"
            ),
            {"known": known, "names": tables},
        )
    else:
        params = {f"k{i}": name for i, name in enumerate(known)}
        params.update({f"t{i}": name for i, name in enumerate(tables)})
        known_marks = ", ".join(f":k{i}" for i in range(len(known))) or "NULL"
        marks = ", ".join(f":t{i}" for i in range(len(tables))) or "NULL"
        rows = connection.execute(
            sa.text(
                f"SELECT 't', name, NULL FROM sqlite_master WHERE type = 'table'"
                f" AND name IN ({known_marks})"
                " UNION ALL SELECT 'c', m.name, p.name FROM sqlite_master m,"
                f" pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name IN ({marks})"
                " UNION ALL SELECT 'i', tbl_name, name FROM sqlite_master"
                f" WHERE type = 'index' AND tbl_name IN ({marks})"
            ),
            params,
        )
    existing = set()
    for kind, table, name in rows:
        if kind == "t":
            existing.add(table)
            continue
        columns, indexes = found.setdefault(table, (set(), set()))
        (columns if kind == "c" else indexes).add(name)
    return existing, found


def _additions_only(signature: tuple, previous: tuple | None, in_database: set) -> bool:
    """True when a table (its signature) keeps every column of its previous definition
    unchanged and adds only columns the database does not have yet: then names alone plan
    it, no types."""
    if previous is None:
        return False
    before = {c[0]: c for c in previous[0]}
    for column in signature[0]:
        old = before.get(column[0])
        if old is None and column[0] in in_database:
            return False  # a column kept from an earlier definition: compare its type
        if old is not None and old != column:
            return False
    return True


def plan_schema(
    connection: sa.Connection,
    tables: EntityTables,
    only: set[str] | None = None,
    previous: EntityTables | None = None,
) -> SchemaPlan:
    """Compare the catalog's tables with the database.  With ``only``, tables outside it are
    known to be unchanged since the last sync and are not reflected (a field added to one
    entity inspects one table, not all of them).  With ``previous`` (the tables of the
    version the database is known to match), a table that only gains columns is planned
    from column and index names, one query for all of them, instead of full reflection."""
    inspector = sa.inspect(connection)
    names: dict[str, tuple[set, set]] = {}
    before: dict[str, tuple] = {}
    known = tables.table_names()
    if previous is not None and only is not None:
        # Tables the catalog does not define are left to full plans (``xrm db plan``).
        existing, names = _names_in_database(connection, sorted(known), sorted(only))
        before = signatures(previous)  # computed by changed_tables already
    else:
        existing = set(inspector.get_table_names())
    plan = SchemaPlan()
    wanted = [
        tables.by_table_name(name)
        for name in known
        if only is None or name in only or name not in existing
    ]
    dialect = connection.dialect
    search_owned = {
        search.index_name(e) for e in tables.catalog.entities.values()
    }  # not ours to drop
    for table in wanted:
        if table.name not in existing:
            plan.create_tables.append(table.name)
            continue
        entity = tables.catalog.entity_of(table.name)
        if entity is not None and any(f.renamed_from for f in entity.fields.values()):
            in_database = (
                names[table.name][0]
                if table.name in names
                else {c["name"] for c in inspector.get_columns(table.name)}
            )
            if _plan_renames(plan, entity, table.name, in_database):
                names.pop(table.name, None)  # the renamed table is planned in full below
        if table.name in names:
            in_database, present = names[table.name]
            if _additions_only(signatures(tables)[table.name], before.get(table.name), in_database):
                plan.add_columns += [
                    (table.name, c.name) for c in table.columns if c.name not in in_database
                ]
                plan.kept_columns += [
                    (table.name, n) for n in sorted(in_database) if n not in table.columns
                ]
                _plan_indexes(plan, table, present, search_owned)
                continue
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        for _t, old, new in (r for r in plan.renames if r[0] == table.name):
            columns[new] = columns.pop(old)  # planned as if already renamed
        for column in table.columns:
            if column.name not in columns:
                plan.add_columns.append((table.name, column.name))
                continue
            change = _type_change(
                table.name,
                column.name,
                _family(columns[column.name]["type"]),
                _declared(column, dialect),
            )
            if change is not None and change.loss is not None:
                change = _count_loss(connection, change, previous)
            # SQLite's declared types are affinities: a widening needs no DDL there, and
            # listing it would leave it pending in every later plan.
            if change is not None and not (change.safe and dialect.name == "sqlite"):
                plan.type_changes.append(change)
        for name in columns:
            if name not in table.columns:
                plan.kept_columns.append((table.name, name))
        present = {ix["name"] for ix in inspector.get_indexes(table.name)}
        present |= {uq["name"] for uq in inspector.get_unique_constraints(table.name)}
        _plan_indexes(plan, table, present, search_owned)
    plan.search_indexes = [
        e.name
        for e in tables.catalog.entities.values()
        if (only is None or e.name in only or e.name not in existing)
        and search.needs_rebuild(connection, inspector, e)
    ]
    plan.fill_keys = duplicates.columns_to_fill(tables, plan.add_columns)
    for name in sorted(existing - set(known)):
        if (
            not name.startswith(PLATFORM_PREFIX)
            and not name.startswith("sqlite_")
            and "__fts" not in name
        ):
            plan.kept_tables.append(name)
    return plan


def _count_loss(
    connection: sa.Connection, change: TypeChange, previous: EntityTables | None
) -> TypeChange | None:
    """The rows a lossy type change would cut.  SQLite never rewrites a declared type (its
    types are affinities), so a column converted earlier still reflects its old type: when
    the previous catalog already declared the new type, or (not knowing it) no value would
    be cut, there is nothing left to do there."""
    loss = change.loss
    holder = sa.table(change.table, sa.column(change.column))
    column = holder.c[change.column]
    if connection.dialect.name == "sqlite" and previous is not None:
        try:
            earlier = previous.by_table_name(change.table).c.get(change.column)
        except KeyError:
            earlier = None
        if earlier is not None and _declared(earlier, connection.dialect) == change.new:
            return None
    loss.rows = int(
        connection.execute(
            sa.select(sa.func.count()).select_from(holder).where(_lossy_values(loss, column))
        ).scalar()
        or 0
    )
    if connection.dialect.name == "sqlite" and previous is None and loss.rows == 0:
        return None
    return change


def _lossy_values(loss: Loss, column):
    """The condition that picks the values a loss cuts."""
    if loss.kind == "shorten":
        return sa.func.length(column) > loss.detail[0]
    if loss.kind == "round":
        return column != sa.func.round(column, loss.detail[0])
    values, _multi = loss.detail
    return column.in_(values)


def option_losses(connection: sa.Connection, before, after) -> list[Loss]:
    """Option values taken out of a stored choice field (its options, or its option set)
    that rows still hold, between two catalogs; the loss clears them."""
    from .tables import field_specs

    found: list[Loss] = []
    if before is None:
        return found
    for entity in after.entities.values():
        old_entity = before.entities.get(entity.name)
        if old_entity is None:
            continue
        for f in entity.fields.values():
            old = old_entity.fields.get(f.name)
            if (
                old is None
                or f.type not in ("choice", "multi_choice")
                or old.type != f.type
                or not f.stored
            ):
                continue
            removed = sorted(set(old.choice_values) - set(f.choice_values))
            if not removed:
                continue
            (spec,) = field_specs(entity, f)
            multi = f.type == "multi_choice"
            rows = _rows_holding(connection, entity.table_name, spec.name, removed, multi)
            if rows:
                found.append(
                    Loss(
                        f"{entity.name}.{f.name}",
                        entity.table_name,
                        spec.name,
                        len(rows),
                        f"option value{'s' if len(removed) > 1 else ''} "
                        f"{', '.join(removed)} no longer offered; "
                        f"{'taken out of' if multi else 'cleared in'} the rows holding "
                        f"{'them' if len(removed) > 1 else 'it'}",
                        "options",
                        (tuple(removed), multi),
                    )
                )
    return found


def _rows_holding(connection, table: str, column: str, values: list, multi: bool) -> list:
    """Ids of the rows whose ``column`` holds one of ``values`` (a list of them for a
    multi-choice: JSON, read and checked here so that both databases agree)."""
    holder = sa.table(table, sa.column("id"), sa.column(column, sa.JSON if multi else sa.String))
    col = holder.c[column]
    if not multi:
        return list(connection.execute(sa.select(holder.c.id).where(col.in_(values))).scalars())
    wanted = set(values)
    return [
        ident
        for ident, held in connection.execute(sa.select(holder.c.id, col).where(col.isnot(None)))
        if isinstance(held, list) and wanted & set(held)
    ]


def _apply_loss(connection: sa.Connection, loss: Loss) -> None:
    """Cut or clear what an allowed loss names, before its column's type changes."""
    holder = sa.table(
        loss.table,
        sa.column("id"),
        sa.column(loss.column, sa.JSON if loss.kind == "options" and loss.detail[1] else None),
    )
    column = holder.c[loss.column]
    if loss.kind == "shorten":
        value = sa.func.substr(column, 1, loss.detail[0])
    elif loss.kind == "round":
        value = sa.func.round(column, loss.detail[0])
    elif not loss.detail[1]:
        value = None
    else:
        values, _multi = loss.detail
        for ident in _rows_holding(connection, loss.table, loss.column, list(values), True):
            held = connection.execute(sa.select(column).where(holder.c.id == ident)).scalar()
            kept = [v for v in held if v not in values] or None
            connection.execute(
                holder.update().where(holder.c.id == ident).values({loss.column: kept})
            )
        return
    connection.execute(
        holder.update().where(_lossy_values(loss, column)).values({loss.column: value})
    )


def _plan_renames(plan: SchemaPlan, entity, table_name: str, in_database: set) -> bool:
    """Columns of fields declared ``renamed_from`` that still have their old name: renamed
    in place, data and all.  Only when every new column is missing and every old one is
    there, so applying a plan twice, or a field added under an old name again, never
    renames twice or over another column."""
    from dataclasses import replace

    from .tables import field_specs

    found = False
    for f in entity.fields.values():
        if not f.renamed_from:
            continue
        new = [spec.name for spec in field_specs(entity, f)]
        old = [spec.name for spec in field_specs(entity, replace(f, name=f.renamed_from))]
        if all(n not in in_database for n in new) and all(o in in_database for o in old):
            plan.renames += [(table_name, o, n) for o, n in zip(old, new, strict=True)]
            found = True
    return found


def _plan_indexes(plan: SchemaPlan, table: sa.Table, present: set, search_owned: set) -> None:
    """Indexes the table declares and the database lacks; ours the table no longer wants."""
    declared = {ix.name for ix in table.indexes}
    for index in table.indexes:
        if index.name not in present:
            plan.add_indexes.append((table.name, index.name))
    for name in present - declared:
        if (
            name
            and name.startswith(("ix_", "uq_"))
            and not name.startswith(f"ix_{PLATFORM_PREFIX}")
            and name not in search_owned
        ):
            plan.drop_indexes.append((table.name, name))


def _create_tables(connection: sa.Connection, new_tables: list[sa.Table]) -> None:
    """Create tables in dependency order; foreign keys caught in a cycle (two lookups
    pointing at each other) are added afterwards on PostgreSQL.  SQLite checks foreign
    keys only when rows change, so there every constraint stays inline."""
    if connection.dialect.name == "sqlite":
        for table in new_tables:
            table.create(connection)
        return
    for table, constraints in sa.schema.sort_tables_and_constraints(new_tables):
        if table is not None:
            connection.execute(
                sa.schema.CreateTable(table, include_foreign_key_constraints=constraints)
            )
            for index in table.indexes:
                index.create(connection)
        else:
            for constraint in constraints:
                connection.execute(sa.schema.AddConstraint(constraint))


def _add_lookup_column_sqlite(
    connection: sa.Connection, table_name: str, column: sa.Column
) -> None:
    """SQLite cannot add a constraint to a table, but it takes one inline in ADD COLUMN
    (Alembic would need a batch rebuild of the table for it)."""
    preparer = connection.dialect.identifier_preparer
    ddl = str(sa.schema.CreateColumn(column).compile(dialect=connection.dialect))
    for fk in column.foreign_keys:
        target_table, target_column = fk.target_fullname.split(".")
        ddl += f" CONSTRAINT {preparer.quote(fk.name)} REFERENCES {preparer.quote(target_table)} ({preparer.quote(target_column)})"
        if fk.ondelete:
            ddl += f" ON DELETE {fk.ondelete}"
    connection.exec_driver_sql(f"ALTER TABLE {preparer.quote(table_name)} ADD COLUMN {ddl}")


def apply_schema(connection: sa.Connection, tables: EntityTables, plan: SchemaPlan) -> None:
    """Carry out a plan inside the caller's transaction."""
    if plan.blocked:
        raise SchemaChangeRefused(plan)
    ops = Operations(MigrationContext.configure(connection))
    if plan.create_tables:
        tables.tables  # noqa: B018 - every table built, so new foreign keys resolve
    by_name = tables.by_table_name
    _create_tables(connection, [by_name(name) for name in plan.create_tables])
    quote = connection.dialect.identifier_preparer.quote
    for table_name, old, new in plan.renames:  # the same statement on both databases
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(table_name)} RENAME COLUMN {quote(old)} TO {quote(new)}"
        )
    for table_name, column_name in plan.add_columns:
        column = by_name(table_name).c[column_name]
        if connection.dialect.name == "sqlite" and column.foreign_keys:
            _add_lookup_column_sqlite(connection, table_name, column)
            continue
        foreign_keys = [
            sa.ForeignKey(fk.target_fullname, ondelete=fk.ondelete, name=fk.name)
            for fk in column.foreign_keys
        ]
        ops.add_column(
            table_name, sa.Column(column.name, column.type, *foreign_keys, nullable=True)
        )
    for table_name, column_name in plan.fill_keys:  # before its index: one build, not many
        duplicates.fill(connection, tables, table_name, column_name)
    for table_name, index_name in plan.drop_indexes:
        ops.drop_index(index_name, table_name=table_name)
    for table_name, index_name in plan.add_indexes:
        index = next(ix for ix in by_name(table_name).indexes if ix.name == index_name)
        index.create(connection)
    for name in plan.search_indexes:
        search.rebuild(connection, tables.catalog.entity(name), tables[name])
    for loss in plan.data_losses:
        _apply_loss(connection, loss)  # allowed: the check above refused any other
    for change in plan.type_changes:
        if change.loss is not None:
            _apply_loss(connection, change.loss)
        if connection.dialect.name == "sqlite":
            continue  # SQLite's column types are affinities; a new length needs no rewrite
        column = by_name(change.table).c[change.column]
        ops.alter_column(change.table, change.column, type_=column.type, existing_nullable=True)


def purge_schema(connection: sa.Connection, tables: EntityTables, plan: SchemaPlan) -> list[str]:
    """Drop what no definition uses any more — the plan's kept columns and kept tables —
    with their data, inside the caller's transaction; the lines say what went.

    PostgreSQL drops columns in place.  SQLite drops a plain column in place too, but one
    that a foreign key or an index holds needs the table rebuilt (Alembic's batch mode),
    which drops the old table: the caller must have turned foreign-key enforcement off
    for the connection first, or the drop would set or delete the rows of child tables
    (``Store.purge`` does, and checks the keys before it commits).  A rebuilt table loses
    its triggers, so its search index is built again."""
    ops = Operations(MigrationContext.configure(connection))
    sqlite = connection.dialect.name == "sqlite"
    gone_tables = set(plan.kept_tables)
    by_table: dict[str, list[str]] = {}
    for table_name, column_name in plan.kept_columns:
        if table_name not in gone_tables:
            by_table.setdefault(table_name, []).append(column_name)
    lines: list[str] = []
    inspector = sa.inspect(connection)
    for table_name, columns in sorted(by_table.items()):
        held = set()
        if sqlite:
            for fk in inspector.get_foreign_keys(table_name):
                held.update(fk["constrained_columns"])
            for index in inspector.get_indexes(table_name):
                if set(index["column_names"] or ()) & set(columns):
                    ops.drop_index(index["name"], table_name=table_name)
        if sqlite and held & set(columns):
            with ops.batch_alter_table(table_name, recreate="always") as batch:
                for column_name in columns:
                    batch.drop_column(column_name)
            entity = tables.catalog.entity_of(table_name)
            if entity is not None:
                search.rebuild(connection, entity, tables[entity.name])
        else:
            for column_name in columns:
                ops.drop_column(table_name, column_name)
        lines += [f"- column {table_name}.{c} (dropped with its data)" for c in columns]
    for table_name in sorted(gone_tables):
        if sqlite:
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table_name}__fts"')
            connection.exec_driver_sql(f'DROP TABLE "{table_name}"')
        else:
            connection.exec_driver_sql(f'DROP TABLE "{table_name}" CASCADE')
        lines.append(f"- table {table_name} (dropped with its data)")
    return lines
