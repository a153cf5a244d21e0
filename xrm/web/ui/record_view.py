"""The read view of a record (``GET /r/<entity>/<id>``) and its inline edit.

A record opens as a page to read: its title, the stage bar, a few highlighted fields, then
the form's tabs and sections with every value formatted for the reader (the field
registry's locale formatting through ``context.display``), the related lists, the
timeline with notes and the buttons of the processes the user may start.  The full edit
form lives at ``/r/<entity>/<id>/edit`` (``forms.py``).

Inline edit changes one field: the pencil fetches the field's widget (the same widgets
as the form), and the value is posted alone to ``/r/<entity>/<id>/field/<name>`` with the
version the page showed, so the records service refuses a stale write as a conflict.  A
refused value stays in its input with the message under it.  Fields the form hides
(``visible_if``) or the user may not read are not on the page; read-only fields and users
who may not update the record get no pencil, and a post for them is refused (403).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from ...metadata import Entity
from ...metadata.evaluate import matches, record_getter
from ...metadata.model import Form, FormField
from ...storage.records import Conflict, Forbidden, ValidationFailed
from ..routing import parse_id
from . import context as C
from . import widgets as W
from .forms import (
    _keep_uploads,
    _own_files,
    build_tabs,
    conflict_of,
    entity_or_404,
    error_lines,
    header_of,
    stage_bar,
)
from .guards import guard, htmx
from .inbox import record_actions
from .layouts import form_for, main_view
from .memberships import memberships
from .search import note_view
from .sla_status import sla_status
from .tree import hierarchy_cards

bp = guard(Blueprint("ui_record", __name__))

#: How many fields the highlights panel shows.
HIGHLIGHTS = 4
#: Types too long or too many-valued for a highlight.
_NOT_HIGHLIGHTED = frozenset(
    ("rich_text", "long_text", "json", "file", "many_to_many", "children", "tags", "multi_choice")
)
#: Types whose shown value holds a link: only the pencil opens them for editing, so that a
#: click on the link follows it.
_LINKED = frozenset(
    ("lookup", "any_lookup", "many_to_many", "email", "phone", "url", "file", "rich_text")
)


@dataclass
class ReadField:
    """One field as the read view shows it: the form's field view (label, help, widget,
    errors), the value formatted for the reader, and whether it may be edited in place."""

    view: W.FieldView
    shown: Markup
    editable: bool
    editing: bool = False
    saved: bool = False

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def clickable(self) -> bool:
        return self.editable and self.view.field.type not in _LINKED


# ------------------------------------------------------------------------ building
def shown_value(entity: Entity, name: str, record: Mapping) -> Markup:
    """A stored value as the reader sees it; rich text sanitized again on the way out."""
    f = entity.fields[name]
    value = record.get(name)
    if f.type == "rich_text":
        return C.rich_html(value)
    return C.display(f, value)


def may_update(entity: Entity, record: Mapping) -> bool:
    """Whether the user may update this very record (their scope, not only the entity's)."""
    if not C.can(entity.name, "update"):
        return False
    try:
        C.access().check(C.records(entity), "update", dict(record))
    except Forbidden:
        return False
    return True


def _read_field(view: W.FieldView, entity: Entity, record: Mapping, updatable: bool, **state):
    editable = updatable and not view.read_only
    return ReadField(
        view=view,
        shown=shown_value(entity, view.name, record),
        editable=editable,
        editing=editable and state.get("editing") == view.name,
        saved=state.get("saved") == view.name,
    )


def read_tabs(
    entity: Entity,
    form: Form,
    record: Mapping,
    *,
    updatable: bool,
    editing: str | None = None,
    posted: Mapping | None = None,
    errors: Mapping | None = None,
    saved: str | None = None,
) -> tuple[list[dict], list[ReadField]]:
    """The form's tabs with what the reader may see of them, and the highlights.

    Sections and fields whose ``visible_if`` is false are left out, as are fields the user
    may not read (``build_tabs`` already drops those) and sections left empty."""
    tabs, _editable = build_tabs(entity, form, record, posted=posted, errors=errors)
    out, highlights_from = [], None
    for tab in tabs:
        sections, opened = [], False
        for section in tab["sections"]:
            if not section["visible"]:
                continue
            if section["related"] is not None:
                sections.append(section)
                # a list just changed (records linked or unlinked) keeps its tab open
                opened = opened or (saved is not None and section["related"].name == saved)
                continue
            columns = [
                [
                    _read_field(v, entity, record, updatable, editing=editing, saved=saved)
                    for v in column
                    if v.visible
                ]
                for column in section["columns"]
            ]
            columns = [c for c in columns if c]
            if not columns:
                continue
            sections.append({**section, "columns": columns})
            if highlights_from is None:
                highlights_from = columns
        if sections:
            # the tab of the field being edited or just saved stays open after the swap
            active = opened or any(
                f.editing or f.saved for s in sections for c in s.get("columns", ()) for f in c
            )
            out.append({**tab, "sections": sections, "active": active})
    if out and not any(t["active"] for t in out):
        out[0]["active"] = True
    return out, highlights(entity, highlights_from or [])


def highlights(entity: Entity, columns: list[list[ReadField]]) -> list[ReadField]:
    """The record's key facts: the first fields of the form's first section, read across
    its columns row by row as the page lays them out, leaving out the title (it heads the
    page) and long or many-valued fields; at most ``HIGHLIGHTS``."""
    out: list[ReadField] = []
    depth = max((len(c) for c in columns), default=0)
    for row in range(depth):
        for column in columns:
            if row >= len(column) or len(out) >= HIGHLIGHTS:
                continue
            f = column[row]
            if f.name == entity.title or f.view.field.type in _NOT_HIGHLIGHTED:
                continue
            out.append(f)
    return out


def render_view(
    entity: Entity,
    record: Mapping,
    *,
    editing: str | None = None,
    posted: Mapping | None = None,
    errors: Mapping | None = None,
    conflict: dict | None = None,
    saved: str | None = None,
    status: int = 200,
):
    form = form_for(C.catalog(), entity)
    updatable = may_update(entity, record)
    tabs, key_fields = read_tabs(
        entity,
        form,
        record,
        updatable=updatable,
        editing=editing,
        posted=posted,
        errors=errors,
        saved=saved,
    )
    ident = record["id"]
    others = {k: v for k, v in (errors or {}).items() if k != editing}
    context = {
        "entity": entity,
        "record": record,
        "title": C.record_title(entity, record),
        "header": header_of(entity, record),
        "stage": stage_bar(entity, record),
        "highlights": key_fields,
        "tabs": tabs,
        "conflict": conflict,
        # messages about the record or other fields, shown under the field being edited
        "other_errors": error_lines(entity, others),
        # a conflict offers to save again over the current version
        "form_version": conflict["version"] if conflict else record.get("version"),
        "list_url": url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name),
        "edit_url": url_for("ui_forms.edit", entity_name=entity.name, record_id=ident),
        "can_update": updatable,
        "can_delete": C.can(entity.name, "delete"),
        # a printable document when the entity's pack declares a print form (printing.py)
        "print_url": url_for("ui_print.document", entity_name=entity.name, record_id=ident)
        if C.catalog().print_form_of(entity.name)
        else None,
        "actions": record_actions(entity, record),
        "hierarchies": hierarchy_cards(entity, record),
        "memberships": memberships(entity, record),
        "sla": sla_status(entity, record),
    }
    return render_template("ui/record.html", **context), status


def _shown_item(entity: Entity, record: Mapping, name: str) -> FormField:
    """The form's item of a field the read view shows; 404 for one it does not show."""
    form = form_for(C.catalog(), entity)
    if name not in entity.fields or name not in C.readable_names(entity):
        abort(404)
    getter = record_getter(dict(record))
    ctx = W.filter_context()
    for tab in form.tabs:
        for section in tab.sections:
            if section.visible_if is not None and not matches(section.visible_if, getter, ctx):
                continue
            for column in section.columns:
                for item in column:
                    if item.field != name:
                        continue
                    if item.visible_if is not None and not matches(item.visible_if, getter, ctx):
                        abort(404)
                    return item
    abort(404)


def _editable_item(entity: Entity, record: Mapping, name: str) -> tuple[FormField, W.FieldView]:
    """The item and widget of a field the user may change here, else Forbidden (403)."""
    item = _shown_item(entity, record, name)
    if not may_update(entity, record):
        raise Forbidden(f"you may not update this {entity.name}")
    view = W.field_view(entity, item, record, writable=C.writable_names(entity))
    if view is None or view.read_only:
        raise Forbidden(f"{name} is read-only")
    return item, view


# ------------------------------------------------------------------------ pages
@bp.get("/r/<entity_name>/<recid:record_id>")
def view(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    record = C.records(entity).get(record_id)
    note_view(entity.name, record_id)  # among the user's recent records (global search)
    # ?edit=<field> opens that field for editing without scripts (the pencil's href)
    editing = request.args.get("edit") or None
    return render_view(entity, record, editing=editing)


@bp.get("/r/<entity_name>/<recid:record_id>/field/<field_name>")
def field(entity_name: str, record_id: int, field_name: str):
    """One field of the read view: its value, or with ``edit=1`` its input, carrying the
    version the page was read at (``version=``) so that a save over a newer one conflicts."""
    entity = entity_or_404(entity_name)
    record = C.records(entity).get(record_id)
    editing = request.args.get("edit") == "1"
    if editing:
        _item, view = _editable_item(entity, record, field_name)
    else:
        item = _shown_item(entity, record, field_name)
        view = W.field_view(entity, item, record, writable=C.writable_names(entity))
        if view is None:
            abort(404)
    rf = _read_field(
        view,
        entity,
        record,
        may_update(entity, record),
        editing=field_name if editing else None,
    )
    version = parse_id(request.args.get("version")) or record.get("version")
    return render_template(
        "ui/_inline_field.html",
        f=rf,
        entity=entity,
        record=record,
        form_version=version,
        conflict=None,
        other_errors=[],
    )


@bp.post("/r/<entity_name>/<recid:record_id>/field/<field_name>")
def save_field(entity_name: str, record_id: int, field_name: str):
    """Save one field through the records service with the page's version."""
    entity = entity_or_404(entity_name)
    service = C.records(entity)
    current = service.get(record_id)
    _editable_item(entity, current, field_name)
    posted = W.posted_mapping(request.form)
    posted["_fields"] = [field_name]  # this one field is read, whatever else comes along
    version = parse_id(request.form.get("_version"))
    values, errors = W.read_values(
        entity, posted, request.files, C.writable_names(entity), [field_name]
    )
    _own_files(entity, posted, values, current, errors)
    _keep_uploads(posted, values)
    # required_if and the other rules are the records service's, as for every write

    def again(**state):
        return render_view(entity, current, editing=field_name, posted=posted, **state)

    if errors:
        return again(errors=errors, status=422)
    try:
        service.update(record_id, values, version=version)
    except ValidationFailed as exc:
        return again(errors=exc.errors, status=422)
    except Conflict:
        current = service.get(record_id)
        return again(conflict=conflict_of(entity, current, values), status=409)
    if htmx():
        return render_view(entity, service.get(record_id), saved=field_name)
    flash(C._("Saved."), "success")
    return redirect(url_for("ui_record.view", entity_name=entity.name, record_id=record_id), 303)
