"""Aggregates over records, the base of reports, dashboards and funnels: group by fields
(dates in buckets, datetimes in the user's time zone) and measures (count, sum, average,
minimum, maximum, distinct values), with the filter language, search and permissions of
every other read.

A group is ``"stage"``, ``"account.industry"`` or ``"close_date:month"`` (buckets: day,
week (starting Monday), month, quarter, year); a measure is ``"count"`` or
``"sum:amount"``, ``"avg:amount"``, ``"min:close_date"``, ``"max:amount"``,
``"distinct:account"``, or a weighted sum ``"weighted:amount*probability/100"`` (the sum
of one number times another, divided by a constant: a pipeline weighted by probability).  Each result row maps the group and measure strings to values:
a bucket is the date it starts on, sums of money are Decimals, counts are integers.

Date buckets are SQL on both databases.  A datetime bucket is a local date in the user's
zone: PostgreSQL converts with ``AT TIME ZONE``; SQLite, which has no time zones, gets the
buckets' boundaries in UTC from Python (zoneinfo, so daylight saving is right) as one
CASE over the column's range.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..metadata.aggregates import (  # noqa: F401 (the names callers know from here)
    BUCKETS,
    GROUPABLE,
    MEASURES,
    ORDERED,
    SUMMABLE,
    Group,
    Measure,
    bucket_start,
    next_bucket,
    value_kind,
    value_type,
)
from ..metadata.aggregates import parse_group as _parse_group
from ..metadata.aggregates import parse_measure as _parse_measure
from ..metadata.filters import FilterError

if TYPE_CHECKING:  # pragma: no cover
    from .records import Records
#: A local time PostgreSQL buckets is kept within what Python's dates hold.
_FIRST_LOCAL = sa.literal(dt.datetime(1, 1, 1), sa.DateTime())
_LAST_LOCAL = sa.literal(dt.datetime(9999, 12, 31, 23, 59, 59), sa.DateTime())
MAX_SQLITE_BUCKETS = 5000  # boundaries in one CASE; a coarser bucket fits a longer range


def parse_group(records: Records, spec: str) -> Group:
    return _parse_group(records.entity, records.catalog.entity_of, spec)


def parse_measure(records: Records, spec: str) -> Measure:
    return _parse_measure(records.entity, records.catalog.entity_of, spec)


def aggregate(
    records: Records,
    group_by: Sequence[str] = (),
    measures: Sequence[str] = ("count",),
    filter=None,
    *,
    search: str | None = None,
    limit: int = 1000,
) -> list[dict]:
    """Group the records the user may read; one dict per group, sorted by the groups."""
    groups = [parse_group(records, spec) for spec in group_by]
    wanted = [parse_measure(records, spec) for spec in measures or ("count",)]
    tree = records.parse_filter(filter)
    records._check_reads(tree, [g.path for g in groups] + [p for m in wanted for p in m.paths])
    builder = records.builder()
    conditions = records.conditions(builder, tree, search)
    with records._reading() as conn:
        keys = [
            _group_expression(conn, builder, conditions, g, records.tz).label(f"g{i}")
            for i, g in enumerate(groups)
        ]
        values = [_measure_expression(builder, m).label(f"m{i}") for i, m in enumerate(wanted)]
        statement = (
            sa.select(*keys, *values)
            .select_from(builder.from_clause)
            .where(*conditions)
            .group_by(*(k.element for k in keys))
            .order_by(*(k.element.asc().nulls_last() for k in keys))
            .limit(limit)
        )
        rows = conn.execute(statement).all()
    result = []
    for row in rows:
        item = {g.key: _group_value(g, row[i]) for i, g in enumerate(groups)}
        offset = len(groups)
        for i, m in enumerate(wanted):
            item[m.key] = _measure_value(m, row[offset + i])
        result.append(item)
    return result


# ------------------------------------------------------------------------ SQL
def _group_expression(conn, builder, conditions, group: Group, tz: str):
    column = builder.column(group.path)
    if group.bucket is None:
        return column
    if value_type(group.field) == "date":
        return _date_bucket(column, group.bucket, conn.dialect.name)
    if conn.dialect.name == "postgresql":
        # stored as UTC without a zone: read it as UTC, then as the zone's wall clock,
        # kept within the dates Python holds (a moment stored near year 1 or 9999 falls
        # into the first or the last bucket rather than failing the whole report)
        local = sa.func.timezone(tz, sa.func.timezone("UTC", column))
        kept = sa.func.least(sa.func.greatest(local, _FIRST_LOCAL), _LAST_LOCAL)
        local = sa.case((column.is_(None), None), else_=kept)  # GREATEST skips NULLs
        return sa.cast(sa.func.date_trunc(group.bucket, local), sa.Date)
    return _sqlite_moment_bucket(conn, builder, conditions, column, group, ZoneInfo(tz))


def _date_bucket(column, bucket: str, dialect: str):
    if dialect == "postgresql":
        return sa.cast(sa.func.date_trunc(bucket, column), sa.Date)
    f = sa.func
    if bucket == "day":
        return f.date(column)
    if bucket == "month":
        return f.strftime("%Y-%m-01", column)
    if bucket == "year":
        return f.strftime("%Y-01-01", column)
    if bucket == "week":  # back to Monday (%w: Sunday is 0)
        back = (sa.cast(f.strftime("%w", column), sa.Integer) + 6) % 7
        return f.date(column, sa.literal("-") + sa.cast(back, sa.String) + sa.literal(" days"))
    month = sa.cast(f.strftime("%m", column), sa.Integer)
    first = (month - 1) // 3 * 3 + 1
    quarter = f.printf("%s-%02d-01", f.strftime("%Y", column), first)
    return sa.case((column.is_(None), None), else_=quarter)  # printf makes text of NULLs


def _sqlite_moment_bucket(conn, builder, conditions, column, group: Group, zone: ZoneInfo):
    low, high = conn.execute(
        sa.select(sa.func.min(column), sa.func.max(column))
        .select_from(builder.from_clause)
        .where(*conditions)
    ).one()
    if low is None:
        return sa.literal(None, sa.String)
    low, high = _as_utc(low), _as_utc(high)
    starts = []
    start = bucket_start(_local_day(low, zone), group.bucket)
    end = _local_day(high, zone)
    while start is not None and start <= end:
        starts.append(start)
        if len(starts) > MAX_SQLITE_BUCKETS:
            raise FilterError(
                f"more than {MAX_SQLITE_BUCKETS} {group.bucket} buckets: choose a longer one",
                group.key,
            )
        start = next_bucket(start, group.bucket)
    column_type = column.type
    whens = [
        (column >= sa.literal(_local_midnight(day, zone), column_type), day.isoformat())
        for day in reversed(starts[1:])
    ]
    # the first bucket takes every moment before the second, so a moment whose local date
    # is before year 1 (clamped into it above) lands there too
    return sa.case((column.is_(None), None), *whens, else_=starts[0].isoformat())


def _as_utc(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _local_day(moment: dt.datetime, zone: ZoneInfo) -> dt.date:
    """The local date of a moment, clamped like PostgreSQL's buckets above."""
    try:
        return moment.astimezone(zone).date()
    except OverflowError:  # the zone's wall clock is past year 9999, or before year 1
        return dt.date.max if moment.year > 1 else dt.date.min


def _local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)


def _measure_expression(builder, measure: Measure):
    if measure.kind == "count":
        return sa.func.count()
    column = builder.column(measure.path)
    if measure.kind == "distinct":
        return sa.func.count(sa.distinct(column))
    if measure.kind == "weighted":
        # numeric on both databases, so money times a percent is not rounded to a float
        product = sa.cast(column, sa.Numeric(38, 10)) * sa.cast(
            builder.column(measure.by), sa.Numeric(38, 10)
        )
        if measure.divide is not None:
            product = product / sa.literal(measure.divide, sa.Numeric(38, 10))
        return sa.func.sum(product)
    return getattr(sa.func, measure.kind)(column)


# ------------------------------------------------------------------------ values
def _group_value(group: Group, value):
    if value is None:
        return None
    if group.bucket is not None:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    return (
        group.field.kind.coerce(group.field, value)
        if value_type(group.field) == "boolean"
        else value
    )


def _measure_value(measure: Measure, value):
    if measure.kind in ("count", "distinct"):
        return int(value or 0)
    if value is None:
        return None
    kind = measure.value
    if measure.kind == "avg":
        return decimal.Decimal(str(value)) if measure.quantum is not None else float(value)
    if measure.quantum is not None:
        return decimal.Decimal(str(value)).quantize(measure.quantum)
    if kind in ("integer", "duration", "rating"):
        return int(value)
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if kind == "datetime":
        return _as_utc(value)
    return value
