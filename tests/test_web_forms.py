"""Public web forms (``web_forms/*.yaml``, ``/f/<name>``): the definition's messages at
their lines, and the public endpoint through the real WSGI app on a real store (SQLite,
and PostgreSQL when configured): the page in the visitor's language, a submission creating
a lead as the form's user that the shipped process assigns to the sales team, the spam
protection (honeypot, the signed token's age, the rate limit, the origin, a captcha),
values kept beside their errors, fields not on the form never written, CORS for the
allowed origins only, JSON posts, the CSRF guard letting these routes alone through, and
the administration page."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app, opened
from conftest import SOLUTIONS, write_pack
from werkzeug.datastructures import MultiDict

from xrm.cli import main
from xrm.metadata.web_forms import captchas
from xrm.web.public_forms import form_token
from xrm.workflow import Worker

SECRET = "web-forms-tests"
ADMIN = "admin@example.com"
SUBMITTER = "web-forms@example.com"
SELLER = "seller@example.com"
PARTNERS = "https://partners.example.org"

PROBE = {
    "web_forms/probe.yaml": """\
web_forms:
  partner_request:
    entity: lead
    label: {en: Partner request, ru: Заявка партнёра}
    title: {en: Become a partner, ru: Станьте партнёром}
    fields:
      - last_name
      - {field: email, required: true}
      - employees
      - industry
      - {field: description, label: {en: Message, ru: Сообщение}}
    values: {source: partner, source_details: Partner page}
    submit_as: web-forms@example.com
    success: {redirect: "https://partners.example.org/thanks"}
    allowed_origins: ["https://partners.example.org"]
    rate_limit: 3/hour
  guarded:
    entity: lead
    fields: [last_name]
    submit_as: web-forms@example.com
    captcha: probe_sum
  orphan:
    entity: lead
    fields: [last_name]
    submit_as: nobody@example.com
  retired:
    entity: lead
    fields: [last_name]
    submit_as: web-forms@example.com
    enabled: false
"""
}

BAD = """\
web_forms:
  broken:
    entity: leed
    fields: [last_name]
    rate_limit: 10 per fortnight
    allowed_origins: [https://example.com/path]
    submit_as: forms
  wrong:
    entity: lead
    fields:
      - first_name
      - nme
      - full_name
      - converted_account
      - {field: owner}
      - first_name
      - {field: tags, required: true}
    values: {source: web, qualified_at: "2024-01-01T00:00:00Z", first_name: Jo}
    submit_as: forms@example.com
    success: {redirect: partners.example.org}
"""


class ProbeSum:
    """A captcha verifier for the tests: the answer is 42 (no network)."""

    def verify(self, posted, address):
        return posted.get("probe_answer") == "42"

    def widget(self, locale):
        return '<label for="probe">6 × 7</label><input id="probe" name="probe_answer">'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web_forms")
    probe = write_pack(tmp, "probe", PROBE, {"sales": ">=1.0"})
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales", probe]) as store:
        store.admin = store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"])
        store.submitter = store.add_user(SUBMITTER, "Web", roles=["web_form_submitter"])
        store.seller = store.add_user(
            SELLER, "Sam", password=PASSWORD, roles=["user"], teams=["sales"]
        )
        store.app = make_app(store, SECRET_KEY=SECRET, RATELIMIT_ENABLED=True)
        captchas.register("probe_sum", ProbeSum())
        try:
            yield store
        finally:
            captchas.unregister("probe_sum")


@pytest.fixture
def visitor(site):
    """A client from an address of its own (the rate limit counts per address)."""
    client = site.app.test_client()
    # one address per test, never shared: a hash of the test's name could give two tests
    # the same address (hashes differ per process), and one's posts then counted against the
    # other's limit
    client.environ_base["REMOTE_ADDR"] = f"198.51.100.{next(_ADDRESSES)}"
    return client


_ADDRESSES = itertools.count(1)


def token(name: str, age: float = 10.0) -> str:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    return form_token(SECRET, name, issued)


def leads(store, **where) -> list[dict]:
    rows = store.records("lead").query().rows
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def counter(store, name: str, outcome: str) -> int:
    from xrm.storage import tables as T

    with store.engine.connect() as conn:
        value = conn.execute(
            sa.select(T.counters.c.value).where(T.counters.c.key == f"web_form:{name}:{outcome}")
        ).scalar()
    return int(value or 0)


def text(response) -> str:
    return response.get_data(as_text=True)


# ---------------------------------------------------------------------------- definitions
def test_the_checker_names_every_mistake_at_its_line(tmp_path, capsys):
    pack = write_pack(tmp_path, "bad", {"web_forms/bad.yaml": BAD}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    lines = capsys.readouterr().out.splitlines()
    where = "bad/web_forms/bad.yaml"
    expected = [
        f"{where}:3:13: web_forms.broken: unknown entity 'leed'; did you mean 'lead'?",
        f"{where}:5:17: web_forms.broken: rate_limit: expected submissions per second, minute,"
        " hour or day, such as 10/hour (got '10 per fortnight')",
        f"{where}:6:23: web_forms.broken: allowed_origins: 'https://example.com/path' is not an"
        " origin",
        f"{where}:7:16: web_forms.broken: submit_as: expected the email of a user (got 'forms')",
        f"{where}:20:25: web_forms.wrong: success.redirect: expected an http(s) address",
        f"{where}:10:5: web_forms.wrong: lead requires last_name: put it on the form or in values",
        f"{where}:12:9: web_forms.wrong: lead has no field 'nme'",
        f"{where}:13:9: web_forms.wrong: field 'full_name' is computed: nobody sets it",
        f"{where}:14:9: web_forms.wrong: field 'converted_account' is read-only",
        f"{where}:15:17: web_forms.wrong: 'owner' is a system field: a visitor may not set it",
        f"{where}:16:9: web_forms.wrong: field 'first_name' is on the form twice",
        f"{where}:17:17: web_forms.wrong: field 'tags' is a tags field, which a public form"
        " cannot offer",
        f"{where}:18:22: web_forms.wrong: values.source: 'web' is not an option",
        f"{where}:18:27: web_forms.wrong: field 'qualified_at' is read-only: a form may not set it",
        f"{where}:18:65: web_forms.wrong: field 'first_name' is on the form and in values",
    ]
    problems = [line for line in lines if "web_forms." in line]
    for line in expected:
        assert any(line in got for got in problems), (line, problems)
    assert len(problems) == len(expected), problems


def test_the_shipped_form_and_its_process_compile(site):
    catalog = site.catalog
    form = catalog.web_forms["web_to_lead"]
    assert form.entity == "lead" and dict(form.values)["source"] == "web_form"
    assert [f.name for f in form.fields] == [
        "first_name",
        "last_name",
        "company",
        "email",
        "phone",
        "description",
    ]
    assert "web_lead_assignment" in catalog.processes
    process = catalog.processes["web_lead_assignment"]
    assert process.entity == "lead"


# ---------------------------------------------------------------------------- the page
def test_the_page_is_standalone_in_the_visitors_language(site, visitor):
    response = visitor.get("/f/web_to_lead", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert response.status_code == 200
    page = text(response)
    assert '<html lang="ru">' in page
    assert "Свяжитесь с нами" in page and "Сообщение" in page and "Отправить" in page
    assert 'name="_token"' in page and 'name="_website"' in page  # token and honeypot
    assert 'for="f-email"' in page and 'id="f-email"' in page  # labelled inputs
    assert "csrf_token" not in page and "navbar" not in page  # no session, no app chrome
    english = text(visitor.get("/f/web_to_lead", headers={"Accept-Language": "de, en;q=0.5"}))
    assert '<html lang="en">' in english and "Get in touch" in english
    chosen = text(visitor.get("/f/web_to_lead?lang=ru&embed=1"))
    assert '<html lang="ru">' in chosen  # the embedding page's language wins
    assert 'action="/f/web_to_lead?embed=1&amp;lang=ru"' in chosen  # and the answer keeps it
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in policy and "script-src 'self'" in policy
    assert "X-Frame-Options" not in response.headers


def test_unknown_and_disabled_forms_are_not_found(site, visitor):
    assert visitor.get("/f/nope").status_code == 404
    assert visitor.get("/f/retired").status_code == 404
    assert visitor.post("/f/retired", data={"_token": token("retired")}).status_code == 404
    assert visitor.get("/f/retired/embed.js").status_code == 404
    assert not leads(site, last_name="Retired")


def test_a_form_whose_user_is_missing_says_so_to_the_administrator_only(site, visitor):
    response = visitor.get("/f/orphan")
    assert response.status_code == 503
    assert "cannot take submissions right now" in text(response)
    assert "nobody@example.com" not in text(response)
    posted = visitor.post("/f/orphan", data={"_token": token("orphan"), "last_name": "Orphan"})
    assert posted.status_code == 503 and not leads(site, last_name="Orphan")
    admin = Client(site.app).login(ADMIN)
    page = text(admin.get("/f/orphan"))
    assert "there is no user nobody@example.com" in page


# ---------------------------------------------------------------------------- submissions
def test_a_submission_creates_a_lead_that_the_process_assigns(site, visitor):
    before = counter(site, "web_to_lead", "accepted")
    response = visitor.post(
        "/f/web_to_lead",
        data={
            "_token": token("web_to_lead"),
            "_website": "",
            "first_name": "Vera",
            "last_name": "Visitor",
            "company": "Visitor & Co",
            "email": "vera@visitor.example",
            "phone": "+1 202 555 0143",
            "description": "We need 20 seats.",
        },
    )
    assert response.status_code == 200, text(response)[:2000]
    assert "Thank you! We have your request" in text(response)
    (lead,) = leads(site, last_name="Visitor")
    assert lead["source"] == "web_form" and lead["source_details"] == "Web-to-lead form"
    assert lead["created_by"] == site.submitter and lead["owner"] == site.submitter
    assert lead["description"] == "We need 20 seats." and lead["company"] == "Visitor & Co"
    assert counter(site, "web_to_lead", "accepted") == before + 1
    Worker(site).run_once()
    (lead,) = leads(site, last_name="Visitor")
    assert lead["owner"] == site.seller  # the only member of the sales team


def test_fields_not_on_the_form_are_never_written(site, visitor):
    response = visitor.post(
        "/f/web_to_lead",
        data={
            "_token": token("web_to_lead"),
            "last_name": "Sneaky",
            "email": "sneaky@example.com",
            "status": "qualified",
            "rating": "hot",
            "source": "email",
            "owner": str(site.admin),
            "qualified_at": "2024-01-01T00:00:00Z",
        },
    )
    assert response.status_code == 200
    (lead,) = leads(site, last_name="Sneaky")
    assert lead["status"] == "new" and lead["rating"] is None
    assert lead["source"] == "web_form" and lead["owner"] in (site.submitter, site.seller)
    assert lead["qualified_at"] is None


def test_errors_are_shown_in_place_and_the_values_kept(site, visitor):
    response = visitor.post(
        "/f/web_to_lead",
        data={
            "_token": token("web_to_lead"),
            "first_name": "Kept",
            "last_name": "",
            "company": "Keepers <Ltd>",
            "email": "not-an-address",
        },
    )
    assert response.status_code == 422
    page = text(response)
    assert re.search(r'id="e-last_name">required<', page)
    assert re.search(r'id="e-email">not a valid email address', page)
    assert 'aria-invalid="true"' in page and 'aria-describedby="e-email"' in page
    assert 'value="Kept"' in page and 'value="not-an-address"' in page
    assert 'value="Keepers &lt;Ltd&gt;"' in page  # kept, and escaped
    assert not leads(site, first_name="Kept")
    russian = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "Kept", "email": "nope"},
        headers={"Accept-Language": "ru"},
    )
    assert "неверный адрес эл. почты" in text(russian) and not leads(site, last_name="Kept")


def test_the_records_service_validates_as_for_any_create(site, visitor):
    response = visitor.post(
        "/f/partner_request",
        data={
            "_token": token("partner_request"),
            "last_name": "Numbers",
            "email": "n@example.com",
            "employees": "many",
            "industry": "no_such_industry",
        },
    )
    assert response.status_code == 422
    page = text(response)
    assert re.search(r'id="e-employees">expected a whole number', page)
    assert re.search(r'id="e-industry">&#39;no_such_industry&#39; is not an option', page)
    assert not leads(site, last_name="Numbers")


def test_hostile_values_are_refused_without_a_server_error(site, visitor):
    nul = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "Nul\x00Byte", "email": "n@x.io"},
    )
    assert nul.status_code == 422 and "cannot contain NUL" in text(nul)
    twice = visitor.post(
        "/f/web_to_lead",
        data=MultiDict([("_token", token("web_to_lead")), ("_token", "x"), ("last_name", "Twice")]),
    )
    assert twice.status_code == 400 and not leads(site, last_name="Twice")
    nested = visitor.post(
        "/f/web_to_lead",
        json={"_token": token("web_to_lead"), "last_name": {"a": 1}, "email": "n@x.io"},
        headers={"Accept": "application/json"},
    )
    assert nested.status_code == 422
    assert nested.get_json()["errors"]["last_name"] == ["expected text"]
    listed = visitor.post("/f/web_to_lead", json=["not", "an", "object"])
    assert listed.status_code == 400
    long = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "L" * 101, "email": "l@x.io"},
    )
    assert long.status_code == 422 and "at most 100 characters" in text(long)


# ---------------------------------------------------------------------------- spam
def test_a_filled_honeypot_is_answered_like_a_success_and_writes_nothing(site, visitor):
    before = counter(site, "web_to_lead", "spam")
    response = visitor.post(
        "/f/web_to_lead",
        data={
            "_token": token("web_to_lead"),
            "_website": "http://spam.example",
            "last_name": "Bot",
            "email": "bot@example.com",
        },
    )
    assert response.status_code == 200 and "Thank you" in text(response)
    assert not leads(site, last_name="Bot")
    assert counter(site, "web_to_lead", "spam") == before + 1


@pytest.mark.parametrize(
    "case, make, message",
    [
        ("too fast", lambda: token("web_to_lead", age=0.5), "sent too quickly"),
        ("expired", lambda: token("web_to_lead", age=2 * 86400), "had expired"),
        (
            "forged",
            lambda: form_token(
                "another secret", "web_to_lead", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
            ),
            "could not be verified",
        ),
        ("another form", lambda: token("guarded"), "could not be verified"),
        ("missing", lambda: "", "could not be verified"),
    ],
)
def test_a_token_too_fresh_too_old_or_not_ours_is_refused(site, visitor, case, make, message):
    name = f"Token {case}"
    response = visitor.post(
        "/f/web_to_lead",
        data={"_token": make(), "last_name": name, "email": "t@example.com"},
    )
    assert response.status_code == 400, case
    page = text(response)
    assert message in page
    assert f'value="{name}"' in page  # kept, with a fresh token to send again
    assert not leads(site, last_name=name)


def test_the_rate_limit_counts_per_address(site, visitor):
    def post(client, n):
        return client.post(
            "/f/partner_request",
            data={"_token": token("partner_request"), "last_name": f"Rate {n}", "email": "r@x.io"},
        )

    for n in range(3):
        assert post(visitor, n).status_code == 303  # success redirects
    refused = post(visitor, 3)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many submissions" in text(refused)
    assert not leads(site, last_name="Rate 3")
    other = site.app.test_client()
    other.environ_base["REMOTE_ADDR"] = "203.0.113.77"
    assert post(other, 4).status_code == 303  # another address has its own budget
    assert counter(site, "partner_request", "limited") >= 1


def test_a_captcha_hook_is_asked(site, visitor):
    page = text(visitor.get("/f/guarded"))
    assert 'name="probe_answer"' in page
    wrong = visitor.post(
        "/f/guarded", data={"_token": token("guarded"), "last_name": "Robot", "probe_answer": "41"}
    )
    assert wrong.status_code == 422 and "not a robot" in text(wrong)
    assert not leads(site, last_name="Robot")
    right = visitor.post(
        "/f/guarded", data={"_token": token("guarded"), "last_name": "Human", "probe_answer": "42"}
    )
    assert right.status_code == 200 and leads(site, last_name="Human")
    captchas.unregister("probe_sum")
    try:
        assert visitor.get("/f/guarded").status_code == 503  # named but not registered
    finally:
        captchas.register("probe_sum", ProbeSum())


# ---------------------------------------------------------------------------- other sites
def test_cors_headers_only_for_allowed_origins(site, visitor):
    allowed = visitor.get(
        "/f/partner_request", headers={"Accept": "application/json", "Origin": PARTNERS}
    )
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == PARTNERS
    described = allowed.get_json()
    assert described["token_field"] == "_token" and described["token"]
    assert [f["name"] for f in described["fields"]][:2] == ["last_name", "email"]
    other = visitor.get(
        "/f/partner_request",
        headers={"Accept": "application/json", "Origin": "https://evil.example"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    own = visitor.get("/f/web_to_lead", headers={"Accept": "application/json", "Origin": PARTNERS})
    assert "Access-Control-Allow-Origin" not in own.headers  # not an origin of this form
    preflight = visitor.open(
        "/f/partner_request",
        method="OPTIONS",
        headers={"Origin": PARTNERS, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == PARTNERS
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    refused = visitor.open(
        "/f/partner_request", method="OPTIONS", headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    page = visitor.get("/f/partner_request")
    assert f"frame-ancestors 'self' {PARTNERS}" in page.headers["Content-Security-Policy"]
    assert (
        "form-action 'self' https://partners.example.org" in page.headers["Content-Security-Policy"]
    )


def test_a_post_from_a_site_not_allowed_is_refused(site, visitor):
    response = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "Elsewhere", "email": "e@x.io"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403 and not leads(site, last_name="Elsewhere")
    same_site = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "Here", "email": "h@x.io"},
        headers={"Origin": "http://localhost"},
    )
    assert same_site.status_code == 200 and leads(site, last_name="Here")


def test_json_posts_from_an_allowed_site(site, visitor):
    headers = {"Accept": "application/json", "Origin": PARTNERS}
    body = {
        "_token": token("partner_request"),
        "last_name": "Scripted",
        "email": "s@partners.example.org",
        "employees": 12,
    }
    response = visitor.post("/f/partner_request", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] == PARTNERS
    assert response.get_json()["redirect"] == "https://partners.example.org/thanks"
    (lead,) = leads(site, last_name="Scripted")
    assert lead["employees"] == 12 and lead["source"] == "partner"
    extra = visitor.post(
        "/f/partner_request",
        json={**body, "last_name": "Extra", "status": "qualified"},
        headers=headers,
    )
    assert extra.status_code == 422
    assert extra.get_json()["errors"] == {"status": ["not a field of this form"]}
    assert not leads(site, last_name="Extra")
    missing = visitor.post(
        "/f/partner_request", json={"_token": body["_token"], "email": "x"}, headers=headers
    )
    assert missing.status_code == 422 and "last_name" in missing.get_json()["errors"]


def test_embed_script_inserts_an_iframe(site, visitor):
    response = visitor.get("/f/web_to_lead/embed.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    script = text(response)
    assert 'createElement("iframe")' in script
    assert '"http://localhost/f/web_to_lead?embed=1"' in script
    assert 'event.origin !== "http://localhost"' in script


# ---------------------------------------------------------------------------- CSRF
def test_the_csrf_guard_lets_these_routes_alone_through(site, visitor):
    # the public form needs no session token ...
    ok = visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "NoCsrf", "email": "n@x.io"},
    )
    assert ok.status_code == 200 and leads(site, last_name="NoCsrf")
    # ... while every other form still does, signed in or not
    assert visitor.post("/login", data={"email": ADMIN, "password": PASSWORD}).status_code == 400
    admin = Client(site.app).login(ADMIN)
    refused = admin.post("/r/lead/new", data={"last_name": "Forged"}, csrf=False)
    assert refused.status_code == 400 and not leads(site, last_name="Forged")


# ---------------------------------------------------------------------------- admin
def test_the_administration_page_lists_forms_with_address_snippet_and_counts(site, visitor):
    visitor.post(
        "/f/web_to_lead",
        data={"_token": token("web_to_lead"), "last_name": "Counted", "email": "c@x.io"},
    )
    admin = Client(site.app).login(ADMIN)
    response = admin.get("/admin/web-forms")
    assert response.status_code == 200
    page = text(response)
    section = page[page.index('data-web-form="web_to_lead"') :]
    section = section[: section.index("</section>")]
    assert "http://localhost/f/web_to_lead" in section
    assert "&lt;script src=&#34;http://localhost/f/web_to_lead/embed.js&#34; async&gt;" in section
    accepted = counter(site, "web_to_lead", "accepted")
    assert f"{accepted} accepted" in section
    orphan = page[page.index('data-web-form="orphan"') :]
    assert "there is no user nobody@example.com" in orphan[: orphan.index("</section>")]
    retired = page[page.index('data-web-form="retired"') :]
    assert "Disabled" in retired[: retired.index("</section>")]
    seller = Client(site.app).login(SELLER)
    assert seller.get("/admin/web-forms").status_code == 403


def test_ui_texts_are_translated():
    from xrm.web.ui import i18n

    for english in (
        "The form was sent too quickly. Please check it and send it again.",
        "Web forms",
        "%(count)s accepted",
    ):
        assert english in i18n.RU
