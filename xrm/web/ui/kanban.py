"""Kanban boards for views of kind kanban: a column per value of the group-by field; a
card dragged to another column is saved through the records service, so stage rules
(allowed transitions, required fields) hold and their errors are shown on the board."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, render_template, request, url_for

from ...metadata import Entity, View
from ...metadata.filters import FilterError
from ...storage.query import search_fields
from ...storage.records import ALL_KEY, Conflict, Forbidden, NotFound, ValidationFailed
from ..routing import parse_id
from . import context as C
from . import filtering as F
from .guards import guard

bp = guard(Blueprint("ui_kanban", __name__))

EMPTY = "__empty__"
SCAN = 500  # records read to find the columns of a board grouped by a lookup or user


def _columns(view: View, entity: Entity, base) -> list[tuple[str, str, str | None]]:
    """(value, label, color) of each column, in order."""
    field = (
        entity.fields[view.group_by]
        if view.group_by in entity.fields
        else C.field_at(entity, view.group_by)
    )
    if field.type == "choice":
        return [(o.value, C.label(o), o.color) for o in field.choices] + [
            (EMPTY, C._("(empty)"), None)
        ]
    if field.type == "boolean":
        return [
            ("true", C._("Yes"), "green"),
            ("false", C._("No"), "gray"),
            (EMPTY, C._("(empty)"), None),
        ]
    page = C.records(entity).query(filter=base, fields=[view.group_by], limit=SCAN)
    seen: list = []
    for row in page.rows:
        value = row.get(view.group_by)
        if value is not None and value not in seen:
            seen.append(value)
    titles = C.titles()
    for value in seen:
        titles.want(field.target, value)
    titles.resolve()
    columns = [(str(v), titles.title(field.target, v), None) for v in seen]
    columns.sort(key=lambda c: c[1].lower())
    return [*columns, (EMPTY, C._("(empty)"), None)]


def _condition(view: View, entity: Entity, value: str):
    field = C.field_at(entity, view.group_by)
    if value == EMPTY:
        return [view.group_by, "is_empty"]
    if field.type == "boolean":
        return [view.group_by, "eq", value == "true"]
    if field.type in ("lookup", "user"):
        return [view.group_by, "eq", int(value)]
    return [view.group_by, "eq", value]


def _totals(view: View, entity: Entity, service, base, search, card: list[str]) -> dict:
    """Column value -> (count, sum of the board's money field or None): one grouped
    aggregate under the viewer's scope and the board's filter, so a column's figures
    count every record in it, not only the cards shown.  The money field is the first
    money field on the card."""
    money = next((p for p in card if C.field_at(entity, p).type == "money"), None)
    measures = ["count"] + ([f"sum:{money}"] if money else [])
    rows = service.aggregate([view.group_by], measures, base, search=search)
    out = {}
    for row in rows:
        value = row[view.group_by]
        if value is None:
            key = EMPTY
        elif isinstance(value, bool):
            key = "true" if value else "false"
        else:
            key = str(value)
        total = row.get(f"sum:{money}") if money else None
        out[key] = (row["count"], total)
    return out, (C.field_at(entity, money) if money else None)


def board(view: View, entity: Entity):
    from .lists import invalid_state, quick_filters, state_for

    try:
        state = state_for(view, entity)
    except FilterError as exc:
        return invalid_state(view, exc)
    readable = C.readable_names(entity)
    card = [
        p
        for p in (view.card or view.columns)
        if p.split(".")[0] in readable or p in ("owner", "created_at", "updated_at")
    ]
    card = [p for p in card if C.field_at(entity, p).stored] or ["id"]
    fields = [C.field_at(entity, p) for p in card]
    limit = int(current_app.config.get("XRM_KANBAN_CARDS", 25))
    error = None
    columns = []
    try:
        base = F.effective_filter(state, entity, C.catalog().entity_of)
        search = state.q if state.q and search_fields(entity) else None
        service = C.records(entity)
        pages = []
        for value, label, color in _columns(view, entity, base):
            tree = F.combine(base, _condition(view, entity, value))
            page = service.query(
                filter=tree,
                sort=state.sort_spec,
                fields=[*card, view.group_by],
                limit=limit,
                search=search,
            )
            counted = service.count(tree, search=search) if page.next_cursor else None
            pages.append((value, label, color, page, counted))
        totals, money = _totals(view, entity, service, base, search, card)
        titles = C.titles()
        for *_, page, _counted in pages:
            titles.want_records(entity, page.rows, card)
        titles.resolve()
        for value, label, color, page, counted in pages:
            if value == EMPTY and not page.rows:
                continue
            cards = [
                {
                    "id": row["id"],
                    "version": row["version"],
                    "title": C.display(fields[0], row.get(card[0]), link=False)
                    if card
                    else row["id"],
                    "lines": [
                        (C.path_label(entity, p), C.display(f, row.get(p)))
                        for p, f in zip(card[1:], fields[1:])
                        if row.get(p) not in (None, "", [])
                    ],
                    "url": url_for("ui_record.view", entity_name=entity.name, record_id=row["id"]),
                }
                for row in page.rows
            ]
            more = (counted.value - len(cards)) if counted is not None else 0
            count, total = totals.get(value, (0, None))
            columns.append(
                {
                    "value": value,
                    "label": label,
                    "color": color,
                    "cards": cards,
                    "more": more,
                    "count": count,
                    "sum": total,
                    "sum_text": C.text(money, total or 0) if money is not None else None,
                }
            )
    except FilterError as exc:
        error = C._("The filter is not valid: %(detail)s", detail=str(exc))
    can_move = view.group_by in C.writable_names(entity)
    return render_template(
        "ui/kanban.html",
        view=view,
        entity=entity,
        state=state,
        columns=columns,
        error=error,
        can_move=can_move,
        quick=quick_filters(view, entity, state),
        views=C.catalog().views_of(entity.name),
        can_create=C.can(entity.name, "create"),
        searchable=bool(search_fields(entity)),
    )


@bp.post("/kanban/<view_name>/move")
def move(view_name: str):
    """Move a card: set the group-by field of one record (JSON in, JSON out)."""
    from .layouts import view_named

    view = view_named(C.catalog(), view_name)
    if view is None or view.kind != "kanban":
        abort(404)
    entity = C.catalog().entity(view.entity)
    ident = parse_id(request.form.get("id"))
    value = request.form.get("value", "")
    version = parse_id(request.form.get("version"))
    service = C.records(entity)
    # A card the user may not read is answered as one that does not exist: whether an id
    # exists is none of their business (only a readable one may be "forbidden").
    if ident is None or not service.query(filter=["id", "eq", ident], fields=["id"]).rows:
        return _gone()
    field = C.field_at(entity, view.group_by)
    if value == EMPTY:
        new_value = None
    elif field.type == "boolean":
        new_value = value == "true"
    else:
        new_value = value
    try:
        record = service.update(ident, {view.group_by: new_value}, version=version)
    except ValidationFailed as exc:
        return jsonify({"ok": False, "message": _message(entity, exc)}), 422
    except Conflict:
        return jsonify(
            {
                "ok": False,
                "message": C._("Someone else changed this record while you were editing it."),
            }
        ), 409
    except NotFound:  # deleted since it was read
        return _gone()
    except Forbidden as exc:
        return jsonify({"ok": False, "message": C.error(str(exc))}), 403
    return jsonify({"ok": True, "version": record["version"]})


def _gone():
    return jsonify({"ok": False, "message": C._("This record no longer exists.")}), 404


def _message(entity: Entity, exc: ValidationFailed) -> str:
    parts = []
    for name, messages in exc.errors.items():
        where = (
            ""
            if name == ALL_KEY
            else (C.label(entity.fields[name]) if name in entity.fields else name)
        )
        texts = "; ".join(C.error(m) for m in messages)
        parts.append(f"{where}: {texts}" if where else texts)
    return C._("Could not move the card: %(detail)s", detail="; ".join(parts))
