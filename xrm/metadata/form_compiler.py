"""Forms: the base forms, the extensions other packs add to them, and a generated tab for
the fields a pack added to another pack's entity that the record page would not show.

A form is built from its own definition and each extension (``extend: <form>``) from its
own, so a problem in an extension is reported at the extension's file and line.  The
extensions of a form are merged in pack order: a tab that names an existing tab with
``tab:``, or whose label has the same text as an existing tab's in some language, adds
its sections to that tab; any other tab is added after the tab ``after:`` names, else at
the end.  A field may be placed once across a form and all its extensions.

The fields a pack added with ``extend`` that the entity's main form still does not show
are put on a tab labelled with that pack's label (a related list for a children field,
the others in one section), so an extension's fields never vanish from the record page.

The customization layer writes a form whole: the form editor saves the merged result and
lists in ``left_out`` the fields it keeps off.  Pack extensions are then applied to that
form again, without what it already places or leaves out, so a pack installed after the
administrator's change still adds its tabs while the administrator's choices stand.  An
extension's own problems are reported once, against the pack's form, never against the
administrator's version of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

from .filters import FilterError, parse_filter
from .labels import Label
from .model import Entity, Form, FormField, FormSection, FormTab
from .problems import Problems, did_you_mean
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: (definition name, raw definition, solution, position) of a form extension.
Extension = tuple[str, Mapping, str, Position]


@dataclass
class _Placements:
    """Where each field and each related list of one form was placed, and by which
    definition (the form itself or one of its extensions), for the placed-twice check."""

    form: str
    fields: dict[str, tuple[str, Position]] = field(default_factory=dict)
    related: dict[str, tuple[str, Position]] = field(default_factory=dict)


def english(label: Label | None) -> str:
    """The text a ``tab:`` or ``after:`` key names a tab by: its English label."""
    return label.get("en") if label else ""


def same_label(a: Label | None, b: Label | None) -> bool:
    """Do two labels share a text (case aside) in the same language?"""
    if not a or not b:
        return False
    texts = {k: v.casefold() for k, v in a.texts}
    return any(texts.get(k) == v.casefold() for k, v in b.texts)


def _find_tab(tabs: list[FormTab], name: str) -> int | None:
    wanted = str(name).casefold()
    return next((i for i, t in enumerate(tabs) if english(t.label).casefold() == wanted), None)


class FormCompiler:
    """Builds the catalog's forms for a compiler's checker (entities already final)."""

    def __init__(self, checker, builder, layer: str):
        self.checker = checker
        self.builder = builder
        self.layer = layer
        self.problems: Problems = checker.problems

    def add(self, where: Position, subject: str, message: str) -> None:
        self.problems.add(where, subject, message)

    @contextlib.contextmanager
    def quiet(self, on: bool = True) -> Iterator[None]:
        """Drop the messages of a build whose problems another build reports."""
        if not on:
            yield
            return
        kept, self.problems = self.problems, Problems()
        try:
            yield
        finally:
            self.problems = kept

    # ------------------------------------------------------------------ the catalog's forms
    def build(self) -> dict[str, Form]:
        """Every form with its extensions merged, the main forms with generated tabs."""
        extensions = self.extensions_by_form()
        result: dict[str, Form] = {}
        left_out: dict[str, set[str]] = {}
        for name, (raw, solution, where) in self.builder.forms.items():
            subject = f"forms.{name}"
            entity = self.checker.entities.get(raw["entity"])
            if entity is None:
                if self.checker.unknown(raw["entity"]):
                    self.add(
                        _vpos(raw, "entity", where),
                        subject,
                        f"unknown entity {raw['entity']!r}"
                        f"{did_you_mean(raw['entity'], self.checker.entities)}",
                    )
                continue
            if raw.get("quick_create") and raw.get("default"):
                self.add(
                    _vpos(raw, "quick_create", where),
                    subject,
                    "a quick-create form cannot be the entity's main form (default: true)",
                )
            if raw.get("print") and (raw.get("default") or raw.get("quick_create")):
                other = "default: true" if raw.get("default") else "quick_create: true"
                self.add(
                    _vpos(raw, "print", where),
                    subject,
                    f"a print form is only printed: it cannot also be {other}",
                )
            added = extensions.get(name, [])
            pack = self.builder.pack_forms.get(name)
            if pack is not None and added:
                # The administrator's version replaces the pack's; the extensions are
                # checked against the pack's form, as a pack author wrote them.
                pack_entity = self.checker.entities.get(pack[0]["entity"])
                if pack_entity is not None:
                    with self.quiet():
                        tabs, placements = self.tabs_of(name, pack[0], pack[2], pack_entity)
                    self.extend(tabs, placements, pack_entity, added, strict=True)
            tabs, placements = self.tabs_of(name, raw, where, entity)
            left_out[name] = self.left_out(
                raw, entity, where, subject, report=solution != self.layer
            )
            with self.quiet(pack is not None):
                self.extend(
                    tabs, placements, entity, added, strict=pack is None, kept=left_out[name]
                )
            result[name] = Form(
                name=name,
                entity=entity.name,
                label=Label.of(raw.get("label"), entity.label.get()),
                solution=solution,
                tabs=tuple(tabs),
                default=bool(raw.get("default", False)),
                quick_create=bool(raw.get("quick_create", False)),
                print_layout=bool(raw.get("print", False)),
                position=where,
            )
        main: dict[str, str] = {}
        for name, form in result.items():
            if form.quick_create or form.print_layout:
                continue  # a short or printed form: no generated tab, never the main form
            if form.entity not in main or (form.default and not result[main[form.entity]].default):
                main[form.entity] = name
        for name in main.values():
            form = result[name]
            entity = self.checker.entities[form.entity]
            result[name] = replace(form, tabs=self.with_generated(form, entity, left_out[name]))
        return {
            name: replace(form, left_out=unplaced(form, self.checker.entities[form.entity]))
            for name, form in result.items()
        }

    def extensions_by_form(self) -> dict[str, list[Extension]]:
        """Each extension under the form it extends, in pack order; bad targets reported."""
        forms, extensions = self.builder.forms, self.builder.form_extensions
        by_form: dict[str, list[Extension]] = {}
        for name, (raw, solution, where) in extensions.items():
            subject = f"forms.{name}"
            target = raw["extend"]
            at = _vpos(raw, "extend", where)
            if target not in forms:
                if target in extensions:
                    self.add(
                        at,
                        subject,
                        f"extends {target!r}, which is itself an extension; extend the form "
                        f"it extends, {extensions[target][0]['extend']!r}",
                    )
                else:
                    self.add(
                        at, subject, f"extends unknown form {target!r}{did_you_mean(target, forms)}"
                    )
                continue
            base, owner, _ = self.builder.pack_forms.get(target, forms[target])
            if owner != solution and owner not in self.builder.depends.get(solution, set()):
                self.add(
                    at,
                    subject,
                    f"extends form {target!r} of solution {owner!r}, "
                    f"which solution {solution!r} does not depend on",
                )
                continue
            if "entity" in raw and raw["entity"] != base["entity"]:
                self.add(
                    _vpos(raw, "entity", where),
                    subject,
                    f"extends form {target!r}, which lays out {base['entity']}, not {raw['entity']}",
                )
                continue
            by_form.setdefault(target, []).append((name, raw, solution, where))
        return by_form

    def left_out(self, raw, entity: Entity, where, subject, report: bool) -> set[str]:
        """The fields a form keeps off on purpose.  The customization layer's lists may
        name fields that are gone since (a pack upgrade); a pack's must be right."""
        names = raw.get("left_out") or ()
        removed = self.builder.entities[entity.name].removed
        kept = set()
        for index, name in enumerate(names):
            if name in entity.fields:
                kept.add(name)
            elif report and name not in removed:
                self.add(
                    _pos(names, index, where),
                    subject,
                    f"left_out: {entity.name} has no field {name!r}"
                    f"{did_you_mean(name, entity.fields)}",
                )
        return kept

    # ------------------------------------------------------------------ extensions
    def extend(
        self,
        tabs: list[FormTab],
        placements: _Placements,
        entity: Entity,
        extensions: list[Extension],
        *,
        strict: bool,
        kept: AbstractSet[str] = frozenset(),
    ) -> None:
        """Merge extensions into ``tabs``.  ``strict`` for a pack's form: a field placed
        twice or a tab that is not there is an error.  Otherwise (the administrator's
        form) what the form places or keeps off is left out of the extensions, and a tab
        that is no longer there is added as a new one."""
        for name, raw, _solution, where in extensions:
            skip = set(kept)
            if not strict:
                skip |= placements.fields.keys() | placements.related.keys()
            built = self.build_tabs(raw["tabs"], entity, where, f"forms.{name}", name, placements)
            for tab_raw, tab in built:
                tab = _without(tab, skip)
                if tab is not None:
                    self.merge(tabs, tab_raw, tab, f"forms.{name}", where, placements.form, strict)

    def merge(
        self,
        tabs: list[FormTab],
        tab_raw: Mapping,
        tab: FormTab,
        subject: str,
        where: Position,
        form: str,
        strict: bool,
    ) -> None:
        """Add one tab of an extension: its sections into the tab it names or shares a
        label with, else the tab itself after the one ``after:`` names, else last."""
        named, after = tab_raw.get("tab"), tab_raw.get("after")
        labels = [english(t.label) for t in tabs if t.label]
        index = None
        if named is not None:
            index = _find_tab(tabs, named)
            if strict and index is None:
                self.add(
                    _vpos(tab_raw, "tab", where),
                    subject,
                    f"form {form!r} has no tab {named!r} (tabs are named by their English "
                    f"label: {', '.join(labels) or 'none'}){did_you_mean(named, labels)}",
                )
                return
            if strict and "label" in tab_raw:
                self.add(
                    _vpos(tab_raw, "label", where),
                    subject,
                    f"a tab merged into tab {named!r} keeps that tab's label; leave label out",
                )
        elif tab.label:
            index = next((i for i, t in enumerate(tabs) if same_label(t.label, tab.label)), None)
        if index is not None:
            if strict and after is not None:
                self.add(
                    _vpos(tab_raw, "after", where),
                    subject,
                    f"after places a new tab; this tab's sections join tab "
                    f"{english(tabs[index].label)!r}",
                )
            tabs[index] = replace(tabs[index], sections=tabs[index].sections + tab.sections)
            return
        if tab.label is None and named is not None:
            tab = replace(tab, label=Label.of(named))  # its tab is gone from the admin's form
        at = len(tabs)
        if after is not None:
            found = _find_tab(tabs, after)
            if found is not None:
                at = found + 1
            elif strict:
                self.add(
                    _vpos(tab_raw, "after", where),
                    subject,
                    f"form {form!r} has no tab {after!r} to put this tab after"
                    f"{did_you_mean(after, labels)}",
                )
        tabs.insert(at, tab)

    # ------------------------------------------------------------------ the generated tab
    def with_generated(self, form: Form, entity: Entity, kept: set[str]) -> tuple[FormTab, ...]:
        """The form's tabs plus, for each pack that added fields to this entity with
        ``extend`` which the form neither shows nor keeps off, a tab labelled with the
        pack's label (merged into a tab of the same label if the form has one)."""
        fields_placed = {item.field for item in form.fields()}
        related_placed = {s.related for t in form.tabs for s in t.sections if s.related}
        by_pack: dict[str, list] = {}
        for name, f in entity.fields.items():
            pack = f.solution
            if pack == entity.solution or pack not in self.builder.solution_labels:
                continue  # the entity's own fields, and the administrator's
            if name in kept or name in related_placed:
                continue
            if f.type != "children" and name in fields_placed:
                continue
            by_pack.setdefault(pack, []).append(f)
        tabs = list(form.tabs)
        for pack, missing in by_pack.items():
            names = [f.name for f in missing if f.type != "children"]
            half = (len(names) + 1) // 2
            columns = tuple(
                tuple(FormField(n) for n in part) for part in (names[:half], names[half:]) if part
            )
            sections = [FormSection(label=None, columns=columns)] if columns else []
            sections += [
                FormSection(label=f.label, related=f.name) for f in missing if f.type == "children"
            ]
            tab = FormTab(label=self.builder.solution_labels[pack], sections=tuple(sections))
            self.merge(tabs, {}, tab, "", form.position, form.name, strict=False)
        return tuple(tabs)

    # ------------------------------------------------------------------ tabs of one definition
    def tabs_of(
        self, name: str, raw: Mapping, where: Position, entity: Entity
    ) -> tuple[list[FormTab], _Placements]:
        """A form's own tabs, and where it placed each field, before any extension."""
        placements = _Placements(form=name)
        built = self.build_tabs(raw["tabs"], entity, where, f"forms.{name}", name, placements)
        return [tab for _, tab in built], placements

    def build_tabs(
        self,
        tabs_raw,
        entity: Entity,
        where: Position,
        subject: str,
        owner: str,
        placements: _Placements,
    ) -> list[tuple[Mapping, FormTab]]:
        """One definition's tabs (a form's or an extension's), with its own positions."""
        removed = self.builder.entities[entity.name].removed
        tabs = []
        for tab_raw in tabs_raw:
            sections = []
            for section_raw in tab_raw["sections"]:
                columns = []
                for column_raw in section_raw.get("columns") or ():
                    column = []
                    for index, item in enumerate(column_raw):
                        spec = {"field": item} if isinstance(item, str) else item
                        item_where = _pos(column_raw, index, where)
                        found = entity.fields.get(spec["field"])
                        if found is None and spec["field"] in removed:
                            continue  # removed by an administrator: the form drops it
                        if found is None:
                            self.add(
                                item_where,
                                subject,
                                f"{entity.name} has no field {spec['field']!r}"
                                f"{did_you_mean(spec['field'], entity.fields)}",
                            )
                            continue
                        self.place(placements, "field", found.name, owner, item_where, subject)
                        column.append(
                            FormField(
                                field=found.name,
                                label=Label.of(spec["label"]) if spec.get("label") else None,
                                visible_if=self.condition(
                                    spec.get("visible_if"), entity, item_where, subject
                                ),
                                required_if=self.condition(
                                    spec.get("required_if"), entity, item_where, subject
                                ),
                                read_only=bool(spec.get("read_only", False)),
                                widget=spec.get("widget"),
                            )
                        )
                    columns.append(tuple(column))
                related = section_raw.get("related")
                if related is not None:
                    target = entity.fields.get(related)
                    related_where = _vpos(section_raw, "related", where)
                    if target is None or target.type not in ("children", "many_to_many"):
                        self.add(
                            related_where,
                            subject,
                            f"related {related!r} must be a children or many_to_many field of "
                            f"{entity.name}",
                        )
                        related = None
                    else:
                        self.place(
                            placements, "related list", related, owner, related_where, subject
                        )
                sections.append(
                    FormSection(
                        label=Label.of(section_raw["label"]) if section_raw.get("label") else None,
                        columns=tuple(columns),
                        related=related,
                        visible_if=self.condition(
                            section_raw.get("visible_if"), entity, _pos(section_raw), subject
                        ),
                    )
                )
            label = Label.of(tab_raw["label"]) if tab_raw.get("label") else None
            tabs.append((tab_raw, FormTab(label=label, sections=tuple(sections))))
        return tabs

    def place(
        self, placements: _Placements, what: str, name: str, owner: str, where, subject: str
    ) -> None:
        """Note where a field (or related list) is placed; a second place is an error."""
        seen = placements.related if what == "related list" else placements.fields
        previous = seen.get(name)
        if previous is None:
            seen[name] = (owner, where)
        elif previous[0] == owner:
            self.add(where, subject, f"{what} {name!r} appears twice on the form")
        else:
            self.add(
                where,
                subject,
                f"{what} {name!r} is already on form {placements.form!r} "
                f"(placed by {previous[0]!r} at {previous[1]})",
            )

    def condition(self, raw, entity: Entity, where: Position, subject: str):
        """A ``visible_if``/``required_if`` filter over the record being edited."""
        if raw is None:
            return None
        try:
            return parse_filter(raw, entity, self.checker.entity_of)
        except FilterError as exc:
            if not self.checker.follows_on(entity, exc):
                self.add(where, subject, f"condition: {exc}")
            return None


def _without(tab: FormTab, skip: set[str]) -> FormTab | None:
    """A tab without the fields and related lists in ``skip``; None when nothing is left."""
    if not skip:
        return tab
    sections = []
    for section in tab.sections:
        if section.related:
            if section.related not in skip:
                sections.append(section)
            continue
        columns = tuple(
            kept
            for kept in (
                tuple(i for i in column if i.field not in skip) for column in section.columns
            )
            if kept
        )
        if columns or not section.columns:
            sections.append(replace(section, columns=columns))
    return replace(tab, sections=tuple(sections)) if sections else None


def unplaced(form: Form, entity: Entity) -> tuple[str, ...]:
    """The entity's fields the form shows neither as a field nor as a related list."""
    shown = {item.field for item in form.fields()}
    shown |= {s.related for t in form.tabs for s in t.sections if s.related}
    return tuple(name for name in entity.fields if name not in shown)


def build_forms(checker, builder, layer: str) -> dict[str, Form]:
    """The catalog's forms, extensions merged and generated tabs added."""
    return FormCompiler(checker, builder, layer).build()
