"""Steps that cannot go on until someone fixes something: nobody to approve, to tell or to
assign to, a user named by email who is gone, a record that no longer exists.

Retrying such a step changes nothing, so its instance is parked at once (not after its
back-off attempts) with the reason in words, and the person who started it and the
administrators get an inbox notification saying what is missing and where to retry.
The reason is kept as a code and parameters, so each reader gets it in their language.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..metadata.filters import FilterError, resolve_path
from ..metadata.processes import as_list
from .runner import StepError, path_text

if TYPE_CHECKING:  # pragma: no cover
    from ..metadata import Catalog
    from ..metadata.processes import Step
    from .runner import Batch, Run

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


def describe_recipients(spec, locale: str, catalog: Catalog, entity: str | None) -> str:
    """A recipient spec in words: ``role:manager`` as *role Manager* and so on."""
    texts = _texts(locale)
    parts = []
    for item in as_list(spec):
        text = str(item)
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
    return ", ".join(parts)


def _field_label(catalog: Catalog, entity: str | None, dotted: str, locale: str) -> str:
    model = catalog.entity_of(entity) if entity else None
    if model is None:
        return dotted
    try:
        field, _ = resolve_path(model, dotted, catalog.entity_of)
    except FilterError:
        return dotted
    return field.label.get(locale) if field.label else dotted


def words(reason: dict, locale: str | None, catalog: Catalog) -> str:
    """The reason a step cannot go on, in a locale."""
    language = (locale or "en").split("_")[0]
    code, params = reason["code"], dict(reason.get("params") or {})
    texts = REASONS.get(code)
    if texts is None:
        return code
    if "who" in params:
        params["who"] = describe_recipients(params["who"], language, catalog, reason.get("entity"))
    if code == "record_missing":
        model = catalog.entity_of(params.get("entity") or "")
        params["entity"] = model.label.get(language) if model else params.get("entity")
    return texts.get(language, texts["en"]).format(**params)


def tell(batch: Batch, run: Run, step: Step | None, exc: Blocked) -> None:
    """Notify the person who started the instance and every administrator, each in their
    language, that it stopped and why (in-app, through the batch's effects)."""
    from .recipients import resolve

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
        lines = [
            texts["step"].format(
                step=_step_name(step, locale, texts) if step is not None else where,
                reason=words(exc.reason, locale, batch.catalog),
            )
        ]
        if run.entity and run.record_id:
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


def stop_reason(store, instance_id: int, locale: str | None) -> str | None:
    """Why an instance is parked waiting for a fix, in a locale; None when it is not."""
    from .instances import instance

    row = instance(store, instance_id)
    if row is None or row["status"] != "failed":
        return None
    reason = (row["context"] or {}).get("blocked")
    return words(reason, locale, store.refresh()) if reason else None
