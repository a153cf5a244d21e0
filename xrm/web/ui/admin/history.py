"""A definition's history in the admin area: every change made to it in the customization
layer (who, when, what it was before and after, shown as a diff, and the plan it went
through), and "revert to this version", which is one more change through the same plan
and apply (a dry run shown first with its problems and the data it would lose; applied
all or nothing when confirmed).  The rows are written by the store itself
(``xrm/storage/history.py``), so a change from any page or the API is listed."""

from __future__ import annotations

import difflib

from flask import abort, flash, redirect, render_template, request, url_for

from ....metadata.problems import DefinitionError
from ....storage import history
from ....storage.schema import LossNotNamed, SchemaChangeRefused
from .. import context as C
from . import bp
from .plans import _problems
from .processes import when


def diff_lines(before: str | None, after: str | None) -> list[tuple[str, str]]:
    """A unified diff as (css class, line) pairs for the page (the template escapes)."""
    out = []
    for line in difflib.unified_diff(
        (before or "").splitlines(), (after or "").splitlines(), "before", "after", lineterm="", n=2
    ):
        if line.startswith(("---", "+++")):
            continue
        css = {"+": "text-success", "-": "text-danger", "@": "text-body-secondary"}.get(
            line[:1], ""
        )
        out.append((css, line))
    return out


def _who(rows: list[dict]) -> None:
    titles = C.titles()
    for row in rows:
        titles.want("user", row["user_id"])
    titles.resolve()
    for row in rows:
        row["who"] = titles.title("user", row["user_id"]) if row["user_id"] else C._("System")
        row["when"] = when(row["at"])


@bp.get("/definitions/<kind>/<name>/history")
def definition_history(kind: str, name: str):
    rows = history.entries(C.store(), kind, name)
    _who(rows)
    for row in rows:
        row["diff"] = diff_lines(row["before_text"], row["after_text"])
    return render_template("admin/definition_history.html", kind=kind, name=name, rows=rows)


def _entry_or_404(kind: str, name: str, ident: int) -> dict:
    row = history.entry(C.store(), ident)
    if row is None or (row["kind"], row["name"]) != (kind, name):
        abort(404)
    return row


def _current_text(kind: str, name: str) -> str | None:
    """The definition in effect now (the layer's, else the pack's), as history writes it."""
    from .definitions import _all

    entry = _all().get((kind, name))
    return history.text_of(kind, name, entry["body"]) if entry else None


@bp.post("/definitions/<kind>/<name>/history/<recid:ident>/revert")
def definition_history_revert(kind: str, name: str, ident: int):
    row = _entry_or_404(kind, name, ident)
    confirmed = request.form.get("confirm") == "1"
    allow = request.form.getlist("allow_loss")
    user_id = C.principal().user_id
    errors: list[str] = []
    plan = None
    try:
        _catalog, plan = history.revert(
            C.store(), ident, user_id=user_id, dry_run=not confirmed, allow_loss=allow
        )
    except KeyError:
        errors = [C._("This version is already the one in effect: there is nothing to revert.")]
    except (DefinitionError, SchemaChangeRefused, LossNotNamed, ValueError) as exc:
        errors = _problems(exc)
    if confirmed and not errors:
        flash(C._("Reverted to version #%(id)s.", id=ident), "success")
        return redirect(url_for("ui_admin.definition_history", kind=kind, name=name), code=303)
    lines = [line for line in plan.lines() if not line.startswith("! data loss")] if plan else []
    return render_template(
        "admin/definition_revert.html",
        kind=kind,
        name=name,
        row=row,
        diff=diff_lines(_current_text(kind, name), row["after_text"]),
        lines=[line for line in lines if line != "nothing to change"],
        losses=plan.losses if plan is not None and not errors else [],
        errors=errors,
    ), (422 if errors else 200)
