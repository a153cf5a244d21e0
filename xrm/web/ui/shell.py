"""The shell: home page, navigation from the installed packs, language and time zone,
type-ahead search for lookups (JSON for tom-select) and file downloads."""

from __future__ import annotations

from zoneinfo import available_timezones

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from ...metadata.filters import FilterError
from ...storage import tables as T
from ...storage.files import get_file, may_read_file
from ...storage.query import search_fields
from ...storage.records import RecordError
from . import context as C
from .guards import guard
from .i18n import LANGUAGES, translate
from .layouts import main_view

bp = guard(Blueprint("ui_shell", __name__))

LOOKUP_LIMIT = 20


def _nav_entry(catalog, entity) -> dict:
    views = [
        {
            "name": v.name,
            "label": C.label(v),
            "kind": v.kind,
            "url": url_for("ui_lists.view", view_name=v.name),
        }
        for v in catalog.views_of(entity.name)
    ]
    return {
        "name": entity.name,
        "label": C.plural(entity),
        "icon": entity.icon or "circle",
        "url": url_for("ui_lists.view", view_name=main_view(catalog, entity).name),
        "views": views,
    }


def navigation() -> list[dict]:
    """Modules (installed packs, in install order) -> entities the user may read -> views.
    Entities an administrator added (the customization layer) come last.  Helper entities
    (``navigation: false``: lines, members) are left out; their records are reached from
    their parent's related lists, by address and from the admin area.  The same for
    everyone with the same roles and language, so it is kept per catalog version."""
    catalog = C.catalog()
    principal = C.principal()
    key = (C.locale(), principal.roles, principal.is_admin, request.script_root)
    # A plain dict kept on the catalog: building the menu uses other cached artifacts, so
    # it must not run under the catalog's artifact lock (two threads may both build it).
    cache = catalog.artifact("ui-nav", dict)
    if key not in cache:
        cache[key] = _navigation(catalog)
    return cache[key]


def _navigation(catalog) -> list[dict]:
    from .dashboards import by_module
    from .wizards import by_module as wizards_by_module

    dashboards = by_module(catalog)  # a module's dashboards head its part of the menu
    wizards = wizards_by_module(catalog)  # then the wizards it offers in its menu
    modules = []
    placed: set[str] = set()
    for solution in catalog.solutions.values():
        entities = []
        for entity in catalog.entities.values():
            if entity.solution != solution.name or entity.name in placed:
                continue
            placed.add(entity.name)
            if entity.navigation and C.can(entity.name, "read"):
                entities.append(_nav_entry(catalog, entity))
        if entities or solution.name in dashboards or solution.name in wizards:
            modules.append(
                {
                    "name": solution.name,
                    "label": C.label(solution),
                    "entities": entities,
                    "dashboards": dashboards.get(solution.name, []),
                    "wizards": wizards.get(solution.name, []),
                }
            )
    custom = [
        _nav_entry(catalog, e)
        for e in catalog.entities.values()
        if e.name not in placed and e.navigation and C.can(e.name, "read")
    ]
    if custom:
        modules.append({"name": "customization", "label": C._("Customization"), "entities": custom})
    return modules


@bp.get("/")
def home():
    """The user's home dashboard (chosen, else the first their roles see), else a
    friendly empty page; the menu is in the navigation, not repeated here."""
    from .dashboards import home_dashboard, render

    dashboard = home_dashboard()
    if dashboard is None:
        return render_template("ui/home.html", dashboard=None)
    return render(dashboard, "ui/home.html")


@bp.post("/preferences")
def preferences():
    language = request.form.get("locale")
    zone = request.form.get("time_zone")
    if language is not None and language not in LANGUAGES:
        abort(400)
    if zone and zone not in available_timezones():
        abort(400)
    C.store().set_preferences(
        C.principal().user_id, locale=language or None, time_zone=zone or None
    )
    target = C.safe_next(request.form.get("next")) or url_for("ui_shell.home")
    flash(translate("Preferences saved.", language or C.locale()), "success")
    return redirect(target, code=303)


@bp.get("/me")
def me():
    zones = sorted(available_timezones())
    return render_template("ui/preferences.html", zones=zones)


# ----------------------------------------------------------------------------- lookups
def _lookup_rows(entity, text: str, limit: int) -> list[dict]:
    path = C.title_path(entity)
    service = C.records(entity)
    filter_ = None
    search = None
    if text:
        if search_fields(entity):
            search = text
        elif path:
            filter_ = (
                [path, "contains", text]
                if C.field_at(entity, path).kind.json_type == "string"
                else None
            )
    sort = [[path, "asc"]] if path else [["id", "desc"]]
    try:
        page = service.query(
            filter=filter_, sort=sort, fields=[path] if path else ["id"], limit=limit, search=search
        )
    except (FilterError, RecordError):
        return []
    title_field = C.field_at(entity, path) if path else None
    out = []
    for row in page.rows:
        value = row.get(path) if path else None
        text_value = (
            C.text(title_field, value) if title_field is not None and value is not None else ""
        )
        out.append({"value": str(row["id"]), "text": text_value or f"#{row['id']}"})
    return out


@bp.get("/ui/lookup/<entity_name>")
def lookup(entity_name: str):
    entity = C.catalog().entity_of(entity_name)
    if entity is None or not C.can(entity_name, "read"):
        abort(404)
    text = request.args.get("q", "").strip()[:100]
    return jsonify(_lookup_rows(entity, text, LOOKUP_LIMIT))


def assigns_to_anyone() -> bool:
    """Whether the user may make records that belong to any user: an administrator, or a
    role with create scope ``all`` on some entity (the owner of a new record is theirs to
    choose; scopes own and team only let them pick themselves or their team)."""
    catalog, access = C.catalog(), C.access()
    return access.is_admin or any(
        access.scope_of(name, "create") == "all" for name in catalog.entities
    )


@bp.get("/ui/lookup-users")
def lookup_users():
    """Active users for a user field or a delegation, as far as the caller may see them:
    administrators see everyone by name and email; others see their team mates (and
    themselves) by name and email, and, when they may assign records to anyone
    (``assigns_to_anyone``), every other active user by name only, found by name only,
    so that an email address cannot be confirmed by searching for it."""
    text = request.args.get("q", "").strip().lower()[:100]
    principal, users, members = C.principal(), T.users, T.team_members
    mates = sa.select(members.c.user_id).where(
        members.c.team_id.in_(list(principal.team_ids) or [-1])
    )
    close = sa.or_(users.c.id == principal.user_id, users.c.id.in_(mates))
    if C.access().is_admin:
        close = sa.true()
    # the typed text is matched as it is: % and _ are not wildcards here
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    by_name = sa.func.lower(users.c.name).like(pattern, escape="\\")
    by_email = sa.func.lower(users.c.email).like(pattern, escape="\\")
    shown = sa.and_(close, sa.or_(by_name, by_email)) if text else close
    if assigns_to_anyone():
        shown = sa.or_(shown, by_name) if text else sa.true()
    query = (
        sa.select(users.c.id, users.c.name, users.c.email, close.label("close"))
        .where(users.c.active.is_(True), shown)
        .order_by(users.c.name, users.c.id)
        .limit(LOOKUP_LIMIT)
    )
    with C.store().engine.connect() as conn:
        rows = conn.execute(query).all()
    return jsonify(
        [{"value": str(r.id), "text": f"{r.name} <{r.email}>" if r.close else r.name} for r in rows]
    )


@bp.get("/ui/lookup-any")
def lookup_any():
    """Records of several entities at once, for polymorphic lookups (``regarding``)."""
    text = request.args.get("q", "").strip()[:100]
    allowed = [n for n in request.args.get("to", "").split(",") if n]
    catalog = C.catalog()
    names = allowed or [e.name for e in catalog.entities.values() if search_fields(e)]
    out = []
    for name in names:
        entity = catalog.entity_of(name)
        if entity is None or not C.can(name, "read"):
            continue
        for row in _lookup_rows(entity, text, 5):
            out.append(
                {"value": f"{name}:{row['value']}", "text": f"{row['text']} ({C.label(entity)})"}
            )
    return jsonify(out[:LOOKUP_LIMIT])


# ----------------------------------------------------------------------------- files
@bp.get("/files/<key>")
def download(key: str):
    # A key alone is not enough: the user uploaded the file, or may read a record holding
    # it in a field not hidden from them.  Otherwise the same 404 as for an unknown key.
    if not may_read_file(C.store(), C.catalog(), C.access(), key):
        abort(404)
    stored = get_file(C.store(), key)
    if stored is None:
        abort(404)
    response = Response(stored.data, mimetype="application/octet-stream")
    response.headers.set("Content-Disposition", "attachment", filename=stored.name)
    response.headers["Cache-Control"] = "no-store"  # a user's file: no cache keeps it
    return response
