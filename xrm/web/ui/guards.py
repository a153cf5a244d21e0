"""Sign-in and admin checks and friendly error pages, attached to each UI blueprint once
(when its module is imported), so several applications in one process share them."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as HTTPNotFound

from ...storage.records import Forbidden, NotFound
from ..routing import use_record_ids
from . import context as C

log = logging.getLogger(__name__)


def htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def require_user():
    """Every UI page is for a signed-in, active user; their principal is ``g.principal``."""
    if not current_user.is_authenticated:
        target = url_for("auth.login", next=request.full_path.rstrip("?"))
        if htmx():
            return "", 401, {"HX-Redirect": target}
        return redirect(target)
    principal = C.store().principal(current_user.id)
    if principal is None:
        logout_user()
        return redirect(url_for("auth.login"))
    g.principal = principal
    return None


def refuse_nul():
    """400 for a query string holding NUL characters, as the API answers: no browser sends
    one, and PostgreSQL refuses text holding them wherever a parameter meets the database
    (searches, quick filters, the admin's filters), which would be a 500."""
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            abort(400)
    return None


def require_admin():
    denied = require_user()
    if denied is not None:
        return denied
    if not g.principal.is_admin:
        return render_template(
            "ui/error.html", message=C._("You may not do this."), status=403
        ), 403
    return None


def _error_page(message: str, status: int):
    # A CSRF failure is raised before the request was set up: finish that first.
    if "catalog" not in g:
        g.catalog = C.store().refresh()
    if "principal" not in g:
        principal = C.store().principal(current_user.id) if current_user.is_authenticated else None
        if principal is None:
            return render_template("ui/error_plain.html", message=message, status=status), status
        g.principal = principal
    if htmx():
        return (
            render_template("ui/_toast.html", message=message, level="danger"),
            status,
            {"HX-Reswap": "none"},
        )
    return render_template("ui/error.html", message=message, status=status), status


def error_page(exc: HTTPException):
    """The page for an error no UI blueprint answered: an unknown path (404) or an
    unexpected exception (500, logged by ``problems``), in the app's layout for a
    signed-in user and on the sign-in layout otherwise.  Other errors keep werkzeug's."""
    messages = {
        404: lambda: C._("Page not found."),
        500: lambda: C._("Something went wrong on our side. It has been logged; please try again."),
    }
    if exc.code not in messages:
        return exc
    message = messages[exc.code]()
    try:
        return _error_page(message, exc.code)
    except Exception:
        # The layout reads the catalog and the user; when that is what failed (a database
        # gone), the plain page still answers.
        log.exception("the %s page in the app's layout failed", exc.code)
        return render_template("ui/error_plain.html", message=message, status=exc.code), exc.code


def guard(bp: Blueprint, *, admin: bool = False) -> Blueprint:
    """Sign-in (and admin) checks and friendly error pages for one UI blueprint, whose
    routes may take record ids as ``<recid:...>``; query strings holding NUL are refused."""
    use_record_ids(bp)
    bp.before_request(refuse_nul)
    bp.before_request(require_admin if admin else require_user)

    @bp.errorhandler(NotFound)
    def _missing(exc):
        return _error_page(C._("This record no longer exists."), 404)

    @bp.errorhandler(HTTPNotFound)
    def _no_page(exc):
        return _error_page(C._("Page not found."), 404)

    @bp.errorhandler(Forbidden)
    def _forbidden(exc):
        return _error_page(C._("You may not do this.") + f" ({exc})", 403)

    @bp.errorhandler(CSRFError)
    def _csrf(exc):
        return _error_page(
            C._("The form expired or was not sent from this site. Reload the page and try again."),
            400,
        )

    @bp.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        return _error_page(C._("The upload is too large."), 413)

    return bp
