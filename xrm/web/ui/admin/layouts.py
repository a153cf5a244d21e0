"""Form layouts (add, move and remove fields and sections, by drag and drop) and views
(columns, filter, sort, quick filters), saved as whole definitions in the customization
layer through the plan page."""

from __future__ import annotations

import json

from flask import abort, render_template, request, url_for

from ....metadata import Entity
from ....metadata.labels import Label
from ....metadata.model import FormField
from ...ui.layouts import _form_field, form_document, form_for, left_out_of, view_document
from .. import context as C
from . import bp
from .plans import review
from .schema import NAME, _label, entity_or_404


# ------------------------------------------------------------------------ forms
@bp.get("/forms")
def forms():
    catalog = C.catalog()
    rows = [
        (e, catalog.form_for(e.name))
        for e in sorted(catalog.entities.values(), key=lambda e: C.label(e).lower())
    ]
    return render_template("admin/forms.html", rows=rows)


@bp.get("/forms/<entity_name>")
def form_layout(entity_name: str):
    entity = entity_or_404(entity_name)
    form = form_for(C.catalog(), entity)
    placed = {item.field for item in form.fields()}
    related_placed = {s.related for t in form.tabs for s in t.sections if s.related}
    available = [
        f for n, f in entity.fields.items() if n not in placed and f.type not in ("children",)
    ]
    related = [
        f
        for n, f in entity.fields.items()
        if f.type in ("children", "many_to_many") and n not in related_placed
    ]
    return render_template(
        "admin/form_layout.html", entity=entity, form=form, available=available, related=related
    )


def _relabel(original: Label | None, text: str):
    """Keep a label's other languages when the administrator edits it in theirs."""
    text = (text or "").strip()
    texts = original.as_dict() if original else {}
    if not text:
        return None
    if texts.get(C.locale()) == text or (not texts.get(C.locale()) and texts.get("en") == text):
        return texts or {C.locale(): text}
    return {**texts, C.locale(): text}


def layout_document(entity: Entity, layout: dict) -> tuple[str, dict]:
    """A form definition from the editor's layout JSON, keeping each field's conditions."""
    form = form_for(C.catalog(), entity)
    items: dict[str, FormField] = {item.field: item for item in form.fields()}
    tab_labels = {C.label(t.label): t.label for t in form.tabs if t.label}
    section_labels = {C.label(s.label): s.label for t in form.tabs for s in t.sections if s.label}
    tabs = []
    for tab in layout.get("tabs") or []:
        sections = []
        for section in tab.get("sections") or []:
            entry: dict = {}
            label = _relabel(section_labels.get(section.get("label", "")), section.get("label", ""))
            if label:
                entry["label"] = label
            if section.get("related"):
                if section["related"] not in entity.fields:
                    continue
                entry["related"] = section["related"]
            else:
                columns = []
                for column in (section.get("columns") or [])[:4]:
                    names = [n for n in column if isinstance(n, str) and n in entity.fields]
                    if names:
                        columns.append([_form_field(items.get(n, FormField(n))) for n in names])
                if not columns:
                    continue
                entry["columns"] = columns
            sections.append(entry)
        if sections:
            out: dict = {"sections": sections}
            label = _relabel(tab_labels.get(tab.get("label", "")), tab.get("label", ""))
            if label:
                out["label"] = label
            tabs.append(out)
    document = form_document(form)
    document["tabs"] = tabs
    document["default"] = True
    document.pop("left_out", None)
    left_out = left_out_of(entity, document)
    if left_out:
        document["left_out"] = left_out
    name = form.name if form.solution else f"{entity.name}_main"
    return name, document


@bp.post("/forms/<entity_name>")
def save_form_layout(entity_name: str):
    entity = entity_or_404(entity_name)
    try:
        layout = json.loads(request.form.get("layout", ""))
    except ValueError:
        abort(400)
    if not isinstance(layout, dict):
        abort(400)
    name, document = layout_document(entity, layout)
    summary = [C._("Change form %(name)s", name=name)]
    return review(
        [("forms", {"forms": {name: document}})],
        summary,
        url_for("ui_admin.form_layout", entity_name=entity.name),
    )


# ------------------------------------------------------------------------ views
@bp.get("/views")
def views():
    catalog = C.catalog()
    grouped = []
    for entity in sorted(catalog.entities.values(), key=lambda e: C.label(e).lower()):
        entity_views = catalog.views_of(entity.name)
        if entity_views:
            grouped.append((entity, entity_views))
    return render_template("admin/views.html", grouped=grouped, entities=sorted(catalog.entities))


def _fields_of(entity: Entity) -> list[tuple[str, str]]:
    out = [(n, C.label(f)) for n, f in entity.fields.items() if f.stored]
    out += [
        (n, C._(C.SYSTEM_LABELS[n])) for n in ("owner", "created_at", "updated_at", "created_by")
    ]
    return out


@bp.get("/views/<name>")
def view(name: str):
    catalog = C.catalog()
    view = catalog.views.get(name)
    creating = view is None
    entity_name = view.entity if view else request.args.get("entity", "")
    entity = entity_or_404(entity_name)
    document = (
        view_document(view)
        if view
        else {
            "entity": entity.name,
            "label": {"en": ""},
            "columns": [entity.title] if entity.title else [],
        }
    )
    labels = document["label"] if isinstance(document["label"], dict) else {"en": document["label"]}
    return render_template(
        "admin/view.html",
        name=name,
        creating=creating,
        entity=entity,
        document=document,
        labels=labels,
        fields=_fields_of(entity),
        filter_json=json.dumps(document.get("filter"), ensure_ascii=False, indent=1)
        if document.get("filter") is not None
        else "",
    )


@bp.post("/views/<name>")
def save_view(name: str):
    form = request.form
    catalog = C.catalog()
    existing = catalog.views.get(name)
    entity = entity_or_404(existing.entity if existing else form.get("entity", ""))
    back = url_for("ui_admin.views")
    if not NAME.match(name):
        return review(
            [],
            [
                C._(
                    "Field names use lowercase letters, digits and underscores, starting with a letter."
                )
            ],
            back,
        )
    document = view_document(existing) if existing else {"entity": entity.name}
    document["label"] = _label(form.get("label_en", ""), form.get("label_ru", ""), name)
    document["kind"] = form.get("kind") or document.get("kind", "list")
    if document["kind"] == "list":
        document.pop("kind")
    columns = [c.strip() for c in form.get("columns", "").split(",") if c.strip()]
    if columns:
        document["columns"] = columns
    quick = [c.strip() for c in form.getlist("quick_filters") if c.strip()]
    if quick:
        document["quick_filters"] = quick
    else:
        document.pop("quick_filters", None)
    raw_filter = form.get("filter", "").strip()
    if raw_filter:
        try:
            document["filter"] = json.loads(raw_filter)
        except ValueError:
            return review(
                [],
                [C._("The filter is not valid: %(detail)s", detail="JSON")],
                url_for("ui_admin.view", name=name),
            )
    else:
        document.pop("filter", None)
    sort_field = form.get("sort_field", "")
    if sort_field:
        document["sort"] = [[sort_field, "desc" if form.get("sort_direction") == "desc" else "asc"]]
    else:
        document.pop("sort", None)
    for key in ("group_by", "date_field"):
        if form.get(key):
            document[key] = form[key]
    # a calendar's end and a tree's parent: what the form says, and only on their kind
    for key, kind in (("end_field", "calendar"), ("parent", "tree")):
        value = form.get(key, "").strip()
        if value and document.get("kind", "list") == kind:
            document[key] = value
        else:
            document.pop(key, None)
    card = [c.strip() for c in form.get("card", "").split(",") if c.strip()]
    if card:
        document["card"] = card
    summary = [C._("Change view %(name)s", name=name)]
    return review(
        [("views", {"views": {name: document}})], summary, url_for("ui_lists.view", view_name=name)
    )
