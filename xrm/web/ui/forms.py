"""Record forms: tabs, sections and columns from the form definition (or a generated one),
a widget per field type, visible_if/required_if re-evaluated on the server as the user
edits, field errors shown in place without losing input, stale saves shown as conflicts,
the stage bar, related lists, the history timeline, notes with attachments, and buttons
for the processes the user may start by hand (posted to ``inbox.start``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import escape

from ...forms import BoundForm, quick_create_form
from ...metadata import CoercionError, Entity
from ...metadata.filters import system_field
from ...metadata.model import Form
from ...storage.files import check_file_values
from ...storage.records import ALL_KEY, Conflict, Forbidden, ValidationFailed
from ..routing import parse_id
from . import context as C
from . import widgets as W
from .guards import guard, htmx
from .inbox import record_actions
from .layouts import form_for, main_view
from .timeline import timeline_page

bp = guard(Blueprint("ui_forms", __name__))


def entity_or_404(name: str) -> Entity:
    entity = C.catalog().entity_of(name)
    if entity is None:
        abort(404)
    return entity


def readable_or_404(entity: Entity, record_id: int) -> None:
    """NotFound (404) unless the user may read the record.  Before a write: a record that
    exists but is not theirs must be answered as one that does not exist (the write itself
    would say "you may not update this ..."), so that nobody can probe which ids exist."""
    C.records(entity).get(record_id, fields=["id"])


# ------------------------------------------------------------------------ layout
def _prefetch_titles(entity: Entity, form: Form, record: Mapping, posted: Mapping | None) -> None:
    titles = C.titles()
    for item in form.fields():
        f = entity.fields.get(item.field)
        if f is None:
            continue
        titles.want_value(f, record.get(f.name))
        if posted is not None and f.type in ("lookup", "user"):
            text = posted.get(f.name)
            ident = parse_id(text) if isinstance(text, str) else None
            if ident is not None:
                titles.want(f.target, ident)
    titles.want("user", record.get("owner"))
    titles.resolve()


def build_tabs(
    entity: Entity,
    form: Form,
    record: Mapping,
    *,
    posted=None,
    errors=None,
    creating=False,
    bound: BoundForm | None = None,
) -> tuple[list[dict], list[str]]:
    """The form's tabs as the template renders them, and the editable field names: the
    forms layer's tabs, sections and fields for this user, with their state for the
    values being edited."""
    bound = bound or W.bind(entity, record, posted, form=form, creating=creating)
    _prefetch_titles(entity, form, record, posted)
    editable: list[str] = []
    tabs = []
    for tab in bound.spec.tabs:
        sections = []
        for section in tab.sections:
            entry = {
                "id": section.id,
                "label": section.label,
                "visible": bound.section_visible(section),
                "conditional": section.visible_if is not None,
                "related": section.related,
                "columns": [],
            }
            for column in section.columns:
                views = [
                    W.view_of(
                        spec,
                        bound,
                        record,
                        posted=posted,
                        errors=errors,
                        creating=creating,
                        quick=True,
                    )
                    for spec in column
                ]
                editable.extend(v.name for v in views if not v.read_only)
                entry["columns"].append(views)
            sections.append(entry)
        invalid = any(v.errors for s in sections for c in s["columns"] for v in c)
        tabs.append({"id": tab.id, "label": tab.label, "sections": sections, "invalid": invalid})
    # the first tab with an error opens, so that no message hides behind another tab
    active = next((t for t in tabs if t["invalid"]), tabs[0] if tabs else None)
    for tab in tabs:
        tab["active"] = tab is active
    return tabs, editable


def stage_bar(entity: Entity, record: Mapping) -> dict | None:
    flow = entity.stages
    if flow is None or flow.field not in entity.fields or not record.get("id"):
        return None
    field = entity.fields[flow.field]
    current = record.get(flow.field)
    allowed = None
    if current in flow.steps:
        allowed = flow.steps[current].next
    names = list(flow.steps)
    position = names.index(current) if current in names else -1
    can_move = flow.field in C.writable_names(entity)
    steps = []
    for index, (name, stage) in enumerate(flow.steps.items()):
        option = field.option(name)
        requires = [C.label(entity.fields[n]) for n in stage.requires if n in entity.fields]
        state = (
            "current"
            if name == current
            else ("done" if index < position and not stage.closed else "todo")
        )
        steps.append(
            {
                "name": name,
                "label": C.label(option) if option else name,
                "state": state,
                "closed": stage.closed,
                "requires": requires,
                "allowed": can_move and name != current and (allowed is None or name in allowed),
                "probability": stage.probability,
            }
        )
    return {"field": flow.field, "label": C.label(field), "steps": steps, "current": current}


def header_of(entity: Entity, record: Mapping) -> list[tuple[str, str]]:
    if not record.get("id"):
        return []
    tz, locale = C.tz(), C.locale()
    out = []
    if record.get("owner") is not None:
        out.append((C._("Owner"), C.titles().title("user", record["owner"])))
    for name, text in (("created_at", "Created"), ("updated_at", "Modified")):
        if record.get(name):
            out.append(
                (C._(text), system_field(entity.name, name).format(record[name], locale, tz))
            )
    return out


def error_lines(entity: Entity, errors: Mapping | None) -> list[str]:
    """A refused save's messages for a summary or a toast, in the user's language, each
    after the label of its field ("Amount: required"); the record's own stand alone."""
    out = []
    for name, messages in (errors or {}).items():
        where = "" if name == ALL_KEY else C.path_label(entity, name)
        out.extend(f"{where}: {C.error(m)}" if where else C.error(m) for m in messages)
    return out


def render_form(
    entity: Entity,
    record: Mapping,
    *,
    posted=None,
    errors=None,
    conflict=None,
    status: int = 200,
    creating=False,
):
    form = form_for(C.catalog(), entity)
    tabs, editable = build_tabs(
        entity, form, record, posted=posted, errors=errors, creating=creating
    )
    ident = record.get("id")
    context = {
        "entity": entity,
        "form": form,
        "record": record,
        "creating": creating,
        "tabs": tabs,
        "editable": editable,
        "title": C._("New %(entity)s", entity=C.label(entity))
        if creating
        else C.record_title(entity, record),
        "header": header_of(entity, record),
        "stage": None if creating else stage_bar(entity, record),
        "errors": errors or {},
        # every problem at the top, labelled: next to its field a message may sit on
        # another tab, and one whose field is not on the form shows nowhere else
        "general_errors": error_lines(entity, errors),
        "conflict": conflict,
        "action": url_for("ui_forms.new", entity_name=entity.name)
        if creating
        else url_for("ui_forms.update", entity_name=entity.name, record_id=ident),
        "list_url": url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name),
        "can_delete": not creating and C.can(entity.name, "delete"),
        "can_update": creating or C.can(entity.name, "update"),
        "has_notes": not creating and "note" in C.catalog().entities and C.can("note", "read"),
        "actions": [] if creating else record_actions(entity, record),
        "next_url": C.safe_next(request.values.get("next")),
    }
    return render_template("ui/form.html", **context), status


# ------------------------------------------------------------------------ pages
@bp.get("/r/<entity_name>/new")
def new(entity_name: str):
    entity = entity_or_404(entity_name)
    if not C.can(entity.name, "create"):
        raise Forbidden(f"you may not create {entity.name} records")
    return render_form(entity, prefill_of(entity, request.args), creating=True)


def prefill_of(entity: Entity, args) -> dict:
    """Values a new record's form starts with, from the address (a related list's parent,
    a calendar's day and time): fields of the entity, read by their type."""
    prefill: dict = {}
    for name, value in args.items():
        f = entity.fields.get(name)
        if f is not None and value:
            try:
                prefill[name] = f.kind.coerce(
                    f, int(value) if f.type in ("lookup", "user") and value.isdigit() else value
                )
            except (CoercionError, ValueError, TypeError):  # a bad prefill is simply not used
                continue
    return prefill


@bp.post("/r/<entity_name>/new")
def create(entity_name: str):
    entity = entity_or_404(entity_name)
    service = C.records(entity)
    posted = W.posted_mapping(request.form)
    bound = W.bind(entity, {}, posted, creating=True)
    values, errors = W.read_form(bound, request.files)
    _own_files(entity, posted, values, None, errors)
    _keep_uploads(posted, values)
    if errors:
        return render_form(entity, {}, posted=posted, errors=errors, status=422, creating=True)
    try:
        record = service.create(values)
    except ValidationFailed as exc:
        return render_form(entity, {}, posted=posted, errors=exc.errors, status=422, creating=True)
    flash(C._("Saved."), "success")
    return _done(entity, record["id"])


def _own_files(entity: Entity, posted: dict, values: dict, current, errors: dict) -> None:
    """A file field may only be set to a file the user uploaded, or keep the record's own
    (a posted ``__kept`` value is the client's word); a refused one is not offered again."""
    refused = check_file_values(C.store(), entity, values, current, C.principal().user_id)
    for name, messages in refused.items():
        values.pop(name, None)
        posted[f"{name}__kept"] = ""
        errors.setdefault(name, []).extend(messages)


def _keep_uploads(posted: dict, values: Mapping) -> None:
    """A file uploaded with a form that fails to save stays uploaded (no second upload)."""
    for name, value in values.items():
        if isinstance(value, dict) and "key" in value:
            posted[f"{name}__kept"] = json.dumps(value)


def _done(entity: Entity, ident: int):
    close = request.form.get("_close")
    target = C.safe_next(request.form.get("next")) if close else None
    if close and not target:
        target = url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name)
    if not target:  # the read view, unless the user chose to stay in the form
        stay = "ui_forms.edit" if request.form.get("_stay") else "ui_record.view"
        target = url_for(stay, entity_name=entity.name, record_id=ident)
    if htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


@bp.get("/r/<entity_name>/<recid:record_id>/edit")
def edit(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    record = C.records(entity).get(record_id)
    return render_form(entity, record)


@bp.post("/r/<entity_name>/<recid:record_id>")
def update(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    service = C.records(entity)
    posted = W.posted_mapping(request.form)
    version = parse_id(request.form.get("_version"))
    current = service.get(record_id)
    values, errors = W.read_form(W.bind(entity, current, posted), request.files)
    _own_files(entity, posted, values, current, errors)
    _keep_uploads(posted, values)
    if errors:
        return render_form(entity, current, posted=posted, errors=errors, status=422)
    try:
        service.update(record_id, values, version=version)
    except ValidationFailed as exc:
        return render_form(entity, current, posted=posted, errors=exc.errors, status=422)
    except Conflict:
        fresh = service.get(record_id)
        return render_form(
            entity, fresh, posted=posted, conflict=conflict_of(entity, fresh, values), status=409
        )
    flash(C._("Saved."), "success")
    return _done(entity, record_id)


def conflict_of(entity: Entity, current: Mapping, mine: Mapping) -> dict:
    """What differs between the stored record and the values the user tried to save."""
    rows = []
    titles = C.titles()
    for name in mine:
        f = entity.fields.get(name)
        if f is None:
            continue
        titles.want_value(f, current.get(name))
    titles.resolve()
    for name, value in mine.items():
        f = entity.fields.get(name)
        if f is None:
            continue
        try:
            typed = f.kind.coerce_input(f, value, tz=C.tz(), locale=C.locale())
        except Exception:  # what the user typed may not even be valid: show it as typed
            typed = value
        if typed == current.get(name) or (
            typed in (None, [], "") and current.get(name) in (None, [], "")
        ):
            continue
        mine_text = C.text(f, typed) if typed is not value or not isinstance(value, str) else value
        rows.append(
            {"label": C.label(f), "current": C.text(f, current.get(name)), "mine": mine_text}
        )
    return {"rows": rows, "version": current.get("version")}


@bp.post("/r/<entity_name>/<recid:record_id>/delete")
def delete(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    version = parse_id(request.form.get("_version"))
    readable_or_404(entity, record_id)
    try:
        C.records(entity).delete(record_id, version=version)
    except (ValidationFailed, Conflict) as exc:
        message = (
            "; ".join(error_lines(entity, exc.errors))
            if isinstance(exc, ValidationFailed)
            else str(exc)
        )
        flash(message, "danger")
        return redirect(
            url_for("ui_record.view", entity_name=entity.name, record_id=record_id), code=303
        )
    flash(C._("Deleted."), "success")
    target = url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name)
    if htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


# ------------------------------------------------------------------------ quick create
@bp.route("/r/<entity_name>/quick-create", methods=["GET", "POST"])
def quick_create(entity_name: str):
    """The entity's quick-create form in a dialog opened from a lookup (``for``: the
    lookup's input name): on save the new record is handed back to be selected there."""
    entity = entity_or_404(entity_name)
    if not C.can(entity.name, "create"):
        raise Forbidden(f"you may not create {entity.name} records")
    form = quick_create_form(C.catalog(), entity)
    target = request.values.get("for", "")
    target = target if target.isidentifier() else ""
    posted = W.posted_mapping(request.form) if request.method == "POST" else None
    # a calendar opens the dialog with its day and time filled in (and reloads once saved)
    start = prefill_of(entity, request.args) if posted is None else {}
    reload = request.values.get("reload") == "1"
    bound = W.bind(entity, start, posted, form=form, creating=True)
    errors: dict = {}
    if posted is not None:
        values, errors = W.read_form(bound, request.files)
        if not errors:
            try:
                record = C.records(entity).create(values)
            except ValidationFailed as exc:
                errors = exc.errors
            else:
                return render_template(
                    "ui/_quick_created.html",
                    target=target,
                    ident=record["id"],
                    title=C.record_title(entity, record),
                    entity=entity,
                    reload=reload,
                )
    fields = [
        W.view_of(spec, bound, start, posted=posted, errors=errors, creating=True)
        for spec in bound.spec.fields.values()
    ]
    for view in fields:
        view.prefix = "q-"
    return render_template(
        "ui/_quick_create.html",
        entity=entity,
        title=C._("New %(entity)s", entity=C.label(entity)),
        fields=fields,
        editable=[v.name for v in fields if not v.read_only],
        target=target,
        reload=reload,
        general_errors=error_lines(
            entity, {k: v for k, v in errors.items() if k not in bound.spec.fields}
        ),
    ), (422 if errors else 200)


# ------------------------------------------------------------------------ live rules
@bp.post("/r/<entity_name>/form-state")
def form_state(entity_name: str):
    """Re-evaluate visible_if/required_if for what the form holds now: the conditional
    fields and sections come back as out-of-band swaps (the rules stay on the server)."""
    entity = entity_or_404(entity_name)
    record_id = parse_id(request.args.get("record_id"))
    base = C.records(entity).get(record_id) if record_id is not None else {}
    posted = W.posted_mapping(request.form)
    form = form_for(C.catalog(), entity)
    tabs, _editable = build_tabs(entity, form, base, posted=posted, creating=not base)
    trigger = request.headers.get("HX-Trigger-Name")
    fields, sections = [], []
    for tab in tabs:
        for section in tab["sections"]:
            if section["conditional"]:
                sections.append(section)
                continue
            for column in section["columns"]:
                fields.extend(v for v in column if v.conditional and v.name != trigger)
    return render_template("ui/_form_state.html", fields=fields, sections=sections, entity=entity)


# ------------------------------------------------------------------------ stages
@bp.post("/r/<entity_name>/<recid:record_id>/stage")
def move_stage(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    if entity.stages is None:
        abort(404)
    stage = request.form.get("stage", "")
    version = parse_id(request.form.get("_version"))
    service = C.records(entity)
    readable_or_404(entity, record_id)
    field = entity.fields[entity.stages.field]
    try:
        service.update(record_id, {field.name: stage}, version=version)
    except ValidationFailed as exc:
        current = service.get(record_id)
        posted = {"_fields": [field.name], field.name: stage}
        return render_form(entity, current, posted=posted, errors=exc.errors, status=422)
    except Conflict:
        current = service.get(record_id)
        posted = {"_fields": [field.name], field.name: stage}
        return render_form(
            entity,
            current,
            posted=posted,
            conflict=conflict_of(entity, current, {field.name: stage}),
            status=409,
        )
    option = field.option(stage)
    flash(C._("Moved to %(stage)s.", stage=C.label(option) if option else stage), "success")
    return _done(entity, record_id)


# ------------------------------------------------------------------------ timeline and notes
@bp.get("/r/<entity_name>/<recid:record_id>/timeline")
def timeline(entity_name: str, record_id: int):
    """A page of the record's timeline: the first with the note form, or with ``before``
    (an ISO moment) the entries older than it, for the "Older" button."""
    entity = entity_or_404(entity_name)
    readable_or_404(entity, record_id)
    before = None
    if request.args.get("before"):
        try:
            before = dt.datetime.fromisoformat(request.args["before"])
        except ValueError:
            abort(400)
        if before.tzinfo is None:
            before = before.replace(tzinfo=dt.UTC)
    entries, older = timeline_page(entity, record_id, before)
    return render_template(
        "ui/_timeline.html",
        entries=entries,
        entity=entity,
        record_id=record_id,
        page_only=before is not None,
        older_url=_older_url(entity, record_id, older),
    )


def _older_url(entity: Entity, record_id: int, older) -> str | None:
    if older is None:
        return None
    return url_for(
        "ui_forms.timeline",
        entity_name=entity.name,
        record_id=record_id,
        before=older.isoformat(),
    )


@bp.post("/r/<entity_name>/<recid:record_id>/notes")
def add_note(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    readable_or_404(entity, record_id)
    note_entity = C.catalog().entity_of("note")
    if note_entity is None:
        abort(404)
    body = request.form.get("body", "").strip()
    values: dict = {"regarding": {"entity": entity.name, "id": record_id}}
    if body:
        paragraphs = "".join(f"<p>{escape(line)}</p>" for line in body.splitlines() if line.strip())
        values["body"] = paragraphs
    if request.form.get("title"):
        values["title"] = request.form["title"][:200]
    errors: dict = {}
    upload = request.files.get("attachment")
    if upload is not None and upload.filename and "attachment" in note_entity.fields:
        stored, problem = W._store_upload(note_entity.fields["attachment"], upload)
        if problem:
            errors["attachment"] = [problem]
        else:
            values["attachment"] = stored
    if not errors:
        try:
            C.records(note_entity).create(values)
        except ValidationFailed as exc:
            errors = exc.errors
        except Forbidden as exc:
            errors = {ALL_KEY: [str(exc)]}
    entries, older = timeline_page(entity, record_id)
    status = 422 if errors else 200
    messages = error_lines(note_entity, errors)
    return render_template(
        "ui/_timeline.html",
        entries=entries,
        entity=entity,
        record_id=record_id,
        older_url=_older_url(entity, record_id, older),
        note_errors=messages,
        note_body=body if errors else "",
    ), status
