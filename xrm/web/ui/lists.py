"""List views: columns from the view definition, quick filters, the advanced filter builder,
sort by column, search, keyset pages, personal saved views, bulk update and delete, manual
processes started for the selected rows, and export of what the list shows.  Kanban,
calendar and tree views are dispatched from here too."""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from ...metadata import Entity, View
from ...metadata.filters import FilterError, resolve_path
from ...metadata.model import FormField
from ...storage.files import check_file_values
from ...storage.query import BadCursor, search_fields
from ...storage.records import ALL_KEY, Conflict, Forbidden, NotFound, RecordError, ValidationFailed
from ..routing import parse_id
from . import context as C
from . import filtering as F
from . import widgets as W
from .filter_text import describe as describe_filter
from .guards import guard, htmx
from .inbox import action_label, manual_actions, start_many
from .layouts import main_view, view_named

bp = guard(Blueprint("ui_lists", __name__))

PAGE_SIZE = 50
TRAIL_SEPARATOR = "."
FIRST = "~"


# ------------------------------------------------------------------------ resolving
def resolve_view(view_name: str) -> tuple[View, Entity]:
    view = view_named(C.catalog(), view_name)
    if view is None:
        abort(404)
    entity = C.catalog().entity(view.entity)
    if not C.can(entity.name, "read"):
        raise Forbidden(f"you may not read {entity.name} records")
    return view, entity


def saved_state_of(view: View) -> tuple[int | None, dict | None]:
    wanted = parse_id(request.values.get("saved"))
    if wanted is None:
        return None, None
    for row in C.store().saved_views(C.principal().user_id, view.name):
        if row.id == wanted:
            return row.id, row.state
    return None, None


def state_for(view: View, entity: Entity) -> F.ListState:
    saved_id, saved = saved_state_of(view)
    state = F.read_state(view, entity, C.catalog().entity_of, request.args, saved, C.locale())
    state.saved = saved_id
    return state


def invalid_state(view: View, exc: FilterError):
    """A list state that does not parse (a builder row naming no field, a filter that is
    not JSON, a sort by a field the user may not read...): say why, show the plain view."""
    flash(C._("The filter is not valid: %(detail)s", detail=exc.message), "danger")
    return redirect(url_for("ui_lists.view", view_name=view.name))


def columns_of(view: View, entity: Entity, state: F.ListState) -> list[str]:
    """The columns the list shows: stored, readable paths of the view (or the saved view)."""
    readable = C.readable_names(entity)
    out = []
    for path in state.columns or view.columns:
        head = path.split(".")[0]
        if head in entity.fields and head not in readable:
            continue
        try:
            f, _ = resolve_path(entity, path, C.catalog().entity_of)
        except FilterError:
            continue
        if f.stored:
            out.append(path)
    return out or ["id"]


# ------------------------------------------------------------------------ the page
class Results:
    """One page of a list: rows as cells, with what the template needs around them."""

    def __init__(self, view: View, entity: Entity, state: F.ListState):
        self.view, self.entity, self.state = view, entity, state
        self.columns = columns_of(view, entity, state)
        self.fields = [C.field_at(entity, p) for p in self.columns]
        self.rows: list[dict] = []
        self.next_cursor: str | None = None
        self.error: str | None = None
        self.searchable = bool(search_fields(entity))
        self.trail = (
            [t for t in request.args.get("trail", "").split(TRAIL_SEPARATOR) if t]
            if request
            else []
        )

    def load(self, limit: int = PAGE_SIZE) -> Results:
        state = self.state
        try:
            tree = F.effective_filter(state, self.entity, C.catalog().entity_of)
            page = C.records(self.entity).query(
                filter=tree,
                sort=state.sort_spec,
                fields=self.columns,
                limit=limit,
                after=state.after,
                search=state.q if state.q and self.searchable else None,
            )
        except (FilterError, BadCursor) as exc:
            self.error = C._("The filter is not valid: %(detail)s", detail=str(exc))
            return self
        titles = C.titles()
        titles.want_records(self.entity, page.rows, self.columns)
        titles.resolve()
        self.next_cursor = page.next_cursor
        show = C.formatter().display
        columns = list(enumerate(zip(self.columns, self.fields)))
        for row in page.rows:
            self.rows.append(
                {
                    "id": row["id"],
                    "url": C.record_url(self.entity.name, row["id"]),
                    "version": row.get("version"),
                    "cells": [show(f, row.get(p), i > 0) for i, (p, f) in columns],
                }
            )
        return self

    def header(self):
        for path, f in zip(self.columns, self.fields):
            sortable = f.stored and f.kind.json_type not in ("array", "object")
            direction = self.state.direction_of(path)
            if direction == "asc":
                next_sort = f"-{path}"
            else:
                next_sort = path
            yield {
                "path": path,
                "label": C.path_label(self.entity, path),
                "sortable": sortable,
                "direction": direction,
                "numeric": f.kind.numeric,
                "query": self.state.query_string(sort=next_sort, after=None, trail=None),
            }

    # -- keyset pages, with a trail of earlier cursors for "previous"
    def next_query(self) -> str | None:
        if not self.next_cursor:
            return None
        trail = [*self.trail, self.state.after or FIRST]
        return self.state.query_string(after=self.next_cursor, trail=TRAIL_SEPARATOR.join(trail))

    def previous_query(self) -> str | None:
        if not self.state.after:
            return None
        trail = list(self.trail)
        previous = trail.pop() if trail else FIRST
        return self.state.query_string(
            after=None if previous == FIRST else previous, trail=TRAIL_SEPARATOR.join(trail) or None
        )

    def first_query(self) -> str | None:
        return self.state.query_string(after=None, trail=None) if self.state.after else None


def quick_filters(view: View, entity: Entity, state: F.ListState) -> list[dict]:
    """The controls of a view's quick filters."""
    out = []
    for path in view.quick_filters:
        try:
            f, _ = resolve_path(entity, path, C.catalog().entity_of)
        except FilterError:
            continue
        head = path.split(".")[0]
        if head in entity.fields and head not in C.readable_names(entity):
            continue
        value = state.quick.get(path, "")
        control = {
            "path": path,
            "label": C.path_label(entity, path),
            "value": value,
            "kind": "text",
            "options": [],
        }
        if f.type in ("choice", "multi_choice"):
            control["kind"] = "select"
            control["options"] = [(o.value, C.label(o)) for o in f.choices]
        elif f.type == "boolean":
            control["kind"] = "select"
            control["options"] = [("true", C._("Yes")), ("false", C._("No"))]
        elif f.type in ("date", "datetime"):
            control["kind"] = "select"
            control["options"] = [(v, _relative_label(v)) for v in F.DATE_QUICK]
        elif f.type == "user":
            control["kind"] = "user"
            control["url"] = url_for("ui_shell.lookup_users")
            user_id = parse_id(value)
            if user_id is not None:
                C.titles().want("user", user_id)
                C.titles().resolve()
                control["selected"] = C.titles().title("user", user_id)
        elif f.type == "lookup":
            control["kind"] = "lookup"
            control["url"] = url_for("ui_shell.lookup", entity_name=f.target)
            record_id = parse_id(value)
            if record_id is not None:
                control["selected"] = C.titles().title(f.target, record_id)
        out.append(control)
    return out


def _relative_label(value: str) -> str:
    op, _, days = value.partition(":")
    words = C._(F.OPERATOR_WORDS.get(op, op))
    return words.replace("N", days) if days else words


def column_choices(entity: Entity, shown: list[str]) -> list[dict]:
    """The columns a user may pick for a list: what the filter builder offers that has a
    column, the ones shown first and in their order."""
    labels = dict(builder_fields(entity))
    entity_of = C.catalog().entity_of

    def stored(path: str) -> bool:
        try:
            return resolve_path(entity, path, entity_of)[0].stored
        except FilterError:
            return False

    offered = [p for p in labels if stored(p)]
    ordered = [p for p in shown if p in labels] + [p for p in offered if p not in shown]
    return [{"path": p, "label": labels[p], "shown": p in shown} for p in ordered]


def builder_fields(entity: Entity) -> list[tuple[str, str]]:
    """Fields the filter builder offers: the entity's readable, filterable fields, the
    system columns, and one step through each lookup."""
    readable = C.readable_names(entity)
    out = []
    for name, f in entity.fields.items():
        if name in readable and F.operators_for(f):
            out.append((name, C.label(f)))
    for name in ("owner", "created_at", "updated_at", "created_by", "id"):
        out.append((name, C._(C.SYSTEM_LABELS[name])))
    catalog = C.catalog()
    for name, f in entity.fields.items():
        if f.type != "lookup" or name not in readable:
            continue
        target = catalog.entity_of(f.params["to"])
        if target is None or not C.can(target.name, "read"):
            continue
        target_readable = C.readable_names(target)
        for inner, g_field in target.fields.items():
            if inner in target_readable and g_field.type in (
                "choice",
                "text",
                "boolean",
                "date",
                "money",
                "integer",
                "lookup",
                "user",
            ):
                out.append((f"{name}.{inner}", f"{C.label(f)} › {C.label(g_field)}"))
    return out


def builder_row(entity: Entity, row: F.BuilderRow) -> dict:
    """What one row of the filter builder shows."""
    try:
        f, _ = resolve_path(entity, row.path, C.catalog().entity_of) if row.path else (None, ())
    except FilterError:
        f = None
    ops = F.operators_for(f) if f is not None else []
    op = row.op if row.op in ops else (ops[0] if ops else "eq")
    control = {
        "path": row.path,
        "op": op,
        "value": row.value,
        "operators": [],
        "input": "text",
        "options": [],
    }
    control["operators"] = [(o, C._(F.OPERATOR_WORDS[o]), o in F.NO_VALUE_OPS) for o in ops]
    if f is not None:
        if f.type in ("choice", "multi_choice"):
            control["options"] = [(o.value, C.label(o)) for o in f.choices]
        elif f.type == "boolean":
            control["options"] = [("true", C._("Yes")), ("false", C._("No"))]
        elif f.type == "date" or f.type == "datetime":
            control["input"] = "date"
        elif f.kind.numeric:
            control["input"] = "number"
    control["hide_value"] = op in F.NO_VALUE_OPS
    return control


def page_context(view: View, entity: Entity, state: F.ListState, results: Results) -> dict:
    rows_mode = F.rows_of(state.advanced)
    builder_rows = []
    mode = "all"
    if rows_mode is not None:
        mode, rows = rows_mode
        builder_rows = [builder_row(entity, r) for r in rows]
    saved = C.store().saved_views(C.principal().user_id, view.name)
    bulk_fields = [
        (n, C.label(f))
        for n, f in entity.fields.items()
        if n in C.writable_names(entity) and f.type not in ("file", "children", "rich_text", "json")
    ]
    return {
        "view": view,
        "entity": entity,
        "state": state,
        "results": results,
        "quick": quick_filters(view, entity, state),
        "builder_fields": builder_fields(entity),
        "column_choices": column_choices(entity, results.columns),
        "builder_rows": builder_rows,
        "builder_mode": mode,
        "builder_representable": rows_mode is not None,
        "advanced_json": json.dumps(state.advanced, ensure_ascii=False, indent=1)
        if state.advanced not in (None, [], {})
        else "",
        # the advanced filter (a saved view's too) in words; the JSON stays for editing
        "filter_text": describe_filter(entity, state.advanced),
        "saved_views": saved,
        "views": C.catalog().views_of(entity.name),
        "bulk_fields": bulk_fields,
        "can_create": C.can(entity.name, "create"),
        "can_update": C.can(entity.name, "update"),
        "can_delete": C.can(entity.name, "delete"),
        "processes": manual_actions(entity) if C.can(entity.name, "update") else [],
    }


@bp.get("/e/<entity_name>")
def entity_list(entity_name: str):
    entity = C.catalog().entity_of(entity_name)
    if entity is None:
        abort(404)
    return redirect(url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name))


@bp.get("/views/<view_name>")
def view(view_name: str):
    view, entity = resolve_view(view_name)
    if view.kind == "kanban":
        from .kanban import board

        return board(view, entity)
    if view.kind == "calendar":
        from .calendar import month_page

        return month_page(view, entity)
    if view.kind == "tree":
        from .tree import tree_page

        return tree_page(view, entity)
    try:
        state = state_for(view, entity)
    except FilterError as exc:
        return invalid_state(view, exc)
    results = Results(view, entity, state).load()
    context = page_context(view, entity, state, results)
    if htmx() and request.headers.get("HX-Target") == "list-results":
        return render_template("ui/_list_results.html", **context)
    return render_template("ui/list.html", **context)


@bp.get("/views/<view_name>/count")
def count(view_name: str):
    view, entity = resolve_view(view_name)
    try:
        state = state_for(view, entity)
        tree = F.effective_filter(state, entity, C.catalog().entity_of)
        searchable = bool(search_fields(entity))
        counted = C.records(entity).count(tree, search=state.q if state.q and searchable else None)
    except FilterError:
        return ""
    from babel.numbers import format_decimal

    number = format_decimal(
        counted.value if counted.exact else counted.value - 1, locale=C.locale()
    )
    if counted.exact:
        return C._("%(count)s records", count=number)
    return C._("more than %(count)s records", count=number)


@bp.get("/views/<view_name>/filter-row")
def filter_row(view_name: str):
    view, entity = resolve_view(view_name)
    path = request.args.get("path") or request.args.get("fb.field", "")
    row = F.BuilderRow(path, request.args.get("op", ""), request.args.get("value", ""))
    return render_template(
        "ui/_filter_row.html",
        view=view,
        row=builder_row(entity, row),
        builder_fields=builder_fields(entity),
    )


# ------------------------------------------------------------------------ saved views
@bp.post("/views/<view_name>/saved")
def save_view(view_name: str):
    view, entity = resolve_view(view_name)
    state = F.read_state(view, entity, C.catalog().entity_of, request.form, locale=C.locale())
    name = request.form.get("name", "").strip()
    if not name:
        flash(C._("Name of the view"), "danger")
        return redirect(url_for("ui_lists.view", view_name=view.name, **state.params()))
    saved_id = C.store().save_view(C.principal().user_id, view.name, name, state.saved_state())
    flash(C._("View saved."), "success")
    target = url_for("ui_lists.view", view_name=view.name, saved=saved_id)
    if htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


@bp.post("/saved/<recid:saved_id>/delete")
def delete_saved(saved_id: int):
    view_name = request.form.get("view", "")
    C.store().delete_saved_view(C.principal().user_id, saved_id)
    flash(C._("Saved view removed."), "success")
    target = (
        url_for("ui_lists.view", view_name=view_name) if view_name else url_for("ui_shell.home")
    )
    return redirect(target, code=303)


# ------------------------------------------------------------------------ bulk
@bp.get("/views/<view_name>/bulk-value")
def bulk_value(view_name: str):
    view, entity = resolve_view(view_name)
    name = request.args.get("field", "")
    if name not in entity.fields or name not in C.writable_names(entity):
        return ""
    field = W.field_view(entity, FormField(name), {}, writable=C.writable_names(entity))
    return render_template("ui/_bulk_value.html", field=field)


def _ids() -> list[int]:
    ids = (parse_id(v) for v in request.form.getlist("ids"))
    return [i for i in ids if i is not None][: current_app.config.get("XRM_BULK_MAX", 1000)]


@bp.post("/views/<view_name>/bulk")
def bulk(view_name: str):
    view, entity = resolve_view(view_name)
    ids = _ids()
    action = request.form.get("action")
    back = url_for("ui_lists.view", view_name=view.name) + (
        "?" + request.form["state"] if request.form.get("state") else ""
    )
    if not ids:
        flash(C._("Select records first."), "warning")
        return _after_bulk(back)
    if action and action.startswith("start:"):
        return _bulk_start(entity, action.partition(":")[2], ids, back)
    service = C.records(entity)
    try:
        _all_readable(service, ids)
        if action == "delete":
            with C.store().transaction(C.principal().user_id):
                for ident in ids:
                    service.delete(ident)
            flash(C._("%(count)s records deleted.", count=len(ids)), "success")
        elif action == "update":
            name = request.form.get("field", "")
            writable = C.writable_names(entity)
            if name not in entity.fields or name not in writable:
                abort(400)
            posted = W.posted_mapping(request.form)
            posted["_fields"] = [name]
            values, errors = W.read_values(entity, posted, request.files, writable, [name])
            # a file for many records at once: only one the user uploaded (no record's own)
            errors.update(check_file_values(C.store(), entity, values, None, C.principal().user_id))
            if errors:
                raise ValidationFailed(errors)
            with C.store().transaction(C.principal().user_id):
                for ident in ids:
                    service.update(ident, values)
            flash(C._("%(count)s records updated.", count=len(ids)), "success")
        else:
            abort(400)
    except (ValidationFailed, Forbidden, NotFound, Conflict) as exc:
        flash(C._("Nothing was changed: %(detail)s", detail=_bulk_detail(entity, exc)), "danger")
    return _after_bulk(back)


def _all_readable(service, ids: list[int]) -> None:
    """NotFound for the first selected id the user may not read: a record that is not
    theirs is answered as one that does not exist (the write would say "you may not ...")."""
    page = service.query(filter=["id", "in", ids], fields=["id"], limit=len(ids))
    seen = {row["id"] for row in page.rows}
    for ident in ids:
        if ident not in seen:
            raise NotFound(service.entity.name, ident)


def _bulk_start(entity: Entity, process_name: str, ids: list[int], back: str):
    """One instance of a manual process per selected record.  Unlike update and delete this
    is not all or nothing: each start is checked on its own (roles, the right to update the
    record), and the message says how many started and why the others did not."""
    label = action_label(entity, process_name)
    started, refused, reasons = start_many(entity, process_name, ids)
    if started:
        flash(
            C._("%(process)s started for %(count)s records.", process=label, count=started),
            "success",
        )
    if refused:
        flash(
            C._(
                "%(process)s was refused for %(count)s records: %(detail)s",
                process=label,
                count=refused,
                detail="; ".join(reasons),
            ),
            "danger" if not started else "warning",
        )
    return _after_bulk(back)


def _bulk_detail(entity: Entity, exc: RecordError) -> str:
    if isinstance(exc, ValidationFailed):
        parts = []
        for name, messages in exc.errors.items():
            where = (
                C.label(entity.fields[name])
                if name in entity.fields
                else ("" if name == ALL_KEY else name)
            )
            texts = "; ".join(C.error(m) for m in messages)
            parts.append(f"{where}: {texts}" if where else texts)
        return "; ".join(parts)
    return str(exc)


def _after_bulk(back: str):
    if htmx():
        return "", 204, {"HX-Redirect": back}
    return redirect(back, code=303)


# ------------------------------------------------------------------------ export
@bp.get("/views/<view_name>/export.<fmt>")
def export(view_name: str, fmt: str):
    from . import exports

    if fmt not in ("csv", "xlsx"):
        abort(404)
    view, entity = resolve_view(view_name)
    try:
        state = state_for(view, entity)
        state.after = None
        g.ui_export = True
        return exports.respond(view, entity, state, columns_of(view, entity, state), fmt)
    except FilterError as exc:  # as the list answers it: the message, and the plain view
        return invalid_state(view, exc)
