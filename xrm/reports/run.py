"""Running a report: its filter filled with the user's parameters, its groups and measures
aggregated in SQL (``Records.aggregate``, which holds every permission check), the rows put
in the report's order, a pivot's columns and the totals, each total its own SQL aggregate
(an average or a distinct count of a whole is not the sum of its parts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..metadata.aggregates import next_bucket, parse_group
from ..metadata.filters import FilterError, ReadRefused
from ..metadata.model import thaw
from ..metadata.reports import MAX_LIMIT, Report, fill_filter
from ..storage.records import Forbidden
from .parameters import resolve_parameters


class ReportError(ValueError):
    """A report that cannot run as asked (too many groups or buckets)."""


class ReportRefused(PermissionError):
    """A report that groups, measures or filters by what the user may not read."""


@dataclass(frozen=True)
class ReportResult:
    """A report's figures.  Without a pivot a row maps each group and measure to its value;
    with one, a row maps the other groups to their values, ``cells`` to one mapping of
    measures per column (None where no record falls) and, with totals, ``total`` to the
    row's own measures.  ``totals`` is the measures of every record (with a pivot, also
    ``cells``: those of each column), or None when the report has no totals."""

    report: Report
    groups: tuple[str, ...]  # the row groups (the pivot group is the columns)
    columns: tuple = ()  # the pivot group's values
    rows: list[dict] = field(default_factory=list)
    totals: dict | None = None
    parameters: Mapping[str, object] = field(default_factory=dict)  # conditions applied

    @property
    def measures(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.report.measures)


def sees_report(catalog, principal, report: Report) -> bool:
    """Whether a reader sees a report at all (``Report.visible_to``: a personal report is
    its owner's, one published to roles theirs and the administrators'); None is the
    platform, which sees every report.  Reading its records is the run's own check."""
    if principal is None:
        return True
    admin = principal.is_admin or any(
        getattr(catalog.roles.get(r), "admin", False) for r in principal.roles
    )
    return report.visible_to(principal.user_id, principal.email, principal.roles, admin)


def run_report(store, report: Report, params: Mapping[str, str], principal=None) -> ReportResult:
    """Run a report as ``principal`` (None: the platform, with full access).  A report
    the reader does not see (another user's personal one, one published to other roles)
    is refused here, so every channel (pages, API, dashboards, emails) holds the rule."""
    if not sees_report(store.catalog, principal, report):
        raise ReportRefused(f"report {report.name!r} is not shared with this user")
    if report.kind == "conversion_funnel":
        from .funnel import run_funnel  # funnel.py builds on this module's result

        return run_funnel(store, report, params, principal)
    records = store.records(report.entity, principal=principal)
    conditions = resolve_parameters(report, params, records)
    raw = fill_filter(report.filter, conditions) if report.filter is not None else None
    tree = records.parse_filter(raw) if raw is not None else None
    plain = [m for m in report.measures if m.where is m.source is m.share is None]
    specs = [m.spec for m in plain]
    names = {m.spec: m.name for m in plain}
    rows_of = _runner(records, tree, specs, names, report.name)
    if len(plain) < len(report.measures):
        rows_of = _without_shares(rows_of, report)
    others = [m for m in report.measures if m.where is not None or m.source is not None]
    if others:
        rows_of = _with_others(rows_of, store, report, params, principal, raw, others)
    groups = tuple(g for g in report.group_by if g != report.pivot)
    orders = {g: _option_order(records, g) for g in report.group_by}
    if report.pivot is None:
        found = rows_of(report.group_by)
        totals = (_combined(found, report) or rows_of(())[0]) if report.totals else None
        rows = _ordered(_gaps_filled(found, report, records), report, orders)
        return _shared(ReportResult(report, groups, (), rows, totals, conditions))
    cells = rows_of(report.group_by)
    columns = sorted({row[report.pivot] for row in cells}, key=_key(orders[report.pivot]))
    index = {value: i for i, value in enumerate(columns)}
    rows: dict[tuple, dict] = {}
    for row in cells:
        at = tuple(row[g] for g in groups)
        item = rows.setdefault(at, {**dict(zip(groups, at)), "cells": [None] * len(columns)})
        item["cells"][index[row[report.pivot]]] = {m: row[m] for m in names.values()}
    totals = None
    if report.totals and _combined([], report) is not None:
        # Every measure adds up (or is a min or max): the totals come from the cells.
        for item in rows.values():
            item["total"] = _combined([c for c in item["cells"] if c is not None], report)
        by_column = [
            _combined([item["cells"][i] for item in rows.values() if item["cells"][i]], report)
            for i in range(len(columns))
        ]
        totals = {**_combined(cells, report), "cells": by_column}
    elif report.totals:
        for row in rows_of(groups):
            rows[tuple(row[g] for g in groups)]["total"] = {m: row[m] for m in names.values()}
        by_column = {row[report.pivot]: row for row in rows_of((report.pivot,))}
        totals = {
            **rows_of(())[0],
            "cells": [{m: by_column[c][m] for m in names.values()} for c in columns],
        }
    return _shared(
        ReportResult(
            report,
            groups,
            tuple(columns),
            _ordered(list(rows.values()), report, orders),
            totals,
            conditions,
        )
    )


def _without_shares(rows_of, report: Report):
    """Rows with each share measure present (empty until ``_shared`` works it out)."""
    shares = [m.name for m in report.measures if m.share is not None]

    def rows(group_by) -> list[dict]:
        found = rows_of(group_by)
        for row in found:
            row.update(dict.fromkeys(shares))
        return found

    return rows


def _shared(result: ReportResult) -> ReportResult:
    """Each share measure (``[part, whole]``) as part / whole x 100 of the same figures:
    in every row, pivot cell, row total and the totals (None where the whole is 0)."""
    shares = [m for m in result.report.measures if m.share is not None]
    if not shares:
        return result

    def fill(figures):
        if not figures:
            return
        for measure in shares:
            part, whole = (figures.get(n) for n in measure.share)
            figures[measure.name] = (
                round(float(part or 0) * 100 / float(whole), 1) if whole else None
            )
        for inner in figures.get("cells") or ():
            fill(inner)
        fill(figures.get("total"))

    for row in result.rows:
        fill(row)
    fill(result.totals)
    return result


def _runner(records, tree, specs, names, report_name):
    """Aggregate by some groups: rows keyed by the report's group and measure names."""

    def rows_of(group_by) -> list[dict]:
        try:
            found = records.aggregate(list(group_by), specs, tree, limit=MAX_LIMIT + 1)
        except ReadRefused as exc:
            raise ReportRefused(f"report {report_name!r}: {exc}") from None
        except FilterError as exc:
            raise ReportError(f"report {report_name!r}: {exc}") from None
        if len(found) > MAX_LIMIT:
            raise ReportError(
                f"report {report_name!r}: more than {MAX_LIMIT} groups; narrow its parameters"
            )
        return [{names.get(k, k): v for k, v in row.items()} for row in found]

    return rows_of


def _with_others(rows_of, store, report: Report, params, principal, raw, others):
    """``rows_of`` with the measures that need a scan of their own: a measure with a
    ``where`` (the report's records that also match it) and a target (another entity's
    records, its groups and parameters mapped), each merged into the rows by the groups."""
    zero = _zeros(report)

    def scan(measure, group_by):
        if measure.source is None:
            where = thaw(measure.where)
            records = store.records(report.entity, principal=principal)
            tree = records.parse_filter({"all": [raw, where]} if raw is not None else where)
            found = _runner(
                records, tree, [measure.spec], {measure.spec: measure.name}, report.name
            )(group_by)
            return {tuple(row[g] for g in group_by): row[measure.name] for row in found}
        source = measure.source
        try:
            records = store.records(source.entity, principal=principal)
            records._check_access("read")
        except Forbidden as exc:
            raise ReportRefused(f"report {report.name!r}: targets {measure.name}: {exc}") from None
        mapped = dataclasses.replace(
            report,
            entity=source.entity,
            filter=None,
            parameters=MappingProxyType(
                {
                    name: dataclasses.replace(report.parameters[name], field=path)
                    for name, path in source.parameters.items()
                }
            ),
        )
        given = {k: v for k, v in params.items() if k in source.parameters}
        conditions = [c for c in resolve_parameters(mapped, given, records).values() if c]
        parts = [p for p in (thaw(source.filter), *conditions) if p is not None]
        tree = records.parse_filter({"all": parts}) if parts else None
        theirs = [source.groups[g] for g in group_by]
        found = _runner(records, tree, [measure.spec], {measure.spec: measure.name}, report.name)(
            theirs
        )
        return {tuple(row[g] for g in theirs): row[measure.name] for row in found}

    def merged(group_by) -> list[dict]:
        rows = (
            {tuple(row[g] for g in group_by): row for row in rows_of(group_by)}
            if (len(others) < len(report.measures))
            else {}
        )
        for measure in others:
            for key, value in scan(measure, group_by).items():
                row = rows.get(key)
                if row is None:
                    row = rows[key] = {**dict(zip(group_by, key)), **zero}
                row[measure.name] = value
        if not rows and not group_by:
            rows[()] = dict(zero)
        for row in rows.values():
            for measure in others:
                row.setdefault(measure.name, zero[measure.name])
        return list(rows.values())

    return merged


#: How a measure's figure over several groups comes from the groups' figures: counts and
#: sums add up, a minimum is the least of the minimums.  An average or a distinct count of
#: a whole is not made of its parts' figures, so a report with one of them asks SQL again.
_COMBINE = {"count": sum, "sum": sum, "weighted": sum, "min": min, "max": max}


def _combined(parts: list[dict], report: Report) -> dict | None:
    """The measures over ``parts`` (complete groups of a scan), or None when a measure
    cannot be combined.  Over no records a count is 0 and the others are empty, as SQL
    gives them."""
    out = {}
    for measure in report.measures:
        kind = measure.spec.split(":", 1)[0]
        combine = _COMBINE.get(kind)
        if combine is None:
            return None
        values = [part[measure.name] for part in parts if part[measure.name] is not None]
        out[measure.name] = combine(values) if values else (0 if kind == "count" else None)
    return out


#: Measures whose value over no records is zero (the others, avg/min/max, have none).
_ZERO_OVER_NOTHING = ("count", "distinct", "sum", "weighted")


def _zeros(report: Report) -> dict:
    """Each measure's figure over no records: the row of an empty bucket or group."""
    return {
        m.name: (0 if m.spec.split(":", 1)[0] in _ZERO_OVER_NOTHING else None)
        for m in report.measures
    }


def _gaps_filled(rows: list[dict], report: Report, records) -> list[dict]:
    """A time series (one date-bucket group) with the empty buckets between its first and
    last one put in, at zero: a chart by month must not jump from July to October."""
    if len(report.group_by) != 1:
        return rows
    spec = report.group_by[0]
    group = parse_group(records.entity, records.catalog.entity_of, spec)
    present = {row[spec] for row in rows if row[spec] is not None}
    if group.bucket is None or len(present) < 2:
        return rows
    if not all(isinstance(day, dt.date) for day in present):
        return rows
    zero = _zeros(report)
    day, last = min(present), max(present)
    filled = list(rows)
    while day is not None and day < last and len(filled) <= MAX_LIMIT:
        if day not in present:
            filled.append({spec: day, **zero})
        day = next_bucket(day, group.bucket)
    return filled


def _option_order(records, spec: str) -> dict | None:
    """A choice group's options in their defined order (a funnel's stages), else None."""
    group = parse_group(records.entity, records.catalog.entity_of, spec)
    if group.bucket is None and group.field.type == "choice":
        return {value: i for i, value in enumerate(group.field.choice_values)}
    return None


def _key(order: dict | None):
    """Values in option order or their own; empty values last either way."""

    def key(value):
        if value is None:
            return (2, 0)
        if order is not None:
            return (0, order.get(value, len(order)))
        return (1, value)

    return key


def _ordered(rows: list[dict], report: Report, orders: Mapping) -> list[dict]:
    """Rows by their groups (choices in option order), then by the report's sort keys
    (the last key applied first, as sorts are stable), cut to the report's limit."""
    groups = [g for g in report.group_by if g != report.pivot]
    rows = sorted(rows, key=lambda row: tuple(_key(orders[g])(row[g]) for g in groups))
    for name, direction in reversed(report.sort):
        order = orders.get(name)
        present = [row for row in rows if _value(row, name) is not None]
        empty = [row for row in rows if _value(row, name) is None]
        present.sort(key=lambda row: _key(order)(_value(row, name)), reverse=direction == "desc")
        rows = present + empty
    return rows[: report.limit]


def _value(row: dict, name: str):
    """A row's group or measure (a pivot row's measure: its total)."""
    if name in row:
        return row[name]
    return (row.get("total") or {}).get(name)
