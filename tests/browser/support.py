"""What the UI tests share: a store with the shipped packs, users and a few records; an
application around it; a test client that signs in and posts with real CSRF tokens; a
real WSGI server on a random loopback port for the browser tests; and the steps the
browser tests take on a page again and again.

The database is SQLite, or PostgreSQL when XRM_TEST_DATABASE_URL is set (a fresh schema
per use, dropped afterwards), as everywhere else in the suite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import os
import re
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

import xrm

if TYPE_CHECKING:
    from xrm.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "xrm" / "solutions" / "packs"
PG_URL = os.environ.get("XRM_TEST_DATABASE_URL")
PASSWORD = "correct horse battery"
ARTIFACTS = ROOT / "tests" / "artifacts"

ADMIN = "admin@example.com"
SELLER = "seller@example.com"
READER = "reader@example.com"

CSRF_INPUT = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
PLANNED = re.compile(r'name="documents" value="([^"]*)"')

#: The administrator's guide's example field (§3), as its form posts it: a choice ``tier``
#: on accounts, placed on the form and in the view All accounts.
TIER_FIELD = {
    "name": "tier",
    "type": "choice",
    "label_en": "Tier",
    "label_ru": "Уровень",
    "options": "gold | Gold | Золото\nsilver | Silver | Серебро",
    "placement": "0:0:0",
    "views": "all_accounts",
}


@contextlib.contextmanager
def database_url(tmp: Path) -> Iterator[tuple[str, dict]]:
    """A fresh database: (url, engine options)."""
    if PG_URL:
        from xrm.storage.database import normalize_url

        schema = f"ui_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(normalize_url(PG_URL))
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield PG_URL, {"connect_args": {"options": f"-csearch_path={schema}"}, "pool_size": 5}
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        yield f"sqlite:///{tmp / 'ui.db'}", {}


class World:
    """A store with core and sales installed, three users and some records."""

    def __init__(self, store):
        self.store = store
        self.admin = store.add_user(ADMIN, "Ada Admin", password=PASSWORD, roles=["administrator"])
        self.seller = store.add_user(
            SELLER,
            "Sam Seller",
            password=PASSWORD,
            roles=["user"],
            teams=["east"],
            time_zone="Europe/Moscow",
        )
        self.reader = store.add_user(
            READER, "Rita Reader", password=PASSWORD, roles=["read_only"], locale="ru"
        )
        accounts = store.records("account", self.seller)
        self.acme = accounts.create(
            {
                "name": "Acme Corporation",
                "account_type": "customer",
                "industry": "retail",
                "owner": self.seller,
            }
        )
        self.globex = accounts.create(
            {
                "name": "Globex",
                "account_type": "prospect",
                "industry": "technology",
                "owner": self.seller,
            }
        )
        self.initech = store.records("account", self.admin).create(
            {
                "name": "Initech",
                "account_type": "partner",
                "industry": "finance",
                "owner": self.admin,
            }
        )
        contacts = store.records("contact", self.seller)
        self.jane = contacts.create(
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "account": self.acme["id"],
                "email": "jane@acme-corp.com",
                "owner": self.seller,
            }
        )
        opportunities = store.records("opportunity", self.seller)
        today = dt.date.today()
        self.deal = opportunities.create(
            {
                "name": "Acme renewal",
                "account": self.acme["id"],
                "amount": Decimal("1200.50"),
                "close_date": today + dt.timedelta(days=20),
                "owner": self.seller,
            }
        )
        self.big_deal = opportunities.create(
            {
                "name": "Globex rollout",
                "account": self.globex["id"],
                "amount": Decimal("50000"),
                "close_date": today + dt.timedelta(days=40),
                "owner": self.seller,
            }
        )
        self.small_deal = opportunities.create(
            {
                "name": "Initech pilot",
                "account": self.initech["id"],
                "close_date": today + dt.timedelta(days=5),
                "owner": self.seller,
            }
        )


@contextlib.contextmanager
def opened(tmp: Path, packs: list[Path] | None = None) -> Iterator[Store]:
    """A store on a fresh database (as database_url), ``packs`` installed; closed after."""
    with database_url(tmp) as (url, options):
        store = xrm.open(url, **options)
        try:
            if packs:
                store.install(packs)
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def world(tmp: Path, *packs: str) -> Iterator[World]:
    """The World; the shipped ``packs`` named (a module's) are installed after it is made."""
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales"]) as store:
        built = World(store)
        if packs:
            store.install([SOLUTIONS / name for name in packs])
        yield built


def make_app(store, **config):
    from xrm.web import create_app

    settings = {
        "TESTING": True,
        "SECRET_KEY": "ui-tests",
        "SESSION_COOKIE_SECURE": False,
        "RATELIMIT_ENABLED": False,
        "XRM_API_RATE_LIMIT": "100000 per minute",
    }
    settings.update(config)
    return create_app(store, settings)


class Client:
    """Flask's test client, signed in, posting forms with the session's CSRF token."""

    def __init__(self, app):
        self.app = app
        self.http = app.test_client()
        self.token: str | None = None

    def login(self, email: str, password: str = PASSWORD) -> Client:
        page = self.http.get("/login").get_data(as_text=True)
        token = CSRF_INPUT.search(page).group(1)
        response = self.http.post(
            "/login", data={"email": email, "password": password, "csrf_token": token}
        )
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        self.token = None
        return self

    def csrf(self) -> str:
        if self.token is None:
            page = self.http.get("/me").get_data(as_text=True)
            self.token = CSRF_META.search(page).group(1)
        return self.token

    def get(self, url: str, **kwargs):
        return self.http.get(url, **kwargs)

    def post(self, url: str, data=None, *, csrf: bool = True, htmx: bool = False, **kwargs):
        data = dict(data or {}) if not isinstance(data, list) else data
        headers = kwargs.pop("headers", {})
        if htmx:
            headers["HX-Request"] = "true"
        if csrf:
            if isinstance(data, list):
                data = [*data, ("csrf_token", self.csrf())]
            else:
                data.setdefault("csrf_token", self.csrf())
        if isinstance(data, list):
            from werkzeug.datastructures import MultiDict

            data = MultiDict(data)
        return self.http.post(url, data=data, headers=headers, **kwargs)


def planned(page: str) -> str:
    """The documents (JSON) an administration plan's page carries to its Apply button."""
    return html.unescape(PLANNED.search(page).group(1))


# ----------------------------------------------------------------------------- server
class Server:
    """The application behind werkzeug's WSGI server on 127.0.0.1, in a thread."""

    def __init__(self, app):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):  # the tests' output stays readable
                pass

        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serve(built: World, mail_from: str | None = None) -> Iterator[World]:
    """The world's application served over HTTP, its address in ``built.url``; with
    ``mail_from``, the instance's settings make the links in its emails point at it."""
    with Server(make_app(built.store)) as server:
        built.url = server.url
        if mail_from:
            built.store.save_settings({"base_url": server.url, "mail_from": mail_from})
        yield built


# ----------------------------------------------------------------------------- pages
#: A tom-select lookup has no answer outstanding, and has asked the server for ``query``
#: if its box holds it (a lookup that has a value already may drop the typed keys: then
#: the list it loaded on focus is the one to choose from).
LOOKUP_LOADED = """([selector, query]) => {
  const lookup = document.querySelector(selector).tomselect;
  const asked = lookup.inputValue() !== query || lookup.loadedSearches[query] === true;
  return asked && !lookup.wrapper.classList.contains(lookup.settings.loadingClass);
}"""


def pick(
    page, field: str, query: str, option: str, close: bool = False, within: str | None = None
) -> None:
    """Choose a record in a tom-select lookup (or add one to a many-to-many) by typing part
    of its title; ``close`` shuts the dropdown after (a many-to-many's stays open).  The
    lookup is a form's ``field``, or the one inside ``within`` (a related list's picker)."""
    box = within or f"#field-{field}"
    # a change on a record form asks the server for its live rules, whose answer redraws
    # the conditional fields: a field is worked in once no such answer is on its way
    settled(page)
    page.click(f"{box} .ts-control")
    page.keyboard.type(query)
    # the lookup asks the server on focus and again as the words are typed, and each answer
    # redraws the dropdown: the option is chosen once the typed words' answer is in
    page.wait_for_function(LOOKUP_LOADED, arg=[f"{box} .tomselected", query])
    page.locator(f"{box} .ts-dropdown .option", has_text=option).first.click()
    if close:
        page.keyboard.press("Escape")
    settled(page)  # the choice's own live-rules answer


def saved_id(page, entity: str) -> int:
    """The id of the record a form's save has landed on."""
    page.wait_for_url(re.compile(rf"/r/{entity}/\d+$"))
    page.wait_for_load_state("networkidle")
    return int(page.url.rsplit("/", 1)[1])


def settled(page) -> None:
    """Wait until htmx has no request in flight and has settled its last swap: it binds
    the swapped-in elements' triggers only when it settles (some 20 ms after the swap),
    so a change made before then would go unnoticed.  Call it once the swap is seen (a
    trigger with a delay has no request in flight yet right after the change)."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )


def swapped_in(locator, state: str = "visible"):
    """Wait for what an htmx swap brings (``locator``), then for htmx to settle, so that
    the next click or change on the new content is seen by it (a form clicked before then
    would be posted by the browser itself, a button would do nothing)."""
    locator.wait_for(state=state)
    settled(locator.page)
    return locator


def toast(page, text: str, level: str = "success"):
    """The toast that says ``text``, once shown. Found by its words: an earlier toast (a
    save's "Saved.") may still show beside it for a few seconds."""
    found = page.locator(f'[data-xrm-toast][data-level="{level}"]', has_text=text)
    found.wait_for()
    return found


def stage_reached(page, stage: str) -> None:
    """Wait until the record's stage bar shows ``stage`` as the current one (the move's
    answer swapped the page in) and htmx has settled that page."""
    swapped_in(page.locator(f'[data-testid="stage-{stage}"][aria-current="step"]'))


def sendable(page, form=None) -> None:
    """Wait until the public form on ``page`` (or in ``form``, a frame of it) may be sent:
    its signed token refuses a form sent sooner than ``XRM_WEB_FORM_MIN_SECONDS`` after it
    was served, counted from the whole second the token names, on the one clock the server
    and the browser share."""
    from itsdangerous import URLSafeSerializer

    from xrm.web.public_forms import DEFAULTS, SALT, TOKEN

    token = (form or page).locator(f'input[name="{TOKEN}"]').input_value()
    _, payload = URLSafeSerializer("", salt=SALT).loads_unsafe(token)
    ready = int(payload["t"]) + float(DEFAULTS["XRM_WEB_FORM_MIN_SECONDS"])
    page.wait_for_function("ready => Date.now() / 1000 > ready", arg=ready)
