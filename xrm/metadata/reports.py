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
from .model import Entity, freeze, thaw
from .problems import Problems, did_you_mean
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: Measure keys of a report and the aggregate measure each one becomes.
MEASURE_KINDS = ("count", "count_distinct", "sum", "avg", "min", "max", "weighted")
#: ``aggregate``: groups and measures of the records; ``conversion_funnel``: the stage
#: history of an entity with a stage flow, stage by stage (``xrm.reports.funnel``).
REPORT_KINDS = ("aggregate", "conversion_funnel")
#: A conversion funnel's period parameter filters when a record entered a stage.
ENTERED_AT = "entered_at"
#: The figures of a conversion funnel, with their labels.
FUNNEL_MEASURES = (
    ("entered", {"en": "Entered", "ru": "Вошли в стадию"}),
    ("reached_next", {"en": "Reached a later stage", "ru": "Дошли до следующей стадии"}),
    ("conversion", {"en": "Conversion, %", "ru": "Конверсия, %"}),
    ("median_days", {"en": "Median days in stage", "ru": "Медиана дней в стадии"}),
)
PARAMETER_TYPES = ("period", "user", "team", "choice")
#: Chart kinds of a report's ``chart:`` block.
CHART_KINDS = ("bar", "stacked_bar", "line", "pie", "funnel", "kpi")
#: ``last_12_months``: the current calendar month and the N - 1 before it.
N_PERIOD = re.compile(r"^(last|next)_(\d{1,4})_(days|months)$")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class MeasureSource:
    """Where a measure of another entity comes from (a report's ``targets:``): that
    entity, its group for each group of the report, its field for each parameter of the
    report that applies to it, and a filter of its own."""

    entity: str
    groups: Mapping[str, str]  # the report's group -> the same group on ``entity``
    parameters: Mapping[str, str]  # the report's parameter -> the path it filters there
    filter: Any = None


@dataclass(frozen=True, slots=True)
class ReportMeasure:
    name: str  # the column of the result
    spec: str  # the aggregate measure, as "sum:amount"
    label: Label
    where: Any = None  # a filter of the records this measure counts, on top of the report's
    source: MeasureSource | None = None  # another entity's figure (targets), else the report's
    share: tuple[str, str] | None = None  # (part, whole): part / whole x 100 of each row

    @property
    def entity_name(self) -> str | None:
        """The entity the measure's spec is of, when not the report's."""
        return self.source.entity if self.source is not None else None


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
    kind: str = "aggregate"  # or conversion_funnel
    position: Position | None = field(default=None, compare=False)
    owner: str | None = None  # a user's email or id: a personal report, theirs alone
    roles: tuple[str, ...] = ()  # who sees it (empty: everyone who may read its records)

    def visible_to(self, user_id, email: str = "", roles=(), is_admin: bool = False) -> bool:
        """Whether a reader sees the report at all: a personal report only its owner (an
        administrator included: it is someone's own), one published to roles those roles
        and administrators.  Reading its records is checked apart, when it runs."""
        return audience_sees(self.owner, self.roles, user_id, email, roles, is_admin)


def audience_sees(owner, published_to, user_id, email="", roles=(), is_admin=False) -> bool:
    """The one rule of who sees a definition made for an audience (a report, a dashboard):
    one with an ``owner`` is that user's alone (an administrator included: it is someone's
    own); one published to roles is those roles' and the administrators'; else everyone's."""
    if owner is not None:
        owner = owner.strip().casefold()
        return user_id is not None and owner in (str(user_id), (email or "").casefold())
    return is_admin or not published_to or any(r in published_to for r in roles)


def check_audience(raw, in_layer: bool, roles, where, fail, what: str) -> None:
    """``owner`` belongs to a user's definition (a report, a dashboard) in the
    customization layer: a pack does not know the users of the systems it is installed
    in; ``roles`` must be roles (None: not known here, so not checked)."""
    if raw.get("owner") is not None and not in_layer:
        fail(
            _vpos(raw, "owner", where),
            f"owner: a personal {what} is made in the browser (customization layer); "
            f"a pack publishes a {what} to roles instead",
        )
    if raw.get("owner") is not None and raw.get("roles"):
        fail(_vpos(raw, "roles", where), f"roles: a personal {what} (owner) has no roles")
    for index, role in enumerate(raw.get("roles") or ()):
        if roles is not None and role not in roles:
            fail(
                _pos(raw["roles"], index, where),
                f"unknown role {role!r}{did_you_mean(role, roles)}",
            )


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
                "where": {
                    "$ref": "#/$defs/filter",
                    "description": "only the records that also match this filter count",
                },
                "share": {
                    "type": "array",
                    "items": name,
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[part, whole]: two other measures, as part / whole x 100",
                },
            },
            "minProperties": 1,
            "additionalProperties": False,
        },
    }
    # a figure of another entity (a sales target) beside the measures, row by row
    target = {
        "type": "object",
        "properties": {
            **{
                k: v
                for k, v in measure["else"]["properties"].items()
                if k not in ("where", "share")
            },
            "entity": {"type": "string", "description": "the entity the figure is of"},
            "groups": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "each group of the report -> the same group on that entity "
                "(close_date:month -> period:month)",
            },
            "parameters": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "a parameter of the report -> the field it filters on that "
                "entity (parameters left out do not apply to it)",
            },
            "filter": {"$ref": "#/$defs/filter"},
        },
        "required": ["entity"],
        "additionalProperties": False,
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
                        "kind": {
                            "enum": list(REPORT_KINDS),
                            "description": "aggregate (default): groups and measures; "
                            "conversion_funnel: the stage history, stage by stage",
                        },
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
                        "owner": {
                            "type": "string",
                            "minLength": 1,
                            "description": "a user's email or id: a personal report that only "
                            "this user sees (customization layer only)",
                        },
                        "roles": {
                            "type": "array",
                            "items": name,
                            "uniqueItems": True,
                            "description": "the roles that see the report (absent: everyone "
                            "who may read its entity)",
                        },
                        "targets": {
                            "type": "object",
                            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                            "additionalProperties": target,
                            "description": "figures of another entity shown beside the "
                            "measures, matched by the groups (a sales target per month)",
                        },
                    },
                    "required": ["entity"],
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
    kinds = [k for k in raw if k not in ("label", "where")]
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
    return thaw(raw)


def params_in(raw) -> list:
    """Every ``{param: ...}`` leaf of a filter, in order."""
    if isinstance(raw, Mapping):
        if "param" in raw:
            return [raw]
        inner = raw.get("all") or raw.get("any") or ([raw["not"]] if "not" in raw else [])
        return [leaf for child in inner for leaf in params_in(child)]
    return []


# ------------------------------------------------------------------------- checks
#: The value types of the fields each kind of parameter filters.
_PARAMETER_FIELDS = {
    "period": ("date", "datetime"),
    "user": ("user",),
    "team": ("user",),
    "choice": ("choice",),
}


def history_parameters(report: Report) -> list[str]:
    """The parameters of a conversion funnel that filter the stage history (a period on
    ``entered_at``) rather than the records."""
    return [n for n, p in report.parameters.items() if p.field == ENTERED_AT]


class NamedCompiler:
    """Definitions of one kind held by name (``reports:``, ``dashboards:``), compiled for
    one catalog build: collected solution by solution (a name two packs define is a
    problem; the customization layer may define it again, and its version wins), then
    built one by one (``build_one`` returns None after adding its problems)."""

    key = ""  # the document's top key
    noun = ""  # how a message names one

    problems: Problems
    entities: Mapping[str, Entity]
    raw: dict[str, tuple[Mapping, str, Position]]

    def entity_of(self, name):
        return self.entities.get(name)

    def collect(self, solution: str, data: Mapping, layer: str) -> None:
        self.layer = layer
        block = data[self.key]
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
                self.problems.add(where, f"{self.key}.{name}", f"{self.noun} {name!r} {text}")
                continue
            self.raw[name] = (spec, solution, where)

    def build(self) -> dict:
        """Each collected definition through the subclass's ``build_one``."""
        built = {}
        for name, (raw, solution, where) in self.raw.items():
            one = self.build_one(name, raw, solution, where)
            if one is not None:
                built[name] = one
        return built


class ReportCompiler(NamedCompiler):
    """Checks and compiles the reports of one catalog build."""

    key, noun = "reports", "report"

    def __init__(
        self,
        problems: Problems,
        entities: Mapping[str, Entity],
        rejected=frozenset(),
        roles: Mapping | None = None,
    ):
        self.problems = problems
        self.entities = entities
        self.rejected = rejected
        self.roles = roles  # None: not known here, so not checked
        self.layer = ""
        self.raw: dict[str, tuple[Mapping, str, Position]] = {}

    def build_one(self, name: str, raw: Mapping, solution: str, where: Position):
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

        def fail(at, message, exc: FilterError | None = None, on=entity):
            if exc is None or not (
                exc.path and through_unknown_entity(on, exc.path, self.entity_of)
            ):
                self.problems.add(at, subject, message)

        if raw.get("kind", "aggregate") == "conversion_funnel":
            return self.build_funnel(name, raw, solution, where, entity, fail, problems_before)
        if "measures" not in raw:
            fail(where, "an aggregate report needs measures (or kind: conversion_funnel)")
            return None
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
            if isinstance(spec, Mapping) and "share" in spec:
                measures.append(self.build_share(key, spec, block, at, fail))
                continue
            try:
                text = measure_spec(spec)
                parse_measure(entity, self.entity_of, text)
            except FilterError as exc:
                fail(at, f"measure {key}: {exc.message}", exc)
                continue
            label = spec.get("label") if isinstance(spec, Mapping) else None
            condition = spec.get("where") if isinstance(spec, Mapping) else None
            if condition is not None:
                try:
                    parse_filter(thaw(condition), entity, self.entity_of)
                except FilterError as exc:
                    fail(_vpos(spec, "where", at), f"measure {key}: where: {exc}", exc)
                    continue
            measures.append(
                ReportMeasure(
                    key,
                    text,
                    Label.of(label, key.replace("_", " ").capitalize()),
                    where=freeze(condition),
                )
            )
        parameters = self.build_parameters(entity, raw, where, fail)
        measures += self.build_targets(raw, measures, parameters, where, fail)
        self.check_filter(entity, raw, parameters, where, fail)
        pivot = raw.get("pivot")
        if pivot is not None and pivot not in (raw.get("group_by") or ()):
            fail(
                _vpos(raw, "pivot", where),
                f"pivot {pivot!r} is not one of the groups (group_by: {', '.join(map(str, raw.get('group_by') or ())) or 'none'})",
            )
        keys = [*(raw.get("group_by") or ()), *(m.name for m in measures)]
        for index, (key, _direction) in enumerate(raw.get("sort") or ()):
            if key not in keys:
                fail(
                    _pos(raw["sort"], index, where),
                    f"sort: {key!r} is neither a group nor a measure of this report{did_you_mean(key, keys)}",
                )
        chart = self.build_chart(raw, [m.name for m in measures], where, fail)
        self.check_audience(raw, solution, where, fail)
        if len(self.problems) > problems_before:
            return None
        return Report(
            name=name,
            entity=entity.name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            filter=freeze(raw.get("filter")),
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
            owner=None if raw.get("owner") is None else str(raw["owner"]),
            roles=tuple(raw.get("roles") or ()),
        )

    @staticmethod
    def build_share(key, spec, block, at, fail) -> ReportMeasure:
        """A share: one measure of the row as a percentage of another (``[part, whole]``),
        worked out from the two figures SQL gave."""
        others = [k for k, v in block.items() if k != key]
        for index, name in enumerate(spec["share"]):
            if name == key or name not in block:
                fail(
                    _pos(spec["share"], index, at),
                    f"measure {key}: share: unknown measure {name!r}"
                    f"{did_you_mean(name, others)} (expected one of {', '.join(others)})",
                )
            elif isinstance(block[name], Mapping) and "share" in block[name]:
                fail(_pos(spec["share"], index, at), f"measure {key}: share: {name} is a share")
        extra = [k for k in spec if k not in ("share", "label")]
        if extra:
            fail(at, f"measure {key}: a share takes only share and label (got {', '.join(extra)})")
        label = Label.of(spec.get("label"), key.replace("_", " ").capitalize())
        return ReportMeasure(key, "count", label, share=tuple(spec["share"]))

    def build_targets(self, raw, measures, parameters, where, fail) -> list[ReportMeasure]:
        """The ``targets:`` block: each a measure of another entity, matched to the
        report's rows by the groups it maps and filtered by the parameters it maps."""
        block = raw.get("targets") or {}
        if block and raw.get("pivot") is not None:
            fail(
                _vpos(raw, "pivot", where),
                "targets are figures of a whole row: a report with targets has no pivot",
            )
            return []
        out = []
        taken = {m.name for m in measures}
        report_groups = list(raw.get("group_by") or ())
        for key, spec in block.items():
            at = _pos(block, key, where)
            if key in taken:
                fail(at, f"targets: {key!r} is already a measure of this report")
                continue
            target = self.entities.get(spec["entity"])
            if target is None:
                fail(
                    _vpos(spec, "entity", at),
                    f"targets {key}: unknown entity {spec['entity']!r}"
                    f"{did_you_mean(spec['entity'], self.entities)}",
                )
                continue
            before = len(self.problems)

            def fail_on(place, message, exc=None, _target=target, _key=key):
                fail(place, f"targets {_key}: {message}", exc, on=_target)

            kinds = {k: v for k, v in spec.items() if k in (*MEASURE_KINDS, "label")}
            try:
                text = measure_spec(kinds) if set(kinds) - {"label"} else "count"
                parse_measure(target, self.entity_of, text)
            except FilterError as exc:
                fail_on(at, exc.message, exc)
                continue
            mapped = dict(spec.get("groups") or {})
            groups_at = _vpos(spec, "groups", at) if "groups" in spec else at
            for group in report_groups:
                if group not in mapped:
                    fail_on(
                        groups_at,
                        f"the report groups by {group!r}: say which group of {target.name} "
                        f"it is (groups: {{{group}: ...}})",
                    )
                    continue
                try:
                    mine = parse_group(self.entities[raw["entity"]], self.entity_of, group)
                    theirs = parse_group(target, self.entity_of, mapped[group])
                except FilterError as exc:
                    fail_on(_vpos(spec["groups"], group, groups_at), f"groups: {exc.message}", exc)
                    continue
                if mine.bucket != theirs.bucket:
                    fail_on(
                        _vpos(spec["groups"], group, groups_at),
                        f"groups: {group!r} and {mapped[group]!r} are not buckets of the same "
                        f"size ({mine.bucket or 'none'} and {theirs.bucket or 'none'})",
                    )
            for group in mapped:
                if group not in report_groups:
                    fail_on(
                        _pos(spec["groups"], group, groups_at),
                        f"groups: {group!r} is not a group of this report"
                        f"{did_you_mean(group, report_groups)}",
                    )
            links = dict(spec.get("parameters") or {})
            for param, path in links.items():
                place = _vpos(spec["parameters"], param, at)
                if param not in (raw.get("parameters") or {}):
                    fail_on(
                        place,
                        f"parameters: unknown parameter {param!r}"
                        f"{did_you_mean(param, raw.get('parameters') or {})}",
                    )
                    continue
                if param not in parameters:
                    continue  # refused on its own line
                try:
                    found, _ = resolve_path(target, path, self.entity_of)
                except FilterError as exc:
                    fail_on(place, f"parameters: {exc.message}", exc)
                    continue
                wanted = _PARAMETER_FIELDS[parameters[param].type]
                if value_type(found) not in wanted:
                    fail_on(
                        place,
                        f"parameters: {param} is a {parameters[param].type} parameter, it "
                        f"needs a {' or '.join(wanted)} field, and {path} is a {value_type(found)}",
                    )
            if spec.get("filter") is not None:
                try:
                    parse_filter(spec["filter"], target, self.entity_of)
                except FilterError as exc:
                    fail_on(_vpos(spec, "filter", at), f"filter: {exc}", exc)
            if len(self.problems) > before:
                continue
            source = MeasureSource(
                target.name,
                MappingProxyType(mapped),
                MappingProxyType(links),
                freeze(spec.get("filter")),
            )
            label = Label.of(spec.get("label"), key.replace("_", " ").capitalize())
            out.append(ReportMeasure(key, text, label, source=source))
        return out

    def build_funnel(self, name, raw, solution, where, entity, fail, problems_before):
        """A conversion funnel: the entity's stage flow, its fixed figures, a period on
        the history (``entered_at``) and the usual filter and parameters."""
        if entity.stages is None:
            with_flow = sorted(n for n, e in self.entities.items() if e.stages)
            fail(
                _vpos(raw, "kind", where),
                f"a conversion_funnel reads the stage history, and {entity.name} has no stage "
                f"flow (stages:); entities with one: {', '.join(with_flow) or 'none'}",
            )
            return None
        figures = ", ".join(n for n, _ in FUNNEL_MEASURES)
        for key in ("measures", "group_by", "pivot", "targets", "sort", "totals", "limit"):
            if key in raw:
                fail(
                    _pos(raw, key, where),
                    f"{key}: a conversion_funnel has its own rows (the stages) and figures "
                    f"({figures}); remove {key}",
                )
        parameters = self.build_parameters(entity, raw, where, fail, funnel=True)
        self.check_filter(entity, raw, parameters, where, fail)
        measures = tuple(ReportMeasure(n, "count", Label.of(text)) for n, text in FUNNEL_MEASURES)
        chart = self.build_chart(
            {**raw, "group_by": [entity.stages.field]}, [m.name for m in measures], where, fail
        )
        self.check_audience(raw, solution, where, fail)
        if len(self.problems) > problems_before:
            return None
        return Report(
            name=name,
            entity=entity.name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            filter=freeze(raw.get("filter")),
            group_by=(entity.stages.field,),
            measures=measures,
            parameters=MappingProxyType(parameters),
            description=Label.of(raw["description"]) if raw.get("description") else None,
            chart=chart,
            kind="conversion_funnel",
            position=where,
            owner=None if raw.get("owner") is None else str(raw["owner"]),
            roles=tuple(raw.get("roles") or ()),
        )

    def check_audience(self, raw, solution: str, where, fail) -> None:
        check_audience(raw, solution == self.layer, self.roles, where, fail, "report")

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
            if name not in measures:
                fail(
                    _pos(spec["measures"], index, at),
                    f"chart: unknown measure {name!r}{did_you_mean(name, measures)}"
                    f" (expected one of {', '.join(measures)})",
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

    def build_parameters(
        self, entity, raw, where, fail, funnel=False
    ) -> dict[str, ReportParameter]:
        result = {}
        block = raw.get("parameters") or {}
        for name, spec in block.items():
            at = _pos(block, name, where)
            kind, path = spec["type"], spec["field"]
            if funnel and path == ENTERED_AT:
                # the history's moment of entering a stage, not a field of the entity
                if kind != "period":
                    fail(
                        _vpos(spec, "field", at),
                        f"parameter {name}: {ENTERED_AT} (when a record entered a stage) "
                        f"takes a period parameter, not a {kind} one",
                    )
                    continue
                problem = period_problem(spec["default"]) if "default" in spec else None
                if problem:
                    fail(_vpos(spec, "default", at), f"parameter {name}: {problem}")
                    continue
                result[name] = ReportParameter(
                    name=name,
                    type=kind,
                    field=path,
                    label=Label.of(spec.get("label"), name.replace("_", " ").capitalize()),
                    default=spec.get("default"),
                )
                continue
            try:
                target, _ = resolve_path(entity, path, self.entity_of)
            except FilterError as exc:
                fail(_vpos(spec, "field", at), f"parameter {name}: {exc.message}", exc)
                continue
            found = value_type(target)
            wanted = _PARAMETER_FIELDS[kind]
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
                default=freeze(default),
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
            samples = {
                n: sample_condition(p) for n, p in parameters.items() if p.field != ENTERED_AT
            }
            try:
                parse_filter(fill_filter(raw["filter"], samples), entity, self.entity_of)
            except FilterError as exc:
                fail(_vpos(raw, "filter", where), f"filter: {exc}", exc)
            unused = [n for n in raw.get("parameters") or () if n not in used]
        unused = [n for n in unused if raw["parameters"][n].get("field") != ENTERED_AT]
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
    problem = ReportCompiler.default_problem(parameter.type, target, thaw(value))
    return f"parameter {name}: {problem}" if problem else None


def build_reports(problems, entities, documents, layer: str, rejected=frozenset(), roles=None):
    """Compile the ``reports:`` documents [(solution, data)] of one catalog build."""
    compiler = ReportCompiler(problems, entities, rejected, roles)
    for solution, data in documents:
        compiler.collect(solution, data, layer)
    return compiler.build()
