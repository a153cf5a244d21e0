"""A record form for one reader, built from a form layout without a request.

``record_form`` turns a layout (``metadata.model.Form``) into a ``RecordForm``: its tabs,
sections and fields with their widget kind, label and help in the reader's language,
choices and defaults, and which fields are read-only or hidden for the reader's roles;
with it a WTForms class whose fields read posted text in the reader's locale through the
field-type registry.  Both are cached per catalog version, entity, form, locale and
permission set (``catalog.artifact``), so every request of one user shares them.

``RecordForm.bind`` puts a record (and what was posted) in the form: ``visible_if`` and
``required_if`` are evaluated on the values being edited (the filter language's Python
evaluator), ``validate`` parses the posted text and checks what the form itself requires,
and ``values`` are what to hand to the records service, which validates the record (the
one write path).  The web UI, wizards and public forms render and read these objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import wtforms
from wtforms.validators import StopValidation

from ..metadata import Catalog, Entity, Field
from ..metadata.evaluate import matches, record_getter
from ..metadata.fieldtypes import CoercionError
from ..metadata.filters import FilterContext
from ..metadata.model import Form
from ..storage.records import ValidationFailed
from ..storage.security import Access
from .layout import GENERAL

#: field type -> widget kind (the web UI's templates render each kind)
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

#: Types posted as several values under one name.
MULTI_VALUED = ("multi_choice", "many_to_many")
#: Types a form does not parse itself: uploads are stored by the caller (web) first.
NOT_PARSED = ("file",)
REQUIRED = "required"


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == ()


# ------------------------------------------------------------------------ the reader
@dataclass(frozen=True)
class Reader:
    """Who fills a form in: their field permissions (``access`` None: the platform, which
    may set every field that is not computed), language and time zone, and how the
    platform's messages read in their language (``translate(message, locale)``)."""

    access: Access | None = None
    locale: str = "en"
    tz: str = "UTC"
    translate: Callable[[str, str], str] | None = field(default=None, compare=False)

    @property
    def user_id(self) -> int | None:
        return self.access.principal.user_id if self.access is not None else None

    def hidden(self, entity: Entity) -> frozenset[str]:
        return frozenset(self.access.hidden(entity)) if self.access is not None else frozenset()

    def writable(self, entity: Entity) -> frozenset[str]:
        """The fields the reader may change (``Access.writable``; the platform: all but
        the computed ones)."""
        if self.access is not None:
            return frozenset(self.access.writable(entity))
        return frozenset(n for n, f in entity.fields.items() if not f.computed)

    def message(self, text: str) -> str:
        return self.translate(text, self.locale) if self.translate else text

    def context(self, now: dt.datetime | None = None) -> FilterContext:
        return FilterContext(user_id=self.user_id, tz=self.tz, now=now)


def reader_for(store, user_id: int, translate=None) -> Reader:
    """A user of a store as a reader (their roles on the store's current catalog, their
    locale and zone): what a caller without a request (a job, a test) fills forms in as."""
    catalog = store.refresh()
    principal = store.principal(user_id)
    if principal is None:
        raise LookupError(f"no user {user_id}")
    access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
    return Reader(access=access, locale=principal.locale, tz=principal.tz, translate=translate)


# ------------------------------------------------------------------------ the form's shape
@dataclass(frozen=True)
class FieldSpec:
    """One field of a form as this reader sees it."""

    name: str
    field: Field
    label: str
    help: str
    widget: str
    read_only: bool
    required: bool  # always required (the field's own rule)
    visible_if: Any = None
    required_if: Any = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) of an option set
    default: Any = None  # the field's default as a value (None: none, or set at save time)

    @property
    def conditional(self) -> bool:
        return self.visible_if is not None or self.required_if is not None

    def default_for(self, reader: Reader, now: dt.datetime | None = None):
        """The value a new record's input starts with (``today`` and ``now`` at ``now``,
        the day in the reader's zone: a required date must not start empty)."""
        if self.field.default == "current_user":
            return reader.user_id
        if self.field.default == "current_account":
            return reader.access.principal.account_id if reader.access is not None else None
        if self.field.default in ("today", "now") and now is not None:
            if self.field.type == "date":
                return now.astimezone(ZoneInfo(reader.tz)).date()
            return now
        return self.default


@dataclass(frozen=True)
class SectionSpec:
    id: str
    label: str
    visible_if: Any = None
    related: Field | None = None  # a children / many-to-many field shown as a list
    columns: tuple[tuple[FieldSpec, ...], ...] = ()

    @property
    def fields(self):
        for column in self.columns:
            yield from column


@dataclass(frozen=True)
class TabSpec:
    id: str
    label: str
    sections: tuple[SectionSpec, ...]


class RecordForm:
    """A form layout for one reader: tabs, sections, fields and the WTForms class that
    reads what is posted.  Immutable and cached; ``bind`` gives the per-record state."""

    def __init__(self, catalog: Catalog, entity: Entity, form: Form, reader: Reader):
        self.catalog, self.entity, self.form = catalog, entity, form
        self.locale = reader.locale
        hidden, writable = reader.hidden(entity), reader.writable(entity)
        self.tabs = tuple(self._tabs(hidden, writable))
        self.fields: dict[str, FieldSpec] = {
            spec.name: spec
            for tab in self.tabs
            for section in tab.sections
            for spec in section.fields
        }
        #: the fields the reader may change on this form, in form order
        self.editable = tuple(n for n, spec in self.fields.items() if not spec.read_only)
        self.form_class = _form_class(self)

    def _tabs(self, hidden, writable):
        entity, locale = self.entity, self.locale
        for t_index, tab in enumerate(self.form.tabs):
            sections = []
            for s_index, section in enumerate(tab.sections):
                label = section.label.get(locale) if section.label else ""
                related = None
                columns: tuple = ()
                if section.related:
                    related = entity.fields.get(section.related)
                    if related is None or related.name in hidden:
                        continue
                    label = label or related.label.get(locale)
                else:
                    columns = tuple(
                        tuple(
                            spec
                            for item in column
                            if (spec := self._field(item, hidden, writable)) is not None
                        )
                        for column in section.columns
                    )
                sections.append(
                    SectionSpec(
                        id=f"s-{t_index}-{s_index}",
                        label=label,
                        visible_if=section.visible_if,
                        related=related,
                        columns=columns,
                    )
                )
            if sections:
                yield TabSpec(
                    id=f"tab-{t_index}",
                    label=(tab.label or GENERAL).get(locale),
                    sections=tuple(sections),
                )

    def _field(self, item, hidden, writable) -> FieldSpec | None:
        f = self.entity.fields.get(item.field)
        if f is None or f.name in hidden:
            return None
        locale = self.locale
        widget = item.widget if item.widget in WIDGETS.values() else WIDGETS.get(f.type, "text")
        return FieldSpec(
            name=f.name,
            field=f,
            label=(item.label or f.label).get(locale),
            help=f.help.get(locale) if f.help else "",
            widget=widget,
            read_only=item.read_only or f.name not in writable or f.computed,
            required=f.required,
            visible_if=item.visible_if,
            required_if=item.required_if,
            choices=tuple((o.value, o.label.get(locale)) for o in f.choices),
            default=_default_value(f),
        )

    def bind(
        self,
        reader: Reader,
        record: Mapping | None = None,
        posted: Mapping | None = None,
        *,
        now: dt.datetime | None = None,
        creating: bool = False,
    ) -> BoundForm:
        return BoundForm(self, reader, dict(record or {}), posted, now=now, creating=creating)


KEYWORD_DEFAULTS = ("current_user", "current_account", "today", "now")


def _keep_seconds(values: dict, record: Mapping) -> None:
    """A datetime input shows minutes: one posted back at the minute it showed keeps the
    stored seconds, so saving a form changes no moment the user did not touch (a case's
    received time, and the durations computed from it)."""
    for name, new in values.items():
        old = record.get(name)
        if (
            isinstance(old, dt.datetime)
            and isinstance(new, dt.datetime)
            and old.tzinfo is not None
            and new.tzinfo is not None
            and new.second == 0
            and new.microsecond == 0
            and old.replace(second=0, microsecond=0) == new
        ):
            values[name] = old


def _default_value(f: Field):
    if f.default is None or f.computed or f.default in KEYWORD_DEFAULTS:
        return None  # the user's (and account's) id are the reader's; dates are set on save
    try:
        return f.kind.coerce(f, f.default)
    except (CoercionError, TypeError, ValueError):
        return None


def record_form(
    catalog: Catalog, entity: Entity, reader: Reader, form: Form | None = None
) -> RecordForm:
    """The form (the entity's main one unless given) for this reader, cached per catalog
    version, locale and the reader's permission set on the entity."""
    from .layout import form_for

    form = form or form_for(catalog, entity)
    key = (
        "record-form",
        entity.name,
        form.name,
        form.quick_create,
        reader.locale,
        reader.hidden(entity),
        reader.writable(entity),
    )
    return catalog.artifact(key, lambda: RecordForm(catalog, entity, form, reader))


def fields_form(catalog: Catalog, entity: Entity, items, reader: Reader) -> RecordForm:
    """A form of just these items (``FormField``s) in one section: what an inline edit of a
    field in a list or on a read view parses and checks, with the item's own rules."""
    from ..metadata.model import FormSection, FormTab

    items = tuple(items)
    form = Form(
        name=f"{entity.name}__fields",
        entity=entity.name,
        label=entity.label,
        solution="",
        tabs=(FormTab(label=None, sections=(FormSection(label=None, columns=(items,)),)),),
    )
    key = (
        "fields-form",
        entity.name,
        items,
        reader.locale,
        reader.hidden(entity),
        reader.writable(entity),
    )
    return catalog.artifact(key, lambda: RecordForm(catalog, entity, form, reader))


# ------------------------------------------------------------------------ WTForms
class _Posted:
    """A posted mapping ({name: text or [texts]}) as the multi-dict WTForms reads."""

    def __init__(self, posted: Mapping):
        self.posted = posted

    def __contains__(self, name) -> bool:
        return name in self.posted

    def __iter__(self):
        return iter(self.posted)

    def __len__(self) -> int:
        return len(self.posted)

    def getlist(self, name) -> list:
        value = self.posted.get(name)
        if value is None:
            return []
        return list(value) if isinstance(value, list | tuple) else [value]


class ValueField(wtforms.Field):
    """One record field's input: keeps the posted text and parses it by the field type in
    the form's locale and zone (``kind.coerce_input``), with the type's own message."""

    def __init__(self, label=None, validators=None, *, spec: FieldSpec, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.spec = spec
        self.raw: Any = None

    def process_formdata(self, valuelist):
        kind = self.spec.field.type
        if kind in MULTI_VALUED:
            self.raw = [v for v in valuelist if v != ""]
        elif kind == "boolean":
            self.raw = bool(valuelist and valuelist[0])
        elif kind in ("lookup", "user"):
            text = (valuelist[0] if valuelist else "").strip()
            self.raw = int(text) if text.isdigit() else (text or None)
        else:
            text = valuelist[0] if valuelist else ""
            self.raw = text if text.strip() != "" else None
        self.data = self.raw

    def pre_validate(self, form):
        f = self.spec.field
        try:
            self.data = f.kind.coerce_input(f, self.raw, tz=form.meta.tz, locale=form.meta.locale)
        except CoercionError as exc:
            self.data = None
            raise StopValidation(form.meta.reader.message(exc.message)) from None


def _form_class(spec: RecordForm) -> type[wtforms.Form]:
    """A WTForms class with a ``ValueField`` per editable field the form parses."""
    attrs: dict[str, Any] = {
        name: ValueField(label=field_spec.label, spec=field_spec)
        for name, field_spec in spec.fields.items()
        if not field_spec.read_only and field_spec.field.type not in NOT_PARSED
    }
    return type(f"{spec.entity.name}_{spec.form.name}_form", (wtforms.Form,), attrs)


# ------------------------------------------------------------------------ one record
class BoundForm:
    """A form holding one record and what was posted for it: the values being edited,
    the conditions evaluated on them, and after ``validate`` the values to save and the
    field errors in the reader's language."""

    def __init__(
        self,
        spec: RecordForm,
        reader: Reader,
        record: dict,
        posted: Mapping | None,
        *,
        now: dt.datetime | None,
        creating: bool,
    ):
        self.spec, self.reader, self.record = spec, reader, record
        self.posted = posted
        self.creating = creating
        self.now = now
        #: the editable fields the post carries (``_fields`` names what the page showed)
        self.submitted: tuple[str, ...] = ()
        self.wtform = None
        if posted is not None:
            shown = posted.get("_fields") or []
            shown = [shown] if isinstance(shown, str) else shown
            self.submitted = tuple(n for n in spec.editable if n in set(shown))
            formdata = _Posted(posted)
            meta = {"locale": reader.locale, "tz": reader.tz, "reader": reader}
            self.wtform = spec.form_class(formdata=formdata, meta=meta)
            for name in list(self.wtform._fields):
                if name not in self.submitted:  # not on the page: left as the record has it
                    del self.wtform[name]
        self.errors: dict[str, list[str]] = {}
        self.values: dict[str, Any] = {}
        self.evaluation = self._evaluation()
        self._getter = record_getter(self.evaluation)
        self._ctx = reader.context(now)

    def _evaluation(self) -> dict:
        """The record as the form has it now: the stored values with what was typed on top,
        parsed where it can be (else empty), and a new record's defaults."""
        record = dict(self.record)
        if self.creating and self.posted is None:
            for spec in self.spec.fields.values():
                if record.get(spec.name) is None:
                    default = spec.default_for(self.reader, self.now)
                    if default is not None:
                        record[spec.name] = default
        if self.wtform is None:
            return record
        for name in self.submitted:
            if name not in self.wtform:
                continue
            value_field = self.wtform[name]
            f = value_field.spec.field
            try:
                record[name] = f.kind.coerce_input(
                    f, value_field.raw, tz=self.reader.tz, locale=self.reader.locale
                )
            except CoercionError:  # what cannot be read yet counts as empty for the rules
                record[name] = None
        return record

    # -------------------------------------------------------------- conditions
    def _holds(self, condition) -> bool:
        return condition is None or matches(condition, self._getter, self._ctx)

    def section_visible(self, section: SectionSpec) -> bool:
        return self._holds(section.visible_if)

    def visible(self, name: str) -> bool:
        return self._holds(self.spec.fields[name].visible_if)

    def required(self, name: str) -> bool:
        spec = self.spec.fields[name]
        return spec.required or (spec.required_if is not None and self._holds(spec.required_if))

    def shown(self, name: str) -> bool:
        """Visible, in a visible section: a hidden field is never required."""
        for tab in self.spec.tabs:
            for section in tab.sections:
                if name in (s.name for s in section.fields):
                    return self.section_visible(section) and self.visible(name)
        return False

    # -------------------------------------------------------------- reading a post
    def validate(self) -> bool:
        """Parse the posted fields and check what the form requires (required fields and
        ``required_if`` on shown fields).  Afterwards ``values`` holds the parsed values
        of the fields posted, ``errors`` the field errors in the reader's language."""
        if self.wtform is None:
            raise ValueError("nothing was posted to this form")
        self.wtform.validate()
        errors = {name: list(messages) for name, messages in self.wtform.errors.items()}
        values = {
            name: self.wtform[name].data
            for name in self.submitted
            if name in self.wtform and name not in errors
        }
        _keep_seconds(values, self.record)
        message = self.reader.message(REQUIRED)
        for name in self.submitted:
            if name in errors or name not in self.wtform:
                continue
            if self.spec.fields[name].required and _empty(values.get(name)):
                errors[name] = [message]
        for name, messages in self.rule_errors(names=self.submitted).items():
            errors.setdefault(name, messages)
        self.values, self.errors = values, errors
        return not errors

    def rule_errors(self, names=None) -> dict[str, list[str]]:
        """The ``required_if`` rules the values being edited break, on shown fields (of
        ``names`` only when given), in the reader's language."""
        errors: dict[str, list[str]] = {}
        for name, spec in self.spec.fields.items():
            if spec.required_if is None or (names is not None and name not in names):
                continue
            if not _empty(self.evaluation.get(name)):
                continue
            if self.shown(name) and self._holds(spec.required_if):
                errors[name] = [self.reader.message(REQUIRED)]
        return errors

    def save(self, records, record_id: int | None = None, version: int | None = None):
        """Validate the post and write it through the records service (``records``: the
        entity's service as the reader): the new or changed record, or None with
        ``errors`` set from the form or from the service's validation of the record."""
        if not self.validate():
            return None
        try:
            if record_id is None:
                return records.create(self.values)
            return records.update(record_id, self.values, version=version)
        except ValidationFailed as exc:
            self.add_errors(exc.errors)
            return None

    def add_errors(self, errors: Mapping[str, list[str]]) -> None:
        """Errors found elsewhere (the records service, uploads), in the reader's language,
        after the form's own for the same field."""
        for name, messages in errors.items():
            kept = self.errors.setdefault(name, [])
            kept.extend(m for m in (self.reader.message(str(m)) for m in messages) if m not in kept)
