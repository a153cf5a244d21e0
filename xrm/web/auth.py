"""Who is asking: browser sessions, API tokens, CSRF and rate limits.

Browsers sign in through the login form (Flask-Login session, CSRF-protected by
Flask-WTF, slowed down after failures by the sign-in throttle, ``throttle.py``).  A
session names the user's session generation: signing out or a new password moves it on,
which ends every session and remember-me cookie issued before (Flask's sessions are
signed cookies, so a copy would otherwise outlive the sign-out).  API clients send
``Authorization: Bearer <token>``; such requests carry no ambient credentials, so they are
exempt from CSRF, while an API write that rides on the session cookie must send the CSRF
token in ``X-CSRFToken``.  A revoked or expired token is refused with a 401 problem.
Every authenticated request ends up with a ``Principal`` (user, roles, teams, locale,
time zone) on ``g.principal``, which the records service uses to apply row scopes and
field rules.
"""

from __future__ import annotations

import hashlib

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import InputRequired, Length

from ..storage.users import dummy_password_hash
from . import current_store
from .problems import UNAUTHORIZED, Problem
from .redirects import safe_next
from .throttle import LoginThrottle

bp = Blueprint("auth", __name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# ------------------------------------------------------------------------------ users
class WebUser(UserMixin):
    """A platform user as Flask-Login sees it (a row of ``xrm_user``)."""

    def __init__(self, row):
        self.id = row.id
        self.email = row.email
        self.name = row.name
        self.locale = row.locale
        self.time_zone = row.time_zone
        self.active = bool(row.active)
        self.generation = row.session_generation

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        # Flask-Login keeps this in the session and the remember-me cookie: with the
        # generation in it, both stop working once the generation moves on.
        return f"{self.id}:{self.generation}"


def _load_user(session_id: str):
    user_id, _, generation = str(session_id).partition(":")
    try:
        row = current_store().user(int(user_id))
        generation_number = int(generation)
    except (TypeError, ValueError):
        return None  # a session from before generations, or a forged one
    if row is None or not row.active or row.session_generation != generation_number:
        return None
    return WebUser(row)


def reissue_session(user_id: int) -> None:
    """Keep the current browser signed in after its user's sessions were ended (a new
    password): a fresh session in the new generation, remember-me renewed if it was set."""
    row = current_store().user(user_id)
    remember = current_app.config["REMEMBER_COOKIE_NAME"] in request.cookies
    login_user(WebUser(row), remember=remember)


TOKEN_REFUSALS = {
    "unknown": "the token is not valid",
    "revoked": "the token was revoked",
    "expired": "the token has expired",
    "inactive": "the account is inactive",
}


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="xrm"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, type=UNAUTHORIZED, headers={"WWW-Authenticate": challenge})


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header; '' for another scheme."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def authenticate_api():
    """Set ``g.principal`` for an API request or raise a 401 problem.

    A bearer token wins over a session cookie that may ride along; a session-cookie
    request that changes something must pass the CSRF check.
    """
    store = current_store()
    token = bearer_token()
    if token is not None:
        if not token:
            raise _unauthorized("use Authorization: Bearer <token>", "invalid_request")
        check = store.check_token(token)
        if check.user is None:
            raise _unauthorized(TOKEN_REFUSALS[check.refusal], "invalid_token")
        row = check.user
        g.auth_method = "token"
    elif current_user.is_authenticated:
        if request.method not in SAFE_METHODS:
            current_app.extensions["csrf"].protect()
        row = store.user(current_user.id)
        g.auth_method = "session"
    else:
        raise _unauthorized("sign in or send an API token")
    principal = store.principal(row.id) if row is not None else None
    if principal is None:
        raise _unauthorized("the account is inactive", "invalid_token")
    g.user = row
    g.principal = principal
    return principal


# ------------------------------------------------------------------------ rate limits
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def client_address() -> str:
    return request.remote_addr or "unknown"


def api_client_key() -> str:
    """Whose budget an API request spends: the token's, else the user's, else the address's."""
    token = bearer_token()
    if token:
        return "token:" + _digest(token)
    user_id = session.get("_user_id")
    if user_id:
        return f"user:{user_id}"
    return "ip:" + client_address()


def make_limiter(app: Flask) -> Limiter:
    redis_url = app.config.get("XRM_REDIS_URL")
    limiter = Limiter(
        key_func=client_address,
        storage_uri=redis_url or "memory://",
        strategy="fixed-window",
        headers_enabled=False,  # Retry-After is set on the 429 itself
        key_prefix=app.config.get("XRM_REDIS_PREFIX") or "xrm",
        enabled=app.config.get("RATELIMIT_ENABLED", True),
    )
    limiter.init_app(app)
    app.extensions["xrm_limiter"] = limiter
    return limiter


# ------------------------------------------------------------------------------ forms
class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in")


def _home() -> str:
    return current_app.config.get("XRM_HOME_URL") or "/"


def login_throttle() -> LoginThrottle:
    return current_app.extensions["xrm_login_throttle"]


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    next_url = safe_next(request.values.get("next"))
    error = None
    status = 200
    if form.validate_on_submit():
        email, address = form.email.data, client_address()
        throttle = login_throttle()
        wait = throttle.wait(email, address)
        if wait:
            return _too_many(wait)
        row = current_store().check_password(email, form.password.data)
        if row is not None:
            throttle.succeeded(email, address)
            session.clear()  # a fresh session for the signed-in user
            login_user(WebUser(row), remember=bool(form.remember.data))
            return redirect(next_url or _home(), code=303)
        throttle.failed(email, address)
        error = "Wrong email or password."
    elif request.method == "POST":
        error = "Enter your email and password."
        status = 400
    return render_template("auth/login.html", form=form, error=error, next=next_url), status


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    if request.method == "POST":
        if current_user.is_authenticated:
            # Ends this session and every copy of it (and the user's other sessions).
            current_store().end_sessions(current_user.id)
        logout_user()
        session.clear()
        flash("You have been signed out.")
        return redirect(url_for("auth.login"), code=303)
    return render_template("auth/logout.html")


@bp.errorhandler(CSRFError)
def _csrf_failed(exc):
    form = LoginForm()
    message = "The form expired or was not sent from this site. Please try again."
    return render_template("auth/login.html", form=form, error=message, next=None), 400


def _too_many(seconds: int):
    form = LoginForm()
    message = f"Too many failed sign-ins. Try again in {seconds} seconds."
    body = render_template("auth/login.html", form=form, error=message, next=None)
    return body, 429, {"Retry-After": str(seconds)}


# ------------------------------------------------------------------------------ set-up
def init_app(app: Flask) -> None:
    """Sessions, CSRF and rate limits for one application."""
    login_manager = LoginManager()
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    # "strong" would wipe the (empty) session of every bearer-token request.
    login_manager.session_protection = "basic"
    login_manager.user_loader(_load_user)
    login_manager.init_app(app)

    csrf = CSRFProtect()
    csrf.init_app(app)

    make_limiter(app)
    app.extensions["xrm_login_throttle"] = LoginThrottle(app.extensions["xrm"], app.config)
    # Made now rather than on the first unknown email, whose answer would take a hash longer.
    dummy_password_hash()
    app.register_blueprint(bp)

    @app.context_processor
    def _csrf_token():
        return {"csrf_token": generate_csrf}


def protect_api(app: Flask, api_blueprint: Blueprint) -> None:
    """API blueprints check CSRF themselves (only for session cookies) and have their
    own budget per token."""
    app.extensions["csrf"].exempt(api_blueprint)
    app.extensions["xrm_limiter"].limit(
        lambda: app.config["XRM_API_RATE_LIMIT"], key_func=api_client_key, scope="api"
    )(api_blueprint)
