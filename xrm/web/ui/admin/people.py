"""Users (add, roles, teams, account, language, deactivate, password), teams, and roles (scopes
per entity and action, hidden and read-only fields; changed through the plan page like any
customization).  A password set here must pass the password policy; a new password ends
the user's sessions (the administrator's own one is re-issued)."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask import abort, flash, redirect, render_template, request, url_for

from ....metadata.model import ACCOUNT_ENTITY, ACTIONS
from ....storage.records import NotFound
from ....storage.users import PasswordRejected, UserError
from ...auth import reissue_session
from .. import context as C
from ..i18n import LANGUAGES
from . import bp
from .plans import review
from .schema import _label

SCOPES = ("none", "own", "account", "team", "all")
FIELD_RULES = ("read_only", "hidden")


# ------------------------------------------------------------------------ users
def _user_rows():
    store = C.store()
    roles = store.user_roles()
    teams = store.teams()
    membership: dict[int, list[str]] = {}
    for team, members in teams.items():
        for user_id in members:
            membership.setdefault(user_id, []).append(team)
    return [(u, roles.get(u.id, []), membership.get(u.id, [])) for u in store.users()], teams


@bp.get("/users")
def users():
    rows, teams = _user_rows()
    return render_template(
        "admin/users.html",
        rows=rows,
        teams=teams,
        roles=C.catalog().roles,
        languages=LANGUAGES,
        zones=sorted(available_timezones()),
    )


@bp.post("/users")
def add_user():
    form = request.form
    roles = [r for r in form.getlist("roles") if r in C.catalog().roles]
    try:
        C.store().add_user(
            form.get("email", ""),
            form.get("name") or None,
            password=form.get("password") or None,
            roles=roles,
            teams=[t for t in form.getlist("teams") if t],
            locale=form.get("locale") if form.get("locale") in LANGUAGES else "en",
            time_zone=form.get("time_zone")
            if form.get("time_zone") in available_timezones()
            else "UTC",
        )
    except PasswordRejected as exc:
        flash_password_problems(exc)
        return redirect(url_for("ui_admin.users"), code=303)
    except UserError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("ui_admin.users"), code=303)
    flash(C._("User added."), "success")
    return redirect(url_for("ui_admin.users"), code=303)


def _account_choice(account_id: int | None) -> dict | None:
    """The account picker of a user's page (None: no account entity is installed): the
    lookup's URL and the account the user belongs to, by its title."""
    entity = C.catalog().entity_of(ACCOUNT_ENTITY)
    if entity is None:
        return None
    title = ""
    if account_id is not None:
        try:
            record = C.records(entity).get(account_id, fields=[entity.title or "id"])
            title = str(record.get(entity.title) or "") if entity.title else ""
        except NotFound:
            account_id = None
    return {
        "url": url_for("ui_shell.lookup", entity_name=ACCOUNT_ENTITY),
        "id": account_id,
        "title": title or (f"#{account_id}" if account_id else ""),
    }


def flash_password_problems(exc: PasswordRejected) -> None:
    """One message per rule the password broke, in the user's language."""
    for problem in exc.problems:
        flash(C.error(problem), "danger")


@bp.get("/users/<recid:user_id>")
def user(user_id: int):
    store = C.store()
    row = store.user(user_id)
    if row is None:
        abort(404)
    teams = store.teams()
    return render_template(
        "admin/user.html",
        row=row,
        account=_account_choice(row.account_id),
        user_roles=store.user_roles().get(user_id, []),
        user_teams=[t for t, members in teams.items() if user_id in members],
        teams=sorted(teams),
        roles=C.catalog().roles,
        languages=LANGUAGES,
        zones=sorted(available_timezones()),
    )


@bp.post("/users/<recid:user_id>")
def change_user(user_id: int):
    store = C.store()
    row = store.user(user_id)
    if row is None:
        abort(404)
    form = request.form
    password = form.get("password") or ""
    if password:
        # Checked before anything changes: a refused password leaves the user as it was.
        try:
            store.check_new_password(password, row.email)
        except PasswordRejected as exc:
            flash_password_problems(exc)
            return redirect(url_for("ui_admin.user", user_id=user_id), code=303)
    account = None
    if form.get("account", "").strip():
        try:  # checked before anything changes, like the password
            account = store.find_account(form["account"])
        except UserError as exc:
            flash(C.error(str(exc)), "danger")
            return redirect(url_for("ui_admin.user", user_id=user_id), code=303)
    if "account" in form and account != row.account_id:
        store.set_account(user_id, account)
    roles = [r for r in form.getlist("roles") if r in C.catalog().roles]
    store.set_roles(user_id, roles)
    wanted = {t for t in form.getlist("teams") if t}
    if form.get("new_team", "").strip():
        wanted.add(form["new_team"].strip()[:100])
    current = {t for t, members in store.teams().items() if user_id in members}
    for team in wanted - current:
        store.add_to_team(user_id, team)
    for team in current - wanted:
        store.remove_from_team(user_id, team)
    locale = form.get("locale") if form.get("locale") in LANGUAGES else None
    zone = form.get("time_zone") if form.get("time_zone") in available_timezones() else None
    store.set_preferences(
        user_id, locale=locale, time_zone=zone, name=form.get("name", "").strip()[:200] or None
    )
    if user_id != C.principal().user_id:  # an administrator cannot lock themselves out
        store.set_active(user_id, bool(form.get("active")))
    if password:
        store.set_password(user_id, password)  # ends the user's sessions
        if user_id == C.principal().user_id:
            reissue_session(user_id)
    flash(C._("User updated."), "success")
    return redirect(url_for("ui_admin.user", user_id=user_id), code=303)


# ------------------------------------------------------------------------ roles
@bp.get("/roles")
def roles():
    return render_template("admin/roles.html", roles=C.catalog().roles.values(), actions=ACTIONS)


@bp.get("/roles/<name>")
def role(name: str):
    role = C.catalog().roles.get(name)
    if role is None:
        abort(404)
    catalog = C.catalog()
    entities = ["*", *sorted(catalog.entities)]
    # Field rules per entity, the entities with rules first and open.
    field_entities = sorted(
        (
            {
                "name": entity.name,
                "label": C.label(entity),
                "rules": dict(role.fields.get(entity.name, {})),
                "fields": [(f.name, C.label(f)) for f in entity.fields.values()],
            }
            for entity in catalog.entities.values()
        ),
        key=lambda e: (not e["rules"], e["label"].lower()),
    )
    return render_template(
        "admin/role.html",
        role=role,
        entities=entities,
        actions=ACTIONS,
        scopes=SCOPES,
        field_rules=FIELD_RULES,
        field_entities=field_entities,
        labels=role.label.as_dict(),
    )


@bp.post("/roles/<name>")
def change_role(name: str):
    role = C.catalog().roles.get(name)
    if role is None:
        abort(404)
    form = request.form
    permissions: dict[str, dict[str, str]] = {}
    for entity in ["*", *C.catalog().entities]:
        rules = {}
        for action in ACTIONS:
            scope = form.get(f"p.{entity}.{action}", "")
            if scope in SCOPES:
                rules[action] = scope
        if rules and (
            entity == "*" or any(v != "none" for v in rules.values()) or entity in role.permissions
        ):
            # What makes a record the user's own or their account's is not on this page:
            # the role keeps it.
            if entity in role.own_fields:
                rules["own"] = list(role.own_fields[entity])
            if entity in role.account_paths:
                rules["account"] = list(role.account_paths[entity])
            permissions[entity] = rules
    document: dict = {
        "label": _label(form.get("label_en", ""), form.get("label_ru", ""), name),
        "permissions": permissions,
    }
    if form.get("admin"):
        document["admin"] = True
    fields: dict[str, dict[str, str]] = {}
    for entity in C.catalog().entities.values():
        for field_name in entity.fields:
            rule = form.get(f"f.{entity.name}.{field_name}", "")
            if rule in FIELD_RULES:
                fields.setdefault(entity.name, {})[field_name] = rule
    if fields:
        document["fields"] = fields
    summary = [C._("Change role %(name)s", name=name)]
    return review(
        [("roles", {"roles": {name: document}})], summary, url_for("ui_admin.role", name=name)
    )
