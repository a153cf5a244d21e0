"""Who a step addresses: owner, initiator, user or email fields, roles, teams, users by email,
plain addresses; resolved to active users (with locale) and bare email addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from jinja2.exceptions import UndefinedError

from ..metadata.filters import resolve_path
from ..metadata.processes import as_list, resolve_members
from ..storage import tables as T
from ..storage.tables import tables_for
from .blocked import Blocked
from .context import is_template
from .loading import USER_COLUMNS

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Batch, Run


class RecipientError(Blocked):
    """A user named by email (``user:ann@example.com``) who is not an active user."""


def _users_where(batch: Batch, key, condition) -> list[dict]:
    cache = batch.cache.setdefault("recipients", {})
    if key not in cache:
        rows = batch.conn.execute(
            sa.select(*USER_COLUMNS)
            .where(condition, T.users.c.active.is_(True))
            .order_by(T.users.c.id)
        ).mappings()
        cache[key] = [dict(r) for r in rows]
        for row in cache[key]:
            batch.loader.users.setdefault(row["id"], row)
    return cache[key]


def _user(batch: Batch, ident) -> dict | None:
    if ident is None:
        return None
    user = batch.loader.user(ident)
    return user if user and user.get("active", True) else None


def resolve(batch: Batch, run: Run, spec) -> tuple[list[dict], list[str]]:
    """(users, email addresses) for a recipient spec, each listed once, in order."""
    users: dict[int, dict] = {}
    addresses: list[str] = []
    for item in as_list(spec):
        # a template names a recipient from the record: team:{{ record.queue.team }}
        text = _rendered(batch, run, item) if is_template(item) else str(item)
        prefix, sep, rest = text.partition(":")
        found: list[dict] = []
        if sep and prefix == "role":
            members = sa.select(T.user_roles.c.user_id).where(T.user_roles.c.role == rest)
            found = _users_where(batch, ("role", rest), T.users.c.id.in_(members))
        elif sep and prefix == "team":
            members = (
                sa.select(T.team_members.c.user_id)
                .join(T.teams, T.teams.c.id == T.team_members.c.team_id)
                .where(T.teams.c.name == rest)
            )
            found = _users_where(batch, ("team", rest), T.users.c.id.in_(members))
        elif sep and prefix == "user":
            found = _users_where(
                batch, ("user", rest.lower()), T.users.c.email == rest.strip().lower()
            )
            if not found:
                raise RecipientError(batch.catalog, "no_user", run.entity, email=rest.strip())
        elif sep and prefix == "email":
            addresses.append(rest.strip())
        elif text == "initiator":
            user = _user(batch, run.user_id)
            found = [user] if user else []
        elif text == "owner":
            user = _user(batch, (run.record or {}).get("owner"))
            found = [user] if user else []
        elif (members := _members(batch, run, text)) is not None:
            found = members
        else:
            value, kind = _field_value(batch, run, text)
            if kind == "user":
                user = _user(batch, value)
                found = [user] if user else []
            elif value:
                addresses.append(str(value))
        for user in found:
            users.setdefault(user["id"], user)
    return list(users.values()), list(dict.fromkeys(addresses))


def _rendered(batch: Batch, run: Run, item) -> str:
    """A recipient template for this record; one that reads through an empty lookup
    (``record.queue.team`` of a case without a queue) names nobody, as an empty field
    does, rather than failing the step on every retry."""
    try:
        return batch.text(run, item)
    except UndefinedError:
        prefix, sep, _rest = str(item).partition(":")
        return f"{prefix}:" if sep and not is_template(prefix) else ""


def _member_path(batch: Batch, run: Run, dotted: str):
    entity = batch.catalog.entity(run.entity)
    return batch.catalog.artifact(
        ("wf-members", entity.name, dotted),
        lambda: resolve_members(entity, dotted, batch.catalog.entity_of),
    )


def _members_parent(batch: Batch, run: Run, lookups) -> int | None:
    current = run.record or {}
    for lookup in lookups:
        ident = current.get(lookup.name)
        current = batch.loader.record(lookup.params["to"], ident) if ident is not None else None
        if current is None:
            return None
    return current.get("id")


def _members(batch: Batch, run: Run, dotted: str) -> list[dict] | None:
    """The active users a children path names (``territory.members.user``: the users of
    the members of the record's territory); None when the path has no children field."""
    path = _member_path(batch, run, dotted)
    if path is None:
        return None
    lookups, children, child, user = path
    parent_id = _members_parent(batch, run, lookups)
    if parent_id is None:
        return []
    table = tables_for(batch.catalog)[child.name]
    via = children.params["via"]
    members = sa.select(table.c[user.name]).where(table.c[via] == parent_id)
    return _users_where(batch, ("members", child.name, via, parent_id), T.users.c.id.in_(members))


def group_key(batch: Batch, run: Run, spec) -> str:
    """What makes one group of candidates, for a round robin's turn: the recipients as
    written, a template as rendered for this record (team:{{ record.queue.team }} is one
    group per team), a children path with the record it starts from (one per territory)."""
    parts = []
    for item in as_list(spec):
        text = batch.text(run, item) if is_template(item) else str(item)
        path = _member_path(batch, run, text) if ":" not in text else None
        if path is not None:
            text = f"{text}@{_members_parent(batch, run, path[0])}"
        parts.append(text)
    return "|".join(parts)


def _field_value(batch: Batch, run: Run, dotted: str):
    entity = batch.catalog.entity(run.entity)
    field, lookups = resolve_path(entity, dotted, batch.catalog.entity_of)
    current = run.record or {}
    for lookup in lookups:
        ident = current.get(lookup.name)
        current = batch.loader.record(lookup.params["to"], ident) if ident is not None else None
        if current is None:
            return None, field.type
    return current.get(field.name), field.type


def user_ids(batch: Batch, run: Run, spec) -> list[int]:
    users, _ = resolve(batch, run, spec)
    return [u["id"] for u in users]
