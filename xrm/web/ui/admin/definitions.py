"""Every kind of definition editable in the browser as YAML: processes (enable, disable,
change a step, add one), SLAs, calendars, templates, reports, dashboards, views, forms,
roles, option sets, wizards, web forms.  The editor checks the text as it is typed
against the published JSON Schema and the cross-checks (each problem at its line and
column), a save is shown as its plan first and then written to the customization layer
in place of the earlier version, and "revert" takes the customization out so the pack's
own definition applies again.  Every save is kept in the definition's history
(``history.py``: diffs, and revert to any earlier version).  Entities keep their structured editor (schema.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import yaml
from flask import abort, flash, redirect, render_template, request, url_for

from ....metadata.model import thaw
from ....metadata.packs import KINDS, Document, _validate
from ....metadata.problems import DefinitionError, Problems
from ....metadata.schemas import NAME_PATTERN
from ....metadata.source import YamlSyntaxError, load_yaml
from ....solutions.lifecycle import definitions
from ....storage.schema import LossNotNamed, SchemaChangeRefused
from .. import context as C
from . import bp
from .plans import _problems

#: Kinds edited here; entities and their extensions have the structured editor.
EDITABLE = tuple(k for k in KINDS if k not in ("entity", "extend", "data", "demo", "tests"))
#: Kinds whose document holds one definition under its top key (``process: name``).
SINGLE = ("process", "sla", "validation")
#: Kinds only changed, never made from nothing here (a validation rule is made in its
#: entity; the layer changes a named one).
CHANGED_ONLY = ("validation",)
SOURCE = "definition.yaml"


def _all() -> dict[tuple[str, str], dict]:
    """Every editable definition: where it comes from and its current body."""
    store = C.store()
    found: dict[tuple[str, str], dict] = {}
    for pack in store.installed_packs():
        for (kind, name), (_solution, body) in definitions(
            (pack.name, d) for d in pack.documents
        ).items():
            if kind in EDITABLE:
                found[(kind, name)] = {"source": pack.name, "body": body, "customized": False}
    for (kind, name), (place, body) in definitions(store.customization_documents()).items():
        if kind in EDITABLE:
            entry = found.setdefault((kind, name), {"source": None})
            if kind == "validation" and entry.get("body") is not None:
                body = {**thaw(entry["body"]), **thaw(body)}  # the keys it changes, on top
            entry.update(body=body, customized=True, place=place)
    return found


def _document(kind: str, name: str, body) -> dict:
    return thaw(body) if kind in SINGLE else {kind: {name: thaw(body)}}


def _text(kind: str, name: str, body) -> str:
    return yaml.safe_dump(
        _document(kind, name, body), sort_keys=False, allow_unicode=True, width=100
    )


@bp.get("/definitions")
def definitions_index():
    rows = [
        {"kind": kind, "name": name, **entry}
        for (kind, name), entry in sorted(
            _all().items(), key=lambda kv: (EDITABLE.index(kv[0][0]), kv[0][1])
        )
    ]
    return render_template(
        "admin/definitions.html", rows=rows, kinds=[k for k in EDITABLE if k not in CHANGED_ONLY]
    )


@bp.get("/definitions/new")
def definition_new():
    kind, name = request.args.get("kind", ""), request.args.get("name", "").strip()
    if kind not in EDITABLE or kind in CHANGED_ONLY or not re.fullmatch(NAME_PATTERN, name):
        flash(C._("Choose a kind and a name of lower-case letters, digits and _."), "danger")
        return redirect(url_for("ui_admin.definitions_index"), code=303)
    return redirect(url_for("ui_admin.definition", kind=kind, name=name, new=1), code=303)


def _current(kind: str, name: str) -> dict:
    if kind not in EDITABLE:
        abort(404)
    entry = _all().get((kind, name))
    if entry is None and (
        kind in CHANGED_ONLY or (request.method == "GET" and "new" not in request.args)
    ):
        abort(404)
    return entry or {"source": None, "body": None, "customized": False}


@bp.get("/definitions/<kind>/<name>")
def definition(kind: str, name: str):
    entry = _current(kind, name)
    text = _text(kind, name, entry["body"]) if entry["body"] is not None else _starter(kind, name)
    return render_template(
        "admin/definition.html", kind=kind, name=name, entry=entry, text=text, problems=[]
    )


def changes(kind: str, name: str, document: dict) -> list[tuple[str, str]]:
    """What saving ``document`` changes in the definition in effect, as diff lines for the
    plan page (the schema plan says nothing of a change that touches no table)."""
    from .history import diff_lines

    entry = _all().get((kind, name))
    body = entry.get("body") if entry else None
    before = _text(kind, name, body) if body is not None else None
    return diff_lines(
        before, _text(kind, name, document if kind in SINGLE else document[kind][name])
    )


def _starter(kind: str, name: str) -> str:
    return f"{kind}: {name}\n" if kind in SINGLE else f"{kind}:\n  {name}:\n"


def _check(kind: str, name: str, text: str) -> tuple[dict | None, list[str]]:
    """The document the text holds, and every problem in it (``line:column: message``):
    YAML, the kind's JSON Schema, that it defines exactly this definition, then the
    cross-checks of the catalog it would make."""
    try:
        data = load_yaml(text, SOURCE)
    except YamlSyntaxError as exc:
        return None, [f"{exc.position.line}:{exc.position.column}: {exc.message}"]
    if not isinstance(data, Mapping):
        return None, [f"1:1: expected a mapping that starts with {kind}:"]
    if kind == "process":
        from ....metadata.processes import normalize_on

        normalize_on(data)
    defined = [n for k, n in definitions([("layer", Document(kind, data, SOURCE))]) if k == kind]
    if defined != [name]:
        named = ", ".join(defined) or "nothing"
        return None, [f"1:1: this page edits {kind} {name!r}; the text defines {named}"]
    problems = Problems()
    _validate(data, kind, SOURCE, problems)
    if not problems:
        try:  # the tree itself, positions and all, so cross-check problems have lines
            C.store().customize_all([(kind, data)], dry_run=True, replacing=[(kind, name)])
        except DefinitionError as exc:
            problems.items.extend(exc.problems)
        except (SchemaChangeRefused, ValueError) as exc:
            return None, [str(exc)]
    out = []
    for problem in problems.items:
        at = problem.position
        where = f"{at.line}:{at.column}: " if at.path == SOURCE else ""
        subject = f"{problem.subject}: " if problem.subject else ""
        out.append(f"{where}{subject}{problem.message}")
    return (thaw(data) if not out else None), out


@bp.post("/definitions/<kind>/<name>/check")
def definition_check(kind: str, name: str):
    _current(kind, name)
    _document_, problems = _check(kind, name, request.form.get("text", ""))
    return render_template("admin/_definition_problems.html", problems=problems)


@bp.post("/definitions/<kind>/<name>")
def definition_save(kind: str, name: str):
    entry = _current(kind, name)
    text = request.form.get("text", "")
    document, problems = _check(kind, name, text)
    if problems:
        return render_template(
            "admin/definition.html",
            kind=kind,
            name=name,
            entry=entry,
            text=text,  # what the administrator typed is kept
            problems=problems,
        ), 422
    _catalog, plan = C.store().customize_all(
        [(kind, document)], dry_run=True, replacing=[(kind, name)]
    )
    return render_template(
        "admin/definition_plan.html",
        kind=kind,
        name=name,
        lines=[line for line in plan.lines() if not line.startswith("! data loss")],
        documents=json.dumps([[kind, document]], ensure_ascii=False),
        revert=False,
        losses=plan.losses,
        diff=changes(kind, name, document),
    )


@bp.post("/definitions/<kind>/<name>/apply")
def definition_apply(kind: str, name: str):
    _current(kind, name)
    try:
        documents = json.loads(request.form.get("documents", ""))
        ((document_kind, document),) = documents
    except (ValueError, TypeError):
        abort(400)
    if document_kind != kind or not isinstance(document, dict):
        abort(400)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    checked, problems = _check(kind, name, text)  # checked again: the form is the client's
    if problems:
        flash("; ".join(problems), "danger")
        return redirect(url_for("ui_admin.definition", kind=kind, name=name), code=303)
    try:
        C.store().customize_all(
            [(kind, checked)],
            user_id=C.principal().user_id,
            replacing=[(kind, name)],
            allow_loss=request.form.getlist("allow_loss"),  # the losses ticked on the plan
        )
    except (DefinitionError, SchemaChangeRefused, LossNotNamed, ValueError) as exc:
        flash("; ".join(_problems(exc)), "danger")
        return redirect(url_for("ui_admin.definition", kind=kind, name=name), code=303)
    flash(C._("The change was applied."), "success")
    back = request.form.get("back", "")  # a structured editor's page, when it made the change
    if back.startswith("/") and not back.startswith("//"):
        return redirect(back, code=303)
    return redirect(url_for("ui_admin.definition", kind=kind, name=name), code=303)


@bp.post("/definitions/<kind>/<name>/revert")
def definition_revert(kind: str, name: str):
    entry = _current(kind, name)
    if not entry.get("customized"):
        abort(404)
    confirmed = request.form.get("confirm") == "1"
    try:
        _catalog, plan = C.store().uncustomize(
            kind,
            name,
            dry_run=not confirmed,
            user_id=C.principal().user_id,
            allow_loss=request.form.getlist("allow_loss"),
        )
    except (DefinitionError, SchemaChangeRefused, KeyError, ValueError) as exc:
        flash(str(exc), "danger")
        return redirect(url_for("ui_admin.definition", kind=kind, name=name), code=303)
    if not confirmed:
        return render_template(
            "admin/definition_plan.html",
            kind=kind,
            name=name,
            lines=[line for line in plan.lines() if not line.startswith("! data loss")],
            documents="",
            revert=True,
            pack=entry.get("source"),
            losses=plan.losses,
        )
    flash(C._("The customization was taken out."), "success")
    target = "ui_admin.definition" if entry.get("source") else "ui_admin.definitions_index"
    return redirect(url_for(target, kind=kind, name=name), code=303)
