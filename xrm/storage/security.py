"""Record- and field-level security, applied where queries are built.

A principal's roles give, per entity and action, a scope (none / own / team / all; the
union of several roles is the widest) and per field a rule (visible / read_only / hidden;
the most permissive role wins).  ``Access.scope`` returns the SQL condition that every
read for that user includes — lists, gets, counts, related lists, search, and later
reports and exports all go through ``Records.query``/``count``, so none can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..metadata import Catalog, Entity
from ..metadata.expressions import names_in, parse_expression
from ..metadata.filters import conditions_of, parse_filter
from ..metadata.model import ACTIONS, SCOPE_ORDER
from . import tables as T

if TYPE_CHECKING:  # pragma: no cover
    from .records import Records

VISIBLE, READ_ONLY, HIDDEN = "visible", "read_only", "hidden"
_RULE_ORDER = {HIDDEN: 0, READ_ONLY: 1, VISIBLE: 2}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user with roles and teams (``user_id`` None: the platform itself)."""

    user_id: int | None
    roles: tuple[str, ...] = ()
    team_ids: tuple[int, ...] = ()
    is_admin: bool = False
    locale: str = "en"
    tz: str = "UTC"
    email: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


class Access:
    """What one principal may do, compiled per catalog version."""

    def __init__(self, catalog: Catalog, principal: Principal):
        self.catalog = catalog
        self.principal = principal
        roles = [catalog.roles[r] for r in principal.roles if r in catalog.roles]
        self.is_admin = principal.is_admin or any(r.admin for r in roles)
        self._roles = roles
        self._scopes: dict[tuple[str, str], str] = {}
        self._scoped_rollups: dict[str, frozenset[str]] = {}
        self._own_fields: dict[str, tuple[str, ...]] = {}
        self._rules: dict[str, dict[str, str]] = {}

    def scope_of(self, entity: str, action: str) -> str:
        key = (entity, action)
        if key not in self._scopes:
            if self.is_admin:
                scope = "all"
            else:
                scope = max(
                    (r.scope(entity, action) for r in self._roles),
                    key=SCOPE_ORDER.__getitem__,
                    default="none",
                )
            self._scopes[key] = scope
        return self._scopes[key]

    def field_rules(self, entity: Entity) -> dict[str, str]:
        """field -> hidden | read_only, for the fields that are not simply visible.

        Besides the roles' rules, a computed field is hidden when it would disclose what
        the reader may not read: a formula over a hidden field (transitively), and a rollup
        whose summed field or filter touches a field hidden in the child entity.  A formula
        over a rollup that the reader sees only in part (``scoped_rollups``) is hidden too,
        since its stored value was computed over every child."""
        if entity.name not in self._rules:
            rules: dict[str, str] = {}
            if not self.is_admin and self._roles:
                for name in entity.fields:
                    best = max(
                        (r.fields.get(entity.name, {}).get(name, VISIBLE) for r in self._roles),
                        key=_RULE_ORDER.__getitem__,
                    )
                    if best != VISIBLE:
                        rules[name] = best
            # Stored before the derived rules: a rollup of an entity over itself reads the
            # declared rules instead of recursing.
            self._rules[entity.name] = rules
            if not self.is_admin:
                self._derive_hidden(entity, rules)
        return self._rules[entity.name]

    def _derive_hidden(self, entity: Entity, rules: dict[str, str]) -> None:
        computed = [f for f in entity.fields.values() if f.formula or f.rollup]
        changed = True
        while changed:  # to a fixed point: formulas over formulas over hidden fields
            changed = False
            for f in computed:
                if rules.get(f.name) == HIDDEN:
                    continue
                if f.rollup is not None:
                    leaks = self._rollup_inputs_hidden(entity, f)
                else:
                    inputs = formula_inputs(self.catalog, entity, f)
                    leaks = any(
                        rules.get(n) == HIDDEN or n in self.scoped_rollups(entity) for n in inputs
                    )
                if leaks:
                    rules[f.name] = HIDDEN
                    changed = True

    def _rollup_inputs_hidden(self, entity: Entity, f) -> bool:
        child, _via = rollup_child(self.catalog, entity, f)
        hidden = self.hidden(child)
        if f.rollup.field in hidden:
            return True
        for condition in rollup_conditions(self.catalog, entity, f):
            current = child
            for step, lookup in zip(condition.path, condition.lookups):
                if step in self.hidden(current):
                    return True
                current = self.catalog.entity(lookup.params["to"])
            if condition.path[-1] in self.hidden(current):
                return True
        return False

    def scoped_rollups(self, entity: Entity) -> frozenset[str]:
        """Rollups this reader sees computed over the children they may read (their read
        scope on the child entity is not ``all``), instead of the stored total."""
        if entity.name not in self._scoped_rollups:
            names = set()
            if not self.is_admin:
                for f in entity.fields.values():
                    if f.rollup is not None:
                        child, _via = rollup_child(self.catalog, entity, f)
                        if self.scope_of(child.name, "read") != "all":
                            names.add(f.name)
            self._scoped_rollups[entity.name] = frozenset(names)
        return self._scoped_rollups[entity.name]

    def hidden(self, entity: Entity) -> set[str]:
        return {n for n, r in self.field_rules(entity).items() if r == HIDDEN}

    def read_only(self, entity: Entity) -> set[str]:
        return set(self.field_rules(entity))

    def writable(self, entity: Entity) -> set[str]:
        """Fields this user may change: not computed, not read-only for users, not locked
        by a role (what a form offers as editable and the records service accepts)."""
        locked = self.read_only(entity)
        return {
            n
            for n, f in entity.fields.items()
            if not f.computed and not f.read_only and n not in locked
        }

    def allowed_actions(self, entity: str) -> dict[str, str]:
        return {action: self.scope_of(entity, action) for action in ACTIONS}

    def own_fields(self, entity: str) -> tuple[str, ...]:
        """The user fields that make a record this user's own: what each role names with
        ``own: [...]`` for the entity (``owner`` when it names none), over all their roles."""
        if entity not in self._own_fields:
            names: dict[str, None] = {}
            for role in self._roles or [None]:
                own = role.own_fields.get(entity) if role is not None else None
                names.update(dict.fromkeys(own or ("owner",)))
            self._own_fields[entity] = tuple(names)
        return self._own_fields[entity]

    def is_own(self, entity: str, record: dict) -> bool:
        uid = self.principal.user_id
        return uid is not None and any(record.get(f) == uid for f in self.own_fields(entity))

    # -- SQL
    def scope_condition(self, table: sa.Table, entity: str, action: str):
        scope = self.scope_of(entity, action)
        if scope == "all":
            return None
        uid = self.principal.user_id
        if scope == "none" or uid is None:
            return sa.false()
        columns = [table.c[f] for f in self.own_fields(entity)]
        if scope == "own":
            return sa.or_(*(c == uid for c in columns))
        members = sa.select(T.team_members.c.user_id).where(
            T.team_members.c.team_id.in_(list(self.principal.team_ids) or [-1])
        )
        return sa.or_(*(c == uid for c in columns), *(c.in_(members) for c in columns))

    # -- records service hooks
    def scope(self, records: Records, builder, action: str):
        return self.scope_condition(records.table, records.entity.name, action)

    def check(self, records: Records, action: str, record: dict | None) -> None:
        from .records import Forbidden

        entity = records.entity.name
        scope = self.scope_of(entity, action)
        if scope == "none":
            raise Forbidden(f"you may not {action} {entity} records")
        if record is None or scope == "all" or self.is_own(entity, record):
            return
        if scope == "team":
            users = {record.get(f) for f in self.own_fields(entity)} - {None}
            if any(self._same_team(records, user) for user in users):
                return
        raise Forbidden(f"you may not {action} this {entity}")

    def check_owner(self, records: Records, owner, record: dict | None = None) -> None:
        """On create with scope own/team, the new record must belong to the user (or team):
        its owner, or another of the entity's own fields (``own: [owner, agent]``)."""
        from .records import Forbidden

        entity = records.entity.name
        scope = self.scope_of(entity, "create")
        if scope == "all" or owner == self.principal.user_id:
            return
        if record is not None and self.is_own(entity, {**record, "owner": owner}):
            return
        if scope == "team" and owner is not None and self._same_team(records, owner):
            return
        raise Forbidden(f"you may not create {records.entity.name} records owned by someone else")

    def _same_team(self, records: Records, owner: int) -> bool:
        if not self.principal.team_ids:
            return False
        with records.store.engine.connect() as conn:
            found = conn.execute(
                sa.select(T.team_members.c.user_id).where(
                    T.team_members.c.user_id == owner,
                    T.team_members.c.team_id.in_(list(self.principal.team_ids)),
                )
            ).first()
        return found is not None


def load_principal(conn: sa.Connection, catalog: Catalog, user_id: int) -> Principal | None:
    user = conn.execute(sa.select(T.users).where(T.users.c.id == user_id)).first()
    if user is None or not user.active:
        return None
    roles = tuple(
        conn.execute(
            sa.select(T.user_roles.c.role)
            .where(T.user_roles.c.user_id == user_id)
            .order_by(T.user_roles.c.role)
        ).scalars()
    )
    teams = tuple(
        conn.execute(
            sa.select(T.team_members.c.team_id).where(T.team_members.c.user_id == user_id)
        ).scalars()
    )
    is_admin = any(catalog.roles[r].admin for r in roles if r in catalog.roles)
    return Principal(
        user_id=user.id,
        roles=roles,
        team_ids=teams,
        is_admin=is_admin,
        locale=user.locale,
        tz=user.time_zone,
        email=user.email,
        name=user.name,
    )


# ---------------------------------------------------------------- computed fields' inputs
def formula_inputs(catalog: Catalog, entity: Entity, f) -> frozenset[str]:
    """The fields of ``entity`` a formula reads (parsed once per catalog version)."""
    return catalog.artifact(
        ("formula-inputs", entity.name, f.name),
        lambda: frozenset(n for n in names_in(parse_expression(f.formula)) if n in entity.fields),
    )


def rollup_child(catalog: Catalog, entity: Entity, f) -> tuple[Entity, str]:
    """The child entity a rollup reads and the child's lookup back to ``entity``."""
    children = entity.fields[f.rollup.children]
    return catalog.entity(children.params["entity"]), children.params["via"]


def rollup_filter(catalog: Catalog, entity: Entity, f):
    """A rollup's filter as a checked tree over the child entity (None without one), parsed
    once per catalog version for the write path, the scoped read and the field rules."""
    if f.rollup.filter is None:
        return None

    def build():
        child, _via = rollup_child(catalog, entity, f)
        return parse_filter(f.rollup.filter, child, catalog.entity_of)

    return catalog.artifact(("rollup-filter", entity.name, f.name), build)


def rollup_conditions(catalog: Catalog, entity: Entity, f) -> tuple:
    """The conditions of a rollup's filter, checked over the child entity."""
    return tuple(conditions_of(rollup_filter(catalog, entity, f)))
