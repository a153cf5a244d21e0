"""The outside security review's items (issue 10): API tokens that expire and can be
revoked, sessions that end at sign-out and on a new password, one checked ``next`` for
every redirect, sign-ins that take equal work and slow down instead of locking out (in
storage all workers share), the password policy, webhook secrets kept out of problems and
logs and signatures accepted once, and the security headers of every answer."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import werkzeug.security
from conftest import SOLUTIONS, write_pack
from werkzeug.datastructures import MultiDict
from workflow_pack import MovableClock

from xrm.cli import main
from xrm.storage import tables as T
from xrm.storage.passwords import PasswordPolicy
from xrm.storage.users import PasswordRejected
from xrm.web import create_app
from xrm.web.redaction import redact
from xrm.web.redirects import safe_next
from xrm.workflow.webhooks import sign

PASSWORD = "correct horse battery"
ADMIN = "ada@example.com"
USER = "bob@example.com"
CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
PROBLEM = "application/problem+json"
URL_SECRET = "url-secret-0123456789"
HMAC_SECRET = "hmac-secret-0123456789"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def clock():
    return MovableClock()


@pytest.fixture
def store(database, clock):
    opened = database.open(clock=clock)
    opened.install([SOLUTIONS / "core"])
    yield opened
    opened.close()


@pytest.fixture
def users(store):
    return {
        "admin": store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"]),
        "user": store.add_user(USER, "Bob", password=PASSWORD, roles=["user"]),
    }


def make_app(store, **config):
    return create_app(store, {"TESTING": True, **config})


@pytest.fixture
def app(store, users):
    return make_app(store)


def client_at(app, address: str = "127.0.0.1"):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sign_in(client, email=ADMIN, password=PASSWORD, **extra):
    token = CSRF_FIELD.search(client.get("/login").get_data(as_text=True)).group(1)
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token, **extra}
    )


def signed_in(app, email=ADMIN, password=PASSWORD, address="127.0.0.1", **extra):
    client = client_at(app, address)
    assert sign_in(client, email, password, **extra).status_code == 303
    return client


def csrf(client) -> str:
    return CSRF_META.search(client.get("/me").get_data(as_text=True)).group(1)


def is_signed_in(client) -> bool:
    return client.get("/api/v1/meta").status_code == 200


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    return response.get_json()


def cli_url(database) -> str:
    """The database URL for the xrm command (a PostgreSQL test schema in the URL)."""
    options = database.engine_options.get("connect_args", {}).get("options")
    if not options:
        return database.url
    return f"{database.url}{'&' if '?' in database.url else '?'}options={quote(options)}"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ 7. API tokens
def test_tokens_are_listed_and_revoked_by_the_command(database, store, users, capsys):
    url = cli_url(database)
    assert main(["token", "create", ADMIN, "--name", "ci", "--database", url]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["token", "create", USER, "--expires", "30d", "--database", url]) == 0
    captured = capsys.readouterr()
    second = captured.out.strip()
    assert "it expires" in captured.err

    assert main(["token", "list", USER, "--database", url]) == 0
    listing = capsys.readouterr().out
    assert USER in listing and ADMIN not in listing
    assert second[:10] + "…" in listing and second not in listing  # a prefix, never the secret
    assert main(["token", "list", "--all", "--database", url]) == 0
    everyone = capsys.readouterr().out
    assert ADMIN in everyone and USER in everyone and " ci" in everyone
    assert first not in everyone and second not in everyone
    assert main(["token", "list", "--database", url]) == 2
    assert "--all" in capsys.readouterr().err

    token_id = store.tokens(users["admin"])[0].id
    app = make_app(store)
    assert app.test_client().get("/api/v1/meta", headers=bearer(first)).status_code == 200
    assert main(["token", "revoke", str(token_id), "--database", url]) == 0
    assert f"token {token_id} revoked" in capsys.readouterr().out
    refused = problem(app.test_client().get("/api/v1/meta", headers=bearer(first)), 401)
    assert refused["detail"] == "the token was revoked"
    assert main(["token", "list", ADMIN, "--database", url]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "999999", "--database", url]) == 1
    assert "no token with id 999999" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["30d", "12h", "2w", "2099-01-31", "2099-01-31T12:00:00+02:00"])
def test_expiry_takes_a_span_or_a_date(database, store, users, capsys, value):
    assert main(["token", "create", USER, "--expires", value, "--database", cli_url(database)]) == 0
    capsys.readouterr()
    (row,) = store.tokens(users["user"])
    assert row.expires_at > store.clock.now()


@pytest.mark.parametrize("value", ["soon", "0d", "2001-01-01", "30x"])
def test_a_bad_or_past_expiry_is_refused(database, store, users, capsys, value):
    assert main(["token", "create", USER, "--expires", value, "--database", cli_url(database)]) == 2
    assert "--expires" in capsys.readouterr().err
    assert store.tokens() == []


def test_an_expired_token_gets_a_401_problem(app, store, users, clock):
    token = store.create_token(users["user"], expires_at=clock.now() + dt.timedelta(hours=1))
    client = app.test_client()
    assert client.get("/api/v1/meta", headers=bearer(token)).status_code == 200
    (row,) = store.tokens(users["user"])
    assert row.last_used_at == clock.now()  # last use is kept (at most every 15 minutes)
    clock.advance(hours=1)
    response = client.get("/api/v1/meta", headers=bearer(token))
    assert problem(response, 401)["detail"] == "the token has expired"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert store.user_for_token(token) is None


def test_the_admin_page_lists_tokens_without_secrets_and_revokes(app, store, users, clock):
    token = store.create_token(
        users["user"], "reporting", expires_at=clock.now() + dt.timedelta(days=7)
    )
    (row,) = store.tokens()
    admin = signed_in(app)
    page = admin.get("/admin/tokens")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert token not in html and token[:10] + "…" in html
    assert USER in html and "reporting" in html
    assert f'action="/admin/tokens/{row.id}/revoke"' in html
    assert admin.post(f"/admin/tokens/{row.id}/revoke").status_code == 400  # no CSRF token
    assert store.user_for_token(token) is not None
    done = admin.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": csrf(admin)})
    assert done.status_code == 303 and done.headers["Location"] == "/admin/tokens"
    assert store.user_for_token(token) is None
    assert "Revoked" in admin.get("/admin/tokens").get_data(as_text=True)
    missing = admin.post("/admin/tokens/999999/revoke", data={"csrf_token": csrf(admin)})
    assert missing.status_code == 404
    someone = signed_in(app, USER)
    assert someone.get("/admin/tokens").status_code == 403


# ------------------------------------------------------------------ 7. sessions
def test_signing_out_ends_every_copy_of_the_session(app):
    browser = signed_in(app, remember="y")
    stolen = app.test_client()  # a copy of the cookies, made before the sign-out
    for cookie in browser._cookies.values():
        stolen.set_cookie(cookie.key, cookie.value)
    remembered = app.test_client()  # only the remember-me cookie
    remembered.set_cookie("xrm_remember", browser.get_cookie("xrm_remember").value)
    assert is_signed_in(stolen) and is_signed_in(remembered)
    token = CSRF_FIELD.search(browser.get("/logout").get_data(as_text=True)).group(1)
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 303
    assert not is_signed_in(browser)
    assert not is_signed_in(stolen)
    assert not is_signed_in(remembered)
    assert stolen.get("/").status_code == 302  # the UI sends it to the sign-in page
    assert is_signed_in(signed_in(app))  # signing in again works


def test_a_new_password_ends_the_other_sessions_and_keeps_this_one(app, store, users):
    here = signed_in(app)
    elsewhere = signed_in(app, address="10.0.0.9")
    victim = signed_in(app, USER)
    page = here.post(
        f"/admin/users/{users['admin']}",
        data={
            "csrf_token": csrf(here),
            "password": "a fresh passphrase",
            "roles": ["administrator"],
        },
    )
    assert page.status_code == 303
    assert is_signed_in(here)  # re-issued in the new generation
    assert not is_signed_in(elsewhere)
    assert is_signed_in(victim)  # another user's session is not touched
    changed = here.post(
        f"/admin/users/{users['user']}",
        data={
            "csrf_token": csrf(here),
            "password": "his new passphrase",
            "roles": ["user"],
            "active": "1",
        },
    )
    assert changed.status_code == 303
    assert not is_signed_in(victim)
    assert sign_in(client_at(app), USER, "his new passphrase").status_code == 303


def test_users_change_their_own_password(app, store, users):
    me = signed_in(app, USER)
    other = signed_in(app, USER, address="10.0.0.9")
    assert "Change password" in me.get("/me").get_data(as_text=True)

    def change(current, new, again=None):
        response = me.post(
            "/me/password",
            data={
                "csrf_token": csrf(me),
                "current_password": current,
                "new_password": new,
                "new_password_again": new if again is None else again,
            },
        )
        assert response.status_code == 303 and response.headers["Location"] == "/me"
        return me.get("/me").get_data(as_text=True)

    assert "The current password is not right." in change("wrong guess", "a fresh passphrase")
    assert "The two new passwords differ." in change(PASSWORD, "a fresh passphrase", "other")
    refused = change(PASSWORD, "bob")
    assert "at least 10 characters" in refused and "before the @" in refused
    assert is_signed_in(other)
    assert "Password changed." in change(PASSWORD, "a fresh passphrase")
    assert is_signed_in(me)
    assert not is_signed_in(other)
    assert store.check_password(USER, "a fresh passphrase") is not None


def test_an_existing_database_gains_the_new_columns(database, store, users):
    token = store.create_token(users["user"])
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE xrm_user DROP COLUMN session_generation"))
        conn.execute(sa.text("ALTER TABLE xrm_token DROP COLUMN expires_at"))
        conn.execute(sa.text("ALTER TABLE xrm_token DROP COLUMN prefix"))
    store.close()
    reopened = database.open()
    try:
        columns = {c["name"] for c in sa.inspect(reopened.engine).get_columns("xrm_user")}
        assert "session_generation" in columns
        assert reopened.user_for_token(token).email == USER
        assert reopened.tokens()[0].prefix is None  # made before prefixes were kept
        assert is_signed_in(signed_in(make_app(reopened), USER))
    finally:
        reopened.close()


# ------------------------------------------------------------------ 8. open redirects
BYPASSES = [
    "//evil.example/",
    "///evil.example",
    "////evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%0D%0A/evil.example",
    "/%20/evil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%5c%5cevil.example",
    "/%252F%252Fevil.example",
    "/%E3%80%80/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/ /evil.example",
    " //evil.example",
    "/\u3000/evil.example",
    "/\x00/evil.example",
    "%2F%2Fevil.example",
    "https://evil.example/",
    "http:evil.example",
    "http:/evil.example",
    "HTTPS://evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "",
]
LOCAL = [
    "/",
    "/me",
    "/admin/processes/deal_review",
    "/views/all?q=a%20b&sort=-name",
    "/r/account/5",
]


@pytest.mark.parametrize("target", BYPASSES)
def test_safe_next_refuses_every_known_bypass(target):
    assert safe_next(target) is None


@pytest.mark.parametrize("target", LOCAL)
def test_safe_next_keeps_paths_on_this_site(target):
    assert safe_next(target) == target


@pytest.mark.parametrize("target", BYPASSES)
def test_sign_in_and_preferences_never_send_a_browser_off_site(app, target):
    client = client_at(app)
    response = sign_in(client, next=target)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    saved = client.post("/preferences", data={"csrf_token": csrf(client), "next": target})
    assert saved.status_code == 303 and saved.headers["Location"] == "/"


def test_save_and_close_goes_back_only_on_this_site(app):
    client = signed_in(app)
    for target, expected in (("/%09/evil.example", "/views/all_accounts"), ("/me", "/me")):
        saved = client.post(
            "/r/account/new",
            data=MultiDict(
                [
                    ("csrf_token", csrf(client)),
                    ("_fields", "name"),
                    ("name", "Acme"),
                    ("next", target),
                    ("_close", "1"),
                ]
            ),
        )
        assert saved.status_code == 303
        assert saved.headers["Location"].startswith(expected)


# ------------------------------------------------------------------ 9. sign-in timing
def test_unknown_and_inactive_emails_cost_one_hash_like_a_wrong_password(
    app, store, users, monkeypatch
):
    store.set_active(users["user"], False)
    calls: list[str] = []
    real = werkzeug.security._hash_internal

    def counting(method, salt, password):
        calls.append(method)
        return real(method, salt, password)

    monkeypatch.setattr(werkzeug.security, "_hash_internal", counting)
    work = {}
    for case, email in (
        ("wrong password", ADMIN),
        ("unknown", "nobody@example.com"),
        ("inactive", USER),
    ):
        calls.clear()
        assert sign_in(client_at(app), email, "not the password").status_code == 200
        work[case] = list(calls)
    stored = store.user_by_email(ADMIN).password_hash.split("$")[0]
    assert work == {case: [stored] for case in work}, work


def test_passwords_are_stored_with_strong_scrypt_unless_the_process_says_otherwise(
    monkeypatch,
):
    from xrm.storage.users import hash_password

    monkeypatch.delenv("XRM_PASSWORD_HASH", raising=False)
    assert hash_password("a long passphrase").startswith("scrypt:32768:8:1$")
    # the suite's cheap method (tests/conftest.py) applies only where it is set
    monkeypatch.setenv("XRM_PASSWORD_HASH", "scrypt:1024:8:1")
    stored = hash_password("a long passphrase")
    assert stored.startswith("scrypt:1024:8:1$")
    assert werkzeug.security.check_password_hash(stored, "a long passphrase")


# ------------------------------------------------------------------ 9. the throttle
def test_after_free_failures_each_failure_doubles_the_wait(store, users, clock):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=3, XRM_LOGIN_MAX_WAIT=4)
    client = client_at(app)
    for _ in range(3):
        assert sign_in(client, password="guess").status_code == 200
    for expected in (1, 2, 4, 4):
        refused = sign_in(client, password="guess")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == str(expected)
        assert f"Try again in {expected} seconds" in refused.get_data(as_text=True)
        assert sign_in(client).status_code == 429  # even the right password waits
        clock.advance(seconds=expected)
        assert sign_in(client, password="guess").status_code == 200  # considered, and failed


def test_a_guesser_elsewhere_never_slows_the_owner(store, users, clock):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=3)
    attacker = client_at(app, "203.0.113.7")
    statuses = set()
    for _ in range(40):
        statuses.add(sign_in(attacker, password="guess").status_code)
        clock.advance(seconds=1)
    assert statuses == {200, 429}
    assert sign_in(client_at(app, "198.51.100.2")).status_code == 303


def test_a_success_clears_the_account_count_but_not_the_address_count(store, users, clock):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=2, XRM_LOGIN_ADDRESS_FREE_FAILURES=4)
    client = client_at(app)
    for _ in range(2):
        sign_in(client, password="guess")
    assert sign_in(client).status_code == 429
    clock.advance(seconds=1)
    assert sign_in(client).status_code == 303
    assert sign_in(client_at(app), password="guess").status_code == 200  # counts from zero
    # the address has failed 3 times in all; one more and it waits, whatever the account
    assert sign_in(client_at(app), USER, "guess").status_code == 200
    assert sign_in(client_at(app), USER).status_code == 429


def test_counts_are_forgotten_after_a_quiet_while(store, users, clock):
    app = make_app(store, XRM_LOGIN_FREE_FAILURES=2, XRM_LOGIN_FORGET_AFTER=600)
    client = client_at(app)
    for _ in range(2):
        sign_in(client, password="guess")
    assert sign_in(client, password="guess").status_code == 429
    clock.advance(seconds=601)
    assert sign_in(client, password="guess").status_code == 200  # the first of a new count
    assert sign_in(client, password="guess").status_code == 200
    with store.engine.connect() as conn:
        failures = conn.execute(sa.select(T.login_failures.c.failures)).scalars().all()
    assert max(failures) == 2


def test_workers_share_the_counts_in_the_database(store, users):
    first, second = (make_app(store, XRM_LOGIN_FREE_FAILURES=2) for _ in range(2))
    sign_in(client_at(first), password="guess")
    sign_in(client_at(second), password="guess")
    assert sign_in(client_at(first)).status_code == 429
    assert sign_in(client_at(second)).status_code == 429


def test_workers_share_the_counts_in_redis(store, users):
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"xrm-test-{uuid.uuid4().hex}"
    config = {"XRM_LOGIN_FREE_FAILURES": 2, "XRM_REDIS_URL": url, "XRM_REDIS_PREFIX": prefix}
    first, second = (make_app(store, **config) for _ in range(2))
    try:
        sign_in(client_at(first), password="guess")
        sign_in(client_at(second), password="guess")
        refused = sign_in(client_at(first))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert sign_in(client_at(second, "198.51.100.2")).status_code == 303
        with store.engine.connect() as conn:  # nothing went to the database
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(T.login_failures)).scalar() == 0
            )
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


# ------------------------------------------------------------------ 11. password policy
@pytest.mark.parametrize(
    "password, email, message",
    [
        ("short1!", "ann@example.com", "at least 10 characters"),
        ("Password2024!", "ann@example.com", "too common"),
        ("qwertyuiop", "ann@example.com", "too common"),
        ("margaret-1960-x", "margaret@example.com", "before the @"),
        ("MARGARET", "margaret@example.com", "before the @"),
        ("x" * 1025, "ann@example.com", "at most 1024 characters"),
    ],
)
def test_the_policy_names_each_rule_broken(password, email, message):
    problems = PasswordPolicy().problems(password, email)
    assert any(message in p for p in problems), problems


def test_the_policy_accepts_a_decent_password():
    assert PasswordPolicy().problems("correct horse battery", "ann@example.com") == []
    assert PasswordPolicy().problems("ann-is-short", "an@example.com") == []  # 2 letters: chance


def test_the_policy_is_configured_in_the_settings(store, users):
    store.save_settings({"password_min_length": 14, "password_deny": ["Acme Rocks Forever"]})
    with pytest.raises(PasswordRejected) as refused:
        store.add_user("cy@example.com", password="thirteen char")
    assert refused.value.problems == ["the password needs at least 14 characters"]
    with pytest.raises(PasswordRejected, match="too common"):
        store.set_password(users["user"], "acme rocks forever!")
    assert store.check_password(USER, PASSWORD) is not None  # unchanged


@pytest.mark.parametrize("length", [10, 24, 64])
def test_generated_passwords_pass_their_policy(length):
    policy = PasswordPolicy(min_length=length)
    for _ in range(20):
        assert policy.problems(policy.generate("admin@example.com"), "admin@example.com") == []


def test_the_commands_apply_the_policy(database, capsys):
    url = cli_url(database)
    assert main(["setup", "--database", url, "--admin-password", "admin-2024"]) == 2
    assert "before the @" in capsys.readouterr().err
    assert (
        main(
            [
                "setup",
                "--database",
                url,
                "--password-min-length",
                "16",
                "--password-deny",
                "letmein please",
            ]
        )
        == 0
    )
    generated = capsys.readouterr().out.split("password: ")[1].split()[0]
    assert len(generated) >= 16
    assert (
        main(["user", "add", "eve@example.com", "--password", "fifteen chars!!", "--database", url])
        == 1
    )
    assert "at least 16 characters" in capsys.readouterr().err
    assert (
        main(["user", "add", "eve@example.com", "--password", "Letmein Please", "--database", url])
        == 1
    )
    assert "too common" in capsys.readouterr().err
    assert (
        main(
            ["user", "add", "eve@example.com", "--password", "sixteen chars ok", "--database", url]
        )
        == 0
    )


def test_the_people_pages_apply_the_policy(app, store, users):
    admin = signed_in(app)
    added = admin.post(
        "/admin/users",
        data={"csrf_token": csrf(admin), "email": "dan@example.com", "password": "dan12345"},
        follow_redirects=True,
    )
    html = added.get_data(as_text=True)
    assert "at least 10 characters" in html and "before the @" in html
    assert store.user_by_email("dan@example.com") is None
    changed = admin.post(
        f"/admin/users/{users['user']}",
        data={"csrf_token": csrf(admin), "password": "password123", "roles": ["administrator"]},
        follow_redirects=True,
    )
    assert "too common" in changed.get_data(as_text=True)
    assert store.user_roles()[users["user"]] == ["user"]  # nothing else changed either
    assert store.check_password(USER, PASSWORD) is not None


def test_policy_messages_in_russian(app, store, users):
    store.set_preferences(users["admin"], locale="ru")
    admin = signed_in(app)
    added = admin.post(
        "/admin/users",
        data={"csrf_token": csrf(admin), "email": "dan@example.com", "password": "short"},
        follow_redirects=True,
    )
    assert "пароль должен быть не короче 10 символов" in added.get_data(as_text=True)


# ------------------------------------------------------------------ 16. webhooks
@pytest.fixture
def hooks_app(database, tmp_path):
    pack = write_pack(
        tmp_path,
        "inbound",
        {
            "processes/by_url.yaml": (
                f'process: by_url\non: {{webhook: {{secret: "{URL_SECRET}"}}}}\nsteps:\n  - stop: true\n'
            ),
            "processes/signed.yaml": (
                f'process: signed\non: {{webhook: {{secret: "{HMAC_SECRET}", signature: hmac}}}}\n'
                "steps:\n  - stop: true\n"
            ),
        },
        depends={"core": ">=1.0"},
    )
    opened = database.open()
    opened.install([SOLUTIONS / "core", pack])
    yield make_app(opened)
    opened.close()


def test_url_secrets_stay_out_of_problem_documents(hooks_app):
    client = hooks_app.test_client()
    for path, status in (
        (f"/hooks/by_url/{URL_SECRET}x", 403),  # a wrong secret (maybe a near miss)
        (f"/hooks/by_url/{URL_SECRET}", 400),  # the right one, a body that is not JSON
        (f"/hooks/signed/{HMAC_SECRET}", 404),  # sent to the wrong route
        (f"/hooks/by_url/{URL_SECRET}/more", 404),
    ):
        response = client.post(path, data=b"{not json")
        body = problem(response, status)
        assert URL_SECRET not in response.get_data(as_text=True)
        assert HMAC_SECRET not in response.get_data(as_text=True)
        assert body["instance"].endswith("/[redacted]")


def test_the_access_log_masks_url_secrets():
    from gunicorn.config import Config

    from xrm.web.server import RedactingLogger

    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/hooks/by_url/{URL_SECRET}?x=1",
        "PATH_INFO": f"/hooks/by_url/{URL_SECRET}",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "HTTP_REFERER": f"https://erp.example/hooks/by_url/{URL_SECRET}",
    }
    response = type("Response", (), {"status": "202 Accepted", "headers": [], "sent": 14})()
    request = type("Request", (), {"headers": [("Referer", environ["HTTP_REFERER"])]})()
    atoms = RedactingLogger(Config()).atoms(response, request, environ, dt.timedelta(seconds=0.01))
    assert atoms["r"] == "POST /hooks/by_url/[redacted] HTTP/1.1"
    assert atoms["U"] == "/hooks/by_url/[redacted]"
    assert not [k for k, v in atoms.items() if isinstance(v, str) and URL_SECRET in v]
    assert redact("/hooks/signed") == "/hooks/signed"  # nothing secret in a signed route
    assert redact("/api/v1/hooks/x/y") == "/api/v1/hooks/x/y"


def test_xrm_run_logs_through_the_masking_logger(monkeypatch, tmp_path):
    from xrm.web import server

    monkeypatch.setenv("XRM_INSTANCE_PATH", str(tmp_path))
    seen = {}
    monkeypatch.setattr(server.XrmServer, "run", lambda self: seen.update(self.options))
    server.serve(database_url="sqlite://")
    assert seen["logger_class"] is server.RedactingLogger


def test_a_signature_is_accepted_once(hooks_app, database):
    other_worker = make_app(hooks_app.extensions["xrm"])
    body = json.dumps({"order": 1042}).encode()
    signature = sign(HMAC_SECRET, body, int(time.time()))
    headers = {"X-XRM-Signature": signature}
    first = hooks_app.test_client().post("/hooks/signed", data=body, headers=headers)
    assert first.status_code == 202
    for app in (hooks_app, other_worker):
        replay = problem(app.test_client().post("/hooks/signed", data=body, headers=headers), 403)
        assert "used already" in replay["detail"]
    fresh = {"X-XRM-Signature": sign(HMAC_SECRET, body, int(time.time()) + 1)}
    assert (
        other_worker.test_client().post("/hooks/signed", data=body, headers=fresh).status_code
        == 202
    )


def test_a_retry_with_its_idempotency_key_is_answered_not_refused(hooks_app):
    body = b"{}"
    headers = {
        "X-XRM-Signature": sign(HMAC_SECRET, body, int(time.time())),
        "Idempotency-Key": "k-1",
    }
    client = hooks_app.test_client()
    first = client.post("/hooks/signed", data=body, headers=headers)
    again = client.post("/hooks/signed", data=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    other_key = {**headers, "Idempotency-Key": "k-2"}
    assert problem(client.post("/hooks/signed", data=body, headers=other_key), 403)


def test_remembered_signatures_are_purged_once_they_expire(hooks_app):
    store = hooks_app.extensions["xrm"]
    table = T.hook_signatures
    with store.engine.begin() as conn:
        conn.execute(
            table.insert().values(
                process="signed",
                signature="0" * 64,
                expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            )
        )
    body = b"{}"
    headers = {"X-XRM-Signature": sign(HMAC_SECRET, body, int(time.time()))}
    assert (
        hooks_app.test_client().post("/hooks/signed", data=body, headers=headers).status_code == 202
    )
    with store.engine.connect() as conn:
        kept = conn.execute(sa.select(table.c.signature)).scalars().all()
    assert kept == [headers["X-XRM-Signature"].split("v1=")[1]]


# ------------------------------------------------------------------ 17. headers
def _policy(response) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return {p.split()[0]: p.partition(" ")[2] for p in (d.strip() for d in header.split(";")) if p}


def test_pages_carry_a_content_security_policy(app, store, users):
    client = signed_in(app)
    for path in ("/login", "/", "/me", "/admin/", "/admin/tokens", "/admin/users", "/api/docs"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "text/html", path
        policy = _policy(response)
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        html = response.get_data(as_text=True)
        # nothing inline the policy would refuse
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path
        nonce = re.search(r"'nonce-([^']+)'", policy["style-src"])
        if 'name="trix-csp-nonce"' in html:
            assert f'name="trix-csp-nonce" content="{nonce.group(1)}"' in html


def test_each_page_gets_its_own_nonce(app):
    first, second = (app.test_client().get("/login") for _ in range(2))
    assert _policy(first)["style-src"] != _policy(second)["style-src"]


def test_signed_in_answers_and_downloads_are_not_stored(app, store, users):
    from xrm.storage.files import put_file

    client = signed_in(app)
    key = put_file(store, b"numbers", "report.txt", "text/plain", users["admin"])["key"]
    for path in (
        "/",
        "/admin/tokens",
        "/api/v1/meta",
        f"/files/{key}",
        "/views/all_accounts/export.csv",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    download = client.get(f"/files/{key}")
    assert _policy(download) == {
        "default-src": "'none'",
        "frame-ancestors": "'none'",
        "sandbox": "",
    }
    static = client.get("/static/css/app.css")
    assert "no-store" not in static.headers.get("Cache-Control", "")
    static.close()
