"""Compiling process, SLA, calendar and template documents into the frozen model, with
every cross-check (fields, templates, recipients, roles, stages, cron, calendars) reported
through ``Problems`` at the file and line of the mistake."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import parse_cache
from .expressions import environment, template_shape
from .filters import (
    FilterError,
    parse_filter,
    resolve_path,
    system_field,
    through_unknown_entity,
)
from .labels import Label
from .model import SYSTEM_COLUMNS, Entity
from .problems import Problems, did_you_mean
from .process_schemas import BRANCHES, STEP_KINDS, step_defs, step_schema
from .processes import (
    DAYS,
    Calendar,
    Process,
    Sla,
    SlaMetric,
    Step,
    Template,
    Trigger,
    activity_due_field,
    as_list,
    parse_clock,
    parse_offset,
    parse_span,
    resolve_members,
)
from .schemacheck import Compiler, SchemaValidator
from .source import Node, Position
from .source import node_position as _pos
from .source import value_position as _vpos

# ------------------------------------------------------------------------- templates
#: Names a process template may use besides Jinja's globals.
TEMPLATE_NAMES = frozenset(
    {
        "record",
        "old",
        "today",
        "now",
        "vars",
        "trigger",
        "payload",
        "instance",
        "sla",
        "user",
        "days",
        "link",
        "approval",
        "related",
        "member",  # mass_email: the reader's record
        "unsubscribe_url",  # mass_email: the reader's way out
    }
)
USER_ATTRIBUTES = ("id", "name", "email", "locale", "time_zone")


def template_problems(
    source: str, entity: Entity | None, entity_of: Callable[[str], Entity | None]
) -> list[str]:
    """What is wrong with a template: syntax, unknown names, unknown record fields."""
    shape = template_shape(source)
    if shape.syntax:
        return [f"template syntax: {shape.syntax} (line {shape.line})"]
    found = [
        f"unknown name {name!r} in template{did_you_mean(name, TEMPLATE_NAMES)}"
        for name in sorted(set(shape.free) - TEMPLATE_NAMES)
    ]
    found += [
        f"unknown filter {name!r} in template{did_you_mean(name, environment().filters)}"
        for name in shape.unknown_filters
    ]
    if entity is not None:
        for chain in shape.chains:
            if chain[0] in ("record", "old") and len(chain) > 1:
                problem = _check_chain(entity, list(chain[1:]), entity_of)
                if problem:
                    found.append(problem)
    return list(dict.fromkeys(found))


def _check_chain(entity: Entity, chain: list[str], entity_of) -> str | None:
    current = entity
    for index, part in enumerate(chain):
        if part in current.fields:
            f = current.fields[part]
        elif part in SYSTEM_COLUMNS:
            f = None if part not in ("owner", "created_by", "updated_by") else "user"
        else:
            names = [*current.fields, *SYSTEM_COLUMNS]
            return f"{current.name} has no field {part!r}{did_you_mean(part, names)}"
        if index == len(chain) - 1:
            return None
        if f == "user" or (f is not None and getattr(f, "type", None) == "user"):
            following = chain[index + 1]
            if following not in USER_ATTRIBUTES:
                return f"a user has no attribute {following!r} (expected one of {', '.join(USER_ATTRIBUTES)})"
            return None
        if f is not None and f.type == "lookup":
            target = entity_of(f.params.get("to"))
            if target is None:
                return None
            if chain[index + 1] == "id":
                return None
            current = target
            continue
        return None  # attributes of a plain value (methods of text and so on)
    return None


# ------------------------------------------------------------------------- value types
#: A value of each type whose fit a check can decide for every record: the runner hands
#: dates, times and booleans to the records service as they are.
_REPRESENTATIVE = {
    "date": dt.date(2000, 1, 31),
    "datetime": dt.datetime(2000, 1, 31, 9, 0, tzinfo=dt.UTC),
    "time": dt.time(9, 0),
    "boolean": True,
}


@functools.cache
def _step_compiler() -> Compiler:
    from .schemas import _defs

    return Compiler({**_defs(), **step_defs()})


@functools.cache
def step_validator(kind: str) -> SchemaValidator:
    """The validator of one step kind: made once per process, not per catalog build."""
    compiler = _step_compiler()
    return SchemaValidator({**step_schema(kind), "$defs": compiler.defs}, compiler)


@dataclass(frozen=True, slots=True)
class TemplateValue:
    """What a one-expression template gives on every run: a value of a field type, a
    record (the runner passes it on as its id) or a user (likewise)."""

    type: str  # a field type name, "record" or "user"
    entity: str | None = None  # whose record, for "record"
    path: str = ""  # the expression, e.g. record.account
    always: bool = False  # never empty (today, now, a required field of the record itself)


def template_value(
    source: str, names: Mapping[str, Entity], entity_of: Callable[[str], Entity | None]
) -> TemplateValue | None:
    """The kind of value a template gives whatever the record holds, when one expression
    of a known name or field decides it; ``names`` maps record names (record, old,
    related) to their entities."""
    chain = template_shape(source).single if isinstance(source, str) else None
    if not chain:
        return None
    path = ".".join(chain)
    if chain == ("today",):
        return TemplateValue("date", path=path, always=True)
    if chain == ("now",):
        return TemplateValue("datetime", path=path, always=True)
    entity = names.get(chain[0])
    if entity is None:
        return None
    if len(chain) == 1:
        return TemplateValue("record", entity.name, path)
    try:
        field, walked = resolve_path(entity, ".".join(chain[1:]), entity_of)
    except FilterError:
        return None  # not a field path (template_problems reports unknown fields)
    if field.name == "id":
        return TemplateValue("record", walked[-1].target if walked else entity.name, path)
    if field.type == "lookup":
        return TemplateValue("record", field.target, path)
    if field.type == "user":
        return TemplateValue("user", path=path)
    if field.type == "formula":
        result = field.params.get("result")
        return TemplateValue(result, path=path) if result else None
    return TemplateValue(field.type, path=path, always=field.required and not walked)


def value_problem(value: TemplateValue, target) -> str | None:
    """Why every value ``value`` stands for would be refused by the field ``target``."""
    where = f"{target.entity}.{target.name}"
    shown = "{{ " + value.path + " }}"
    if value.type == "record":
        what = f"{shown} is {_a(value.entity)} record (its id)"
        if target.type == "any_lookup":
            allowed = target.params.get("to")
            if allowed and value.entity not in allowed:
                return f"{what}, but {where} takes records of {', '.join(allowed)} only"
            reference = value.path if value.path.endswith(".id") else f"{value.path}.id"
            return (
                f"{what}, but {where} is an any_lookup, which needs the entity too: "
                f'write "{value.entity}:{{{{ {reference} }}}}"'
            )
        if target.type == "lookup" and target.target != value.entity:
            return f"{what}, but {where} points at {target.target}"
        if target.type == "user":
            return f"{what}, but {where} is a user field"
        if target.type == "lookup":
            return None
        representative = 1
    elif value.type == "user":
        what = f"{shown} is a user"
        if target.type in ("lookup", "any_lookup"):
            return f"{what}, but {where} points at {target.target or 'records'}, not users"
        if target.type == "user":
            return None
        representative = 1
    elif value.type in _REPRESENTATIVE:
        what = f"{shown} is {_a(value.type)}"
        representative = _REPRESENTATIVE[value.type]
    else:
        return None  # text and numbers fit or not depending on the value itself
    from .fieldtypes import CoercionError

    try:
        target.coerce(representative)
    except CoercionError as exc:
        hint = ""
        if value.type == "date" and target.type == "datetime" and value.always:
            hint = (
                f'; add a time of day: "{shown}T09:00:00" is 09:00 in the organization\'s time zone'
            )
        if value.path == "now" and target.type == "date":
            hint = '; today\'s date is "{{ today }}"'
        return f"{what}, but {where} is {_a(target.type)} field ({exc.message}){hint}"
    return None


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


# ------------------------------------------------------------------------- compiling
def _plain(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


@dataclass
class WorkflowDefinitions:
    processes: dict[str, Process]
    templates: dict[str, Template]
    calendars: dict[str, Calendar]
    slas: dict[str, Sla]


class WorkflowCompiler:
    """Compiles and cross-checks the four workflow kinds of one catalog build."""

    def __init__(
        self,
        problems: Problems,
        entities: Mapping[str, Entity],
        roles: Mapping,
        layer: str,
        rejected: frozenset[str] | set[str] = frozenset(),
        reports: Mapping | None = None,
        dashboards: Mapping | None = None,
    ):
        self.problems = problems
        self.entities = entities
        #: the catalog's compiled reports and dashboards, which send_report steps name
        self.reports = reports or {}
        self.dashboards = dashboards or {}
        #: entities whose own document was refused (and reported): not reported again
        self.rejected = rejected
        self.roles = roles
        self.layer = layer
        self.raw: dict[str, dict[str, tuple[Mapping, str, Position]]] = {
            k: {} for k in ("process", "sla", "calendars", "templates")
        }
        self.processes: dict[str, Process] = {}
        self.templates: dict[str, Template] = {}
        self.calendars: dict[str, Calendar] = {}
        self._starts: list[tuple[Step, str, Process]] = []

    def entity_of(self, name):
        return self.entities.get(name)

    def add(self, where, subject, message):
        self.problems.add(where, subject, message)

    def unknown_entity(self, name, where, subject, prefix: str = "") -> None:
        """Report a name that is no entity, unless its own document was refused already."""
        if name not in self.rejected:
            self.add(
                where,
                subject,
                f"{prefix}unknown entity {name!r}{did_you_mean(name, self.entities)}",
            )

    def follows_on(self, entity: Entity, exc: FilterError) -> bool:
        """A path error caused by a lookup to an unknown entity, which its field reports."""
        return bool(exc.path) and through_unknown_entity(entity, exc.path, self.entity_of)

    # ------------------------------------------------------------------ collecting
    def collect(self, kind: str, solution: str, data: Mapping) -> None:
        if kind in ("process", "sla"):
            items = {data[kind]: (data, _vpos(data, kind))}
        else:
            block = data[kind]
            items = {name: (spec, _pos(block, name)) for name, spec in block.items()}
        what = {
            "process": "process",
            "sla": "SLA",
            "calendars": "calendar",
            "templates": "template",
        }[kind]
        for name, (spec, where) in items.items():
            previous = self.raw[kind].get(name)
            if previous is not None and solution != self.layer:
                owner = previous[1]
                text = (
                    f"is defined twice in solution {owner!r}"
                    if owner == solution
                    else f"is already defined by solution {owner!r}"
                )
                self.add(where, name, f"{what} {name!r} {text}")
                continue
            self.raw[kind][name] = (spec, solution, where)

    # ------------------------------------------------------------------ building
    def build(self) -> WorkflowDefinitions:
        for name, (raw, solution, where) in self.raw["templates"].items():
            self.build_template(name, raw, solution, where)
        for name, (raw, solution, where) in self.raw["calendars"].items():
            self.build_calendar(name, raw, solution, where)
        for name, (raw, solution, where) in self.raw["process"].items():
            process = self.build_process(name, raw, solution, where)
            if process is not None:
                self.processes[name] = process
        slas = {}
        for name, (raw, solution, where) in self.raw["sla"].items():
            sla = self.build_sla(name, raw, solution, where)
            if sla is not None:
                slas[name] = sla
        for step, target, process in self._starts:
            other = self.processes.get(target)
            where = (
                _vpos(step.spec, "process", step.position)
                if isinstance(step.spec, Node)
                else step.position
            )
            if other is None:
                self.add(
                    step.position,
                    f"processes.{process.name}",
                    f"starts unknown process {target!r}{did_you_mean(target, [p for p in self.processes if ':' not in p])}",
                )
            elif "record" not in step.spec and other.entity not in (None, process.entity):
                self.add(
                    where,
                    f"processes.{process.name}",
                    f"process {target!r} runs on {other.entity}, not {process.entity}; give record: to start it on another record",
                )
        return WorkflowDefinitions(self.processes, self.templates, self.calendars, slas)

    def build_template(self, name, raw, solution, where) -> None:
        subject = f"templates.{name}"
        entity = None
        if raw.get("entity") is not None:
            entity = self.entities.get(raw["entity"])
            if entity is None:
                self.unknown_entity(raw["entity"], _vpos(raw, "entity", where), subject)
        for key in ("subject", "body"):
            value = raw.get(key)
            texts = (
                value.items()
                if isinstance(value, Mapping)
                else ([("", value)] if value is not None else [])
            )
            for locale, text in texts:
                for problem in template_problems(str(text), entity, self.entity_of):
                    self.add(
                        _vpos(value, locale, _vpos(raw, key, where))
                        if locale
                        else _vpos(raw, key, where),
                        subject,
                        f"{key}: {problem}",
                    )
        self.templates[name] = Template(
            name=name,
            subject=Label.of(raw.get("subject")),
            body=Label.of(raw.get("body")) if raw.get("body") is not None else Label(()),
            solution=solution,
            entity=raw.get("entity"),
            position=where,
        )

    def build_calendar(self, name, raw, solution, where) -> None:
        subject = f"calendars.{name}"
        ok = True
        try:
            ZoneInfo(str(raw["time_zone"]))
        except (ZoneInfoNotFoundError, ValueError):
            ok = False
            self.add(
                _vpos(raw, "time_zone", where),
                subject,
                f"unknown time zone {raw['time_zone']!r} (expected e.g. Europe/Moscow)",
            )
        week_raw = raw["week"]
        week: list[tuple] = [() for _ in DAYS]
        for key, spans in week_raw.items():
            parsed = self._hours(spans, _vpos(week_raw, key, where), subject)
            if parsed is None:
                ok = False
                continue
            days = range(5) if key == "weekdays" else [DAYS.index(key)]
            for day in days:
                week[day] = parsed
        country = subdivision = None
        if raw.get("holidays"):
            country = str(raw["holidays"]["country"])
            subdivision = raw["holidays"].get("subdivision")
            problem = holiday_problem(country, subdivision)
            if problem:
                ok = False
                self.add(_vpos(raw, "holidays", where), subject, problem)
        closed = set()
        for index, text in enumerate(raw.get("closed") or ()):
            try:
                closed.add(dt.date.fromisoformat(str(text)))
            except ValueError:
                ok = False
                self.add(
                    _pos(raw["closed"], index, where),
                    subject,
                    f"{text!r} is not a date (expected YYYY-MM-DD)",
                )
        special = {}
        for text, spans in (raw.get("special") or {}).items():
            try:
                day = dt.date.fromisoformat(str(text))
            except ValueError:
                ok = False
                self.add(
                    _pos(raw["special"], text, where),
                    subject,
                    f"{text!r} is not a date (expected YYYY-MM-DD)",
                )
                continue
            parsed = self._hours(spans, _vpos(raw["special"], text, where), subject)
            if parsed is None:
                ok = False
                continue
            special[day] = parsed
        if not any(week) and not special:
            ok = False
            self.add(
                _vpos(raw, "week", where),
                subject,
                "a calendar needs working hours on at least one day",
            )
        if ok:
            self.calendars[name] = Calendar(
                name=name,
                label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
                time_zone=str(raw["time_zone"]),
                week=tuple(week),
                country=country,
                subdivision=subdivision,
                closed=frozenset(closed),
                special=MappingProxyType(special),
                solution=solution,
                position=where,
            )

    def _hours(self, spans, where, subject):
        result = []
        for text in spans or ():
            start_text, _, end_text = str(text).partition("-")
            try:
                start, end = parse_clock(start_text), parse_clock(end_text)
            except ValueError as exc:
                self.add(where, subject, str(exc))
                return None
            if end <= start:
                self.add(where, subject, f"{text!r}: the end must be after the start")
                return None
            if result and start < result[-1][1]:
                self.add(
                    where, subject, f"{text!r} overlaps the hours before it (list them in order)"
                )
                return None
            result.append((start, end))
        return tuple(result)

    # ------------------------------------------------------------------ processes
    def build_process(
        self, name, raw, solution, where, *, entity_name=None, triggers=None
    ) -> Process | None:
        subject = f"processes.{name}"
        ok = True
        entity = None
        entity_name = entity_name if entity_name is not None else raw.get("entity")
        if entity_name is not None:
            entity = self.entities.get(entity_name)
            if entity is None:
                self.unknown_entity(entity_name, _vpos(raw, "entity", where), subject)
                return None
        if triggers is None:
            triggers = self.build_triggers(
                raw.get("on") or {}, entity, subject, _vpos(raw, "on", where)
            )
            if triggers is None:
                ok = False
        condition = self._filter(raw.get("if"), entity, _vpos(raw, "if", where), subject, "if")
        was = self._filter(raw.get("was"), entity, _vpos(raw, "was", where), subject, "was")
        if (
            raw.get("if") is not None
            and condition is None
            or raw.get("was") is not None
            and was is None
        ):
            ok = False
        if (
            raw.get("was") is not None
            and triggers is not None
            and not any(t.kind in ("updated", "enter_stage", "exit_stage") for t in triggers)
        ):
            ok = False
            self.add(
                _vpos(raw, "was", where),
                subject,
                "was: applies to updated or stage triggers only (a new record has no earlier values)",
            )
        if entity is None and triggers:
            for trigger in triggers:
                if trigger.kind not in ("schedule", "manual", "webhook"):
                    ok = False
                    self.add(
                        _vpos(raw, "on", where), subject, f"a {trigger.kind} trigger needs entity:"
                    )
        steps = self.build_steps(raw.get("steps") or [], (), entity, subject, where, name, set())
        if steps is None:
            ok = False
        if not ok:
            return None
        process = Process(
            name=name,
            entity=entity.name if entity else None,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            triggers=tuple(triggers or ()),
            steps=steps,
            condition=condition,
            was=was,
            description=Label.of(raw["description"]) if raw.get("description") else None,
            enabled=bool(raw.get("enabled", True)),
            max_attempts=int(raw.get("max_attempts", 5)),
            position=where,
        )
        for step in process.walk():
            if step.kind == "start":
                self._starts.append((step, step.spec["process"], process))
        return process

    def _filter(self, raw, entity, where, subject, what):
        if raw is None:
            return None
        if entity is None:
            self.add(where, subject, f"{what}: a condition needs entity:")
            return None
        try:
            return parse_filter(raw, entity, self.entity_of)
        except FilterError as exc:
            if not self.follows_on(entity, exc):
                self.add(where, subject, f"{what}: {exc}")
            return None

    def build_triggers(
        self, on: Mapping, entity: Entity | None, subject: str, where
    ) -> tuple[Trigger, ...] | None:
        result, ok = [], True
        for kind, value in on.items():
            at = _vpos(on, kind, where)
            try:
                trigger = self._trigger(kind, value, entity, at, subject)
            except ValueError as exc:
                self.add(at, subject, f"on.{kind}: {exc}")
                ok = False
                continue
            if trigger is None:
                ok = False
            else:
                result.append(trigger)
        return tuple(result) if ok else None

    def _trigger(self, kind, value, entity, at, subject) -> Trigger | None:
        if kind in ("created", "deleted"):
            return Trigger(kind)
        if kind == "updated":
            fields = () if value is True else tuple(value)
            for index, name in enumerate(fields):
                if entity is not None and name not in entity.fields and name != "owner":
                    self.add(
                        _pos(value, index, at),
                        subject,
                        f"on.updated: {entity.name} has no field {name!r}{did_you_mean(name, entity.fields)}",
                    )
                    return None
            return Trigger(kind, fields=fields)
        if kind in ("enter_stage", "exit_stage"):
            stages = as_list(value)
            if entity is None:
                return Trigger(kind, stages=stages)
            if entity.stages is None:
                raise ValueError(
                    f"{entity.name} has no stage flow (stages: in its entity document)"
                )
            for stage in stages:
                if stage not in entity.stages.steps:
                    raise ValueError(
                        f"{stage!r} is not a stage of {entity.name}{did_you_mean(stage, entity.stages.steps)}"
                    )
            return Trigger(kind, stages=stages, fields=(entity.stages.field,))
        if kind == "schedule":
            cron = value if isinstance(value, str) else value["cron"]
            zone = None if isinstance(value, str) else value.get("time_zone")
            cron_problem = check_cron(cron)
            if cron_problem:
                raise ValueError(cron_problem)
            if zone is not None:
                try:
                    ZoneInfo(zone)
                except (ZoneInfoNotFoundError, ValueError):
                    raise ValueError(f"unknown time zone {zone!r}") from None
            return Trigger(kind, cron=cron, time_zone=zone)
        if kind == "date":
            if entity is None:
                return Trigger(kind)
            name = value["field"]
            target = entity.fields.get(name)
            if target is None and name not in ("created_at", "updated_at"):
                raise ValueError(
                    f"{entity.name} has no field {name!r}{did_you_mean(name, entity.fields)}"
                )
            if target is not None and target.type not in ("date", "datetime"):
                raise ValueError(
                    f"{name!r} is a {target.type} field; a date trigger needs a date or datetime field"
                )
            before = value.get("before")
            if before is not None:
                duration = entity.fields.get(before)
                if duration is None or duration.type != "duration":
                    raise ValueError(
                        f"before: {before!r} must be a duration field of {entity.name}{did_you_mean(before, entity.fields) if duration is None else ''}"
                    )
            time_of_day = parse_clock(value["time"]) if value.get("time") else None
            if time_of_day is not None and (target is None or target.type != "date"):
                raise ValueError("time: applies to date fields only")
            offset = parse_offset(value["offset"]) if value.get("offset") else 0
            fields = (name,) + ((before,) if before else ())
            return Trigger(
                kind,
                date_field=name,
                offset=offset,
                before_field=before,
                time=time_of_day,
                fields=fields,
            )
        if kind == "manual":
            spec = value if isinstance(value, Mapping) else {}
            roles = tuple(spec.get("roles") or ())
            for role in roles:
                if role not in self.roles:
                    raise ValueError(f"unknown role {role!r}{did_you_mean(role, self.roles)}")
            return Trigger(
                kind, label=Label.of(spec.get("label")) if spec.get("label") else None, roles=roles
            )
        if kind == "webhook":
            spec = value if isinstance(value, Mapping) else {}
            return Trigger(
                kind, secret=_plain(spec.get("secret")), signature=spec.get("signature", "url")
            )
        raise ValueError(f"unknown trigger {kind!r}")

    # ------------------------------------------------------------------ steps
    def build_steps(
        self, items, prefix: tuple, entity, subject, where, process_name, names: set
    ) -> tuple[Step, ...] | None:
        from .packs import _report

        steps, ok = [], True
        for index, raw in enumerate(items):
            at = _pos(items, index, where)
            kinds = [k for k in raw if k in STEP_KINDS] if isinstance(raw, Mapping) else []
            if len(kinds) != 1:
                ok = False
                keys = ", ".join(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
                if kinds:
                    self.add(
                        at, subject, f"a step has exactly one kind; this one has {', '.join(kinds)}"
                    )
                else:
                    first = next(iter(raw), "") if isinstance(raw, Mapping) else ""
                    self.add(
                        at,
                        subject,
                        f"unknown step ({keys}); expected one of {', '.join(STEP_KINDS)}{did_you_mean(first, STEP_KINDS)}",
                    )
                continue
            kind = kinds[0]
            errors = list(step_validator(kind).iter_errors(raw))
            if errors:
                ok = False
                for error in errors:
                    _report(error, raw, self.problems, at, subject=subject)
                continue
            path = (*prefix, index)
            step = self.build_step(kind, raw, path, entity, subject, at, process_name, names)
            if step is None:
                ok = False
                continue
            steps.append(step)
        return tuple(steps) if ok else None

    def build_step(self, kind, raw, path, entity, subject, at, process_name, names) -> Step | None:
        spec = raw[kind]
        spec_at = _vpos(raw, kind, at)
        name = raw.get("name")
        if name is not None:
            if name in names:
                self.add(
                    _vpos(raw, "name", at),
                    subject,
                    f"step name {name!r} is used twice in this process",
                )
                return None
            names.add(name)
        condition = None
        check = getattr(self, f"_check_{kind}")
        result = check(spec, spec_at, entity, subject)
        if result is False:
            return None
        if result is not None:
            condition = result
        branches = {}
        for branch in BRANCHES.get(kind, ()):
            if branch in raw:
                built = self.build_steps(
                    raw[branch],
                    (*path, branch),
                    entity,
                    subject,
                    _vpos(raw, branch, at),
                    process_name,
                    names,
                )
                if built is None:
                    return None
                branches[branch] = built
        if kind == "wait" and "timed_out" in raw and "timeout" not in spec:
            self.add(
                _vpos(raw, "timed_out", at), subject, "timed_out: needs a timeout: in the wait"
            )
            return None
        if kind == "approval" and "timed_out" in raw and "timeout" not in spec:
            self.add(
                _vpos(raw, "timed_out", at), subject, "timed_out: needs a timeout: in the approval"
            )
            return None
        for key in ("as",):
            if isinstance(spec, Mapping) and spec.get(key):
                if spec[key] in names:
                    self.add(
                        _vpos(spec, key, spec_at),
                        subject,
                        f"as: {spec[key]!r} names another step's result too",
                    )
                    return None
                names.add(spec[key])
        return Step(
            kind=kind,
            path=path,
            spec=_plain(spec) if not isinstance(spec, Mapping) else _keep(spec),
            name=name,
            label=Label.of(raw["label"]) if raw.get("label") else None,
            condition=condition,
            branches=MappingProxyType(branches),
            position=at,
        )

    # one checker per step kind: False = reported problems; a filter tree = its condition
    def _needs_entity(self, entity, at, subject, kind) -> bool:
        if entity is None:
            self.add(at, subject, f"{kind}: this step works on a record; the process needs entity:")
            return False
        return True

    def _template_fit(self, source, field, context_entity, related=None) -> str | None:
        """Why a one-expression template's value never fits ``field`` (None: it may)."""
        names = {"record": context_entity, "old": context_entity} if context_entity else {}
        if related is not None:
            names["related"] = related
        value = template_value(source, names, self.entity_of)
        return value_problem(value, field) if value is not None else None

    def _check_values(
        self, values: Mapping, target: Entity, at, subject, context_entity, related=None
    ) -> bool:
        ok = True
        for name, value in values.items():
            where = _pos(values, name, at)
            f = target.fields.get(name)
            if f is None and name != "owner":
                ok = False
                self.add(
                    where,
                    subject,
                    f"{target.name} has no field {name!r}{did_you_mean(name, target.fields)}",
                )
                continue
            if f is not None and f.computed:
                ok = False
                self.add(where, subject, f"{target.name}.{name} is computed and cannot be set")
                continue
            if f is not None and f.type == "lookup" and isinstance(value, Mapping):
                if "id" not in value and not self._check_finder(
                    value, f, _vpos(values, name, where), subject, context_entity, related
                ):
                    ok = False
                continue
            if isinstance(value, str) and ("{{" in value or "{%" in value):
                found = template_problems(value, context_entity, self.entity_of)
                if not found:
                    field = f if f is not None else system_field(target.name, "owner")
                    fit = self._template_fit(value, field, context_entity, related)
                    found = [fit] if fit else []
                for problem in found:
                    ok = False
                    self.add(_vpos(values, name, where), subject, f"{name}: {problem}")
            elif (
                f is not None and value is not None and not isinstance(value, str | list | Mapping)
            ):
                from .fieldtypes import CoercionError

                try:
                    f.coerce(value)
                except CoercionError as exc:
                    ok = False
                    self.add(_vpos(values, name, where), subject, f"{name}: {exc.message}")
        return ok

    def _check_finder(self, finder, lookup, at, subject, context_entity, related) -> bool:
        """A lookup given by the fields that find its record: each a stored field of the
        target, each value a constant or a template that reads what exists."""
        target = self.entities.get(lookup.target)
        if target is None:
            return False
        ok = True
        for name, value in finder.items():
            where = _pos(finder, name, at)
            f = target.fields.get(name)
            if f is None or not f.stored or f.type in ("children", "many_to_many"):
                ok = False
                problem = (
                    f"{target.name} has no field {name!r}{did_you_mean(name, target.fields)}"
                    if f is None
                    else f"{target.name}.{name} has no value to find a record by"
                )
                self.add(where, subject, f"{lookup.name}: {problem}")
                continue
            if isinstance(value, str) and ("{{" in value or "{%" in value):
                for problem in template_problems(value, context_entity, self.entity_of):
                    ok = False
                    self.add(where, subject, f"{lookup.name}.{name}: {problem}")
        return ok

    def _check_set(self, spec, at, entity, subject):
        if not self._needs_entity(entity, at, subject, "set"):
            return False
        return None if self._check_values(spec, entity, at, subject, entity) else False

    def _check_create(self, spec, at, entity, subject):
        target = self.entities.get(spec["entity"])
        if target is None:
            self.unknown_entity(spec["entity"], _vpos(spec, "entity", at), subject, "create: ")
            return False
        return (
            None
            if self._check_values(
                spec["values"], target, _vpos(spec, "values", at), subject, entity
            )
            else False
        )

    def _check_update(self, spec, at, entity, subject):
        if not self._needs_entity(entity, at, subject, "update"):
            return False
        related = entity.fields.get(spec["related"])
        if related is None or related.type not in ("lookup", "children"):
            self.add(
                _vpos(spec, "related", at),
                subject,
                f"update: related must be a lookup or children field of {entity.name}{did_you_mean(spec['related'], entity.fields) if related is None else ''}",
            )
            return False
        target = self.entities.get(related.target)
        if target is None:
            return False
        if not self._check_values(
            spec["values"], target, _vpos(spec, "values", at), subject, entity, related=target
        ):
            return False
        if spec.get("if") is not None:
            try:
                return parse_filter(spec["if"], target, self.entity_of)
            except FilterError as exc:
                if not self.follows_on(target, exc):
                    self.add(_vpos(spec, "if", at), subject, f"update.if: {exc}")
                return False
        return None

    def check_recipients(self, value, entity, at, subject, *, users_only=False) -> bool:
        ok = True
        for index, item in enumerate(as_list(value)):
            where = _pos(value, index, at) if isinstance(value, list) else at
            problem = recipient_problem(
                str(item), entity, self.entity_of, self.roles, users_only=users_only
            )
            if problem:
                ok = False
                self.add(where, subject, problem)
        return ok

    def _check_notify(self, spec, at, entity, subject):
        ok = self.check_recipients(spec["to"], entity, _vpos(spec, "to", at), subject)
        return (
            None
            if self._check_template_ref(
                spec["template"], entity, _vpos(spec, "template", at), subject
            )
            and ok
            else False
        )

    def _check_template_ref(self, name, entity, where, subject) -> bool:
        template = self.templates.get(name)
        if template is None:
            if name not in self.raw["templates"]:
                self.add(
                    where,
                    subject,
                    f"unknown template {name!r}{did_you_mean(name, self.raw['templates'])}",
                )
            return False
        if template.entity is not None and template.entity not in self.entities:
            return False  # the template's unknown entity is reported at the template
        if template.entity is not None and entity is not None and template.entity != entity.name:
            self.add(
                where,
                subject,
                f"template {name!r} is written for {template.entity}, not {entity.name}",
            )
            return False
        if template.entity is None and entity is not None:
            for label in (template.subject, template.body):
                for _locale, text in label.texts:
                    for problem in template_problems(text, entity, self.entity_of):
                        self.add(where, subject, f"template {name!r}: {problem}")
                        return False
        return True

    def _check_assign(self, spec, at, entity, subject):
        if not self._needs_entity(entity, at, subject, "assign"):
            return False
        ok = True
        target = spec.get("field", "owner")
        if target != "owner":
            f = entity.fields.get(target)
            if f is None or f.type != "user":
                ok = False
                self.add(
                    _vpos(spec, "field", at),
                    subject,
                    f"assign: field must be a user field of {entity.name}",
                )
        if "to" not in spec and "rules" not in spec:
            self.add(at, subject, "assign: give to: (a team, role or users) or rules:")
            return False
        if "to" in spec:
            ok = (
                self.check_recipients(
                    spec["to"], entity, _vpos(spec, "to", at), subject, users_only=True
                )
                and ok
            )
        for index, rule in enumerate(spec.get("rules") or ()):
            where = _pos(spec["rules"], index, at)
            ok = (
                self.check_recipients(
                    rule["to"], entity, _vpos(rule, "to", where), subject, users_only=True
                )
                and ok
            )
            if (
                rule.get("if") is not None
                and self._filter(rule["if"], entity, _vpos(rule, "if", where), subject, "rules.if")
                is None
            ):
                ok = False
        if (
            spec.get("load") is not None
            and self._filter(spec["load"], entity, _vpos(spec, "load", at), subject, "load") is None
        ):
            ok = False
        return None if ok else False

    def _check_activity(self, spec, at, entity, subject):
        name = spec.get("entity", "task")
        target = self.entities.get(name)
        if target is None:
            self.unknown_entity(name, _vpos(spec, "entity", at), subject, "activity: ")
            return False
        ok = True
        if "subject" not in target.fields:
            ok = False
            self.add(at, subject, f"activity: {name} has no subject field")
        due_field = activity_due_field(target)
        if spec.get("due") is not None:
            if due_field is None:
                ok = False
                self.add(
                    _vpos(spec, "due", at),
                    subject,
                    f"activity: {name} has no due or starts_at field",
                )
            elif "{" not in spec["due"]:
                try:
                    parse_offset(spec["due"])
                except ValueError as exc:
                    ok = False
                    self.add(_vpos(spec, "due", at), subject, f"due: {exc}")
            else:
                found = template_problems(spec["due"], entity, self.entity_of)
                if not found:
                    fit = self._template_fit(spec["due"], target.fields[due_field], entity)
                    found = [fit] if fit else []
                for problem in found:
                    ok = False
                    self.add(_vpos(spec, "due", at), subject, f"due: {problem}")
        if spec.get("reminder") is not None:
            if "reminder" not in target.fields:
                ok = False
                self.add(
                    _vpos(spec, "reminder", at), subject, f"activity: {name} has no reminder field"
                )
            ok = self._span(spec, "reminder", at, subject) and ok
        for problem in template_problems(spec["subject"], entity, self.entity_of):
            ok = False
            self.add(_vpos(spec, "subject", at), subject, f"subject: {problem}")
        if spec.get("owner") is not None:
            ok = (
                self.check_recipients(
                    spec["owner"], entity, _vpos(spec, "owner", at), subject, users_only=True
                )
                and ok
            )
        if spec.get("values"):
            ok = (
                self._check_values(
                    spec["values"], target, _vpos(spec, "values", at), subject, entity
                )
                and ok
            )
        return None if ok else False

    def _span(self, spec, key, at, subject) -> bool:
        try:
            if parse_span(spec[key]) <= 0:
                raise ValueError("must be longer than 0")
        except ValueError as exc:
            self.add(_vpos(spec, key, at), subject, f"{key}: {exc}")
            return False
        return True

    def _check_wait(self, spec, at, entity, subject):
        modes = [k for k in ("for", "until", "condition") if k in spec]
        if len(modes) != 1:
            self.add(at, subject, "wait: give exactly one of for:, until: or condition:")
            return False
        ok = True
        if "for" in spec:
            ok = self._span(spec, "for", at, subject)
        if "timeout" in spec:
            ok = self._span(spec, "timeout", at, subject) and ok
        if "until" in spec:
            if not self._needs_entity(entity, at, subject, "wait until"):
                return False
            target = entity.fields.get(spec["until"])
            if spec["until"] not in ("created_at", "updated_at") and (
                target is None or target.type not in ("date", "datetime")
            ):
                self.add(
                    _vpos(spec, "until", at),
                    subject,
                    f"wait: until must be a date or datetime field of {entity.name}{did_you_mean(spec['until'], entity.fields) if target is None else ''}",
                )
                return False
            if spec.get("offset"):
                try:
                    parse_offset(spec["offset"])
                except ValueError as exc:
                    self.add(_vpos(spec, "offset", at), subject, f"offset: {exc}")
                    ok = False
            if spec.get("time"):
                try:
                    parse_clock(spec["time"])
                except ValueError as exc:
                    self.add(_vpos(spec, "time", at), subject, f"time: {exc}")
                    ok = False
        elif "offset" in spec or "time" in spec:
            self.add(at, subject, "wait: offset: and time: go with until:")
            ok = False
        if "condition" in spec:
            tree = self._filter(
                spec["condition"], entity, _vpos(spec, "condition", at), subject, "wait.condition"
            )
            if tree is None:
                return False
            return tree if ok else False
        return None if ok else False

    def _check_approval(self, spec, at, entity, subject):
        ok = self.check_recipients(
            spec["approvers"], entity, _vpos(spec, "approvers", at), subject, users_only=True
        )
        if spec.get("template") is not None:
            ok = (
                self._check_template_ref(
                    spec["template"], entity, _vpos(spec, "template", at), subject
                )
                and ok
            )
        if "timeout" in spec:
            ok = self._span(spec, "timeout", at, subject) and ok
        return None if ok else False

    def _check_webhook(self, spec, at, entity, subject):
        ok = True
        for problem in template_problems(spec["url"], entity, self.entity_of):
            ok = False
            self.add(_vpos(spec, "url", at), subject, f"url: {problem}")
        if "{" not in spec["url"] and not re.match(r"^https?://", spec["url"]):
            ok = False
            self.add(_vpos(spec, "url", at), subject, f"url: {spec['url']!r} is not an http(s) URL")
        body = spec.get("body")
        for key, value in body.items() if isinstance(body, Mapping) else ():
            if isinstance(value, str):
                for problem in template_problems(value, entity, self.entity_of):
                    ok = False
                    self.add(_vpos(body, key, at), subject, f"body.{key}: {problem}")
        if "timeout" in spec:
            ok = self._span(spec, "timeout", at, subject) and ok
        return None if ok else False

    def _check_start(self, spec, at, entity, subject):
        if spec.get("record") is not None:
            for problem in template_problems(spec["record"], entity, self.entity_of):
                self.add(_vpos(spec, "record", at), subject, f"record: {problem}")
                return False
        return None

    def _check_send_report(self, spec, at, entity, subject):
        from .reports import parameter_value_problem

        ok = self.check_recipients(
            spec["to"], entity, _vpos(spec, "to", at), subject, users_only=True
        )
        if ("report" in spec) == ("dashboard" in spec):
            self.add(at, subject, "send_report: give either report: or dashboard:, not both")
            return False
        if "dashboard" in spec:
            name = spec["dashboard"]
            if name not in self.dashboards:
                self.add(
                    _vpos(spec, "dashboard", at),
                    subject,
                    f"send_report: unknown dashboard {name!r}{did_you_mean(name, self.dashboards)}",
                )
                return False
            # its global filters take text values, checked as the dashboard page checks them
            known = self.dashboards[name].filters
            given = spec.get("parameters") or {}
            for key in given:
                if key not in known:
                    ok = False
                    self.add(
                        _pos(given, key, at),
                        subject,
                        f"send_report: dashboard {name} has no filter {key!r}"
                        f"{did_you_mean(key, known)}",
                    )
            return None if ok else False
        report = self.reports.get(spec["report"])
        if report is None:
            self.add(
                _vpos(spec, "report", at),
                subject,
                f"send_report: unknown report {spec['report']!r}{did_you_mean(spec['report'], self.reports)}",
            )
            return False
        given = spec.get("parameters") or {}
        for name, value in given.items():
            problem = parameter_value_problem(report, name, value, self.entity_of)
            if problem:
                ok = False
                self.add(_pos(given, name, at), subject, f"send_report: {problem}")
        return None if ok else False

    def _check_rescore(self, spec, at, entity, subject):
        target = self.entity_of(spec)
        if target is None:
            self.add(
                at, subject, f"rescore: unknown entity {spec!r}{did_you_mean(spec, self.entities)}"
            )
            return False
        if target.scoring is None:
            scored = [n for n, e in self.entities.items() if e.scoring is not None]
            self.add(
                at,
                subject,
                f"rescore: {spec} has no scoring model (scoring: in its entity document)"
                + (f"; entities with one: {', '.join(sorted(scored))}" if scored else ""),
            )
            return False
        return None

    def _check_mass_email(self, spec, at, entity, subject):
        from .mass_email import check_mass_email

        return check_mass_email(self, spec, at, entity, subject)

    def _check_stop(self, spec, at, entity, subject):
        return None

    def _check_if(self, spec, at, entity, subject):
        tree = self._filter(spec, entity, at, subject, "if")
        return tree if tree is not None else False

    # ------------------------------------------------------------------ SLAs
    def build_sla(self, name, raw, solution, where) -> Sla | None:
        subject = f"slas.{name}"
        entity = self.entities.get(raw["entity"])
        if entity is None:
            self.unknown_entity(raw["entity"], _vpos(raw, "entity", where), subject)
            return None
        ok = True
        calendar = raw.get("calendar")
        if calendar is not None and calendar not in self.calendars:
            if calendar not in self.raw["calendars"]:
                self.add(
                    _vpos(raw, "calendar", where),
                    subject,
                    f"unknown calendar {calendar!r}{did_you_mean(calendar, self.raw['calendars'])}",
                )
            ok = False
        priority_field = raw.get("priority_field")
        priorities = None
        if priority_field is not None:
            f = entity.fields.get(priority_field)
            if f is None or f.type != "choice":
                ok = False
                self.add(
                    _vpos(raw, "priority_field", where),
                    subject,
                    f"priority_field must be a choice field of {entity.name}{did_you_mean(priority_field, entity.fields) if f is None else ''}",
                )
            else:
                priorities = f.choice_values
        condition = self._filter(raw.get("if"), entity, _vpos(raw, "if", where), subject, "if")
        pause = self._filter(raw.get("pause"), entity, _vpos(raw, "pause", where), subject, "pause")
        if (raw.get("if") is not None and condition is None) or (
            raw.get("pause") is not None and pause is None
        ):
            ok = False
        metrics = []
        for metric_name, spec in raw["metrics"].items():
            at = _pos(raw["metrics"], metric_name, where)
            done = self._filter(
                spec["done"],
                entity,
                _vpos(spec, "done", at),
                subject,
                f"metrics.{metric_name}.done",
            )
            if done is None:
                ok = False
            targets = {}
            for key, text in spec["targets"].items():
                key_at = _pos(spec["targets"], key, at)
                if key != "*" and priorities is not None and key not in priorities:
                    ok = False
                    self.add(
                        key_at,
                        subject,
                        f"{key!r} is not a value of {priority_field}{did_you_mean(key, priorities)}",
                    )
                if key != "*" and priorities is None:
                    ok = False
                    self.add(
                        key_at,
                        subject,
                        "targets per priority need priority_field: (or use * for every record)",
                    )
                try:
                    targets[key] = parse_span(text)
                    if targets[key] <= 0:
                        raise ValueError("a target must be longer than 0")
                except ValueError as exc:
                    ok = False
                    self.add(_vpos(spec["targets"], key, key_at), subject, str(exc))
            metrics.append(
                SlaMetric(
                    name=metric_name,
                    done=done,
                    targets=MappingProxyType(targets),
                    label=Label.of(spec.get("label"), metric_name.replace("_", " ").capitalize()),
                )
            )
        warning: float | int = 0.75
        if raw.get("warning") is not None:
            text = str(raw["warning"]).strip()
            try:
                if text.endswith("%"):
                    warning = float(text[:-1]) / 100
                    if not 0 < warning < 1:
                        raise ValueError("a warning percentage is between 0% and 100%")
                else:
                    warning = parse_span(text)
            except ValueError as exc:
                ok = False
                self.add(
                    _vpos(raw, "warning", where),
                    subject,
                    f"warning: {exc if str(exc) else 'expected 75% or a duration'}",
                )
        hooks = {}
        for key in ("on_warning", "on_breach"):
            if not raw.get(key) and key == "on_warning":
                continue  # a breach is always recorded on the clock, even with no steps
            process_name = f"sla:{name}:{key.removeprefix('on_')}"
            steps = self.build_steps(
                raw.get(key) or [], (), entity, subject, _vpos(raw, key, where), process_name, set()
            )
            if steps is None:
                ok = False
                continue
            process = Process(
                name=process_name,
                entity=entity.name,
                label=Label.of(f"{name}: {key.removeprefix('on_')}"),
                solution=solution,
                triggers=(),
                steps=steps,
                position=_vpos(raw, key, where),
            )
            self.processes[process_name] = process
            for step in process.walk():
                if step.kind == "start":
                    self._starts.append((step, step.spec["process"], process))
            hooks[key] = process_name
        if not ok:
            return None
        return Sla(
            name=name,
            entity=entity.name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            calendar=calendar,
            metrics=tuple(metrics),
            priority_field=priority_field,
            condition=condition,
            pause=pause,
            warning=warning,
            warning_process=hooks.get("on_warning"),
            breach_process=hooks.get("on_breach"),
            enabled=raw.get("enabled", True) is not False,
            position=where,
        )


def _keep(spec: Mapping) -> Mapping:
    """A step's spec as a read-only mapping that still knows its positions (for messages)."""
    return _plain(spec)


# ------------------------------------------------------------------------- shared checks
RECIPIENT_PREFIXES = ("role", "team", "user", "email")


def recipient_problem(
    text: str, entity: Entity | None, entity_of, roles, *, users_only=False
) -> str | None:
    """Why a recipient reference cannot be resolved (None when it can, or needs the database)."""
    if "{{" in text or "{%" in text:  # made from the record when the step runs
        found = template_problems(text, entity, entity_of)
        return f"recipient {text!r}: {found[0]}" if found else None
    prefix, sep, rest = text.partition(":")
    if sep:
        if prefix not in RECIPIENT_PREFIXES:
            return f"unknown recipient kind {prefix!r} (expected role:, team:, user: or email:)"
        if prefix == "role" and rest not in roles:
            return f"unknown role {rest!r}{did_you_mean(rest, roles)}"
        if prefix in ("user", "email") and "@" not in rest:
            return f"{text!r}: expected an email address after {prefix}:"
        if prefix == "email" and users_only:
            return f"{text!r}: an email address is not a user (use user:EMAIL for a user)"
        return None
    if text in ("owner", "initiator"):
        return (
            None
            if entity is not None or text == "initiator"
            else f"{text!r} needs a process on an entity"
        )
    if entity is None:
        return f"{text!r}: a field needs a process on an entity"
    try:  # the users of a related record's children: territory.members.user
        if resolve_members(entity, text, entity_of) is not None:
            return None
    except FilterError as exc:
        return f"recipient {text!r}: {exc.message}"
    try:
        f, _ = resolve_path(entity, text, entity_of)
    except FilterError as exc:
        if through_unknown_entity(entity, text, entity_of):
            return None  # the lookup to an unknown entity is reported at its field
        return f"recipient {text!r}: {exc.message}"
    if f.type == "user" or (not users_only and f.type == "email"):
        return None
    kinds = "a user field" if users_only else "a user or email field"
    return f"recipient {text!r} is a {f.type} field; expected {kinds}"


def _message_or_none(raw) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise ValueError("not a message")
    return raw


@parse_cache.remembered("cron", _message_or_none)
def check_cron(expression: str) -> str | None:
    """Why ``expression`` is not a cron schedule, or None (remembered: croniter is a good
    part of a cold start)."""
    from croniter import croniter

    if not croniter.is_valid(expression):
        return f"{expression!r} is not a cron expression (expected minute hour day month weekday, e.g. '0 8 * * 1-5')"
    return None


def holiday_problem(country: str, subdivision) -> str | None:
    try:
        import holidays
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    supported = holidays.list_supported_countries()
    if country not in supported:
        return f"unknown holiday country {country!r} (expected an ISO code such as RU, US, DE){did_you_mean(country, supported)}"
    if subdivision is not None and str(subdivision) not in supported[country]:
        return f"unknown subdivision {subdivision!r} of {country}"
    return None


def workflow_definitions(
    problems: Problems,
    entities,
    roles,
    documents,
    layer: str,
    rejected=frozenset(),
    reports=None,
    dashboards=None,
) -> WorkflowDefinitions:
    """Compile the workflow documents [(kind, solution, data)] of one catalog build;
    ``rejected`` names entities whose refused documents are reported already; ``reports``
    and ``dashboards`` are the build's compiled ones (for send_report steps)."""
    compiler = WorkflowCompiler(problems, entities, roles, layer, rejected, reports, dashboards)
    for kind, solution, data in documents:
        compiler.collect(kind, solution, data)
    return compiler.build()


WORKFLOW_KINDS = ("process", "sla", "calendars", "templates")
