"""Browser sign-in: the login form with CSRF, cookie flags, safe redirects, throttling,
sign-out, and what an inactive account can still do (nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xrm.storage import tables as T
from xrm.web import create_app

SOLUTIONS = Path(__file__).resolve().parents[1] / "xrm" / "solutions" / "packs"
PASSWORD = "correct horse battery"
TOKEN_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture
def store(database):
    app_store = database.open()
    app_store.install([SOLUTIONS / "core"])
    yield app_store
    app_store.close()


@pytest.fixture
def user_id(store):
    return store.add_user("ada@example.com", "Ada", password=PASSWORD, roles=["administrator"])


def make_app(store, **config):
    return create_app(store, {"TESTING": True, **config})


@pytest.fixture
def app(store, user_id):
    return make_app(store)


def csrf_from(response) -> str:
    match = TOKEN_FIELD.search(response.get_data(as_text=True))
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client, email="ada@example.com", password=PASSWORD, **extra):
    token = csrf_from(client.get("/login"))
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token, **extra}
    )


def set_cookie_headers(response) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def test_login_page_is_a_real_form(app):
    page = app.test_client().get("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<form method="post" action="/login" novalidate>' in html
    assert 'type="email"' in html and 'type="password"' in html
    assert 'autocomplete="current-password"' in html
    assert csrf_from(page)
    assert "/static/css/auth.css" in html
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    css = app.test_client().get("/static/css/auth.css")
    assert css.status_code == 200 and b".auth-card" in css.data
    css.close()


def test_a_post_without_the_csrf_token_is_rejected(app):
    client = app.test_client()
    client.get("/login")
    refused = client.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
    assert refused.status_code == 400
    assert "expired" in refused.get_data(as_text=True)
    forged = client.post(
        "/login", data={"email": "ada@example.com", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert forged.status_code == 400
    assert client.get("/api/v1/meta").status_code == 401  # still signed out


def test_sign_in_sets_a_hardened_session_cookie(app):
    client = app.test_client()
    response = sign_in(client, next="/api/docs")
    assert response.status_code == 303
    assert response.headers["Location"] == "/api/docs"
    cookie = next(c for c in set_cookie_headers(response) if c.startswith("xrm_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # the test client speaks plain http
    me = client.get("/api/v1/meta").get_json()
    assert me["user"]["email"] == "ada@example.com" and me["csrf_token"]


def test_cookies_are_secure_outside_debug_and_testing(store, user_id, tmp_path):
    app = create_app(store, {"SECRET_KEY": "s" * 32})
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    client = app.test_client()
    response = sign_in(client, remember="y")
    assert response.status_code == 303
    cookies = set_cookie_headers(response)
    session = next(c for c in cookies if c.startswith("xrm_session="))
    remember = next(c for c in cookies if c.startswith("xrm_remember="))
    for cookie in (session, remember):
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_wrong_password_and_unknown_account(app):
    client = app.test_client()
    wrong = sign_in(client, password="nope")
    assert wrong.status_code == 200
    assert "Wrong email or password." in wrong.get_data(as_text=True)
    assert sign_in(client, email="nobody@example.com").status_code == 200
    missing = client.post("/login", data={"csrf_token": csrf_from(client.get("/login"))})
    assert missing.status_code == 400
    assert client.get("/api/v1/meta").status_code == 401


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", ""],
)
def test_sign_in_never_redirects_off_site(app, target):
    response = sign_in(app.test_client(), next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_failed_sign_ins_slow_down_that_account_at_that_address(store, user_id):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=3)
    store.add_user("bob@example.com", password=PASSWORD, roles=["user"])
    client = app.test_client()
    for _ in range(3):
        assert sign_in(client, password="guess").status_code == 200
    refused = sign_in(client, password="guess")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "Too many failed sign-ins" in refused.get_data(as_text=True)
    # even the right password waits now; another account does not
    assert sign_in(client).status_code == 429
    assert sign_in(app.test_client(), email="bob@example.com").status_code == 303


def test_successful_sign_ins_spend_no_budget(store, user_id):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=2)
    for _ in range(4):
        assert sign_in(app.test_client()).status_code == 303


def test_failed_sign_ins_are_throttled_per_address(store, user_id):
    app = make_app(store, XRM_LOGIN_ADDRESS_FREE_FAILURES=4)
    client = app.test_client()
    for index in range(4):
        assert sign_in(client, email=f"guess{index}@example.com").status_code == 200
    assert sign_in(client, email="guess9@example.com").status_code == 429
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert sign_in(other).status_code == 303


def test_sign_out_is_a_csrf_protected_post(app):
    client = app.test_client()
    sign_in(client)
    page = client.get("/logout")
    assert page.status_code == 200 and "Sign out" in page.get_data(as_text=True)
    assert client.post("/logout").status_code == 400  # no token: still signed in
    assert client.get("/api/v1/meta").status_code == 200
    done = client.post("/logout", data={"csrf_token": csrf_from(page)})
    assert done.status_code == 303 and done.headers["Location"] == "/login"
    assert client.get("/api/v1/meta").status_code == 401
    assert "signed out" in client.get("/login").get_data(as_text=True)


def test_an_inactive_account_can_do_nothing(app, store, user_id):
    token = store.create_token(user_id)
    client = app.test_client()
    sign_in(client)
    assert client.get("/api/v1/meta").status_code == 200
    with store.engine.begin() as conn:
        conn.execute(T.users.update().where(T.users.c.id == user_id).values(active=False))
    assert client.get("/api/v1/meta").status_code == 401
    bearer = app.test_client().get("/api/v1/meta", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 401
    assert sign_in(app.test_client()).status_code == 200  # refused, form shown again


def test_bearer_requests_touch_no_session(app, store, user_id):
    token = store.create_token(user_id)
    client = app.test_client()
    response = client.get("/api/v1/meta", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert not set_cookie_headers(response)
    # and a write with a token needs no CSRF header
    created = client.post(
        "/api/v1/account", json={"name": "Acme"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201


def test_secret_key_is_shared_through_the_instance_folder(store, tmp_path, monkeypatch):
    monkeypatch.delenv("XRM_SECRET_KEY", raising=False)
    monkeypatch.setenv("XRM_INSTANCE_PATH", str(tmp_path / "instance"))
    first = create_app(store)
    second = create_app(store)
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 32
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0
