"""Steps that cannot go on until someone fixes something: nobody to approve, to tell or to
assign to, a user named by email who is gone, a record that no longer exists.

Retrying such a step changes nothing, so its instance is parked at once (not after its
back-off attempts) with the reason in words, and the person who started it and the
administrators get an inbox notification saying what is missing and where to retry.
The reason is kept as a code and parameters, so each reader gets it in their language.

A recipient written as a template (``team:{{ record.queue.team }}``) is shown as what it
named: the values the template read are kept with the reason when the instance parks
(``capture``), and each reader sees the template rendered from them through the
workflow's sandbox (``team support``), or, when it named nobody, the expression in words
and why (``team named by the case's queue's team: the case's queue has no team``).  A
reader who may not read a field the template reads gets the expression, never the value;
a reason told to no one in particular (the instance's ``error``) gets the expression too.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..metadata.expressions import template_shape
from ..metadata.filters import FilterError, resolve_path
from ..metadata.formats import FORMATS
from ..metadata.processes import as_list
from .context import Loader, RecordView, base_context, formats_for, is_template, render_text
from .loading import python_values
from .runner import StepError, path_text

if TYPE_CHECKING:  # pragma: no cover
    from ..metadata import Catalog, Entity
    from ..metadata.processes import Step
    from ..storage.security import Access
    from .runner import Batch, Run

#: The user columns a template may read of a user it meets on the way (``record.owner.name``).
USER_KEYS = ("id", "name", "email", "locale", "time_zone")
SYSTEM_USERS = ("owner", "created_by", "updated_by")

#: code -> locale -> the reason, formatted with the reason's parameters.
REASONS = {
    "no_approvers": {
        "en": "there is nobody to approve it ({who}: no active user)",
        "ru": "некому согласовать ({who}: нет активных пользователей)",
    },
    "no_recipients": {
        "en": "there is nobody to tell ({who}: no active user or address)",
        "ru": "некого уведомить ({who}: нет активных пользователей или адресов)",
    },
    "no_assignee": {
        "en": "there is nobody to assign it to ({who}: no active user)",
        "ru": "не на кого назначить ({who}: нет активных пользователей)",
    },
    "no_user": {
        "en": "no active user has the email {email}",
        "ru": "нет активного пользователя с адресом {email}",
    },
    "record_missing": {
        "en": "the {entity} record #{id} no longer exists",
        "ru": "запись «{entity}» №{id} больше не существует",
    },
}
#: code -> locale -> the reason when the recipients, written as templates, named nobody
#: (each says why in ``who``, so "no active user" would be beside the point).
UNRESOLVED = {
    "no_approvers": {
        "en": "there is nobody to approve it ({who})",
        "ru": "некому согласовать ({who})",
    },
    "no_recipients": {"en": "there is nobody to tell ({who})", "ru": "некого уведомить ({who})"},
    "no_assignee": {
        "en": "there is nobody to assign it to ({who})",
        "ru": "не на кого назначить ({who})",
    },
}
TEXTS = {
    "en": {
        "title": "{process} cannot go on",
        "step": "The step “{step}” stopped: {reason}.",
        "fix": "Once that is fixed, an administrator can retry it: {url}",
        "record": "Record: {url}",
        "role": "role {name}",
        "team": "team {name}",
        "user": "user {name}",
        "owner": "the record's owner",
        "initiator": "whoever started it",
        "field": "the field {name}",
        "named": "{kind} named by {path}",
        "named_field": "the user or address in {path}",
        "empty": "{owner} has no {field}",
        "path_root": "the {entity}",
        "path_step": "{owner}'s {field}",
        "kind_words": {"role": "role", "team": "team", "user": "user", "email": "address"},
        "kinds": {
            "approval": "approval",
            "notify": "notification",
            "assign": "assignment",
            "set": "set fields",
            "update": "update related records",
        },
    },
    "ru": {
        "title": "«{process}» не может продолжиться",
        "step": "Шаг «{step}» остановлен: {reason}.",
        "fix": "Когда это будет исправлено, администратор может перезапустить его: {url}",
        "record": "Запись: {url}",
        "role": "роль «{name}»",
        "team": "команда «{name}»",
        "user": "пользователь {name}",
        "owner": "владелец записи",
        "initiator": "тот, кто запустил процесс",
        "field": "поле «{name}»",
        "named": "{kind} из поля {path}",
        "named_field": "пользователь или адрес из поля {path}",
        "empty": "поле {path} не заполнено",
        "path": "«{names}»",
        "kind_words": {"role": "роль", "team": "команда", "user": "пользователь", "email": "адрес"},
        "kinds": {
            "approval": "согласование",
            "notify": "уведомление",
            "assign": "назначение",
            "set": "заполнение полей",
            "update": "изменение связанных записей",
        },
    },
}


def _texts(locale: str | None) -> dict:
    return TEXTS.get((locale or "en").split("_")[0], TEXTS["en"])


class Blocked(StepError):
    """A step that cannot go on until people fix something; ``reason`` (a code and its
    parameters, JSON-ready) says what, in any language through ``words``.  ``on`` is the
    entity the process runs on (recipient fields are named from it)."""

    def __init__(self, catalog: Catalog, code: str, on: str | None = None, **params):
        self.reason = {"code": code, "entity": on, "params": params}
        self.catalog = catalog
        super().__init__(f"cannot go on: {words(self.reason, 'en', catalog)}")


def describe_recipients(
    spec,
    locale: str,
    catalog: Catalog,
    entity: str | None,
    values: dict | None = None,
    reader: Access | None | bool = None,
) -> tuple[str, bool]:
    """A recipient spec in words: ``role:manager`` as *role Manager* and so on; and whether
    every item was a template that named nobody.  A template is rendered from ``values``
    (``capture``) for ``reader`` (an Access; True: anyone, no limits), else named by the
    expression it reads."""
    texts = _texts(locale)
    parts = []
    items = as_list(spec)
    unresolved = 0
    for item in items:
        text = str(item)
        if is_template(text):
            words_of, named_nobody = _template_words(text, locale, catalog, entity, values, reader)
            parts.append(words_of)
            unresolved += named_nobody
            continue
        prefix, sep, rest = text.partition(":")
        if sep and prefix == "role":
            role = catalog.roles.get(rest)
            parts.append(texts["role"].format(name=role.label.get(locale) if role else rest))
        elif sep and prefix in ("team", "user"):
            parts.append(texts[prefix].format(name=rest))
        elif sep and prefix == "email":
            parts.append(rest)
        elif text in ("owner", "initiator"):
            parts.append(texts[text])
        else:
            parts.append(texts["field"].format(name=_field_label(catalog, entity, text, locale)))
    return ", ".join(parts), bool(items) and unresolved == len(items)


# ------------------------------------------------------------------ templates in a reason
def capture(batch: Batch, run: Run, reason: dict) -> None:
    """Keep with ``reason`` the values its recipient templates read of the record (and of
    the records and users they reach through it), as they are when the instance parks."""
    spec = (reason.get("params") or {}).get("who")
    templates = [str(item) for item in as_list(spec) if is_template(item)] if spec else []
    if not templates or run.entity is None or run.record is None:
        return
    records: dict[str, dict] = {}
    users: dict[str, dict] = {}
    for text in templates:
        for chain in _record_chains(text):
            _collect(batch, run.entity, run.record, chain[1:], records, users)
    reason["values"] = {
        "entity": run.entity,
        "id": run.record_id,
        "records": records,
        "users": users,
    }


def _record_chains(text: str) -> list[tuple[str, ...]]:
    return [c for c in template_shape(text).chains if c and c[0] == "record"]


def _json(f, value) -> Any:
    if value is None:
        return None
    if f is not None:
        return f.kind.to_json(f, value)
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


def _collect(batch: Batch, entity: str, record: dict, attrs, records: dict, users: dict) -> None:
    """The values ``attrs`` reads from ``record`` on, into ``records`` (entity:id -> values
    as JSON) and ``users`` (id -> name, email...)."""
    model = batch.catalog.entity_of(entity)
    kept = records.setdefault(f"{entity}:{record.get('id')}", {"id": record.get("id")})
    if model is None or not attrs or attrs[0] not in record:
        return
    name = attrs[0]
    value = record.get(name)
    f = model.fields.get(name)
    kept[name] = _json(f, value)
    if value is None:
        return
    if name in SYSTEM_USERS or (f is not None and f.type == "user"):
        user = batch.loader.user(value)
        if user:
            users[str(value)] = {k: user.get(k) for k in USER_KEYS}
    elif f is not None and f.type == "lookup":
        target = f.params.get("to")
        related = batch.loader.record(target, value)
        if related is not None:
            _collect(batch, target, related, attrs[1:], records, users)


def _main_chain(text: str) -> tuple[str, ...] | None:
    shape = template_shape(text)
    if shape.single and shape.single[0] == "record":
        return shape.single
    chains = _record_chains(text)
    return max(chains, key=len) if chains else None


def _label(catalog: Catalog, model: Entity | None, name: str, locale: str) -> str:
    f = model.fields.get(name) if model is not None else None
    return f.label.get(locale) if f is not None and f.label else name.replace("_", " ")


def _lower(text: str) -> str:
    # "Queue" reads "queue" inside a sentence; "KB article" keeps its capitals
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _steps(catalog: Catalog, entity: str, chain, locale: str) -> list[tuple[str, Entity | None]]:
    """The labels of a chain's record and of each attribute it follows, with the entity
    each attribute is read from."""
    model = catalog.entity_of(entity)
    labels = [(model.label.get(locale) if model else entity, None)]
    for name in chain[1:]:
        labels.append((_label(catalog, model, name, locale), model))
        f = model.fields.get(name) if model is not None else None
        model = (
            catalog.entity_of(f.params.get("to")) if f is not None and f.type == "lookup" else None
        )
    return labels


def _path(texts: dict, labels: list[str]) -> str:
    if "path" in texts:  # Russian: «Обращение › Очередь › Команда»
        return texts["path"].format(names=" › ".join(labels))
    text = texts["path_root"].format(entity=_lower(labels[0]))
    for label in labels[1:]:
        text = texts["path_step"].format(owner=text, field=_lower(label))
    return text


def _empty(texts: dict, labels: list[str]) -> str:
    """Why a chain named nobody: the field at the end of ``labels`` is empty."""
    if "path" in texts:
        return texts["empty"].format(path=_path(texts, labels))
    return texts["empty"].format(owner=_path(texts, labels[:-1]), field=_lower(labels[-1]))


def _readable(catalog: Catalog, entity: str | None, text: str, reader) -> bool:
    """Whether ``reader`` may read every field the template reads (True: anyone)."""
    if reader is True:
        return True
    for chain in _record_chains(text):
        model = catalog.entity_of(entity or "")
        if model is None or reader.scope_of(model.name, "read") == "none":
            return False
        for name in chain[1:]:
            if name in reader.hidden(model):
                return False
            f = model.fields.get(name)
            if f is None or f.type != "lookup":
                break  # a value, a user: what follows is read from it
            model = catalog.entity_of(f.params.get("to"))
            if model is None or reader.scope_of(model.name, "read") == "none":
                return False
    return True


def _render(text: str, catalog: Catalog, values: dict, locale: str) -> str | None:
    """The template rendered from the kept values, through the workflow's sandbox; None
    when it reads something that was not kept (it is then named, not rendered)."""
    records, users = values.get("records") or {}, values.get("users") or {}

    def record(entity: str, ident) -> dict | None:
        raw = records.get(f"{entity}:{ident}")
        if raw is None or catalog.entity_of(entity) is None:
            return None
        return {**python_values(catalog, entity, raw), "id": ident}

    loader = Loader(record, lambda ident: users.get(str(ident)))
    root = loader.record(values.get("entity"), values.get("id"))
    if root is None:
        return None
    context = base_context() | {
        "record": RecordView(catalog, values["entity"], root, loader),
        FORMATS: formats_for(locale, "UTC", None, ""),
    }
    try:
        return render_text(text, context)
    except Exception:  # noqa: BLE001 - a name that was not kept, a filter's refusal
        return None


def _why(catalog: Catalog, values: dict, chain, texts: dict, locale: str) -> str | None:
    """Where the kept values of ``chain`` run out: "the case's queue has no team"."""
    records = values.get("records") or {}
    entity, ident = values.get("entity"), values.get("id")
    model = catalog.entity_of(entity or "")
    current = records.get(f"{entity}:{ident}")
    labels = [model.label.get(locale) if model else str(entity)]
    for name in chain[1:]:
        if current is None or model is None:
            return None
        labels.append(_label(catalog, model, name, locale))
        value = current.get(name)
        if value is None or value == "":
            return _empty(texts, labels)
        f = model.fields.get(name)
        if f is None or f.type != "lookup":
            return None
        model = catalog.entity_of(f.params.get("to"))
        current = records.get(f"{model.name}:{value}") if model is not None else None
    return None


def _template_words(
    text: str, locale: str, catalog: Catalog, entity: str | None, values, reader
) -> tuple[str, bool]:
    """A recipient template in words, and whether it named nobody."""
    texts = _texts(locale)
    prefix, sep, _rest = text.partition(":")
    kind = prefix.strip() if sep and prefix.strip() in texts["kind_words"] else None
    chain = _main_chain(text)
    if chain is not None and entity is not None:
        path = _path(texts, [label for label, _model in _steps(catalog, entity, chain, locale)])
    else:
        path = text
    if kind is not None:
        named = texts["named"].format(kind=texts["kind_words"][kind], path=path)
    else:
        named = texts["named_field"].format(path=path)
    if not values or reader is None or not _readable(catalog, entity, text, reader):
        return named, False
    why = _why(catalog, values, chain, texts, locale) if chain is not None else None
    rendered = _render(text, catalog, values, locale)
    if rendered is None:  # it read through an empty lookup, or what was not kept
        return (f"{named}: {why}", True) if why else (named, False)
    found = (rendered.partition(":")[2] if kind is not None else rendered).strip()
    # an empty value renders as "None" (the sandbox prints it): that names nobody too
    if found and not (why and found == "None"):
        if kind is None:
            return found, False
        return describe_recipients(rendered.strip(), locale, catalog, entity)[0], False
    return (f"{named}: {why}" if why else named), True


def _field_label(catalog: Catalog, entity: str | None, dotted: str, locale: str) -> str:
    model = catalog.entity_of(entity) if entity else None
    if model is None:
        return dotted
    try:
        field, _ = resolve_path(model, dotted, catalog.entity_of)
    except FilterError:
        return dotted
    return field.label.get(locale) if field.label else dotted


def words(
    reason: dict, locale: str | None, catalog: Catalog, reader: Access | None | bool = None
) -> str:
    """The reason a step cannot go on, in a locale, as ``reader`` may read it (an Access;
    True: anyone, no limits; None: nobody in particular, so templates stay expressions)."""
    language = (locale or "en").split("_")[0]
    code, params = reason["code"], dict(reason.get("params") or {})
    texts = REASONS.get(code)
    if texts is None:
        return code
    if "who" in params:
        params["who"], nobody = describe_recipients(
            params["who"],
            language,
            catalog,
            reason.get("entity"),
            reason.get("values"),
            reader,
        )
        if nobody and code in UNRESOLVED:
            texts = UNRESOLVED[code]
    if code == "record_missing":
        model = catalog.entity_of(params.get("entity") or "")
        params["entity"] = model.label.get(language) if model else params.get("entity")
    return texts.get(language, texts["en"]).format(**params)


def tell(batch: Batch, run: Run, step: Step | None, exc: Blocked) -> None:
    """Notify the person who started the instance and every administrator, each in their
    language, that it stopped and why (in-app, through the batch's effects)."""
    from ..storage.security import Access, load_principal
    from .readers import reader_of, record_readable
    from .recipients import resolve

    capture(batch, run, exc.reason)
    admin_roles = [f"role:{r.name}" for r in batch.catalog.roles.values() if r.admin]
    people, _ = resolve(batch, run, admin_roles)
    admins = {user["id"] for user in people}
    starter = batch.loader.user(run.user_id) if run.user_id is not None else None
    if starter is not None and starter.get("active", True) and starter["id"] not in admins:
        people.insert(0, starter)
    # one notification per stop: a retry that stops again tells them again
    stops = sum(1 for entry in run.history if entry.get("status") == "error")
    where = path_text(step.path) if step is not None else "start"
    record_url = batch.link(run)
    instance_url = batch.formats().url(f"/admin/instances/{run.id}")
    for user in people:
        locale = user.get("locale") or batch.locale
        texts = _texts(locale)
        label = run.process.label.get(locale) or run.process.name
        # each reads the reason as their roles let them read the record; one who may not
        # read it (the starter who handed it to someone else) gets the templates as
        # expressions, and no link that would number it
        principal = load_principal(batch.conn, batch.catalog, user["id"])
        readable = record_readable(batch, run, reader_of(batch, user))
        reader = Access(batch.catalog, principal) if principal is not None and readable else None
        lines = [
            texts["step"].format(
                step=_step_name(step, locale, texts) if step is not None else where,
                reason=words(exc.reason, locale, batch.catalog, reader),
            )
        ]
        if run.entity and run.record_id and readable:
            lines.append(texts["record"].format(url=record_url))
        lines.append(texts["fix"].format(url=instance_url))
        batch.effects.notification(
            f"i{run.id}/{where}/blocked{stops}/n{user['id']}",
            user["id"],
            texts["title"].format(process=label),
            "\n".join(lines),
            run.entity,
            run.record_id,
            run.id,
            batch.now,
        )


def _step_name(step: Step, locale: str, texts: dict) -> str:
    if step.label:
        return step.label.get(locale)
    return step.name or texts["kinds"].get(step.kind, step.kind)


def stop_reason(store, instance_id: int, locale: str | None, principal=None) -> str | None:
    """Why an instance is parked waiting for a fix, in a locale, as ``principal`` may read
    it (None: nobody in particular); None when it is not parked."""
    from .instances import instance

    row = instance(store, instance_id)
    if row is None or row["status"] != "failed":
        return None
    reason = (row["context"] or {}).get("blocked")
    return reason_for(reason, locale, store.refresh(), principal) if reason else None


def reason_for(reason: dict, locale: str | None, catalog: Catalog, principal=None) -> str:
    """A parked instance's reason (``context["blocked"]``) for a reader: a principal, whose
    roles decide which of the record's values they see (None: no values at all)."""
    from ..storage.security import Access

    reader = (
        catalog.artifact(("access", principal), lambda: Access(catalog, principal))
        if principal is not None
        else None
    )
    return words(reason, locale, catalog, reader)
