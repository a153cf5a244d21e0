"""The web application: ``create_app(store)`` builds a Flask app around one store.

The store hangs off ``app.extensions["xrm"]`` (never a module global), so one process can
serve several stores side by side, and tests can open several apps on one database.
Each request starts by asking the store for the current catalog (``store.refresh()``,
one indexed single-row read), which is how a field added by another process is picked
up within a request.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request

MiB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 4 * MiB,
    "SESSION_COOKIE_NAME": "xrm_session",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_NAME": "xrm_remember",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_DURATION": dt.timedelta(days=14),
    "PERMANENT_SESSION_LIFETIME": dt.timedelta(hours=12),
    "WTF_CSRF_TIME_LIMIT": None,  # a token lives as long as the session it is bound to
    "XRM_API_RATE_LIMIT": "600 per minute",
    "XRM_HOOK_RATE_LIMIT": "120 per minute",  # inbound webhooks per process and address
    # The sign-in throttle (throttle.py): free failures, then a doubling wait.
    "XRM_LOGIN_THROTTLE": True,
    "XRM_LOGIN_FREE_FAILURES": 5,  # per account at one address
    "XRM_LOGIN_ADDRESS_FREE_FAILURES": 20,  # per address, any account
    "XRM_LOGIN_MAX_WAIT": 300,  # seconds, the longest wait
    "XRM_LOGIN_FORGET_AFTER": 3600,  # seconds without a failure before a count starts over
    "XRM_BULK_MAX": 1000,
    "XRM_PROXY_COUNT": 0,  # reverse proxies in front whose X-Forwarded-* to trust
    "XRM_HOME_URL": None,
}


def current_store():
    """The store of the application handling the request."""
    return current_app.extensions["xrm"]


def _env_config() -> dict[str, Any]:
    config: dict[str, Any] = {}
    if os.environ.get("XRM_REDIS_URL"):
        config["XRM_REDIS_URL"] = os.environ["XRM_REDIS_URL"]
    if os.environ.get("XRM_REDIS_PREFIX"):
        config["XRM_REDIS_PREFIX"] = os.environ["XRM_REDIS_PREFIX"]
    if os.environ.get("XRM_SECRET_KEY"):
        config["SECRET_KEY"] = os.environ["XRM_SECRET_KEY"]
    if os.environ.get("XRM_COOKIE_SECURE"):
        config["SESSION_COOKIE_SECURE"] = os.environ["XRM_COOKIE_SECURE"].lower() in (
            "1",
            "true",
            "yes",
        )
    if os.environ.get("XRM_PROXY_COUNT"):
        config["XRM_PROXY_COUNT"] = int(os.environ["XRM_PROXY_COUNT"])
    return config


def instance_secret(folder: Path | None = None) -> str:
    """A secret key shared by every worker process: kept in ``instance/secret_key``.

    The first process to need it creates the file atomically (link of a complete temporary
    file), so workers starting together agree on one key.
    """
    folder = folder or Path(os.environ.get("XRM_INSTANCE_PATH", "instance"))
    path = folder / "secret_key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text(encoding="ascii").strip()


def create_app(store=None, config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask application serving ``store`` (default: ``xrm.open()`` of the environment)."""
    from . import (
        api,
        api_dashboards,
        api_merge,
        api_reports,
        api_search,
        api_wizards,
        api_workflow,
        auth,
        headers,
        health,
        hooks,
        problems,
        public_forms,
        setup_page,
        ui,
        unsubscribe,
    )

    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(_env_config())
    app.config.update(config or {})
    if (
        "SESSION_COOKIE_SECURE" not in (config or {})
        and "SESSION_COOKIE_SECURE" not in _env_config()
    ):
        secure = not (app.debug or app.testing)
        app.config["SESSION_COOKIE_SECURE"] = secure
        app.config["REMEMBER_COOKIE_SECURE"] = secure
    else:
        app.config.setdefault("REMEMBER_COOKIE_SECURE", app.config["SESSION_COOKIE_SECURE"])
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48) if app.testing else instance_secret()
    app.json.sort_keys = False

    if store is None:
        import xrm

        store = xrm.open(app.config.get("XRM_DATABASE_URL"))
    app.extensions["xrm"] = store

    if app.config["XRM_PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = int(app.config["XRM_PROXY_COUNT"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    problems.register(app)
    auth.init_app(app)
    auth.protect_api(app, api.bp)
    auth.protect_api(app, api_workflow.bp)
    auth.protect_api(app, api_reports.bp)
    auth.protect_api(app, api_dashboards.bp)
    auth.protect_api(app, api_merge.bp)
    auth.protect_api(app, api_search.bp)
    auth.protect_api(app, api_wizards.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_workflow.bp)
    app.register_blueprint(api_reports.bp)
    app.register_blueprint(api_dashboards.bp)
    app.register_blueprint(api_merge.bp)
    app.register_blueprint(api_search.bp)
    app.register_blueprint(api_wizards.bp)
    app.register_blueprint(api.docs)
    app.register_blueprint(health.bp)
    hooks.init_app(app)
    public_forms.init_app(app)
    unsubscribe.init_app(app)
    setup_page.init_app(app)
    ui.init_app(app)

    @app.before_request
    def _current_catalog():
        # Every request works on the catalog in force when it started: one version check,
        # then every store call of the request uses that catalog.
        # /health answers 503 itself when the database is gone, so it reads no catalog.
        if request.endpoint not in ("static", "health.health"):
            g.catalog_pin = store.pin()
            g.catalog = store.refresh()

    @app.teardown_request
    def _release_catalog(_exc):
        token = g.pop("catalog_pin", None)
        if token is not None:
            store.unpin(token)

    headers.init_app(app)
    return app
