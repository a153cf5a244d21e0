"""Duplicates in the browser: the possible-duplicates panel of a new record's form, the
duplicates view of an entity (groups of likely duplicates by rule, among the records the
user may read), the merge page (two records side by side, a radio button per field, the
record to keep and what will move to it) and a merge's page in the record's history, from
which it is undone.  The work is done by ``storage.duplicates`` and ``storage.merge``."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from ...metadata import Entity
from ...storage import merge as M
from ...storage.duplicates import groups as duplicate_groups
from ...storage.duplicates import usable_rules
from ...storage.records import Forbidden, NotFound, ValidationFailed
from ..routing import parse_id
from . import context as C
from .forms import entity_or_404, error_lines
from .guards import guard

bp = guard(Blueprint("ui_duplicates", __name__))

LIMIT = 5  # candidates shown on a form
GROUPS_PER_PAGE = 20
MERGE_IDS = 10  # records of one group offered on the merge page


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


# --------------------------------------------------------------------- duplicates view
@bp.get("/r/<entity_name>/duplicates")
def view(entity_name: str):
    """Groups of likely duplicates by one rule (``?rule=``), a page at a time (``after``)."""
    entity = entity_or_404(entity_name)
    if not C.can(entity.name, "read"):
        raise Forbidden(f"you may not read {entity.name} records")
    records = C.records(entity)
    rules = usable_rules(records)
    wanted = request.args.get("rule") or (rules[0].name if rules else "")
    rule = next((r for r in rules if r.name == wanted), None)
    if rules and rule is None:
        abort(404)
    page = None
    if rule is not None:
        page = duplicate_groups(
            records, rule.name, after=request.args.get("after") or None, limit=GROUPS_PER_PAGE
        )
        titles = C.titles()
        for group in page.groups:
            for member in group.members:
                for name, value in member.values.items():
                    titles.want_value(entity.fields[name], value)
        titles.resolve()
    return render_template(
        "ui/duplicates.html",
        entity=entity,
        rules=rules,
        rule=rule,
        page=page,
        can_merge=C.can(entity.name, "update") and C.can(entity.name, "delete"),
        list_url=_list_url(entity),
    )


def _list_url(entity: Entity) -> str:
    from .layouts import main_view

    return url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name)


# ------------------------------------------------------------------------- merge page
def _ids() -> list[int]:
    ids: list[int] = []
    for part in request.values.get("ids", "").split(","):
        ident = parse_id(part.strip())
        if ident is not None and ident not in ids:
            ids.append(ident)
    return ids[:MERGE_IDS]


def _choosable(entity: Entity) -> list:
    """The fields whose value the user picks: those they may write that hold a value."""
    writable = C.writable_names(entity)
    return [
        f
        for name, f in entity.fields.items()
        if name in writable and f.stored and f.type != "many_to_many"
    ]


def _empty(value) -> bool:
    return value is None or value == "" or value == []


def _merge_page(
    entity: Entity, a: int, b: int, ids: list[int], picks=None, master=None, error=None
):
    records = C.records(entity)
    record_a, record_b = records.get(a), records.get(b)
    titles = C.titles()
    fields = _choosable(entity)
    for f in fields:
        titles.want_value(f, record_a.get(f.name))
        titles.want_value(f, record_b.get(f.name))
    titles.resolve()
    rows = []
    for f in fields:
        va, vb = record_a.get(f.name), record_b.get(f.name)
        if _empty(va) and _empty(vb):
            continue
        default = "b" if _empty(va) and not _empty(vb) else "a"
        rows.append(
            {
                "name": f.name,
                "label": C.label(f),
                "a": C.display(f, va),
                "b": C.display(f, vb),
                "same": va == vb,
                "pick": (picks or {}).get(f.name, default),
            }
        )
    related = {}
    for key, ident in (("a", a), ("b", b)):
        counts: dict[str, int] = {}
        for ref, count in M.related_counts(C.store(), entity.name, ident, principal=_principal()):
            counts[ref.entity] = counts.get(ref.entity, 0) + count
        related[key] = [
            {"label": C.plural(C.catalog().entity(name)), "count": count}
            for name, count in sorted(counts.items())
        ]
    choices = []
    if len(ids) > 2:
        titles_of = {ident: C.record_title(entity, records.get(ident)) for ident in ids}
        choices = [{"id": ident, "title": titles_of[ident]} for ident in ids]
    return render_template(
        "ui/merge.html",
        entity=entity,
        a=record_a,
        b=record_b,
        title_a=C.record_title(entity, record_a),
        title_b=C.record_title(entity, record_b),
        rows=rows,
        related=related,
        master=master or "a",
        ids=ids,
        choices=choices,
        error=error,
        list_url=_list_url(entity),
    ), (422 if error else 200)


@bp.get("/r/<entity_name>/merge")
def compare(entity_name: str):
    """Two records side by side (``ids``: a group's records; ``a`` and ``b``: the pair)."""
    entity = entity_or_404(entity_name)
    ids = _ids()
    a = parse_id(request.args.get("a")) or (ids[0] if ids else None)
    b = parse_id(request.args.get("b")) or next((i for i in ids if i != a), None)
    if a is None or b is None or a == b:
        abort(404)
    for ident in (a, b):
        if ident not in ids:
            ids.append(ident)
    return _merge_page(entity, a, b, ids)


@bp.post("/r/<entity_name>/merge")
def merge(entity_name: str):
    entity = entity_or_404(entity_name)
    a, b = parse_id(request.form.get("a")), parse_id(request.form.get("b"))
    if a is None or b is None or a == b:
        abort(404)
    ids = _ids() or [a, b]
    master_key = request.form.get("master")
    if master_key not in ("a", "b"):
        abort(400)
    master, other = (a, b) if master_key == "a" else (b, a)
    other_key = "b" if master_key == "a" else "a"
    records = C.records(entity)
    records.get(a, fields=["id"])
    records.get(b, fields=["id"])
    picks = {}
    take = []
    for f in _choosable(entity):
        pick = request.form.get(f"pick.{f.name}")
        if pick in ("a", "b"):
            picks[f.name] = pick
            if pick == other_key:
                take.append(f.name)
    try:
        result = M.merge(C.store(), entity.name, master, other, take=take, principal=_principal())
    except ValidationFailed as exc:
        message = "; ".join(error_lines(entity, exc.errors))
        return _merge_page(entity, a, b, ids, picks, master_key, message)
    except (M.MergeRefused, Forbidden) as exc:
        return _merge_page(entity, a, b, ids, picks, master_key, C.error(str(exc)))
    moved = sum(result.moved.values())
    flash(C._("Merged. %(count)s related records moved to this one.", count=moved), "success")
    return redirect(C.record_url(entity.name, master), code=303)


def _principal():
    return g.principal


# ------------------------------------------------------------------- a merge, and undo
@bp.get("/r/<entity_name>/merges/<recid:merge_id>")
def details(entity_name: str, merge_id: int):
    """A merge as the history shows it: the removed record's values and history, what
    the kept record took from it, what moved, and Undo."""
    entity = entity_or_404(entity_name)
    found = M.load(C.store(), entity.name, merge_id, principal=_principal())
    if found is None:
        raise NotFound(f"{entity.name} merge", merge_id)
    titles = C.titles()
    values = found["values"]
    for name, value in values.items():
        titles.want_value(entity.fields[name], value)
    for name, (before, after) in found["changes"].items():
        titles.want_value(entity.fields[name], before)
        titles.want_value(entity.fields[name], after)
    for entry in found["history"]:
        titles.want("user", entry["user_id"])
    titles.want("user", found["user_id"])
    titles.resolve()
    shown = [
        {"label": C.label(entity.fields[n]), "value": C.display(entity.fields[n], v)}
        for n, v in values.items()
        if not _empty(v) and entity.fields[n].type != "many_to_many"
    ]
    changes = [
        {
            "label": C.label(entity.fields[n]),
            "old": C.text(entity.fields[n], before),
            "new": C.text(entity.fields[n], after),
        }
        for n, (before, after) in found["changes"].items()
    ]
    moved = [
        {"label": C.plural(C.catalog().entity(name)), "count": count}
        for name, count in sorted(found["counts"].items())
        if C.catalog().entity_of(name) is not None
    ]
    from .timeline import when

    history = []
    for entry in found["history"]:
        exact, ago = when(entry["at"])
        history.append(
            {
                "exact": exact,
                "ago": ago,
                "who": titles.title("user", entry["user_id"])
                if entry["user_id"]
                else C._("System"),
                "action": entry["action"],
                "field": C.label(entity.fields[entry["field"]])
                if entry["field"] in entity.fields
                else entry["field"],
            }
        )
    master_exists = _exists(entity, found["master_id"])
    merged_exists = _exists(entity, found["merged_id"])
    exact, ago = when(found["at"])
    return render_template(
        "ui/merge_details.html",
        entity=entity,
        merge=found,
        title=C.record_title(entity, {**values, "id": found["merged_id"]}),
        shown=shown,
        changes=changes,
        moved=moved,
        history=history,
        who=titles.title("user", found["user_id"]) if found["user_id"] else C._("System"),
        exact=exact,
        ago=ago,
        master_exists=master_exists,
        merged_exists=merged_exists,
        can_undo=found["undone_at"] is None
        and master_exists
        and C.can(entity.name, "create")
        and C.can(entity.name, "update"),
    )


def _exists(entity: Entity, ident: int) -> bool:
    try:
        C.records(entity).get(ident, fields=["id"])
        return True
    except NotFound:
        return False


@bp.post("/r/<entity_name>/merges/<recid:merge_id>/undo")
def undo(entity_name: str, merge_id: int):
    entity = entity_or_404(entity_name)
    if M.load(C.store(), entity.name, merge_id, principal=_principal()) is None:
        raise NotFound(f"{entity.name} merge", merge_id)
    try:
        result = M.undo(C.store(), entity.name, merge_id, principal=_principal())
    except ValidationFailed as exc:
        flash("; ".join(error_lines(entity, exc.errors)), "danger")
        return redirect(url_for(".details", entity_name=entity.name, merge_id=merge_id), code=303)
    except (M.MergeRefused, Forbidden) as exc:
        flash(C.error(str(exc)), "danger")
        return redirect(url_for(".details", entity_name=entity.name, merge_id=merge_id), code=303)
    message = C._("The merge was undone: the record is back.")
    if result.kept:
        kept = ", ".join(C.label(entity.fields[n]) for n in result.kept if n in entity.fields)
        message += " " + C._(
            "Changed since the merge, so kept as they are: %(fields)s.", fields=kept
        )
    flash(message, "success")
    return redirect(C.record_url(entity.name, result.restored_id), code=303)


def merge_summaries(entity: Entity, merge_ids: list[int]) -> dict[int, dict]:
    """For the timeline's merge entries: each merge's page, the removed record's title
    (from the merge's copy of it: the record itself may be gone) and the kept one's."""
    found = M.summaries(C.store(), entity.name, merge_ids)
    titles = C.titles()
    readable = C.readable_names(entity)
    out = {}
    for merge_id, row in found.items():
        # the removed record is named only to a reader who could read it
        shown = M.snapshot_readable(C.records(entity), row["record"])
        values = {n: v for n, v in row["values"].items() if shown and n in readable}
        out[merge_id] = {
            "url": url_for("ui_duplicates.details", entity_name=entity.name, merge_id=merge_id),
            "title": C.record_title(entity, {**values, "id": row["merged_id"]}),
            "master_title": titles.title(entity.name, row["master_id"]),
            "undone": row["undone_at"] is not None,
        }
    return out
