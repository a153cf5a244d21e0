"""Items of the outside security review (issue 10) through the web layer, UI and API:

- ids that are not positive 64-bit integers answer 404 on every route taking one (the
  ``recid`` converter), and ids in query strings and forms never reach the database;
- "missing" and "not yours" get the same answer (delete, stage and kanban moves, bulk
  changes, manual starts, ``regarding`` and lookup values), so ids cannot be probed;
- a file is downloaded only by its uploader or a reader of a record holding it in a field
  not hidden from them, and a write may only set a file field to the writer's own upload;
- the OpenAPI document and the users' type-ahead show only what the caller may see.

One store per module (core and sales, the UI tests' users, a teammate of the seller and a
user whose role has scope own, an entity it may not read and hidden fields).
"""

from __future__ import annotations

import json
import re

import pytest
from browser.support import ADMIN, PASSWORD, READER, SELLER, Client, world

from xrm.storage.files import NOT_YOUR_UPLOAD, put_file
from xrm.web.routing import RecordIdConverter

API = "/api/v1"
MATE = "mate@example.com"
LIMITED = "limited@example.com"
INT64_MAX = 2**63 - 1
MISSING = 999_999  # a valid id no record has
BAD_IDS = ["0", "-1", str(INT64_MAX + 1), "9" * 30, "abc", "²", "١", "007", "1.5"]


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("access")) as built:
        store = built.store
        store.customize(
            "roles",
            {
                "roles": {
                    "limited": {
                        "label": {"en": "Limited"},
                        "permissions": {
                            "*": {"create": "own", "read": "own", "update": "own", "delete": "own"},
                            "lead": {"create": "none", "read": "none"},
                        },
                        "fields": {
                            "opportunity": {"amount": "hidden"},
                            "note": {"attachment": "hidden"},
                        },
                    }
                }
            },
        )
        built.mate = store.add_user(
            MATE, "Mia Mate", password=PASSWORD, roles=["user"], teams=["east"]
        )
        built.limited = store.add_user(LIMITED, "Lee Limited", password=PASSWORD, roles=["limited"])
        # a deal the seller may not read (the administrator is in no team of theirs)
        built.admin_deal = store.records("opportunity", built.admin).create(
            {
                "name": "Admin's own deal",
                "account": built.initech["id"],
                "close_date": "2031-01-01",
                "owner": built.admin,
            }
        )
        yield built


@pytest.fixture(scope="module")
def clients(app):
    """One signed-in client per user, shared by the module's tests (sign-in is slow)."""
    return {who: Client(app).login(who) for who in (ADMIN, SELLER, READER, MATE, LIMITED)}


def api_headers(w, user_id) -> dict:
    return {"Authorization": f"Bearer {w.store.create_token(user_id, 'access tests')}"}


def text(response) -> str:
    return response.get_data(as_text=True)


def _errors(page: str) -> list[str]:
    """The field and record messages a form page shows."""
    fields = re.findall(r'data-testid="error-[\w.]+">([^<]*)<', page)
    general = re.findall(r'data-testid="form-error">([^<]*)<', page)
    return fields + general


def _field_errors(page: str, name: str) -> list[str]:
    return re.findall(rf'data-testid="error-{name}">([^<]*)<', page)


# ------------------------------------------------------------------------ 10: ids in URLs
def _id_rules(app) -> list:
    rules = []
    for rule in app.url_map.iter_rules():
        if any(name.endswith("_id") for name in rule.arguments):
            rules.append(rule)
    return rules


def _with_id(rule, value: str) -> str:
    url = rule.rule
    for name in rule.arguments:
        replacement = (
            value if name.endswith("_id") else {"entity_name": "opportunity"}.get(name, "x")
        )
        url = re.sub(rf"<(?:[a-z]+:)?{name}>", replacement, url)
    return url


def test_every_route_with_an_id_uses_the_record_id_converter(app):
    rules = _id_rules(app)
    assert len(rules) > 20
    for rule in rules:
        for name in rule.arguments:
            if name.endswith("_id"):
                assert isinstance(rule._converters[name], RecordIdConverter), rule.rule


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_out_of_range_answer_404_on_every_route(w, app, clients, bad):
    admin = clients[ADMIN]
    headers = api_headers(w, w.admin)
    for rule in _id_rules(app):
        if rule.endpoint.startswith("hooks"):
            continue
        url = _with_id(rule, bad)
        api = url.startswith(API)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if api:
                response = admin.http.open(url, method=method, headers=headers, json={})
            elif method == "GET":
                response = admin.get(url)
            else:
                response = admin.post(url, {"_fields": "name", "name": "x"})
            assert response.status_code == 404, (method, url, response.status_code)


def test_ids_in_query_strings_and_forms_never_fail(w, clients):
    admin = clients[ADMIN]
    for bad in (str(INT64_MAX + 1), "²", "-1"):
        for url in (
            f"/inbox?before={bad}",
            f"/admin/instances?record_id={bad}&entity=account&before={bad}&limit={bad}",
            f"/admin/audit?user={bad}&before={bad}",
            f"/views/open_opportunities?saved={bad}&qf.owner={bad}&qf.account={bad}",
            f"/views/pipeline_board?qf.owner={bad}",
            f"/r/opportunity/new?account={bad}&owner={bad}",
            f"/r/note/new?regarding=account:{bad}",
        ):
            assert admin.get(url).status_code == 200, url
        assert admin.post(f"/r/opportunity/form-state?record_id={bad}", {}).status_code == 200
        response = admin.post("/kanban/pipeline_board/move", {"id": bad, "value": "proposal"})
        assert response.status_code == 404
        response = admin.post(
            f"/r/opportunity/{w.deal['id']}/stage", {"stage": "proposal", "_version": bad}
        )
        assert response.status_code in (303, 409, 422)


def test_nul_in_a_query_string_is_refused_by_every_ui_route(w, app, clients):
    """PostgreSQL refuses text holding NUL wherever a parameter meets it (a quick filter,
    the users' lookup, the admin's filters): every UI route answers 400 first."""
    admin = clients[ADMIN]
    rules = [
        r
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("ui_") and "GET" in r.methods and not r.arguments
    ]
    assert len(rules) > 10
    for rule in rules:
        for query in ("q=%00", "qf.name=a%00b", "%00=1"):
            response = admin.get(f"{rule.rule}?{query}")
            assert response.status_code == 400, (rule.rule, query, response.status_code)
    assert admin.get("/views/open_opportunities?qf.name=%00").status_code == 400


def test_a_record_id_filter_past_64_bits_is_a_bad_filter_in_the_api(w, app):
    http = app.test_client()
    headers = api_headers(w, w.seller)
    for value in ("²", str(INT64_MAX + 1)):
        response = http.get(f"{API}/opportunity?account={value}", headers=headers)
        assert response.status_code == 400
        response = http.get(f"{API}/opportunity?close_date__last_n_days={value}", headers=headers)
        assert response.status_code == 400


# ------------------------------------------------------------------------ 12: same answer
def _messages(page: str) -> list[str]:
    """What a page says to its user: the error page's message, toasts, form errors."""
    error = re.findall(r'data-testid="error">.*?<p class="mb-2">([^<]*)</p>', page, re.S)
    toasts = re.findall(r'class="toast-body">([^<]*)<', page)
    return error + toasts + _errors(page)


def _probe(client, url: str, data: dict, htmx: bool, ident: int) -> tuple:
    """A post's answer as its user sees it, with the id it names replaced: the status, where
    it leads, and the messages of the answer (or of the page it redirects to)."""
    client.get("/me")  # shows, and so clears, messages left by earlier requests
    response = client.post(url.format(ident), data, htmx=htmx)
    target = response.headers.get("Location") or response.headers.get("HX-Redirect") or ""
    page = text(response)
    if target:
        page = text(client.get(target))
    said = [m.replace(str(ident), "ID") for m in _messages(page)]
    return response.status_code, target.replace(str(ident), "ID"), said


def test_web_writes_answer_missing_and_not_yours_alike(w, clients):
    seller = clients[SELLER]
    theirs, missing = w.admin_deal["id"], MISSING
    pairs = [
        ("/r/opportunity/{}/delete", {}),
        ("/r/opportunity/{}/stage", {"stage": "proposal"}),
        ("/r/opportunity/{}/notes", {"body": "hello"}),
        ("/r/opportunity/{}", {"_fields": "name", "name": "Mine now"}),
        ("/r/opportunity/{}/start", {"process": "opportunity_review"}),
    ]
    for url, data in pairs:
        for htmx in (False, True):
            one = _probe(seller, url, data, htmx, theirs)
            other = _probe(seller, url, data, htmx, missing)
            assert one == other, (url, htmx)
            assert one[0] in (404, 200, 303), (url, one)
    for ident in (theirs, missing):
        response = seller.post("/kanban/pipeline_board/move", {"id": ident, "value": "proposal"})
        assert response.status_code == 404
        assert response.get_json()["message"] == "This record no longer exists."
    one = seller.post(
        "/views/open_opportunities/bulk", {"action": "delete", "ids": [w.deal["id"], theirs]}
    )
    other = seller.post(
        "/views/open_opportunities/bulk", {"action": "delete", "ids": [w.deal["id"], missing]}
    )
    assert one.status_code == other.status_code == 303
    assert w.store.records("opportunity").get(w.admin_deal["id"])["name"] == "Admin's own deal"
    assert w.store.records("opportunity").get(w.deal["id"])  # nothing deleted


def test_bulk_changes_name_a_hidden_record_as_missing(w, clients):
    seller = clients[SELLER]
    messages = []
    for ident in (w.admin_deal["id"], MISSING):
        seller.post(
            "/views/open_opportunities/bulk",
            {"action": "delete", "ids": [w.deal["id"], ident]},
        )
        page = text(seller.get("/views/open_opportunities"))
        found = re.findall(r"Nothing was changed: ([^<]*)<", page)
        assert found, page[:2000]
        messages.append(found[0].replace(str(ident), "ID"))
    assert messages[0] == messages[1] == "opportunity ID not found"


def test_a_readable_record_may_still_be_forbidden(w, clients):
    reader = clients[READER]  # reads every deal, may change none
    response = reader.post(f"/r/opportunity/{w.deal['id']}/delete", {})
    assert response.status_code == 403


def test_regarding_a_record_one_may_not_read_is_answered_as_missing(w, clients, app):
    seller = clients[SELLER]
    answers = []
    for ident in (w.admin_deal["id"], MISSING):
        response = seller.post(
            "/r/note/new",
            {
                "_fields": ["title", "regarding", "body"],
                "title": "Probe",
                "regarding": f"opportunity:{ident}",
                "body": "<p>is it there?</p>",
            },
        )
        answers.append(
            (response.status_code, [m.replace(str(ident), "ID") for m in _errors(text(response))])
        )
    assert answers[0] == answers[1]
    assert answers[0][0] == 422 and answers[0][1], answers
    http = app.test_client()
    headers = api_headers(w, w.seller)
    bodies = []
    for ident in (w.admin_deal["id"], MISSING):
        response = http.post(
            f"{API}/note",
            json={"body": "probe", "regarding": {"entity": "opportunity", "id": ident}},
            headers=headers,
        )
        assert response.status_code == 422
        bodies.append(json.dumps(response.get_json()["errors"]).replace(str(ident), "ID"))
    assert bodies[0] == bodies[1]
    # a plain lookup as well: an account the seller may not read is "missing"
    lookups = []
    for ident in (w.initech["id"], MISSING):
        response = http.post(
            f"{API}/contact", json={"last_name": "Probe", "account": ident}, headers=headers
        )
        lookups.append((response.status_code, response.get_json().get("errors")))
    assert lookups[0] == lookups[1] and lookups[0][0] == 422


def test_api_writes_answer_missing_and_not_yours_alike(w, app):
    http = app.test_client()
    headers = api_headers(w, w.seller)
    theirs = w.admin_deal["id"]
    for method, suffix, body in (("PATCH", "", {"name": "x"}), ("DELETE", "", None)):
        one = http.open(
            f"{API}/opportunity/{theirs}{suffix}", method=method, json=body, headers=headers
        )
        other = http.open(
            f"{API}/opportunity/{MISSING}{suffix}", method=method, json=body, headers=headers
        )
        assert one.status_code == other.status_code == 404
    one = http.post(
        f"{API}/opportunity/bulk", json={"records": [{"id": theirs, "name": "x"}]}, headers=headers
    )
    other = http.post(
        f"{API}/opportunity/bulk", json={"records": [{"id": MISSING, "name": "x"}]}, headers=headers
    )
    assert one.status_code == other.status_code == 422
    assert one.get_json()["errors"] == other.get_json()["errors"]


# ------------------------------------------------------------------------ 13: files
@pytest.fixture(scope="module")
def files(w):
    """A note about Acme with the seller's attachment; uploads nobody attached."""
    store = w.store
    attached = put_file(store, b"quarterly numbers", "numbers.txt", "text/plain", w.seller)
    note = store.records("note", w.seller).create(
        {
            "title": "Numbers",
            "body": "<p>see attachment</p>",
            "regarding": {"entity": "account", "id": w.acme["id"]},
            "attachment": attached,
            "owner": w.seller,
        }
    )
    return {
        "attached": attached,
        "note": note,
        "seller_loose": put_file(store, b"seller draft", "draft.txt", "text/plain", w.seller),
        "admin_loose": put_file(store, b"admin only", "secret.txt", "text/plain", w.admin),
    }


def test_a_file_is_downloaded_by_the_readers_of_a_record_holding_it(w, clients, files):
    key = files["attached"]["key"]
    assert clients[SELLER].get(f"/files/{key}").data == b"quarterly numbers"  # uploader
    assert clients[MATE].get(f"/files/{key}").status_code == 200  # reads the team's notes
    assert clients[READER].get(f"/files/{key}").status_code == 200  # reads every note
    assert clients[ADMIN].get(f"/files/{key}").status_code == 200


def test_a_file_is_404_for_who_may_not_read_its_record_or_field(w, clients, files):
    limited = clients[LIMITED]
    key = files["attached"]["key"]
    unknown = limited.get("/files/" + "x" * 43)
    refused = limited.get(f"/files/{key}")  # the note is not theirs
    assert refused.status_code == unknown.status_code == 404
    assert _messages(text(refused)) == _messages(text(unknown)) == ["Page not found."]
    # a note of their own pointing at the same file: the field is hidden from them
    w.store.records("note").create(
        {"title": "Copy", "body": "<p>x</p>", "attachment": files["attached"], "owner": w.limited}
    )
    assert limited.get(f"/files/{key}").status_code == 404
    # uploads nobody attached: the uploader only
    assert clients[SELLER].get(f"/files/{files['seller_loose']['key']}").status_code == 200
    assert clients[MATE].get(f"/files/{files['seller_loose']['key']}").status_code == 404
    assert clients[SELLER].get(f"/files/{files['admin_loose']['key']}").status_code == 404
    for bad in ("%00", "a%2Fb", "x" * 65, "..", "é"):
        assert clients[ADMIN].get(f"/files/{bad}").status_code == 404


def _note_form(regarding: str, kept: dict | None) -> dict:
    data = {
        "_fields": ["title", "regarding", "body", "attachment"],
        "title": "Attached",
        "regarding": regarding,
        "body": "<p>x</p>",
    }
    if kept is not None:
        data["attachment__kept"] = json.dumps(kept)
    return data


def test_a_form_may_only_attach_the_users_own_upload(w, clients, files):
    seller = clients[SELLER]
    regarding = f"account:{w.acme['id']}"
    others = seller.post("/r/note/new", _note_form(regarding, files["admin_loose"]))
    unknown = seller.post(
        "/r/note/new", _note_form(regarding, {**files["admin_loose"], "key": "k" * 43})
    )
    assert others.status_code == unknown.status_code == 422
    assert _errors(text(others)) == _errors(text(unknown))
    assert _field_errors(text(others), "attachment") == [NOT_YOUR_UPLOAD]
    assert files["admin_loose"]["key"] not in text(others)  # not offered back
    forged = {**files["seller_loose"], "name": "invoice.exe", "size": 1}
    response = seller.post("/r/note/new", _note_form(regarding, forged))
    assert response.status_code == 303
    ident = int(response.location.rstrip("/").rsplit("/", 1)[1])
    stored = w.store.records("note").get(ident)["attachment"]
    assert stored == files["seller_loose"]  # the file store's name and size, not the post's


def test_a_form_keeps_the_records_own_file_whoever_uploaded_it(w, clients, files):
    # the seller's note holds a file the administrator uploaded: saving the note keeps it
    # (as stored: a renamed copy of the value in the post changes nothing)
    note = w.store.records("note").create(
        {
            "title": "Shared",
            "body": "<p>x</p>",
            "attachment": files["admin_loose"],
            "owner": w.seller,
        }
    )
    seller = clients[SELLER]
    page = text(seller.get(f"/r/note/{note['id']}"))
    version = re.search(r'name="_version" value="(\d+)"', page).group(1)
    data = _note_form(f"account:{w.acme['id']}", {**files["admin_loose"], "name": "renamed"})
    data["_version"] = version
    response = seller.post(f"/r/note/{note['id']}", data)
    assert response.status_code == 303, _errors(text(response))
    assert w.store.records("note").get(note["id"])["attachment"] == files["admin_loose"]


def test_the_api_may_only_attach_the_callers_own_upload(w, app, files):
    http = app.test_client()
    headers = api_headers(w, w.seller)
    regarding = {"entity": "account", "id": w.acme["id"]}
    answers = []
    for value in (files["admin_loose"], {**files["admin_loose"], "key": "k" * 43}):
        response = http.post(
            f"{API}/note",
            json={"body": "x", "regarding": regarding, "attachment": value},
            headers=headers,
        )
        assert response.status_code == 422
        answers.append(response.get_json()["errors"])
    assert answers[0] == answers[1] == {"attachment": [NOT_YOUR_UPLOAD]}
    own = put_file(w.store, b"mine", "mine.txt", "text/plain", w.seller)
    response = http.post(
        f"{API}/note",
        json={"body": "x", "regarding": regarding, "attachment": {**own, "name": "other.exe"}},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["attachment"] == own
    note = response.get_json()
    # PATCH: another user's file is refused, the record's own one may stay
    response = http.patch(
        f"{API}/note/{note['id']}", json={"attachment": files["admin_loose"]}, headers=headers
    )
    assert response.status_code == 422
    response = http.patch(
        f"{API}/note/{note['id']}", json={"attachment": own, "title": "t"}, headers=headers
    )
    assert response.status_code == 200
    response = http.post(
        f"{API}/note/bulk",
        json={"records": [{"body": "x", "attachment": files["admin_loose"]}]},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"records.0.attachment": [NOT_YOUR_UPLOAD]}


# ------------------------------------------------------------------------ 15: what is shown
def _refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def test_the_openapi_document_shows_only_what_the_caller_may_read(w, app):
    http = app.test_client()
    full = http.get(f"{API}/openapi.json", headers=api_headers(w, w.admin))
    mine = http.get(f"{API}/openapi.json", headers=api_headers(w, w.limited))
    assert full.status_code == mine.status_code == 200
    assert full.headers["ETag"] != mine.headers["ETag"]
    doc, limited = full.get_json(), mine.get_json()
    assert f"{API}/lead" in doc["paths"] and "lead.Record" in doc["components"]["schemas"]
    assert not [p for p in limited["paths"] if p == f"{API}/lead" or p.startswith(f"{API}/lead/")]
    assert not [s for s in limited["components"]["schemas"] if s.startswith("lead.")]
    assert "lead" not in {t["name"] for t in limited["tags"]}
    schemas = limited["components"]["schemas"]
    for suffix in ("Record", "Input", "BulkItem"):
        assert "amount" in doc["components"]["schemas"][f"opportunity.{suffix}"]["properties"]
        assert "amount" not in schemas[f"opportunity.{suffix}"]["properties"]
        assert "attachment" not in schemas[f"note.{suffix}"]["properties"]
        assert "name" in schemas[f"opportunity.{suffix}"]["properties"]
    assert "amount" not in json.dumps(schemas["opportunity.Record"])
    # every reference still points at a schema of the document
    names = {f"#/components/schemas/{n}" for n in schemas}
    assert _refs(limited) <= names
    # the seller (reads everything, hides nothing) sees what the administrator sees
    seller = http.get(f"{API}/openapi.json", headers=api_headers(w, w.seller)).get_json()
    assert seller["paths"].keys() == doc["paths"].keys()
    # a cached copy is current only for the same roles
    again = http.get(
        f"{API}/openapi.json",
        headers={**api_headers(w, w.limited), "If-None-Match": full.headers["ETag"]},
    )
    assert again.status_code == 200


def _users(client, q: str = "") -> list[str]:
    return [row["text"] for row in client.get(f"/ui/lookup-users?q={q}").get_json()]


def test_the_users_lookup_shows_users_as_far_as_the_caller_may_see_them(w, clients):
    # administrators: everyone, with emails
    assert "Rita Reader <reader@example.com>" in _users(clients[ADMIN])
    # a seller assigns records to anyone: every active user by name; emails of the team
    seller = _users(clients[SELLER])
    assert "Mia Mate <mate@example.com>" in seller and "Sam Seller <seller@example.com>" in seller
    assert "Rita Reader" in seller and not any("reader@example.com" in t for t in seller)
    assert _users(clients[SELLER], "rita") == ["Rita Reader"]
    assert _users(clients[SELLER], "reader@example") == []  # an email cannot be confirmed
    assert _users(clients[SELLER], "mate@example") == ["Mia Mate <mate@example.com>"]
    assert _users(clients[SELLER], "%") == [] and _users(clients[SELLER], "_") == []
    # without the right to assign records to others: oneself and one's team only
    assert _users(clients[READER]) == ["Rita Reader <reader@example.com>"]
    assert _users(clients[LIMITED], "a") == ["Lee Limited <limited@example.com>"]
