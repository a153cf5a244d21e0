"""Which form layout an entity shows: its main form, a generated one, or its quick-create form.

An entity without a form gets a generated one (its fields in two columns, then a related
list per children or many-to-many field).  A quick-create form is the pack's form marked
``quick_create``, else a short one generated from the title field and the required fields.
Generated layouts are cached per catalog version.
"""

from __future__ import annotations

from ..metadata import Catalog, Entity
from ..metadata.labels import Label
from ..metadata.model import Form, FormField, FormSection, FormTab

#: The label of a tab that has none (a generated form's only tab).
GENERAL = Label.of({"en": "General", "ru": "Основное"})

#: Field types that are not put on a generated form's columns (shown as related lists).
_RELATED_TYPES = ("children",)


def form_fields_of(entity: Entity) -> list[str]:
    return [n for n, f in entity.fields.items() if f.type not in _RELATED_TYPES]


def default_form(catalog: Catalog, entity: Entity) -> Form:
    """A form for an entity that has none: fields in two columns, related lists after."""

    def build():
        names = form_fields_of(entity)
        half = (len(names) + 1) // 2
        columns = tuple(
            tuple(FormField(n) for n in part) for part in (names[:half], names[half:]) if part
        )
        sections = [FormSection(label=None, columns=columns)] if columns else []
        for name, f in entity.fields.items():
            if f.type == "children" or f.type == "many_to_many":
                sections.append(FormSection(label=f.label, related=name))
        if not sections:
            sections.append(FormSection(label=None, columns=()))
        tab = FormTab(label=GENERAL, sections=tuple(sections))
        return Form(
            name=f"{entity.name}_generated",
            entity=entity.name,
            label=entity.label,
            solution="",
            tabs=(tab,),
        )

    return catalog.artifact(("ui-default-form", entity.name), build)


def form_for(catalog: Catalog, entity: Entity) -> Form:
    """The entity's main form (the catalog's, else a generated one)."""
    return catalog.form_for(entity.name) or default_form(catalog, entity)


#: Field types a quick-create form leaves out even when required: they need the record
#: to exist (related lists) or a page of their own (files are uploaded with the full form).
_NOT_QUICK = ("children", "many_to_many", "file", "json", "rich_text")


def quick_create_form(catalog: Catalog, entity: Entity) -> Form:
    """The short form for creating a record in a dialog: the pack's ``quick_create`` form,
    else the title field and the required fields (in definition order) in one column."""
    for form in catalog.forms.values():
        if form.entity == entity.name and form.quick_create:
            return form

    def build():
        names = [
            n
            for n, f in entity.fields.items()
            if (n == entity.title or f.required)
            and not f.computed
            and f.type not in _NOT_QUICK
            and not (f.required and f.default is not None and n != entity.title)
        ]
        if not names:  # an entity with neither: its first few editable fields
            names = [
                n for n, f in entity.fields.items() if not f.computed and f.type not in _NOT_QUICK
            ][:3]
        section = FormSection(label=None, columns=(tuple(FormField(n) for n in names),))
        return Form(
            name=f"{entity.name}_quick_create",
            entity=entity.name,
            label=entity.label,
            solution="",
            tabs=(FormTab(label=None, sections=(section,)),),
            quick_create=True,
        )

    return catalog.artifact(("quick-create-form", entity.name), build)
