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

from ...metadata import Entity, Field
from ...metadata.evaluate import matches, record_getter
from ...metadata.fieldtypes import CoercionError, in_zone
from ...metadata.filters import FilterContext
from ...metadata.model import FormField
from ...storage.files import put_file
from ..routing import parse_id
from . import context as C

#: field type -> widget name (templates/ui/_widgets.html renders each)
WIDGETS = {
    "text": "text",
    "email": "email",
    "phone": "tel",
    "url": "url",
    "long_text": "textarea",
    "rich_text": "rich_text",
    "integer": "number",
    "decimal": "number",
    "percent": "percent",
    "money": "money",
    "duration": "duration",
    "rating": "rating",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "choice": "choice",
    "multi_choice": "multi_choice",
    "tags": "tags",
    "lookup": "lookup",
    "user": "user",
    "any_lookup": "any_lookup",
    "many_to_many": "many_to_many",
    "file": "file",
    "json": "textarea",
}

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

    @property
    def input_id(self) -> str:
        return f"f-{self.name}"


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
def field_view(
    entity: Entity,
    item: FormField,
    record: Mapping,
    *,
    posted: Mapping | None = None,
    errors: Mapping | None = None,
    writable: set[str],
    evaluation: Mapping | None = None,
    creating: bool = False,
) -> FieldView | None:
    """The view of one form field, or None when the field is gone or hidden from the user."""
    f = entity.fields.get(item.field)
    if f is None:
        return None
    if f.name not in C.readable_names(entity):
        return None
    view = FieldView(
        name=f.name,
        field=f,
        label=C.label(item.label) if item.label else C.label(f),
        widget=item.widget if item.widget in WIDGETS.values() else WIDGETS.get(f.type, "text"),
        help=f.help.get(C.locale()) if f.help else "",
    )
    view.read_only = item.read_only or f.name not in writable or f.computed
    view.conditional = item.visible_if is not None or item.required_if is not None
    evaluated = evaluation if evaluation is not None else record
    getter = record_getter(dict(evaluated))
    ctx = filter_context()
    view.visible = item.visible_if is None or matches(item.visible_if, getter, ctx)
    view.required = f.required or (
        item.required_if is not None and matches(item.required_if, getter, ctx)
    )
    view.errors = [C.error(m) for m in (errors or {}).get(f.name, ())]
    value = record.get(f.name)
    if creating and posted is None and value is None and f.default is not None and not f.computed:
        value = _default_value(f)
    use_posted = posted is not None and not view.read_only and _was_posted(posted, f)
    _fill(view, f, value, posted if use_posted else None)
    if view.read_only:
        view.display = C.rich_html(value) if f.type == "rich_text" else C.display(f, value)
    return view


def _was_posted(posted: Mapping, f: Field) -> bool:
    names = posted.get("_fields") or []
    return f.name in names


def _default_value(f: Field):
    if f.default in ("current_user",):
        return C.principal().user_id
    if f.default in ("today", "now"):
        return None  # filled by the records service at save time
    try:
        return f.kind.coerce(f, f.default)
    except (CoercionError, TypeError, ValueError):
        return None


def _fill(view: FieldView, f: Field, value, posted: Mapping | None) -> None:
    """Set what the input shows: the posted text after a failed save, else the value."""
    widget = view.widget
    if widget in ("choice",):
        view.options = [(o.value, C.label(o)) for o in f.choices]
        view.value = _posted_text(posted, f.name) if posted is not None else (value or "")
        return
    if widget == "multi_choice":
        view.options = [(o.value, C.label(o)) for o in f.choices]
        chosen = _posted_list(posted, f.name) if posted is not None else list(value or ())
        view.values = [(v, C.label(f.option(v)) if f.option(v) else v) for v in chosen]
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
    """The record as the form currently has it (for visible_if/required_if): the stored
    values with what the user typed on top, coerced where it can be (else left empty)."""
    record = dict(base)
    for name in posted.get("_fields") or []:
        f = entity.fields.get(name)
        if f is None or f.type == "file":
            continue
        raw = _raw_posted(f, posted)
        try:
            record[name] = f.kind.coerce_input(f, raw, tz=C.tz(), locale=C.locale())
        except (CoercionError, TypeError, ValueError):
            record[name] = None
    return record


def _raw_posted(f: Field, posted: Mapping):
    if f.type in ("multi_choice", "many_to_many"):
        return _posted_list(posted, f.name)
    if f.type == "boolean":
        return bool(_posted_text(posted, f.name))
    text = _posted_text(posted, f.name)
    if f.type in ("lookup", "user"):
        return parse_id(text)
    return text


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
    """The values to save from a posted form, and upload errors (field -> messages).

    Only fields the form showed as editable are read, so a user cannot set a field by
    adding it to the request that the form did not offer."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    offered = set(names)
    for name in posted.get("_fields") or []:
        f = entity.fields.get(name)
        if f is None or name not in writable or name not in offered or f.computed:
            continue
        if f.type == "file":
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
                        errors.setdefault(name, []).append("the kept file is not valid")
                else:
                    values[name] = None
            continue
        if f.type in ("multi_choice", "many_to_many"):
            values[name] = _posted_list(posted, name)
            continue
        if f.type == "boolean":
            values[name] = bool(_posted_text(posted, name))
            continue
        text = _posted_text(posted, name)
        values[name] = text if text.strip() != "" else None
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
    """``required_if`` rules of the form that the record breaks (on visible fields)."""
    getter = record_getter(dict(record))
    ctx = filter_context()
    errors: dict[str, list[str]] = {}
    for item in items:
        if item.required_if is None or item.field not in entity.fields:
            continue
        if item.visible_if is not None and not matches(item.visible_if, getter, ctx):
            continue
        if matches(item.required_if, getter, ctx):
            value = record.get(item.field)
            if value is None or value == "" or value == []:
                errors.setdefault(item.field, []).append("required")
    return errors
