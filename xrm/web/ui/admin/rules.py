"""Validation rules and SLAs changed in the admin area without YAML: a switch that turns a
validation rule or an SLA off and on again, and a form for a named validation rule's
message (in each language), condition, fields and switch.  Each change is the rule's or
the SLA's whole document, checked as the YAML editor checks it (the JSON Schema and the
catalog's cross-checks), shown as its plan and applied through the YAML editor's apply:
the customization layer, in place of the earlier version, with history and revert
(``definitions.py``, ``history.py``).  A pack's rule is changed by its ``name:``
(``validation: ENTITY.NAME``); a rule without one is changed in its pack only."""

from __future__ import annotations

import json

import yaml
from flask import abort, flash, redirect, render_template, request, url_for

from ....metadata.model import thaw
from .. import context as C
from . import bp
from .definitions import _all, _check, changes
from .process_editor import _at_step, _shown
from .processes import condition_words
from .schema import entity_or_404


def _dump(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _body(kind: str, name: str) -> dict:
    """The definition in effect (the layer's change on top of the pack's), as a document."""
    entry = _all().get((kind, name))
    if entry is None or entry.get("body") is None:
        abort(404)
    document = thaw(entry["body"])
    if kind == "validation":
        document = {"validation": name, **{k: v for k, v in document.items() if k != "validation"}}
    return document


def _review(kind: str, name: str, document: dict, back: str):
    """The plan of saving ``document`` as the definition, or the problems that stop it."""
    text = _dump(document)
    checked, problems = _check(kind, name, text)
    if problems:
        return None, [_at_step(p, text) for p in problems]
    _catalog, plan = C.store().customize_all(
        [(kind, checked)], dry_run=True, replacing=[(kind, name)]
    )
    return render_template(
        "admin/definition_plan.html",
        kind=kind,
        name=name,
        lines=[line for line in plan.lines() if not line.startswith("! data loss")],
        documents=json.dumps([[kind, checked]], ensure_ascii=False),
        revert=False,
        losses=plan.losses,
        back=back,
        diff=changes(kind, name, checked),
    ), []


def _toggled(kind: str, name: str, back: str):
    document = _body(kind, name)
    document["enabled"] = document.get("enabled", True) is False  # the other way round
    page, problems = _review(kind, name, document, back)
    if page is None:
        flash("; ".join(problems), "danger")
        return redirect(back, code=303)
    return page


# ------------------------------------------------------------------ validation rules
def rules_view(entity) -> list[dict]:
    """An entity's validation rules as its admin page lists them."""
    rows = []
    for rule in entity.validations:
        rows.append(
            {
                "rule": rule,
                "when": condition_words(entity, rule.when),
                "fields": ", ".join(C.path_label(entity, f) for f in rule.fields),
            }
        )
    return rows


def _rule(name: str, rule: str):
    entity = entity_or_404(name)
    found = next((v for v in entity.validations if v.name == rule), None)
    if found is None:
        abort(404)
    return entity, found, f"{entity.name}.{rule}"


def _entity_page(name: str) -> str:
    return url_for("ui_admin.entity", name=name) + "#validation-rules"


def _rule_page(entity, rule, key: str, document: dict, problems: list[str], status: int = 200):
    message = document.get("message") or {}
    if not isinstance(message, dict):
        message = {"en": str(message)}
    fields = document.get("fields") or []
    return render_template(
        "admin/validation_rule.html",
        entity=entity,
        rule=rule,
        key=key,
        enabled=document.get("enabled", True) is not False,
        message_en=message.get("en", ""),
        message_ru=message.get("ru", ""),
        fields_text=", ".join(str(f) for f in fields) if isinstance(fields, list) else "",
        when_text=_shown(document.get("when")),  # one line, as packs write conditions
        when_words=condition_words(entity, rule.when),
        problems=problems,
    ), status


@bp.get("/entities/<name>/validations/<rule>")
def validation_rule(name: str, rule: str):
    entity, found, key = _rule(name, rule)
    return _rule_page(entity, found, key, _body("validation", key), [])


@bp.post("/entities/<name>/validations/<rule>")
def validation_rule_save(name: str, rule: str):
    entity, found, key = _rule(name, rule)
    form = request.form
    document: dict = {"validation": key}
    problems = []
    try:
        document["when"] = yaml.safe_load(form.get("when", ""))
    except yaml.YAMLError as exc:
        problems.append(C._("Condition: %(problem)s", problem=str(exc).splitlines()[0]))
    message = {
        lang: form.get(f"message_{lang}", "").strip()
        for lang in ("en", "ru")
        if form.get(f"message_{lang}", "").strip()
    }
    if not message:
        problems.append(C._("Write the message in at least one language."))
    document["message"] = message
    fields = [f.strip() for f in form.get("fields", "").split(",") if f.strip()]
    if fields:
        document["fields"] = fields
    document["enabled"] = form.get("enabled") == "1"
    if problems:
        return _rule_page(entity, found, key, document, problems, 422)
    page, problems = _review("validation", key, document, _entity_page(entity.name))
    if page is None:
        return _rule_page(entity, found, key, document, problems, 422)
    return page


@bp.post("/entities/<name>/validations/<rule>/toggle")
def validation_rule_toggle(name: str, rule: str):
    entity, _found, key = _rule(name, rule)
    return _toggled("validation", key, _entity_page(entity.name))


# ------------------------------------------------------------------ SLAs
@bp.post("/slas/<name>/toggle")
def sla_toggle(name: str):
    if name not in C.catalog().slas:
        abort(404)
    return _toggled("sla", name, url_for("ui_admin.processes") + "#slas")
