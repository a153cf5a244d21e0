"""Wizard definitions (``wizards/*.yaml``): their JSON Schema, their cross-checks against
entities, fields, roles, option sets and processes, and the frozen ``Wizard`` the catalog
holds (the engine that runs one is ``xrm.forms.wizard``).

A wizard is a guided multi-step form: named steps of inputs (bound to an entity's field,
plain typed inputs, or a pick among candidate records with "create new"), a condition per
step over the inputs entered before it, an optional review step, and finish actions (create,
update, start a process) run in one transaction through the records service.  A wizard
opened from a record knows it: inputs start from its values (``default`` templates), a
condition on it says when the wizard applies (``open_from.if``), a pick input can offer
the records the picked entity's duplicate rules find for the values entered so far
(``duplicates``), and an update may ``stamp`` read-only fields as the platform.  A wizard
built in Python (the setup wizard) uses the same model with a callable ``finish``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .expressions import template_shape
from .fieldtypes import CoercionError
from .filters import (
    All,
    AnyOf,
    Condition,
    FilterError,
    Not,
    operators_of,
    parse_filter,
    resolve_path,
)
from .labels import Label
from .model import SYSTEM_COLUMNS, Entity, Field, freeze
from .problems import Problems, did_you_mean
from .reports import NamedCompiler, audience_sees
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

NAME = "^[a-z][a-z0-9_]*$"
#: Field types a plain input may have (one the registry parses from a person's text).
INPUT_TYPES = (
    "text",
    "long_text",
    "email",
    "phone",
    "url",
    "integer",
    "decimal",
    "money",
    "percent",
    "boolean",
    "date",
    "datetime",
    "time",
    "choice",
    "multi_choice",
    "lookup",
    "user",
)
#: Names a template of a wizard may use besides the aliases of earlier actions.
TEMPLATE_ROOTS = ("inputs", "record", "user", "now", "today")
ACTION_KINDS = ("create", "update", "start")
#: How many candidates a pick input offers at most.
CANDIDATE_LIMIT = 10
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)


@dataclass(frozen=True, slots=True)
class WizardInput:
    """One input of a step.  ``field`` is what parses, validates and renders it: the bound
    entity field (renamed to the input), or a field made from the input's own type."""

    name: str
    field: Field
    label: Label
    required: bool = False
    default: Any = None
    bound: str | None = None  # "account.name": the entity field it is bound to
    pick: str | None = None  # a pick input: the entity whose records it offers
    candidates: Any = None  # a pick input: a filter (values may be templates), frozen
    or_create: bool = False  # a pick input: "create a new one" may be chosen
    #: a pick input: field of the picked entity -> constant or template; the entity's
    #: duplicate rules find the records likely the same as a record with these values
    duplicates: Any = None
    help: Label | None = None
    #: a ``default`` template over record, user, now, today: filled when the run starts
    prefill: str | None = None
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class WizardStep:
    name: str
    label: Label
    inputs: tuple[WizardInput, ...] = ()
    visible_if: Any = None  # a typed filter tree over the inputs of earlier steps
    review: bool = False  # shows every value entered, with links back to their steps
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class WizardAction:
    """One finish action.  ``kind`` create: a new ``entity`` record; update: the record the
    wizard was opened from (``target`` "record") or an earlier action's (its alias); start:
    the manual ``process`` on ``target``.  ``use`` names a pick input: when a record was
    picked, the create adopts it instead of creating one."""

    kind: str
    entity: str | None = None
    target: str | None = None
    alias: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # field -> constant or template
    condition: Any = None  # ``if``: a typed filter tree over the inputs
    process: str | None = None
    use: str | None = None
    #: update: field -> constant or template, written by the platform in the same write
    #: (read-only fields included) once the user's right to update the record is checked
    stamp: Mapping[str, Any] = field(default_factory=dict)
    #: create: ``record.lines`` or ``<as>.lines``, one record per child (``item``)
    each: str | None = None
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OpenFrom:
    menu: str | None = None  # a solution whose menu offers it
    lists: tuple[str, ...] = ()  # entities whose list pages offer it
    records: tuple[str, ...] = ()  # entities whose record pages offer it (``?from=``)
    #: ``if``: a typed filter tree over the record's entity: the records it applies to
    condition: Any = None
    message: Label | None = None  # why it does not apply to a record the condition refuses


@dataclass(frozen=True, slots=True)
class Wizard:
    name: str
    label: Label
    solution: str
    steps: tuple[WizardStep, ...]
    inputs_entity: Entity  # the inputs as an entity's fields: conditions are typed on it
    actions: tuple[WizardAction, ...] = ()
    roles: tuple[str, ...] = ()  # who may run it (administrators always); empty: everyone
    open_from: OpenFrom = OpenFrom()
    done: str | None = None  # an action's alias or "record": the page the user lands on
    description: Label | None = None
    #: a wizard built in Python: called with the engine's FinishContext instead of actions
    finish: Callable | None = field(default=None, compare=False)
    position: Position | None = field(default=None, compare=False)

    def may_run(self, roles=(), is_admin: bool = False) -> bool:
        return audience_sees(None, self.roles, None, "", roles, is_admin)

    def step(self, name: str) -> WizardStep:
        return next(s for s in self.steps if s.name == name)

    @property
    def inputs(self) -> dict[str, WizardInput]:
        return {i.name: i for s in self.steps for i in s.inputs}

    def step_of(self, input_name: str) -> str | None:
        return next(
            (s.name for s in self.steps if any(i.name == input_name for i in s.inputs)), None
        )


def inputs_entity(name: str, fields: Mapping[str, Field], solution: str = "") -> Entity:
    """The inputs of a wizard as one entity's fields, so its conditions are typed and
    evaluated by the filter language like any record's."""
    return Entity(
        name=f"wizard:{name}",
        label=Label.humanize(name),
        plural=Label.humanize(name),
        fields=MappingProxyType(dict(fields)),
        solution=solution,
    )


def plain_field(wizard: str, name: str, type_name: str, label: Label, **params) -> Field:
    """A field for a plain input (``xrm.forms`` builds Python wizards with it too)."""
    choices = params.pop("choices", ())
    return Field(
        name=name,
        type=type_name,
        label=label,
        entity=f"wizard:{wizard}",
        params=MappingProxyType(params),
        choices=tuple(choices),
    )


def build_wizard(
    name: str,
    label: Label,
    steps: list[WizardStep],
    *,
    finish: Callable,
    solution: str = "platform",
    done: str | None = None,
    roles: tuple[str, ...] = (),
) -> Wizard:
    """A wizard made in Python (no YAML, no pack): plain inputs and a callable finish."""
    fields = {i.name: i.field for s in steps for i in s.inputs}
    return Wizard(
        name=name,
        label=label,
        solution=solution,
        steps=tuple(steps),
        inputs_entity=inputs_entity(name, fields, solution),
        roles=tuple(roles),
        done=done,
        finish=finish,
    )


# ------------------------------------------------------------------------- schema
def wizards_schema(defs: dict, document) -> dict:
    """The JSON Schema of a ``wizards:`` document (``document`` is schemas._document)."""
    name = {"type": "string", "pattern": NAME}
    label = {"$ref": "#/$defs/label"}
    names = {"type": "array", "items": name, "minItems": 1}
    common_input = {
        "input": {**name, "description": "the input's name (templates read inputs.<name>)"},
        "label": label,
        "help": label,
        "required": {"type": "boolean"},
        "default": {
            "description": "the value the input starts with: a constant, or a template over"
            " record (the record opened from), user, now and today"
        },
    }
    bound = {
        "type": "object",
        "properties": {
            **common_input,
            "field": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$",
                "description": "entity.field: type, label, choices and checks from the field",
            },
        },
        "required": ["input", "field"],
        "additionalProperties": False,
    }
    pick = {
        "type": "object",
        "properties": {
            **common_input,
            "pick": {**name, "description": "the entity whose records are offered"},
            "candidates": {
                "$ref": "#/$defs/filter",
                "description": "which records are offered (values may be templates)",
            },
            "or_create": {
                "type": "boolean",
                "description": "offer 'create a new one' (a create action with use: makes it)",
            },
            "duplicates": {
                "type": "object",
                "propertyNames": {"pattern": NAME},
                "minProperties": 1,
                "description": "field -> constant or template: offer the records the picked"
                " entity's duplicate rules find for a record with these values",
            },
        },
        "required": ["input", "pick"],
        "additionalProperties": False,
    }
    plain = {
        "type": "object",
        "properties": {
            **common_input,
            "type": {"enum": list(INPUT_TYPES)},
            "options": {**name, "description": "choice inputs: an option set"},
            "to": {**name, "description": "lookup inputs: the entity it points at"},
            "max_length": {"type": "integer", "minimum": 1},
            "min": {"type": "number"},
            "max": {"type": "number"},
        },
        "required": ["input", "type"],
        "additionalProperties": False,
    }
    an_input = {
        "type": "object",
        "required": ["input"],
        "if": {"required": ["field"]},
        "then": bound,
        "else": {"if": {"required": ["pick"]}, "then": pick, "else": plain},
    }
    step = {
        "type": "object",
        "properties": {
            "name": name,
            "label": label,
            "visible_if": {"$ref": "#/$defs/filter"},
            "review": {"type": "boolean"},
            "fields": {"type": "array", "items": an_input},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    values = {
        "type": "object",
        "propertyNames": {"pattern": NAME},
        "description": "field -> a constant or a template ({{ inputs.x }}, {{ alias.id }})",
    }
    condition = {"$ref": "#/$defs/filter"}
    action = {
        "type": "object",
        "if": {"required": ["create"]},
        "then": {
            "properties": {
                "create": name,
                "as": name,
                "use": {**name, "description": "a pick input: adopt the record it picked"},
                "each": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$",
                    "description": "record.<children field> or <as>.<children field>: one "
                    "record for each child, read as item in the values",
                },
                "values": values,
                "if": condition,
            },
            "required": ["create"],
            "additionalProperties": False,
        },
        "else": {
            "if": {"required": ["update"]},
            "then": {
                "properties": {
                    "update": {**name, "description": "record, or an earlier action's as"},
                    "values": values,
                    "stamp": {
                        **values,
                        "description": "field -> constant or template, set by the platform"
                        " in the same write (read-only fields too)",
                    },
                    "if": condition,
                },
                "required": ["update"],
                "anyOf": [{"required": ["values"]}, {"required": ["stamp"]}],
                "additionalProperties": False,
            },
            "else": {
                "properties": {
                    "start": {**name, "description": "a process with a manual trigger"},
                    "for": {**name, "description": "record, or an earlier action's as"},
                    "if": condition,
                },
                "required": ["start", "for"],
                "additionalProperties": False,
            },
        },
    }
    wizard = {
        "type": "object",
        "properties": {
            "label": label,
            "description": label,
            "roles": names,
            "open_from": {
                "type": "object",
                "properties": {
                    "menu": {**name, "description": "the solution whose menu offers it"},
                    "list": {"anyOf": [name, names], "description": "entities' list pages"},
                    "record": {"anyOf": [name, names], "description": "entities' record pages"},
                    "if": {
                        "$ref": "#/$defs/filter",
                        "description": "the records it applies to (a filter over the record)",
                    },
                    "message": {
                        **label,
                        "description": "why it does not apply to a record the if refuses",
                    },
                },
                "additionalProperties": False,
            },
            "steps": {"type": "array", "items": step, "minItems": 1},
            "finish": {"type": "array", "items": action, "minItems": 1},
            "done": {
                "type": "object",
                "properties": {"open": name},
                "required": ["open"],
                "additionalProperties": False,
            },
        },
        "required": ["label", "steps", "finish"],
        "additionalProperties": False,
    }
    return document(
        "Wizards",
        {
            "wizards": {
                "type": "object",
                "propertyNames": {"pattern": NAME},
                "additionalProperties": wizard,
            }
        },
        ["wizards"],
        defs,
        "wizards.schema.json",
    )


# ------------------------------------------------------------------------- templates
def is_template(value) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def single_expression(value: str) -> str | None:
    """The expression of a template that is one ``{{ ... }}`` (its value keeps its type)."""
    match = _SINGLE.match(value)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return match["expr"]
    return None


def input_names_in(source: str) -> list[str]:
    """The inputs a template reads (``inputs.x``), in order (maps record errors back)."""
    shape = template_shape(source)
    found = [chain[1] for chain in shape.chains if chain[0] == "inputs" and len(chain) > 1]
    return list(dict.fromkeys(found))


def template_problem(source: str, inputs, aliases: Mapping[str, Entity], record) -> str | None:
    """What is wrong with a template of a wizard: syntax, unknown names, unknown inputs,
    unknown fields of ``record`` (the entity opened from, None: none) or of an alias."""
    shape = template_shape(source)
    if shape.syntax:
        return f"template syntax: {shape.syntax}"
    known = set(TEMPLATE_ROOTS) | set(aliases)
    for name in shape.free:
        if name not in known:
            return (
                f"unknown name {name!r} in template"
                f"{did_you_mean(name, [*TEMPLATE_ROOTS, *aliases])}"
                f" (expected inputs, record, user or an earlier action's as)"
            )
        if name == "record" and record is None:
            return "the template reads record, but the wizard is not opened from a record"
    for chain in shape.chains:
        if len(chain) < 2:
            continue
        root, attr = chain[0], chain[1]
        if root == "inputs" and attr not in inputs:
            return f"unknown input {attr!r}{did_you_mean(attr, inputs)}"
        entity = aliases.get(root) if root in aliases else (record if root == "record" else None)
        if entity is not None and attr not in entity.fields and attr not in SYSTEM_COLUMNS:
            return f"{entity.name} has no field {attr!r}{did_you_mean(attr, entity.fields)}"
    return None


def template_leaves(raw):
    """The [path, op, value] leaves of a raw filter, with their container and index."""
    if isinstance(raw, Mapping):
        for value in raw.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                yield from template_leaves(item)
    elif isinstance(raw, list) and raw and isinstance(raw[0], str):
        yield raw
    elif isinstance(raw, list):
        for item in raw:
            yield from template_leaves(item)


# ------------------------------------------------------------------------- checks
class WizardCompiler(NamedCompiler):
    """Checks and compiles the wizards of one catalog build."""

    key, noun = "wizards", "wizard"

    def __init__(self, problems: Problems, entities, roles, processes, option_sets, solutions):
        self.problems = problems
        self.entities = entities
        self.roles = roles
        self.processes = processes
        self.option_sets = option_sets
        self.solutions = solutions
        self.layer = ""
        self.raw: dict[str, tuple[Mapping, str, Position]] = {}

    def build_one(self, name, raw, solution, where) -> Wizard | None:
        subject = f"wizards.{name}"
        before = len(self.problems)
        self.rejected_inputs: set[str] = set()

        def fail(at, message):
            self.problems.add(at, subject, message)

        for index, role in enumerate(raw.get("roles") or ()):
            if role not in self.roles:
                fail(
                    _pos(raw["roles"], index, where),
                    f"unknown role {role!r}{did_you_mean(role, self.roles)}",
                )
        open_from = self.build_open_from(raw, where, fail)
        record = self.entities.get(open_from.records[0]) if len(open_from.records) == 1 else None
        if len(open_from.records) > 1:
            record = None  # several record pages: templates cannot know one entity's fields
        fields: dict[str, Field] = {}
        steps = []
        seen_steps: set[str] = set()
        for index, spec in enumerate(raw["steps"]):
            at = _pos(raw["steps"], index, where)
            step_name = spec["name"]
            if step_name in seen_steps:
                fail(_vpos(spec, "name", at), f"step {step_name!r} is defined twice")
                continue
            seen_steps.add(step_name)
            visible = None
            if spec.get("visible_if") is not None:
                visible = self.condition(
                    spec["visible_if"],
                    fields,
                    name,
                    _vpos(spec, "visible_if", at),
                    fail,
                    f"step {step_name}: visible_if",
                    hint="a step's condition reads inputs of the steps before it",
                )
            inputs = []
            for i, item in enumerate(spec.get("fields") or ()):
                built = self.build_input(
                    name, item, _pos(spec["fields"], i, at), fields, record, fail
                )
                if built is not None:
                    inputs.append(built)
                    fields[built.name] = built.field
                else:  # reported: templates and conditions reading it stay silent
                    self.rejected_inputs.add(str(item.get("input")))
            if not spec.get("review") and not spec.get("fields"):
                fail(at, f"step {step_name!r} has no fields (give it fields, or review: true)")
            steps.append(
                WizardStep(
                    name=step_name,
                    label=Label.of(spec.get("label"), step_name.replace("_", " ").capitalize()),
                    inputs=tuple(inputs),
                    visible_if=visible,
                    review=bool(spec.get("review")),
                    position=at,
                )
            )
        actions, aliases = self.build_actions(name, raw, where, fields, record, open_from, fail)
        done = None
        if raw.get("done"):
            done = raw["done"]["open"]
            if done != "record" and done not in aliases:
                fail(
                    _vpos(raw["done"], "open", where),
                    f"done: unknown action {done!r}{did_you_mean(done, aliases)}"
                    " (expected record or an action's as)",
                )
            elif done == "record" and not open_from.records:
                fail(
                    _vpos(raw["done"], "open", where),
                    "done: open: record needs open_from: record (the wizard has no record)",
                )
        if len(self.problems) > before:
            return None
        return Wizard(
            name=name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            solution=solution,
            steps=tuple(steps),
            inputs_entity=inputs_entity(name, fields, solution),
            actions=tuple(actions),
            roles=tuple(raw.get("roles") or ()),
            open_from=open_from,
            done=done,
            description=Label.of(raw["description"]) if raw.get("description") else None,
            position=where,
        )

    def entity_named(self, entity_name, at, fail, what) -> Entity | None:
        entity = self.entities.get(entity_name)
        if entity is None:
            fail(
                at,
                f"{what}: unknown entity {entity_name!r}{did_you_mean(entity_name, self.entities)}",
            )
        return entity

    def build_open_from(self, raw, where, fail) -> OpenFrom:
        spec = raw.get("open_from") or {}
        menu = spec.get("menu")
        if menu is not None and menu not in self.solutions:
            fail(
                _vpos(spec, "menu", where),
                f"open_from: menu: unknown solution {menu!r}{did_you_mean(menu, self.solutions)}",
            )
        found = {}
        for key in ("list", "record"):
            value = spec.get(key)
            listed = [value] if isinstance(value, str) else list(value or ())
            for entity_name in listed:
                self.entity_named(entity_name, _vpos(spec, key, where), fail, f"open_from: {key}")
            found[key] = tuple(listed)
        condition = None
        if spec.get("if") is not None:
            at = _vpos(spec, "if", where)
            entity = self.entities.get(found["record"][0]) if len(found["record"]) == 1 else None
            if len(found["record"]) != 1:
                fail(at, "open_from: if: needs one entity's records (open_from: record: ENTITY)")
            elif entity is not None:
                try:
                    condition = parse_filter(spec["if"], entity, self.entity_of)
                except FilterError as exc:
                    fail(at, f"open_from: if: {exc.path + ': ' if exc.path else ''}{exc.message}")
        message = Label.of(spec["message"]) if spec.get("message") else None
        if message is not None and spec.get("if") is None:
            fail(
                _vpos(spec, "message", where),
                "open_from: message: says why if refuses a record; there is no if",
            )
        return OpenFrom(
            menu=menu,
            lists=found["list"],
            records=found["record"],
            condition=condition,
            message=message,
        )

    def build_input(self, wizard, item, at, fields, record, fail) -> WizardInput | None:
        name = item["input"]
        if name in fields:
            fail(_vpos(item, "input", at), f"input {name!r} is defined twice")
            return None
        label = Label.of(item["label"]) if item.get("label") else None
        pick = candidates = duplicates = None
        bound = None
        if "field" in item:
            bound = item["field"]
            entity_name, _, field_name = bound.partition(".")
            entity = self.entity_named(entity_name, _vpos(item, "field", at), fail, "field")
            if entity is None:
                return None
            source = entity.fields.get(field_name)
            if source is None:
                fail(
                    _vpos(item, "field", at),
                    f"field: {entity_name} has no field {field_name!r}"
                    f"{did_you_mean(field_name, entity.fields)}",
                )
                return None
            if not source.writable or not source.kind.stored or source.type in ("file", "children"):
                fail(
                    _vpos(item, "field", at),
                    f"field: {bound} is not a field a person enters ({source.type}"
                    f"{', computed' if source.computed else ''}{', read only' if source.read_only else ''})",
                )
                return None
            f = Field(
                name=name,
                type=source.type,
                label=label or source.label,
                entity=f"wizard:{wizard}",
                params=source.params,
                choices=source.choices,
                help=source.help,
            )
            required = item.get("required", source.required)
        elif "pick" in item:
            pick = item["pick"]
            entity = self.entity_named(pick, _vpos(item, "pick", at), fail, "pick")
            if entity is None:
                return None
            candidates = item.get("candidates")
            if candidates is not None and not self.check_candidates(
                candidates, entity, self.known(fields), record, _vpos(item, "candidates", at), fail
            ):
                return None
            duplicates = item.get("duplicates")
            if duplicates is not None and not self.check_duplicates(
                duplicates, entity, self.known(fields), record, _vpos(item, "duplicates", at), fail
            ):
                return None
            f = plain_field(wizard, name, "lookup", label or entity.label, to=pick)
            required = bool(item.get("required", False))
        else:
            type_name = item["type"]
            params: dict[str, Any] = {k: item[k] for k in ("max_length", "min", "max") if k in item}
            if type_name in ("choice", "multi_choice"):
                option_set = self.option_sets.get(item.get("options"))
                if option_set is None:
                    fail(
                        _vpos(item, "options", at) if "options" in item else at,
                        f"input {name!r}: a {type_name} input needs options: an option set"
                        + (
                            f"; unknown option set {item['options']!r}"
                            f"{did_you_mean(item['options'], self.option_sets)}"
                            if "options" in item
                            else ""
                        ),
                    )
                    return None
                params["choices"] = option_set.options
            if type_name == "lookup":
                target = item.get("to")
                if target is None:
                    fail(at, f"input {name!r}: a lookup input needs to: an entity")
                    return None
                if self.entity_named(target, _vpos(item, "to", at), fail, "to") is None:
                    return None
                params["to"] = target
            f = plain_field(wizard, name, type_name, label or Label.humanize(name), **params)
            required = bool(item.get("required", False))
        default = item.get("default")
        prefill = None
        if is_template(default):
            # filled when the run starts, before any input: it reads the record and the user
            problem = template_problem(default, {}, {}, record)
            if problem:
                fail(_vpos(item, "default", at), f"input {name!r}: default: {problem}")
                return None
            prefill, default = default, None
        if default is not None:
            try:
                default = f.kind.coerce(f, default)
            except (CoercionError, TypeError, ValueError) as exc:
                fail(_vpos(item, "default", at), f"input {name!r}: default: {exc}")
                return None
        return WizardInput(
            name=name,
            field=f,
            label=f.label,
            required=bool(required),
            default=freeze(f.kind.to_json(f, default)) if default is not None else None,
            bound=bound,
            pick=pick,
            candidates=freeze(candidates),
            or_create=bool(item.get("or_create", False)),
            duplicates=freeze(dict(duplicates)) if duplicates is not None else None,
            help=Label.of(item["help"]) if item.get("help") else f.help,
            prefill=prefill,
            position=at,
        )

    def check_duplicates(self, raw, entity, fields, record, at, fail) -> bool:
        """A pick input's ``duplicates``: fields of the picked entity that its duplicate
        rules read, each a constant the field takes or a template over the inputs before
        it and the record opened from."""
        if not entity.duplicates:
            fail(
                at, f"duplicates: {entity.name} has no duplicate rules (duplicates: on the entity)"
            )
            return False
        read = {n for rule in entity.duplicates for n in rule.fields}
        for key, value in raw.items():
            where = _vpos(raw, key, at)
            if key not in entity.fields:
                fail(
                    where,
                    f"duplicates: {entity.name} has no field {key!r}{did_you_mean(key, entity.fields)}",
                )
                return False
            if key not in read:
                fail(
                    where,
                    f"duplicates: no duplicate rule of {entity.name} reads {key!r}"
                    f" (the rules read {', '.join(sorted(read))})",
                )
                return False
            if is_template(value):
                problem = template_problem(value, fields, {}, record)
                if problem:
                    fail(where, f"duplicates: {key}: {problem}")
                    return False
            elif value is not None:
                f = entity.fields[key]
                try:
                    f.kind.coerce(f, value)
                except (CoercionError, TypeError, ValueError) as exc:
                    fail(where, f"duplicates: {key}: {exc}")
                    return False
        return True

    def check_candidates(self, raw, entity, fields, record, at, fail) -> bool:
        """A candidates filter: its paths and operators against the picked entity, its
        template values against the inputs before it and the record opened from; the
        other values are coerced like any filter's."""
        for leaf in template_leaves(raw):
            if len(leaf) == 3 and is_template(leaf[2]):
                try:
                    f, _ = resolve_path(entity, leaf[0], self.entity_of)
                except FilterError as exc:
                    fail(at, f"candidates: {exc}")
                    return False
                if leaf[1] not in operators_of(f):
                    fail(
                        at,
                        f"candidates: {leaf[0]}: operator {leaf[1]!r} does not apply to {f.type} fields",
                    )
                    return False
                problem = template_problem(leaf[2], fields, {}, record)
                if problem:
                    fail(at, f"candidates: {leaf[0]}: {problem}")
                    return False
        try:
            parse_filter(_without_templates(raw), entity, self.entity_of)
        except FilterError as exc:
            fail(at, f"candidates: {exc}")
            return False
        return True

    def condition(self, raw, fields, wizard, at, fail, what, hint=""):
        entity = inputs_entity(wizard, fields)
        try:
            tree = parse_filter(raw, entity, self.entity_of)
        except FilterError as exc:
            message = exc.message
            if exc.path.split(".")[0] in self.rejected_inputs:
                return None  # the input's own problem is reported
            if "has no field" in message:
                message = message.replace(f"{entity.name} has no field", "unknown input")
                message += f" ({hint})" if hint else ""
            fail(at, f"{what}: {exc.path + ': ' if exc.path else ''}{message}")
            return None
        for cond in _conditions(tree):
            if cond.lookups or cond.path[0] in SYSTEM_COLUMNS:
                fail(at, f"{what}: {cond.dotted}: a condition reads the inputs themselves")
                return None
        return tree

    def build_actions(self, wizard, raw, where, fields, record, open_from, fail):
        actions = []
        aliases: dict[str, Entity] = {}
        for index, spec in enumerate(raw["finish"]):
            at = _pos(raw["finish"], index, where)
            condition = None
            if spec.get("if") is not None:
                condition = self.condition(
                    spec["if"], fields, wizard, _vpos(spec, "if", at), fail, "if"
                )
            kind = next(k for k in ACTION_KINDS if k in spec)
            if kind == "start":
                actions.append(self.build_start(spec, at, aliases, open_from, condition, fail))
                continue
            if kind == "create":
                entity = self.entity_named(
                    spec["create"], _vpos(spec, "create", at), fail, "create"
                )
                target = None
            else:
                target = spec["update"]
                entity = self.target_entity(
                    target, aliases, open_from, _vpos(spec, "update", at), fail
                )
            use = spec.get("use")
            if use is not None:
                picked = fields.get(use)
                item_pick = (
                    picked.params.get("to")
                    if picked is not None and picked.type == "lookup"
                    else None
                )
                if picked is None:
                    fail(
                        _vpos(spec, "use", at),
                        f"use: unknown input {use!r}{did_you_mean(use, fields)}",
                    )
                elif entity is not None and item_pick != entity.name:
                    fail(
                        _vpos(spec, "use", at),
                        f"use: input {use!r} picks {item_pick or picked.type}, not {entity.name}",
                    )
            values = spec.get("values") or {}
            stamp = spec.get("stamp") or {}
            named = aliases
            if spec.get("each") is not None:
                # item is known even when each is wrong: one message, not one per value
                named = {**aliases, "item": self.each_entity(spec, at, aliases, record, fail)}
            if entity is not None:
                self.check_values(
                    values, entity, fields, named, record, _pos(spec, "values", at), fail
                )
                self.check_values(
                    stamp,
                    entity,
                    fields,
                    aliases,
                    record,
                    _pos(spec, "stamp", at),
                    fail,
                    stamp=True,
                )
            alias = spec.get("as")
            if alias is not None:
                if alias in aliases or alias in TEMPLATE_ROOTS:
                    fail(_vpos(spec, "as", at), f"as: {alias!r} is already used")
                elif entity is not None:
                    aliases[alias] = entity
            actions.append(
                WizardAction(
                    kind=kind,
                    entity=entity.name if entity is not None else None,
                    target=target,
                    alias=alias,
                    values=freeze(dict(values)),
                    condition=condition,
                    use=use,
                    stamp=freeze(dict(stamp)),
                    each=spec.get("each"),
                    position=at,
                )
            )
        return actions, aliases

    def each_entity(self, spec, at, aliases, record, fail) -> Entity | None:
        """The entity of the children a create's ``each`` walks (``record.lines``)."""
        where = _vpos(spec, "each", at)
        root, _, name = spec["each"].partition(".")
        if spec.get("as") is not None:
            fail(_vpos(spec, "as", at), "as: a create with each: makes many records; drop as:")
        if spec.get("use") is not None:
            fail(_vpos(spec, "use", at), "use: a create with each: adopts no picked record")
        if root == "record":
            parent = record
            if parent is None:
                fail(where, "each: the wizard is not opened from a record")
                return None
        elif root in aliases:
            parent = aliases[root]
        else:
            fail(
                where,
                f"each: unknown {root!r}{did_you_mean(root, ['record', *aliases])}"
                " (expected record or an earlier action's as)",
            )
            return None
        f = parent.fields.get(name)
        if f is None or f.type != "children":
            children = [n for n, x in parent.fields.items() if x.type == "children"]
            fail(
                where,
                f"each: {parent.name} has no children field {name!r}{did_you_mean(name, children)}",
            )
            return None
        return self.entities.get(f.params["entity"])

    def target_entity(self, target, aliases, open_from, at, fail) -> Entity | None:
        if target == "record":
            if len(open_from.records) != 1:
                fail(
                    at,
                    "record: the wizard must be opened from one entity's records (open_from: record)",
                )
                return None
            return self.entities.get(open_from.records[0])
        if target not in aliases:
            fail(
                at,
                f"unknown action {target!r}{did_you_mean(target, aliases)} (expected record or an earlier action's as)",
            )
            return None
        return aliases[target]

    def build_start(self, spec, at, aliases, open_from, condition, fail) -> WizardAction:
        name = spec["start"]
        entity = self.target_entity(spec["for"], aliases, open_from, _vpos(spec, "for", at), fail)
        process = self.processes.get(name)
        if process is None:
            fail(
                _vpos(spec, "start", at),
                f"start: unknown process {name!r}{did_you_mean(name, self.processes)}",
            )
        elif process.trigger("manual") is None:
            fail(_vpos(spec, "start", at), f"start: process {name!r} has no manual trigger")
        elif entity is not None and process.entity != entity.name:
            fail(
                _vpos(spec, "start", at),
                f"start: process {name!r} runs on {process.entity} records, not {entity.name}",
            )
        return WizardAction(
            kind="start",
            entity=entity.name if entity is not None else None,
            target=spec["for"],
            process=name,
            condition=condition,
            position=at,
        )

    def check_values(self, values, entity, fields, aliases, record, at, fail, stamp=False):
        what = "stamp" if stamp else "values"
        for key, value in values.items():
            where = _vpos(values, key, at)
            f = entity.fields.get(key)
            if f is None and (stamp or key != "owner"):
                fail(
                    where,
                    f"{what}: {entity.name} has no field {key!r}{did_you_mean(key, entity.fields)}",
                )
                continue
            if stamp and (f.computed or not f.stored or f.type == "file"):
                fail(where, f"stamp: {entity.name}.{key} is not a field the platform can set")
                continue
            if not stamp and f is not None and not f.writable:
                fail(
                    where,
                    f"values: {entity.name}.{key} is computed or read only"
                    + (" (a read-only field is set by stamp:)" if f.read_only else ""),
                )
                continue
            if is_template(value):
                problem = template_problem(value, self.known(fields), aliases, record)
                if problem:
                    fail(where, f"{what}: {key}: {problem}")
            elif f is not None and value is not None:
                try:
                    f.kind.coerce(f, value)
                except (CoercionError, TypeError, ValueError) as exc:
                    fail(where, f"{what}: {key}: {exc}")

    def entity_of(self, name):
        return self.entities.get(name)

    def known(self, fields) -> dict:
        """The inputs a template may read: those built, and those already reported."""
        return {**fields, **dict.fromkeys(self.rejected_inputs)}


def _without_templates(raw):
    """A raw filter with its template leaves removed (for checking the rest)."""
    if isinstance(raw, Mapping):
        out = {}
        for key, value in raw.items():
            if isinstance(value, list):
                kept = [v for v in (_without_templates(x) for x in value) if v is not None]
                out[key] = kept
            else:
                kept_one = _without_templates(value)
                if kept_one is None:
                    return None
                out[key] = kept_one
        return out
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return None if len(raw) == 3 and is_template(raw[2]) else raw
    if isinstance(raw, list):
        return [v for v in (_without_templates(x) for x in raw) if v is not None]
    return raw


def _conditions(node):
    if isinstance(node, Condition):
        yield node
    elif isinstance(node, All | AnyOf):
        for child in node.children:
            yield from _conditions(child)
    elif isinstance(node, Not):
        yield from _conditions(node.child)


def build_wizards(problems, entities, roles, processes, option_sets, solutions, documents, layer):
    """Compile the ``wizards:`` documents [(solution, data)] of one catalog build."""
    compiler = WizardCompiler(problems, entities, roles, processes, option_sets, solutions)
    for solution, data in documents:
        compiler.collect(solution, data, layer)
    return compiler.build()


__all__ = [
    "CANDIDATE_LIMIT",
    "INPUT_TYPES",
    "OpenFrom",
    "Wizard",
    "WizardAction",
    "WizardInput",
    "WizardStep",
    "build_wizard",
    "build_wizards",
    "input_names_in",
    "inputs_entity",
    "is_template",
    "plain_field",
    "single_expression",
    "wizards_schema",
]
