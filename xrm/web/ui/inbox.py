"""The inbox: a user's notifications and the approvals waiting on them, the unread badge of
the top bar, and starting processes by hand (a record form's buttons, a list's selection).

Everything goes through the workflow engine's own functions (``notifications``,
``mark_read``, ``pending_approvals``, ``decide``, ``delegate``, ``start``), so the engine's
checks (whose approval it is, the manual trigger's roles, the right to update the record)
hold here exactly as for the API.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from ... import workflow
from ...metadata import Entity
from ...storage.records import Forbidden, RecordError
from ...workflow import tables as W
from ...workflow.blocked import stop_reason
from ...workflow.inbox import ApprovalError
from ...workflow.instances import StartRefused
from ..routing import parse_id
from . import context as C
from .guards import guard, htmx
from .timeline import when

bp = guard(Blueprint("ui_inbox", __name__))

PAGE_SIZE = 30
BADGE_CAP = 99  # the badge shows "99+" beyond this


# ------------------------------------------------------------------------ the badge
def counts() -> dict:
    """The signed-in user's unread notifications and pending approvals.  The top bar of every
    page shows them, so both come back from one statement of two indexed counts; the result
    is kept for the rest of the request."""
    cached = g.get("ui_inbox_counts")
    if cached is not None:
        return cached
    unread, approvals = workflow.inbox.counts(C.store(), C.principal().user_id)
    result = {
        "unread": unread,
        "approvals": approvals,
        "unread_text": _capped(unread),
        "approvals_text": _capped(approvals),
    }
    g.ui_inbox_counts = result
    return result


def _capped(number: int) -> str:
    return f"{BADGE_CAP}+" if number > BADGE_CAP else str(number)


def _forget_counts() -> None:
    """After a change to the inbox, the badge of the answer counts again."""
    g.pop("ui_inbox_counts", None)


@bp.get("/inbox/badge")
def badge():
    return render_template("ui/_inbox_badge.html"), 200, {"Cache-Control": "no-store"}


# ------------------------------------------------------------------------ the page
def _record_link(entity_name: str | None, record_id) -> dict | None:
    """Title and address of a record a notification or approval is about (rows about a
    record the user may not read come without one: ``about_readable``); no address when
    its title is not theirs to read (the title is then ``#id``)."""
    if not entity_name or record_id is None:
        return None
    entity = C.catalog().entity_of(entity_name)
    if entity is None:
        return None
    titles = C.titles()
    readable = C.can(entity_name, "read")
    title = titles.title(entity_name, record_id) if readable else f"#{record_id}"
    return {
        "entity": C.label(entity),
        "title": title,
        "url": C.record_url(entity_name, record_id)
        if readable and titles.readable(entity_name, record_id)
        else None,
    }


def _want_titles(rows: Iterable[dict]) -> None:
    """One query per entity for the titles of every record the page links to."""
    titles = C.titles()
    catalog = C.catalog()
    for row in rows:
        name = row.get("entity")
        if (
            name
            and row.get("record_id") is not None
            and catalog.entity_of(name) is not None
            and C.can(name, "read")
        ):
            titles.want(name, row["record_id"])
        if row.get("delegated_from") is not None:
            titles.want("user", row["delegated_from"])
    titles.resolve()


def _process_label(name: str) -> str:
    process = C.catalog().processes.get(name)
    return C.label(process) if process is not None else name


def page_context() -> dict:
    store = C.store()
    user_id = C.principal().user_id
    before = parse_id(request.args.get("before"))
    rows = workflow.notifications(store, user_id, limit=PAGE_SIZE + 1, before=before)
    older = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    pending = workflow.pending_approvals(store, user_id)
    # an entry about a record the user may no longer read neither names nor links it
    rows = workflow.inbox.about_readable(store, C.principal(), rows)
    pending = workflow.inbox.about_readable(store, C.principal(), pending)
    _want_titles([*rows, *pending])
    notifications = []
    for row in rows:
        exact, ago = when(row["created_at"])
        notifications.append(
            {
                "id": row["id"],
                "title": row["title"],
                "body": row["body"] or "",
                "unread": row["read_at"] is None,
                "exact": exact,
                "ago": ago,
                "record": _record_link(row["entity"], row["record_id"]),
            }
        )
    approvals = []
    titles = C.titles()
    for row in pending:
        exact, ago = when(row["created_at"])
        approvals.append(
            {
                "id": row["id"],
                "process": _process_label(row["process"]),
                "record": _record_link(row["entity"], row["record_id"]),
                "exact": exact,
                "ago": ago,
                "delegated_from": titles.title("user", row["delegated_from"])
                if row["delegated_from"] is not None
                else None,
            }
        )
    return {
        "notifications": notifications,
        "approvals": approvals,
        "older": older,
        "before": before,
        "counts": counts(),
    }


@bp.get("/inbox")
def index():
    return render_template("ui/inbox.html", **page_context())


def _answer():
    """After a post: htmx gets the page back at once (the list, the badge and the toasts are
    swapped from it); a plain form is redirected to the inbox."""
    _forget_counts()
    if htmx():
        return render_template("ui/inbox.html", **page_context())
    before = parse_id(request.form.get("before"))
    target = url_for("ui_inbox.index", before=before) if before else url_for("ui_inbox.index")
    return redirect(target, code=303)


# ------------------------------------------------------------------------ notifications
@bp.post("/inbox/<recid:notification_id>/read")
def mark_read(notification_id: int):
    # mark_read only touches the user's own rows: another user's id changes nothing
    workflow.mark_read(C.store(), C.principal().user_id, [notification_id])
    return _answer()


@bp.post("/inbox/read-all")
def mark_all_read():
    changed = workflow.mark_read(C.store(), C.principal().user_id)
    flash(C._("%(count)s notifications marked read.", count=changed), "success")
    return _answer()


# ------------------------------------------------------------------------ approvals
def _close_request(approval_id: int) -> None:
    """A request that has been answered is read: the notification that asked for it (same
    instance) leaves the unread count."""
    n, a = W.notifications, W.approvals
    user_id = C.principal().user_id
    instance = sa.select(a.c.instance_id).where(a.c.id == approval_id).scalar_subquery()
    with C.store().engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(n.c.id).where(
                    n.c.user_id == user_id, n.c.read_at.is_(None), n.c.instance_id == instance
                )
            )
            .scalars()
            .all()
        )
    if ids:
        workflow.mark_read(C.store(), user_id, ids)


def _comment() -> str | None:
    text = request.form.get("comment", "").strip()
    return text[:2000] or None


@bp.post("/inbox/approvals/<recid:approval_id>/decide")
def decide(approval_id: int):
    decision = request.form.get("decision", "")
    if decision not in ("approved", "rejected"):
        flash(C._("Choose Approve or Reject."), "danger")
        return _answer()
    try:
        workflow.decide(C.store(), approval_id, C.principal().user_id, decision, _comment())
    except ApprovalError as exc:
        flash(C._("The decision was not recorded: %(detail)s", detail=C.error(str(exc))), "danger")
        return _answer()
    _close_request(approval_id)
    flash(C._("Approved.") if decision == "approved" else C._("Rejected."), "success")
    return _answer()


@bp.post("/inbox/approvals/<recid:approval_id>/delegate")
def delegate(approval_id: int):
    to = parse_id(request.form.get("to"))
    target = C.store().principal(to) if to is not None else None
    if target is None:
        flash(C._("Choose an active user to delegate to."), "danger")
        return _answer()
    try:
        workflow.delegate(C.store(), approval_id, C.principal().user_id, target.user_id, _comment())
    except ApprovalError as exc:
        flash(C._("The approval was not delegated: %(detail)s", detail=C.error(str(exc))), "danger")
        return _answer()
    _close_request(approval_id)
    flash(C._("Delegated to %(name)s.", name=target.name or target.email), "success")
    return _answer()


# ------------------------------------------------------------------------ manual starts
def manual_actions(entity: Entity) -> list[dict]:
    """The enabled processes of an entity with a manual trigger the user may start: the
    trigger names none of the roles, or one of the user's; administrators start them all.
    Labelled by the trigger's label, else the process's."""
    who = C.principal()
    out = []
    for process in C.catalog().processes.values():
        if process.entity != entity.name or not process.enabled:
            continue
        manual = process.trigger("manual")
        if manual is None:
            continue
        if manual.roles and not who.is_admin and not set(manual.roles) & set(who.roles):
            continue
        text = C.label(manual.label) if manual.label else ""
        out.append({"name": process.name, "label": text or C.label(process)})
    return sorted(out, key=lambda item: item["label"].casefold())


def record_actions(entity: Entity, record) -> list[dict]:
    """``manual_actions`` for one record: none unless the user may update it (the engine
    refuses a start otherwise, so the button would only lead to an error)."""
    if not record.get("id") or not C.can(entity.name, "update"):
        return []
    actions = manual_actions(entity)
    if not actions:
        return []
    try:
        C.access().check(C.records(entity), "update", record)
    except Forbidden:
        return []
    return actions


def _start(entity: Entity, process_name: str, record_id: int) -> tuple[str, str | None]:
    """Start one instance as the user: ("started", None); ("refused", why not); or
    ("stopped", why): it started, but a step could not go on at once (nobody to approve,
    say), so it is parked and the administrators were told.  Reasons are translated."""
    process = C.catalog().processes.get(process_name)
    if process is None or process.entity != entity.name:
        return "refused", C._(
            "there is no such process for %(entity)s records", entity=C.label(entity)
        )
    try:
        ident = workflow.start(
            C.store(), process_name, record_id, user_id=C.principal().user_id, check=True
        )
    except (StartRefused, RecordError) as exc:
        return "refused", C.error(str(exc))
    reason = stop_reason(C.store(), ident, C.locale(), C.principal())
    return ("stopped", reason) if reason else ("started", None)


def action_label(entity: Entity, process_name: str) -> str:
    for action in manual_actions(entity):
        if action["name"] == process_name:
            return action["label"]
    return _process_label(process_name)


def start_many(entity: Entity, process_name: str, ids: list[int]) -> tuple[int, int, list[str]]:
    """One instance per record: how many started, how many were refused, and why (each
    reason once, in the order met)."""
    started = refused = 0
    reasons: list[str] = []
    for ident in ids:
        state, problem = _start(entity, process_name, ident)
        if state == "started":
            started += 1
            continue
        if state == "stopped":
            problem = C._("it could not go on: %(detail)s", detail=problem)
        refused += 1
        if problem not in reasons:
            reasons.append(problem)
    return started, refused, reasons


@bp.post("/r/<entity_name>/<recid:record_id>/start")
def start(entity_name: str, record_id: int):
    entity = C.catalog().entity_of(entity_name)
    if entity is None:
        abort(404)
    name = request.form.get("process", "")
    label = action_label(entity, name)
    state, problem = _start(entity, name, record_id)
    if state == "started":
        message, level = C._("Started: %(process)s.", process=label), "success"
    elif state == "stopped":
        message = C._(
            "%(process)s could not go on: %(detail)s. The administrators have been told.",
            process=label,
            detail=problem,
        )
        level = "danger"
    else:
        message = C._("%(process)s was not started: %(detail)s", process=label, detail=problem)
        level = "danger"
    if htmx():
        # the toast goes into the page's toast area; the record stays as it is
        return render_template("ui/_toast.html", message=message, level=level)
    flash(message, level)
    return redirect(url_for("ui_record.view", entity_name=entity.name, record_id=record_id), 303)
