"""Entities, their fields and option sets: add, edit label, options, required, default,
remove.  Each change becomes customization documents (the pack formats) that the plan
page shows before they are applied."""

from __future__ import annotations

import re

from flask import abort, render_template, request, url_for

from ....metadata import Entity, Field
from ....metadata.fieldtypes import FIELD_TYPES
from ....metadata.model import SYSTEM_COLUMNS
from ...routing import parse_id
from ...ui.layouts import form_document, form_for, view_document
from .. import context as C
from . import bp
from .plans import review

NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")

#: Types an administrator can add from the browser (computed types need expressions).
ADDABLE = (
    "text",
    "long_text",
    "rich_text",
    "email",
    "phone",
    "url",
    "integer",
    "decimal",
    "money",
    "percent",
    "rating",
    "boolean",
    "date",
    "datetime",
    "time",
    "duration",
    "choice",
    "multi_choice",
    "tags",
    "lookup",
    "user",
    "many_to_many",
    "file",
)


def entity_or_404(name: str) -> Entity:
    entity = C.catalog().entity_of(name)
    if entity is None:
        abort(404)
    return entity


def _label(en: str, ru: str, fallback: str) -> dict:
    out = {}
    if en.strip():
        out["en"] = en.strip()
    if ru.strip():
        out["ru"] = ru.strip()
    return out or {"en": fallback}


def parse_options(text: str) -> list[dict]:
    """``value | English | Russian`` lines as inline options."""
    options = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        value = parts[0]
        entry: dict = {"value": value}
        labels = {}
        if len(parts) > 1 and parts[1]:
            labels["en"] = parts[1]
        if len(parts) > 2 and parts[2]:
            labels["ru"] = parts[2]
        if labels:
            entry["label"] = labels
        options.append(entry)
    return options


def options_text(options) -> str:
    lines = []
    for option in options:
        texts = option.label.as_dict() if option.label else {}
        lines.append(
            " | ".join([option.value, texts.get("en", ""), texts.get("ru", "")]).rstrip(" |")
        )
    return "\n".join(lines)


def _default(type_name: str, text: str):
    text = text.strip()
    if not text:
        return None
    if type_name == "boolean":
        return text.lower() in ("true", "yes", "1", "да", "on")
    if type_name in ("integer", "rating") and re.fullmatch(r"-?\d+", text):
        return int(text)
    if type_name in ("decimal", "money", "percent") and re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) if "." in text else int(text)
    return text


# ------------------------------------------------------------------------ entities
@bp.get("/entities")
def entities():
    catalog = C.catalog()
    return render_template(
        "admin/entities.html",
        entities=sorted(catalog.entities.values(), key=lambda e: C.label(e).lower()),
    )


@bp.post("/entities")
def add_entity():
    form = request.form
    name = form.get("name", "").strip()
    if not NAME.match(name):
        return review(
            [],
            [
                C._(
                    "Field names use lowercase letters, digits and underscores, starting with a letter."
                )
            ],
            url_for("ui_admin.entities"),
        )
    document = {
        "entity": name,
        "label": _label(
            form.get("label_en", ""), form.get("label_ru", ""), name.replace("_", " ").capitalize()
        ),
        "plural": _label(
            form.get("plural_en", ""),
            form.get("plural_ru", ""),
            name.replace("_", " ").capitalize() + "s",
        ),
        "title": "name",
        "search": ["name"],
        "fields": {
            "name": {
                "type": "text",
                "required": True,
                "max_length": 200,
                "label": {"en": "Name", "ru": "Название"},
            }
        },
    }
    return review(
        [("entity", document)],
        [C._("Add entity %(entity)s", entity=name)],
        url_for("ui_admin.entity", name=name),
    )


@bp.get("/entities/<name>")
def entity(name: str):
    from .rules import rules_view  # rules.py imports this module

    entity = entity_or_404(name)
    catalog = C.catalog()
    form = form_for(catalog, entity)
    placements = []
    for t_index, tab in enumerate(form.tabs):
        for s_index, section in enumerate(tab.sections):
            if section.related:
                continue
            for c_index, _column in enumerate(section.columns or ((),)):
                where = " › ".join(
                    x
                    for x in (
                        C.label(tab.label) if tab.label else "",
                        C.label(section.label) if section.label else "",
                    )
                    if x
                )
                placements.append(
                    (
                        f"{t_index}:{s_index}:{c_index}",
                        f"{where or C._('Section')} · {C._('Column')} {c_index + 1}",
                    )
                )
    return render_template(
        "admin/entity.html",
        entity=entity,
        fields=list(entity.fields.values()),
        types=ADDABLE,
        option_sets=sorted(catalog.option_sets),
        targets=sorted(catalog.entities),
        placements=placements,
        list_views=[v for v in catalog.views_of(entity.name) if v.kind == "list"],
        rules=rules_view(entity),
    )


@bp.post("/entities/<name>/labels")
def change_entity(name: str):
    entity = entity_or_404(name)
    form = request.form
    document = {
        "extend": entity.name,
        "label": _label(form.get("label_en", ""), form.get("label_ru", ""), entity.name),
        "plural": _label(form.get("plural_en", ""), form.get("plural_ru", ""), entity.name),
    }
    summary = [C._("Change entity %(entity)s", entity=entity.name)]
    return review([("extend", document)], summary, url_for("ui_admin.entity", name=entity.name))


def field_spec(form, type_name: str, name: str) -> dict:
    """The definition of a field from the add/edit form."""
    spec: dict = {
        "type": type_name,
        "label": _label(
            form.get("label_en", ""), form.get("label_ru", ""), name.replace("_", " ").capitalize()
        ),
    }
    if form.get("required"):
        spec["required"] = True
    default = _default(type_name, form.get("default", ""))
    if default is not None:
        spec["default"] = default
    if type_name in ("choice", "multi_choice"):
        if form.get("option_set"):
            spec["options"] = form["option_set"]
        else:
            options = parse_options(form.get("options", ""))
            if options:
                spec["options"] = options
    if type_name in ("lookup", "many_to_many"):
        spec["to"] = form.get("to", "")
        if type_name == "lookup":
            spec["on_delete"] = "restrict" if spec.get("required") else "set_null"
    max_length = parse_id(form.get("max_length"))
    if type_name == "text" and max_length is not None:
        spec["max_length"] = max_length
    help_en, help_ru = form.get("help_en", ""), form.get("help_ru", "")
    if help_en.strip() or help_ru.strip():
        spec["help"] = _label(help_en, help_ru, "")
    return spec


@bp.post("/entities/<name>/fields")
def add_field(name: str):
    entity = entity_or_404(name)
    form = request.form
    field_name = form.get("name", "").strip()
    type_name = form.get("type", "text")
    back = url_for("ui_admin.entity", name=entity.name)
    if not NAME.match(field_name) or field_name in SYSTEM_COLUMNS:
        return review(
            [],
            [
                C._(
                    "Field names use lowercase letters, digits and underscores, starting with a letter."
                )
            ],
            back,
        )
    if field_name in entity.fields:
        return review([], [C._("A field named %(field)s exists already.", field=field_name)], back)
    if type_name not in FIELD_TYPES:
        abort(400)
    spec = field_spec(form, type_name, field_name)
    documents: list[tuple[str, dict]] = [
        ("extend", {"extend": entity.name, "fields": {field_name: spec}})
    ]
    summary = [
        C._(
            "Add field %(field)s (%(type)s) to %(entity)s",
            field=field_name,
            type=type_name,
            entity=C.label(entity),
        )
    ]
    placement = form.get("placement", "")
    if placement:
        document = _placed(entity, field_name, placement)
        if document is not None:
            form_name, form_doc = document
            documents.append(("forms", {"forms": {form_name: form_doc}}))
            summary.append(
                C._("Place %(field)s on form %(form)s", field=field_name, form=form_name)
            )
    for view_name in form.getlist("views"):
        view = C.catalog().views.get(view_name)
        if view is None or view.entity != entity.name:
            continue
        doc = view_document(view)
        doc["columns"] = [*doc.get("columns", []), field_name]
        documents.append(("views", {"views": {view_name: doc}}))
        summary.append(C._("Show %(field)s in view %(view)s", field=field_name, view=view_name))
    return review(documents, summary, back)


def _placed(entity: Entity, field_name: str, placement: str):
    """The entity's main form with a field added at ``tab:section:column``."""
    try:
        t_index, s_index, c_index = (int(p) for p in placement.split(":"))
    except ValueError:
        return None
    form = form_for(C.catalog(), entity)
    document = form_document(form)
    try:
        section = document["tabs"][t_index]["sections"][s_index]
    except (IndexError, KeyError):
        return None
    columns = section.setdefault("columns", [[]])
    while len(columns) <= c_index:
        columns.append([])
    columns[c_index].append(field_name)
    columns[:] = [c for c in columns if c]
    name = form.name if form.solution else f"{entity.name}_main"
    document["default"] = True
    return name, document


@bp.get("/entities/<name>/fields/<field_name>")
def edit_field(name: str, field_name: str):
    entity = entity_or_404(name)
    field = entity.fields.get(field_name)
    if field is None:
        abort(404)
    inline = field.type in ("choice", "multi_choice") and not isinstance(
        field.params.get("options"), str
    )
    return render_template(
        "admin/field.html",
        entity=entity,
        field=field,
        labels=field.label.as_dict(),
        help=field.help.as_dict() if field.help else {},
        options=options_text(field.choices) if inline else "",
        option_set=field.params.get("options") if not inline else None,
        default=""
        if field.default is None
        else str(field.default).lower()
        if isinstance(field.default, bool)
        else str(field.default),
    )


@bp.post("/entities/<name>/fields/<field_name>")
def change_field(name: str, field_name: str):
    entity = entity_or_404(name)
    field: Field | None = entity.fields.get(field_name)
    if field is None:
        abort(404)
    form = request.form
    spec: dict = {
        "type": field.type,
        "label": _label(form.get("label_en", ""), form.get("label_ru", ""), field_name),
    }
    spec["required"] = bool(form.get("required"))
    default = _default(field.type, form.get("default", ""))
    if default is not None:
        spec["default"] = default
    help_en, help_ru = form.get("help_en", ""), form.get("help_ru", "")
    if help_en.strip() or help_ru.strip():
        spec["help"] = _label(help_en, help_ru, "")
    if field.type in ("choice", "multi_choice") and "options" in form:
        options = parse_options(form["options"])
        if options:
            spec["options"] = options
    # The customization layer overlays the field's definition: keys not given here (its
    # target, limits, formula or rollup) keep what the pack defined.
    document = {"extend": entity.name, "fields": {field_name: spec}}
    summary = [
        C._("Change field %(field)s of %(entity)s", field=field_name, entity=C.label(entity))
    ]
    return review([("extend", document)], summary, url_for("ui_admin.entity", name=entity.name))


@bp.post("/entities/<name>/fields/<field_name>/remove")
def remove_field(name: str, field_name: str):
    entity = entity_or_404(name)
    if field_name not in entity.fields:
        abort(404)
    document = {"extend": entity.name, "remove": [field_name]}
    summary = [
        C._(
            "Remove field %(field)s from %(entity)s (its column and data are kept)",
            field=field_name,
            entity=C.label(entity),
        )
    ]
    return review([("extend", document)], summary, url_for("ui_admin.entity", name=entity.name))


# ------------------------------------------------------------------------ option sets
@bp.get("/option_sets")
def option_sets():
    catalog = C.catalog()
    return render_template(
        "admin/option_sets.html",
        option_sets=sorted(catalog.option_sets.values(), key=lambda o: o.name),
    )


@bp.get("/option_sets/<name>")
def option_set(name: str):
    option_set = C.catalog().option_sets.get(name)
    if option_set is None:
        abort(404)
    used_by = [
        (e, f)
        for e in C.catalog().entities.values()
        for f in e.fields.values()
        if f.params.get("options") == name
    ]
    return render_template(
        "admin/option_set.html",
        option_set=option_set,
        labels=option_set.label.as_dict(),
        options=options_text(option_set.options),
        used_by=used_by,
    )


@bp.post("/option_sets/<name>")
def change_option_set(name: str):
    catalog = C.catalog()
    current = catalog.option_sets.get(name)
    if current is None:
        abort(404)
    options = parse_options(request.form.get("options", ""))
    colors = {o.value: o.color for o in current.options if o.color}
    for option in options:
        if option["value"] in colors:
            option["color"] = colors[option["value"]]
    document = {
        "option_sets": {
            name: {
                "label": _label(
                    request.form.get("label_en", ""), request.form.get("label_ru", ""), name
                ),
                "options": options,
            }
        }
    }
    removed = set(current.values) - {o["value"] for o in options}
    risks = []
    if removed:
        for entity in catalog.entities.values():
            for f in entity.fields.values():
                if f.params.get("options") != name or not f.stored:
                    continue
                op = "in" if f.type == "choice" else "contains"
                try:
                    counted = C.store().records(entity.name).count([f.name, op, sorted(removed)])
                except Exception:  # counting is advice: a failure must not block the plan
                    continue
                if counted.value:
                    risks.append(
                        C._(
                            "%(where)s: %(count)s record(s) hold %(values)s",
                            where=f"{entity.name}.{f.name}",
                            count=counted.value,
                            values=", ".join(sorted(removed)),
                        )
                    )
    summary = [C._("Change option set %(name)s", name=name)]
    return review(
        [("option_sets", document)], summary, url_for("ui_admin.option_set", name=name), risks=risks
    )
