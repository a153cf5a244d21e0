"""A user's own password: the current one, then a new one the password policy accepts.

A wrong current password counts as a failed sign-in (the same throttle, so a borrowed
session cannot be used to guess it).  The change ends every other session and
remember-me cookie of the user; the browser that made it stays signed in."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for

from ...storage.users import PasswordRejected
from ..auth import client_address, login_throttle, reissue_session
from . import context as C
from .guards import guard

bp = guard(Blueprint("ui_account", __name__))


def _back():
    return redirect(url_for("ui_shell.me"), code=303)


@bp.post("/me/password")
def change_password():
    store = C.store()
    user = store.user(C.principal().user_id)
    form = request.form
    throttle, address = login_throttle(), client_address()
    wait = throttle.wait(user.email, address)
    if wait:
        flash(
            C._("Too many wrong passwords. Try again in %(seconds)s seconds.", seconds=wait),
            "danger",
        )
        return _back()
    if store.check_password(user.email, form.get("current_password", "")) is None:
        throttle.failed(user.email, address)
        flash(C._("The current password is not right."), "danger")
        return _back()
    new = form.get("new_password", "")
    if new != form.get("new_password_again", ""):
        flash(C._("The two new passwords differ."), "danger")
        return _back()
    try:
        store.set_password(user.id, new)
    except PasswordRejected as exc:
        for problem in exc.problems:
            flash(C.error(problem), "danger")
        return _back()
    throttle.succeeded(user.email, address)
    reissue_session(user.id)
    flash(C._("Password changed. Your other sessions were signed out."), "success")
    return _back()
