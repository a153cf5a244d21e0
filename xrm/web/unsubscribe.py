"""The unsubscribe page of mass emails: ``/u/<token>`` for readers who are not signed in.

The token (``xrm/storage/unsubscribe.py``) names a record and its consent field; it is the
only credential, so the blueprint is exempt from the CSRF guard like the public forms.
``GET`` asks (a link checker or a mail scanner that fetches the address changes nothing);
``POST`` sets the field to false through the records service (as the platform: audit,
processes and all), and takes back the mass emails to that record still queued in the
outbox, in one transaction.  A second ``POST`` answers the same.  ``POST`` with
``List-Unsubscribe=One-Click`` (RFC 8058) is the same request, as mail clients send it.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, render_template, request

from ..storage import unsubscribe
from ..storage.records import NotFound
from ..workflow.mass_email import withdraw_queued
from . import current_store
from .ui.i18n import LANGUAGES, translate

bp = Blueprint("unsubscribe", __name__, url_prefix="/u")


def _(text: str, **values) -> str:
    return translate(text, g.ui_locale, **values)


@bp.before_request
def _reader_language():
    wanted = request.args.get("lang", "")[:2].lower()
    g.ui_locale = (
        wanted
        if wanted in LANGUAGES
        else request.accept_languages.best_match(list(LANGUAGES), default="en")
    )


def _page(status: int, message: str, *, ask: bool = False, token: str = ""):
    body = render_template(
        "public/unsubscribe.html",
        lang=g.ui_locale,
        title=_("Unsubscribe"),
        message=message,
        ask=ask,
        token=token,
        button=_("Unsubscribe"),
    )
    response = current_app.make_response((body, status))
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
    return response


def _target(token: str):
    """(what the token names, its record), or None for a token that names nothing we have
    (forged, or its record, entity or field gone)."""
    store = current_store()
    with store.engine.connect() as conn:
        key = unsubscribe.secret(conn)
        conn.commit()
    signed = unsubscribe.read(key, token)
    if signed is None:
        return None
    catalog = store.refresh()
    entity = catalog.entities.get(signed.entity)
    field = entity.fields.get(signed.field) if entity is not None else None
    if field is None or field.type != "boolean" or not field.writable:
        return None
    try:
        record = store.records(entity.name).get(signed.record_id)
    except NotFound:
        return None
    return signed, record


@bp.route("/<token>", methods=["GET", "POST"])
def page(token: str):
    found = _target(token)
    if found is None:
        return _page(404, _("This link is not valid. Please use the link from your email."))
    signed, record = found
    if request.method == "GET":
        if record.get(signed.field) is False:
            return _page(200, _("You are unsubscribed: we will not send you such emails any more."))
        return _page(
            200,
            _("Do you want to stop receiving these emails from us?"),
            ask=True,
            token=token,
        )
    store = current_store()
    with store.transaction() as unit:
        if record.get(signed.field) is not False:
            store.records(signed.entity).update(signed.record_id, {signed.field: False})
        withdraw_queued(unit.connection, signed.entity, signed.record_id)
    return _page(200, _("You are unsubscribed: we will not send you such emails any more."))


def init_app(app: Flask) -> None:
    """Register the page; the token stands in for the CSRF token."""
    app.extensions["csrf"].exempt(bp)
    app.register_blueprint(bp)
