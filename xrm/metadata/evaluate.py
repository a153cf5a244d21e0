"""The filter language's Python back end: does one record match a typed filter tree?

Semantics are two-valued and mirror the SQL compiler (storage.query) exactly: an empty
value never equals, contains or compares with anything; ``ne`` and ``not_in`` match empty
values; text ``contains``/``starts_with`` ignore case.  Every leaf is true or false, so
``not`` simply negates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .filters import All, AnyOf, Condition, FilterContext, Not, date_range, datetime_range


def matches(node, value_of: Callable[[Condition], Any], ctx: FilterContext | None = None) -> bool:
    """``value_of(condition)`` returns the record's value at the condition's path."""
    ctx = ctx or FilterContext()
    if node is None:
        return True
    if isinstance(node, Condition):
        return _leaf(node, value_of(node), ctx)
    if isinstance(node, All):
        return all(matches(child, value_of, ctx) for child in node.children)
    if isinstance(node, AnyOf):
        return any(matches(child, value_of, ctx) for child in node.children)
    if isinstance(node, Not):
        return not matches(node.child, value_of, ctx)
    raise TypeError(f"not a filter node: {node!r}")


def record_getter(record: dict, related: Callable[[str, Any], dict | None] | None = None):
    """A value_of for a record dict; ``related(entity, id)`` loads records for dotted paths."""

    def value_of(condition: Condition):
        current: Any = record
        for lookup in condition.lookups:
            ident = current.get(lookup.name) if current else None
            if ident is None or related is None:
                return None
            current = related(lookup.params["to"], ident)
        if current is None:
            return None
        field = condition.field
        if field.type == "any_lookup":
            value = current.get(field.name)
        else:
            value = current.get(condition.path[-1])
        return field.kind.python_value(field, value)

    return value_of


def _empty(value) -> bool:
    return value is None or value == [] or value == () or value == ""


def _lower(value) -> str:
    return str(value).lower()


def _leaf(cond: Condition, value, ctx: FilterContext) -> bool:
    op = cond.op
    if op == "is_empty":
        return _empty(value)
    if op == "is_not_empty":
        return not _empty(value)
    target = ctx.bind(cond.value)
    kind = cond.field.kind
    if kind.json_type == "array":
        items = set(value or ())
        wanted = set(target or ())
        if op == "contains":
            return bool(items & wanted)
        if op == "not_contains":
            return not (items & wanted)
    if op == "ne":
        return _empty(value) or value != target
    if op == "not_in":
        return _empty(value) or value not in target
    if _empty(value):
        return False
    if op == "eq":
        return value == target
    if op == "in":
        return value in target
    if op == "lt":
        return value < target
    if op == "le":
        return value <= target
    if op == "gt":
        return value > target
    if op == "ge":
        return value >= target
    if op == "between":
        return target[0] <= value <= target[1]
    if op == "contains":
        return _lower(target) in _lower(value)
    if op == "starts_with":
        return _lower(value).startswith(_lower(target))
    # relative dates: half-open ranges computed by the same function as the SQL side
    if isinstance(value, dt.datetime):
        start, end = datetime_range(op, target, ctx.current_now(), ctx.tz)
    else:
        start, end = date_range(op, target, ctx.today())
    return (start is None or value >= start) and (end is None or value < end)
