"""Report definitions (``reports/*.yaml``): their JSON Schema, their cross-checks against
the entities, and the frozen ``Report`` the catalog holds.

A report is an entity's records grouped and measured (``xrm.metadata.aggregates``), under
a filter whose ``{param: name}`` leaves a user fills in when the report runs: a period
(the filter language's relative dates, plus ``last_N_months``), an owner, a team or the
options of a choice field.  The checker substitutes a sample condition for each
parameter, so the filter is checked exactly as the one that runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .aggregates import parse_group, parse_measure, value_type
from .fieldtypes import RELATIVE_DATE_OPS
from .filters import FilterError, parse_filter, resolve_path, through_unknown_entity
from .labels import Label
from .model import Entity
from .problems import Problems, did_you_mean
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: Measure keys of a report and the aggregate measure each one becomes.
MEASURE_KINDS = ("count", "count_distinct", "sum", "avg", "min", "max", "weighted")
PARAMETER_TYPES = ("period", "user", "team", "choice")
#: Chart kinds of a report's ``chart:`` block.
CHART_KINDS = ("bar", "stacked_bar", "line", "pie", "funnel", "kpi")
#: ``last_12_months``: the current calendar month and the N - 1 before it.
N_PERIOD = re.compile(r"^(last|next)_(\d{1,4})_(days|months)$")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ReportMeasure:
    name: str  # the column of the result
    spec: str  # the aggregate measure, as "sum:amount"
    label: Label


@dataclass(frozen=True, slots=True)
class ReportParameter:
    name: str
    type: str  # period, user, team, choice
    field: str  # the path the parameter filters
    label: Label
    default: Any = None  # a period name, "me", a team name or option values
    multiple: bool = False  # a choice parameter that takes several options


@dataclass(frozen=True, slots=True)
class ReportChart:
    """How a report is drawn: a kind and the measures it shows (the first one by default).
    Bars and lines show each measure as a series, or with a pivot one measure per pivot
    column; a stacked bar stacks the pivot's columns; pie and funnel show one measure of
    the rows (a funnel as horizontal bars in the report's order); kpi shows each measure's
    total as a big number."""

    kind: str
    measures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    entity: str
    label: Label
    solution: str
    filter: Any  # the raw filter (tuples), {param: name} leaves filled in when it runs
    group_by: tuple[str, ...]
    measures: tuple[ReportMeasure, ...]
    parameters: Mapping[str, ReportParameter] = field(default_factory=dict)
    pivot: str | None = None
    totals: bool = False
    sort: tuple[tuple[str, str], ...] = ()
    limit: int = MAX_LIMIT
    description: Label | None = None
    chart: ReportChart | None = None
    position: Position | None = field(default=None, compare=False)


# ------------------------------------------------------------------------- schema
def reports_schema(defs: dict, document) -> dict:
    """The JSON Schema of a ``reports:`` document (``document`` is schemas._document)."""
    name = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
    param_leaf = {
        "type": "object",
        "properties": {"param": name},
        "required": ["param"],
        "additionalProperties": False,
        "description": "the condition of a parameter (nothing when it is left empty)",
    }
    report_filter = {
        "anyOf": [
            param_leaf,
            {
                "type": "object",
                "properties": {
                    "all": {"type": "array", "items": {"$ref": "#/$defs/report_filter"}}
                },
                "required": ["all"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "any": {"type": "array", "items": {"$ref": "#/$defs/report_filter"}}
                },
                "required": ["any"],
                "additionalProperties": False,
            },
            {"$ref": "#/$defs/filter"},
        ]
    }
    field_measure = {"type": "string", "description": "a field or lookup path"}
    weighted = {
        "type": "object",
        "description": "sum of FIELD x BY / DIVIDE, as amount * probability / 100",
        "properties": {
            "sum": field_measure,
            "by": field_measure,
            "divide": {"type": "number", "exclusiveMinimum": 0},
        },
        "required": ["sum", "by"],
        "additionalProperties": False,
    }
    # if/then/else rather than anyOf, so a mistake is explained by the form it was meant
    # in ("unknown key 'summ' ... did you mean 'sum'?"), not by the first alternative
    measure = {
        "type": ["string", "object"],
        "if": {"type": "string"},
        "then": {"enum": ["count"]},
        "else": {
            "type": "object",
            "properties": {
                "count": {"const": True},
                "count_distinct": field_measure,
                "sum": field_measure,
                "avg": field_measure,
                "min": field_measure,
                "max": field_measure,
                "weighted": weighted,
                "label": {"$ref": "#/$defs/label"},
            },
            "minProperties": 1,
            "additionalProperties": False,
        },
    }
    parameter = {
        "type": "object",
        "properties": {
            "type": {"enum": list(PARAMETER_TYPES)},
            "field": {"type": "string"},
            "label": {"$ref": "#/$defs/label"},
            "default": {},
            "multiple": {"type": "boolean"},
        },
        "required": ["type", "field"],
        "additionalProperties": False,
    }
    chart = {
        "type": "object",
        "description": "how the report is drawn: bar, stacked_bar (the pivot's columns "
        "stacked), line, pie, funnel (horizontal bars in the rows' order) or kpi (each "
        "measure's total as a number)",
        "properties": {
            "kind": {"enum": list(CHART_KINDS)},
            "measures": {
                "type": "array",
                "items": name,
                "minItems": 1,
                "uniqueItems": True,
                "description": "measures of the report to draw (default: the first)",
            },
        },
        "required": ["kind"],
        "additionalProperties": False,
    }
    defs = {**defs, "report_filter": report_filter}
    return document(
        "Reports",
        {
            "reports": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "entity": {"type": "string"},
                        "label": {"$ref": "#/$defs/label"},
                        "description": {"$ref": "#/$defs/label"},
                        "filter": {"$ref": "#/$defs/report_filter"},
                        "group_by": {
                            "type": "array",
                            "items": {"type": "string"},
                            "maxItems": 3,
                            "description": "fields, lookup paths, date buckets (close_date:month)",
                        },
                        "measures": {
                            "type": "object",
                            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                            "additionalProperties": measure,
                            "minProperties": 1,
                        },
                        "pivot": {"type": "string", "description": "a group shown as columns"},
                        "totals": {"type": "boolean"},
                        "sort": {"$ref": "#/$defs/sort"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        "parameters": {
                            "type": "object",
                            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                            "additionalProperties": parameter,
                        },
                        "chart": chart,
                    },
                    "required": ["entity", "measures"],
                    "additionalProperties": False,
                },
            }
        },
        ["reports"],
        defs,
        "reports.schema.json",
    )


# ------------------------------------------------------------------------- measures
def measure_spec(raw) -> str:
    """A report's measure (``count``, ``{sum: amount}``, ``{weighted: {...}}``) as the
    aggregate measure it runs as."""
    if raw == "count":
        return "count"
    kinds = [k for k in raw if k != "label"]
    if len(kinds) != 1:
        found = f"got {' and '.join(kinds)}" if kinds else "got only a label"
        raise FilterError(f"one of {', '.join(MEASURE_KINDS)} per measure ({found})")
    kind = kinds[0]
    value = raw[kind]
    if kind == "count":
        return "count"
    if kind == "count_distinct":
        return f"distinct:{value}"
    if kind == "weighted":
        divide = value.get("divide")
        return f"weighted:{value['sum']}*{value['by']}" + (f"/{divide}" if divide else "")
    return f"{kind}:{value}"


# ------------------------------------------------------------------------- periods
def period_problem(value) -> str | None:
    """Why a period value is not one (None: it is)."""
    text = str(value)
    if text in RELATIVE_DATE_OPS or text == "all":
        return None
    match = N_PERIOD.match(text)
    if match and 1 <= int(match[2]) <= 3650:
        return None
    return (
        f"unknown period {text!r} (expected all, one of {', '.join(sorted(RELATIVE_DATE_OPS))}, "
        f"or last_N_days, next_N_days, last_N_months, next_N_months)"
        f"{did_you_mean(text, RELATIVE_DATE_OPS)}"
    )


def sample_condition(parameter: ReportParameter) -> list:
    """A condition of the kind the parameter makes, for checking the filter it is in."""
    if parameter.type == "period":
        return [parameter.field, "this_month"]
    if parameter.type == "choice":
        return [parameter.field, "is_not_empty"]
    return [parameter.field, "in", []]


def fill_filter(raw, conditions: Mapping[str, Any]):
    """The filter with each ``{param: name}`` leaf replaced by ``conditions[name]``.  A
    parameter left empty (None) matches everything: it drops out of an ``all``, and makes
    an ``any`` (or a ``not`` of it) no condition at all."""
    if isinstance(raw, Mapping):
        if "param" in raw:
            return conditions.get(raw["param"])
        if "not" in raw:
            inner = fill_filter(raw["not"], conditions)
            return None if inner is None else {"not": inner}
        key = "all" if "all" in raw else "any"
        children = [fill_filter(child, conditions) for child in raw[key]]
        kept = [c for c in children if c is not None]
        if key == "any":
            return {key: kept} if len(kept) == len(children) else None
        return {key: kept} if kept else None
    return _thaw(raw)


def params_in(raw) -> list:
    """Every ``{param: ...}`` leaf of a filter, in order."""
    if isinstance(raw, Mapping):
        if "param" in raw:
            return [raw]
        inner = raw.get("all") or raw.get("any") or ([raw["not"]] if "not" in raw else [])
        return [leaf for child in inner for leaf in params_in(child)]
    return []


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


# ------------------------------------------------------------------------- checks
class ReportCompiler:
    """Checks and compiles the reports of one catalog build."""

    def __init__(self, problems: Problems, entities: Mapping[str, Entity], rejected=frozenset()):
        self.problems = problems
        self.entities = entities
        self.rejected = rejected
        self.raw: dict[str, tuple[Mapping, str, Position]] = {}

    def entity_of(self, name):
        return self.entities.get(name)

    def collect(self, solution: str, data: Mapping, layer: str) -> None:
        block = data["reports"]
        for name, spec in block.items():
            where = _pos(block, name)
            previous = self.raw.get(name)
            if previous is not None and solution != layer:
                owner = previous[1]
                text = (
                    f"is defined twice in solution {owner!r}"
                    if owner == solution
                    else f"is already defined by solution {owner!r}"
                )
                self.problems.add(where, f"reports.{name}", f"report {name!r} {text}")
                continue
            self.raw[name] = (spec, solution, where)

    def build(self) -> dict[str, Report]:
        reports = {}
        for name, (raw, solution, where) in self.raw.items():
            report = self.build_report(name, raw, solution, where)
            if report is not None:
                reports[name] = report
        return reports

    def build_report(self, name: str, raw: Mapping, solution: str, where: Position):
        subject = f"reports.{name}"
        entity = self.entities.get(raw["entity"])
        if entity is None:
            if raw["entity"] not in self.rejected:
                self.problems.add(
                    _vpos(raw, "entity", where),
                    subject,
                    f"unknown entity {raw['entity']!r}{did_you_mean(raw['entity'], self.entities)}",
                )
            return None
        problems_before = len(self.problems)

        def fail(at, message, exc: FilterError | None = None):
            if exc is None or not (
                exc.path and through_unknown_entity(entity, exc.path, self.entity_of)
            ):
                self.problems.add(at, subject, message)

        groups = []
        for index, spec in enumerate(raw.get("group_by") or ()):
            try:
                groups.append(parse_group(entity, self.entity_of, spec).key)
            except FilterError as exc:
                fail(_pos(raw["group_by"], index, where), f"group_by: {exc.message}", exc)
        measures = []
        block = raw["measures"]
        for key, spec in block.items():
            at = _pos(block, key, where)
            try:
                text = measure_spec(spec)
                parse_measure(entity, self.entity_of, text)
            except FilterError as exc:
                fail(at, f"measure {key}: {exc.message}", exc)
                continue
            label = spec.get("label") if isinstance(spec, Mapping) else None
            measures.append(
                ReportMeasure(key, text, Label.of(label, key.replace("_", " ").capitalize()))
            )
        parameters = self.build_parameters(entity, raw, where, fail)
        self.check_filter(entity, raw, parameters, where, fail)
        pivot = raw.get("pivot")
        if pivot is not None and pivot not in (raw.get("group_by") or ()):
            fail(
                _vpos(raw, "pivot", where),
                f"pivot {pivot!r} is not one of the groups (group_by: {', '.join(map(str, raw.get('group_by') or ())) or 'none'})",
            )
        keys = [*(raw.get("group_by") or ()), *block]
        for index, (key, _direction) in enumerate(raw.get("sort") or ()):
            if key not in keys:
                fail(
                    _pos(raw["sort"], index, where),
                    f"sort: {key!r} is neither a group nor a measure of this report{did_you_mean(key, keys)}",
                )
        chart = self.build_chart(raw, [m.name for m in measures], where, fail)
        if len(self.problems) > problems_before:
            return None
        return Report(
            name=name,
            entity=entity.name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            filter=_freeze(raw.get("filter")),
            group_by=tuple(groups),
            measures=tuple(measures),
            parameters=MappingProxyType(parameters),
            pivot=pivot,
            totals=bool(raw.get("totals", False)),
            sort=tuple((str(k), str(d)) for k, d in raw.get("sort") or ()),
            limit=int(raw.get("limit", MAX_LIMIT)),
            description=Label.of(raw["description"]) if raw.get("description") else None,
            chart=chart,
            position=where,
        )

    @staticmethod
    def build_chart(raw, measures: list[str], where, fail) -> ReportChart | None:
        """The ``chart:`` block checked against the report's measures and groups."""
        spec = raw.get("chart")
        if spec is None:
            return None
        at = _pos(raw, "chart", where)
        kind = spec["kind"]
        chosen = list(spec.get("measures") or measures[:1])
        for index, name in enumerate(spec.get("measures") or ()):
            if name not in raw["measures"]:
                fail(
                    _pos(spec["measures"], index, at),
                    f"chart: unknown measure {name!r}{did_you_mean(name, raw['measures'])}"
                    f" (expected one of {', '.join(raw['measures'])})",
                )
        pivot = raw.get("pivot")
        rows = [g for g in raw.get("group_by") or () if g != pivot]
        kind_at = _vpos(spec, "kind", at)
        if kind == "kpi":
            if (rows or pivot) and not raw.get("totals"):
                fail(kind_at, "chart: a kpi shows the totals of a grouped report: set totals: true")
        elif not rows:
            fail(
                kind_at,
                f"chart: a {kind} chart needs a group for its bars, slices or points (group_by)",
            )
        if kind == "stacked_bar" and pivot is None:
            fail(
                kind_at, "chart: a stacked_bar stacks the pivot's columns: the report needs a pivot"
            )
        if kind in ("pie", "funnel") and pivot is not None:
            fail(kind_at, f"chart: a {kind} chart shows the rows, and this report has a pivot")
        single = kind in ("pie", "funnel", "stacked_bar") or (
            kind in ("bar", "line") and pivot is not None
        )
        if single and len(chosen) > 1:
            fail(
                _vpos(spec, "measures", at),
                f"chart: a {kind} chart{' of a pivot' if kind in ('bar', 'line') else ''}"
                f" shows one measure (got {len(chosen)})",
            )
        if not chosen:
            return None
        return ReportChart(kind, tuple(chosen))

    def build_parameters(self, entity, raw, where, fail) -> dict[str, ReportParameter]:
        result = {}
        block = raw.get("parameters") or {}
        for name, spec in block.items():
            at = _pos(block, name, where)
            kind, path = spec["type"], spec["field"]
            try:
                target, _ = resolve_path(entity, path, self.entity_of)
            except FilterError as exc:
                fail(_vpos(spec, "field", at), f"parameter {name}: {exc.message}", exc)
                continue
            found = value_type(target)
            wanted = {
                "period": ("date", "datetime"),
                "user": ("user",),
                "team": ("user",),
                "choice": ("choice",),
            }[kind]
            if found not in wanted:
                fail(
                    _vpos(spec, "field", at),
                    f"parameter {name}: a {kind} parameter needs a {' or '.join(wanted)} field, and {path} is a {found}",
                )
                continue
            default = spec.get("default")
            if default is not None:
                problem = self.default_problem(kind, target, default)
                if problem:
                    fail(_vpos(spec, "default", at), f"parameter {name}: {problem}")
                    continue
            result[name] = ReportParameter(
                name=name,
                type=kind,
                field=path,
                label=Label.of(spec.get("label"), name.replace("_", " ").capitalize()),
                default=_freeze(default),
                multiple=bool(spec.get("multiple", False)),
            )
        return result

    @staticmethod
    def default_problem(kind: str, target, default) -> str | None:
        if kind == "period":
            return period_problem(default)
        if kind == "user":
            return None if default == "me" else "the default of a user parameter is me"
        if kind == "choice":
            values = default if isinstance(default, list) else [default]
            known = [o.value for o in target.choices]
            for value in values:
                if str(value) not in known:
                    return f"unknown option {value!r}{did_you_mean(str(value), known)}"
        return None

    def check_filter(self, entity, raw, parameters, where, fail) -> None:
        if raw.get("filter") is None:
            unused = list(raw.get("parameters") or ())
        else:
            leaves = params_in(raw["filter"])
            used = {leaf["param"] for leaf in leaves}
            for leaf in leaves:
                name = leaf["param"]
                if name not in (raw.get("parameters") or {}):
                    fail(
                        _vpos(leaf, "param", where),
                        f"filter: unknown parameter {name!r}{did_you_mean(name, raw.get('parameters') or {})}",
                    )
            samples = {n: sample_condition(p) for n, p in parameters.items()}
            try:
                parse_filter(fill_filter(raw["filter"], samples), entity, self.entity_of)
            except FilterError as exc:
                fail(_vpos(raw, "filter", where), f"filter: {exc}", exc)
            unused = [n for n in raw.get("parameters") or () if n not in used]
        for name in unused:
            fail(
                _pos(raw["parameters"], name, where),
                f"parameter {name!r} is not used: put {{param: {name}}} in the filter",
            )


def parameter_value_problem(report: Report, name: str, value, entity_of) -> str | None:
    """Why ``value`` cannot be given to the report's parameter ``name`` by a definition
    that runs the report for others (a scheduled report): None when it can.  A user
    parameter takes only ``me``, which is each reader."""
    parameter = report.parameters.get(name)
    if parameter is None:
        return (
            f"report {report.name!r} has no parameter {name!r}{did_you_mean(name, report.parameters)}"
            f" (expected {', '.join(report.parameters) or 'none'})"
        )
    if parameter.type == "user":
        return (
            None
            if value in ("me", "current_user")
            else f"parameter {name}: expected me (each reader)"
        )
    if parameter.type == "team":
        return None  # teams live in the database
    if isinstance(value, list | tuple) and (parameter.type != "choice" or not parameter.multiple):
        return f"parameter {name}: takes one value"
    entity = entity_of(report.entity)
    target, _ = resolve_path(entity, parameter.field, entity_of)
    problem = ReportCompiler.default_problem(parameter.type, target, _thaw(value))
    return f"parameter {name}: {problem}" if problem else None


def build_reports(problems, entities, documents, layer: str, rejected=frozenset()):
    """Compile the ``reports:`` documents [(solution, data)] of one catalog build."""
    compiler = ReportCompiler(problems, entities, rejected)
    for solution, data in documents:
        compiler.collect(solution, data, layer)
    return compiler.build()
