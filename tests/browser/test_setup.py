"""The setup wizard in Chromium, from an empty instance to the home dashboard: any page
leads to /setup, an error is shown in place, Back keeps what was typed, the review says
which module is added and why, the installation shows its progress, and the
administrator lands signed in on the home page."""

from __future__ import annotations

import pytest

import xrm
from tests.conftest import fresh_database

from .conftest import open_tab
from .support import Server, make_app


@pytest.fixture
def empty_site(tmp_path):
    with fresh_database(tmp_path) as database:
        store = database.open()
        try:
            with Server(make_app(store)) as server:
                yield server.url, store
        finally:
            store.close()


def test_setup_wizard_from_an_empty_instance_to_the_home_dashboard(browser, empty_site, request):
    url, store = empty_site
    with open_tab(browser, url, request, width=1280) as tab:
        page = tab.go("/reports", "any page")
        assert page.url.endswith("/setup")
        page.fill("#in-organization", "Acme Robotics")
        page.select_option("#in-time_zone", "Europe/Berlin")
        page.select_option("#in-currency", "EUR")
        page.click("[data-testid=setup-next]")
        page.fill("#in-work_start", "17:00")
        page.fill("#in-work_end", "08:00")
        page.click("[data-testid=setup-next]")
        tab.shot("hours refused")
        assert "the end must come after the start" in page.inner_text(
            "[data-testid=error-work_end]"
        )
        page.click("[data-testid=setup-back]")
        assert page.input_value("#in-organization") == "Acme Robotics"
        page.click("[data-testid=setup-next]")
        assert page.input_value("#in-work_start") == "17:00"  # Back kept what was typed
        page.fill("#in-work_start", "08:30")
        page.fill("#in-work_end", "17:30")
        page.click("[data-testid=setup-next]")
        page.fill("#in-admin_name", "Ada Admin")
        page.fill("#in-admin_email", "ada@example.com")
        page.click("[data-testid=setup-next]")
        page.uncheck("#in-modules-core")
        page.check("#in-modules-sales")
        page.click("[data-testid=setup-next]")
        tab.shot("review")
        assert "core is installed too: sales needs it." in page.inner_text(
            "[data-testid=setup-added]"
        )
        page.fill("#in-password", "correct horse battery staple")
        page.fill("#in-password-again", "correct horse battery staple")
        page.click("[data-testid=setup-install]")
        page.wait_for_selector("[data-testid=setup-continue]", timeout=120_000)
        tab.shot("ready")
        assert "ada@example.com" in page.inner_text("main")
        page.click("[data-testid=setup-continue]")
        page.wait_for_load_state("networkidle")
        tab.shot("home")
        assert "/login" not in page.url and "/setup" not in page.url
        assert "Ada Admin" in page.content()
        assert store.settings()["organization"] == "Acme Robotics"
        assert xrm is not None and set(store.refresh().solutions) == {"core", "sales"}
