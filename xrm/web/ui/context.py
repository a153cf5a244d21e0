"""Who is asking and how to show things to them: the per-request helpers of the UI.

Every UI request runs for one principal (``g.principal``) in one locale and time zone.
Records are read through the records service as that principal, so the UI, the API and
exports agree on what a user may see.  Values are shown through the field registry's
``format`` in the user's locale and zone; lookups are shown by their target's title,
fetched in one query per target entity for a whole page.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import current_app, g, url_for
from markupsafe import Markup, escape

from ...metadata import Entity, Field
from ...metadata.filters import FilterError, resolve_path, system_field
from ...metadata.model import SYSTEM_COLUMNS
from ...storage import tables as T
from ...storage.global_search import title_path as _title_path
from ...storage.records import RecordError, Records
from ...storage.security import Access
from .. import current_store
from ..redirects import safe_next  # noqa: F401  (C.safe_next: every next of the UI)
from .i18n import language_of, translate, translate_error

SETTINGS_TTL = 10.0  # seconds an organization's settings are reused by a worker


def store():
    return current_store()


def catalog():
    return g.catalog


def principal():
    return g.principal


def locale() -> str:
    try:
        return g.ui_locale
    except AttributeError:
        principal = g.get("principal")
        value = language_of(getattr(principal, "locale", None))
        if principal is not None:  # known for the rest of the request
            g.ui_locale = value
        return value


def tz() -> str:
    try:
        return g.ui_tz
    except AttributeError:
        principal = g.get("principal")
        value = getattr(principal, "tz", None) or "UTC"
        if principal is not None:
            g.ui_tz = value
        return value


def _(text: str, **values) -> str:
    return translate(text, locale(), **values)


def error(message: str) -> str:
    """A platform message (validation, coercion) in the user's language."""
    return translate_error(str(message), locale())


def is_admin() -> bool:
    p = g.get("principal")
    return bool(p and p.is_admin)


def records(entity: Entity | str):
    """The records service of an entity as the request's user sees it, on the catalog the
    request started with (what ``Store.records`` builds, without asking the database for
    the catalog version again: every read of one page sees one catalog)."""
    name = entity if isinstance(entity, str) else entity.name
    cache = g.setdefault("ui_records", {})
    if name not in cache:
        who = g.principal
        cat = catalog()
        cache[name] = Records(
            store(),
            cat,
            cat.entity(name),
            who.user_id,
            tz=who.tz,
            locale=locale(),  # the UI's language: values are read as its inputs show them
            access=access(),
        )
    return cache[name]


def access() -> Access:
    """What the principal may do, compiled once per catalog version (shared with the
    records service, which keeps it under the same key)."""
    cat, who = catalog(), g.principal
    return cat.artifact(("access", who), lambda: Access(cat, who))


def scope(entity: str, action: str) -> str:
    return access().scope_of(entity, action)


def can(entity: str, action: str) -> bool:
    return scope(entity, action) != "none"


def settings() -> dict:
    """Organization settings, reused for a few seconds (currency, organization name)."""
    cache = current_app.extensions.setdefault("xrm_ui_settings", {})
    now = time.monotonic()
    if cache.get("at", -SETTINGS_TTL) + SETTINGS_TTL < now:
        cache["value"] = store().settings()
        cache["at"] = now
    return cache["value"]


def currency(field: Field) -> str:
    return field.params.get("currency") or settings().get("currency") or "USD"


# ----------------------------------------------------------------------- fields
def label(thing) -> str:
    """The label of anything with one (entity, field, view, option, role) for this user."""
    if thing is None:
        return ""
    value = getattr(thing, "label", thing)
    if hasattr(value, "get"):
        return value.get(locale())
    return str(value)


def plural(entity: Entity) -> str:
    return entity.plural.get(locale()) if entity.plural else label(entity)


SYSTEM_LABELS = {
    "id": "ID",
    "owner": "Owner",
    "created_at": "Created",
    "updated_at": "Modified",
    "created_by": "Created by",
    "updated_by": "Modified",
    "version": "Version",
}


def field_at(entity: Entity, path: str) -> Field:
    """The field at a (dotted) path; system columns behave like fields."""
    field, _lookups = resolve_path(entity, path, catalog().entity_of)
    return field


def path_label(entity: Entity, path: str) -> str:
    """``account.industry`` -> "Account › Industry"."""
    parts = path.split(".")
    current, out = entity, []
    for index, part in enumerate(parts):
        if part in current.fields:
            f = current.fields[part]
            out.append(label(f))
        elif part in SYSTEM_COLUMNS:
            out.append(_(SYSTEM_LABELS.get(part, part)))
            f = system_field(current.name, part)
        else:
            out.append(part)
            break
        if index < len(parts) - 1 and f.type == "lookup":
            current = catalog().entity(f.params["to"])
    return " › ".join(out)


def readable_names(entity: Entity) -> set[str]:
    """Fields the user may read (the records service strips the others from every read)."""
    hidden = access().hidden(entity)
    return {n for n in entity.fields if n not in hidden}


def readable_fields(entity: Entity) -> list[Field]:
    """Fields the user may read, in definition order."""
    names = readable_names(entity)
    return [f for n, f in entity.fields.items() if n in names]


def writable_names(entity: Entity) -> set[str]:
    """Fields the user may change: not computed, not read-only, not locked by a role."""
    return access().writable(entity)


# ----------------------------------------------------------------------- titles
def title_path(entity: Entity) -> str | None:
    """The path that names a record: its title field, through a lookup title if need be
    (the global search's rule, so a hit and a page name a record alike)."""
    return _title_path(catalog(), entity)


class Titles:
    """Record titles for a page: collect ids first, then one query per entity."""

    def __init__(self):
        self.wanted: dict[str, set[int]] = {}
        self.known: dict[tuple[str, int], str | None] = {}
        self.users: dict[int, str] = {}
        self.wanted_users: set[int] = set()

    def want(self, entity: str, ident) -> None:
        if ident is None:
            return
        if entity == "user":
            if ident not in self.users:
                self.wanted_users.add(ident)
        elif (entity, ident) not in self.known:
            self.wanted.setdefault(entity, set()).add(ident)

    def want_value(self, field: Field, value) -> None:
        if value is None:
            return
        if field.type in ("lookup", "user"):
            self.want(field.target, value)
        elif field.type == "any_lookup":
            self.want(value["entity"], value["id"])
        elif field.type == "many_to_many":
            for ident in value:
                self.want(field.target, ident)

    def want_records(self, entity: Entity, rows: Iterable[Mapping], paths: Iterable[str]) -> None:
        fields = [(p, field_at(entity, p)) for p in paths]
        for row in rows:
            for path, field in fields:
                self.want_value(field, row.get(path))

    def resolve(self) -> None:
        for entity_name, ids in list(self.wanted.items()):
            ids = [i for i in ids if (entity_name, i) not in self.known]
            self.wanted.pop(entity_name, None)
            if not ids:
                continue
            entity = catalog().entity_of(entity_name)
            path = title_path(entity) if entity else None
            found: dict[int, Any] = {}
            if entity is not None:
                try:
                    rows = (
                        records(entity)
                        .query(
                            filter=["id", "in", ids],
                            fields=[path] if path else ["id"],
                            limit=len(ids),
                        )
                        .rows
                    )
                except (FilterError, RecordError):
                    rows = []
                title_field = field_at(entity, path) if path else None
                for row in rows:
                    value = row.get(path) if path else None
                    text = (
                        title_field.format(value, locale(), tz())
                        if value is not None and title_field
                        else ""
                    )
                    found[row["id"]] = text or f"#{row['id']}"
            for ident in ids:
                self.known[(entity_name, ident)] = found.get(ident)
        if self.wanted_users:
            with store().engine.connect() as conn:
                rows = conn.execute(
                    sa.select(T.users.c.id, T.users.c.name).where(
                        T.users.c.id.in_(list(self.wanted_users))
                    )
                )
                self.users.update({row.id: row.name for row in rows})
            self.wanted_users.clear()

    def title(self, entity: str, ident) -> str:
        if entity == "user":
            return self.users.get(ident) or f"#{ident}"
        if (entity, ident) not in self.known:
            self.want(entity, ident)
            self.resolve()
        text = self.known.get((entity, ident))
        return text if text is not None else f"#{ident}"

    def readable(self, entity: str, ident) -> bool:
        return entity == "user" or self.known.get((entity, ident)) is not None


def titles() -> Titles:
    if "ui_titles" not in g:
        g.ui_titles = Titles()
    return g.ui_titles


def record_title(entity: Entity, record: Mapping) -> str:
    path = title_path(entity)
    if path and "." in path:
        first = path.split(".")[0]
        target = entity.fields[first].params["to"]
        value = record.get(first)
        return titles().title(target, value) if value is not None else _("(no title)")
    value = record.get(path) if path else None
    if value in (None, ""):
        return f"#{record.get('id')}" if record.get("id") else _("(no title)")
    return field_at(entity, path).format(value, locale(), tz())


def record_url(entity: str, ident) -> str:
    """The page of a record, its read view (the URL prefix is built once per entity and
    request)."""
    prefixes = g.setdefault("ui_record_urls", {})
    prefix = prefixes.get(entity)
    if prefix is None:
        prefix = prefixes[entity] = url_for("ui_record.view", entity_name=entity, record_id=0)[:-1]
    return f"{prefix}{ident}"


# ----------------------------------------------------------------------- display
class Formatter:
    """Values shown to one user: plain text for lists, exports and the timeline, HTML for
    cells and read-only fields.  Made once per request, so that a page of cells does not
    look up the user's locale, zone and currency for each one."""

    def __init__(self):
        self.locale = locale()
        self.tz = tz()
        self.titles = titles()
        self.default_currency = settings().get("currency") or "USD"
        self.labels: dict = {}

    def text(self, field: Field, value) -> str:
        if value is None or value == [] or value == "":
            return ""
        kind = field.kind
        type_ = field.type
        if type_ in ("lookup", "user"):
            return self.titles.title(field.target, value)
        if type_ == "any_lookup":
            return self.titles.title(value["entity"], value["id"])
        if type_ == "many_to_many":
            return ", ".join(self.titles.title(field.target, v) for v in value)
        money = _money_kind(field)
        try:
            if money is not None:
                code = field.params.get("currency") or self.default_currency
                return money.format(field, value, self.locale, self.tz, currency=code)
            return kind.format(field, value, self.locale, self.tz)
        except (TypeError, ValueError, ArithmeticError, KeyError):
            return str(value)

    def display(self, field: Field, value, link: bool = True) -> Markup:
        if value is None or value == [] or value == "":
            return Markup("")
        type_ = field.type
        titles = self.titles
        if type_ in ("lookup", "user") and field.target != "user":
            title = titles.title(field.target, value)
            if link and titles.readable(field.target, value):
                return Markup('<a href="%s">%s</a>') % (record_url(field.target, value), title)
            return escape(title)
        if type_ == "any_lookup":
            target = catalog().entity_of(value["entity"])
            title = titles.title(value["entity"], value["id"])
            if target is None:
                return escape(title)
            if link and titles.readable(value["entity"], value["id"]):
                return Markup(
                    '<a href="%s">%s</a> <span class="text-body-secondary small">%s</span>'
                ) % (
                    record_url(value["entity"], value["id"]),
                    title,
                    target.label.get(self.locale),
                )
            return escape(title)
        if type_ == "choice":
            option = field.option(value)
            color = option.color if option and option.color else None
            css = f" xrm-badge-{color}" if color else ""
            words = option.label.get(self.locale) if option else str(value)
            return Markup('<span class="badge xrm-badge%s">%s</span>') % (css, words)
        if type_ == "file":
            return Markup('<a href="%s"><i class="bi bi-paperclip"></i> %s</a>') % (
                url_for("ui_shell.download", key=value["key"]),
                value.get("name") or "file",
            )
        if type_ == "url":
            return Markup('<a href="%s" rel="noopener noreferrer" target="_blank">%s</a>') % (
                value,
                value,
            )
        if type_ == "email":
            return Markup('<a href="mailto:%s">%s</a>') % (value, value)
        if type_ == "phone":  # stored as E.164, shown as the user's locale writes it
            return Markup('<a href="tel:%s">%s</a>') % (value, self.text(field, value))
        if type_ == "rating":
            return Markup('<span class="xrm-rating" aria-label="%s">%s</span>') % (
                value,
                self.text(field, value),
            )
        return escape(self.text(field, value))


def formatter() -> Formatter:
    try:
        return g.ui_formatter
    except AttributeError:
        g.ui_formatter = Formatter()
        return g.ui_formatter


def text(field: Field, value) -> str:
    """A value as plain text in the user's locale (lists, exports, the timeline)."""
    return formatter().text(field, value)


def _money_kind(field: Field):
    """The money type behind a money field, or a formula or rollup resulting in money."""
    if field.type == "money":
        return field.kind
    if field.type in ("formula", "rollup") and field.params.get("result") == "money":
        return field.kind.result_type(field)
    return None


def display(field: Field, value, *, link: bool = True) -> Markup:
    """A value as HTML for a list cell or a read-only field."""
    return formatter().display(field, value, link)


def rich_html(value) -> Markup:
    """Stored rich text is sanitized on write; it is cleaned again on the way out."""
    if not value:
        return Markup("")
    import nh3

    return Markup(nh3.clean(str(value)))
