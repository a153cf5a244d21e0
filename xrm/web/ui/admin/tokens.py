"""API tokens of every user (never their secret: the first characters, the owner, when
made, last used and expiring) and revoking one, beside the people pages."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from .. import context as C
from . import bp
from .processes import when


def status_of(row, now) -> str:
    if row.revoked:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


@bp.get("/tokens")
def tokens():
    store = C.store()
    now = store.clock.now()
    rows = [
        {
            "id": row.id,
            "prefix": row.prefix,
            "name": row.name,
            "user_id": row.user_id,
            "email": row.email,
            "created": when(row.created_at),
            "last_used": when(row.last_used_at),
            "expires": when(row.expires_at),
            "status": status_of(row, now),
        }
        for row in store.tokens()
    ]
    return render_template("admin/tokens.html", rows=rows)


@bp.post("/tokens/<recid:token_id>/revoke")
def revoke_token(token_id: int):
    if not C.store().revoke_token_id(token_id):
        abort(404)
    flash(C._("Token #%(id)s revoked: it no longer opens the API.", id=token_id), "success")
    return redirect(url_for("ui_admin.tokens"), code=303)
