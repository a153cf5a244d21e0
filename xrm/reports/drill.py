"""The records behind a figure of a report: its filter with the parameters the report ran
with, narrowed to one cell's group values, in the filter language (so a list, an export or
the API shows exactly the records the figure counts, under the same permission checks).

A group value becomes an equality; an empty one ``is_empty``; a date bucket the range of
dates it covers (``ge`` its first day, ``lt`` the next bucket's), a datetime bucket the
same range between the user's local midnights, as the aggregate buckets them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from ..metadata.aggregates import next_bucket, parse_group, value_type
from ..metadata.reports import fill_filter
from .run import ReportResult


def records_filter(records, result: ReportResult, values: Mapping[str, object]):
    """The raw filter of the records behind the figure whose groups have ``values``
    (group spec -> value; the groups left out are not narrowed: a row's total leaves out
    the pivot, the grand total every group).  ``records`` is the report entity's service
    the report ran with (its time zone places datetime buckets)."""
    report = result.report
    base = fill_filter(report.filter, result.parameters) if report.filter is not None else None
    parts = [base] if base is not None else []
    for spec in report.group_by:
        if spec in values:
            parts.extend(group_conditions(records, spec, values[spec]))
    return flatten(parts)


def group_conditions(records, spec: str, value) -> list:
    """The conditions that select one value of a group."""
    group = parse_group(records.entity, records.catalog.entity_of, spec)
    path = group.path
    if value is None:
        return [[path, "is_empty"]]
    if group.bucket is None:
        return [[path, "eq", value]]
    start = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    end = next_bucket(start, group.bucket)
    if value_type(group.field) == "datetime":
        zone = ZoneInfo(records.tz)
        low = _utc(start, zone)
        return [[path, "ge", low]] + ([[path, "lt", _utc(end, zone)]] if end else [])
    return [[path, "ge", start.isoformat()]] + ([[path, "lt", end.isoformat()]] if end else [])


def flatten(parts: list):
    """One ``all`` of the conditions (nested ``all``s opened up), or None for none."""
    flat = list(_opened(parts))
    return {"all": flat} if flat else None


def _opened(parts):
    for part in parts:
        if isinstance(part, Mapping) and set(part) == {"all"}:
            yield from _opened(part["all"])
        elif part is not None:
            yield part


def _utc(day: dt.date, zone: ZoneInfo) -> str:
    moment = dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")
