"""The REST API through Flask's test client (real WSGI) on a real store: CRUD, the three
filter forms, sort, dotted fields, keyset pages, counts, search, ETag/If-Match, problem
documents, bulk writes, related lists, metadata, the OpenAPI document and run-time
fields picked up by a second process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from xrm.web import create_app

SOLUTIONS = Path(__file__).resolve().parents[1] / "xrm" / "solutions" / "packs"
API = "/api/v1"
PROBLEM = "application/problem+json"


def install(store) -> None:
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])


class Client:
    """The test client with a bearer token on every request."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.token = token

    def _headers(self, headers):
        merged = dict(headers or {})
        if self.token is not None:
            merged.setdefault("Authorization", f"Bearer {self.token}")
        return merged

    def request(self, method: str, path: str, headers=None, **kwargs):
        url = path if path.startswith("/api") else API + path
        return self.client.open(url, method=method, headers=self._headers(headers), **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)


def make_app(store, **config):
    return create_app(store, {"TESTING": True, **config})


@pytest.fixture
def store(database):
    app_store = database.open()
    install(app_store)
    yield app_store
    app_store.close()


@pytest.fixture
def admin_id(store):
    return store.add_user(
        "admin@example.com", "Ada Admin", password="correct horse", roles=["administrator"]
    )


@pytest.fixture
def token(store, admin_id):
    return store.create_token(admin_id, "tests")


@pytest.fixture
def app(store, admin_id):
    return make_app(store)


@pytest.fixture
def api(app, token):
    return Client(app.test_client(), token)


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"] and body["type"]
    return body


def create(api, entity: str, values: dict) -> dict:
    response = api.post(f"/{entity}", json=values)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


# ---------------------------------------------------------------------------------- CRUD
def test_create_read_update_delete(api):
    response = api.post(
        "/account",
        json={"name": "Acme", "industry": "retail", "annual_revenue": "1200.5", "tags": ["Key"]},
    )
    assert response.status_code == 201
    acme = response.get_json()
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"{API}/account/{acme['id']}"
    assert acme["name"] == "Acme"
    assert acme["annual_revenue"] == "1200.50"  # money as exact text
    assert acme["tags"] == ["key"]
    assert acme["account_type"] == "prospect"  # default applied
    assert acme["version"] == 1 and acme["created_at"].endswith("Z")

    got = api.get(f"/account/{acme['id']}")
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert got.get_json() == acme
    assert api.get(f"/account/{acme['id']}", headers={"If-None-Match": '"1"'}).status_code == 304

    changed = api.patch(
        f"/account/{acme['id']}",
        json={"employees": 40, "industry": None},
        headers={"If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert changed.headers["ETag"] == '"2"'
    body = changed.get_json()
    assert body["employees"] == 40 and body["industry"] is None and body["version"] == 2

    assert api.delete(f"/account/{acme['id']}", headers={"If-Match": '"2"'}).status_code == 204
    problem(api.get(f"/account/{acme['id']}"), 404)
    problem(api.delete(f"/account/{acme['id']}"), 404)


def test_stale_if_match_is_412_and_writes_nothing(api):
    acme = create(api, "account", {"name": "Acme"})
    url = f"/account/{acme['id']}"
    assert api.patch(url, json={"employees": 1}).status_code == 200  # no If-Match: last write wins
    stale = api.patch(url, json={"employees": 2}, headers={"If-Match": '"1"'})
    body = problem(stale, 412)
    assert body["current_version"] == 2
    assert stale.headers["ETag"] == '"2"'
    problem(api.delete(url, headers={"If-Match": '"1"'}), 412)
    problem(api.patch(url, json={"employees": 3}, headers={"If-Match": '"garbage"'}), 412)
    current = api.get(url).get_json()
    assert current["employees"] == 1 and current["version"] == 2
    weak_ok = api.patch(url, json={"employees": 5}, headers={"If-Match": 'W/"2", "9"'})
    assert weak_ok.status_code == 200
    assert api.patch(url, json={"employees": 6}, headers={"If-Match": "*"}).status_code == 200
    problem(api.patch("/account/999999", json={"employees": 1}, headers={"If-Match": '"1"'}), 404)


def test_validation_errors_are_422_with_field_details(api):
    missing = problem(api.post("/account", json={"employees": 3}), 422)
    assert missing["errors"]["name"] == ["required"]

    wrong = problem(
        api.post(
            "/account",
            json={
                "name": "X",
                "employees": "many",
                "industry": "space",
                "tags": "not-a-list",
                "open_pipeline": 5,
                "version": 3,
                "nonsense": 1,
            },
        ),
        422,
    )
    errors = wrong["errors"]
    assert set(errors) == {"employees", "industry", "tags", "open_pipeline", "version", "nonsense"}
    assert "computed" in errors["open_pipeline"][0]
    assert "platform" in errors["version"][0]
    assert errors["nonsense"] == ["unknown field"]
    assert wrong["type"] == "urn:xrm:problem:validation-failed"

    typo = problem(api.post("/account", json={"name": "X", "industy": "retail"}), 422)
    assert "did you mean" in typo["errors"]["industy"][0]

    # values the records service refuses (format, stage rules) are 422 as well
    bad_email = problem(api.post("/account", json={"name": "X", "email": "nope"}), 422)
    assert "email" in bad_email["errors"]
    acme = create(api, "account", {"name": "Acme"})
    lost = problem(
        api.post(
            "/opportunity",
            json={
                "name": "Deal",
                "account": acme["id"],
                "close_date": "2030-01-01",
                "stage": "lost",
            },
        ),
        422,
    )
    assert "lost_reason" in lost["errors"]
    read_only = problem(api.patch(f"/account/{acme['id']}", json={"won_revenue": "1.00"}), 422)
    assert "won_revenue" in read_only["errors"]
    assert api.get("/account").get_json()["count"]["value"] == 1  # nothing else was written


def test_malformed_bodies(api, app):
    problem(
        api.post("/account", data="{not json", headers={"Content-Type": "application/json"}), 400
    )
    problem(api.post("/account", data="NaN", headers={"Content-Type": "application/json"}), 400)
    problem(api.post("/account", json=["a", "list"]), 400)
    problem(
        api.post("/account", data="name=x", content_type="application/x-www-form-urlencoded"), 415
    )
    problem(api.post("/account", data="", headers={"Content-Type": "application/json"}), 400)
    deep = "[" * 100_000 + "]" * 100_000
    problem(api.post("/account", data=deep, headers={"Content-Type": "application/json"}), 400)
    assert api.get("/account").get_json()["count"]["value"] == 0


def test_oversize_body_is_413_problem(store, token):
    app = make_app(store, MAX_CONTENT_LENGTH=2048)
    api = Client(app.test_client(), token)
    body = problem(api.post("/account", json={"name": "x" * 5000}), 413)
    assert body["title"] == "Request Entity Too Large"
    problem(api.post("/account/bulk", json={"records": [{"name": "x" * 100}] * 100}), 413)
    assert api.get("/account").get_json()["count"]["value"] == 0


def test_unknown_entity_route_and_method(api):
    body = problem(api.get("/acount"), 404)
    assert "did you mean 'account'" in body["detail"]
    problem(api.post("/nothing", json={}), 404)
    problem(api.get("/account/1/nowhere"), 404)
    problem(api.get("/account/1/name"), 404)  # a field, but not a related list
    problem(api.get("/account/not-a-number"), 404)
    not_allowed = problem(api.request("PUT", "/account/1", json={}), 405)
    assert not_allowed
    assert api.request("PUT", "/account/1", json={}).headers["Allow"]
    problem(api.get("/meta/entities/nothing"), 404)
    problem(api.get("/meta/option_sets/nothing"), 404)
    problem(api.get("/meta/views/nothing"), 404)


# ------------------------------------------------------------------------------- lists
@pytest.fixture
def accounts(api):
    rows = [
        {"name": "Acme", "industry": "retail", "employees": 50, "billing_city": "Berlin"},
        {"name": "Globex", "industry": "technology", "employees": 500, "billing_city": "Paris"},
        {"name": "Initech", "industry": "technology", "employees": 120},
        {
            "name": "Umbrella",
            "industry": "healthcare",
            "employees": 5000,
            "billing_city": "Raccoon",
        },
        {"name": "Hooli", "employees": 120, "billing_city": "Palo Alto"},
    ]
    response = api.post("/account/bulk", json={"records": rows})
    assert response.status_code == 201, response.get_data(as_text=True)
    ids = response.get_json()["created"]
    return dict(zip([r["name"] for r in rows], ids))


def names(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["name"] for r in response.get_json()["data"]]


def test_list_shape_and_count(api, accounts):
    body = api.get("/account?sort=name").get_json()
    assert set(body) == {"data", "next_cursor", "count"}
    assert body["count"] == {"value": 5, "exact": True}
    assert body["next_cursor"] is None
    assert [r["name"] for r in body["data"]] == ["Acme", "Globex", "Hooli", "Initech", "Umbrella"]
    assert api.get("/account?count=false").get_json()["count"] is None


def test_filters_in_three_forms(api, accounts):
    as_json = json.dumps({"all": [["industry", "eq", "technology"], ["employees", "gt", 200]]})
    assert names(api.get("/account", query_string={"filter": as_json})) == ["Globex"]
    assert names(api.get("/account?industry=technology&sort=name")) == ["Globex", "Initech"]
    assert names(api.get("/account?employees__ge=500&sort=-employees")) == ["Umbrella", "Globex"]
    assert names(api.get("/account?industry__in=retail,healthcare&sort=name")) == [
        "Acme",
        "Umbrella",
    ]
    assert names(api.get("/account?industry__is_empty=&sort=name")) == ["Hooli"]
    assert names(api.get("/account?billing_city__contains=par")) == ["Globex"]
    assert names(api.get("/account?employees__between=100,600&sort=name")) == [
        "Globex",
        "Hooli",
        "Initech",
    ]
    # all three together are ANDed
    both = api.get(
        "/account",
        query_string={
            "industry": "technology",
            "employees__lt": "200",
            "filter": json.dumps(["name", "starts_with", "ini"]),
        },
    )
    assert names(both) == ["Initech"]
    assert api.get("/account?industry=technology").get_json()["count"]["value"] == 2
    # a dotted path through a lookup
    contact = create(api, "contact", {"last_name": "Smith", "account": accounts["Globex"]})
    create(api, "contact", {"last_name": "Jones", "account": accounts["Acme"]})
    found = api.get("/contact?account.industry=technology").get_json()["data"]
    assert [c["id"] for c in found] == [contact["id"]]


@pytest.mark.parametrize(
    "query",
    [
        "filter=%7Bnot%20json",
        'filter=["nope","eq",1]',
        'filter=["name","between",1]',
        'filter=["employees","contains","x"]',
        'filter={"all":[],"any":[]}',
        "filter=42",
        "nope=1",
        "name__gt=x",  # an operator text fields do not have
        "employees=many",
        "employees__last_n_days=x",
        "industry__is_empty=maybe",
        "sort=nope",
        "sort=tags",
        "fields=nope",
        "fields=contacts",
        "fields=parent.nope",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "count=maybe",
        "cursor=%%%",
        "cursor=bm9wZQ",
    ],
)
def test_bad_list_requests_are_400(api, accounts, query):
    body = problem(api.get(f"/account?{query}"), 400)
    assert body["detail"]


def test_sort_and_dotted_fields(api, accounts):
    create(api, "account", {"name": "Acme Retail GmbH", "parent": accounts["Acme"]})
    listed = api.get("/account?sort=-employees,name&fields=name,employees").get_json()["data"]
    assert [r["name"] for r in listed] == [
        "Umbrella",
        "Globex",
        "Hooli",
        "Initech",
        "Acme",
        "Acme Retail GmbH",
    ]
    assert set(listed[0]) == {"id", "version", "name", "employees"}
    child = api.get("/account?parent__is_not_empty=&fields=name,parent.name,parent.industry")
    assert child.get_json()["data"] == [
        {
            "id": child.get_json()["data"][0]["id"],
            "version": 1,
            "name": "Acme Retail GmbH",
            "parent.name": "Acme",
            "parent.industry": "retail",
        }
    ]
    one = api.get(f"/account/{accounts['Acme']}?fields=name,created_at").get_json()
    assert set(one) == {"id", "version", "name", "created_at"}


def test_keyset_pages_follow_the_cursor(api):
    rows = [{"name": f"Company {i:03d}", "employees": i % 7} for i in range(57)]
    assert api.post("/account/bulk", json={"records": rows}).status_code == 201
    for sort in ("name", "-employees,name", "employees", None):
        seen, cursor, pages = [], None, 0
        while True:
            query = {"limit": 10}
            if sort:
                query["sort"] = sort
            if cursor:
                query["cursor"] = cursor
            body = api.get("/account", query_string=query).get_json()
            assert body["count"] == {"value": 57, "exact": True}
            seen += [r["id"] for r in body["data"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 6
        assert len(seen) == len(set(seen)) == 57
    first = api.get("/account?limit=5&sort=name").get_json()
    other_sort = api.get("/account", query_string={"sort": "-name", "cursor": first["next_cursor"]})
    assert problem(other_sort, 400)["type"] == "urn:xrm:problem:bad-cursor"


def test_full_text_search(api, accounts):
    create(api, "account", {"name": "Northwind Traders", "email": "info@northwind.example"})
    assert names(api.get("/account?q=northw")) == ["Northwind Traders"]
    assert names(api.get("/account?q=north&industry__is_empty=")) == ["Northwind Traders"]
    assert api.get("/account?q=zzzz").get_json()["count"] == {"value": 0, "exact": True}


# -------------------------------------------------------------------------------- bulk
def test_bulk_is_all_or_nothing(api):
    rows = [
        {"name": "Good one"},
        {"employees": "x"},
        {"name": "Good two"},
        {"name": "y", "bad": 1},
        {"employees": 4},
    ]
    response = api.post("/account/bulk", json={"records": rows})
    body = problem(response, 422)
    assert [f["index"] for f in body["failures"]] == [1, 3, 4]
    assert body["errors"]["records.4.name"] == ["required"]  # the records service's verdict
    assert body["errors"]["records.1.employees"] == ["expected a whole number"]
    assert body["errors"]["records.3.bad"] == ["unknown field"]
    assert api.get("/account").get_json()["count"]["value"] == 0

    # an update that fails rolls back the creates of the same request
    acme = create(api, "account", {"name": "Acme"})
    mixed = [{"name": "New"}, {"id": acme["id"], "version": 99, "employees": 3}]
    body = problem(api.post("/account/bulk", json={"records": mixed}), 422)
    assert body["failures"] == [
        {"index": 1, "errors": {"version": [body["failures"][0]["errors"]["version"][0]]}}
    ]
    assert api.get("/account").get_json()["count"]["value"] == 1
    assert api.get(f"/account/{acme['id']}").get_json()["employees"] is None


def test_bulk_partial_writes_the_valid_rows(api):
    acme = create(api, "account", {"name": "Acme"})
    rows = [
        {"name": "One"},
        {"name": None},
        {"id": acme["id"], "employees": 12},
        {"id": 987654, "employees": 1},
        {"name": "Two", "industry": "retail"},
        "not an object",
        {"id": acme["id"], "version": 1, "employees": 13},  # stale after row 2
    ]
    response = api.post("/account/bulk", json={"records": rows, "partial": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert len(body["created"]) == 2 and body["updated"] == [acme["id"]]
    assert [f["index"] for f in body["failures"]] == [1, 3, 5, 6]
    assert body["failures"][1]["errors"] == {"id": ["not found"]}
    listed = names(api.get("/account?sort=name"))
    assert listed == ["Acme", "One", "Two"]
    assert api.get(f"/account/{acme['id']}").get_json()["employees"] == 12


def test_bulk_request_shape(api, app):
    problem(api.post("/account/bulk", json={"rows": []}), 422)
    problem(api.post("/account/bulk", json={"records": [], "partial": "yes"}), 422)
    too_many = [{"name": str(i)} for i in range(app.config["XRM_BULK_MAX"] + 1)]
    problem(api.post("/account/bulk", json={"records": too_many}), 422)
    empty = api.post("/account/bulk", json={"records": []})
    assert empty.status_code == 201 and empty.get_json() == {
        "created": [],
        "updated": [],
        "failures": [],
    }


# ----------------------------------------------------------------------- related lists
def test_related_lists(api, accounts):
    acme = accounts["Acme"]
    smith = create(api, "contact", {"last_name": "Smith", "account": acme})
    jones = create(api, "contact", {"last_name": "Jones", "account": acme, "first_name": "Al"})
    create(api, "contact", {"last_name": "Other", "account": accounts["Globex"]})
    body = api.get(f"/account/{acme}/contacts?sort=last_name").get_json()
    assert [c["id"] for c in body["data"]] == [jones["id"], smith["id"]]
    assert body["count"] == {"value": 2, "exact": True}
    assert body["data"][0]["full_name"] == "Al Jones"
    filtered = api.get(f"/account/{acme}/contacts?first_name=Al&fields=last_name").get_json()
    assert filtered["data"] == [{"id": jones["id"], "version": 1, "last_name": "Jones"}]

    deal = create(
        api,
        "opportunity",
        {"name": "Deal", "account": acme, "close_date": "2030-01-31", "amount": 10},
    )
    opportunities = api.get(f"/account/{acme}/opportunities").get_json()["data"]
    assert [o["id"] for o in opportunities] == [deal["id"]]
    assert opportunities[0]["amount"] == "10.00"

    meeting = create(
        api,
        "meeting",
        {"subject": "Kick-off", "starts_at": "2030-01-02T10:00:00Z", "attendees": [smith["id"]]},
    )
    assert meeting["attendees"] == [smith["id"]]
    attendees = api.get(f"/meeting/{meeting['id']}/attendees").get_json()
    assert [c["id"] for c in attendees["data"]] == [smith["id"]]
    problem(api.get("/account/999999/contacts"), 404)


# --------------------------------------------------------------------------------- meta
def test_meta_describes_the_catalog(api, store):
    index = api.get("/meta").get_json()
    assert index["catalog_version"] == store.refresh().version
    assert index["user"]["email"] == "admin@example.com"
    assert index["csrf_token"] is None  # bearer requests need none
    assert "account" in {e["name"] for e in index["entities"]}

    account = api.get("/meta/entities/account").get_json()
    assert account["label"] == "Account" and account["plural"] == "Accounts"
    fields = {f["name"]: f for f in account["fields"]}
    assert fields["name"]["required"] is True and fields["name"]["type"] == "text"
    assert fields["open_pipeline"]["read_only"] is True
    assert fields["id"]["read_only"] is True and fields["id"]["system"] is True
    assert fields["owner"]["read_only"] is False
    industry = [c["value"] for c in fields["industry"]["choices"]]
    assert industry[:2] == ["manufacturing", "retail"]
    assert {r["name"] for r in account["relations"]} >= {"contacts", "opportunities"}
    assert "all_accounts" in {v["name"] for v in account["views"]}

    sets = {s["name"]: s for s in api.get("/meta/option_sets").get_json()}
    assert sets["industry"]["options"][1] == {"value": "retail", "label": "Retail", "color": None}
    assert api.get("/meta/option_sets/industry").get_json()["label"] == "Industry"
    views = {v["name"]: v for v in api.get("/meta/views").get_json()}
    assert views["open_opportunities"]["filter"] == ["stage", "not_in", ["won", "lost"]]
    assert views["my_opportunities"]["filter"]["all"][0] == ["owner", "eq", "current_user"]
    assert api.get("/meta/views/customers").get_json()["sort"] == [["name", "asc"]]
    assert len(api.get("/meta/entities").get_json()) == len(store.refresh().entities)


def test_meta_speaks_the_users_language(store, app):
    user = store.add_user("ivan@example.com", "Иван", roles=["manager"], locale="ru")
    api = Client(app.test_client(), store.create_token(user))
    account = api.get("/meta/entities/account").get_json()
    assert account["label"] == "Контрагент"
    fields = {f["name"]: f for f in account["fields"]}
    assert fields["industry"]["label"] == "Отрасль"
    assert fields["industry"]["choices"][1]["label"] == "Розничная торговля"
    assert api.get("/meta").get_json()["locale"] == "ru"


# ----------------------------------------------------------------------- authentication
def test_requests_without_a_valid_token_are_401(app, store, admin_id):
    anonymous = Client(app.test_client(), None)
    body = problem(anonymous.get("/account"), 401)
    assert body["type"] == "urn:xrm:problem:unauthorized"
    assert anonymous.get("/account").headers["WWW-Authenticate"].startswith("Bearer")
    problem(anonymous.get("/openapi.json"), 401)
    problem(anonymous.post("/account", json={"name": "x"}), 401)
    problem(Client(app.test_client(), "xrm_not-a-token").get("/account"), 401)
    problem(anonymous.get("/account", headers={"Authorization": "Basic YTpi"}), 401)
    problem(anonymous.get("/account", headers={"Authorization": "Bearer"}), 401)
    revoked = store.create_token(admin_id)
    assert Client(app.test_client(), revoked).get("/account").status_code == 200
    store.revoke_token(revoked)
    problem(Client(app.test_client(), revoked).get("/account"), 401)


def test_roles_limit_what_the_api_shows_and_changes(store, app, api):
    # two users of the "user" role in different teams: each sees their team's records
    alice = store.add_user("alice@example.com", roles=["user"], teams=["north"])
    bob = store.add_user("bob@example.com", roles=["user"], teams=["south"])
    reader = store.add_user("reader@example.com", roles=["read_only"])
    as_alice = Client(app.test_client(), store.create_token(alice))
    as_bob = Client(app.test_client(), store.create_token(bob))
    as_reader = Client(app.test_client(), store.create_token(reader))

    mine = create(as_alice, "account", {"name": "Alice's"})
    assert mine["owner"] == alice
    assert names(as_alice.get("/account")) == ["Alice's"]
    assert names(as_bob.get("/account")) == []
    problem(as_bob.get(f"/account/{mine['id']}"), 404)
    problem(as_bob.patch(f"/account/{mine['id']}", json={"employees": 1}), 404)
    assert names(as_reader.get("/account")) == ["Alice's"]
    problem(as_reader.post("/account", json={"name": "Nope"}), 403)
    problem(as_reader.patch(f"/account/{mine['id']}", json={"employees": 1}), 403)
    problem(as_reader.delete(f"/account/{mine['id']}"), 403)
    assert api.get("/account").get_json()["count"]["value"] == 1
    assert as_reader.get("/meta/entities/account").get_json()["permissions"]["create"] == "none"


def test_hidden_fields_cannot_be_read_filtered_or_sorted(store, app, api):
    store.customize(
        "roles",
        {
            "roles": {
                "clerk": {
                    "permissions": {"*": {"create": "all", "read": "all", "update": "all"}},
                    "fields": {"account": {"tax_id": "hidden", "employees": "read_only"}},
                }
            }
        },
    )
    clerk = Client(
        app.test_client(), store.create_token(store.add_user("clerk@example.com", roles=["clerk"]))
    )
    parent = create(api, "account", {"name": "Parent", "tax_id": "7700000000"})
    child = create(
        api, "account", {"name": "Child", "tax_id": "7711111111", "parent": parent["id"]}
    )
    seen = clerk.get(f"/account/{child['id']}").get_json()
    assert "tax_id" not in seen and seen["name"] == "Child"
    assert all("tax_id" not in r for r in clerk.get("/account").get_json()["data"])
    for query in (
        "tax_id=7711111111",
        "tax_id__starts_with=77",
        "parent.tax_id__is_not_empty=",
        "sort=tax_id",
        "fields=name,tax_id",
        "fields=parent.tax_id",
        'filter={"not": ["tax_id", "is_empty"]}',
    ):
        problem(clerk.get(f"/account?{query}"), 400)
    problem(clerk.get(f"/account/{child['id']}?fields=tax_id"), 400)
    assert clerk.get("/account?q=7711111111").get_json()["count"]["value"] == 0
    problem(clerk.patch(f"/account/{child['id']}", json={"employees": 3}), 403)
    assert clerk.patch(f"/account/{child['id']}", json={"billing_city": "Oslo"}).status_code == 200
    fields = {f["name"]: f for f in clerk.get("/meta/entities/account").get_json()["fields"]}
    assert "tax_id" not in fields and fields["employees"]["read_only"] is True
    # the administrator still sees everything
    assert api.get(f"/account/{child['id']}").get_json()["tax_id"] == "7711111111"


def test_api_rate_limit_per_token(store, admin_id):
    app = make_app(store, XRM_API_RATE_LIMIT="3 per minute")
    first = Client(app.test_client(), store.create_token(admin_id))
    second = Client(app.test_client(), store.create_token(admin_id))
    for _ in range(3):
        assert first.get("/meta/option_sets").status_code == 200
    refused = first.get("/meta/option_sets")
    body = problem(refused, 429)
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 61 and body["retry_after"] == retry
    assert second.get("/meta/option_sets").status_code == 200  # another token's budget


def _redis_url() -> str | None:
    url = os.environ.get("XRM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:
        return None
    return url


def test_rate_limits_are_shared_through_redis(store, admin_id):
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis server to share rate limits through")
    token = store.create_token(admin_id)  # a fresh token: a fresh budget in Redis
    workers = [make_app(store, XRM_REDIS_URL=url, XRM_API_RATE_LIMIT="3 per minute") for _ in "ab"]
    first, second = (Client(app.test_client(), token) for app in workers)
    assert first.get("/meta/option_sets").status_code == 200
    assert second.get("/meta/option_sets").status_code == 200
    assert first.get("/meta/option_sets").status_code == 200
    refused = second.get("/meta/option_sets")  # the fourth request, counted across workers
    problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1


# ----------------------------------------------------------------------------- OpenAPI
def test_openapi_document(api, store):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"].endswith(f"catalog.{store.refresh().version}")
    paths = document["paths"]
    assert {"get", "post"} <= set(paths[f"{API}/account"])
    assert {"get", "patch", "delete"} <= set(paths[f"{API}/account/{{id}}"])
    assert "post" in paths[f"{API}/opportunity/bulk"]
    assert "get" in paths[f"{API}/account/{{id}}/contacts"]
    assert "get" in paths[f"{API}/meeting/{{id}}/attendees"]
    schemas = document["components"]["schemas"]
    record = schemas["account.Record"]["properties"]
    assert record["annual_revenue"]["type"] == ["string", "null"]
    assert record["name"]["title"] == "Name"
    assert schemas["account.Input"]["additionalProperties"] is False
    assert "open_pipeline" not in schemas["account.Input"]["properties"]
    assert schemas["account.Input"]["properties"]["industry"]["enum"][-1] is None
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    again = api.get("/openapi.json", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_field_added_at_run_time_is_served_without_restart(database, store, app, api, token):
    other_store = database.open()  # a second process: its own store and app on the database
    try:
        other = Client(make_app(other_store).test_client(), token)
        before = other.get("/openapi.json").get_json()  # warm: caches the old catalog
        assert "loyalty" not in before["components"]["schemas"]["account.Record"]["properties"]
        problem(other.post("/account", json={"name": "Early", "loyalty": 1}), 422)

        store.customize("extend", {"extend": "account", "fields": {"loyalty": {"type": "integer"}}})

        for client in (api, other):
            document = client.get("/openapi.json").get_json()
            assert document["components"]["schemas"]["account.Record"]["properties"]["loyalty"] == {
                "type": ["integer", "null"],
                "title": "Loyalty",
            }
            assert "loyalty" in document["components"]["schemas"]["account.Input"]["properties"]
        created = create(other, "account", {"name": "Loyal", "loyalty": 7})
        assert created["loyalty"] == 7
        assert api.get(f"/account/{created['id']}").get_json()["loyalty"] == 7
        assert names(api.get("/account?loyalty__gt=5")) == ["Loyal"]
        fields = other.get("/meta/entities/account").get_json()["fields"]
        assert {"name": "loyalty", "type": "integer"}.items() <= next(
            f for f in fields if f["name"] == "loyalty"
        ).items()
        problem(other.post("/account", json={"name": "Bad", "loyalty": "lots"}), 422)
    finally:
        other_store.close()


def test_docs_page_and_vendored_assets(app, store, admin_id):
    client = app.test_client()
    anonymous = client.get("/api/docs")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    page = client.get("/login")
    token = (
        page.get_data(as_text=True)
        .split('name="csrf_token" type="hidden" value="')[1]
        .split('"')[0]
    )
    signed_in = client.post(
        "/login",
        data={"email": "admin@example.com", "password": "correct horse", "csrf_token": token},
    )
    assert signed_in.status_code == 303
    docs = client.get("/api/docs")
    html = docs.get_data(as_text=True)
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert 'data-spec-url="/api/v1/openapi.json"' in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "README.md"):
        response = client.get(f"/static/vendor/swagger-ui/{asset}")
        assert response.status_code == 200
        response.close()
    assert "5.35.0" in client.get("/static/vendor/swagger-ui/README.md").get_data(as_text=True)


def test_session_cookie_api_writes_need_the_csrf_header(app, store, admin_id):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post(
        "/login",
        data={"email": "admin@example.com", "password": "correct horse", "csrf_token": token},
    )
    assert client.get(f"{API}/account").status_code == 200
    csrf = client.get(f"{API}/meta").get_json()["csrf_token"]
    assert csrf
    refused = client.post(f"{API}/account", json={"name": "Nope"})
    assert problem(refused, 400)["type"] == "urn:xrm:problem:csrf-failed"
    accepted = client.post(f"{API}/account", json={"name": "Yes"}, headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 201
    assert [r["name"] for r in client.get(f"{API}/account").get_json()["data"]] == ["Yes"]


# ------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_the_app_under_gunicorn(tmp_path):
    """``serve`` in a real process: two gunicorn workers answer over HTTP."""
    import xrm

    url = f"sqlite:///{tmp_path / 'served.db'}"
    with xrm.open(url) as setup:
        setup.install([SOLUTIONS / "core"])
        token = setup.create_token(setup.add_user("ops@example.com", roles=["administrator"]))
    port = _free_port()
    code = (
        "from xrm.web.server import serve; "
        f"serve('127.0.0.1', {port}, workers=2, database_url={url!r}, accesslog=None)"
    )
    env = {**os.environ, "XRM_INSTANCE_PATH": str(tmp_path / "instance")}
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{API}/meta/entities",
            headers={"Authorization": f"Bearer {token}"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    entities = json.load(response)
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert "account" in {e["name"] for e in entities}
        assert (tmp_path / "instance" / "secret_key").exists()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------- aggregates
def test_aggregates_group_measure_and_filter(api, store, app):
    acme = create(api, "account", {"name": "Acme", "industry": "retail"})["id"]
    globex = create(api, "account", {"name": "Globex", "industry": "technology"})["id"]
    for name, account, amount, day in (
        ("A", acme, "100.50", "2025-01-10"),
        ("B", acme, "200.25", "2025-01-20"),
        ("C", globex, "1000.00", "2025-02-05"),
        ("D", globex, None, "2025-02-06"),
    ):
        values = {"name": name, "account": account, "close_date": day}
        if amount:
            values["amount"] = amount
        create(api, "opportunity", values)
    response = api.get(
        "/opportunity/aggregate?group_by=account.industry,close_date:month"
        "&measures=count,sum:amount,max:close_date"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["data"] == [
        {
            "account.industry": "retail",
            "close_date:month": "2025-01-01",
            "count": 2,
            "sum:amount": "300.75",
            "max:close_date": "2025-01-20",
        },
        {
            "account.industry": "technology",
            "close_date:month": "2025-02-01",
            "count": 2,
            "sum:amount": "1000.00",
            "max:close_date": "2025-02-06",
        },
    ]
    # the list's filters apply: JSON, field=value shortcuts, search
    narrowed = api.get("/opportunity/aggregate?account=" + str(acme) + "&measures=count")
    assert narrowed.get_json()["data"] == [{"count": 2}]
    filtered = api.get(
        "/opportunity/aggregate?group_by=account&filter=" + json.dumps(["amount", "gt", 150])
    )
    assert filtered.get_json()["data"] == [
        {"account": acme, "count": 1},
        {"account": globex, "count": 1},
    ]
    # bad specs are 400 problems that say what is wrong
    assert (
        "only dates have buckets"
        in problem(api.get("/opportunity/aggregate?group_by=name:month"), 400)["detail"]
    )
    assert (
        "unknown measure 'median'"
        in problem(api.get("/opportunity/aggregate?measures=median:amount"), 400)["detail"]
    )
    assert problem(api.get("/nothing/aggregate"), 404)
    # the caller's scope: a user who reads only their own opportunities counts only those
    seller = store.add_user("own@example.com", roles=["user"])
    store.records("opportunity").create(
        {"name": "Mine", "account": acme, "close_date": "2025-03-01", "owner": seller}
    )
    own = Client(app.test_client(), store.create_token(seller, "t"))
    mine = own.get("/opportunity/aggregate").get_json()["data"]
    everyone = api.get("/opportunity/aggregate").get_json()["data"]
    assert everyone == [{"count": 5}] and mine == [{"count": 1}]
