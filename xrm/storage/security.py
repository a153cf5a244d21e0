"""Record- and field-level security, applied where queries are built.

A principal's roles give, per entity and action, a scope (none / own / account / team /
all; several roles admit the union of what each admits) and per field a rule (visible /
read_only / hidden; the most permissive role wins).  ``Access.scope`` returns the SQL condition that every
read for that user includes — lists, gets, counts, related lists, search, and later
reports and exports all go through ``Records.query``/``count``, so none can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..metadata import Catalog, Entity
from ..metadata.expressions import formula_names
from ..metadata.filters import conditions_of, parse_filter
from ..metadata.model import (
    ACCOUNT_SELF,
    ACTIONS,
    SCOPE_ORDER,
    default_account_paths,
)
from . import tables as T

if TYPE_CHECKING:  # pragma: no cover
    from .records import Records

VISIBLE, READ_ONLY, HIDDEN = "visible", "read_only", "hidden"
_RULE_ORDER = {HIDDEN: 0, READ_ONLY: 1, VISIBLE: 2}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user with roles and teams (``user_id`` None: the platform itself),
    and the account they belong to (a partner's user: the account scope's records)."""

    user_id: int | None
    roles: tuple[str, ...] = ()
    team_ids: tuple[int, ...] = ()
    account_id: int | None = None
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
        self._scopes: dict[tuple[str, str], frozenset[str]] = {}
        self._scoped_rollups: dict[str, frozenset[str]] = {}
        self._own_fields: dict[str, tuple[str, ...]] = {}
        self._account_paths: dict[str, tuple[str, ...]] = {}
        self._rules: dict[str, dict[str, str]] = {}

    def scopes_of(self, entity: str, action: str) -> frozenset[str]:
        """Every scope the user's roles give for the action: the rows they may touch are
        the union of what each admits (``account`` and ``team`` are not nested)."""
        key = (entity, action)
        if key not in self._scopes:
            if self.is_admin:
                scopes = frozenset({"all"})
            else:
                scopes = frozenset(r.scope(entity, action) for r in self._roles) or frozenset(
                    {"none"}
                )
            self._scopes[key] = scopes
        return self._scopes[key]

    def scope_of(self, entity: str, action: str) -> str:
        """The widest of the scopes (``all`` and ``none`` are exact; between ``account`` and
        ``team`` it is a name for menus and pages, the rows are ``scopes_of``'s union)."""
        return max(self.scopes_of(entity, action), key=SCOPE_ORDER.__getitem__)

    def field_rules(self, entity: Entity) -> dict[str, str]:
        """field -> hidden | read_only, for the fields that are not simply visible.

        Besides the roles' rules, a computed field is hidden when it would disclose what
        the reader may not read: a formula over a hidden field (transitively), and a rollup
        whose summed field or filter touches a field hidden in the child entity.  A formula
        over a rollup that the reader sees only in part (``scoped_rollups``) is hidden too,
        since its stored value was computed over every child.  A score kept by the
        entity's scoring model (and its rating) is computed by the platform like a formula:
        it is hidden when a rule, the model's ``where`` or its decay reads what the reader
        may not (``_scoring_leaks``)."""
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
        scored = entity.scoring.fields if entity.scoring is not None else ()
        changed = True
        while changed:  # to a fixed point: formulas over formulas over hidden fields
            changed = False
            if any(rules.get(n) != HIDDEN for n in scored) and self._scoring_leaks(entity, rules):
                for name in scored:
                    rules[name] = HIDDEN
                changed = True
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

    def _scoring_leaks(self, entity: Entity, rules: dict[str, str]) -> bool:
        """Whether the entity's score would tell this reader something they may not read
        (see ``conditions_leak``), or its decay is counted from a hidden moment."""
        scoring = entity.scoring
        if scoring.decay is not None and rules.get(scoring.decay.since) == HIDDEN:
            return True
        trees = [rule.when for rule in scoring.rules]
        return self._conditions_leak(entity, [*trees, scoring.where], rules)

    def conditions_leak(self, entity: Entity, trees) -> bool:
        """Whether something the platform computed from these filter trees over every
        record (a score, an SLA clock's state) would tell this reader what they may not
        read: a condition over a field hidden from them (on the entity, or at any step of
        a lookup path), over a rollup they see only in part, or through a lookup into an
        entity they do not read in full."""
        if self.is_admin:
            return False
        return self._conditions_leak(entity, trees, self.field_rules(entity))

    def _conditions_leak(self, entity: Entity, trees, rules: dict[str, str]) -> bool:
        partial = self.scoped_rollups(entity)
        own_hidden = {n for n, r in rules.items() if r == HIDDEN} | set(partial)
        for tree in trees:
            for condition in conditions_of(tree):
                hidden = own_hidden
                for step, lookup in zip(condition.path, condition.lookups):
                    if step in hidden:
                        return True
                    target = lookup.params["to"]
                    if self.scope_of(target, "read") != "all":
                        return True
                    current = self.catalog.entity(target)
                    hidden = self.hidden(current) | set(self.scoped_rollups(current))
                if condition.path[-1] in hidden:
                    return True
        return False

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

    def account_paths(self, entity: str) -> tuple[str, ...]:
        """The lookup paths that end at the account a record belongs to (``id``: the record
        itself), over all the user's roles: what each names with ``account: [...]``, the
        entity's default when it names none (see ``default_account_paths``)."""
        if entity not in self._account_paths:
            default = default_account_paths(self.catalog.entity(entity))
            names: dict[str, None] = {}
            for role in self._roles or [None]:
                given = role.account_paths.get(entity) if role is not None else None
                names.update(dict.fromkeys(given or default))
            self._account_paths[entity] = tuple(names)
        return self._account_paths[entity]

    def is_own(self, entity: str, record: dict) -> bool:
        uid = self.principal.user_id
        return uid is not None and any(record.get(f) == uid for f in self.own_fields(entity))

    # -- SQL
    def scope_condition(self, table: sa.Table, entity: str, action: str):
        scopes = self.scopes_of(entity, action)
        if "all" in scopes:
            return None
        uid = self.principal.user_id
        if scopes <= {"none"} or uid is None:
            return sa.false()
        columns = [table.c[f] for f in self.own_fields(entity)]
        parts = [c == uid for c in columns]
        if "team" in scopes:
            members = sa.select(T.team_members.c.user_id).where(
                T.team_members.c.team_id.in_(list(self.principal.team_ids) or [-1])
            )
            parts += [c.in_(members) for c in columns]
        if "account" in scopes:
            parts += self.account_conditions(table, entity)
        return sa.or_(*parts)

    def account_conditions(self, table: sa.FromClause, entity: str) -> list:
        """The account scope beyond the user's own records: each account path of the entity
        naming the user's account (none without an account)."""
        account_id = self.principal.account_id
        if account_id is None:
            return []
        return [
            self._path_condition(table, entity, p, account_id) for p in self.account_paths(entity)
        ]

    def _path_condition(self, table: sa.FromClause, entity: str, path: str, account_id: int):
        """``path`` from ``table``'s rows names the account.  A path through other entities
        is a chain of ``IN (SELECT id ...)`` over fresh aliases, not correlated with the
        query it sits in (which may join the same tables)."""
        if path == ACCOUNT_SELF:
            return table.c.id == account_id
        first, _, rest = path.partition(".")
        if not rest:
            return table.c[first] == account_id
        target = self.catalog.entity(entity).fields[first].params["to"]
        alias = T.tables_for(self.catalog)[target].alias()
        chosen = sa.select(alias.c.id).where(self._path_condition(alias, target, rest, account_id))
        return table.c[first].in_(chosen.correlate(None).scalar_subquery())

    # -- records service hooks
    def scope(self, records: Records, builder, action: str):
        return self.scope_condition(records.table, records.entity.name, action)

    def check(self, records: Records, action: str, record: dict | None) -> None:
        from .records import Forbidden

        entity = records.entity.name
        scopes = self.scopes_of(entity, action)
        if scopes <= {"none"}:
            raise Forbidden(f"you may not {action} {entity} records")
        if record is None or "all" in scopes or self.is_own(entity, record):
            return
        if "team" in scopes:
            users = {record.get(f) for f in self.own_fields(entity)} - {None}
            if any(self._same_team(records, user) for user in users):
                return
        if "account" in scopes and self._in_account(records, record):
            return
        raise Forbidden(f"you may not {action} this {entity}")

    def check_owner(self, records: Records, owner, record: dict | None = None) -> None:
        """On create with scope own/team/account, the new record must belong to the user
        (or team, or account): its owner, or another of the entity's own fields (``own:
        [owner, agent]``), or with the account scope an account path naming the user's
        account."""
        from .records import Forbidden

        entity = records.entity.name
        scopes = self.scopes_of(entity, "create")
        if "all" in scopes or owner == self.principal.user_id:
            return
        if record is not None and self.is_own(entity, {**record, "owner": owner}):
            return
        if "team" in scopes and owner is not None and self._same_team(records, owner):
            return
        if "account" in scopes and record is not None and self._in_account(records, record):
            return
        raise Forbidden(f"you may not create {records.entity.name} records owned by someone else")

    def check_account(self, records: Records, record: dict, old: dict) -> None:
        """On update, a writer whose update scope reaches a record only through its account
        may not move it out of their account (changing the lookup its account is read
        from): the record must stay theirs, like a new one (``check_owner``)."""
        entity = records.entity.name
        scopes = self.scopes_of(entity, "update")
        if "all" in scopes or "account" not in scopes:
            return
        first_steps = {p.split(".")[0] for p in self.account_paths(entity)} - {ACCOUNT_SELF}
        if not any(record.get(step) != old.get(step) for step in first_steps):
            return
        if not self.is_own(entity, record) and not self._in_account(records, record):
            from .records import Forbidden

            raise Forbidden(f"you may not move this {entity} to another account")

    def _in_account(self, records: Records, record: dict) -> bool:
        """Whether a record (as stored, or about to be) belongs to the user's account: a
        one-step path is read from the record, a longer one from the database (in the
        writer's transaction, so their own changes count)."""
        account_id = self.principal.account_id
        if account_id is None:
            return False
        entity = records.entity.name
        for path in self.account_paths(entity):
            if path == ACCOUNT_SELF:
                if record.get("id") == account_id:
                    return True
                continue
            first, _, rest = path.partition(".")
            if not rest:
                if record.get(first) == account_id:
                    return True
                continue
            target_id = record.get(first)
            if target_id is None:
                continue
            target = records.entity.fields[first].params["to"]
            table = T.tables_for(self.catalog)[target]
            condition = self._path_condition(table, target, rest, account_id)
            with records._reading() as conn:
                found = conn.execute(
                    sa.select(table.c.id).where(table.c.id == target_id, condition)
                ).first()
            if found is not None:
                return True
        return False

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
        account_id=user.account_id,
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
        lambda: frozenset(n for n in formula_names(f.formula) if n in entity.fields),
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
