"""Plan first, then apply: every customization an administrator makes is shown as what it
changes (definitions and database), what is kept and what is at risk, computed by the
store itself (``customize_all(..., dry_run=True)``); nothing is written until confirmed."""

from __future__ import annotations

import json

from flask import abort, flash, redirect, render_template, request

from ....metadata.problems import DefinitionError
from ....storage.schema import SchemaChangeRefused
from .. import context as C
from . import bp


def _problems(exc: Exception) -> list[str]:
    if isinstance(exc, DefinitionError):
        out = []
        for problem in exc.problems:
            subject = f"{problem.subject}: " if problem.subject else ""
            out.append(f"{subject}{problem.message}")
        return out
    return [str(exc)]


def review(
    documents: list[tuple[str, dict]], summary: list[str], back: str, risks: list[str] | None = None
):
    """The plan page of a change (documents of the customization layer)."""
    errors: list[str] = []
    plan = None
    if not documents:  # the request itself was refused (the summary says why)
        return render_template(
            "admin/plan.html",
            summary=[],
            added=[],
            kept=[],
            risks=[],
            errors=summary,
            documents="[]",
            back=back,
        ), 422
    try:
        _catalog, plan = C.store().customize_all(
            documents, user_id=C.principal().user_id, dry_run=True
        )
    except (DefinitionError, SchemaChangeRefused, ValueError) as exc:
        errors = _problems(exc)
    risks = list(risks or ())
    added, kept = [], []
    if plan is not None:
        for line in plan.lines():
            if line.startswith("! data loss"):
                continue  # asked for by name below the plan (admin/_losses.html)
            if line.startswith("="):
                kept.append(line[1:].strip())
            elif "REFUSED" in line:
                risks.append(line[1:].strip())
            elif line != "nothing to change":
                added.append(line)
    status = 422 if errors else 200
    return (
        render_template(
            "admin/plan.html",
            summary=summary,
            added=added,
            kept=kept,
            risks=risks,
            errors=errors,
            documents=json.dumps([[k, d] for k, d in documents], ensure_ascii=False),
            back=back,
            losses=plan.losses if plan is not None else [],
        ),
        status,
    )


def _documents(raw: str) -> list[tuple[str, dict]]:
    try:
        items = json.loads(raw)
    except ValueError:
        abort(400)
    if not isinstance(items, list) or not items:
        abort(400)
    out = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        ):
            abort(400)
        out.append((item[0], item[1]))
    return out


def _safe(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/admin/"


@bp.post("/apply")
def apply():
    documents = _documents(request.form.get("documents", ""))
    back = _safe(request.form.get("back", "/admin/"))
    try:
        C.store().customize_all(
            documents,
            user_id=C.principal().user_id,
            allow_loss=request.form.getlist("allow_loss"),  # the losses ticked on the plan
        )
    except (DefinitionError, SchemaChangeRefused, ValueError) as exc:
        return render_template(
            "admin/plan.html",
            summary=[],
            added=[],
            kept=[],
            risks=[],
            errors=_problems(exc),
            documents=request.form["documents"],
            back=back,
        ), 422
    flash(C._("The change was applied."), "success")
    return redirect(back, code=303)
