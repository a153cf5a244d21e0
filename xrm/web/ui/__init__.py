"""The generated web UI: the shell, lists, record forms, kanban, calendar, the inbox,
reports and administration.

``init_app(app)`` attaches it to an application built by ``xrm.web.create_app``.  Every
page is rendered on the server from the catalog of the request (Jinja templates, htmx for
partial updates, Bootstrap for layout; all vendored), so a field an administrator adds is
on the next page anyone loads, in every worker, with no restart.
"""

from __future__ import annotations

from flask import Flask, current_app, send_from_directory

from ..problems import ERROR_PAGE
from . import context as C
from .guards import error_page, htmx
from .i18n import LANGUAGES


def _jinja_globals(app: Flask) -> None:
    from . import inbox, shell

    app.jinja_env.globals.update(
        _=C._,
        ui=C,
        label=C.label,
        plural=C.plural,
        display=C.display,
        rich_html=C.rich_html,
        languages=LANGUAGES,
        navigation=shell.navigation,
        inbox_counts=inbox.counts,
        is_htmx=htmx,
    )


def _favicon():
    """The icon where browsers look without a page's ``<link rel="icon">`` (the API
    documents, downloads): the same SVG."""
    return send_from_directory(
        current_app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400
    )


def init_app(app: Flask) -> None:
    """Register the UI's blueprints, template helpers and static files on ``app``."""
    from . import (
        account,
        admin,
        calendar,
        dashboards,
        duplicates,
        forms,
        imports,
        inbox,
        kanban,
        lists,
        printing,
        record_view,
        related,
        report_builder,
        report_schedules,
        reports,
        search,
        shell,
        tree,
        wizards,
    )

    for module in (
        shell,
        account,
        lists,
        record_view,
        printing,
        related,
        forms,
        duplicates,
        imports,
        kanban,
        calendar,
        tree,
        inbox,
        reports,
        report_builder,
        report_schedules,
        dashboards,
        wizards,
        search,
        admin,
    ):
        app.register_blueprint(module.bp)
    _jinja_globals(app)
    app.extensions[ERROR_PAGE] = error_page
    app.add_url_rule("/favicon.ico", "favicon", _favicon)
    app.config.setdefault("XRM_EXPORT_MAX", 100_000)
    app.config.setdefault("XRM_KANBAN_CARDS", 25)
