"""Groups and measures of aggregates, as written in reports and the aggregate API: parsed
and checked against the entities here, so the pack checker and the query that runs them
accept exactly the same specs (``xrm.storage.aggregate`` turns them into SQL).

A group is ``"stage"``, ``"account.industry"`` or ``"close_date:month"``; a measure is
``"count"``, ``"sum:amount"``, ``"avg:amount"``, ``"min:close_date"``, ``"max:amount"``,
``"distinct:account"`` or ``"weighted:amount*probability/100"``.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from dataclasses import dataclass

from .filters import FilterError, resolve_path
from .model import Entity, Field

EntityOf = Callable[[str], Entity | None]

BUCKETS = ("day", "week", "month", "quarter", "year")
MEASURES = ("count", "sum", "avg", "min", "max", "distinct", "weighted")
GROUPABLE = frozenset(
    {
        "text",
        "email",
        "phone",
        "url",
        "integer",
        "rating",
        "boolean",
        "date",
        "datetime",
        "choice",
        "lookup",
        "user",
        "autonumber",
    }
)
ORDERED = frozenset(
    {"integer", "decimal", "money", "percent", "duration", "rating", "date", "datetime", "time"}
)
SUMMABLE = frozenset({"integer", "decimal", "money", "percent", "duration", "rating"})


def value_kind(f: Field):
    """The field type whose values a field holds (a formula or rollup: its result's)."""
    result = getattr(f.kind, "result_type", None)
    return result(f) if result is not None else f.kind


def value_type(f: Field) -> str:
    return value_kind(f).name


@dataclass(frozen=True)
class Group:
    key: str
    path: str
    field: Field
    bucket: str | None


@dataclass(frozen=True)
class Measure:
    key: str
    kind: str
    path: str | None
    field: Field | None
    value: str | None = None  # the type of the values measured
    quantum: decimal.Decimal | None = None  # a decimal sum's places, as 0.01
    by: str | None = None  # a weighted sum's weight
    divide: decimal.Decimal | None = None  # and what the products are divided by

    @property
    def paths(self) -> tuple[str, ...]:
        """The fields the measure reads (each must be readable by the user)."""
        return tuple(p for p in (self.path, self.by) if p)


def parse_group(entity: Entity, entity_of: EntityOf, spec: str) -> Group:
    path, _, bucket = str(spec).partition(":")
    field, _lookups = resolve_path(entity, path, entity_of)
    kind = value_type(field)
    if not field.stored or kind not in GROUPABLE:
        raise FilterError(f"cannot group by a {field.type} field", spec)
    if bucket:
        if kind not in ("date", "datetime"):
            raise FilterError(f"only dates have buckets, and {path} is a {kind}", spec)
        if bucket not in BUCKETS:
            raise FilterError(
                f"unknown bucket {bucket!r} (expected one of {', '.join(BUCKETS)})", spec
            )
    elif kind == "datetime":
        bucket = "day"  # a moment is grouped by its local day
    return Group(str(spec), path, field, bucket or None)


def parse_measure(entity: Entity, entity_of: EntityOf, spec: str) -> Measure:
    kind, _, path = str(spec).partition(":")
    if kind not in MEASURES:
        raise FilterError(f"unknown measure {kind!r} (expected one of {', '.join(MEASURES)})", spec)
    if kind == "count":
        if path:
            raise FilterError("count takes no field (use distinct:FIELD)", spec)
        return Measure("count", "count", None, None)
    if kind == "weighted":
        return _weighted(entity, entity_of, str(spec), path)
    if not path:
        raise FilterError(f"{kind} needs a field, as in {kind}:amount", spec)
    field, _lookups = resolve_path(entity, path, entity_of)
    value = value_type(field)
    if not field.stored:
        raise FilterError(f"{field.type} field {path!r} has no column", spec)
    if kind in ("sum", "avg") and value not in SUMMABLE:
        raise FilterError(f"{kind} needs a number, and {path} is a {value}", spec)
    if kind in ("min", "max") and value not in ORDERED:
        raise FilterError(f"{kind} needs a number, date or time, and {path} is a {value}", spec)
    if kind == "distinct" and value not in GROUPABLE:
        raise FilterError(f"cannot count distinct values of a {field.type} field", spec)
    return Measure(str(spec), kind, path, field, value, _quantum(field))


def _quantum(field: Field) -> decimal.Decimal | None:
    if value_type(field) not in ("decimal", "money", "percent"):
        return None
    kind_of = value_kind(field)
    places = kind_of.scale(field) if hasattr(kind_of, "scale") else 4
    return decimal.Decimal(1).scaleb(-places)


def _number_field(entity: Entity, entity_of: EntityOf, path: str, spec: str) -> Field:
    field, _lookups = resolve_path(entity, path, entity_of)
    if not field.stored:
        raise FilterError(f"{field.type} field {path!r} has no column", spec)
    if value_type(field) not in SUMMABLE:
        raise FilterError(
            f"a weighted sum needs numbers, and {path} is a {value_type(field)}", spec
        )
    return field


def _weighted(entity: Entity, entity_of: EntityOf, spec: str, text: str) -> Measure:
    """``weighted:amount*probability/100``: the sum of amount x probability / 100, in the
    amount's type (a weighted pipeline in money, rounded as money is)."""
    product, slash, divisor = text.partition("/")
    path, star, by = product.partition("*")
    path, by, divisor = path.strip(), by.strip(), divisor.strip()
    if not (path and star and by) or (slash and not divisor):
        raise FilterError(
            "a weighted sum is written weighted:FIELD*WEIGHT or weighted:FIELD*WEIGHT/NUMBER", spec
        )
    divide = None
    if slash:
        try:
            divide = decimal.Decimal(divisor)
        except decimal.InvalidOperation:
            raise FilterError(f"{divisor!r} is not a number to divide by", spec) from None
        if not divide.is_finite() or divide <= 0:
            raise FilterError("a weighted sum is divided by a number above 0", spec)
    field = _number_field(entity, entity_of, path, spec)
    _number_field(entity, entity_of, by, spec)
    value = value_type(field)
    quantum = _quantum(field)
    if quantum is None and divide is not None:  # whole numbers divided give fractions
        quantum, value = decimal.Decimal("0.0001"), "decimal"
    return Measure(spec, "weighted", path, field, value, quantum, by, divide)


def bucket_start(day: dt.date, bucket: str) -> dt.date:
    """The first day of the date bucket holding ``day`` (weeks start on Monday)."""
    if bucket == "day":
        return day
    if bucket == "week":
        return day - dt.timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    if bucket == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def next_bucket(start: dt.date, bucket: str) -> dt.date | None:
    """The first day of the bucket after the one starting on ``start`` (None past 9999)."""
    try:
        if bucket == "day":
            return start + dt.timedelta(days=1)
        if bucket == "week":
            return start + dt.timedelta(days=7)
        return months_from(start, {"month": 1, "quarter": 3, "year": 12}[bucket])
    except (OverflowError, ValueError):
        return None


def months_from(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after ``day``'s (before it, when negative)."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)
