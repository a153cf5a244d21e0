"""A widget per field type: what an input shows, and what a posted form means.

The records service owns coercion and validation, so the UI sends it the text people
typed (or the ids a lookup picked) and shows its field-level errors back.  The same
``FieldView`` renders a field on the first load, after a failed save (with exactly what
was typed), and when ``visible_if``/``required_if`` are re-evaluated as the user edits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, url_for
from markupsafe import Markup

from ...forms import WIDGETS, BoundForm, FieldSpec, Reader, fields_form, form_for, record_form
from ...metadata import Entity, Field
from ...metadata.fieldtypes import in_zone
from ...metadata.filters import FilterContext
from ...metadata.model import FormField
from ...storage.files import put_file
from ..routing import parse_id
from . import context as C
from .i18n import translate_error

__all__ = ["WIDGETS", "FieldView", "field_view", "reader", "view_of"]

MiB = 1024 * 1024


@dataclass
class FieldView:
    """One field as a form shows it."""

    name: str
    field: Field
    label: str
    widget: str
    value: str = ""  # text for single-valued inputs
    values: list = field(default_factory=list)  # for multi-valued inputs: (value, text) pairs
    options: list = field(default_factory=list)  # (value, text) choices of a select
    required: bool = False
    visible: bool = True
    read_only: bool = False
    conditional: bool = False  # has visible_if / required_if: re-rendered as the user edits
    errors: list[str] = field(default_factory=list)
    display: Markup = Markup("")
    help: str = ""
    extra: dict = field(default_factory=dict)
    prefix: str = ""  # another form on the page (a quick-create dialog) keeps ids apart

    @property
    def input_id(self) -> str:
        return f"{self.prefix}f-{self.name}"


# ------------------------------------------------------------------------ value -> text
def input_text(f: Field, value) -> str:
    """A stored value as the text its input shows (and posts back unchanged): numbers and
    phones as the user's locale writes them, which the records service reads back."""
    if value is None:
        return ""
    if f.type == "datetime" or (
        f.type in ("formula", "rollup") and f.params.get("result") == "datetime"
    ):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return in_zone(value, C.tz()).strftime("%Y-%m-%dT%H:%M")
    if f.type == "date":
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if f.type == "time":
        return value.strftime("%H:%M") if isinstance(value, dt.time) else str(value)
    if f.type == "boolean":
        return "true" if value else ""
    if f.type == "any_lookup":
        return f"{value['entity']}:{value['id']}" if value else ""
    if f.type == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    if f.type == "file":
        return json.dumps(value) if value else ""
    return f.kind.edit_text(f, value, C.locale())


def _posted_text(posted: Mapping, name: str) -> str:
    value = posted.get(name)
    if isinstance(value, list):
        return value[0] if value else ""
    return value or ""


def _posted_list(posted: Mapping, name: str) -> list[str]:
    value = posted.get(name)
    if value is None:
        return []
    return [v for v in (value if isinstance(value, list) else [value]) if v != ""]


# ------------------------------------------------------------------------ building
def reader() -> Reader:
    """The request's user as the forms layer sees them: permissions, language, zone."""
    return Reader(access=C.access(), locale=C.locale(), tz=C.tz(), translate=translate_error)


def bind(
    entity: Entity, record: Mapping, posted: Mapping | None = None, *, form=None, creating=False
) -> BoundForm:
    """The entity's form (its main one unless given) holding a record and what was posted."""
    who = reader()
    spec = record_form(C.catalog(), entity, who, form or form_for(C.catalog(), entity))
    return spec.bind(who, record, posted, now=C.store().clock.now(), creating=creating)


def view_of(
    spec: FieldSpec,
    bound: BoundForm,
    record: Mapping,
    *,
    posted: Mapping | None = None,
    errors: Mapping | None = None,
    creating: bool = False,
    writable: set[str] | None = None,
    quick: bool = False,
) -> FieldView:
    """How the page shows one field of a bound form (its state comes from the form)."""
    f = spec.field
    view = FieldView(name=f.name, field=f, label=spec.label, widget=spec.widget, help=spec.help)
    view.read_only = spec.read_only or (writable is not None and f.name not in writable)
    view.conditional = spec.conditional
    view.visible = bound.visible(f.name)
    view.required = bound.required(f.name)
    view.errors = [C.error(m) for m in (errors or {}).get(f.name, ())]
    value = record.get(f.name)
    # a new record's inputs start with the defaults; a read-only one keeps showing its
    # default after a refused save (the records service will set it)
    if creating and value is None and (posted is None or view.read_only):
        value = spec.default_for(bound.reader, bound.now)
    use_posted = posted is not None and not view.read_only and _was_posted(posted, f)
    _fill(view, spec, value, posted if use_posted else None)
    if view.read_only:
        view.display = C.rich_html(value) if f.type == "rich_text" else C.display(f, value)
    elif quick and f.type == "lookup" and C.can(f.target, "create"):
        # a record form's lookup offers "+ New": the target's quick-create form in a dialog
        view.extra["quick_url"] = url_for(
            "ui_forms.quick_create", entity_name=f.target, **{"for": f.name}
        )
    return view


def field_view(
    entity: Entity,
    item: FormField,
    record: Mapping,
    *,
    posted: Mapping | None = None,
    errors: Mapping | None = None,
    writable: set[str] | None = None,
    creating: bool = False,
) -> FieldView | None:
    """The view of one field outside a whole form (an inline edit), or None when the
    field is gone or hidden from the user."""
    who = reader()
    spec = fields_form(C.catalog(), entity, [item], who)
    if item.field not in spec.fields:
        return None
    bound = spec.bind(who, record, posted, now=C.store().clock.now(), creating=creating)
    return view_of(
        spec.fields[item.field],
        bound,
        record,
        posted=posted,
        errors=errors,
        creating=creating,
        writable=writable,
    )


def _was_posted(posted: Mapping, f: Field) -> bool:
    names = posted.get("_fields") or []
    return f.name in names


def _fill(view: FieldView, spec: FieldSpec, value, posted: Mapping | None) -> None:
    """Set what the input shows: the posted text after a failed save, else the value."""
    widget, f = view.widget, spec.field
    if widget in ("choice",):
        view.options = list(spec.choices)
        view.value = _posted_text(posted, f.name) if posted is not None else (value or "")
        return
    if widget == "multi_choice":
        view.options = list(spec.choices)
        labels = dict(spec.choices)
        chosen = _posted_list(posted, f.name) if posted is not None else list(value or ())
        view.values = [(v, labels.get(v, v)) for v in chosen]
        return
    if widget in ("lookup", "user"):
        ident = _posted_text(posted, f.name) if posted is not None else value
        view.value = str(ident) if ident not in (None, "") else ""
        view.extra["url"] = (
            url_for("ui_shell.lookup", entity_name=f.target)
            if f.type == "lookup"
            else url_for("ui_shell.lookup_users")
        )
        ident = parse_id(view.value)
        if ident is not None:
            view.values = [(view.value, C.titles().title(f.target, ident))]
        return
    if widget == "any_lookup":
        text = _posted_text(posted, f.name) if posted is not None else input_text(f, value)
        view.value = text
        allowed = ",".join(f.params.get("to") or ())
        view.extra["url"] = (
            url_for("ui_shell.lookup_any", to=allowed)
            if allowed
            else url_for("ui_shell.lookup_any")
        )
        entity_name, _, raw = text.partition(":")
        ident = parse_id(raw)
        if ident is not None:
            target = C.catalog().entity_of(entity_name)
            title = C.titles().title(entity_name, ident)
            view.values = [(text, f"{title} ({C.label(target)})" if target else title)]
        return
    if widget == "many_to_many":
        chosen = (
            _posted_list(posted, f.name) if posted is not None else [str(v) for v in value or ()]
        )
        view.extra["url"] = url_for("ui_shell.lookup", entity_name=f.target)
        view.values = [
            (v, C.titles().title(f.target, parse_id(v)) if parse_id(v) else v) for v in chosen
        ]
        return
    if widget == "boolean":
        view.value = (
            ("true" if _posted_text(posted, f.name) else "")
            if posted is not None
            else input_text(f, value)
        )
        return
    if widget == "rating":
        view.extra["max"] = f.params.get("max", 5)
        view.value = _posted_text(posted, f.name) if posted is not None else input_text(f, value)
        return
    if widget == "file":
        kept = (
            _posted_text(posted, f"{f.name}__kept") if posted is not None else input_text(f, value)
        )
        view.value = kept
        current = None
        if kept:
            try:
                current = json.loads(kept)
            except ValueError:
                current = None
        view.extra["current"] = current
        view.extra["accept"] = ",".join(f.params.get("accept") or ())
        view.extra["limit"] = upload_limit(f)
        view.extra["limit_text"] = _size_text(upload_limit(f))
        return
    if widget == "money":
        view.extra["currency"] = C.currency(f)
    if widget in ("number", "percent", "money"):
        view.extra["inputmode"] = "numeric" if f.type == "integer" else "decimal"
    view.value = _posted_text(posted, f.name) if posted is not None else input_text(f, value)


def filter_context() -> FilterContext:
    p = C.principal()
    return FilterContext(user_id=p.user_id, tz=C.tz(), now=C.store().clock.now())


# ------------------------------------------------------------------------ evaluation
def evaluation_record(entity: Entity, base: Mapping, posted: Mapping) -> dict:
    """The record as the main form currently has it (for visible_if/required_if): the
    stored values with what the user typed on top, parsed where it can be (else empty)."""
    return bind(entity, base, posted).evaluation


def posted_mapping(form) -> dict:
    """request.form as {name: text or [texts]} (lists only where a name repeats)."""
    out: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        out[key] = values if len(values) > 1 or key in ("_fields",) else values[0]
    out.setdefault("_fields", [])
    return out


# ------------------------------------------------------------------------ posted -> values
def upload_limit(f: Field) -> int:
    """Bytes a file field accepts: its own limit, never more than a request may carry."""
    request_limit = current_app.config.get("MAX_CONTENT_LENGTH") or 16 * MiB
    own = f.params.get("max_size_mb")
    limit = int(own * MiB) if own else request_limit
    return min(limit, request_limit)


def _size_text(size: int) -> str:
    from babel.numbers import format_decimal

    if size >= MiB:
        return f"{format_decimal(round(size / MiB, 1), locale=C.locale())} MB"
    return f"{format_decimal(round(size / 1024, 1), locale=C.locale())} KB"


def read_values(
    entity: Entity, posted: Mapping, files, writable: set[str], names: list[str]
) -> tuple[dict, dict]:
    """The values to save from a post of some fields (an inline or bulk edit), and the
    errors found reading them (field -> messages in the user's language).

    Only the named fields the user may change are read, so a user cannot set a field by
    adding it to the request that the page did not offer."""
    items = [FormField(n) for n in names if n in entity.fields and n in writable]
    who = reader()
    spec = fields_form(C.catalog(), entity, items, who)
    return read_form(spec.bind(who, {}, posted, now=C.store().clock.now()), files)


def read_form(bound: BoundForm, files) -> tuple[dict, dict]:
    """The values to save from a bound form's post and the errors reading them: the forms
    layer parses the fields in the user's locale and checks what the form requires; the
    files uploaded with it are stored here (uploads are the web's part)."""
    bound.validate()
    values = dict(bound.values)
    errors = {name: list(messages) for name, messages in bound.errors.items()}
    posted = bound.posted or {}
    for name in bound.submitted:
        f = bound.spec.fields[name].field
        if f.type != "file":
            continue
        upload = files.get(name) if files else None
        if upload is not None and upload.filename:
            stored, problem = _store_upload(f, upload)
            if problem:
                errors.setdefault(name, []).append(problem)
                continue
            values[name] = stored
        elif _posted_text(posted, f"{name}__remove"):
            values[name] = None
        else:
            kept = _posted_text(posted, f"{name}__kept")
            if kept:
                try:
                    values[name] = json.loads(kept)
                except ValueError:
                    errors.setdefault(name, []).append(C.error("the kept file is not valid"))
            else:
                values[name] = None
    return values, errors


def _store_upload(f: Field, upload) -> tuple[dict | None, str | None]:
    data = upload.read(upload_limit(f) + 1)
    if len(data) > upload_limit(f):
        return None, C._("The file is larger than %(limit)s.", limit=_size_text(upload_limit(f)))
    accept = f.params.get("accept")
    name = upload.filename or "file"
    if accept and not any(name.lower().endswith(ext.lower()) for ext in accept):
        return None, C._(
            "Files of this type are not accepted (expected %(types)s).", types=", ".join(accept)
        )
    value = put_file(C.store(), data, name, upload.mimetype, C.principal().user_id)
    return value, None


def form_rule_errors(
    entity: Entity, items: list[FormField], record: Mapping
) -> dict[str, list[str]]:
    """``required_if`` rules of these form items that the record breaks (on shown fields)."""
    who = reader()
    spec = fields_form(C.catalog(), entity, items, who)
    return spec.bind(who, record, now=C.store().clock.now()).rule_errors()
