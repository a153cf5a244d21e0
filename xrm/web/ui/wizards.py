"""Wizards in the browser: ``/wizards/<name>`` (``?from=<entity>:<id>`` when opened from a
record) shows one step at a time with a step indicator, Next/Back/Finish, field errors in
place, a review step with links back to each step, and lands on the page the wizard names
once its actions ran.  Offered from the menu, list pages and record pages where the
wizard's ``open_from`` says, to the roles it names (administrators always); on a record's
page only when the wizard's condition holds for that record (a lead not yet converted).

The run's state (``xrm.forms.wizard.WizardRun.to_dict``) travels in the form, signed with
the application's secret and bound to the user, so any worker serves the next step and
nothing is kept on the server between steps; the form is CSRF-protected like every other.
A signed state cannot be altered, only replayed: a finished run's id is kept in the
session, so posting a finished run again (a double click, the browser's back button) is
refused instead of creating the records twice.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from itsdangerous import BadSignature, URLSafeSerializer

from ...forms import FieldSpec
from ...forms.wizard import (
    CREATE_NEW,
    WizardFailed,
    WizardRefused,
    WizardRun,
    WizardUnavailable,
)
from ...metadata.wizards import Wizard
from ..routing import parse_id
from . import context as C
from . import widgets as W
from .guards import guard

bp = guard(Blueprint("ui_wizards", __name__))

SALT = "xrm-wizard-run"
FINISHED_KEY = "xrm_wizards_finished"
FINISHED_KEPT = 20  # finished runs remembered per session


def offered(place: str, entity: str | None = None, solution: str | None = None) -> list[dict]:
    """The wizards offered on a page (``menu`` of a solution, ``list`` or ``record`` of an
    entity) that the user may run."""
    who = C.principal()
    out = []
    for wizard in C.catalog().wizards.values():
        if not wizard.may_run(who.roles, who.is_admin):
            continue
        where = wizard.open_from
        if (
            (place == "menu" and where.menu == solution)
            or (place == "list" and entity in where.lists)
            or (place == "record" and entity in where.records)
        ):
            out.append({"name": wizard.name, "label": C.label(wizard)})
    return out


def by_module(catalog) -> dict[str, list[dict]]:
    """Solution name -> its menu's wizards (the navigation is cached per role set)."""
    out: dict[str, list[dict]] = {}
    for solution in catalog.solutions:
        for item in offered("menu", solution=solution):
            item["url"] = url_for("ui_wizards.page", name=item["name"])
            out.setdefault(solution, []).append(item)
    return out


@bp.app_context_processor
def _page_offers():
    def page_offers(entity=None, record=None, listing=False) -> list[dict]:
        if entity is None or not hasattr(entity, "name"):
            return []
        ident = record.get("id") if isinstance(record, dict) else None
        if ident is not None:
            found = [
                w for w in offered("record", entity.name) if _applies(w["name"], entity, ident)
            ]
            for item in found:
                item["url"] = url_for(
                    "ui_wizards.page", name=item["name"], **{"from": f"{entity.name}:{ident}"}
                )
            return found
        if not listing:
            return []
        found = offered("list", entity.name)
        for item in found:
            item["url"] = url_for("ui_wizards.page", name=item["name"])
        return found

    return {"wizard_offers": page_offers}


def _applies(name: str, entity, ident: int) -> bool:
    """Whether the wizard's ``open_from`` condition holds for the record on the page."""
    wizard = C.catalog().wizards[name]
    if wizard.open_from.condition is None:
        return True
    try:
        WizardRun(wizard, origin=(entity.name, ident)).check_origin(C.store())
    except (WizardRefused, LookupError):
        return False
    return True


# ------------------------------------------------------------------------ state
def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=SALT)


def _sign(run: WizardRun) -> str:
    return _serializer().dumps({"u": C.principal().user_id, "r": run.to_dict()})


def _wizard_or_404(name: str) -> Wizard:
    wizard = C.catalog().wizards.get(name)
    if wizard is None:
        abort(404)
    who = C.principal()
    if not wizard.may_run(who.roles, who.is_admin):
        abort(403)
    return wizard


def _origin(wizard: Wizard) -> tuple[str, int] | None:
    text = request.args.get("from") or ""
    if not text:
        if wizard.open_from.records and not wizard.open_from.lists and not wizard.open_from.menu:
            abort(400, C._("Open this wizard from a record."))
        return None
    entity, _, raw = text.partition(":")
    ident = parse_id(raw)
    if ident is None or entity not in wizard.open_from.records:
        abort(404)
    C.records(entity).get(ident, fields=["id"])  # NotFound (404) unless the user may read it
    return entity, ident


def _loaded(wizard: Wizard) -> WizardRun:
    try:
        data = _serializer().loads(request.form.get("state") or "")
    except BadSignature:
        abort(400, C._("The wizard's state is not valid. Start again."))
    if not isinstance(data, dict) or data.get("u") != C.principal().user_id:
        abort(400, C._("The wizard's state is not valid. Start again."))
    try:
        return WizardRun.from_dict(wizard, data.get("r"), locale=C.locale(), tz=C.tz())
    except WizardRefused:
        abort(400, C._("The wizard changed since you started. Start again."))


# ------------------------------------------------------------------------ pages
@bp.get("/wizards/<name>")
def page(name: str):
    wizard = _wizard_or_404(name)
    origin = _origin(wizard)
    try:
        run = WizardRun.start(
            wizard, C.store(), C.principal(), origin=origin, locale=C.locale(), tz=C.tz()
        )
    except WizardUnavailable as exc:
        flash(C.label(exc.label), "warning")
        return redirect(C.record_url(*origin))
    except WizardRefused:
        abort(404)
    return _render(run)


@bp.post("/wizards/<name>")
def step(name: str):
    wizard = _wizard_or_404(name)
    run = _loaded(wizard)
    if run.id in session.get(FINISHED_KEY, []):
        flash(C._("This wizard was already finished."), "warning")
        return redirect(url_for("ui_wizards.page", name=name))
    posted = W.posted_mapping(request.form)
    action = request.form.get("_action") or "next"
    if action == "back":
        run.back(posted)
        return _render(run)
    if action.startswith("goto:"):
        try:
            run.go_to(action.removeprefix("goto:"), posted)
        except WizardRefused:
            abort(400)
        return _render(run)
    finishing = action == "finish" and run.is_last  # Finish is only offered on the last step
    if run.step().inputs:
        errors = run.submit(posted, store=C.store(), principal=C.principal())
        if errors:
            return _render(run, errors=errors), 422
    if not finishing:
        return _render(run)
    try:
        outcome = run.finish(C.store(), C.principal())
    except WizardUnavailable as exc:
        return _render(run, general=[C.label(exc.label)]), 409
    except WizardRefused as exc:
        return _render(run, general=[C.error(str(exc))]), 403
    except WizardFailed as exc:
        general = [C.error(m) for m in exc.general]
        return _render(run, errors=exc.errors, general=general), 409 if exc.conflict else 422
    finished = [*session.get(FINISHED_KEY, []), run.id][-FINISHED_KEPT:]
    session[FINISHED_KEY] = finished
    flash(C._("%(wizard)s: done.", wizard=C.label(wizard)), "success")
    if outcome.landing is not None:
        return redirect(C.record_url(*outcome.landing))
    return redirect(url_for("ui_shell.home"))


def _render(run: WizardRun, errors=None, general=None):
    errors = errors or {}
    wizard = run.wizard
    shown = run.visible_steps()
    current = run.step()
    indicator = [
        {
            "name": s.name,
            "label": C.label(s),
            "state": "current"
            if s.name == current.name
            else ("done" if s.name in run.completed else "todo"),
            "open": s.name != current.name and run.may_go_to(s.name),
        }
        for s in shown
    ]
    inputs = [_input_view(run, item, errors) for item in current.inputs]
    review = _review(run, shown) if current.review else []
    origin = None
    if run.origin is not None:
        entity = C.catalog().entity(run.origin[0])
        origin = {
            "label": C.label(entity),
            "title": C.titles().title(entity.name, run.origin[1]),
            "url": C.record_url(*run.origin),
        }
    action_url = url_for("ui_wizards.page", name=wizard.name)
    return render_template(
        "ui/wizards/page.html",
        wizard=wizard,
        run=run,
        state=_sign(run),
        step=current,
        steps=indicator,
        number=[s.name for s in shown].index(current.name) + 1,
        inputs=inputs,
        review=review,
        general=general or [],
        has_errors=bool(errors or general),
        origin=origin,
        action_url=action_url,
        is_first=run.is_first,
        is_last=run.is_last,
    )


def _input_view(run: WizardRun, item, errors) -> W.FieldView:
    f = item.field
    widget = "pick" if item.pick else W.WIDGETS.get(f.type, "text")
    view = W.FieldView(
        name=item.name,
        field=f,
        label=C.label(item.label),
        widget=widget,
        help=item.help.get(C.locale()) if item.help else "",
        required=item.required,
    )
    view.errors = [C.error(m) for m in errors.get(item.name, ())]
    text = run.shown_text(item)
    value = run.value(item.name)
    if item.pick:
        rows = run.candidates(item, C.store(), C.principal())
        entity = C.catalog().entity(item.pick)
        chosen = text if text is not None else (str(value) if value is not None else "")
        view.options = [(str(r["id"]), C.record_title(entity, r)) for r in rows]
        rules = {rule.name: C.label(rule) for rule in entity.duplicates}
        view.extra["matched"] = {
            str(r["id"]): ", ".join(rules.get(n, n) for n in r["_matched"])
            for r in rows
            if r.get("_matched")
        }
        if value is not None and str(value) not in {v for v, _ in view.options}:
            view.options.insert(0, (str(value), C.titles().title(item.pick, value)))
        view.extra["or_create"] = item.or_create
        view.extra["url"] = url_for("ui_shell.lookup", entity_name=item.pick)
        view.extra["create_label"] = C._("Create a new %(entity)s", entity=C.label(entity))
        view.value = chosen or (CREATE_NEW if item.or_create else "")
        return view
    # the record form's widget filling: a wizard input shows like the field it is
    spec = FieldSpec(
        name=item.name,
        field=f,
        label=view.label,
        help=view.help,
        widget=widget,
        read_only=False,
        required=item.required,
        choices=tuple((o.value, C.label(o)) for o in f.choices),
    )
    W._fill(view, spec, value, {item.name: text} if text is not None else None)
    return view


def _review(run: WizardRun, shown) -> list[dict]:
    out = []
    for s in shown:
        if not s.inputs:
            continue
        rows = []
        for item in s.inputs:
            value = run.value(item.name)
            if item.pick and value is None:
                text = C._("Create a new %(entity)s", entity=C.label(C.catalog().entity(item.pick)))
            elif item.field.type == "boolean":
                text = C._("Yes") if value else C._("No")
            else:
                text = C.display(item.field, value, link=False)
            rows.append({"name": item.name, "label": C.label(item.label), "text": text})
        out.append(
            {"name": s.name, "label": C.label(s), "rows": rows, "open": run.may_go_to(s.name)}
        )
    return out
