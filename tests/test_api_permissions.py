"""The permission matrix of ``test_security`` through the REST API: bearer tokens for every
scope (none/own/team/all/admin), every read channel (list, get, count, related list,
search) and every write channel (PATCH, DELETE), on SQLite and PostgreSQL.  Nothing
outside the scope, and no hidden field, appears in any response; nothing forbidden is
written (checked through the system store)."""

from __future__ import annotations

import json

import pytest
from browser.support import CSRF_INPUT, PASSWORD
from test_security import VISIBLE, WRITABLE, build_world

from xrm.web import create_app

API = "/api/v1"
PROBLEM = "application/problem+json"
SCOPED = ["own", "team", "all"]


class Client:
    """Flask's test client with one user's bearer token on every request."""

    def __init__(self, client, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params):
        return self.client.get(API + path, query_string=params, headers=self.headers)

    def patch(self, path: str, body: dict):
        return self.client.patch(API + path, json=body, headers=self.headers)

    def delete(self, path: str):
        return self.client.delete(API + path, headers=self.headers)


@pytest.fixture
def world(database, tmp_path):
    store = database.open()
    users, deals = build_world(store, tmp_path)
    app = create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False})
    http = app.test_client()
    clients = {who: Client(http, store.create_token(user_id)) for who, user_id in users.items()}
    yield store, clients, deals
    store.close()


def _no_secret(response, *, name: bool = True) -> None:
    """The hidden field's values (and, unless the request named it, its name) appear
    nowhere in the response."""
    text = response.get_data(as_text=True)
    if name:
        assert "secret" not in text
    assert "s-own" not in text and "s-mate" not in text and "s-blue" not in text


def _names(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted(row["name"] for row in response.get_json()["data"])


def _problem(response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.get_data())
    assert response.mimetype == PROBLEM


def _snapshot(store) -> list[dict]:
    rows = store.records("deal").query(fields=["name", "secret", "locked", "owner"]).rows
    return sorted(
        ({k: row[k] for k in ("id", "name", "secret", "locked", "owner")} for row in rows),
        key=lambda row: row["id"],
    )


@pytest.mark.parametrize("who", list(VISIBLE))
def test_reads_follow_the_scope(world, who):
    _, clients, deals = world
    client = clients[who]
    expected = VISIBLE[who]
    hidden_ok = who == "boss"

    def check(response):
        if not hidden_ok:
            _no_secret(response)
        return response

    # list, count, search
    listed = check(client.get("/deal"))
    assert _names(listed) == expected
    assert listed.get_json()["count"]["value"] == len(expected)
    assert _names(check(client.get("/deal", sort="name", limit=1, count="true"))) == expected[:1]
    assert _names(check(client.get("/deal", q="deal"))) == expected
    assert check(client.get("/deal", q="deal")).get_json()["count"]["value"] == len(expected)
    # keyset pages together hold exactly the visible records
    seen, cursor = [], None
    while True:
        params = {"limit": 1, "sort": "name", "fields": "name"}
        if cursor:
            params["cursor"] = cursor
        page = check(client.get("/deal", **params)).get_json()
        seen += [row["name"] for row in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == expected
    # a filter on another visible field does not widen the scope
    wide = json.dumps({"any": [["name", "contains", "deal"], ["id", "is_not_empty"]]})
    assert _names(check(client.get("/deal", filter=wide))) == expected
    assert _names(check(client.get("/deal", name__contains="deal"))) == expected
    # get and related lists
    for owner, deal in deals.items():
        got = check(client.get(f"/deal/{deal['id']}"))
        lines = check(client.get(f"/deal/{deal['id']}/lines"))
        if deal["name"] in expected:
            assert got.status_code == 200 and got.get_json()["name"] == deal["name"]
            assert lines.status_code == 200, lines.get_data(as_text=True)
            texts = [row["text"] for row in lines.get_json()["data"]]
            # own-scope readers of lines see only their own; team/all/admin see the deal's
            assert texts in ([f"line of {owner}"], [])
            if who in ("team", "all", "boss") or owner == who:
                assert texts == [f"line of {owner}"]
            assert lines.get_json()["count"]["value"] == len(texts)
        else:
            _problem(got, 404)
            _problem(lines, 404)
            assert "deal of" not in got.get_data(as_text=True)
            assert "line of" not in lines.get_data(as_text=True)
    if hidden_ok:
        assert client.get(f"/deal/{deals['own']['id']}").get_json()["secret"] == "s-own"
        assert _names(client.get("/deal", q="s-own")) == ["deal of own"]
        assert _names(client.get("/deal", filter='["secret", "eq", "s-mate"]')) == ["deal of mate"]


@pytest.mark.parametrize("who", SCOPED)
def test_hidden_field_is_refused_on_every_read_channel(world, who):
    _, clients, deals = world
    client = clients[who]
    deal_id = deals["own"]["id"]
    refused = [
        client.get("/deal", filter='["secret", "eq", "s-own"]'),
        client.get("/deal", filter='{"any": [["name", "eq", "x"], ["secret", "is_not_empty"]]}'),
        client.get("/deal", secret="s-own"),
        client.get("/deal", secret__contains="s-"),
        client.get("/deal", sort="secret"),
        client.get("/deal", sort="-secret"),
        client.get("/deal", fields="name,secret"),
        client.get("/deal", fields="secret"),
        client.get(f"/deal/{deal_id}", fields="name,secret"),
        client.get(f"/deal/{deal_id}/lines", fields="text,deal.secret"),
        client.get(f"/deal/{deal_id}/lines", filter='["deal.secret", "eq", "s-own"]'),
    ]
    for response in refused:
        _problem(response, 400, 403, 404)
        assert "s-own" not in response.get_data(as_text=True)
    # searching for the hidden value finds nothing: the hidden column is not searched
    found = client.get("/deal", q="s-own")
    assert found.status_code == 200 and found.get_json()["data"] == []
    assert found.get_json()["count"]["value"] == 0
    _no_secret(client.get(f"/deal/{deal_id}"))
    _no_secret(client.get("/deal", fields="name,locked"))


def test_no_scope_reads_nothing(world):
    _, clients, deals = world
    client = clients["none"]
    for response in (client.get("/deal"), client.get("/deal", q="deal")):
        if response.status_code == 200:
            assert response.get_json()["data"] == []
            assert response.get_json()["count"]["value"] == 0
        else:
            _problem(response, 403, 404)
        _no_secret(response)
    for deal in deals.values():
        _problem(client.get(f"/deal/{deal['id']}"), 403, 404)
        _problem(client.get(f"/deal/{deal['id']}/lines"), 403, 404)


@pytest.mark.parametrize("who", ["none", *SCOPED])
def test_writes_follow_the_scope(world, who):
    store, clients, deals = world
    client = clients[who]
    system = store.records("deal")
    for owner, deal in deals.items():
        path = f"/deal/{deal['id']}"
        before = _snapshot(store)
        # hidden and read-only fields are never written, whatever the scope
        for values in ({"locked": 5}, {"secret": "changed"}, {"name": "x", "locked": 7}):
            response = client.patch(path, values)
            _problem(response, 400, 403, 404)
            _no_secret(response, name=False)  # a refusal may name the field it was sent
            assert _snapshot(store) == before
        if owner in WRITABLE[who]:
            response = client.patch(path, {"name": f"{deal['name']} by {who}"})
            assert response.status_code == 200, response.get_data(as_text=True)
            _no_secret(response)
            assert system.get(deal["id"])["name"] == f"{deal['name']} by {who}"
            assert system.get(deal["id"])["secret"] == f"s-{owner}"
        else:
            _problem(client.patch(path, {"name": "hijacked"}), 403, 404)
            _problem(client.delete(path), 403, 404)
            assert _snapshot(store) == before
    for owner in sorted(WRITABLE[who]):
        response = client.delete(f"/deal/{deals[owner]['id']}")
        assert response.status_code == 204, response.get_data(as_text=True)
        assert client.get(f"/deal/{deals[owner]['id']}").status_code == 404
    remaining = {row["name"].split(" by ")[0] for row in _snapshot(store)}
    assert remaining == {f"deal of {o}" for o in deals if o not in WRITABLE[who]}


def test_admin_writes_everything_but_read_only(world):
    store, clients, deals = world
    client = clients["boss"]
    target = deals["blue"]["id"]
    response = client.patch(f"/deal/{target}", {"secret": "new", "name": "boss"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert store.records("deal").get(target)["secret"] == "new"
    assert client.delete(f"/deal/{target}").status_code == 204
    assert store.records("deal").query(filter=["id", "eq", target]).rows == []


# ----------------------------------------------------------------- indirect channels
@pytest.mark.parametrize("who", ["own", "team"])
def test_lookup_paths_carry_the_target_scope_over_http(world, who):
    """The own user's deal points (set by the platform) at the blue user's firm; no read
    channel shows that firm through the path, and pointing at it is refused."""
    store, clients, deals = world
    client = clients[who]
    firms = {r["name"]: r["id"] for r in store.records("firm").query(fields=["name"]).rows}
    mine = f"/deal/{deals['own']['id']}"
    refused = client.patch(mine, {"firm": firms["firm of blue"]})
    _problem(refused, 422)
    missing = client.patch(mine, {"firm": 999_999})
    assert refused.get_json()["errors"] == missing.get_json()["errors"]
    store.records("deal").update(deals["own"]["id"], {"firm": firms["firm of blue"]})
    responses = [
        client.get(mine, fields="name,firm.name,firm.phone"),
        client.get("/deal", fields="name,firm.name,firm.phone"),
        client.get("/deal", filter='["firm.name", "starts_with", "firm of b"]'),
        client.get("/deal", sort="firm.name", fields="name,firm.name"),
        client.get("/deal", sort="-firm.name", fields="name,firm.name"),
        client.get("/deal/aggregate", group_by="firm.name", measures="count"),
        client.get("/deal/aggregate", group_by="firm.phone", measures="count"),
    ]
    for response in responses:
        assert response.status_code == 200, response.get_data(as_text=True)
        text = response.get_data(as_text=True)
        assert "firm of blue" not in text and "+15550002" not in text
    assert responses[2].get_json()["data"] == []
    # The UI export with the path as a column.
    http = client.client
    page = http.get("/login").get_data(as_text=True)
    http.post(
        "/login",
        data={
            "email": f"{who}@x.test",
            "password": PASSWORD,
            "csrf_token": CSRF_INPUT.search(page).group(1),
        },
    )
    export = http.get("/views/all_deals/export.csv", query_string={"cols": "name,firm.name"})
    assert export.status_code == 200, export.get_data(as_text=True)[:300]
    assert "deal of own" in export.get_data(as_text=True)
    assert "firm of blue" not in export.get_data(as_text=True)


@pytest.mark.parametrize("who", ["own", "team", "all"])
def test_formulas_and_rollups_over_http(world, who):
    store, clients, deals = world
    client = clients[who]
    got = client.get(f"/deal/{deals['own']['id']}").get_json()
    assert "expected" not in got and "amount" not in got and got["locked_twice"] == 2
    for response in (
        client.get("/deal", fields="name,expected"),
        client.get("/deal", filter='["expected", "gt", 0]'),
        client.get("/deal", sort="expected_twice"),
        client.get("/deal/aggregate", measures="sum:expected"),
    ):
        _problem(response, 400, 403)
        assert "1000" not in response.get_data(as_text=True)
    firms = {r["name"]: r["id"] for r in store.records("firm").query(fields=["name"]).rows}
    store.records("deal").create(
        {"name": "other", "locked": 5, "firm": firms["firm of own"], "owner": None}
    )
    firm = client.get(f"/firm/{firms['firm of own']}")
    assert firm.status_code == 200
    assert firm.get_json()["deal_count"] == (2 if who == "all" else 1)
    assert "amount_sum" not in firm.get_json()
