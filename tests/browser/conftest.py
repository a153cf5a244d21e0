"""Browser fixtures: Debian's Chromium driven by playwright (never ``playwright install``),
the application served over real HTTP by werkzeug on a random loopback port, and a
screenshot of every page a test visits under ``tests/artifacts/`` (git-ignored).

A missing browser fails the run in CI (``CI`` or ``XRM_TEST_REQUIRE_DB`` set) and skips
these tests elsewhere."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from .support import ARTIFACTS, PASSWORD, PG_URL, serve, world

CHROMIUM = os.environ.get("XRM_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: A phone-sized touch screen, in the browser's own language.
PHONE = {"width": 390, "height": 844, "locale": None, "is_mobile": True, "has_touch": True}


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("XRM_TEST_REQUIRE_DB"))


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        message = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with world(tmp_path_factory.mktemp("browser")) as built, serve(built):
        yield built


class Visit:
    """A browser tab for one test: signs in, and photographs every page it shows."""

    def __init__(self, page, base: str, folder: Path):
        self.page = page
        self.base = base
        self.folder = folder
        self.count = 0
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # The Content-Security-Policy refuses inline scripts and styles: a page or library
        # that needs one is broken under it, so a refusal fails the test like an error.
        page.on("console", self._console)
        page.set_default_timeout(10_000)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"{message.text} at {message.location}")

    def shot(self, name: str) -> Path:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = (
            self.folder
            / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        )
        # a loaded CI machine can take a while to paint a long page; the picture is a record,
        # so a page still settling (a redirect after a button) is given a second try
        try:
            self.page.screenshot(path=str(path), full_page=True, timeout=30_000)
        except PlaywrightError:
            self.page.wait_for_load_state("load")
            self.page.screenshot(path=str(path), full_page=True, timeout=30_000)
        return path

    def go(self, path: str, name: str | None = None):
        self.page.goto(self.base + path)
        self.page.wait_for_load_state("networkidle")
        self.shot(name or path)
        return self.page

    def login(self, email: str, password: str = PASSWORD):
        self.page.goto(self.base + "/login")
        self.shot("login")
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state("networkidle")
        self.shot("home")
        return self.page


@contextlib.contextmanager
def open_tab(
    browser,
    base: str,
    request,
    who: str = "",
    *,
    width: int = 1366,
    height: int = 900,
    locale: str | None = "en-US",
    **options,
) -> Iterator[Visit]:
    """A browser context of its own (its own cookies: another person), its pictures under
    the test's folder (in ``who`` below it for a second person); closed at the end, and no
    script error may have happened on any of its pages. ``options`` go to the context
    (``is_mobile``...); ``locale=None`` leaves the browser's own."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, locale=locale, **options
    )
    folder = ARTIFACTS / ("postgresql" if PG_URL else "sqlite") / request.node.name
    if who:
        folder = folder / who
    shutil.rmtree(folder, ignore_errors=True)
    tab = Visit(context.new_page(), base, folder)
    try:
        yield tab
    finally:
        context.close()
    assert not tab.errors, tab.errors  # no script errors on any page


@pytest.fixture
def visit(browser, site, request):
    with open_tab(browser, site.url, request) as tab:
        yield tab
