"""Compiling packs and the customization layer into a catalog, with every cross-check.

Packs arrive read and schema-checked (``packs.parse_pack``).  Here they are ordered by their
dependencies, merged (entities, extensions, option sets, views; the customization layer
last, top wins), cross-checked the way Django's checks framework checks settings, and frozen.
All problems are collected; if there is any, nothing is returned.
"""

from __future__ import annotations

import graphlib
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from . import parse_cache
from .bulk import collector_paused
from .catalog import Catalog, Sections
from .duplicates import build_rules
from .expressions import FORMULA_GLOBALS, formula_names, formula_shape
from .fieldtypes import FIELD_TYPES, CoercionError
from .filters import FilterError, parse_filter, resolve_path, through_unknown_entity
from .labels import Label
from .model import (
    ACCOUNT_ENTITY,
    ACCOUNT_SELF,
    SYSTEM_COLUMNS,
    Entity,
    Field,
    Index,
    Option,
    OptionSet,
    Role,
    Rollup,
    Solution,
    Stage,
    StageFlow,
    Validation,
    View,
    default_account_paths,
    frozen_map,
)
from .packs import LATER_KINDS, Document, PackSource
from .problems import Problems, did_you_mean, one_of, yaml_text
from .reserved import PLATFORM_NAMES, reserved_reason
from .schemas import VERSION_PATTERN
from .scoring import build_scoring
from .source import Node, Position, YamlMap
from .source import node_position as _pos
from .source import value_position as _vpos

LAYER = "customization"
DEFAULT_KEYWORDS = {
    "current_user": ("user",),
    "current_account": ("lookup",),  # the user's account (a lookup to account only)
    "today": ("date", "datetime"),
    "now": ("datetime",),
}
COMMON_KEYS = (
    "type",
    "label",
    "help",
    "required",
    "unique",
    "index",
    "searchable",
    "read_only",
    "default",
    "formula",
    "rollup",
    "renamed_from",
)
GROUPABLE = ("choice", "lookup", "user", "boolean")


@dataclass
class _EntitySpec:
    name: str
    solution: str
    doc: Mapping
    fields: dict[str, tuple[Mapping, str, Position]] = field(default_factory=dict)
    #: (rule, solution that defined it, changed by the customization layer)
    validations: list[tuple[Mapping, str, bool]] = field(default_factory=list)
    indexes: list[tuple[Mapping, str]] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    duplicates: list[tuple[Mapping, str]] = field(default_factory=list)
    labels: dict[str, object] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def _verdict(raw) -> str | None:
    if raw not in (None, "invalid version", "invalid range", "unmet"):
        raise ValueError("not a verdict")
    return raw


@parse_cache.remembered("versions", _verdict)
def version_verdict(question: str) -> str | None:
    """``VERSION`` or ``VERSION\0RANGE``: "invalid version", "invalid range", "unmet"
    (the version is outside the range) or None.  Remembered like template shapes, so
    that a start with every answer known does not import packaging."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    version, _, wanted = question.partition("\0")
    try:
        accepted = SpecifierSet(wanted) if wanted else None
    except InvalidSpecifier:
        return "invalid range"
    try:
        parsed = Version(version)
    except InvalidVersion:
        return "invalid version"
    return "unmet" if accepted is not None and parsed not in accepted else None


def order_packs(packs: Sequence[PackSource], problems: Problems) -> list[PackSource]:
    """Packs in dependency order; missing, mismatched and cyclic dependencies are problems."""
    by_name: dict[str, PackSource] = {}
    for pack in packs:
        manifest_pos = _pos(pack.manifest)
        if pack.name in by_name:
            problems.add(
                _vpos(pack.manifest, "solution", manifest_pos),
                pack.name,
                f"solution {pack.name!r} is given twice ({by_name[pack.name].root} and {pack.root})",
            )
            continue
        by_name[pack.name] = pack
        if version_verdict(f"{pack.version}") == "invalid version":
            if not re.match(VERSION_PATTERN, pack.version):
                continue  # the manifest's schema check has reported it already
            problems.add(
                _vpos(pack.manifest, "version", manifest_pos),
                pack.name,
                f"invalid version {pack.version!r}",
            )
    graph = graphlib.TopologicalSorter()
    for pack in by_name.values():
        graph.add(pack.name)
        depends = pack.depends
        for dep, spec in depends.items():
            where = _pos(depends, dep, _pos(pack.manifest))
            if dep not in by_name:
                problems.add(
                    where,
                    pack.name,
                    f"depends on solution {dep!r}, which was not found"
                    f"{did_you_mean(dep, [n for n in by_name if n != pack.name])}",
                )
                continue
            wanted = str(spec) if spec not in (None, "", "*") else ""
            verdict = version_verdict(f"{by_name[dep].version}\0{wanted}")
            if verdict == "invalid range":
                problems.add(
                    where,
                    pack.name,
                    f"invalid version range {spec!r} for {dep!r} (expected e.g. '>=1.0,<2')",
                )
                continue
            if verdict == "unmet":
                problems.add(
                    where,
                    pack.name,
                    f"needs {dep} {spec}, but {dep} is version {by_name[dep].version}",
                )
            graph.add(pack.name, dep)
    try:
        order = list(graph.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = by_name[cycle[0]]
        problems.add(
            _pos(first.manifest, "depends", _pos(first.manifest)),
            first.name,
            f"dependency cycle: {' -> '.join(cycle)}",
        )
        order = list(by_name)
    return [by_name[name] for name in order if name in by_name]


def _closure(packs: Sequence[PackSource]) -> dict[str, set[str]]:
    by_name = {p.name: p for p in packs}
    closure: dict[str, set[str]] = {}

    def deps(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name in closure:
            return closure[name]
        result: set[str] = set()
        for dep in by_name[name].depends if name in by_name else {}:
            if dep in by_name and dep not in seen:
                result |= {dep} | deps(dep, seen | {name})
        closure[name] = result
        return result

    for name in by_name:
        deps(name)
    return closure


class _Builder:
    def __init__(self, problems: Problems, packs: Sequence[PackSource]):
        self.problems = problems
        self.entities: dict[str, _EntitySpec] = {}
        self.option_sets: dict[str, tuple[Mapping, str, Position]] = {}
        self.views: dict[str, tuple[Mapping, str, Position]] = {}
        self.roles: dict[str, tuple[Mapping, str, Position]] = {}
        self.forms: dict[str, tuple[Mapping, str, Position]] = {}
        # a pack's form the customization layer replaced (its extensions are checked on it)
        self.pack_forms: dict[str, tuple[Mapping, str, Position]] = {}
        self.form_extensions: dict[str, tuple[Mapping, str, Position]] = {}
        self.solution_labels = {
            p.name: Label.of(p.manifest.get("label"), p.name.capitalize()) for p in packs
        }
        self.workflow: list[tuple[str, str, Mapping]] = []  # (kind, solution, document)
        self.reports: list[tuple[str, Mapping]] = []  # (solution, document)
        self.dashboards: list[tuple[str, Mapping]] = []  # (solution, document)
        self.pack_data: list[tuple[str, str, Mapping]] = []  # (data|demo, solution, document)
        self.scenarios: list[tuple[str, Mapping]] = []  # (solution, tests document)
        self.wizards: list[tuple[str, Mapping]] = []  # (solution, document)
        self.web_forms: list[tuple[str, Mapping]] = []  # (solution, document)
        self.rule_changes: list[Mapping] = []  # validation: documents of the layer
        self.depends = _closure(packs)
        self.depends[LAYER] = set(self.depends) | {p.name for p in packs}
        self.rejected: set[str] = set().union(*(p.rejected for p in packs))

    # ------------------------------------------------------------------ merging
    def add(self, solution: str, document: Document) -> None:
        data = document.data
        handler = getattr(self, f"_add_{document.kind}")
        handler(solution, data)

    def _owned_elsewhere(
        self, what: str, name: str, owner: str, solution: str, where: Position
    ) -> bool:
        if owner == solution and solution != LAYER:
            self.problems.add(
                where, name, f"{what} {name!r} is defined twice in solution {solution!r}"
            )
            return True
        if solution == LAYER:
            return False  # the customization layer may redefine; top wins
        self.problems.add(
            where,
            name,
            f"{what} {name!r} is already defined by solution {owner!r} "
            f"(use 'extend: {name}' to add to it)"
            if what == "entity"
            else f"{what} {name!r} is already defined by solution {owner!r}",
        )
        return True

    def _add_entity(self, solution: str, data: Mapping) -> None:
        name = data["entity"]
        where = _vpos(data, "entity")
        if name in self.entities:
            if self._owned_elsewhere("entity", name, self.entities[name].solution, solution, where):
                return
            self._merge_into(self.entities[name], solution, data)
            return
        spec = _EntitySpec(name=name, solution=solution, doc=data)
        self.entities[name] = spec
        self._merge_into(spec, solution, data, new=True)

    def _add_extend(self, solution: str, data: Mapping) -> None:
        name = data["extend"]
        where = _vpos(data, "extend")
        spec = self.entities.get(name)
        if spec is None and name in self.rejected:
            return  # its own document's errors are reported; do not echo them here
        if spec is None:
            self.problems.add(
                where, name, f"extends unknown entity {name!r}{did_you_mean(name, self.entities)}"
            )
            return
        if spec.solution != solution and spec.solution not in self.depends.get(solution, set()):
            self.problems.add(
                where,
                name,
                f"extends {name!r} of solution {spec.solution!r}, which solution {solution!r} does not depend on",
            )
            return
        self._merge_into(spec, solution, data)

    def _merge_into(
        self, spec: _EntitySpec, solution: str, data: Mapping, new: bool = False
    ) -> None:
        for key in (
            "label",
            "plural",
            "description",
            "icon",
            "title",
            "audit",
            "navigation",
            "stages",
        ):
            if key in data:
                spec.labels[key] = (data[key], _vpos(data, key))
        fields = data.get("fields") or {}
        for fname, fspec in fields.items():
            where = _pos(fields, fname)
            if fname in spec.fields and not new:
                previous = spec.fields[fname]
                if solution != LAYER:
                    self.problems.add(
                        where,
                        f"{spec.name}.{fname}",
                        f"field {fname!r} is already defined by solution {previous[1]!r}",
                    )
                    continue
                merged = _overlay(previous[0], fspec)
                spec.fields[fname] = (merged, previous[1], previous[2])
                spec.removed.discard(fname)  # defined again after a remove
                continue
            spec.fields[fname] = (fspec, solution, where)
            spec.removed.discard(fname)
        for removed in data.get("remove") or ():
            spec.removed.add(removed)
        for item in data.get("validations") or ():
            self._add_rule(spec, solution, item)
        for item in data.get("indexes") or ():
            spec.indexes.append((item, solution))
        for item in data.get("search") or ():
            if item not in spec.search:
                spec.search.append(item)
        for item in data.get("duplicates") or ():
            spec.duplicates.append((item, solution))

    def _add_rule(self, spec: _EntitySpec, solution: str, item: Mapping) -> None:
        """A validation rule joins its entity; a named one is unique there, and the
        customization layer's rule of a name already defined takes its place (top wins)."""
        name = item.get("name")
        for index, (old, owner, _changed) in enumerate(spec.validations):
            if name is None or old.get("name") != name:
                continue
            if solution == LAYER:
                spec.validations[index] = (item, owner, True)
            else:
                self.problems.add(
                    _vpos(item, "name", _pos(item)),
                    f"{spec.name}.validations",
                    f"validation rule {name!r} is "
                    + (
                        f"defined twice in solution {owner!r}"
                        if owner == solution
                        else f"already defined by solution {owner!r}"
                    ),
                )
            return
        spec.validations.append((item, solution, solution == LAYER))

    def _add_validation(self, solution: str, data: Mapping) -> None:
        if solution != LAYER:
            self.problems.add(
                _vpos(data, "validation"),
                str(data["validation"]),
                "a validation rule is changed in the customization layer (the admin area, or "
                "an exported customization pack); a pack changes its own rules in its "
                "entity documents",
            )
            return
        self.rule_changes.append(data)

    def apply_rule_changes(self) -> None:
        """``validation: ENTITY.NAME`` documents of the customization layer, in the layer's
        order: each changes the keys it gives of the named rule (message, when, fields,
        enabled); a rule must have a name to be changed."""
        for data in self.rule_changes:
            key = str(data["validation"])
            where = _vpos(data, "validation")
            entity_name, _dot, rule = key.partition(".")
            spec = self.entities.get(entity_name)
            if spec is None:
                if entity_name not in self.rejected:
                    self.problems.add(
                        where,
                        key,
                        f"unknown entity {entity_name!r}{did_you_mean(entity_name, self.entities)}",
                    )
                continue
            names = [str(i["name"]) for i, _s, _c in spec.validations if i.get("name")]
            index = next(
                (n for n, (i, _s, _c) in enumerate(spec.validations) if i.get("name") == rule),
                None,
            )
            if index is None:
                self.problems.add(
                    where,
                    key,
                    f"{entity_name} has no validation rule named {rule!r}"
                    f"{did_you_mean(rule, names)} "
                    + (
                        f"(its named rules: {', '.join(names)})"
                        if names
                        else "(none of its rules has a name:, and only a named rule can be changed)"
                    ),
                )
                continue
            if not set(data) - {"validation"}:
                self.problems.add(
                    where, key, "changes nothing: give message, when, fields or enabled"
                )
                continue
            item, owner, _changed = spec.validations[index]
            spec.validations[index] = (_changed_rule(item, data, key), owner, True)

    def _add_option_sets(self, solution: str, data: Mapping) -> None:
        sets = data["option_sets"]
        for name, spec in sets.items():
            where = _pos(sets, name)
            if name in self.option_sets and self._owned_elsewhere(
                "option set", name, self.option_sets[name][1], solution, where
            ):
                continue
            self.option_sets[name] = (spec, solution, where)

    def _add_views(self, solution: str, data: Mapping) -> None:
        views = data["views"]
        for name, spec in views.items():
            where = _pos(views, name)
            if name in self.views and self._owned_elsewhere(
                "view", name, self.views[name][1], solution, where
            ):
                continue
            self.views[name] = (spec, solution, where)

    def _add_roles(self, solution: str, data: Mapping) -> None:
        roles = data["roles"]
        for name, spec in roles.items():
            where = _pos(roles, name)
            if name in self.roles and self._owned_elsewhere(
                "role", name, self.roles[name][1], solution, where
            ):
                continue
            self.roles[name] = (spec, solution, where)

    def _add_workflow(self, kind: str, solution: str, data: Mapping) -> None:
        self.workflow.append((kind, solution, data))

    def _add_process(self, solution: str, data: Mapping) -> None:
        self._add_workflow("process", solution, data)

    def _add_sla(self, solution: str, data: Mapping) -> None:
        self._add_workflow("sla", solution, data)

    def _add_calendars(self, solution: str, data: Mapping) -> None:
        self._add_workflow("calendars", solution, data)

    def _add_templates(self, solution: str, data: Mapping) -> None:
        self._add_workflow("templates", solution, data)

    def _add_reports(self, solution: str, data: Mapping) -> None:
        self.reports.append((solution, data))

    def _add_data(self, solution: str, data: Mapping) -> None:
        self.pack_data.append(("data", solution, data))  # written by the install, not kept

    def _add_demo(self, solution: str, data: Mapping) -> None:
        self.pack_data.append(("demo", solution, data))

    def _add_tests(self, solution: str, data: Mapping) -> None:
        self.scenarios.append((solution, data))  # run by xrm solution test, not kept

    def _add_dashboards(self, solution: str, data: Mapping) -> None:
        self.dashboards.append((solution, data))

    def _add_wizards(self, solution: str, data: Mapping) -> None:
        self.wizards.append((solution, data))

    def _add_web_forms(self, solution: str, data: Mapping) -> None:
        self.web_forms.append((solution, data))

    def _add_forms(self, solution: str, data: Mapping) -> None:
        forms = data["forms"]
        for name, spec in forms.items():
            where = _pos(forms, name)
            if name in self.form_extensions:
                self._owned_elsewhere("form", name, self.form_extensions[name][1], solution, where)
                if solution == LAYER:
                    self.problems.add(
                        where,
                        f"forms.{name}",
                        f"{name!r} is an extension of solution "
                        f"{self.form_extensions[name][1]!r}; change the form it extends",
                    )
                continue
            if "extend" in spec:
                if solution == LAYER:
                    self.problems.add(
                        _vpos(spec, "extend", where),
                        f"forms.{name}",
                        "the customization layer changes a form by writing it whole; "
                        "extend belongs in a pack",
                    )
                elif name not in self.forms or not self._owned_elsewhere(
                    "form", name, self.forms[name][1], solution, where
                ):
                    self.form_extensions[name] = (spec, solution, where)
                continue
            if name in self.forms:
                if self._owned_elsewhere("form", name, self.forms[name][1], solution, where):
                    continue
                if self.forms[name][1] != LAYER:
                    self.pack_forms[name] = self.forms[name]
            self.forms[name] = (spec, solution, where)

    # ------------------------------------------------------------------ freezing
    def build_option_sets(self) -> dict[str, OptionSet]:
        result = {}
        for name, (spec, solution, where) in self.option_sets.items():
            options = self._options(spec["options"], name)
            result[name] = OptionSet(
                name=name,
                label=Label.of(spec.get("label"), name.replace("_", " ").capitalize()),
                options=options,
                solution=solution,
                position=where,
            )
        return result

    def _options(self, items, subject: str) -> tuple[Option, ...]:
        options, seen = [], set()
        for index, item in enumerate(items):
            if isinstance(item, str):
                value, label, color = item, Label.humanize(item), None
            else:
                value = item["value"]
                label = Label.of(item.get("label"), value.replace("_", " ").capitalize())
                color = item.get("color")
            if value in seen:
                self.problems.add(_pos(items, index), subject, f"option {value!r} is listed twice")
                continue
            seen.add(value)
            options.append(Option(value=value, label=label, color=color))
        return tuple(options)

    def build_fields(
        self, spec: _EntitySpec, option_sets: Mapping[str, OptionSet]
    ) -> dict[str, Field]:
        fields: dict[str, Field] = {}
        for fname, (raw, solution, where) in spec.fields.items():
            if fname in spec.removed:
                continue
            subject = f"{spec.name}.{fname}"
            reason = reserved_reason(fname)
            if fname in SYSTEM_COLUMNS:
                self.problems.add(
                    where,
                    subject,
                    f"{fname!r} is a system column every entity has; choose another name",
                )
                continue
            if reason:
                self.problems.add(
                    where, subject, f"field name {fname!r} is {reason}; choose another name"
                )
                continue
            type_name = raw["type"]
            params = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
            choices: tuple[Option, ...] = ()
            if type_name in ("choice", "multi_choice"):
                choices = self._choices(raw, subject, option_sets)
            rollup = None
            if raw.get("rollup") is not None:
                rollup = _rollup(raw["rollup"])
            formula = raw.get("formula")
            if type_name == "formula":
                formula = raw.get("expression")
            fields[fname] = Field(
                name=fname,
                type=type_name,
                label=Label.of(raw.get("label"), fname.replace("_", " ").capitalize()),
                entity=spec.name,
                required=bool(raw.get("required", False)),
                unique=bool(raw.get("unique", False)),
                indexed=bool(raw.get("index", False)),
                searchable=bool(raw.get("searchable", False)) or fname in spec.search,
                read_only=bool(raw.get("read_only", False)),
                default=raw.get("default"),
                help=Label.of(raw["help"]) if raw.get("help") else None,
                params=MappingProxyType(_plain(params)),
                formula=formula,
                rollup=rollup,
                choices=choices,
                renamed_from=raw.get("renamed_from"),
                solution=solution,
                position=where,
            )
            if raw.get("renamed_from") in spec.fields and raw["renamed_from"] not in spec.removed:
                self.problems.add(
                    _vpos(raw, "renamed_from", where),
                    subject,
                    f"renamed_from {raw['renamed_from']!r} names a field the entity still has",
                )
        return fields

    def _choices(self, raw: Mapping, subject: str, option_sets: Mapping[str, OptionSet]):
        options = raw["options"]
        if isinstance(options, str):
            found = option_sets.get(options)
            if found is None:
                self.problems.add(
                    _vpos(raw, "options"),
                    subject,
                    f"unknown option set {options!r}{did_you_mean(options, option_sets)}",
                )
                return ()
            return found.options
        return self._options(options, subject)

    def build_entity(self, spec: _EntitySpec, fields: dict[str, Field]) -> Entity:
        doc = spec.doc
        labels = {k: v[0] for k, v in spec.labels.items()}
        label = Label.of(labels.get("label"), spec.name.replace("_", " ").capitalize())
        stages = None
        if labels.get("stages"):
            raw = labels["stages"]
            steps = {}
            for step_name, step in raw["steps"].items():
                step = step or {}
                steps[step_name] = Stage(
                    name=step_name,
                    probability=step.get("probability"),
                    closed=step.get("closed"),
                    requires=tuple(step.get("requires") or ()),
                    next=tuple(step["next"]) if step.get("next") is not None else None,
                    roles=tuple(step.get("roles") or ()),
                )
            stages = StageFlow(
                field=raw["field"],
                steps=MappingProxyType(steps),
                probability_field=raw.get("probability_field"),
            )
        indexes = []
        for item, _solution in spec.indexes:
            columns = tuple(item["fields"])
            if spec.removed.intersection(columns):
                continue
            name = item.get("name") or f"ix_{spec.name}_{'_'.join(columns)}"[:60]
            indexes.append(Index(name=name, fields=columns, unique=bool(item.get("unique", False))))
        return Entity(
            name=spec.name,
            label=label,
            plural=Label.of(labels.get("plural")) if labels.get("plural") else label,
            fields=MappingProxyType(fields),
            solution=spec.solution,
            title=labels.get("title"),
            description=Label.of(labels["description"]) if labels.get("description") else None,
            icon=labels.get("icon"),
            stages=stages,
            indexes=tuple(indexes),
            search=tuple(f for f in spec.search if f in fields),
            audit=bool(labels.get("audit", True)),
            navigation=bool(labels.get("navigation", True)),
            position=_pos(doc),
            duplicates=build_rules(
                spec.name, spec.duplicates, fields, spec.removed, self.problems.add, _pos(doc)
            ),
        )


def _changed_rule(rule: Mapping, change: Mapping, key: str) -> Mapping:
    """A validation rule with a layer document's keys on top, each key keeping the place
    it was written (the pack's file or the change's), so messages point at the right one."""
    merged = YamlMap()
    positions: dict = {}
    for source in (rule, change):
        for name, value in source.items():
            if name == "validation":
                continue
            merged[name] = value
            if isinstance(source, Node):
                positions[name] = source.at(name)
                positions[("value", name)] = source.value_at(name)
            else:  # stored by the platform: no file to point at
                positions.pop(name, None)
                positions.pop(("value", name), None)
    merged.position = (
        change.position
        if isinstance(change, Node)
        else Position(f"customization layer (validation: {key})", 1, 1)
    )
    merged.positions = positions
    return merged


def _overlay(base: Mapping, top: Mapping) -> Mapping:
    merged = dict(base)
    merged.update(top)
    return merged


def _plain(value):
    """YAML containers as plain, hashable-friendly Python values."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _rollup(raw: Mapping) -> Rollup:
    aggregate = next((k for k in ("sum", "avg", "min", "max", "count") if k in raw), "count")
    target = raw.get(aggregate) if aggregate != "count" else None
    return Rollup(
        children=raw["children"], aggregate=aggregate, field=target, filter=raw.get("filter")
    )


# ---------------------------------------------------------------------- cross-checks
class _Checker:
    def __init__(self, problems: Problems, entities: Mapping[str, Entity], builder: _Builder):
        self.problems = problems
        self.entities = entities
        self.builder = builder

    def entity_of(self, name):
        return self.entities.get(name)

    def unknown(self, name) -> bool:
        """Not defined anywhere; an entity whose document was refused is not reported again."""
        return name not in self.entities and name not in self.builder.rejected

    def follows_on(self, entity: Entity, exc: FilterError) -> bool:
        """A path error caused by a lookup to an unknown entity, which its field reports."""
        return bool(exc.path) and through_unknown_entity(entity, exc.path, self.entity_of)

    def run(self, views: Mapping[str, tuple[Mapping, str, Position]]) -> dict[str, Entity]:
        final = {}
        for entity in self.entities.values():
            spec = self.builder.entities[entity.name]
            self.check_entity(entity, spec)
            final[entity.name] = replace(
                entity,
                validations=self.validations(entity, spec),
                scoring=self.scoring(entity, spec),
            )
        self.entities = final
        return final

    def add(self, where, subject, message):
        self.problems.add(where, subject, message)

    def raw(self, entity: Entity, fname: str) -> Mapping:
        return self.builder.entities[entity.name].fields[fname][0]

    def check_entity(self, entity: Entity, spec: _EntitySpec) -> None:
        where = _vpos(spec.doc, "entity") if "entity" in spec.doc else _pos(spec.doc)
        reason = reserved_reason(entity.name)
        if reason or entity.name in PLATFORM_NAMES:
            self.add(
                where,
                entity.name,
                f"entity name {entity.name!r} is {reason or 'kept by the platform'}; choose another name",
            )
        for each in entity.fields.values():
            self.check_field(entity, each)
        self.check_formula_cycles(entity)
        if entity.title and entity.title not in entity.fields:
            self.add(
                _vpos(spec.doc, "title", where),
                entity.name,
                f"title names unknown field {entity.title!r}{did_you_mean(entity.title, entity.fields)}",
            )
        for name in spec.search:
            if name in spec.removed:
                continue  # a removed field leaves search quietly (build_entity drops it)
            if name not in entity.fields:
                self.add(
                    where,
                    entity.name,
                    f"search names unknown field {name!r}{did_you_mean(name, entity.fields)}",
                )
            elif entity.fields[name].kind.json_type != "string":
                self.add(
                    where,
                    entity.name,
                    f"search field {name!r} is {entity.fields[name].type}, not text",
                )
        for item, _solution in spec.indexes:
            if spec.removed.intersection(item["fields"]):
                continue  # dropped with the removed field (build_entity)
            for index, name in enumerate(item["fields"]):
                target = entity.fields.get(name)
                if target is None and name not in SYSTEM_COLUMNS:
                    self.add(
                        _pos(item["fields"], index, where),
                        entity.name,
                        f"index names unknown field {name!r}{did_you_mean(name, entity.fields)}",
                    )
                elif target is not None and not target.stored:
                    self.add(
                        _pos(item["fields"], index, where),
                        entity.name,
                        f"index names {name!r}, which has no column ({target.type})",
                    )
        if entity.stages:
            self.check_stages(entity, spec)

    def check_field(self, entity: Entity, field: Field) -> None:
        subject = f"{entity.name}.{field.name}"
        raw = self.raw(entity, field.name)
        if field.type in ("lookup", "many_to_many"):
            target = field.params.get("to")
            if self.unknown(target):
                self.add(
                    _vpos(raw, "to", field.position),
                    subject,
                    f"points at unknown entity {target!r}{did_you_mean(target, self.entities)}",
                )
        if field.type == "any_lookup":
            for index, target in enumerate(field.params.get("to") or ()):
                if self.unknown(target):
                    self.add(
                        _pos(raw.get("to"), index, field.position),
                        subject,
                        f"points at unknown entity {target!r}{did_you_mean(target, self.entities)}",
                    )
        if field.type == "children":
            self.check_children(entity, field, raw, subject)
        if field.params.get("hierarchy") and field.params.get("to") != entity.name:
            # a hierarchy is a lookup of an entity to itself (account.parent, contact.reports_to)
            self.add(
                _vpos(raw, "hierarchy", field.position),
                subject,
                f"hierarchy: true needs a lookup to {entity.name} itself (it points at {field.params.get('to')!r})",
            )
        if field.required and field.params.get("on_delete") == "set_null":
            self.add(
                _vpos(raw, "on_delete", field.position),
                subject,
                "a required lookup cannot use on_delete: set_null (use restrict or cascade)",
            )
        if field.required and field.computed:
            self.add(field.position, subject, "a computed field cannot be required")
        if field.unique and not field.stored:
            self.add(
                field.position, subject, f"{field.type} fields have no column and cannot be unique"
            )
        if field.default is not None:
            self.check_default(field, raw, subject)
        if field.formula is not None:
            self.check_formula(entity, field, raw, subject)
        if field.rollup is not None:
            self.check_rollup(entity, field, raw, subject)
        if field.type == "rollup" and field.rollup is None:
            self.add(
                field.position, subject, "a rollup field needs 'rollup: {children: ..., sum: ...}'"
            )

    def check_children(self, entity, field, raw, subject):
        child_name, via = field.params.get("entity"), field.params.get("via")
        child = self.entities.get(child_name)
        if child is None:
            if not self.unknown(child_name):
                return
            self.add(
                _vpos(raw, "entity", field.position),
                subject,
                f"children of unknown entity {child_name!r}{did_you_mean(child_name, self.entities)}",
            )
            return
        back = child.fields.get(via)
        if back is None:
            self.add(
                _vpos(raw, "via", field.position),
                subject,
                f"{child_name} has no field {via!r}{did_you_mean(via, child.fields)}",
            )
        elif back.type != "lookup" or back.params.get("to") != entity.name:
            self.add(
                _vpos(raw, "via", field.position),
                subject,
                f"{child_name}.{via} must be a lookup to {entity.name} (it is a {back.type}{' to ' + str(back.target) if back.target else ''})",
            )

    def check_default(self, field: Field, raw, subject):
        where = _vpos(raw, "default", field.position)
        default = field.default
        if isinstance(default, str) and default in DEFAULT_KEYWORDS:
            if field.type not in DEFAULT_KEYWORDS[default]:
                self.add(
                    where, subject, f"default {default!r} does not apply to {field.type} fields"
                )
            elif default == "current_account" and field.params.get("to") != ACCOUNT_ENTITY:
                self.add(
                    where, subject, f"default {default!r} applies to lookups to {ACCOUNT_ENTITY}"
                )
            return
        if field.computed:
            self.add(where, subject, "a computed field has no default")
            return
        try:
            value = field.coerce(_plain(default) if not isinstance(default, str) else default)
        except CoercionError as exc:
            self.add(where, subject, f"default {yaml_text(default)} does not fit: {exc.message}")
            return
        if value is None and default not in (None, ""):
            self.add(where, subject, f"default {yaml_text(default)} does not fit this field")

    def check_formula(self, entity: Entity, field: Field, raw, subject):
        key = "expression" if field.type == "formula" else "formula"
        where = _vpos(raw, key, field.position)
        shape = formula_shape(field.formula)
        if shape.syntax:
            self.add(where, subject, shape.syntax)
            return
        known = set(entity.fields) | set(SYSTEM_COLUMNS)
        for name in sorted(set(shape.names) - known - FORMULA_GLOBALS):
            self.add(
                where, subject, f"formula uses unknown field {name!r}{did_you_mean(name, known)}"
            )
        for name in shape.arithmetic:
            other = entity.fields.get(name)
            if other is not None and not (
                other.kind.numeric or other.kind.temporal or other.type in ("formula",)
            ):
                self.add(
                    where,
                    subject,
                    f"formula does arithmetic on {name!r}, which is {other.type}, not a number or date",
                )
            if other is not None and other.type in ("children", "many_to_many"):
                self.add(
                    where, subject, f"formula uses {name!r}, which holds many records; use a rollup"
                )
        for name, attribute in shape.attributes:
            if name in entity.fields:
                self.add(
                    where,
                    subject,
                    f"formula reads {name}.{attribute}: formulas use this record's own fields only",
                )

    def check_formula_cycles(self, entity: Entity) -> None:
        graph: dict[str, set[str]] = {}
        for each in entity.fields.values():
            if each.formula is None:
                continue
            graph[each.name] = {
                n
                for n in formula_names(each.formula)
                if n in entity.fields and entity.fields[n].formula is not None
            }
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            first = entity.fields[cycle[0]]
            self.add(
                first.position,
                f"{entity.name}.{first.name}",
                f"formulas form a cycle: {' -> '.join(cycle)}",
            )

    def check_rollup(self, entity: Entity, field: Field, raw, subject):
        rollup = field.rollup
        where = _vpos(raw, "rollup", field.position)
        children = entity.fields.get(rollup.children)
        if children is None or children.type != "children":
            self.add(
                where,
                subject,
                f"rollup over {rollup.children!r}, which is not a children field of {entity.name}{did_you_mean(rollup.children, [f.name for f in entity.fields.values() if f.type == 'children'])}",
            )
            return
        child = self.entities.get(children.params.get("entity"))
        if child is None:
            return
        if rollup.aggregate != "count":
            target = child.fields.get(rollup.field)
            if target is None:
                self.add(
                    where,
                    subject,
                    f"rollup {rollup.aggregate} of unknown field {child.name}.{rollup.field}{did_you_mean(rollup.field, child.fields)}",
                )
            elif (
                rollup.aggregate in ("sum", "avg")
                and not target.kind.numeric
                and target.type not in ("formula",)
            ):
                self.add(
                    where,
                    subject,
                    f"cannot {rollup.aggregate} {child.name}.{rollup.field}, which is {target.type}, not a number",
                )
            elif (
                rollup.aggregate in ("sum", "avg")
                and target.type == "formula"
                and target.params.get("result") not in ("integer", "decimal", "money", "percent")
            ):
                self.add(
                    where,
                    subject,
                    f"cannot {rollup.aggregate} {child.name}.{rollup.field}, a non-numeric formula",
                )
            elif field.type != "rollup" and not field.kind.numeric and not field.kind.temporal:
                self.add(where, subject, f"a {field.type} field cannot hold a rollup")
        if rollup.filter is not None:
            try:
                parse_filter(rollup.filter, child, self.entity_of)
            except FilterError as exc:
                self.add(where, subject, f"rollup filter: {exc}")

    def check_stages(self, entity: Entity, spec: _EntitySpec) -> None:
        raw, where = spec.labels["stages"]
        flow = entity.stages
        field = entity.fields.get(flow.field)
        if field is None or field.type != "choice":
            self.add(
                _vpos(raw, "field", where),
                entity.name,
                f"stages need a choice field; {flow.field!r} is {'unknown' if field is None else field.type}{did_you_mean(flow.field, entity.fields) if field is None else ''}",
            )
            return
        if flow.probability_field is not None:
            target = entity.fields.get(flow.probability_field)
            if target is None or not target.kind.numeric or not target.writable:
                self.add(
                    _vpos(raw, "probability_field", where),
                    entity.name,
                    f"probability_field {flow.probability_field!r} must be a writable number field{did_you_mean(flow.probability_field, entity.fields) if target is None else ''}",
                )
        steps = raw["steps"]
        for name, stage in flow.steps.items():
            step_where = _pos(steps, name, where)
            step_raw = steps[name] or {}
            if name not in field.choice_values:
                self.add(
                    step_where,
                    f"{entity.name}.stages",
                    f"stage {name!r} is not an option of {flow.field}{did_you_mean(name, field.choice_values)}",
                )
            for index, required in enumerate(stage.requires):
                if required not in entity.fields:
                    self.add(
                        _pos(step_raw.get("requires"), index, step_where),
                        f"{entity.name}.stages.{name}",
                        f"requires unknown field {required!r}{did_you_mean(required, entity.fields)}",
                    )
            for index, target in enumerate(stage.next or ()):
                if target not in flow.steps:
                    self.add(
                        _pos(step_raw.get("next"), index, step_where),
                        f"{entity.name}.stages.{name}",
                        f"next names unknown stage {target!r}{did_you_mean(target, flow.steps)}",
                    )

    def scoring(self, entity: Entity, spec: _EntitySpec):
        raw = spec.doc.get("scoring")
        if raw is None:
            return None
        return build_scoring(
            raw,
            entity,
            self.entity_of,
            self.add,
            lambda exc: self.follows_on(entity, exc),
        )

    def validations(self, entity: Entity, spec: _EntitySpec) -> tuple[Validation, ...]:
        result = []
        for item, solution, changed in spec.validations:
            where = _vpos(item, "when", _pos(item))
            try:
                tree = parse_filter(item["when"], entity, self.entity_of)
            except FilterError as exc:
                if not self.follows_on(entity, exc):
                    self.add(where, f"{entity.name}.validations", str(exc))
                continue
            fields = tuple(item.get("fields") or ())
            for name in fields:
                if name not in entity.fields:
                    self.add(
                        _vpos(item, "fields", where),
                        f"{entity.name}.validations",
                        f"names unknown field {name!r}{did_you_mean(name, entity.fields)}",
                    )
            if not fields:  # attach the message to the fields the rule mentions
                from .filters import conditions_of

                fields = tuple(dict.fromkeys(c.path[0] for c in conditions_of(tree)))
            result.append(
                Validation(
                    when=tree,
                    message=Label.of(item["message"]),
                    fields=fields,
                    name=item.get("name"),
                    enabled=item.get("enabled", True) is not False,
                    solution=solution,
                    customized=changed,
                    position=where,
                )
            )
        return tuple(result)

    def _own_fields(self, entity_name: str, names, where, subject: str) -> tuple[str, ...]:
        """``own: [owner, agent]``: the entity's user fields that make a record one's own."""
        entity = self.entities.get(entity_name)
        if entity_name == "*" or entity is None:
            self.add(where, subject, "own fields are named per entity, not under '*'")
            return ()
        users = [n for n, f in entity.fields.items() if f.type == "user"]
        result = []
        for name in names:
            if name == "owner" or name in users:
                result.append(name)
            elif name in entity.fields:
                kind = entity.fields[name].type
                self.add(
                    where,
                    subject,
                    f"{entity_name}.{name} is a {kind} field; own names user fields (or owner)",
                )
            else:
                self.add(
                    where,
                    subject,
                    f"{entity_name} has no user field {name!r}"
                    f"{did_you_mean(name, ['owner', *users])}",
                )
        return tuple(result)

    def _account_paths(self, entity_name: str, rules, where, subject: str) -> tuple[str, ...]:
        """``account: [partner_account, opportunity.account]``: the lookup paths that end at
        the account a record belongs to, for the account scope (``id``: the account record
        itself).  Without them, the entity's default must exist."""
        at = _pos(rules, "account", where) if "account" in rules else where
        account = self.entities.get(ACCOUNT_ENTITY)
        if account is None:
            self.add(at, subject, f"the account scope needs the {ACCOUNT_ENTITY!r} entity")
            return ()
        if entity_name == "*":
            if "account" in rules:
                self.add(at, subject, "account paths are named per entity, not under '*'")
            return ()
        entity = self.entities[entity_name]
        if "account" not in rules:
            paths = default_account_paths(entity)
            if not paths:
                self.add(
                    at,
                    subject,
                    f"{entity_name} has no lookup 'account' to {ACCOUNT_ENTITY}: name the "
                    f"path to its account with account: [...] for the account scope",
                )
            return paths
        result = []
        for path in rules["account"]:
            problem = self._account_path_problem(entity, path)
            if problem:
                self.add(at, subject, f"account path {path!r}: {problem}")
            else:
                result.append(path)
        return tuple(result)

    def _account_path_problem(self, entity: Entity, path: str) -> str | None:
        if path == ACCOUNT_SELF:
            if entity.name == ACCOUNT_ENTITY:
                return None
            return f"{ACCOUNT_SELF!r} means the record itself, on {ACCOUNT_ENTITY} only"
        current = entity
        steps = path.split(".")
        for i, step in enumerate(steps):
            f = current.fields.get(step)
            if f is None:
                return f"{current.name} has no field {step!r}{did_you_mean(step, current.fields)}"
            if f.type != "lookup":
                return f"{current.name}.{step} is a {f.type} field; a path follows lookups"
            target = f.params.get("to")
            if i == len(steps) - 1:
                if target != ACCOUNT_ENTITY:
                    return f"ends at {target}, not at {ACCOUNT_ENTITY}"
                return None
            current = self.entities.get(target)
            if current is None:
                return f"{step} points at unknown entity {target!r}"
        return None

    def build_roles(self, roles) -> dict[str, Role]:
        result = {}
        for name, (raw, solution, where) in roles.items():
            subject = f"roles.{name}"
            permissions = raw.get("permissions") or {}
            own_fields = {}
            account_paths = {}
            for entity_name, rules in permissions.items():
                if entity_name != "*" and entity_name not in self.entities:
                    if self.unknown(entity_name):  # else its refused document is reported
                        self.add(
                            _pos(permissions, entity_name, where),
                            subject,
                            f"unknown entity {entity_name!r}{did_you_mean(entity_name, self.entities)}",
                        )
                    continue
                if "own" in rules:
                    own_fields[entity_name] = self._own_fields(
                        entity_name, rules["own"], _pos(rules, "own", where), subject
                    )
                # the "account" key names paths; an "account" value is the scope using them
                if "account" in rules or "account" in rules.values():
                    paths = self._account_paths(entity_name, rules, where, subject)
                    if "account" in rules:
                        account_paths[entity_name] = paths
            field_rules = raw.get("fields") or {}
            for entity_name, rules in field_rules.items():
                entity = self.entities.get(entity_name)
                if entity is None:
                    if not self.unknown(entity_name):
                        continue
                    self.add(
                        _pos(field_rules, entity_name, where),
                        subject,
                        f"unknown entity {entity_name!r}{did_you_mean(entity_name, self.entities)}",
                    )
                    continue
                for field_name in rules:
                    if field_name not in entity.fields:
                        self.add(
                            _pos(rules, field_name, where),
                            subject,
                            f"{entity_name} has no field {field_name!r}{did_you_mean(field_name, entity.fields)}",
                        )
            result[name] = Role(
                name=name,
                label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
                solution=solution,
                admin=bool(raw.get("admin", False)),
                permissions=MappingProxyType(
                    {
                        k: MappingProxyType(
                            {a: s for a, s in v.items() if a not in ("own", "account")}
                        )
                        for k, v in permissions.items()
                    }
                ),
                own_fields=MappingProxyType(own_fields),
                account_paths=MappingProxyType(account_paths),
                fields=MappingProxyType(
                    {k: MappingProxyType(dict(v)) for k, v in field_rules.items()}
                ),
                position=where,
            )
        return result

    def removed_path(self, entity: Entity, path: str) -> bool:
        """Does a (dotted) path run into a field that the customization layer removed?"""
        current = entity
        for part in path.split("."):
            spec = self.builder.entities.get(current.name)
            if spec is not None and part in spec.removed:
                return True
            field = current.fields.get(part)
            if field is None or field.type != "lookup":
                return False
            current = self.entities.get(field.params.get("to"))
            if current is None:
                return False
        return False

    def build_views(self, views) -> dict[str, View]:
        result = {}
        for name, (raw, solution, where) in views.items():
            entity = self.entities.get(raw["entity"])
            subject = f"views.{name}"
            if entity is None:
                if not self.unknown(raw["entity"]):
                    continue
                self.add(
                    _vpos(raw, "entity", where),
                    subject,
                    f"unknown entity {raw['entity']!r}{did_you_mean(raw['entity'], self.entities)}",
                )
                continue
            ok = True
            kept = {}
            for key in ("columns", "quick_filters", "card"):
                # Fields an administrator removed drop out of views instead of breaking them.
                kept[key] = tuple(p for p in raw.get(key) or () if not self.removed_path(entity, p))
                for index, path in enumerate(raw.get(key) or ()):
                    if self.removed_path(entity, path):
                        continue
                    try:
                        resolve_path(entity, path, self.entity_of)
                    except FilterError as exc:
                        ok = False
                        if not self.follows_on(entity, exc):
                            self.add(_pos(raw[key], index, where), subject, f"{key}: {exc.message}")
            sort = []
            for index, (path, direction) in enumerate(raw.get("sort") or ()):
                try:
                    field, _ = resolve_path(entity, path, self.entity_of)
                    if not field.stored:
                        raise FilterError(f"cannot sort by {field.type} field {path!r}")
                except FilterError as exc:
                    ok = False
                    if not self.follows_on(entity, exc):
                        self.add(_pos(raw["sort"], index, where), subject, f"sort: {exc.message}")
                sort.append((path, direction))
            tree = None
            if raw.get("filter") is not None:
                try:
                    tree = parse_filter(raw["filter"], entity, self.entity_of)
                except FilterError as exc:
                    ok = False
                    if not self.follows_on(entity, exc):
                        self.add(_vpos(raw, "filter", where), subject, f"filter: {exc}")
            kind = raw.get("kind", "list")
            for key, types in (("group_by", GROUPABLE), ("date_field", ("date", "datetime"))):
                value = raw.get(key)
                if value is None:
                    continue
                target = entity.fields.get(value)
                if target is None and value in SYSTEM_COLUMNS:
                    from .filters import system_field

                    target = system_field(entity.name, value)
                if target is None or target.type not in types:
                    ok = False
                    found = "unknown" if target is None else target.type
                    self.add(
                        _vpos(raw, key, where),
                        subject,
                        f"{key} {value!r} must be a field of type {' or '.join(types)} (it is {found}){did_you_mean(value, entity.fields) if target is None else ''}",
                    )
            if kind == "kanban" and not raw.get("group_by"):
                ok = False
                self.add(where, subject, "a kanban view needs group_by")
            if kind == "calendar" and not raw.get("date_field"):
                ok = False
                self.add(where, subject, "a calendar view needs date_field")
            if not self.check_view_extras(raw, entity, kind, subject, where):
                ok = False
            if not ok:
                continue
            result[name] = View(
                name=name,
                entity=entity.name,
                label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
                solution=solution,
                kind=kind,
                columns=kept["columns"],
                filter=tree,
                sort=tuple(sort),
                quick_filters=kept["quick_filters"],
                group_by=raw.get("group_by"),
                card=kept["card"],
                date_field=raw.get("date_field"),
                end_field=raw.get("end_field"),
                parent=raw.get("parent"),
                position=where,
            )
        return result

    def check_view_extras(self, raw, entity: Entity, kind: str, subject: str, where) -> bool:
        """A calendar's ``end_field`` (a datetime: where events end; a duration: how long
        they last) and a tree's ``parent`` (a lookup of the entity to itself)."""
        ok = True
        for key, kinds in (("end_field", ("calendar",)), ("parent", ("tree",))):
            if raw.get(key) is not None and kind not in kinds:
                ok = False
                self.add(_vpos(raw, key, where), subject, f"{key} is for {kinds[0]} views only")
        end = raw.get("end_field")
        if end is not None and kind == "calendar":
            target = entity.fields.get(end)
            if target is None or target.type not in ("datetime", "duration") or not target.stored:
                ok = False
                found = "unknown" if target is None else target.type
                self.add(
                    _vpos(raw, "end_field", where),
                    subject,
                    f"end_field {end!r} must be a datetime or duration field (it is {found}){did_you_mean(end, entity.fields) if target is None else ''}",
                )
        if kind == "tree":
            parent = raw.get("parent")
            target = entity.fields.get(parent) if parent else None
            if parent is None:
                ok = False
                self.add(where, subject, "a tree view needs parent")
            elif (
                target is None or target.type != "lookup" or target.params.get("to") != entity.name
            ):
                ok = False
                found = (
                    "unknown"
                    if target is None
                    else f"a lookup to {target.params.get('to')}"
                    if target.type == "lookup"
                    else target.type
                )
                self.add(
                    _vpos(raw, "parent", where),
                    subject,
                    f"parent {parent!r} must be a lookup of {entity.name} to {entity.name} (it is {found}){did_you_mean(parent, entity.fields) if target is None else ''}",
                )
        return ok


@collector_paused()
def build_catalog(
    packs: Sequence[PackSource],
    layer: Sequence[Document] = (),
    version: int = 0,
    problems: Problems | None = None,
) -> Catalog:
    """Compile packs (any order) and the customization layer into a frozen catalog.

    Raises DefinitionError listing every problem; nothing is returned half-built.
    """
    try:
        return _build_catalog(packs, layer, version, problems)
    finally:
        parse_cache.save_remembered()  # template, formula and cron answers worked out here


def _build_catalog(packs, layer, version, problems) -> Catalog:
    problems = problems if problems is not None else Problems()
    ordered = order_packs(packs, problems)
    inputs = _inputs_digest(ordered, layer)
    # These very packs and layer were built clean before (a worker's start, a command):
    # the documents only a build checks (data, demo, tests) need not be read again.
    checked_before = not problems and parse_cache.recall("built_clean", inputs) is True
    builder = _Builder(problems, ordered)
    for pack in ordered:
        for document in _by_kind(pack.defined(later=False) if checked_before else pack.documents):
            builder.add(pack.name, document)
    for document in _by_kind(d for d in layer if not checked_before or d.kind not in LATER_KINDS):
        builder.add(LAYER, document)
    builder.apply_rule_changes()
    option_sets = builder.build_option_sets()
    preliminary = {}
    for name, spec in builder.entities.items():
        preliminary[name] = builder.build_entity(spec, builder.build_fields(spec, option_sets))
    checker = _Checker(problems, preliminary, builder)
    entities = checker.run(builder.views)
    views = checker.build_views(builder.views)
    roles = checker.build_roles(builder.roles)
    names = {pack.name for pack in ordered}
    if checked_before:
        # Built clean before: the later sections cannot find a problem, so they are built
        # on first use (a request for a form, the workflow worker's first round).
        def build_later():
            for pack in ordered:
                for document in _by_kind(pack.defined(later=True)):
                    builder.add(pack.name, document)
            for document in _by_kind(d for d in layer if d.kind in LATER_KINDS):
                builder.add(LAYER, document)
            return _later_sections_paused(
                builder.problems, checker, builder, views, roles, option_sets, names, finish=True
            )

        sections = Sections(build_later)
        later = {name: sections.mapping(name) for name in _LATER}
    else:
        later = _later_sections(problems, checker, builder, views, roles, option_sets, names)
        from .pack_data import check_pack_data
        from .scenarios import check_scenarios

        check_pack_data(problems, checker.entities, builder.pack_data)
        check_scenarios(
            problems,
            checker.entities,
            later["processes"],
            roles,
            builder.scenarios,
            later["wizards"],
        )
        problems.raise_if_any()
        parse_cache.note("built_clean", inputs, True)
    solutions = {
        pack.name: Solution(
            name=pack.name,
            version=pack.version,
            label=Label.of(pack.manifest.get("label"), pack.name.capitalize()),
            depends=frozen_map(_plain(dict(pack.depends))),
            path=pack.root,
            description=Label.of(pack.manifest["description"])
            if pack.manifest.get("description")
            else None,
            position=_pos(pack.manifest),
        )
        for pack in ordered
    }
    return Catalog(
        version=version,
        solutions=MappingProxyType(solutions),
        entities=MappingProxyType(entities),
        option_sets=MappingProxyType(option_sets),
        views=MappingProxyType(views),
        roles=MappingProxyType(roles),
        **later,
    )


_LATER = (
    "forms",
    "reports",
    "dashboards",
    "processes",
    "templates",
    "calendars",
    "slas",
    "wizards",
    "web_forms",
)


@collector_paused()
def _later_sections_paused(*args, **kwargs) -> dict[str, Mapping]:
    return _later_sections(*args, **kwargs)


def _later_sections(
    problems, checker, builder, views, roles, option_sets, names, finish=False
) -> dict[str, Mapping]:
    """The sections built on the checked entities, views and roles: forms, reports,
    dashboards, the workflow's definitions, wizards and web forms (keys of ``_LATER``).
    ``finish``: raise DefinitionError if ``problems`` holds any afterwards, and keep the
    answers worked out (a build on first use, after ``build_catalog`` returned)."""
    # Imported here: a start whose later sections wait for first use needs none of them.
    from .dashboards import build_dashboards
    from .form_compiler import build_forms
    from .process_compiler import workflow_definitions
    from .reports import build_reports
    from .web_forms import build_web_forms
    from .wizards import build_wizards

    try:
        entities = checker.entities
        forms = build_forms(checker, builder, LAYER)
        reports = build_reports(
            problems, entities, builder.reports, LAYER, builder.rejected, roles=roles
        )
        dashboards = build_dashboards(
            problems, entities, views, reports, roles, names, builder.dashboards, LAYER
        )
        workflow = workflow_definitions(
            problems,
            entities,
            roles,
            builder.workflow,
            LAYER,
            rejected=builder.rejected,
            reports=reports,
            dashboards=dashboards,
        )
        wizards = build_wizards(
            problems,
            entities,
            roles,
            workflow.processes,
            option_sets,
            names,
            builder.wizards,
            LAYER,
        )
        web_forms = build_web_forms(
            problems, entities, builder.web_forms, LAYER, rejected=builder.rejected
        )
        if finish:
            problems.raise_if_any()
    finally:
        if finish:
            parse_cache.save_remembered()
    built = {
        "forms": forms,
        "reports": reports,
        "dashboards": dashboards,
        "processes": workflow.processes,
        "templates": workflow.templates,
        "calendars": workflow.calendars,
        "slas": workflow.slas,
        "wizards": wizards,
        "web_forms": web_forms,
    }
    return {name: MappingProxyType(section) for name, section in built.items()}


def _inputs_digest(packs: Sequence[PackSource], layer: Sequence[Document]) -> str:
    """What a build reads: every pack's files and the customization layer, with the
    fingerprint of the code that reads them (``parse_cache``)."""
    digest = hashlib.sha256(parse_cache.code_fingerprint().encode())
    for pack in packs:
        digest.update(f"\0pack\0{pack.name}\0{pack.root}".encode())
        for relative, text in sorted(pack.files.items()):
            digest.update(f"\0{relative}\0".encode())
            digest.update((text or "").encode("utf-8", "surrogatepass"))
    for document in layer:
        body = repr(_plain(document.data))  # the same data gives the same text
        digest.update(f"\0layer\0{document.kind}\0{document.path}\0{body}".encode())
    return digest.hexdigest()


_KIND_ORDER = {"option_sets": 0, "entity": 1, "extend": 2, "views": 3, "roles": 4, "forms": 5}


def _by_kind(documents: Iterable[Document]) -> list[Document]:
    return sorted(documents, key=lambda d: _KIND_ORDER.get(d.kind, 9))


def field_types() -> list[str]:
    return sorted(FIELD_TYPES)


__all__ = ["build_catalog", "order_packs", "LAYER", "one_of"]
