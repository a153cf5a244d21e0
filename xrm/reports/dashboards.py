"""Running a dashboard for one user: its global filters turned into each widget's report
parameters, every widget run under the user's scope and field rules (a report through
``run_report``, a KPI as its report run twice, the second time over the previous period,
a list through ``Records.query``), one widget's failure kept to that widget, and a small
in-process cache of widget results so that a busy dashboard costs a page render.

The cache is keyed by (dashboard, widget, resolved parameters, the user's scope identity,
time zone) and kept per store: entries live ``TTL`` seconds, so a change shows within a
minute, and each result says when it was computed ("updated 20 s ago").  A new catalog
version drops every entry.  The scope identity is the role set when the user reads every
entity they may read with scope ``all`` and the widget does not depend on who asks (no
``me``); otherwise the user's id, so ``own`` and ``team`` readers never share figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

from ..metadata.aggregates import months_from, value_type
from ..metadata.dashboards import Dashboard, Widget
from ..metadata.fieldtypes import RELATIVE_DATE_OPS
from ..metadata.filters import FilterError, resolve_path
from ..metadata.model import freeze, thaw
from ..metadata.problems import did_you_mean
from ..metadata.reports import N_PERIOD, Report, fill_filter, period_problem
from ..storage.records import RecordError
from .parameters import ParameterError, period_bounds, utc_midnight
from .run import ReportError, ReportRefused, ReportResult, run_report, sees_report

TTL = 60.0  # seconds a widget's figures are reused
CACHE_SIZE = 2048  # entries per store; the least recently used go first


class DashboardError(ValueError):
    """A global filter value the dashboard cannot use (an API 400, a page's message)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclasses.dataclass(frozen=True)
class WidgetResult:
    """One widget's figures, or why it has none (``error``, ``status`` 400 or 403)."""

    widget: Widget
    report: Report | None = None
    result: ReportResult | None = None  # a report widget's figures, a kpi's current ones
    previous: ReportResult | None = None  # a kpi's previous period
    value: object = None  # a kpi's figure
    previous_value: object = None
    rows: tuple = ()  # a list's records
    columns: tuple = ()  # a list's columns the user may read
    count: int | None = None  # a list's records in all (capped, see ``exact``)
    exact: bool = True
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)  # as run
    error: str | None = None
    status: int = 200
    computed_at: float = 0.0  # time.time() when the figures were read

    @property
    def kind(self) -> str:
        return self.widget.kind

    @property
    def change(self) -> float | None:
        """A kpi's change against the previous period, as a fraction (0.25: up 25 %)."""
        if self.value is None or self.previous_value in (None, 0):
            return None
        return (float(self.value) - float(self.previous_value)) / abs(float(self.previous_value))

    def age(self, now: float | None = None) -> int:
        """Whole seconds since the figures were read."""
        return max(0, int((time.time() if now is None else now) - self.computed_at))


@dataclasses.dataclass(frozen=True)
class DashboardResult:
    dashboard: Dashboard
    filters: Mapping[str, str | None]  # each global filter's value as run (None: any)
    widgets: list[WidgetResult]


def sees_dashboard(catalog, principal, dashboard: Dashboard) -> bool:
    """Whether a reader sees a dashboard at all: the very rule of reports (``sees_report``
    asks ``visible_to``, which both kinds answer with ``audience_sees``): a personal one is
    its owner's alone, one published to roles theirs and the administrators'."""
    return sees_report(catalog, principal, dashboard)


# ------------------------------------------------------------------------ filters
def resolve_filters(store, dashboard: Dashboard, given: Mapping[str, str]) -> dict:
    """Global filter name -> its value as text (the given one, else its default, else
    None: not applied).  Values are checked here, so a bad one is a 400 for the whole
    dashboard rather than the same message on every widget."""
    unknown = [name for name in given if name not in dashboard.filters]
    if unknown:
        raise DashboardError(
            unknown[0],
            f"unknown filter of dashboard {dashboard.name!r}"
            f"{did_you_mean(unknown[0], dashboard.filters)}"
            f" (expected {', '.join(dashboard.filters) or 'none'})",
        )
    out = {}
    for name, flt in dashboard.filters.items():
        value = given.get(name)
        value = str(value).strip() if value is not None else ""
        if not value:
            value = "" if flt.default is None else str(flt.default)
        if value and flt.type == "period":
            problem = period_problem(value)
            if problem:
                raise DashboardError(name, problem)
        elif value and flt.type == "user" and value not in ("me", "current_user"):
            if not value.isdigit():
                raise DashboardError(name, f"expected me or a user id, got {value!r}")
        elif value and flt.type == "team":
            teams = store.teams()
            if value not in teams:
                raise DashboardError(name, f"unknown team {value!r}{did_you_mean(value, teams)}")
        out[name] = value or None
    return out


def widget_parameters(dashboard: Dashboard, widget: Widget, report: Report, filters) -> dict:
    """The report parameters a widget runs with: its own fixed values, then each global
    filter's value for the parameters of the same type (unset ones keep their defaults)."""
    by_type = {}
    for name, flt in dashboard.filters.items():
        if filters.get(name) is not None:
            by_type.setdefault(flt.type, filters[name])
    params = {}
    for name, parameter in report.parameters.items():
        if name in widget.parameters:
            value = thaw(widget.parameters[name])
            params[name] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        elif parameter.type in by_type:
            params[name] = by_type[parameter.type]
    return params


# ------------------------------------------------------------------------ previous period
def previous_period(report: Report, name: str, value: str | None, records):
    """The report rewritten to cover the period before ``value`` of its period parameter
    ``name`` (the parameter replaced by that range's condition), or None when the period
    has no before (``all``, none).  A calendar period moves back by its own length in
    calendar units (this month -> last month; the last 3 months -> the 3 before them); a
    run of days by its number of days."""
    if value in (None, "", "all"):
        return None
    parameter = report.parameters[name]
    today = records.context().today()
    bounds = _bounds(str(value), today)
    if bounds is None:
        return None
    start, end = bounds
    field, _ = resolve_path(records.entity, parameter.field, records.catalog.entity_of)
    if value_type(field) == "datetime":
        zone = _zone(records.tz)
        low, high = utc_midnight(start, zone), utc_midnight(end, zone)
    else:
        low, high = start.isoformat(), end.isoformat()
    condition = {"all": [[parameter.field, "ge", low], [parameter.field, "lt", high]]}
    # every other parameter's leaf stays a leaf: fill_filter gives it back as it is
    kept = {other: {"param": other} for other in report.parameters if other != name}
    raw = fill_filter(report.filter, {**kept, name: condition})
    return dataclasses.replace(
        report,
        filter=freeze(raw),
        parameters=MappingProxyType({k: v for k, v in report.parameters.items() if k != name}),
    )


def _zone(tz: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


def _bounds(text: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """The period before ``text`` as a half-open range of dates: a calendar period moved
    back by its own length in months, a run of days by its number of days."""
    if text in RELATIVE_DATE_OPS:
        months = {"month": 1, "quarter": 3, "year": 12}.get(text.rsplit("_", 1)[-1])
    else:
        match = N_PERIOD.match(text)
        if match is None:
            return None
        months = int(match[2]) if match[3] == "months" else None
    found = period_bounds(text, today)
    if found is None:
        return None
    start, end = found
    if months is None:  # today, yesterday, a week, a run of days: by days
        return start - (end - start), start
    return months_from(start, -months), start


# ------------------------------------------------------------------------ cache
class WidgetCache:
    """Widget results of one store, each reused for ``ttl`` seconds, at most ``size``
    of them (least recently used dropped first), all dropped when the catalog moves."""

    def __init__(self, ttl: float = TTL, size: int = CACHE_SIZE, clock=time.time):
        self.ttl, self.size, self.clock = ttl, size, clock
        self.version = None
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, version: int, key) -> WidgetResult | None:
        with self.lock:
            if version != self.version:
                self.entries.clear()
                self.version = version
                return None
            found = self.entries.get(key)
            if found is None:
                return None
            if self.clock() - found.computed_at >= self.ttl:
                del self.entries[key]
                return None
            self.entries.move_to_end(key)
            return found

    def put(self, version: int, key, result: WidgetResult) -> None:
        with self.lock:
            if version != self.version:
                self.entries.clear()
                self.version = version
            self.entries[key] = result
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_of(store) -> WidgetCache:
    """The store's widget cache (one per store, so two organizations never share one)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = WidgetCache()
        return cache


def clear_cache(store=None) -> None:
    """Forget cached widget results (of one store, or of every store)."""
    with _CACHES_LOCK:
        if store is None:
            caches = list(_CACHES.values())
        else:
            caches = [_CACHES[store]] if store in _CACHES else []
    for cache in caches:
        cache.clear()


def scope_identity(access, principal, personal: bool) -> tuple:
    """Who a widget's figures are for: the role set when they depend on roles only (every
    entity the user reads, read with scope ``all``, and nothing asked for ``me``),
    otherwise the user."""
    if principal is None:
        return ("platform",)
    catalog = access.catalog
    shared = not personal and all(
        access.scope_of(name, "read") in ("all", "none") for name in catalog.entities
    )
    if shared:
        return ("roles", tuple(sorted(principal.roles)), bool(access.is_admin))
    return ("user", principal.user_id)


# ------------------------------------------------------------------------ running
def run_dashboard(
    store, dashboard: Dashboard, given: Mapping[str, str], principal=None, *, fresh=False
) -> DashboardResult:
    """Every widget of a dashboard as ``principal`` sees it; ``fresh`` skips the cache
    (the results read now replace the cached ones).  A dashboard the reader does not see
    is a LookupError, as an unknown one would be: every channel answers it so."""
    with store.pinned() as catalog:  # one catalog check for every widget, not one each
        if not sees_dashboard(catalog, principal, dashboard):
            raise LookupError(f"unknown dashboard {dashboard.name!r}")
        filters = resolve_filters(store, dashboard, given)
        return DashboardResult(
            dashboard,
            MappingProxyType(filters),
            [
                run_widget(store, dashboard, w, filters, principal, fresh=fresh)
                for w in dashboard.widgets
            ],
        )


def run_widget(store, dashboard, widget: Widget, filters, principal, *, fresh=False):
    catalog = store.refresh()
    report = catalog.reports.get(widget.report) if widget.report else None
    params = widget_parameters(dashboard, widget, report, filters) if report else {}
    if report is not None and not sees_report(catalog, principal, report):
        # before the cache, whose key for a reader of everything is only their roles: a
        # personal report's figures must never be served to someone else with those roles
        return WidgetResult(
            widget,
            report,
            error=f"report {report.name!r} is not shared with you",
            status=403,
            computed_at=time.time(),
        )
    entity = report.entity if report is not None else widget.entity
    records = store.records(entity, principal=principal)
    if records.access is not None and records.access.scope_of(entity, "read") == "none":
        return WidgetResult(
            widget,
            report,
            error=f"you may not read {entity} records",
            status=403,
            computed_at=time.time(),
        )
    personal = widget.kind == "list" or any(v in ("me", "current_user") for v in params.values())
    identity = (
        scope_identity(records.access, principal, personal) if records.access else ("platform",)
    )
    key = (
        dashboard.name,
        widget.index,
        tuple(sorted(params.items())),
        identity,
        getattr(principal, "tz", "UTC"),
    )
    cache = cache_of(store)
    if not fresh:
        found = cache.get(catalog.version, key)
        if found is not None:
            return found
    result = _compute(store, widget, report, params, records, principal)
    if result.error is None:
        cache.put(catalog.version, key, result)
    return result


def _compute(store, widget, report, params, records, principal) -> WidgetResult:
    now = time.time()
    try:
        if widget.kind == "list":
            return _list(widget, records, now)
        current = run_report(store, report, params, principal)
        if widget.kind == "report":
            return WidgetResult(widget, report, current, parameters=params, computed_at=now)
        value = _figure(current, widget.measure)
        previous, previous_value = None, None
        if widget.compare:
            name = next(n for n, p in report.parameters.items() if p.type == "period")
            period = params.get(name)
            if period is None and report.parameters[name].default is not None:
                period = str(report.parameters[name].default)
            before = previous_period(report, name, period, records)
            if before is not None:
                rest = {k: v for k, v in params.items() if k != name}
                previous = run_report(store, before, rest, principal)
                previous_value = _figure(previous, widget.measure)
        return WidgetResult(
            widget,
            report,
            current,
            previous,
            value,
            previous_value,
            parameters=params,
            computed_at=now,
        )
    except ReportRefused as exc:
        return WidgetResult(widget, report, error=str(exc), status=403, computed_at=now)
    except (ParameterError, ReportError, FilterError, RecordError) as exc:
        status = 403 if isinstance(exc, PermissionError) else 400
        return WidgetResult(widget, report, error=str(exc), status=status, computed_at=now)


def _figure(result: ReportResult, measure: str):
    """A report's one figure for a measure: its total, or its only row's."""
    if result.totals is not None:
        return result.totals.get(measure)
    if not result.groups and result.rows:
        return result.rows[0].get(measure)
    return None


def _list(widget: Widget, records, now: float) -> WidgetResult:
    raw = thaw(widget.filter) if widget.filter is not None else None
    # a column the user may not read is left out, as a list view leaves it out
    hidden = records.access.hidden(records.entity) if records.access is not None else ()
    columns = tuple(c for c in widget.columns if c.split(".")[0] not in hidden)
    page = records.query(
        filter=raw,
        sort=[list(s) for s in widget.sort] or None,
        fields=list(columns) or ["id"],
        limit=widget.limit,
    )
    rows = tuple(page.rows)
    count = len(rows)
    exact = True
    if page.next_cursor:
        counted = records.count(raw)
        count, exact = counted.value, counted.exact
    return WidgetResult(
        widget, rows=rows, columns=columns, count=count, exact=exact, computed_at=now
    )
