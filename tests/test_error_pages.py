"""The platform's own answers where the framework's bare ones used to be: a favicon (linked
from both layouts, and at /favicon.ico), 404 pages for unknown paths in the app's layout
(or the sign-in layout for a stranger; a problem document under /api), and a 500 page
that logs the exception it stands for."""

from __future__ import annotations

import json
import logging

import pytest
from browser.support import ADMIN, Client, make_app, world

BARE = "The requested URL was not found on the server"  # werkzeug's own 404 text


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("errors")) as built:
        yield built


@pytest.fixture(scope="module")
def app(w):
    app = make_app(w.store)

    @app.get("/boom")
    def boom():  # an unexpected failure, as a bug in a view would raise
        raise ZeroDivisionError("a bug")

    return app


def text(response) -> str:
    return response.get_data(as_text=True)


def test_the_favicon_is_served_and_linked_from_both_layouts(app):
    anonymous = app.test_client()
    icon = anonymous.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.mimetype == "image/svg+xml"
    assert icon.get_data().startswith(b"<svg")
    assert anonymous.get("/static/favicon.svg").get_data() == icon.get_data()
    link = 'rel="icon" href="/static/favicon.svg"'
    assert link in text(anonymous.get("/login"))  # the sign-in layout
    assert link in text(Client(app).login(ADMIN).get("/"))  # the app's layout


def test_an_unknown_path_is_the_apps_404_page_for_a_signed_in_user(app):
    page = Client(app).login(ADMIN).get("/no/such/page")
    assert page.status_code == 404
    body = text(page)
    assert 'data-testid="error"' in body and "Page not found." in body
    assert 'id="sidebar"' in body and 'data-testid="admin-link"' in body  # the app's layout
    assert BARE not in body


def test_an_unknown_path_is_the_plain_404_page_for_a_stranger(app):
    page = app.test_client().get("/no/such/page")
    assert page.status_code == 404
    body = text(page)
    assert 'class="auth"' in body and "Page not found." in body  # the sign-in layout
    assert 'id="sidebar"' not in body and BARE not in body


def test_an_unknown_api_path_is_a_problem_document(app):
    answer = Client(app).login(ADMIN).get("/api/v1/no/such/thing")
    assert answer.status_code == 404
    assert answer.mimetype == "application/problem+json"
    assert json.loads(text(answer))["status"] == 404


def test_an_unexpected_error_is_a_friendly_500_page_and_is_logged(app, caplog):
    with caplog.at_level(logging.ERROR, logger="xrm.web.problems"):
        page = Client(app).login(ADMIN).get("/boom")
    assert page.status_code == 500
    body = text(page)
    assert "Something went wrong on our side. It has been logged" in body
    assert 'id="sidebar"' in body  # the app's layout
    assert "ZeroDivisionError" not in body and "a bug" not in body  # no internals shown
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is ZeroDivisionError
    assert "/boom" in record.getMessage()


def test_a_500_page_for_a_stranger_uses_the_sign_in_layout(app):
    page = app.test_client().get("/boom")
    assert page.status_code == 500
    assert 'class="auth"' in text(page) and "It has been logged" in text(page)
