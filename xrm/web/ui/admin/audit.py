"""The audit log (every record change: who, when, which field, old and new value) and the
history of customizations, newest first, a page at a time."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request

from ....storage import tables as T
from ...routing import parse_id
from .. import context as C
from . import bp

PAGE = 50


@bp.get("/audit")
def audit():
    a = T.audit
    query = sa.select(a).order_by(a.c.id.desc()).limit(PAGE + 1)
    entity = request.args.get("entity", "")
    if entity:
        query = query.where(a.c.entity == entity)
    user = parse_id(request.args.get("user"))
    if user is not None:
        query = query.where(a.c.user_id == user)
    before = parse_id(request.args.get("before"))
    if before is not None:
        query = query.where(a.c.id < before)
    with C.store().engine.connect() as conn:
        rows = conn.execute(query).all()
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    titles = C.titles()
    for row in rows:
        titles.want("user", row.user_id)
    titles.resolve()
    catalog = C.catalog()
    entries = []
    for row in rows:
        target = catalog.entity_of(row.entity)
        field = target.fields.get(row.field) if target and row.field else None
        entries.append(
            {
                "id": row.id,
                "at": row.at,
                "who": titles.title("user", row.user_id) if row.user_id else C._("System"),
                "entity": C.label(target) if target else row.entity,
                "entity_name": row.entity,
                "record_id": row.record_id,
                "action": row.action,
                "field": C.label(field) if field else (row.field or ""),
                "old": _short(row.old),
                "new": _short(row.new),
            }
        )
    users = C.store().users()
    return render_template(
        "admin/audit.html",
        entries=entries,
        next_before=rows[-1].id if more and rows else None,
        entities=sorted(catalog.entities),
        users=users,
        entity=entity,
        user=user,
    )


def _short(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= 120 else text[:117] + "…"


@bp.get("/customizations")
def customizations():
    c = T.customizations
    with C.store().engine.connect() as conn:
        rows = conn.execute(sa.select(c).order_by(c.c.id.desc()).limit(200)).all()
    titles = C.titles()
    for row in rows:
        titles.want("user", row.created_by)
    titles.resolve()
    return render_template("admin/customizations.html", rows=rows)
