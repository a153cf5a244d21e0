"""Administration in the browser (administrators only): entities and fields, option sets,
form layouts, views, users, teams and roles, the audit log, processes and their instances.  Every schema change is first
shown as its plan, then applied to the customization layer (plans.py)."""

from __future__ import annotations

from flask import Blueprint, render_template

from .. import context as C
from ..guards import guard

bp = guard(Blueprint("ui_admin", __name__, url_prefix="/admin"), admin=True)


@bp.get("/")
def index():
    catalog = C.catalog()
    return render_template(
        "admin/index.html",
        entities=sorted(catalog.entities.values(), key=lambda e: C.label(e).lower()),
        option_sets=len(catalog.option_sets),
        views=len(catalog.views),
        forms=len(catalog.forms),
        roles=len(catalog.roles),
        users=len(C.store().users()),
        # SLA hooks are compiled into processes named sla:<sla>:<hook>; count the pack's own
        processes=sum(1 for name in catalog.processes if ":" not in name),
    )


from . import (  # noqa: E402,F401  (routes on bp)
    audit,
    definitions,
    history,
    layouts,
    people,
    plans,
    process_editor,
    processes,
    rules,
    schema,
    solutions,
    tokens,
    web_forms,
)
