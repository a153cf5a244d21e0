"""The generated UI through Flask's test client: every page renders for the users who may
see it, sign-in and admin checks hold, every form posts with a CSRF token and a post
without one is refused, the language and time zone follow the user.

One store per module (core and sales with three users and a few records); each test
makes what else it needs.
"""

from __future__ import annotations

import re

import pytest
from browser.support import SELLER, Client, world
from conftest import one_record_of_each


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui")) as built:
        yield built


def text(response) -> str:
    return response.get_data(as_text=True)


# ------------------------------------------------------------------------ pages
def page_urls(w) -> list[str]:
    catalog = w.store.refresh()
    urls = ["/", "/me", "/calendar", "/calendar?month=2026-02&mine=0"]
    urls += [f"/views/{name}" for name in catalog.views]
    urls += [f"/e/{name}" for name in catalog.entities]
    urls += [f"/r/{name}/new" for name in catalog.entities]
    urls += [
        f"/r/account/{w.acme['id']}",
        f"/r/contact/{w.jane['id']}",
        f"/r/opportunity/{w.deal['id']}",
        f"/r/account/{w.acme['id']}/timeline",
        f"/r/account/{w.acme['id']}/related/contacts",
        f"/r/account/{w.acme['id']}/related/opportunities",
        "/views/open_opportunities/count",
        "/views/open_opportunities/filter-row?path=stage",
        "/views/open_opportunities/bulk-value?field=stage",
    ]
    urls += [
        "/admin/",
        "/admin/entities",
        "/admin/option_sets",
        "/admin/forms",
        "/admin/views",
        "/admin/users",
        "/admin/roles",
        "/admin/audit",
        "/admin/customizations",
        f"/admin/users/{w.seller}",
        "/admin/views/new_view?entity=lead",
    ]
    urls += [f"/admin/entities/{name}" for name in catalog.entities]
    urls += [f"/admin/forms/{name}" for name in catalog.entities]
    urls += [f"/admin/views/{name}" for name in catalog.views]
    urls += [f"/admin/option_sets/{name}" for name in catalog.option_sets]
    urls += [f"/admin/roles/{name}" for name in catalog.roles]
    urls += [
        f"/admin/entities/opportunity/fields/{name}"
        for name in catalog.entities["opportunity"].fields
    ]
    return urls


def test_every_page_renders_for_an_administrator(w, admin):
    failures = []
    for url in page_urls(w):
        response = admin.get(url, follow_redirects=True)
        if response.status_code != 200:
            failures.append((url, response.status_code, text(response)[:300]))
    assert not failures


def test_every_record_form_renders(w, admin):
    """A record of every entity (made through the records service) opens in its form."""
    store = w.store
    catalog = store.refresh()
    made = {
        "task": {"subject": "Call back"},
        "call": {"subject": "Intro call"},
        "meeting": {
            "subject": "Kick-off",
            "starts_at": "2027-03-01T10:00:00Z",
            "attendees": [w.jane["id"]],
        },
        "email_message": {"subject": "Hello", "body": "<p>Hi <b>there</b></p>"},
        "note": {"body": "<p>Remember</p>", "regarding": {"entity": "account", "id": w.acme["id"]}},
        "contact_list": {"name": "Board", "members": [w.jane["id"]]},
        "lead": {"last_name": "Smith", "company": "Smith & Co"},
        "product": {"code": "P-1", "name": "Widget", "list_price": "10"},
        "price_list": {"name": "Standard"},
        "sales_target": {"name": "March", "period": "2027-03-01", "amount": "50000"},
    }
    ids = {}
    for name, values in made.items():
        ids[name] = store.records(name, w.admin).create(values)["id"]
    ids["price_list_item"] = store.records("price_list_item", w.admin).create(
        {"price_list": ids["price_list"], "product": ids["product"], "price": "9.5"}
    )["id"]
    ids["opportunity_line"] = store.records("opportunity_line", w.admin).create(
        {"opportunity": w.deal["id"], "product": ids["product"], "quantity": 2, "unit_price": "10"}
    )["id"]
    ids.update(account=w.acme["id"], contact=w.jane["id"], opportunity=w.deal["id"])
    ids = one_record_of_each(store, w.admin, ids)
    for name in catalog.entities:
        response = admin.get(f"/r/{name}/{ids[name]}/edit")
        assert response.status_code == 200, (name, text(response)[:500])
        assert 'data-testid="record-form"' in text(response)


def test_pages_need_a_signed_in_user(app):
    anonymous = app.test_client()
    response = anonymous.get("/views/open_opportunities")
    assert response.status_code == 302
    assert "/login?next=" in response.location
    response = anonymous.get("/views/open_opportunities", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_administration_is_for_administrators(seller, admin):
    assert seller.get("/admin/").status_code == 403
    assert seller.get("/admin/entities/account").status_code == 403
    assert seller.post("/admin/apply", {"documents": "[]"}).status_code == 403
    assert "admin-link" not in text(seller.get("/"))
    assert "admin-link" in text(admin.get("/"))


def test_navigation_comes_from_the_installed_packs(admin):
    page = text(admin.get("/"))
    for module in ("Core", "Sales"):
        assert module in page
    assert 'data-testid="nav-opportunity"' in page
    assert "Sales funnel" in page  # a kanban view of the sales pack


def test_a_reader_cannot_create(reader, w):
    assert reader.get("/r/account/new").status_code == 403
    response = reader.post("/r/account/new", {"_fields": "name", "name": "Nope"})
    assert response.status_code == 403
    assert reader.get(f"/r/account/{w.acme['id']}").status_code == 200


def test_unknown_pages_and_records_are_404(admin):
    assert admin.get("/views/no_such_view").status_code == 404
    assert admin.get("/r/no_such_entity/new").status_code == 404
    assert admin.get("/r/account/999999").status_code == 404


# ------------------------------------------------------------------------ CSRF
def post_endpoints(w) -> list[str]:
    deal = w.deal["id"]
    return [
        "/preferences",
        "/r/opportunity/new",
        f"/r/opportunity/{deal}",
        f"/r/opportunity/{deal}/delete",
        f"/r/opportunity/{deal}/stage",
        f"/r/opportunity/{deal}/notes",
        "/r/opportunity/form-state",
        "/kanban/pipeline_board/move",
        "/views/open_opportunities/bulk",
        "/views/open_opportunities/saved",
        "/saved/1/delete",
        "/admin/apply",
        "/admin/entities",
        "/admin/entities/account/fields",
        "/admin/entities/account/fields/name",
        "/admin/entities/account/fields/name/remove",
        "/admin/option_sets/industry",
        "/admin/forms/account",
        "/admin/views/all_accounts",
        "/admin/users",
        f"/admin/users/{w.seller}",
        "/admin/roles/user",
    ]


def test_every_post_without_a_csrf_token_is_refused(w, admin):
    for url in post_endpoints(w):
        response = admin.post(url, {"name": "x"}, csrf=False)
        assert response.status_code == 400, url
        response = admin.post(url, {"name": "x"}, csrf=False, htmx=True)
        assert response.status_code == 400, url
    assert w.store.records("opportunity").get(w.deal["id"])["name"] == w.deal["name"]


def test_a_wrong_csrf_token_is_refused(w, admin):
    response = admin.post(
        f"/r/opportunity/{w.deal['id']}",
        {"_fields": "name", "name": "Hijacked", "csrf_token": "forged"},
    )
    assert response.status_code == 400
    assert "form expired" in text(response)
    assert w.store.records("opportunity").get(w.deal["id"])["name"] == w.deal["name"]


def test_every_form_carries_a_csrf_token_and_novalidate(w, admin):
    form_tag = re.compile(r"<form\b[^>]*>", re.S)
    for url in page_urls(w):
        page = text(admin.get(url, follow_redirects=True))
        for match in form_tag.finditer(page):
            tag = match.group(0)
            if 'method="post"' not in tag:
                continue
            body = page[match.end() : page.index("</form>", match.end())]
            assert 'name="csrf_token"' in body, (url, tag)
            assert "novalidate" in tag, (url, tag)
    # htmx requests carry the token in a header
    assert 'hx-headers=\'{"X-CSRFToken":' in text(admin.get("/"))


# ------------------------------------------------------------------------ language and zone
def test_language_switch_changes_the_ui_and_the_formats(w, app):
    client = Client(app).login(SELLER)
    before = text(client.get(f"/r/opportunity/{w.deal['id']}/edit"))
    assert "Save" in before
    assert "$1,200.50" in text(client.get("/views/open_opportunities"))
    response = client.post("/preferences", {"locale": "ru", "next": "/"})
    assert response.status_code == 303
    after = text(client.get(f"/r/opportunity/{w.deal['id']}/edit"))
    assert "Сохранить" in after
    assert "Контрагент" in after  # the field label in Russian (catalog labels)
    assert 'lang="ru"' in after
    listing = text(client.get("/views/open_opportunities"))
    assert "1\xa0200,50\xa0$" in listing  # money in the Russian format
    assert "Открытые сделки" in listing
    client.post("/preferences", {"locale": "en"})
    assert "Sign out" in text(client.get("/"))


def test_preferences_refuse_unknown_values(seller):
    assert seller.post("/preferences", {"locale": "xx"}).status_code == 400
    assert seller.post("/preferences", {"time_zone": "Mars/Olympus"}).status_code == 400


def test_datetimes_show_in_the_users_time_zone(w, seller):
    task = w.store.records("task", w.seller).create(
        {"subject": "Zone check", "due": "2027-01-15T07:30:00Z"}
    )
    page = text(seller.get(f"/r/task/{task['id']}/edit"))  # the seller is in Europe/Moscow (UTC+3)
    assert 'value="2027-01-15T10:30"' in page


# ------------------------------------------------------------------------ lookups and files
def test_lookup_search_returns_titles(w, seller):
    rows = seller.get("/ui/lookup/account?q=acme").get_json()
    assert {"value": str(w.acme["id"]), "text": "Acme Corporation"} in rows
    # the reader is in none of the seller's teams: found by name, shown without the email
    # (tests/test_web_access.py has the whole rule)
    everyone = seller.get("/ui/lookup-users?q=rita").get_json()
    assert everyone == [{"value": str(w.reader), "text": "Rita Reader"}]
    mixed = seller.get("/ui/lookup-any?q=acme&to=account,contact").get_json()
    assert any(r["value"] == f"account:{w.acme['id']}" for r in mixed)
    assert seller.get("/ui/lookup/nothing").status_code == 404


def test_a_file_is_downloaded_by_its_key(w, seller):
    from xrm.storage.files import put_file

    # the uploader may download it (who else may: tests/test_web_access.py)
    stored = put_file(w.store, b"hello", "hello.txt", "text/plain", w.seller)
    response = seller.get(f"/files/{stored['key']}")
    assert response.status_code == 200
    assert response.data == b"hello"
    assert "attachment" in response.headers["Content-Disposition"]
    assert seller.get("/files/unknown-key").status_code == 404


def test_preferences_never_redirect_elsewhere(seller):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        response = seller.post("/preferences", {"locale": "en", "next": target})
        assert response.status_code == 303 and response.location == "/"
