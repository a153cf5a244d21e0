"""Writing the records packs ship (``data/`` always, ``demo/`` when asked) inside the
install's own transaction, through the records service: the same coercion, validation,
audit and processes as any write.  A record whose key is already present is updated (only
the fields that differ), so installing or upgrading again never adds a second copy; a
record the file no longer lists is left alone (people may have linked to it).  Any
problem is reported at the record's line and the whole install rolls back.

Sample data tells a short history: a record may say when it was made (``_at: -12d
10:30``, relative to the install) and what happened to it later (``_then``: changes,
each at its moment), written with the unit of work's time set to that moment, so that
``created_at``, the stage history, the SLA clocks and the processes' outbox rows read as
they would have; date and datetime values may be relative the same way, and ``owner:
{role: NAME}`` gives the records to the users holding that role in turn."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..metadata.pack_data import MOMENT_KEYS, RELATIVE, UNIT_SECONDS, key_fields
from ..metadata.packs import PackSource
from ..metadata.problems import Problems
from ..metadata.source import Position, node_position
from . import tables as T
from .records import RecordError, ValidationFailed
from .tables import tables_for
from .unit import UnitOfWork

_FALLBACK = Position("<unknown>", 1, 1)


def load_pack_data(
    store, conn: sa.Connection, catalog, packs: Sequence[PackSource], *, demo: bool
) -> tuple[UnitOfWork, dict[str, int]]:
    """Upsert the packs' records; the unit of work (to run its after-commit signals once
    the install commits) and the count of records created or changed per entity."""
    kinds = ("data", "demo") if demo else ("data",)
    unit = UnitOfWork(store, conn, catalog, None)
    pinned, current = store._pinned.set(catalog), store._current.set(unit)
    problems = Problems()
    counts: dict[str, int] = {}
    # dependencies first: a pack's sample data names records of the packs it needs (sales'
    # accounts are in core's territories), whatever order the packs were given in
    order = {name: index for index, name in enumerate(catalog.solutions)}
    packs = sorted(packs, key=lambda pack: order.get(pack.name, len(order)))
    try:
        for pack in packs:
            for document in pack.documents:
                if document.kind in kinds:
                    _load(store, unit, catalog, document.data, document.kind, problems, counts)
                    if not len(problems):
                        # the file's rollups moved before the next file reads them (a
                        # quote is sent, with its rule on its number of lines, once
                        # another file added them)
                        unit.flush()
        problems.raise_if_any()
        unit.flush()
    finally:
        store._current.reset(current)
        store._pinned.reset(pinned)
    return unit, counts


class _Past:
    """Sample data's times, relative to the moment of the install: ``-12d 10:30`` is 10:30
    (the organization's time zone) twelve days before today, ``-3h`` three hours ago."""

    def __init__(self, store):
        self.now = store.clock.now()
        self.zone = ZoneInfo(store.settings().get("time_zone") or "UTC")
        self.today = self.now.astimezone(self.zone).date()

    def moment(self, text) -> dt.datetime | None:
        match = RELATIVE.match(str(text)) if isinstance(text, str) else None
        if match is None:
            return None
        sign, count, unit, hour, minute = match.groups()
        span = int(count) * UNIT_SECONDS[unit] * (-1 if sign == "-" else 1)
        if hour is None:
            return self.now + dt.timedelta(seconds=span)
        day = self.today + dt.timedelta(seconds=span)
        local = dt.datetime.combine(day, dt.time(int(hour), int(minute)), self.zone)
        return local.astimezone(dt.UTC)

    def value(self, field, value):
        """A date or datetime field's relative value as its date or moment."""
        if field.type not in ("date", "datetime"):
            return value
        moment = self.moment(value)
        if moment is None:
            return value
        return moment if field.type == "datetime" else moment.astimezone(self.zone).date()


def _owner(unit, spec, turns: dict) -> int | None:
    """``owner: {role: NAME}``: the active users holding the role, in turn."""
    role = spec.get("role")
    users = turns.get(role)
    if users is None:
        users = turns[role] = list(
            unit.connection.execute(
                sa.select(T.users.c.id)
                .where(
                    T.users.c.active.is_(True),
                    T.users.c.id.in_(
                        sa.select(T.user_roles.c.user_id).where(T.user_roles.c.role == role)
                    ),
                )
                .order_by(T.users.c.id)
            ).scalars()
        )
        turns[(role, "next")] = 0
    if not users:
        return None
    turn = turns[(role, "next")]
    turns[(role, "next")] = turn + 1
    return users[turn % len(users)]


def _resolve(unit, catalog, entity, raw: Mapping, where, problems, past, turns) -> dict:
    """A record's values as the records service takes them: lookups found by the fields
    given, and in sample data relative times and owners by role."""
    values = {}
    for name, value in raw.items():
        if name in MOMENT_KEYS:
            continue
        field = entity.fields.get(name)
        is_user = name == "owner" or (field is not None and field.type == "user")
        if is_user and past is not None and isinstance(value, Mapping):
            # {role: NAME}: the role's users in turn (each user field keeps its own turn)
            values[name] = _owner(unit, value, turns.setdefault(name, {}))
            continue
        if field.type == "lookup" and isinstance(value, Mapping):
            found = _find(unit, catalog, field.target, value)
            if len(found) != 1:
                problems.add(
                    node_position(raw, name, where),
                    entity.name,
                    f"{name}: {'no' if not found else len(found)} {field.target} "
                    f"record{'s' if len(found) > 1 else ''} with "
                    + ", ".join(f"{k} = {v!r}" for k, v in value.items()),
                )
                continue
            value = found[0]
        elif past is not None:
            value = past.value(field, value)
        values[name] = value
    return values


def _nobody_for(entity, raw: Mapping, values: Mapping) -> bool:
    """A required user field given as ``{role: NAME}`` whose role has no active user."""
    return any(
        isinstance(value, Mapping)
        and name in entity.fields
        and entity.fields[name].type == "user"
        and entity.fields[name].required
        and values.get(name) is None
        for name, value in raw.items()
    )


def _differing(entity, current: Mapping, values: Mapping) -> dict:
    """The values that differ from the record's (the owner is never moved)."""
    return {
        k: v
        for k, v in values.items()
        if k != "owner" and current.get(k) != entity.fields[k].kind.coerce(entity.fields[k], v)
    }


def _load(store, unit, catalog, data: Mapping, kind: str, problems, counts) -> None:
    entity = catalog.entity(data[kind])
    table = tables_for(catalog)[entity.name]
    keys = key_fields(data)
    service = store.records(entity.name)
    records = data["records"]
    past = _Past(store) if kind == "demo" else None
    turns: dict = {}
    for index, raw in enumerate(records):
        where = node_position(records, index, _FALLBACK)
        values = _resolve(unit, catalog, entity, raw, where, problems, past, turns)
        if past is not None and _nobody_for(entity, raw, values):
            continue  # sample data of people who are not there (a demo without its team)
        # sample data's later changes, each at its moment: {_at: -2d 15:00, status: resolved}
        changes = []
        for step_index, change in enumerate(raw.get("_then") or ()):
            at = node_position(raw["_then"], step_index, where)
            moment = past.moment(change.get("_at")) if past is not None else None
            changes.append(
                (moment, _resolve(unit, catalog, entity, change, at, problems, past, turns), at)
            )
        if len(problems):
            continue
        try:
            key = {k: entity.fields[k].kind.coerce(entity.fields[k], values[k]) for k in keys}
            existing = unit.connection.execute(
                sa.select(table.c.id).where(*(table.c[k] == v for k, v in key.items()))
            ).all()
            if len(existing) > 1:
                problems.add(where, entity.name, f"{len(existing)} records have the key {key}")
                continue
            if existing:
                final = dict(values)
                for _moment, change, _at in changes:
                    final.update(change)
                current = service.get(existing[0].id)
                if _differing(entity, current, final):
                    # the record's own values, then its later changes each at its moment
                    # (a quote made in one file is sent and accepted in another, once its
                    # lines exist), each change only where it still differs
                    steps = [(None, values, where), *changes]
                    for moment, change, at in steps:
                        where = at
                        differing = _differing(entity, current, change)
                        if not differing:
                            continue
                        with unit.dated(moment) if moment is not None else contextlib.nullcontext():
                            current = service.update(existing[0].id, differing)
                    counts[entity.name] = counts.get(entity.name, 0) + 1
            else:
                created = past.moment(raw.get("_at")) if past is not None else None
                with unit.dated(created) if created is not None else contextlib.nullcontext():
                    ident = service.create(values)["id"]
                for moment, change, at in changes:
                    where = at
                    with unit.dated(moment) if moment is not None else contextlib.nullcontext():
                        service.update(ident, change)
                counts[entity.name] = counts.get(entity.name, 0) + 1
        except ValidationFailed as exc:
            for field_name, messages in exc.errors.items():
                at = node_position(raw, field_name, where) if field_name in raw else where
                problems.add(at, entity.name, f"{field_name}: {'; '.join(messages)}")
        except (RecordError, ValueError, TypeError) as exc:
            problems.add(where, entity.name, str(exc))


def _find(unit, catalog, target: str, fields: Mapping) -> list[int]:
    entity = catalog.entity(target)
    table = tables_for(catalog)[target]
    conditions = []
    for name, value in fields.items():
        field = entity.fields.get(name)
        if field is None:
            return []
        conditions.append(table.c[name] == field.kind.coerce(field, value))
    return [row.id for row in unit.connection.execute(sa.select(table.c.id).where(*conditions))]
