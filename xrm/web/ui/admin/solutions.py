"""Solution packs in the admin area: what is installed and what the search path offers
(newer versions marked), each install, upgrade, uninstall and purge shown as its plan
first (``xrm/solutions/lifecycle.py``, the same plan as ``xrm solution plan``) and
applied only when confirmed, each data loss the plan names ticked by name (as
``--allow-loss`` names it); the customization layer downloaded as a pack (a zip of what
``xrm solution export`` writes)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from flask import abort, flash, redirect, render_template, request, send_file, url_for
from packaging.version import InvalidVersion, Version

from ....metadata import DefinitionError, discover
from ....metadata.labels import Label
from ....metadata.loader import read_pack
from ....metadata.problems import Problems
from ....solutions.export import ExportError, export_customizations
from ....solutions.lifecycle import plan_install, plan_uninstall
from ....storage.schema import SchemaChangeRefused
from ....storage.store import LifecycleRefused
from .. import context as C
from . import bp
from .plans import _problems

ACTIONS = ("install", "uninstall", "purge")


def _status(installed: str | None, offered: str | None) -> str:
    if installed is None:
        return "available"
    if offered is None:
        return "installed"
    try:
        newer, older = Version(offered) > Version(installed), Version(offered) < Version(installed)
    except InvalidVersion:
        return "installed"
    return "upgrade" if newer else "older" if older else "installed"


@bp.get("/solutions")
def solutions():
    store = C.store()
    installed = {p.name: p for p in store.installed_packs()}
    offered = {}
    for name, folder in discover().items():
        pack = read_pack(folder, Problems())
        offered[name] = pack
    rows = []
    for name in [*installed, *sorted(n for n in offered if n not in installed)]:
        mine, there = installed.get(name), offered.get(name)
        source = mine or there
        rows.append(
            {
                "name": name,
                "label": C.label(Label.of(source.manifest.get("label"), name.capitalize())),
                "installed": mine.version if mine else None,
                "offered": there.version if there else None,
                "status": _status(mine.version if mine else None, there.version if there else None),
                "depends": sorted(source.depends),
                "needed_by": sorted(p.name for p in installed.values() if name in p.depends),
                "customization": bool(source.manifest.get("customization")),
            }
        )
    return render_template(
        "admin/solutions.html",
        rows=rows,
        customizations=len(store.customization_documents()),
    )


def _plan(action: str, name: str | None):
    store = C.store()
    if action == "install":
        folder = discover().get(name or "")
        if folder is None:
            abort(404)
        return plan_install(store, [folder])
    if action == "uninstall":
        return plan_uninstall(store, name or "")
    schema, dropped = store.purge(dry_run=True)
    return _Purge(dropped, schema)


class _Purge:
    """The purge's plan in the shape the page shows."""

    def __init__(self, dropped: list[str], schema):
        self.dropped = dropped
        self.schema = schema

    def lines(self) -> list[str]:
        return self.dropped + [loss.line() for loss in self.schema.losses]


@bp.get("/solutions/plan")
def solution_plan():
    action, name = request.args.get("action", ""), request.args.get("name")
    if action not in ACTIONS:
        abort(404)
    errors: list[str] = []
    lines: list[str] = []
    conflicts = False
    losses = []
    try:
        plan = _plan(action, name)
        lines, conflicts = plan.lines(), bool(getattr(plan, "conflicts", ()))
        losses = plan.schema.losses
    except (DefinitionError, SchemaChangeRefused, LifecycleRefused, ValueError) as exc:
        errors = _problems(exc)
    return render_template(
        "admin/solution_plan.html",
        action=action,
        name=name,
        lines=lines,
        risky=[line for line in lines if line.startswith(("!", "- table", "- column"))],
        errors=errors,
        conflicts=conflicts,
        losses=losses,
    ), (422 if errors else 200)


@bp.post("/solutions/apply")
def solution_apply():
    action, name = request.form.get("action", ""), request.form.get("name") or None
    if action not in ACTIONS:
        abort(400)
    store = C.store()
    # the losses the administrator ticked on the plan, each named as the plan names it
    allow = request.form.getlist("allow_loss")
    try:
        if action == "install":
            folder = discover().get(name or "")
            if folder is None:
                abort(404)
            if request.form.get("accept") != "1" and plan_install(store, [folder]).conflicts:
                raise LifecycleRefused(
                    C._("Customizations conflict with this change: review them and accept.")
                )
            store.install([folder], allow_loss=allow)
            message = C._("%(name)s is installed.", name=name)
        elif action == "uninstall":
            store.uninstall(name or "", allow_loss=allow)
            message = C._("%(name)s is uninstalled; its data is kept.", name=name)
        else:
            _schema, dropped = store.purge(allow_loss=allow)
            message = C._("Purged: %(count)s tables and columns dropped.", count=len(dropped))
    except (DefinitionError, SchemaChangeRefused, LifecycleRefused, ValueError) as exc:
        return render_template(
            "admin/solution_plan.html",
            action=action,
            name=name,
            lines=[],
            risky=[],
            errors=_problems(exc),
            conflicts=False,
            losses=[],
        ), 422
    flash(message, "success")
    return redirect(url_for("ui_admin.solutions"), code=303)


@bp.get("/solutions/export.zip")
def solution_export():
    name = request.args.get("name", "customizations").strip() or "customizations"
    with tempfile.TemporaryDirectory(prefix="xrm-export-") as tmp:
        folder = Path(tmp) / name
        try:
            export_customizations(C.store(), folder, name)
        except ExportError as exc:
            flash(str(exc), "danger")
            return redirect(url_for("ui_admin.solutions"), code=303)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, Path(name) / path.relative_to(folder))
    buffer.seek(0)
    return send_file(
        buffer, mimetype="application/zip", as_attachment=True, download_name=f"{name}.zip"
    )
