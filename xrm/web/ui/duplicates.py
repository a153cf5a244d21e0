"""Possible duplicates on a new record's form: as the user fills the fields a duplicate
rule matches, an htmx request asks the records service for likely duplicates (the
records this user may read) and shows them as links, before the record is saved."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from . import context as C
from .guards import guard

bp = guard(Blueprint("ui_duplicates", __name__))

LIMIT = 5  # candidates shown on a form


@bp.post("/r/<entity_name>/duplicates")
def check(entity_name: str):
    """The possible-duplicates panel for what the form holds now (posted with the form's
    CSRF token; empty when nothing matches)."""
    entity = C.catalog().entity_of(entity_name)
    if entity is None:
        abort(404)
    names = {name for rule in entity.duplicates for name in rule.fields}
    values = {name: request.form[name] for name in names if name in request.form}
    found = C.records(entity).find_duplicates(values, limit=LIMIT) if values else []
    rules = {rule.name: rule.title(C.locale()) for rule in entity.duplicates}
    candidates = [
        {
            "url": C.record_url(entity.name, c.id),
            "title": c.title,
            "reasons": ", ".join(rules.get(name, name) for name in c.rules),
            "percent": round(c.score * 100) if c.score < 1 else None,
        }
        for c in found
    ]
    return render_template("ui/_duplicates.html", candidates=candidates, entity=entity)
