"""Setup in the browser, through the real WSGI app on an empty database: every page is sent
to /setup; the wizard's steps check each answer (values kept, back keeps what was typed);
the review explains the modules added; the installation runs with its progress and signs
the administrator in; then the setup pages are closed."""

from __future__ import annotations

import re
import time

import pytest
from conftest import SOLUTIONS

from xrm.web import create_app


@pytest.fixture
def app(database):
    store = database.open()
    application = create_app(store, {"TESTING": True, "SERVER_NAME": "localhost"})
    yield application
    store.close()


class Browser:
    def __init__(self, app):
        self.client = app.test_client()
        self.page = ""

    def get(self, url):
        response = self.client.get(url)
        self.page = response.get_data(as_text=True)
        return response

    def post(self, data, *, expect=200):
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.page).group(1)
        state = re.search(r'name="_state" value="([^"]*)"', self.page).group(1)
        response = self.client.post("/setup", data={"csrf_token": token, "_state": state, **data})
        self.page = response.get_data(as_text=True)
        assert response.status_code == expect, self.page[-2000:]
        return response

    def step(self) -> str:
        return re.search(r'data-step="(\w+)"', self.page).group(1)


def test_an_empty_instance_is_set_up_in_the_browser(app):
    browser = Browser(app)
    assert browser.get("/").headers["Location"].endswith("/setup")
    assert browser.get("/views/all_accounts").headers["Location"].endswith("/setup")
    assert browser.get("/login").headers["Location"].endswith("/setup")
    browser.get("/setup?lang=ru")
    assert "Организация" in browser.page and browser.step() == "organization"

    browser.post(
        {
            "_action": "next",
            "organization": "",
            "locale": "ru",
            "currency": "RUB",
            "time_zone": "Europe/Moscow",
        },
        expect=422,
    )
    assert 'data-testid="error-organization"' in browser.page
    browser.post(
        {
            "_action": "next",
            "organization": "Ромашка",
            "locale": "ru",
            "currency": "RUB",
            "time_zone": "Europe/Moscow",
        }
    )
    assert browser.step() == "hours"
    browser.post(
        {
            "_action": "next",
            "work_days": ["mon", "tue", "wed", "thu", "fri"],
            "work_start": "18:00",
            "work_end": "09:00",
        },
        expect=422,
    )
    assert "09:00" in browser.page and browser.step() == "hours"  # typed values kept
    browser.post(
        {"_action": "back", "work_days": ["mon"], "work_start": "10:00", "work_end": "19:00"}
    )
    assert browser.step() == "organization" and 'value="Ромашка"' in browser.page
    browser.post(
        {
            "_action": "next",
            "organization": "Ромашка",
            "locale": "ru",
            "currency": "RUB",
            "time_zone": "Europe/Moscow",
        }
    )
    assert 'value="10:00"' in browser.page  # back kept what was typed on the step
    browser.post(
        {
            "_action": "next",
            "work_days": ["mon", "tue", "wed", "thu", "fri"],
            "work_start": "09:00",
            "work_end": "18:00",
        }
    )
    browser.post({"_action": "next", "admin_name": "Анна", "admin_email": "anna@example.com"})
    assert browser.step() == "modules"
    browser.post({"_action": "next", "modules": ["sales"]})
    assert browser.step() == "review" and 'data-testid="setup-added"' in browser.page
    assert 'data-review="organization">Ромашка' in browser.page

    browser.post(
        {"_action": "install", "password": "a long and good pass", "password_again": "another"},
        expect=422,
    )
    assert 'data-testid="error-password"' in browser.page
    response = browser.post(
        {
            "_action": "install",
            "password": "a long and good pass",
            "password_again": "a long and good pass",
        },
        expect=303,
    )
    assert response.headers["Location"].endswith("/setup")
    for _ in range(600):
        progress = browser.client.get("/setup/progress")
        if progress.status_code == 204:
            break
        assert progress.status_code == 200
        time.sleep(0.1)
    assert progress.headers["HX-Redirect"].endswith("/setup/done")
    done = browser.get("/setup/done")
    assert done.status_code == 200 and "anna@example.com" in browser.page
    home = browser.get("/")
    assert home.status_code == 200  # signed in, on the home page
    store = app.extensions["xrm"]
    settings = store.settings()
    assert (settings["organization"], settings["locale"], settings["currency"]) == (
        "Ромашка",
        "ru",
        "RUB",
    )
    catalog = store.refresh()
    assert set(catalog.solutions) == {"core", "sales"}
    assert catalog.calendars["business_hours"].time_zone == "Europe/Moscow"
    assert store.check_password("anna@example.com", "a long and good pass") is not None
    # closed once set up
    assert Browser(app).get("/setup").headers["Location"] == "/"


def test_a_set_up_instance_is_never_sent_to_setup(app):
    store = app.extensions["xrm"]
    store.install([SOLUTIONS / "core"])
    store.add_user("someone@example.com", "Someone", password="a long and good pass")
    browser = Browser(app)
    assert browser.get("/").headers["Location"].startswith("/login")
    assert browser.get("/setup").headers["Location"] == "/"
