"""The filter language: one typed tree, checked against the catalog, two back ends.

A filter is ``[field, op, value]`` leaves combined with ``{all: [...]}``, ``{any: [...]}``
and ``{not: ...}``.  ``parse_filter`` resolves every path (``account.industry`` walks
lookups), checks the operator against the field type and coerces the value through the
field registry, so that the SQL compiler (storage.query) and the Python evaluator here
receive a tree in which nothing unknown remains.  Relative dates resolve to half-open
``[start, end)`` ranges by one function that both back ends use, which is why they agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .fieldtypes import (
    EMPTY_OPS,
    MAX_DURATION,
    RELATIVE_DATE_OPS,
    RELATIVE_N_OPS,
    ChoiceType,
    CoercionError,
)
from .model import SYSTEM_COLUMNS, Entity, Field
from .problems import did_you_mean, one_of


class FilterError(ValueError):
    """A filter that cannot be compiled: unknown field or operator, or a mistyped value."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path


class ReadRefused(FilterError):
    """A filter, group or measure on a field or entity the user may not read."""


class CurrentUser:
    """The symbolic value ``current_user`` (for owner fields), bound when a query runs."""

    def __repr__(self):
        return "current_user"

    def __eq__(self, other):
        return isinstance(other, CurrentUser)

    def __hash__(self):
        return hash("current_user")


CURRENT_USER = CurrentUser()


@dataclass(frozen=True, slots=True)
class Condition:
    path: tuple[str, ...]
    op: str
    value: Any
    field: Field  # the field at the end of the path
    lookups: tuple[Field, ...] = ()  # lookup fields walked to reach it

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class All:
    children: tuple


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple


@dataclass(frozen=True, slots=True)
class Not:
    child: Any


# System columns behave like fields of these types in filters and sorts.
_SYSTEM_TYPES = {
    "id": ("integer", {}),
    "created_at": ("datetime", {}),
    "updated_at": ("datetime", {}),
    "created_by": ("user", {}),
    "updated_by": ("user", {}),
    "owner": ("user", {}),
    "version": ("integer", {}),
}


def system_field(entity: str, name: str) -> Field:
    from .labels import Label

    type_name, params = _SYSTEM_TYPES[name]
    return Field(
        name=name, type=type_name, label=Label.humanize(name), entity=entity, params=params
    )


def resolve_path(
    entity: Entity, dotted: str, entity_of: Callable[[str], Entity | None]
) -> tuple[Field, tuple[Field, ...]]:
    """The field at the end of ``a.b.c`` and the lookups walked to reach it."""
    if not isinstance(dotted, str) or not dotted:
        raise FilterError("expected a field name")
    parts = dotted.split(".")
    current, walked = entity, []
    for index, part in enumerate(parts):
        if part in current.fields:
            field = current.fields[part]
        elif part in SYSTEM_COLUMNS:
            field = system_field(current.name, part)
        else:
            names = list(current.fields) + list(SYSTEM_COLUMNS)
            raise FilterError(
                f"{current.name} has no field {part!r}{did_you_mean(part, names)}", dotted
            )
        if index == len(parts) - 1:
            return field, tuple(walked)
        if field.type != "lookup":
            raise FilterError(f"{part!r} is not a lookup, so '.' cannot follow it", dotted)
        target = entity_of(field.target)
        if target is None:
            raise FilterError(f"{part!r} points at unknown entity {field.target!r}", dotted)
        walked.append(field)
        current = target
    raise AssertionError("unreachable")


def through_unknown_entity(
    entity: Entity, dotted: str, entity_of: Callable[[str], Entity | None]
) -> bool:
    """Does ``a.b.c`` pass through a lookup whose entity does not exist?  That lookup's own
    definition is reported already, so checks of paths through it stay silent."""
    current = entity
    for part in str(dotted).split(".")[:-1]:
        field = current.fields.get(part)
        if field is None or field.type != "lookup":
            return False
        current = entity_of(field.target)
        if current is None:
            return True
    return False


def parse_filter(
    raw: Any, entity: Entity, entity_of: Callable[[str], Entity | None], *, max_depth: int = 12
):
    """Check and type a raw filter tree; ``None`` or an empty list means 'everything'."""
    if raw is None or raw == [] or raw == {}:
        return None
    return _parse(raw, entity, entity_of, max_depth)


def _parse(raw, entity, entity_of, depth):
    if depth <= 0:
        raise FilterError("filter is nested too deeply")
    if isinstance(raw, Mapping):
        if len(raw) != 1:
            raise FilterError("a filter node has exactly one of all, any, not")
        ((key, value),) = raw.items()
        if key in ("all", "any"):
            if not isinstance(value, list):
                raise FilterError(f"{key!r} takes a list of filters")
            children = tuple(_parse(v, entity, entity_of, depth - 1) for v in value)
            return All(children) if key == "all" else AnyOf(children)
        if key == "not":
            return Not(_parse(value, entity, entity_of, depth - 1))
        raise FilterError(f"unknown filter node {key!r} (expected all, any or not)")
    if isinstance(raw, list | tuple):
        if len(raw) not in (2, 3):
            raise FilterError("a condition is [field, op] or [field, op, value]")
        return _condition(raw, entity, entity_of)
    raise FilterError("expected a condition [field, op, value] or an all/any/not node")


def operators_of(field: Field) -> frozenset[str]:
    """The operators a field takes; a formula takes those of the type it results in."""
    if field.type == "formula":
        return field.kind.result_type(field).operators
    return field.kind.operators


def _condition(raw, entity, entity_of):
    dotted, op = raw[0], raw[1]
    field, lookups = resolve_path(entity, dotted, entity_of)
    allowed = operators_of(field)
    if not isinstance(op, str) or op not in allowed:
        raise FilterError(
            f"operator {op!r} does not apply to {field.type} fields "
            f"(expected one of {one_of(allowed, 40)}){did_you_mean(op, allowed)}",
            dotted,
        )
    has_value = len(raw) == 3
    value = raw[2] if has_value else None
    path = tuple(dotted.split("."))
    if op in EMPTY_OPS or op in RELATIVE_DATE_OPS:
        if has_value and value not in (None, True):
            raise FilterError(f"operator {op!r} takes no value", dotted)
        return Condition(path, op, None, field, lookups)
    if not has_value:
        raise FilterError(f"operator {op!r} needs a value", dotted)
    try:
        value = _coerce_value(field, op, value)
    except CoercionError as exc:
        raise FilterError(f"bad value for {op!r}: {exc.message}", dotted) from None
    return Condition(path, op, value, field, lookups)


def _coerce_one(field: Field, value):
    if value == "current_user" and field.type == "user":
        return CURRENT_USER
    if field.type in ("multi_choice",):
        return ChoiceType.coerce(field.kind, field, value)  # one option of the set
    if field.type == "tags":
        coerced = field.kind.coerce(field, [value])
        return coerced[0] if coerced else None
    if field.type == "many_to_many":
        return field.kind.coerce(field, [value])[0]
    coerced = field.kind.coerce(field, value)
    if coerced is None:
        raise CoercionError("a value is required (use is_empty to match empty fields)")
    return coerced


def _coerce_value(field: Field, op: str, value):
    if op in RELATIVE_N_OPS:
        # at most the longest duration: today plus or minus it stays a representable date
        if type(value) is not int or not 0 <= value <= MAX_DURATION // 86_400:
            raise CoercionError(f"expected a whole number of days up to {MAX_DURATION // 86_400}")
        return value
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple):
            raise CoercionError("expected a list")
        return tuple(_coerce_one(field, v) for v in value)
    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise CoercionError("expected [low, high]")
        return (_coerce_one(field, value[0]), _coerce_one(field, value[1]))
    if op in ("contains", "starts_with") and field.kind.json_type == "string":
        if not isinstance(value, str) or not value:
            raise CoercionError("expected text")
        return value
    if op in ("contains", "not_contains") and field.kind.json_type == "array":
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce_one(field, v) for v in items)
    return _coerce_one(field, value)


# ----------------------------------------------------------------------- relative dates
def date_range(op: str, value: int | None, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """A relative-date operator as a half-open ``[start, end)`` range of dates."""
    one = dt.timedelta(days=1)
    if op == "today":
        return today, today + one
    if op == "yesterday":
        return today - one, today
    if op == "tomorrow":
        return today + one, today + 2 * one
    if op == "last_n_days":  # the n days before today, and today
        return today - dt.timedelta(days=value), today + one
    if op == "next_n_days":
        return today, today + dt.timedelta(days=value + 1)
    if op == "older_than_days":
        return None, today - dt.timedelta(days=value)
    shift_name, _, period = op.partition("_")
    shift = {"this": 0, "last": -1, "next": 1}[shift_name]
    if period == "week":
        start = today - dt.timedelta(days=today.weekday()) + dt.timedelta(weeks=shift)
        return start, start + dt.timedelta(weeks=1)
    if period == "month":
        month_index = today.year * 12 + today.month - 1 + shift
        start = dt.date(month_index // 12, month_index % 12 + 1, 1)
        month_index += 1
        return start, dt.date(month_index // 12, month_index % 12 + 1, 1)
    if period == "quarter":
        quarter_index = today.year * 4 + (today.month - 1) // 3 + shift
        start = dt.date(quarter_index // 4, (quarter_index % 4) * 3 + 1, 1)
        quarter_index += 1
        return start, dt.date(quarter_index // 4, (quarter_index % 4) * 3 + 1, 1)
    if period == "year":
        return dt.date(today.year + shift, 1, 1), dt.date(today.year + shift + 1, 1, 1)
    raise FilterError(f"unknown relative date operator {op!r}")


def datetime_range(op: str, value, now: dt.datetime, tz: str):
    """The same range for datetime fields: local midnights in the user's zone, as UTC."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    start, end = date_range(op, value, today)

    def utc(day):
        if day is None:
            return None
        return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)

    return utc(start), utc(end)


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What a filter needs at run time: who asks, and when and where they are."""

    user_id: int | None = None
    tz: str = "UTC"
    now: dt.datetime | None = None

    def current_now(self) -> dt.datetime:
        return self.now or dt.datetime.now(dt.UTC)

    def today(self) -> dt.date:
        return self.current_now().astimezone(ZoneInfo(self.tz)).date()

    def bind(self, value):
        if value is CURRENT_USER or isinstance(value, CurrentUser):
            return self.user_id
        if isinstance(value, tuple):
            return tuple(self.bind(v) for v in value)
        return value


def conditions_of(node):
    """Every condition leaf of a tree (for index planning and permission checks)."""
    if node is None:
        return
    if isinstance(node, Condition):
        yield node
    elif isinstance(node, All | AnyOf):
        for child in node.children:
            yield from conditions_of(child)
    elif isinstance(node, Not):
        yield from conditions_of(node.child)
