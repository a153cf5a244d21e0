"""A report's parameters as the user gives them (text, as in a query string) turned into
the conditions its filter's ``{param: name}`` leaves stand for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from ..metadata.aggregates import months_from, value_type
from ..metadata.fieldtypes import RELATIVE_DATE_OPS
from ..metadata.filters import FilterError, date_range, parse_filter, resolve_path
from ..metadata.problems import did_you_mean
from ..metadata.reports import N_PERIOD, Report, ReportParameter, period_problem


class ParameterError(ValueError):
    """A parameter value the report cannot use (an unknown period, team or option)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def resolve_parameters(report: Report, given: Mapping[str, str], records) -> dict[str, object]:
    """Parameter name -> the condition it stands for (None: left empty, matches all).

    ``given`` holds the user's values as text; a parameter not given takes its default.
    Each condition is checked on its own, so a bad value is named by its parameter."""
    unknown = [name for name in given if name not in report.parameters]
    if unknown:
        raise ParameterError(
            unknown[0],
            f"unknown parameter of report {report.name!r}"
            f"{did_you_mean(unknown[0], report.parameters)}"
            f" (expected {', '.join(report.parameters) or 'none'})",
        )
    conditions = {}
    for name, parameter in report.parameters.items():
        value = given.get(name)
        if value is None or str(value).strip() == "":
            value = parameter.default
        condition = None if value is None else _condition(parameter, value, records)
        if condition is not None:
            try:
                parse_filter(condition, records.entity, records.catalog.entity_of)
            except FilterError as exc:
                raise ParameterError(name, exc.message) from None
        conditions[name] = condition
    return conditions


def _condition(parameter: ReportParameter, value, records):
    path = parameter.field
    if parameter.type == "period":
        return _period(parameter, str(value).strip(), records)
    if parameter.type == "user":
        text = str(value).strip()
        if text in ("me", "current_user"):
            return [path, "eq", "current_user"]
        if not text.isdigit():
            raise ParameterError(parameter.name, f"expected me or a user id, got {text!r}")
        return [path, "eq", int(text)]
    if parameter.type == "team":
        teams = records.store.teams()
        name = str(value).strip()
        if name not in teams:
            raise ParameterError(
                parameter.name, f"unknown team {name!r}{did_you_mean(name, teams)}"
            )
        return [path, "in", sorted(teams[name])]
    values = value if isinstance(value, list | tuple) else str(value).split(",")
    values = [str(v).strip() for v in values if str(v).strip()]
    if len(values) > 1 and not parameter.multiple:
        raise ParameterError(parameter.name, "takes one option")
    return [path, "in", values] if values else None


def period_bounds(text: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """A period value (checked) as a half-open range of local dates; None for ``all``."""
    if text == "all":
        return None
    if text in RELATIVE_DATE_OPS:
        return date_range(text, None, today)
    direction, count, unit = N_PERIOD.match(text).groups()
    if unit == "days":
        return date_range(f"{direction}_n_days", int(count), today)
    # calendar months: last_12_months is this month and the eleven before it, so a
    # monthly report of it has twelve whole buckets
    first = months_from(today, 1 - int(count) if direction == "last" else 0)
    return first, months_from(first, int(count))


def period_moments(parameter: ReportParameter, value, records):
    """A period parameter's value (its default when empty) as a half-open range of UTC
    moments between the user's local midnights; None for all time."""
    text = str(value).strip() if value is not None and str(value).strip() else parameter.default
    if text is None:
        return None
    problem = period_problem(text)
    if problem:
        raise ParameterError(parameter.name, problem)
    bounds = period_bounds(str(text), records.context().today())
    if bounds is None:
        return None
    zone = ZoneInfo(records.tz)
    return tuple(dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC) for day in bounds)


def _period(parameter: ReportParameter, text: str, records):
    problem = period_problem(text)
    if problem:
        raise ParameterError(parameter.name, problem)
    path = parameter.field
    if text == "all":
        return None
    if text in RELATIVE_DATE_OPS:
        return [path, text]
    direction, count, unit = N_PERIOD.match(text).groups()
    if unit == "days":
        return [path, f"{direction}_n_days", int(count)]
    start, end = period_bounds(text, records.context().today())
    field, _ = resolve_path(records.entity, path, records.catalog.entity_of)
    if value_type(field) == "datetime":
        zone = ZoneInfo(records.tz)
        low, high = (utc_midnight(day, zone) for day in (start, end))
    else:
        low, high = start.isoformat(), end.isoformat()
    return {"all": [[path, "ge", low], [path, "lt", high]]}


def utc_midnight(day: dt.date, zone: ZoneInfo) -> str:
    moment = dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")
