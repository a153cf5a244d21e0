"""Layouts the catalog does not spell out, and catalog layouts written back as documents.

An entity without a list view gets a generated view (title and the first few simple
fields), cached per catalog version; generated forms come from the forms layer
(``xrm.forms.layout``, re-exported here).  The admin pages
change forms and views by writing a whole new definition into the customization layer
(top wins), so ``form_document``/``view_document`` turn the compiled model back into the
pack format.  A form document written back is the merged form (pack extensions and
generated tabs included) with ``left_out`` naming the fields it does not show, so that
the extensions applied to it again add only the fields of packs installed afterwards.
"""

from __future__ import annotations

from ...forms.layout import default_form, form_fields_of, form_for  # noqa: F401 (re-exported)
from ...metadata import Catalog, Entity, View
from ...metadata.labels import Label
from ...metadata.model import Form, FormField, FormSection
from .filtering import to_raw

_LIST_SKIP = (
    "long_text",
    "rich_text",
    "json",
    "file",
    "children",
    "many_to_many",
    "any_lookup",
    "tags",
    "multi_choice",
)


def default_view(catalog: Catalog, entity: Entity) -> View:
    """A list view for an entity that has none: its title and a few simple fields."""

    def build():
        columns = []
        if entity.title and entity.title in entity.fields:
            columns.append(entity.title)
        for name, f in entity.fields.items():
            if len(columns) >= 6:
                break
            if name not in columns and f.stored and f.type not in _LIST_SKIP:
                columns.append(name)
        sort = (
            ((entity.title, "asc"),)
            if entity.title in entity.fields and entity.fields[entity.title].stored
            else (("created_at", "desc"),)
        )
        return View(
            name=f"{entity.name}__all",
            entity=entity.name,
            label=entity.plural or entity.label,
            solution=entity.solution,
            columns=tuple(columns) or ("id",),
            sort=sort,
        )

    return catalog.artifact(("ui-default-view", entity.name), build)


def list_views_of(catalog: Catalog, entity: str) -> list[View]:
    return [v for v in catalog.views_of(entity)]


def view_named(catalog: Catalog, name: str) -> View | None:
    """A catalog view, or an entity's generated view (``<entity>__all``)."""
    view = catalog.views.get(name)
    if view is not None:
        return view
    if name.endswith("__all"):
        entity = catalog.entity_of(name[: -len("__all")])
        if entity is not None:
            return default_view(catalog, entity)
    return None


def main_view(catalog: Catalog, entity: Entity) -> View:
    """Where an entity's records are listed: its first list view, else a generated one."""
    for view in catalog.views_of(entity.name):
        if view.kind == "list":
            return view
    return default_view(catalog, entity)


# ----------------------------------------------------------------- model -> documents
def _label(label: Label | None):
    if label is None or not label:
        return None
    texts = label.as_dict()
    return texts


def _form_field(item: FormField):
    if (
        item.label is None
        and item.visible_if is None
        and item.required_if is None
        and not item.read_only
        and item.widget is None
    ):
        return item.field
    out: dict = {"field": item.field}
    if item.label:
        out["label"] = _label(item.label)
    if item.visible_if is not None:
        out["visible_if"] = to_raw(item.visible_if)
    if item.required_if is not None:
        out["required_if"] = to_raw(item.required_if)
    if item.read_only:
        out["read_only"] = True
    if item.widget:
        out["widget"] = item.widget
    return out


def section_document(section: FormSection) -> dict:
    out: dict = {}
    if section.label:
        out["label"] = _label(section.label)
    if section.related:
        out["related"] = section.related
    else:
        out["columns"] = [[_form_field(item) for item in column] for column in section.columns] or [
            []
        ]
    if section.visible_if is not None:
        out["visible_if"] = to_raw(section.visible_if)
    return out


def form_document(form: Form) -> dict:
    """A compiled form as the ``forms:`` entry that would define it."""
    out: dict = {"entity": form.entity}
    if form.label:
        out["label"] = _label(form.label)
    if form.default:
        out["default"] = True
    if form.quick_create:
        out["quick_create"] = True
    if form.print_layout:
        out["print"] = True
    tabs = []
    for tab in form.tabs:
        entry: dict = {}
        if tab.label:
            entry["label"] = _label(tab.label)
        entry["sections"] = [section_document(s) for s in tab.sections]
        tabs.append(entry)
    out["tabs"] = tabs
    if form.left_out:
        out["left_out"] = list(form.left_out)
    return out


def left_out_of(entity: Entity, document: dict) -> list[str]:
    """The entity's fields a form document shows neither as a field nor as a related
    list: saved with the form, so that pack extensions do not bring them back."""
    shown = set()
    for tab in document.get("tabs") or ():
        for section in tab.get("sections") or ():
            if section.get("related"):
                shown.add(section["related"])
            for column in section.get("columns") or ():
                shown.update(item if isinstance(item, str) else item["field"] for item in column)
    return [name for name in entity.fields if name not in shown]


def view_document(view: View) -> dict:
    """A compiled view as the ``views:`` entry that would define it."""
    out: dict = {"entity": view.entity, "label": _label(view.label) or view.name}
    if view.kind != "list":
        out["kind"] = view.kind
    if view.columns:
        out["columns"] = list(view.columns)
    if view.filter is not None:
        out["filter"] = to_raw(view.filter)
    if view.sort:
        out["sort"] = [[p, d] for p, d in view.sort]
    if view.quick_filters:
        out["quick_filters"] = list(view.quick_filters)
    if view.group_by:
        out["group_by"] = view.group_by
    if view.card:
        out["card"] = list(view.card)
    if view.date_field:
        out["date_field"] = view.date_field
    if view.end_field:
        out["end_field"] = view.end_field
    if view.parent:
        out["parent"] = view.parent
    return out
