"""Dashboard definitions (``dashboards/*.yaml``): their JSON Schema, their cross-checks
against the reports, views and entities they show, and the frozen ``Dashboard`` the
catalog holds.

A dashboard is a grid of widgets (12 columns wide): a report's chart or table, a KPI (one
measure of a report as a number, with its change against the previous period) and a list
(a view, or an entity with a filter, columns and a limit).  Its global filters (a period,
an owner, a team) are given once and fill every report parameter of the same type, unless
a widget fixes that parameter itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .filters import FilterError, parse_filter, resolve_path, through_unknown_entity
from .labels import Label
from .model import freeze, thaw
from .problems import Problems, did_you_mean
from .reports import (
    NamedCompiler,
    Report,
    audience_sees,
    check_audience,
    parameter_value_problem,
    period_problem,
)
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: The kinds of widget, each named by the key that holds its subject.
WIDGET_KINDS = ("report", "kpi", "list")
#: Global filter types: each fills the report parameters of the same type.
FILTER_TYPES = ("period", "user", "team")
GRID_COLUMNS = 12
LIST_LIMIT = 10
MAX_LIST_LIMIT = 50
SHOW = ("chart", "table", "both")


@dataclass(frozen=True, slots=True)
class DashboardFilter:
    name: str
    type: str  # period, user, team
    label: Label
    default: Any = None  # a period, "me" or a team name


@dataclass(frozen=True, slots=True)
class Widget:
    """One cell of the grid.  ``report`` widgets and ``kpi`` widgets name a report; a
    ``list`` names a view or holds its own entity, filter, columns and sort."""

    index: int  # its place on the dashboard (the cache's key with the dashboard's name)
    kind: str  # report, kpi, list
    width: int
    label: Label | None = None  # None: the report's or view's label
    report: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)  # fixed by the widget
    show: str = "chart"  # a report widget: chart, table or both
    measure: str | None = None  # a kpi's measure
    compare: bool = True  # a kpi: show the change against the previous period
    view: str | None = None  # a list of a view
    entity: str | None = None  # a list of its own
    filter: Any = None
    columns: tuple[str, ...] = ()
    sort: tuple[tuple[str, str], ...] = ()
    limit: int = LIST_LIMIT
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Dashboard:
    name: str
    label: Label
    solution: str  # the pack (or the customization layer) that defines it
    module: str  # the solution whose navigation shows it (default: its own)
    widgets: tuple[Widget, ...]
    filters: Mapping[str, DashboardFilter] = field(default_factory=dict)
    roles: tuple[str, ...] = ()  # who sees it (empty: everyone who may read its records)
    description: Label | None = None
    position: Position | None = field(default=None, compare=False)
    owner: str | None = None  # a user's email or id: a personal dashboard, theirs alone

    def visible_to(self, user_id, email: str = "", roles=(), is_admin: bool = False) -> bool:
        """Whether a reader sees the dashboard: the rule reports follow (``audience_sees``)."""
        return audience_sees(self.owner, self.roles, user_id, email, roles, is_admin)


# ------------------------------------------------------------------------- schema
def dashboards_schema(defs: dict, document) -> dict:
    """The JSON Schema of a ``dashboards:`` document (``document`` is schemas._document)."""
    name = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
    common = {
        "width": {
            "type": "integer",
            "minimum": 1,
            "maximum": GRID_COLUMNS,
            "description": f"columns out of {GRID_COLUMNS} (default: 6, a list 12)",
        },
        "label": {"$ref": "#/$defs/label"},
    }
    parameters = {
        "type": "object",
        "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
        "description": "report parameters this widget fixes (the global filters leave them)",
    }
    inline_list = {
        "type": "object",
        "properties": {
            "entity": {"type": "string"},
            "filter": {"$ref": "#/$defs/filter"},
            "columns": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "sort": {"$ref": "#/$defs/sort"},
        },
        "required": ["entity", "columns"],
        "additionalProperties": False,
    }
    # if/then chains rather than oneOf, so a mistake is explained by the kind it was meant as
    widget = {
        "type": "object",
        "minProperties": 1,
        "if": {"required": ["kpi"]},
        "then": {
            "properties": {
                "kpi": {**name, "description": "the report whose measure is shown"},
                "measure": name,
                "compare": {
                    "type": "boolean",
                    "description": "show the change against the previous period (default true)",
                },
                "parameters": parameters,
                **common,
            },
            "required": ["kpi", "measure"],
            "additionalProperties": False,
        },
        "else": {
            "if": {"required": ["list"]},
            "then": {
                "properties": {
                    "list": {
                        "description": "a view's name, or {entity, filter, columns, sort}",
                        "anyOf": [name, inline_list],
                    },
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                    **common,
                },
                "required": ["list"],
                "additionalProperties": False,
            },
            "else": {
                "properties": {
                    "report": name,
                    "show": {"enum": list(SHOW)},
                    "parameters": parameters,
                    **common,
                },
                "required": ["report"],
                "additionalProperties": False,
            },
        },
    }
    global_filter = {
        "type": "object",
        "properties": {
            "type": {"enum": list(FILTER_TYPES)},
            "label": {"$ref": "#/$defs/label"},
            "default": {"description": "a period (this_month...), me, or a team's name"},
        },
        "required": ["type"],
        "additionalProperties": False,
    }
    return document(
        "Dashboards",
        {
            "dashboards": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "description": {"$ref": "#/$defs/label"},
                        "module": {
                            "type": "string",
                            "description": "the solution whose navigation shows it",
                        },
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "owner": {
                            "type": "string",
                            "minLength": 1,
                            "description": "a user's email or id: a personal dashboard that "
                            "only this user sees (customization layer only)",
                        },
                        "filters": {
                            "type": "object",
                            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                            "additionalProperties": global_filter,
                        },
                        "widgets": {"type": "array", "items": widget, "minItems": 1},
                    },
                    "required": ["label", "widgets"],
                    "additionalProperties": False,
                },
            }
        },
        ["dashboards"],
        defs,
        "dashboards.schema.json",
    )


# ------------------------------------------------------------------------- checks
class DashboardCompiler(NamedCompiler):
    """Checks and compiles the dashboards of one catalog build."""

    key, noun = "dashboards", "dashboard"

    def __init__(self, problems: Problems, entities, views, reports, roles, solutions, layer=""):
        self.problems = problems
        self.layer = layer  # the customization layer's name: only it holds personal ones
        self.entities = entities
        self.views = views
        self.reports: Mapping[str, Report] = reports
        self.roles = roles
        self.solutions = solutions
        self.raw: dict[str, tuple[Mapping, str, Position]] = {}

    def build_one(self, name, raw, solution, where) -> Dashboard | None:
        subject = f"dashboards.{name}"
        before = len(self.problems)

        def fail(at, message):
            self.problems.add(at, subject, message)

        check_audience(raw, solution == self.layer, self.roles, where, fail, "dashboard")
        module = raw.get("module") or solution
        if raw.get("module") and module not in self.solutions:
            fail(
                _vpos(raw, "module", where),
                f"module: unknown solution {module!r}{did_you_mean(module, self.solutions)}",
            )
        filters = self.build_filters(raw, where, fail)
        widgets = []
        used_types: set[str] = set()
        for index, spec in enumerate(raw["widgets"]):
            at = _pos(raw["widgets"], index, where)
            widget = self.build_widget(index, spec, at, filters, used_types, fail)
            if widget is not None:
                widgets.append(widget)
        for fname, flt in filters.items():
            if flt.type not in used_types:
                fail(
                    _pos(raw["filters"], fname, where),
                    f"filter {fname!r} applies to no widget: no report of this dashboard has a"
                    f" {flt.type} parameter left free",
                )
        if len(self.problems) > before:
            return None
        return Dashboard(
            name=name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            module=module,
            widgets=tuple(widgets),
            filters=MappingProxyType(filters),
            roles=tuple(raw.get("roles") or ()),
            description=Label.of(raw["description"]) if raw.get("description") else None,
            position=where,
            owner=None if raw.get("owner") is None else str(raw["owner"]),
        )

    def build_filters(self, raw, where, fail) -> dict[str, DashboardFilter]:
        out = {}
        block = raw.get("filters") or {}
        for name, spec in block.items():
            at = _pos(block, name, where)
            kind, default = spec["type"], spec.get("default")
            problem = None
            if default is not None and kind == "period":
                problem = period_problem(default)
            elif default is not None and kind == "user" and default not in ("me", "current_user"):
                problem = "the default of a user filter is me"
            if problem:
                fail(_vpos(spec, "default", at), f"filter {name}: {problem}")
                continue
            out[name] = DashboardFilter(
                name=name,
                type=kind,
                label=Label.of(spec.get("label"), name.replace("_", " ").capitalize()),
                default=default,
            )
        return out

    def build_widget(self, index, spec, at, filters, used_types, fail) -> Widget | None:
        width = int(spec.get("width") or (GRID_COLUMNS if "list" in spec else 6))
        label = Label.of(spec["label"]) if spec.get("label") else None
        if "list" in spec:
            return self.build_list(index, spec, at, width, label, fail)
        kind = "kpi" if "kpi" in spec else "report"
        report_name = spec[kind]
        report = self.reports.get(report_name)
        if report is None:
            fail(
                _vpos(spec, kind, at),
                f"{kind}: unknown report {report_name!r}{did_you_mean(report_name, self.reports)}",
            )
            return None
        fixed = dict(spec.get("parameters") or {})
        for pname, value in fixed.items():
            problem = parameter_value_problem(report, pname, value, self.entity_of)
            if problem:
                fail(_vpos(spec["parameters"], pname, at), problem)
        free = {p.type for n, p in report.parameters.items() if n not in fixed}
        used_types.update(t for t in free if t in FILTER_TYPES)
        measure, compare = None, bool(spec.get("compare", True))
        if kind == "kpi":
            measure = spec["measure"]
            names = [m.name for m in report.measures]
            if measure not in names:
                fail(
                    _vpos(spec, "measure", at),
                    f"kpi: report {report_name!r} has no measure {measure!r}"
                    f"{did_you_mean(measure, names)} (expected one of {', '.join(names)})",
                )
            periods = [p for p in report.parameters.values() if p.type == "period"]
            if compare and len(periods) != 1:
                fail(
                    _vpos(spec, "kpi", at),
                    f"kpi: comparing with the previous period needs a report with one period"
                    f" parameter, and {report_name!r} has {len(periods)}: set compare: false",
                )
            if [g for g in report.group_by if g != report.pivot] and not report.totals:
                fail(
                    _vpos(spec, "kpi", at),
                    f"kpi: report {report_name!r} is grouped: it needs totals: true for one figure",
                )
        show = spec.get("show") or ("chart" if report.chart is not None else "table")
        if show in ("chart", "both") and report.chart is None:
            fail(
                _vpos(spec, "show", at),
                f"show: report {report_name!r} has no chart: give it a chart: block or show: table",
            )
        return Widget(
            index=index,
            kind=kind,
            width=width,
            label=label,
            report=report_name,
            parameters=MappingProxyType({k: freeze(v) for k, v in fixed.items()}),
            show=show,
            measure=measure,
            compare=compare,
            position=at,
        )

    def build_list(self, index, spec, at, width, label, fail) -> Widget | None:
        subject = spec["list"]
        limit = int(spec.get("limit") or LIST_LIMIT)
        if isinstance(subject, str):
            view = self.views.get(subject)
            if view is None:
                fail(
                    _vpos(spec, "list", at),
                    f"list: unknown view {subject!r}{did_you_mean(subject, self.views)}",
                )
                return None
            if view.kind != "list":
                fail(
                    _vpos(spec, "list", at), f"list: view {subject!r} is a {view.kind}, not a list"
                )
                return None
            return Widget(
                index=index,
                kind="list",
                width=width,
                label=label,
                view=subject,
                entity=view.entity,
                filter=view.filter,
                columns=tuple(view.columns),
                sort=tuple(view.sort),
                limit=limit,
                position=at,
            )
        entity = self.entities.get(subject["entity"])
        if entity is None:
            fail(
                _vpos(subject, "entity", at),
                f"list: unknown entity {subject['entity']!r}"
                f"{did_you_mean(subject['entity'], self.entities)}",
            )
            return None
        ok = True
        paths = [(i, c, subject["columns"]) for i, c in enumerate(subject["columns"])]
        paths += [(i, s[0], subject["sort"]) for i, s in enumerate(subject.get("sort") or ())]
        for i, path, node in paths:
            try:
                resolve_path(entity, path, self.entity_of)
            except FilterError as exc:
                if not through_unknown_entity(entity, path, self.entity_of):
                    fail(_pos(node, i, at), f"list: {exc.message}")
                ok = False
        try:
            parse_filter(subject.get("filter"), entity, self.entity_of)
        except FilterError as exc:
            fail(_vpos(subject, "filter", at), f"list: filter: {exc}")
            ok = False
        if not ok:
            return None
        return Widget(
            index=index,
            kind="list",
            width=width,
            label=label,
            entity=entity.name,
            filter=freeze(subject.get("filter")),
            columns=tuple(subject["columns"]),
            sort=tuple((str(k), str(d)) for k, d in subject.get("sort") or ()),
            limit=limit,
            position=at,
        )


# ------------------------------------------------------------------------- documents
def dashboard_document(dashboard: Dashboard) -> dict:
    """A compiled dashboard written back as its ``dashboards:`` entry (what the browser
    changes and stores again in the customization layer: a widget moved, removed, added)."""
    spec: dict[str, Any] = {"label": dashboard.label.as_dict()}
    if dashboard.description:
        spec["description"] = dashboard.description.as_dict()
    if dashboard.owner is not None:
        spec["owner"] = dashboard.owner
    if dashboard.roles:
        spec["roles"] = list(dashboard.roles)
    if dashboard.module != dashboard.solution:
        spec["module"] = dashboard.module
    if dashboard.filters:
        spec["filters"] = {
            name: {
                "type": flt.type,
                "label": flt.label.as_dict(),
                **({"default": flt.default} if flt.default is not None else {}),
            }
            for name, flt in dashboard.filters.items()
        }
    spec["widgets"] = [widget_document(w) for w in dashboard.widgets]
    return spec


def widget_document(widget: Widget) -> dict:
    """One widget as its document entry (the inverse of ``build_widget``)."""
    out: dict[str, Any]
    if widget.kind == "list":
        if widget.view is not None:
            out = {"list": widget.view}
        else:
            inline: dict[str, Any] = {"entity": widget.entity, "columns": list(widget.columns)}
            if widget.filter is not None:
                inline["filter"] = thaw(widget.filter)
            if widget.sort:
                inline["sort"] = [list(s) for s in widget.sort]
            out = {"list": inline}
        if widget.limit != LIST_LIMIT:
            out["limit"] = widget.limit
    elif widget.kind == "kpi":
        out = {"kpi": widget.report, "measure": widget.measure, "compare": widget.compare}
    else:
        out = {"report": widget.report, "show": widget.show}
    if widget.kind != "list" and widget.parameters:
        out["parameters"] = thaw(widget.parameters)
    out["width"] = widget.width
    if widget.label is not None:
        out["label"] = widget.label.as_dict()
    return out


def build_dashboards(problems, entities, views, reports, roles, solutions, documents, layer):
    """Compile the ``dashboards:`` documents [(solution, data)] of one catalog build."""
    compiler = DashboardCompiler(problems, entities, views, reports, roles, solutions, layer)
    for solution, data in documents:
        compiler.collect(solution, data, layer)
    return compiler.build()


__all__ = [
    "Dashboard",
    "DashboardFilter",
    "Widget",
    "build_dashboards",
    "dashboard_document",
    "dashboards_schema",
]
