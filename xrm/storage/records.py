"""The records service: the one write path (and the read path) for entity records.

UI, API, import and workflow all go through here.  A save runs, in order: permission
check -> coercion through the field registry -> defaults -> formulas -> validation
(required, unique, stage rules, validation rules) -> autonumbers -> write with an
optimistic-concurrency version -> rollups of parent records -> audit rows -> outbox rows
(same transaction) -> signals after commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import graphlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..metadata import Catalog, CoercionError, Entity, Field
from ..metadata.evaluate import matches, record_getter
from ..metadata.expressions import evaluate_formula, formula_names
from ..metadata.fieldtypes import AutonumberType, FieldType
from ..metadata.filters import All, AnyOf, Condition, FilterContext, FilterError, Not, parse_filter
from ..metadata.model import ACCOUNT_ENTITY, SYSTEM_COLUMNS
from ..metadata.problems import did_you_mean
from ..metadata.scoring import formulas_over
from . import duplicates as D
from . import query as Q
from . import scoring as S
from . import tables as T
from .fastpath import compiled_insert
from .files import check_file_values
from .security import rollup_filter
from .tables import tables_for

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store
    from .unit import UnitOfWork

#: System columns a caller may set (the others are the platform's).
SETTABLE_SYSTEM = ("owner",)
ALL_KEY = "__all__"


class RecordError(Exception):
    """Base class of the errors the records service raises."""


class ValidationFailed(RecordError):
    """Field-level messages (``{field: [message, ...]}``; ``__all__`` for the record)."""

    def __init__(self, errors: dict[str, list[str]], row: int | None = None):
        self.errors = errors
        self.row = row
        text = "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items())
        super().__init__(f"row {row}: {text}" if row is not None else text)


class BulkFailed(RecordError):
    def __init__(self, failures: dict[int, dict[str, list[str]]]):
        self.failures = failures
        first = next(iter(failures.items()))
        super().__init__(
            f"{len(failures)} row(s) invalid, nothing written; first: row {first[0]}: {first[1]}"
        )


class Conflict(RecordError):
    """The record changed since the caller read it (stale ``version``)."""

    def __init__(self, entity: str, record_id: int, expected: int, current: int):
        self.entity, self.record_id, self.expected, self.current = (
            entity,
            record_id,
            expected,
            current,
        )
        super().__init__(
            f"{entity} {record_id} was changed by someone else (version {current}, you had {expected})"
        )


class NotFound(RecordError, LookupError):
    def __init__(self, entity: str, record_id):
        super().__init__(f"{entity} {record_id} not found")
        self.entity, self.record_id = entity, record_id


class Forbidden(RecordError, PermissionError):
    pass


@dataclass
class Page:
    rows: list[dict]
    next_cursor: str | None


@dataclass
class Count:
    value: int
    exact: bool


@dataclass(frozen=True)
class PreparedQuery:
    base: Any
    conditions: tuple
    sort_spec: Any
    sort_columns: list
    sort_fields: list
    sort_labels: list


class LRU:
    """A small thread-safe least-recently-used map (prepared queries per catalog)."""

    def __init__(self, size: int):
        import threading
        from collections import OrderedDict

        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            if len(self.items) > self.size:
                self.items.popitem(last=False)


@dataclass
class BulkResult:
    ids: list[int] = field(default_factory=list)
    failures: dict[int, dict[str, list[str]]] = field(default_factory=dict)


# --------------------------------------------------------------- per-catalog compiled plans
class EntityPlan:
    """What saving a record of one entity needs, compiled once per catalog version."""

    def __init__(self, catalog: Catalog, entity: Entity):
        self.entity = entity
        fields = entity.fields
        # read_only fields are closed to users but open to the platform (workflow, imports
        # run as the system); computed fields are closed to everyone.
        self.writable = {n: f for n, f in fields.items() if not f.computed}
        self.read_only = {n for n, f in fields.items() if f.read_only}
        # each writable field's coerce_input, looked up once (a bulk write calls it per cell)
        self.coercers = {n: f.kind.coerce_input for n, f in self.writable.items()}
        # formulas may read the system columns too (created_at, owner...)
        self.formula_inputs = dict.fromkeys([*SYSTEM_COLUMNS, *fields])
        self.stored_inputs = {n: f for n, f in self.writable.items() if f.stored}
        self.m2m = {n: f for n, f in self.writable.items() if f.type == "many_to_many"}
        self.required = [f for f in fields.values() if f.required]
        # The main form's required_if rules hold for every write (API, import, workflow),
        # each with the visibility conditions of its field and section: a hidden field is
        # not required.
        self.required_if = _form_requirements(catalog.form_for(entity.name))
        self.defaults = [f for f in fields.values() if f.default is not None and not f.computed]
        self.unique = [f for f in fields.values() if f.unique and f.stored]
        # Every uniqueness rule as a tuple of columns: unique fields and unique indexes.
        self.unique_keys = [(f.name,) for f in self.unique] + [
            ix.fields for ix in entity.indexes if ix.unique
        ]
        self.autonumbers = [f for f in fields.values() if f.type == "autonumber"]
        self.file_fields = frozenset(n for n, f in fields.items() if f.type == "file")
        # Numbers are drawn after validation (a refused record takes none); formulas that
        # read one are computed again once it is drawn.
        numbered = {f.name for f in self.autonumbers}
        self.formulas_read_numbers = any(
            numbered & formula_names(f.formula) for f in fields.values() if f.formula
        )
        # Sums and counts start at 0: a parent without children has a total of 0.
        self.zero_rollups = [
            f for f in fields.values() if f.rollup and f.rollup.aggregate in ("sum", "count")
        ]
        self.any_lookups = [f for f in fields.values() if f.type == "any_lookup"]
        self.columns = {n: f for n, f in fields.items() if f.stored}
        self.formulas = self._formula_order(fields)
        # The score is worked out between two passes: first the formulas its rules may
        # read, then those over the score or its rating (directly or through another
        # formula), which would read the score from before the save if worked out first.
        # The checker keeps scoring conditions off the second kind.
        over = formulas_over(entity, entity.scoring.fields) if entity.scoring else {}
        self.unscored_formulas = [f for f in self.formulas if f.name not in over]
        self.score_formulas = [f for f in self.formulas if f.name in over]
        # Formulas that read a rollup, directly or through another formula: a child's
        # change moves the rollup without saving this record, so they are computed again
        # then (refresh_rollup_formulas), after the rollups themselves.
        moved = {n for n, f in fields.items() if f.rollup}
        self.rollup_formulas = []
        for f in self.formulas:
            if moved & formula_names(f.formula):
                moved.add(f.name)
                self.rollup_formulas.append(f)
        self.rollup_targets = list(_rollup_targets(catalog, entity))
        self.lookups = [f for f in fields.values() if f.type == "lookup" and f.stored]
        # Self lookups marked ``hierarchy: true``: a record may not become its own ancestor.
        self.hierarchies = [
            f
            for f in self.lookups
            if f.params.get("hierarchy") and f.params.get("to") == entity.name
        ]
        # Master-detail lookups: the child is part of its parent (deleted with it), so
        # adding, moving or deleting a child is changing the parent.
        self.detail_of = {f.name for f in self.lookups if f.on_delete == "cascade"}
        # Fields whose values are not JSON as they are (dates, decimals): audit snapshots
        # convert only these.
        self.json_converted = [
            f for f in fields.values() if type(f.kind).to_json is not FieldType.to_json
        ]
        self.field_names = tuple(fields)

    @staticmethod
    def _formula_order(fields: Mapping[str, Field]) -> list[Field]:
        graph = {}
        for f in fields.values():
            if f.formula is not None:
                graph[f.name] = {
                    n for n in formula_names(f.formula) if n in fields and fields[n].formula
                }
        return [fields[n] for n in graphlib.TopologicalSorter(graph).static_order()]


def _form_requirements(form) -> tuple:
    """(field, required_if, visibility conditions) for each required_if item of a form."""
    if form is None:
        return ()
    rules = []
    for tab in form.tabs:
        for section in tab.sections:
            for column in section.columns:
                for item in column:
                    if item.required_if is None:
                        continue
                    shown_if = tuple(
                        c for c in (section.visible_if, item.visible_if) if c is not None
                    )
                    rules.append((item.field, item.required_if, shown_if))
    return tuple(rules)


def condition_text(node) -> str:
    """A typed filter tree as short text for a message: ``stage eq lost``."""
    if isinstance(node, Condition):
        if node.op in ("is_empty", "is_not_empty") or node.value is None:
            return f"{node.dotted} {node.op}"
        values = node.value if isinstance(node.value, tuple | list) else (node.value,)
        texts = [format(v.normalize(), "f") if isinstance(v, Decimal) else str(v) for v in values]
        text = f"[{', '.join(texts)}]" if isinstance(node.value, tuple | list) else texts[0]
        return f"{node.dotted} {node.op} {text}"
    if isinstance(node, Not):
        return f"not ({condition_text(node.child)})"
    joiner = " and " if isinstance(node, All) else " or "
    parts = [condition_text(c) for c in node.children]
    return joiner.join(
        p if isinstance(c, Condition) else f"({p})" for p, c in zip(parts, node.children)
    )


def _rollup_targets(catalog: Catalog, child: Entity):
    """(lookup on child, parent entity, parent rollup field) for rollups over this entity."""
    for parent in catalog.entities.values():
        for f in parent.fields.values():
            if f.rollup is None:
                continue
            children = parent.fields[f.rollup.children]
            if children.params.get("entity") == child.name:
                yield child.fields[children.params["via"]], parent, f


def plan_for(catalog: Catalog, entity: Entity) -> EntityPlan:
    return catalog.artifact(("entity-plan", entity.name), lambda: EntityPlan(catalog, entity))


def _jsonable(f: Field, value):
    if value is None:
        return None
    return f.kind.to_json(f, value)


class Records:
    """Records of one entity, as seen by one user."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        entity: Entity,
        user_id: int | None = None,
        *,
        tz: str = "UTC",
        locale: str = "en",
        access=None,
    ):
        self.store = store
        self.catalog = catalog
        self.entity = entity
        self.user_id = user_id
        self.tz = tz
        self.locale = locale
        self.access = access
        self.tables = tables_for(catalog)
        self.table = self.tables[entity.name]
        self.plan = plan_for(catalog, entity)
        self.dialect = store.engine.dialect.name

    # ------------------------------------------------------------------ helpers
    def context(self) -> FilterContext:
        return FilterContext(user_id=self.user_id, tz=self.tz, now=self.store.clock.now())

    def _today(self, now: dt.datetime) -> dt.date:
        return now.astimezone(ZoneInfo(self.tz)).date()

    def _unit(self):
        return self.store.transaction(self.user_id)

    @contextlib.contextmanager
    def _reading(self):
        """Inside a unit of work, reads see its own writes; outside, a pooled connection."""
        unit = self.store.current_unit()
        if unit is not None:
            yield unit.connection
            return
        with self.store.engine.connect() as conn:
            yield conn

    def _related(self, unit: UnitOfWork):
        def load(entity_name: str, ident):
            key = ("record", entity_name, ident)
            if key not in unit.cache:
                table = self.tables[entity_name]
                row = (
                    unit.connection.execute(sa.select(table).where(table.c.id == ident))
                    .mappings()
                    .first()
                )
                unit.cache[key] = dict(row) if row else None
            return unit.cache[key]

        return load

    # ------------------------------------------------------------------ preparing values
    def _coerce(
        self,
        values: Mapping[str, Any],
        errors: dict[str, list[str]],
        creating: bool,
        platform: bool = False,
        memo: dict | None = None,
    ) -> dict[str, Any]:
        """Values as their fields take them.  ``memo`` (a bulk write's): text already
        coerced for a field, since imported rows repeat a title, a city, a category."""
        coerced: dict[str, Any] = {}
        fields = self.entity.fields
        writable = self.plan.writable
        coercers, read_only = self.plan.coercers, self.plan.read_only
        tz, locale = self.tz, self.locale
        for name, value in values.items():
            f = writable.get(name)
            if f is None:
                if name in SETTABLE_SYSTEM:
                    try:
                        coerced[name] = None if value is None else T_ID(value)
                    except CoercionError as exc:
                        errors.setdefault(name, []).append(exc.message)
                    continue
                if name in fields:
                    reason = "is computed" if fields[name].computed else "is read-only"
                    errors.setdefault(name, []).append(f"{name} {reason} and cannot be set")
                elif name in SYSTEM_COLUMNS:
                    errors.setdefault(name, []).append(f"{name} is set by the platform")
                else:
                    errors.setdefault(name, []).append(
                        f"unknown field{did_you_mean(name, writable)}"
                    )
                continue
            if name in read_only and self.access is not None and not platform:
                errors.setdefault(name, []).append(f"{name} is read-only")
                continue
            if memo is not None and type(value) is str:
                known = memo.get((name, value), _UNSEEN)
                if known is not _UNSEEN:
                    coerced[name] = known
                    continue
            try:
                # text in the user's locale (numbers, dates), a time without zone in theirs
                result = coercers[name](f, value, tz=tz, locale=locale)
            except CoercionError as exc:
                errors.setdefault(name, []).append(exc.message)
                continue
            coerced[name] = result
            if memo is not None and type(value) is str and type(result) in _SHAREABLE:
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                memo[(name, value)] = result
        return coerced

    def _coerce_stamp(self, stamp: Mapping[str, Any], errors: dict[str, list[str]]) -> dict:
        """A platform stamp's values (``update(stamp=...)``): fields only, read-only ones
        included; a file or a set of links is not a stamp."""
        fields = self.plan.writable
        for name in stamp:
            f = fields.get(name)
            if f is None or not f.stored or name in self.plan.file_fields:
                errors.setdefault(name, []).append(f"{name} cannot be stamped")
        kept = {n: v for n, v in stamp.items() if n not in errors}
        return self._coerce(kept, errors, creating=False, platform=True)

    def _apply_defaults(self, record: dict, given: Mapping, now: dt.datetime) -> None:
        for f in self.plan.defaults:
            if f.name in given:
                continue
            default = f.default
            if default == "current_user":
                record[f.name] = self.user_id
            elif default == "current_account":  # the writer's account (none: the platform)
                record[f.name] = self.access.principal.account_id if self.access else None
            elif default == "today":
                record[f.name] = self._today(now) if f.type == "date" else now
            elif default == "now":
                record[f.name] = now
            else:
                record[f.name] = f.kind.coerce(f, default)

    def _compute(self, record: dict, now: dt.datetime, formulas: list | None = None) -> None:
        """Work out ``formulas`` (default: all of them, in dependency order) on the record."""
        formulas = self.plan.formulas if formulas is None else formulas
        if not formulas:
            return
        values = {**self.plan.formula_inputs, **record}  # absent fields are None, not undefined
        if values["created_at"] is None:  # a new record: what its insert will stamp
            values.update(created_at=now, updated_at=now)
            values.update(created_by=self.user_id, updated_by=self.user_id)
        for f in formulas:
            value = evaluate_formula(f.formula, values, now)
            try:
                record[f.name] = f.kind.coerce(f, value) if value is not None else None
            except CoercionError:
                record[f.name] = None
            values[f.name] = record[f.name]

    def _score(self, unit: UnitOfWork, record: dict, now: dt.datetime) -> None:
        """The entity's scoring model on the record being written: after the formulas its
        rules may read, before the formulas over the score.  A stored record outside the
        model's ``where`` keeps its score; the decay moves the others later
        (``storage.scoring.rescore``)."""
        if self.entity.scoring is None:
            return
        getter = record_getter(record, self._related(unit))
        ctx = FilterContext(user_id=self.user_id, tz=self.tz, now=now)
        where = self.entity.scoring.where
        if record.get("id") and where is not None and not matches(where, getter, ctx):
            return
        anchor = S.anchor_of(self.entity, record, now)
        record.update(S.score_values(self.entity, getter, ctx, anchor, now))

    def _validate(
        self, unit: UnitOfWork, record: dict, old: dict | None, errors: dict[str, list[str]]
    ) -> None:
        for f in self.plan.required:
            if f.name in errors:
                continue
            value = record.get(f.name)
            if value is None or value == [] or value == "":
                errors.setdefault(f.name, []).append("required")
        if self.plan.required_if:
            self._validate_required_if(unit, record, errors)
        self._validate_stage(record, old, errors)
        self._validate_any_lookups(unit, record, old, errors)
        self._validate_owner(unit, record, old, errors)
        self._validate_link_access(unit, record, old, errors)
        if self.plan.hierarchies and old is not None:
            self._validate_hierarchies(unit, record, old, errors)
        if errors:
            return
        if not self.entity.validations:
            return
        getter = record_getter(record, self._related(unit))
        ctx = self.context()
        for validation in self.entity.validations:
            if not validation.enabled:
                continue  # switched off (in its pack, or by an administrator)
            if matches(validation.when, getter, ctx):
                target = validation.fields[0] if validation.fields else ALL_KEY
                errors.setdefault(target, []).append(validation.message.get(self.locale))

    def _validate_required_if(
        self, unit: UnitOfWork, record: dict, errors: dict[str, list[str]]
    ) -> None:
        getter = record_getter(record, self._related(unit))
        ctx = self.context()
        for name, condition, shown_if in self.plan.required_if:
            value = record.get(name)
            if name in errors or not (value is None or value == [] or value == ""):
                continue
            if all(matches(c, getter, ctx) for c in shown_if) and matches(condition, getter, ctx):
                errors.setdefault(name, []).append(f"required when {condition_text(condition)}")

    def _validate_owner(
        self, unit: UnitOfWork, record: dict, old: dict | None, errors: dict
    ) -> None:
        owner = record.get("owner")
        if owner is None or (old is not None and old.get("owner") == owner):
            return
        key = ("user-exists", owner)
        if key not in unit.cache:  # one look per user and transaction
            found = unit.raw_connection.execute(
                sa.select(T.users.c.id).where(T.users.c.id == owner)
            ).first()
            unit.cache[key] = found is not None
        if not unit.cache[key]:
            errors.setdefault("owner", []).append(f"user {owner} does not exist")

    def _may(self, unit: UnitOfWork, entity_name: str, ids, action: str) -> bool:
        """Whether this user may ``action`` every one of these records (one query per
        entity, action and set of ids in a transaction)."""
        ids = [i for i in ids if i is not None]
        if not ids or self.access is None:
            return True
        table = self.tables[entity_name]
        scope = self.access.scope_condition(table, entity_name, action)
        if scope is None:
            return True
        key = ("may", entity_name, action, tuple(sorted(set(ids))))
        if key not in unit.cache:
            found = unit.connection.execute(
                sa.select(sa.func.count()).where(table.c.id.in_(set(ids)), scope)
            ).scalar_one()
            unit.cache[key] = found == len(set(ids))
        return unit.cache[key]

    def _validate_link_access(
        self, unit: UnitOfWork, record: dict, old: dict | None, errors: dict
    ) -> None:
        """A user may only link to records they may read (a record they may not read is
        answered as missing), and may only add a detail record to a parent (a lookup with
        ``on_delete: cascade``) or move one away from it when they may update the parent."""
        if self.access is None or self.access.is_admin:
            return
        for f in self.plan.lookups:
            if f.name in errors:
                continue
            value, before = record.get(f.name), (old or {}).get(f.name)
            if value == before:
                continue
            target = f.params["to"]
            if not self._may(unit, target, [value], "read"):
                errors.setdefault(f.name, []).append("the linked record does not exist")
            elif f.name in self.plan.detail_of and not self._may(
                unit, target, [value, before], "update"
            ):
                errors.setdefault(f.name, []).append(f"you may not change this {target}")
        for name in self.plan.m2m:
            # the ids added (a record already linked stays, readable to this user or not)
            added = set(record.get(name) or ()) - set((old or {}).get(name) or ())
            if added and name not in errors:
                target = self.entity.fields[name].params["to"]
                if not self._may(unit, target, sorted(added), "read"):
                    errors.setdefault(name, []).append("a linked record does not exist")

    def _validate_hierarchies(self, unit: UnitOfWork, record: dict, old: dict, errors) -> None:
        """A hierarchy field may not make the record its own ancestor: the new parent's
        chain of parents (one recursive query, over every record whoever may read them, so
        that a cycle through records the writer cannot see is refused too) must not reach
        the record.  A new record has no descendants yet, so only updates are checked."""
        for f in self.plan.hierarchies:
            value = record.get(f.name)
            if value is None or value == old.get(f.name) or f.name in errors:
                continue
            if value == old["id"]:
                errors.setdefault(f.name, []).append("a record cannot be its own parent")
                continue
            column = self.table.c[f.name]
            up = (
                sa.select(self.table.c.id.label("id"), column.label("up"))
                .where(self.table.c.id == value)
                .cte(f"ancestors_{f.name}", recursive=True)
            )
            step = self.table.alias("parent_step")
            up = up.union(
                sa.select(step.c.id, step.c[f.name]).where(step.c.id == up.c.up)
            )  # UNION, not UNION ALL: a cycle already stored ends the walk too
            found = unit.connection.execute(
                sa.select(sa.literal(1)).select_from(up).where(up.c.id == old["id"]).limit(1)
            ).first()
            if found is not None:
                errors.setdefault(f.name, []).append(
                    "this would make the record its own ancestor (a loop in the hierarchy)"
                )

    def _validate_any_lookups(
        self, unit: UnitOfWork, record: dict, old: dict | None, errors: dict
    ) -> None:
        for f in self.plan.any_lookups:
            value = record.get(f.name)
            if not value or (old is not None and old.get(f.name) == value) or f.name in errors:
                continue
            target = self.catalog.entity_of(value["entity"])
            if target is None:
                errors.setdefault(f.name, []).append(f"unknown entity {value['entity']!r}")
                continue
            table = self.tables[target.name]
            exists = (
                unit.connection.execute(
                    sa.select(table.c.id).where(table.c.id == value["id"])
                ).first()
                is not None
            )
            if not exists or not self._may(unit, target.name, [value["id"]], "read"):
                errors.setdefault(f.name, []).append(f"{target.name} {value['id']} does not exist")

    def _apply_stage(self, record: dict, old: dict | None) -> None:
        """A record entering a stage takes the stage's probability (before formulas run,
        so that ``expected_revenue`` reads the new one)."""
        flow = self.entity.stages
        if flow is None or not flow.probability_field:
            return
        new_stage = record.get(flow.field)
        if new_stage is None or (old is not None and old.get(flow.field) == new_stage):
            return
        stage = flow.steps.get(new_stage)
        if stage is not None and stage.probability is not None:
            target = self.entity.fields[flow.probability_field]
            record[flow.probability_field] = target.kind.coerce(target, stage.probability)

    def _validate_stage(self, record: dict, old: dict | None, errors: dict[str, list[str]]) -> None:
        flow = self.entity.stages
        if flow is None:
            return
        new_stage = record.get(flow.field)
        old_stage = old.get(flow.field) if old else None
        if new_stage is None or new_stage == old_stage:
            return
        stage = flow.steps.get(new_stage)
        if old_stage is not None and old_stage in flow.steps:
            allowed = flow.steps[old_stage].next
            if allowed is not None and new_stage not in allowed:
                label = self.entity.fields[flow.field].format(new_stage, self.locale)
                before = self.entity.fields[flow.field].format(old_stage, self.locale)
                errors.setdefault(flow.field, []).append(f"cannot move from {before} to {label}")
        guarded = (
            stage is not None
            and stage.roles
            and self.access is not None
            and not self.access.is_admin
        )
        if guarded and not set(stage.roles) & set(
            self.access.principal.roles
        ):  # the stage's role guard
            label = self.entity.fields[flow.field].format(new_stage, self.locale)
            errors.setdefault(flow.field, []).append(f"your role may not move a record to {label}")
        if stage is not None:
            for name in stage.requires:
                value = record.get(name)
                if value is None or value == "" or value == []:
                    label = self.entity.fields[flow.field].format(new_stage, self.locale)
                    errors.setdefault(name, []).append(f"required for stage {label}")

    def _unique_message(self, key: tuple[str, ...]) -> str:
        if len(key) == 1:
            return f"another {self.entity.name} already has this value"
        return f"another {self.entity.name} already has this combination of {', '.join(key)}"

    def _check_unique(
        self, unit: UnitOfWork, record: dict, record_id: int | None, errors: dict
    ) -> None:
        for key in self.plan.unique_keys:
            values = [record.get(name) for name in key]
            if any(v is None for v in values) or key[0] in errors:
                continue  # empty values never collide (as in SQL)
            query = (
                sa.select(self.table.c.id)
                .where(*(self.table.c[n] == v for n, v in zip(key, values)))
                .limit(1)
            )
            if record_id is not None:
                query = query.where(self.table.c.id != record_id)
            if unit.connection.execute(query).first() is not None:
                errors.setdefault(key[0], []).append(self._unique_message(key))

    def _columns(self, record: Mapping) -> dict:
        """Record values as column values (a polymorphic lookup fills two columns)."""
        row = {}
        for name, f in self.plan.columns.items():
            if name not in record:
                continue
            value = record[name]
            if f.type == "any_lookup":
                row[f"{name}_entity"] = value["entity"] if value else None
                row[f"{name}_id"] = value["id"] if value else None
            else:
                row[name] = value
        if "owner" in record:
            row["owner"] = record["owner"]
        return row

    def _record(self, row: Mapping) -> dict:
        record = dict(row)
        for f in self.plan.any_lookups:
            entity_name = record.pop(f"{f.name}_entity", None)
            ident = record.pop(f"{f.name}_id", None)
            record[f.name] = {"entity": entity_name, "id": ident} if ident is not None else None
        return record

    def _next_number(self, unit: UnitOfWork, f: Field, now: dt.datetime) -> str:
        pattern = f.params["pattern"]
        today = self._today(now)
        key = f"{self.entity.name}.{f.name}:{AutonumberType.counter_scope(pattern, today)}"
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(T.counters)
        statement = (
            insert.values(key=key, value=1)
            .on_conflict_do_update(index_elements=["key"], set_={"value": T.counters.c.value + 1})
            .returning(T.counters.c.value)
        )
        number = unit.connection.execute(statement).scalar_one()
        return AutonumberType.render(pattern, number, today)

    def _check_access(self, action: str, record: dict | None = None) -> None:
        if self.access is not None:
            self.access.check(self, action, record)

    def _check_writes(self, values: Mapping[str, Any]) -> None:
        if self.access is None:
            return
        locked = self.access.read_only(self.entity) & set(values)
        if locked:
            raise Forbidden(f"you may not change {', '.join(sorted(locked))}")

    def readable_fields(self) -> list[str]:
        hidden = self.access.hidden(self.entity) if self.access else set()
        return [n for n in self.entity.fields if n not in hidden]

    def writable_fields(self) -> list[str]:
        """The fields this caller may set (a user: ``Access.writable``, what forms offer;
        the platform: every field that is not computed)."""
        if self.access is not None:
            allowed = self.access.writable(self.entity)
            return [n for n in self.entity.fields if n in allowed]
        return [n for n, f in self.entity.fields.items() if not f.computed]

    def _check_reads(self, tree, paths: Iterable[str]) -> None:
        """A user may not filter, sort, select or search by what they may not read."""
        if self.access is None:
            return
        from ..metadata.filters import ReadRefused, conditions_of, resolve_path

        checked = [(c.path, c.lookups) for c in conditions_of(tree)]
        for path in paths:
            _, lookups = resolve_path(self.entity, path, self.catalog.entity_of)
            checked.append((tuple(path.split(".")), lookups))
        for path, lookups in checked:
            entity = self.entity
            for step, lookup in zip(path, lookups):
                if step in self.access.hidden(entity):
                    raise ReadRefused("you may not read this field", ".".join(path))
                entity = self.catalog.entity(lookup.params["to"])
                if self.access.scope_of(entity.name, "read") == "none":
                    raise ReadRefused(f"you may not read {entity.name} records", ".".join(path))
            if path[-1] in self.access.hidden(entity):
                raise ReadRefused("you may not read this field", ".".join(path))

    def _strip_hidden(self, records: list[dict]) -> None:
        if self.access is None:
            return
        hidden = self.access.hidden(self.entity)
        if hidden:
            for record in records:
                for name in hidden:
                    record.pop(name, None)

    # ------------------------------------------------------------------ writes
    def _prepare_new(
        self,
        unit: UnitOfWork,
        values: Mapping,
        now: dt.datetime,
        errors: dict,
        memo: dict | None = None,
    ) -> dict:
        record = self._coerce(values, errors, creating=True, memo=memo)
        self._apply_defaults(record, values, now)
        for f in self.plan.zero_rollups:
            record[f.name] = f.kind.coerce(f, 0)
        if "owner" not in record:
            record["owner"] = self.user_id
        self._apply_stage(record, None)
        self._compute(record, now, self.plan.unscored_formulas)
        self._score(unit, record, now)
        self._compute(record, now, self.plan.score_formulas)
        self._validate(unit, record, None, errors)
        return record

    def create(self, values: Mapping[str, Any]) -> dict:
        """Create one record; returns it with id and version.  Raises ValidationFailed."""
        self._check_access("create")
        self._check_writes(values)
        standalone = self.store.current_unit() is None
        with self._unit() as unit:
            now = unit.now
            values, errors = self._own_files(values, None)
            record = self._prepare_new(unit, values, now, errors)
            if self.access is not None:
                self.access.check_owner(self, record.get("owner"), record)
            self._check_unique(unit, record, None, errors)
            if errors:
                raise ValidationFailed(errors)
            for f in self.plan.autonumbers:
                record[f.name] = self._next_number(unit, f, now)
            if self.plan.formulas_read_numbers:
                self._compute(record, now)
            links = {name: record.pop(name) for name in self.plan.m2m if name in record}
            row = self._columns(record)
            if self.entity.duplicates:
                row.update(D.keys_for(self.catalog, self.entity).all(record))
            row.update(
                created_at=now,
                updated_at=now,
                created_by=self.user_id,
                updated_by=self.user_id,
                version=1,
            )
            record_id = self._insert(unit, row)
            record.update(
                id=record_id,
                created_at=now,
                updated_at=now,
                created_by=self.user_id,
                updated_by=self.user_id,
                version=1,
            )
            for name, ids in links.items():
                self._set_links(unit, name, record_id, ids)
                record[name] = ids
            self._after_write(unit, [record], None, now)
            if self.entity.audit:
                unit.audit_rows.append(
                    self._audit("create", record_id, None, None, self._snapshot(record), now)
                )
            unit.record_event(
                "created",
                self.entity.name,
                record_id,
                self.user_id,
                now,
                None,
                self._values_of(record),
            )
            if standalone:  # write now, so that a database refusal names this record's fields
                try:
                    unit.write_pending()
                except sa.exc.IntegrityError as exc:
                    raise self._integrity(exc, unit, [row]) from None
            return self._as_seen(record)

    def _insert(self, unit: UnitOfWork, row: dict) -> int:
        """Reserve the id and defer the row to the unit of work (written in batches)."""
        ident = unit.next_ids(self.table, 1)[0]
        row["id"] = ident
        unit.defer_insert(
            compiled_insert(self.catalog, self.table, unit.dialect, with_id=True, returning=False),
            row,
        )
        return ident

    def _integrity(
        self,
        exc: sa.exc.IntegrityError,
        unit: UnitOfWork | None = None,
        rows: Sequence[Mapping] = (),
    ) -> RecordError:
        text = str(exc.orig).lower()
        for f in self.plan.unique:
            if f.name in text:
                return ValidationFailed(
                    {f.name: [f"another {self.entity.name} already has this value"]}
                )
        if "foreign key" in text:
            errors = self._missing_links(text, unit, rows)
            return ValidationFailed(
                errors or {ALL_KEY: ["a linked record does not exist or is still in use"]}
            )
        return ValidationFailed({ALL_KEY: [f"rejected by the database: {exc.orig}"]})

    def refusal(self, exc: sa.exc.IntegrityError, unit: UnitOfWork | None = None) -> RecordError:
        """What the database's refusal of this entity's rows means, as ``ValidationFailed``
        (for a caller that wrote deferred rows itself: an import's savepoint)."""
        return self._integrity(exc, unit)

    def _missing_links(self, text: str, unit: UnitOfWork | None, rows: Sequence[Mapping]) -> dict:
        """Which lookup points at a record that does not exist (PostgreSQL names the
        constraint; SQLite does not, so the values are looked up; its failed statement
        leaves the transaction usable)."""
        lookups = [f for f in self.entity.fields.values() if f.type == "lookup"]
        named = [f for f in lookups if f"fk_{self.entity.name}_{f.name}" in text]
        if named:
            return {f.name: ["the linked record does not exist"] for f in named}
        if unit is None or unit.connection.dialect.name != "sqlite":
            return {}
        errors = {}
        for f in lookups:
            wanted = {row.get(f.name) for row in rows} - {None}
            if wanted:
                target = self.tables[f.params["to"]]
                found = set(
                    unit.connection.execute(
                        sa.select(target.c.id).where(target.c.id.in_(list(wanted)))
                    ).scalars()
                )
                if wanted - found:
                    errors[f.name] = ["the linked record does not exist"]
        return errors

    def _linked_ids(self, conn: sa.Connection, name: str, record_id: int) -> list[int]:
        """The ids a many-to-many field of the record links, in order."""
        link = self.tables.link(self.entity.name, name)
        statement = (
            sa.select(link.c.target_id)
            .where(link.c.source_id == record_id)
            .order_by(link.c.target_id)
        )
        return list(conn.execute(statement).scalars())

    def _set_links(self, unit: UnitOfWork, name: str, record_id: int, ids: Sequence[int]) -> None:
        link = self.tables.link(self.entity.name, name)
        unit.connection.execute(link.delete().where(link.c.source_id == record_id))
        if ids:
            try:
                unit.connection.execute(
                    link.insert(), [{"source_id": record_id, "target_id": i} for i in ids]
                )
            except sa.exc.IntegrityError:
                raise ValidationFailed({name: ["a linked record does not exist"]}) from None

    def _snapshot(self, record: Mapping) -> dict:
        # by the fields (a record being written also holds its id, system columns and keys)
        get = record.get
        snapshot = {n: v for n in self.plan.field_names if (v := get(n)) is not None}
        for f in self.plan.json_converted:
            value = snapshot.get(f.name)
            if value is not None:
                snapshot[f.name] = f.kind.to_json(f, value)
        return snapshot

    def _audit(self, action, record_id, field_name, old, new, now) -> dict:
        return {
            "entity": self.entity.name,
            "record_id": record_id,
            "action": action,
            "field": field_name,
            "old": old,
            "new": new,
            "user_id": self.user_id,
            "at": now,
        }

    def get(self, record_id: int, fields: Sequence[str] | None = None) -> dict:
        rows = self.query(filter=["id", "eq", record_id], fields=fields, limit=1).rows
        if not rows:
            raise NotFound(self.entity.name, record_id)
        record = rows[0]
        if fields is None and self.plan.m2m:
            with self._reading() as conn:
                for name in self.plan.m2m:
                    record[name] = self._linked_ids(conn, name, record_id)
        return record

    def _load_for_write(self, unit: UnitOfWork, record_id: int) -> dict:
        row = (
            unit.connection.execute(
                sa.select(*T.record_columns(self.table)).where(self.table.c.id == record_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(self.entity.name, record_id)
        return self._record(row)

    def update(
        self,
        record_id: int,
        values: Mapping[str, Any],
        version: int | None = None,
        *,
        stamp: Mapping[str, Any] | None = None,
    ) -> dict:
        """Change fields of a record.  With ``version``, a stale write is a Conflict.

        ``stamp`` holds fields the platform sets in the same write, on behalf of what the
        user did (a wizard's finish noting the records a lead was converted into): read-only
        fields and the role's read-only fields are open to it, computed fields and the
        system columns are not, and the user must still be allowed to update the record."""
        with self._unit() as unit:
            now = unit.now
            old = self._load_for_write(unit, record_id)
            self._check_access("update", old)
            self._check_writes(values)
            if self.access is not None and "owner" in values and values["owner"] != old["owner"]:
                # Giving a record away is creating it for someone else: the create scope.
                self.access.check_owner(self, T_ID(values["owner"]) if values["owner"] else None)
            if version is not None and old["version"] != version:
                raise Conflict(self.entity.name, record_id, version, old["version"])
            values, errors = self._own_files(values, old)
            given = self._coerce(values, errors, creating=False)
            if stamp:
                given.update(self._coerce_stamp(stamp, errors))
            links = {name: given.pop(name) for name in list(given) if name in self.plan.m2m}
            if links:  # the ids linked now, so that only a change is checked and recorded
                conn = unit.connection
                old = {**old, **{n: self._linked_ids(conn, n, record_id) for n in links}}
                links = {n: sorted(set(ids or ())) for n, ids in links.items()}
                links = {n: ids for n, ids in links.items() if ids != old[n]}
            record = {**old, **given, **links}
            if self.access is not None:
                self.access.check_account(self, record, old)
            self._apply_stage(record, old)
            self._compute(record, now, self.plan.unscored_formulas)
            self._score(unit, record, now)
            self._compute(record, now, self.plan.score_formulas)
            self._validate(unit, record, old, errors)
            self._check_unique(unit, record, record_id, errors)
            if errors:
                raise ValidationFailed(errors)
            changed = {
                name: (old.get(name), record.get(name))
                for name in self.plan.columns
                if name in record and record.get(name) != old.get(name)
            }
            if "owner" in given and given["owner"] != old.get("owner"):
                changed["owner"] = (old.get("owner"), given["owner"])
            # a change of links is a change of the field: its audit row and its event
            changed.update((name, (old[name], ids)) for name, ids in links.items())
            if not changed:
                return self._as_seen(record)
            row = self._columns({n: record[n] for n in changed if n in record})
            if self.entity.duplicates:
                row.update(D.keys_for(self.catalog, self.entity).changed(record, changed))
            if "owner" in changed:
                row["owner"] = changed["owner"][1]
            new_version = old["version"] + 1
            row.update(updated_at=now, updated_by=self.user_id, version=new_version)
            row.update(_id=record_id, _version=old["version"])
            try:
                result = unit.connection.execute(self._update_statement(), row)
            except sa.exc.IntegrityError as exc:
                raise self._integrity(exc, unit, [row]) from None
            if result.rowcount != 1:
                current = unit.connection.execute(
                    sa.select(self.table.c.version).where(self.table.c.id == record_id)
                ).scalar()
                if current is None:
                    raise NotFound(self.entity.name, record_id)
                raise Conflict(self.entity.name, record_id, old["version"], current)
            for name, ids in links.items():
                self._set_links(unit, name, record_id, ids)
                record[name] = ids
            record.update(updated_at=now, updated_by=self.user_id, version=new_version)
            self._after_write(unit, [record], [old], now)
            fields = self.entity.fields
            if self.entity.audit:
                for name, (before, after) in changed.items():
                    f = fields.get(name)
                    conv = (lambda v, f=f: _jsonable(f, v)) if f else (lambda v: v)
                    unit.audit_rows.append(
                        self._audit("update", record_id, name, conv(before), conv(after), now)
                    )
            changes = {
                name: [
                    _jsonable(fields[name], b) if name in fields else b,
                    _jsonable(fields[name], a) if name in fields else a,
                ]
                for name, (b, a) in changed.items()
            }
            unit.record_event(
                "updated",
                self.entity.name,
                record_id,
                self.user_id,
                now,
                changes,
                self._values_of(record),
            )
            return self._as_seen(record)

    def _update_statement(self):
        table = self.table
        return self.catalog.artifact(
            ("update-versioned", self.entity.name),
            lambda: table.update().where(
                table.c.id == sa.bindparam("_id"), table.c.version == sa.bindparam("_version")
            ),
        )

    def delete(self, record_id: int, version: int | None = None) -> None:
        with self._unit() as unit:
            now = unit.now
            old = self._load_for_write(unit, record_id)
            self._check_access("delete", old)
            if version is not None and old["version"] != version:
                raise Conflict(self.entity.name, record_id, version, old["version"])
            self._check_parents_on_delete(unit, old)
            if self.entity.name == ACCOUNT_ENTITY:
                self._check_account_users(unit, record_id)
            self._before_cascade(unit, record_id, now)
            try:
                unit.connection.execute(self.table.delete().where(self.table.c.id == record_id))
            except sa.exc.IntegrityError:
                raise ValidationFailed(
                    {ALL_KEY: [f"this {self.entity.name} is still referenced by other records"]}
                ) from None
            self._after_write(unit, [], [old], now)
            if self.entity.audit:
                unit.audit_rows.append(
                    self._audit("delete", record_id, None, self._snapshot(old), None, now)
                )
            unit.record_event("deleted", self.entity.name, record_id, self.user_id, now, None)

    def _check_account_users(self, unit: UnitOfWork, record_id: int) -> None:
        """Users belong to accounts (``xrm_user.account_id``, read by the account scope):
        an account users belong to is kept, as a lookup with ``on_delete: restrict`` is."""
        linked = unit.connection.execute(
            sa.select(T.users.c.id).where(T.users.c.account_id == record_id).limit(1)
        ).scalar()
        if linked is not None:
            message = f"users belong to this {self.entity.name}: unlink them first"
            raise ValidationFailed({ALL_KEY: [message]})

    def _check_parents_on_delete(self, unit: UnitOfWork, old: dict) -> None:
        """Deleting a detail record changes its parent: the user must be able to update it."""
        if self.access is None or self.access.is_admin:
            return
        for f in self.plan.lookups:
            parent = old.get(f.name)
            feeds = f.name in self.plan.detail_of and parent is not None
            if feeds and not self._may(unit, f.params["to"], [parent], "update"):
                raise Forbidden(f"you may not change this {f.params['to']}")

    def _own_files(self, values: Mapping, old: dict | None) -> tuple[Mapping, dict]:
        """A user may set a file field only to a file they uploaded, or keep the record's
        own (``files.check_file_values``); the platform itself may attach any file."""
        errors: dict[str, list[str]] = {}
        if self.access is None or not self.plan.file_fields.intersection(values):
            return values, errors
        values = dict(values)
        errors.update(check_file_values(self.store, self.entity, values, old, self.user_id))
        return values, errors

    def _values_of(self, record: Mapping):
        """The record's values as JSON, for the fields an outbox row keeps (called lazily)."""
        fields = self.entity.fields
        return lambda names: {n: _jsonable(fields[n], record.get(n)) for n in names}

    def _as_seen(self, record: dict) -> dict:
        """A written record as its writer may read it: fields hidden from them left out,
        and rollups they see only in part (read the record back to see their share)."""
        if self.access is None:
            return record
        drop = self.access.hidden(self.entity) | self.access.scoped_rollups(self.entity)
        if not drop:
            return record
        return {k: v for k, v in record.items() if k not in drop}

    def _before_cascade(self, unit: UnitOfWork, record_id: int, now) -> None:
        """Children that the database deletes with this record (on_delete: cascade) leave
        the rollups of their other parents; take them out first, as their own deletes would."""
        for child, lookup in self.catalog.children_of(self.entity.name):
            if lookup.on_delete != "cascade" or not plan_for(self.catalog, child).rollup_targets:
                continue
            table = self.tables[child.name]
            rows = (
                unit.connection.execute(sa.select(table).where(table.c[lookup.name] == record_id))
                .mappings()
                .all()
            )
            if rows:
                children = Records(
                    self.store, self.catalog, child, self.user_id, tz=self.tz, locale=self.locale
                )
                children._after_write(unit, [], [children._record(r) for r in rows], now)

    def _after_write(self, unit: UnitOfWork, new: list[dict], old: list[dict] | None, now) -> None:
        """Keep parents' rollups over this entity current, for old and new parents.

        Sums and counts move by the change's delta (one UPDATE per parent, whatever the
        number of children); averages, minimums and maximums are recomputed."""
        if self.entity.stages is not None:
            self._stage_history(unit, new, old, now)
        for lookup, parent, rollup_field in self.plan.rollup_targets:
            rollup = rollup_field.rollup
            if rollup.aggregate in ("sum", "count"):
                tree = rollup_filter(self.catalog, parent, rollup_field)
                deltas = self._rollup_deltas(unit, lookup, rollup, tree, new, old or ())
                if deltas:
                    statement = self.catalog.artifact(
                        ("rollup-delta", parent.name, rollup_field.name),
                        lambda p=parent, f=rollup_field: _delta_statement(self.tables[p.name], f),
                    )
                    unit.add_rollup_deltas(statement, deltas)
                    self._recompute_after_rollups(unit, parent, deltas)
                continue
            ids = {r.get(lookup.name) for r in new} | {r.get(lookup.name) for r in (old or ())}
            ids.discard(None)
            if ids:
                refresh_rollup(
                    unit.connection, self.catalog, self.entity, lookup, parent, rollup_field, ids
                )
                self._recompute_after_rollups(unit, parent, ids)

    def _recompute_after_rollups(self, unit: UnitOfWork, parent: Entity, ids) -> None:
        """Have the parents' formulas over rollups computed again, and the parents rescored
        when their scoring rules read a rollup, once the unit has moved the rollups: one
        pass over all the parents the unit's children moved (nothing to do for the usual
        parent, which has neither)."""
        if not plan_for(self.catalog, parent).rollup_formulas and not S.rescores_on_rollups(
            self.catalog, parent
        ):
            return
        key = ("rollup-formulas", parent.name)
        pending = unit.cache.get(key)
        if pending is None:
            pending = unit.cache[key] = set()
            catalog, tz = self.catalog, self.tz

            def refresh(conn):
                unit.cache.pop(key, None)  # a later write in the unit starts a new set
                S.after_rollups(conn, catalog, parent, pending, unit.now, tz)

            unit.after_rollups.append(refresh)
        pending.update(ids)

    def _stage_history(
        self, unit: UnitOfWork, new: list[dict], old: list[dict] | None, now
    ) -> None:
        """Close the stay in the stage a record leaves and open one in the stage it enters,
        in the same transaction as the change (time in stage, historical funnel)."""
        name = self.entity.stages.field
        previous = {r["id"]: r.get(name) for r in old or ()}
        closing, opening = [], []
        for record in new:
            stage, was = record.get(name), previous.pop(record["id"], None)
            if stage == was:
                continue
            if was is not None:
                closing.append(record["id"])
            if stage is not None:
                opening.append(
                    {
                        "entity": self.entity.name,
                        "record_id": record["id"],
                        "stage": stage,
                        "previous": was,
                        "entered_at": now,
                        "left_at": None,
                        "user_id": self.user_id,
                    }
                )
        closing.extend(ident for ident, stage in previous.items() if stage is not None)  # deleted
        history = T.stage_history
        if closing:
            unit.connection.execute(
                history.update()
                .where(
                    history.c.entity == self.entity.name,
                    history.c.record_id.in_(closing),
                    history.c.left_at.is_(None),
                )
                .values(left_at=now)
            )
        for row in opening:
            unit.defer_insert(
                compiled_insert(self.catalog, history, unit.dialect, returning=False),
                row,
            )

    def _rollup_deltas(self, unit, lookup: Field, rollup, tree, new, old) -> dict:
        ctx = FilterContext()
        related = self._related(unit)

        def contribution(record):
            if record.get(lookup.name) is None:
                return 0
            if tree is not None and not matches(tree, record_getter(record, related), ctx):
                return 0
            if rollup.aggregate == "count":
                return 1
            return record.get(rollup.field) or 0

        deltas: dict = {}
        for sign, records in ((1, new), (-1, old)):
            for record in records:
                amount = contribution(record)
                if amount:
                    parent_id = record[lookup.name]
                    deltas[parent_id] = deltas.get(parent_id, 0) + sign * amount
        return {pid: d for pid, d in deltas.items() if d}

    def bulk_create(
        self, rows: Iterable[Mapping[str, Any]], *, partial: bool = False, batch_size: int = 500
    ) -> BulkResult:
        """Create many records with the same validation, in multi-row batches.

        Any invalid row means nothing is written, unless ``partial``: then the valid rows
        are written and each bad row is reported by its index.
        """
        self._check_access("create")
        result = BulkResult()
        rows = list(rows)
        with self._unit() as unit:
            now = unit.now
            prepared: list[tuple[int, dict]] = []
            memo: dict = {}
            for index, values in enumerate(rows):
                self._check_writes(values)
                values, errors = self._own_files(values, None)
                record = self._prepare_new(unit, values, now, errors, memo)
                if self.access is not None and not errors:
                    self.access.check_owner(self, record.get("owner"), record)
                if errors:
                    result.failures[index] = errors
                else:
                    prepared.append((index, record))
            self._bulk_unique(unit, prepared, result)
            if result.failures and not partial:
                raise BulkFailed(result.failures)
            prepared = [(i, r) for i, r in prepared if i not in result.failures]
            system = {
                "created_at": now,
                "updated_at": now,
                "created_by": self.user_id,
                "updated_by": self.user_id,
                "version": 1,
            }
            for start in range(0, len(prepared), batch_size):
                batch = prepared[start : start + batch_size]
                for f in self.plan.autonumbers:
                    for _, record in batch:
                        record[f.name] = self._next_number(unit, f, now)
                if self.plan.formulas_read_numbers:
                    for _, record in batch:
                        self._compute(record, now)
                links = [
                    {name: record.pop(name) for name in self.plan.m2m if name in record}
                    for _, record in batch
                ]
                keys = D.keys_for(self.catalog, self.entity).all if self.entity.duplicates else None
                polymorphic = bool(self.plan.any_lookups)
                compiled = compiled_insert(
                    self.catalog, self.table, unit.dialect, with_id=True, returning=False
                )
                parameters = compiled.parameters
                ids = unit.next_ids(self.table, len(batch))
                values = []
                for (_, record), ident in zip(batch, ids):
                    # The record is its own column row (no copy per row): its id, the system
                    # columns and its duplicate keys (hidden columns, not fields) join it.
                    record["id"] = ident
                    record.update(system)
                    if keys is not None:
                        record.update(keys(record))
                    row = {**record, **self._columns(record)} if polymorphic else record
                    values.append(parameters(row, positional=True))
                try:
                    unit.insert_converted(compiled, values)  # behind, when the unit writes behind
                except sa.exc.IntegrityError as exc:
                    rows = [dict(zip(compiled.names, row)) for row in values]
                    raise self._integrity(exc, unit, rows) from None
                records = []
                for (_, record), ident, link in zip(batch, ids, links):
                    for name, target_ids in link.items():
                        self._set_links(unit, name, ident, target_ids)
                    records.append(record)
                    if self.entity.audit:
                        unit.audit_rows.append(
                            self._audit("create", ident, None, None, self._snapshot(record), now)
                        )
                    unit.record_event(
                        "created",
                        self.entity.name,
                        ident,
                        self.user_id,
                        now,
                        None,
                        self._values_of(record),
                    )
                self._after_write(unit, records, None, now)
                unit.flush()
                result.ids.extend(ids)
        return result

    def _bulk_unique(
        self, unit: UnitOfWork, prepared: list[tuple[int, dict]], result: BulkResult
    ) -> None:
        for key in self.plan.unique_keys:
            seen: dict[Any, int] = {}
            for index, record in prepared:
                value = tuple(record.get(name) for name in key)
                if any(v is None for v in value):
                    continue
                if value in seen:
                    result.failures.setdefault(index, {}).setdefault(key[0], []).append(
                        f"duplicates row {seen[value]}"
                    )
                else:
                    seen[value] = index
            values = list(seen)
            columns = [self.table.c[name] for name in key]
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                if len(key) == 1:
                    found = unit.connection.execute(
                        sa.select(columns[0]).where(columns[0].in_([v[0] for v in chunk]))
                    )
                    taken = {(v,) for v in found.scalars()}
                else:
                    found = unit.connection.execute(
                        sa.select(*columns).where(sa.tuple_(*columns).in_(chunk))
                    )
                    taken = {tuple(row) for row in found}
                for value in taken:
                    if value in seen:
                        result.failures.setdefault(seen[value], {}).setdefault(key[0], []).append(
                            self._unique_message(key)
                        )

    # ------------------------------------------------------------------ reads
    def parse_filter(self, raw):
        """A raw filter (lists and dicts) as a checked tree; a tree passes through."""
        if isinstance(raw, Condition | All | AnyOf | Not):
            return raw
        return parse_filter(raw, self.entity, self.catalog.entity_of)

    def _select(self, fields: Sequence[str] | None, builder: Q.SqlBuilder):
        if fields is None:
            scoped = {}
            if self.access is not None:
                for name in self.access.scoped_rollups(self.entity):
                    column = builder.rollup_column(
                        self.table, self.entity, self.entity.fields[name]
                    )
                    scoped[name] = column.label(name)
            if not scoped:
                return T.record_columns(self.table), None
            return [scoped.get(c.key, c) for c in T.record_columns(self.table)], None
        columns, labels = (
            [self.table.c.id.label("id"), self.table.c.version.label("version")],
            ["id", "version"],
        )
        for path in fields:
            if path in ("id", "version"):
                continue
            f, _ = Q.resolve_path(self.entity, path, self.catalog.entity_of)
            if f.type == "any_lookup" and "." not in path:
                columns += [
                    self.table.c[f"{path}_entity"].label(f"{path}_entity"),
                    self.table.c[f"{path}_id"].label(f"{path}_id"),
                ]
                continue
            if not f.stored:
                raise FilterError(f"{f.type} field cannot be selected in a list", path)
            columns.append(builder.column(path).label(path))
            labels.append(path)
        return columns, labels

    def builder(self, ctx: FilterContext | None = None) -> Q.SqlBuilder:
        """The SQL builder of every read of this user: joins carry the targets' scopes."""
        return Q.builder(
            self.catalog, self.entity, ctx or self.context(), self.dialect, self.access
        )

    def conditions(self, builder: Q.SqlBuilder, tree, search: str | None = None) -> list:
        """What every read of this user filters by: the filter, the row scope, the search."""
        conditions = []
        if tree is not None:
            conditions.append(builder.compile(tree))
        scope = self.scope(builder)
        if scope is not None:
            conditions.append(scope)
        if search:
            conditions.append(self._search(search))
        return conditions

    def scope(self, builder: Q.SqlBuilder, action: str = "read"):
        """Row-level security: the condition every read of this user includes."""
        if self.access is None:
            return None
        return self.access.scope(self, builder, action)

    def query(
        self,
        filter=None,
        *,
        sort=None,
        fields: Sequence[str] | None = None,
        limit: int = 50,
        after: str | None = None,
        search: str | None = None,
    ) -> Page:
        """A keyset page of records; ``after`` is the ``next_cursor`` of the previous page."""
        limit = max(1, min(int(limit), Q.MAX_PAGE))
        prepared = self._prepared(filter, sort, fields, search)
        base, sort_spec, sort_columns, sort_fields, sort_labels = (
            prepared.base,
            prepared.sort_spec,
            prepared.sort_columns,
            prepared.sort_fields,
            prepared.sort_labels,
        )
        conditions = list(prepared.conditions)
        keyset = Q.Keyset.decode(after, sort_spec, sort_fields) if after else None
        with self._reading() as conn:
            if len(sort_spec) == 1:
                rows = self._two_phase_page(
                    conn, base, conditions, sort_columns[0], sort_spec[0][1], keyset, limit
                )
            else:
                if keyset is not None:
                    conditions.append(
                        Q.keyset_condition(sort_columns, sort_spec, self.table.c.id, keyset)
                    )
                statement = (
                    base.where(*conditions)
                    .order_by(*Q.order_by(sort_columns, sort_spec, self.table.c.id))
                    .limit(limit + 1)
                )
                rows = conn.execute(statement).all()
        more = len(rows) > limit
        rows = rows[:limit]
        keys = [c.key for c in base.selected_columns]
        width = len(keys) - len(sort_labels)  # the sort columns ride along at the end
        record_keys = keys[:width]
        records = [dict(zip(record_keys, row)) for row in rows]
        if self.plan.any_lookups:
            records = [self._record(r) for r in records]
        self._strip_hidden(records)
        cursor = None
        if more and rows:
            last = rows[-1]
            keyset = Q.Keyset(sort_spec, list(last[width:]), last[keys.index("id")])
            cursor = keyset.encode(sort_fields)
        return Page(records, cursor)

    def _prepared(self, filter, sort, fields, search) -> PreparedQuery:
        """The checked, compiled parts of a query, cached per query shape: a list page
        repeated with another cursor (or by another request) skips parsing, permission
        checks and statement building.  Relative dates resolve per day in the user's zone,
        so the day and zone are part of the key."""
        ctx = self.context()
        key = repr(
            (
                filter,
                sort,
                tuple(fields) if fields is not None else None,
                search,
                self.user_id,
                self.access.principal if self.access else None,
                ctx.today(),
                self.tz,
            )
        )
        cache = self.catalog.artifact(("query-cache", self.entity.name), lambda: LRU(512))
        found = cache.get(key)
        if found is not None:
            return found
        tree = self.parse_filter(filter)
        sort_spec = Q.normalize_sort(self.entity, self.catalog, sort)
        self._check_reads(tree, [*(fields or ()), *(p for p, _ in sort_spec)])
        builder = self.builder(ctx)
        sort_columns = [builder.column(path) for path, _ in sort_spec]
        sort_fields = [
            Q.resolve_path(self.entity, path, self.catalog.entity_of)[0] for path, _ in sort_spec
        ]
        columns, _labels = self._select(fields, builder)
        conditions = self.conditions(builder, tree, search)
        sort_labels = [f"_sort{i}" for i in range(len(sort_columns))]
        base = sa.select(
            *columns, *(c.label(n) for c, n in zip(sort_columns, sort_labels))
        ).select_from(builder.from_clause)
        prepared = PreparedQuery(
            base, tuple(conditions), sort_spec, sort_columns, sort_fields, sort_labels
        )
        cache.put(key, prepared)
        return prepared

    def _two_phase_page(self, conn, base, conditions, column, direction, keyset, limit):
        """A page sorted by one column: first the rows with a value, as an index range
        scan from the cursor (a row-value comparison both databases can seek on), then,
        when those run out, the rows without a value in id order.  Empty values sort last
        in both directions."""
        id_col = self.table.c.id
        ascending = direction == "asc"
        rows: list = []
        in_null_phase = keyset is not None and keyset.values[0] is None
        if not in_null_phase:
            where = [*conditions, column.is_not(None)]
            if keyset is not None:
                start = sa.tuple_(
                    sa.literal(keyset.values[0], column.type),
                    sa.literal(keyset.last_id, id_col.type),
                )
                pair = sa.tuple_(column, id_col)
                where.append(pair > start if ascending else pair < start)
            order = (column.asc(), id_col.asc()) if ascending else (column.desc(), id_col.desc())
            rows = conn.execute(base.where(*where).order_by(*order).limit(limit + 1)).all()
        if len(rows) <= limit:
            where = [*conditions, column.is_(None)]
            if in_null_phase:
                where.append(id_col > keyset.last_id if ascending else id_col < keyset.last_id)
            order = id_col.asc() if ascending else id_col.desc()
            rows += conn.execute(
                base.where(*where).order_by(order).limit(limit + 1 - len(rows))
            ).all()
        return rows

    def aggregate(
        self,
        group_by: Sequence[str] = (),
        measures: Sequence[str] = ("count",),
        filter=None,
        *,
        search: str | None = None,
        limit: int = 1000,
    ) -> list[dict]:
        """Groups and measures over the records this user may read (``aggregate.py``):
        ``aggregate(["stage", "close_date:month"], ["count", "sum:amount"], filter)``."""
        from .aggregate import aggregate

        return aggregate(self, group_by, measures, filter, search=search, limit=limit)

    def count(self, filter=None, *, search: str | None = None, cap: int = 10_000) -> Count:
        """Exact up to ``cap``; beyond it an estimate (``exact`` is False)."""
        tree = self.parse_filter(filter)
        self._check_reads(tree, ())
        builder = self.builder()
        conditions = self.conditions(builder, tree, search)
        inner = (
            sa.select(self.table.c.id)
            .select_from(builder.from_clause)
            .where(*conditions)
            .limit(cap + 1)
            .subquery()
        )
        with self._reading() as conn:
            value = conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one()
            if value <= cap:
                return Count(value, True)
            estimate = self._estimate(conn, builder, conditions)
        return Count(max(estimate, cap + 1), False)

    def _search(self, text: str):
        hidden = self.access.hidden(self.entity) if self.access else set()
        return Q.search_condition(self.entity, self.table, text, self.dialect, exclude=hidden)

    def _estimate(self, conn, builder, conditions) -> int:
        if self.dialect == "postgresql":
            statement = (
                sa.select(self.table.c.id).select_from(builder.from_clause).where(*conditions)
            )
            # The compiled statement with its bound parameters: values are never rendered
            # into the SQL text (a value holding ":x" or a quote stays a value).
            compiled = statement.compile(conn, compile_kwargs={"render_postcompile": True})
            plan = conn.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params
            ).scalar_one()
            plan = plan if isinstance(plan, list) else __import__("json").loads(plan)
            return int(plan[0]["Plan"]["Plan Rows"])
        if not conditions:
            return int(conn.execute(sa.select(sa.func.max(self.table.c.id))).scalar() or 0)
        return 0

    def find_duplicates(
        self, values: Mapping[str, Any], *, exclude_id: int | None = None, limit: int = 10
    ) -> list[D.Candidate]:
        """Records that the entity's duplicate rules say are likely the same as ``values``
        (a new record's, or with ``exclude_id`` an existing one's), best first; only
        records this user may read, by rules over fields they may read."""
        return D.find(self, values, exclude_id=exclude_id, limit=max(1, min(int(limit), 50)))

    def history(self, record_id: int) -> list[dict]:
        """The audit trail of a record, oldest first (hidden fields left out)."""
        self.get(record_id, fields=["id"])  # NotFound unless this user may read the record
        hidden = self.access.hidden(self.entity) if self.access else set()
        a = T.audit
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(a.c.action, a.c.field, a.c.old, a.c.new, a.c.user_id, a.c.at)
                .where(a.c.entity == self.entity.name, a.c.record_id == record_id)
                .order_by(a.c.id)
            ).mappings()
            result = []
            for row in rows:
                entry = dict(row)
                if entry["field"] in hidden:
                    continue
                for key in ("old", "new"):
                    if isinstance(entry[key], dict) and hidden:
                        entry[key] = {k: v for k, v in entry[key].items() if k not in hidden}
                result.append(entry)
            return result


def T_ID(value) -> int:
    from ..metadata.fieldtypes import _record_id

    return _record_id(value)


_UNSEEN = object()
#: Coerced values a bulk write may hand to many records: immutable ones only.
_SHAREABLE = frozenset({str, int, float, bool, Decimal, dt.date, dt.datetime, dt.time, type(None)})
#: Texts a bulk write remembers coerced (then it starts over).
MEMO_SIZE = 20_000


def _delta_statement(table: sa.Table, rollup_field: Field):
    column = table.c[rollup_field.name]
    return (
        table.update()
        .where(table.c.id == sa.bindparam("_pid"))
        .values({column: sa.func.coalesce(column, 0) + sa.bindparam("_delta", type_=column.type)})
    )


def refresh_rollup_formulas(conn, catalog: Catalog, entity: Entity, ids, now) -> None:
    """Compute again, for these records, the formulas that read their rollups (after the
    rollups moved), and write the values that changed."""
    refresh_formulas(conn, catalog, entity, plan_for(catalog, entity).rollup_formulas, ids, now)


def refresh_formulas(
    conn, catalog: Catalog, entity: Entity, formulas: Sequence[Field], ids, now
) -> None:
    """Work out ``formulas`` again (in dependency order) for these records from the values
    stored, and write the values that changed: after a change that moved what they read
    without a save of the record (a rollup, a score's decay)."""
    if not formulas:
        return
    plan = plan_for(catalog, entity)
    table = tables_for(catalog)[entity.name]
    ids = sorted(i for i in ids if i is not None)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(sa.select(table).where(table.c.id.in_(chunk))).mappings():
            values = {**plan.formula_inputs, **row}
            changed = {}
            for f in formulas:
                value = evaluate_formula(f.formula, values, now)
                try:
                    value = f.kind.coerce(f, value) if value is not None else None
                except CoercionError:
                    value = None
                values[f.name] = value
                if value != row[f.name]:
                    changed[f.name] = value
            if changed:
                conn.execute(table.update().where(table.c.id == row["id"]).values(changed))


def refresh_rollup(
    conn,
    catalog: Catalog,
    child: Entity,
    lookup: Field,
    parent: Entity,
    rollup_field: Field,
    parent_ids,
) -> None:
    """Recompute one rollup for some parent records with a single correlated UPDATE."""
    tables = tables_for(catalog)
    child_table, parent_table = tables[child.name], tables[parent.name]
    rollup = rollup_field.rollup
    where = [child_table.c[lookup.name] == parent_table.c.id]
    tree = rollup_filter(catalog, parent, rollup_field)
    if tree is not None:
        where.append(Q.builder(catalog, child, FilterContext(), conn.dialect.name).compile(tree))
    if rollup.aggregate == "count":
        value = sa.select(sa.func.count()).where(*where)
    else:
        column = child_table.c[rollup.field]
        function = getattr(sa.func, rollup.aggregate)
        value = sa.select(function(column)).where(*where)
        if rollup.aggregate == "sum":
            value = sa.select(sa.func.coalesce(function(column), 0)).where(*where)
    conn.execute(
        parent_table.update()
        .where(parent_table.c.id.in_(list(parent_ids)))
        .values({rollup_field.name: value.scalar_subquery()})
    )
