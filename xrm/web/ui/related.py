"""Related lists of a record page, loaded lazily (``GET /r/<entity>/<id>/related/<field>``):
the records of a children field (with *New*, pre-filled with the parent) or of a
many-to-many field, as the user may read them.

Both kinds page alike: ``RELATED_LIMIT`` records at a time, with how many there are and
*Previous* / *Next* (keyset cursors, ``after`` and a ``trail`` of earlier ones as the
lists keep them) that load the next page in place of the list.  The count and the pages
are the same query as the user (a linked record they may not read is neither shown nor
counted); a children list also links to the full list filtered to the parent.

On the read view, a many-to-many list also links existing records and unlinks them:
*Add existing* searches the target entity through the lookup endpoint (what the user may
read) and posts the chosen ids to ``…/related/<field>/add``; *Remove* posts one id to
``…/related/<field>/remove``, which takes the link away and leaves the record.  Both are
link changes of the records service (``storage/links.py``): update permission on the
record, read permission on what is added, audit and processes as for any edit.  The
answer is the record page again (its version, the field's value and the list all moved)
with a toast; a refusal is the page with the message, and nothing changed.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ...metadata import Entity, Field
from ...metadata.filters import FilterError
from ...storage.links import LinkChange, change_links
from ...storage.query import BadCursor
from ...storage.records import Conflict, ValidationFailed
from ..routing import parse_id
from . import context as C
from .forms import entity_or_404, error_lines
from .guards import guard, htmx
from .layouts import main_view
from .lists import FIRST, TRAIL_SEPARATOR
from .record_view import may_update, render_view

bp = guard(Blueprint("ui_related", __name__))

#: Records a related list shows.
RELATED_LIMIT = 10
#: Records one "Add existing" may link at once (a picker's worth).
ADD_LIMIT = 100


def _list_field(entity: Entity, field_name: str) -> Field:
    """The children or many-to-many field the user may read, else 404."""
    f = entity.fields.get(field_name)
    if (
        f is None
        or f.type not in ("children", "many_to_many")
        or field_name not in C.readable_names(entity)
    ):
        abort(404)
    return f


def _link_controls(entity: Entity, record: dict, f: Field) -> dict | None:
    """What "Add existing" and "Remove" need, when the user may change this field of this
    record and search its target; None otherwise."""
    if (
        f.type != "many_to_many"
        or f.name not in C.writable_names(entity)
        or not C.can(f.target, "read")
        or not may_update(entity, record)
    ):
        return None
    ids = {"entity_name": entity.name, "record_id": record["id"], "field_name": f.name}
    return {
        "field": f.name,
        "label": C.label(f),
        "add_url": url_for("ui_related.add", **ids),
        "remove_url": url_for("ui_related.remove", **ids),
        "lookup_url": url_for("ui_shell.lookup", entity_name=f.target),
    }


@bp.get("/r/<entity_name>/<recid:record_id>/related/<field_name>")
def related(entity_name: str, record_id: int, field_name: str):
    """A related list; ``links=1`` (the read view) adds the link controls of a
    many-to-many field for a user who may change it."""
    entity = entity_or_404(entity_name)
    f = _list_field(entity, field_name)
    record = C.records(entity).get(record_id, fields=None if f.type == "many_to_many" else ["id"])
    target = C.catalog().entity_of(f.target)
    if target is None or not C.can(target.name, "read"):
        return render_template(
            "ui/_related.html",
            rows=[],
            columns=[],
            target=target,
            new_url=None,
            all_url=None,
            links=None,
        )
    view = main_view(C.catalog(), target)
    via = f.params.get("via")
    readable = C.readable_names(target)
    columns = [
        c
        for c in view.columns
        if c != via and c.split(".")[0] in readable or c in ("owner", "created_at", "updated_at")
    ][:5]
    columns = [c for c in columns if C.field_at(target, c).stored] or ["id"]
    if f.type == "children":
        flt = [via, "eq", record_id]
    else:
        ids = record.get(field_name) or []
        flt = ["id", "in", ids] if ids else ["id", "eq", 0]
    after = request.args.get("after") or None
    service = C.records(target)
    sort = list(view.sort) or None
    try:
        try:
            page = service.query(
                filter=flt, sort=sort, fields=columns, limit=RELATED_LIMIT, after=after
            )
        except FilterError:
            sort = None  # the view sorts on what this user may not read: by id then
            page = service.query(filter=flt, fields=columns, limit=RELATED_LIMIT, after=after)
    except BadCursor:  # a cursor from an older page of another sort: start again
        after = None
        page = service.query(filter=flt, sort=sort, fields=columns, limit=RELATED_LIMIT)
    # As the lists count: the same filter as the reader, so what they may not read is
    # neither shown nor counted; a count only when there is more than this page.
    total = service.count(flt).value if after or page.next_cursor else len(page.rows)
    titles = C.titles()
    titles.want_records(target, page.rows, columns)
    titles.resolve()
    fields = [C.field_at(target, c) for c in columns]
    rows = [
        {"id": r["id"], "cells": [C.display(cf, r.get(c)) for c, cf in zip(columns, fields)]}
        for r in page.rows
    ]
    new_url = None
    all_url = None
    if f.type == "children":
        if C.can(target.name, "create"):
            new_url = url_for(
                "ui_forms.new",
                entity_name=target.name,
                **{via: record_id},
                next=url_for("ui_record.view", entity_name=entity.name, record_id=record_id),
            )
        all_url = url_for(
            "ui_lists.view", view_name=view.name, filter=json.dumps([via, "eq", record_id])
        )
    links = _link_controls(entity, record, f) if request.args.get("links") == "1" else None
    return render_template(
        "ui/_related.html",
        rows=rows,
        columns=[C.path_label(target, c) for c in columns],
        target=target,
        new_url=new_url,
        all_url=all_url if page.next_cursor or after else None,
        links=links,
        pages=_pages(entity, record_id, f, after, page.next_cursor, len(page.rows), total),
    )


def _pages(
    entity: Entity, record_id: int, f: Field, after: str | None, next_cursor, shown: int, total
) -> dict:
    """Where this page sits (records ``first``..``last`` of ``total``) and the URLs of the
    pages around it: the cursors of the pages before are kept in ``trail`` (as a list keeps
    them), so *Previous* goes back without a backward query."""
    trail = [t for t in request.args.get("trail", "").split(TRAIL_SEPARATOR) if t]
    links = request.args.get("links")

    def url(cursor, kept):
        return url_for(
            "ui_related.related",
            entity_name=entity.name,
            record_id=record_id,
            field_name=f.name,
            links=links,
            after=cursor,
            trail=TRAIL_SEPARATOR.join(kept) or None,
        )

    first = len(trail) * RELATED_LIMIT + 1 if after else 1
    previous_url = None
    if after:
        before = trail[:-1]
        previous = trail[-1] if trail else FIRST
        previous_url = url(None if previous == FIRST else previous, before)
    next_url = url(next_cursor, [*trail, after or FIRST]) if next_cursor else None
    return {
        "total": total,
        "first": first if shown else 0,
        "last": first + shown - 1 if shown else 0,
        "previous_url": previous_url,
        "next_url": next_url,
    }


# ------------------------------------------------------------------------ link changes
def _posted_ids(f: Field) -> list[int]:
    """The ids posted as ``ids`` (one per value); ValidationFailed for anything else."""
    texts = [t for t in request.form.getlist("ids") if t.strip()]
    if not texts:
        raise ValidationFailed({f.name: [C._("Choose at least one record.")]})
    if len(texts) > ADD_LIMIT:
        raise ValidationFailed(
            {f.name: [C._("Choose at most %(n)s records at once.", n=ADD_LIMIT)]}
        )
    ids = []
    for text in texts:
        ident = parse_id(text.strip())
        if ident is None:
            raise ValidationFailed(
                {f.name: [C._("%(value)s is not a record id.", value=text[:40])]}
            )
        ids.append(ident)
    return ids


def _message(f: Field, change: LinkChange, adding: bool) -> str:
    listed = C.label(f)
    if adding:
        if not change.added:
            return C._("Already in %(list)s.", list=listed)
        return C._("Added to %(list)s: %(n)s.", list=listed, n=len(change.added))
    if not change.removed:
        return C._("Not in %(list)s.", list=listed)
    return C._(
        "Removed from %(list)s: %(n)s. The records themselves are kept.",
        list=listed,
        n=len(change.removed),
    )


def _refused(entity: Entity, record_id: int, messages: list[str], status: int):
    """The record page with the messages as toasts.  To htmx only the toasts are swapped
    (``HX-Reswap: none``): the page stays as it was, the records chosen still chosen."""
    for line in messages:
        flash(line, "danger")
    page, status = render_view(entity, C.records(entity).get(record_id), status=status)
    return page, status, {"HX-Reswap": "none"} if htmx() else {}


def _change(entity_name: str, record_id: int, field_name: str, *, adding: bool):
    entity = entity_or_404(entity_name)
    f = _list_field(entity, field_name)
    if f.type != "many_to_many":
        abort(404)
    service = C.records(entity)
    try:
        ids = _posted_ids(f)
        change = change_links(
            service,
            record_id,
            field_name,
            add=ids if adding else (),
            remove=() if adding else ids,
        )
    except ValidationFailed as exc:
        return _refused(entity, record_id, error_lines(entity, exc.errors), 422)
    except Conflict:
        message = C._("Someone else changed this record meanwhile. Please try again.")
        return _refused(entity, record_id, [message], 409)
    flash(_message(f, change, adding), "success")
    if htmx():
        return render_view(entity, service.get(record_id), saved=field_name)
    return redirect(url_for("ui_record.view", entity_name=entity.name, record_id=record_id), 303)


@bp.post("/r/<entity_name>/<recid:record_id>/related/<field_name>/add")
def add(entity_name: str, record_id: int, field_name: str):
    """Link the posted ``ids`` (existing records of the target) to the field."""
    return _change(entity_name, record_id, field_name, adding=True)


@bp.post("/r/<entity_name>/<recid:record_id>/related/<field_name>/remove")
def remove(entity_name: str, record_id: int, field_name: str):
    """Unlink the posted ``ids`` from the field; the records themselves stay."""
    return _change(entity_name, record_id, field_name, adding=False)
