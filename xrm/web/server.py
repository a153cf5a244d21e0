"""The production server: gunicorn run in-process (``xrm run`` calls :func:`serve`).

Each gunicorn worker builds its own application and store after the fork (no preload),
so no database connection or engine pool crosses a fork.  Workers share what must be
shared through the database (the catalog version, failed sign-ins, accepted webhook
signatures), the instance secret key file (sessions signed by one worker are read by the
others) and, when ``XRM_REDIS_URL`` is set, the rate-limit and failed sign-in counters.
The access log masks webhook secrets in request lines (``redaction.py``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .redaction import redact


class RedactingLogger(Logger):
    """gunicorn's logger, with webhook secrets masked in every access-log field (the
    request line, the path, the referrer, the raw URI among the environ atoms)."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {k: redact(v) if isinstance(v, str) else v for k, v in atoms.items()}


class XrmServer(BaseApplication):
    """gunicorn configured from a dict, serving ``app_factory()`` in every worker."""

    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any] | None = None):
        self.app_factory = app_factory
        self.options = options or {}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self):
        return self.app_factory()


def default_workers() -> int:
    """Two per core plus one, at most eight: threads in each cover slow clients."""
    return min(2 * multiprocessing.cpu_count() + 1, 8)


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    *,
    threads: int = 4,
    database_url: str | None = None,
    app_factory: Callable[[], Any] | None = None,
    **options: Any,
) -> None:
    """Serve the platform until interrupted.

    ``database_url`` defaults to ``XRM_DATABASE_URL`` (or the embedded SQLite file);
    ``options`` are further gunicorn settings (``timeout``, ``accesslog``, ...).
    """
    from . import create_app, instance_secret

    if app_factory is None:
        config: dict[str, Any] = {}
        if database_url:
            config["XRM_DATABASE_URL"] = database_url

        def app_factory():
            return create_app(config=config)

    instance_secret()  # created once before the workers start, not raced by them
    settings: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers or default_workers(),
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": RedactingLogger,
        "preload_app": False,
        "forwarded_allow_ips": "127.0.0.1",
        "limit_request_line": 8190,
        "proc_name": "xrm",
    }
    settings.update(options)
    XrmServer(app_factory, settings).run()
