"""The workflow engine over HTTP, through the WSGI app on a real store (SQLite, and
PostgreSQL when configured): inbound webhooks (secret in the URL, HMAC signatures,
idempotency keys, limits), the caller's notifications and approvals, manual starts, and
who may see which process instances."""

from __future__ import annotations

import json
import time

import pytest
from workflow_pack import open_helpdesk

from xrm import workflow
from xrm.web import create_app
from xrm.workflow import Worker
from xrm.workflow.webhooks import sign

API = "/api/v1"
PROBLEM = "application/problem+json"
URL_SECRET = "url-secret-0123456789"
HMAC_SECRET = "hmac-secret-0123456789"

EXTRA = {
    "processes/hook_subject.yaml": f"""
        process: hook_subject
        entity: ticket
        on: {{webhook: {{secret: "{URL_SECRET}"}}}}
        steps:
          - set: {{subject: "{{{{ payload.subject }}}}"}}
    """,
    "processes/erp_ticket.yaml": """
        process: erp_ticket
        on: {webhook: {secret: {env: XRM_TEST_HOOK_SECRET}, signature: hmac}}
        steps:
          - create:
              entity: ticket
              values: {subject: "{{ payload.subject }}", priority: "{{ payload.priority }}"}
    """,
    "processes/unconfigured.yaml": """
        process: unconfigured
        on: {webhook: true}
        steps:
          - stop: true
    """,
    "processes/escalate.yaml": """
        process: escalate
        entity: ticket
        on: {manual: {label: Escalate, roles: [manager]}}
        steps:
          - set: {escalated: true, counter: "{{ payload.level }}"}
    """,
    "processes/ping.yaml": """
        process: ping
        on: {manual: true}
        steps:
          - create: {entity: ticket, values: {subject: "{{ payload.subject }}"}}
    """,
}


class As:
    """The test client speaking for one user through their API token."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.token = token

    def request(self, method: str, path: str, headers=None, **kwargs):
        merged = dict(headers or {})
        if self.token is not None:
            merged["Authorization"] = f"Bearer {self.token}"
        url = path if path.startswith(("/api", "/hooks")) else API + path
        return self.client.open(url, method=method, headers=merged, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["type"]
    return body


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


@pytest.fixture
def world(database, tmp_path, monkeypatch):
    """The helpdesk pack with webhook and manual processes, its people and their tokens."""
    monkeypatch.setenv("XRM_TEST_HOOK_SECRET", HMAC_SECRET)
    store, clock = open_helpdesk(database, tmp_path, EXTRA)
    people = {
        "admin": (["administrator"], []),
        "ann": (["user"], ["support", "desk"]),
        "bob": (["user"], ["support"]),
        "max": (["manager"], ["desk"]),
        "eve": (["manager"], []),  # reads everything, updates only her teams' records
        "zed": (["user"], []),  # reads only his own records
        "boss1": (["manager"], []),
        "boss2": (["manager"], []),
    }
    users = {
        name: store.add_user(
            f"{name}@example.com", name.capitalize(), password="pass-phrase", roles=r, teams=t
        )
        for name, (r, t) in people.items()
    }
    app = create_app(store, {"TESTING": True})
    client = app.test_client()
    world = type("World", (), {})()
    world.store, world.clock, world.app, world.users = store, clock, app, users
    world.worker = Worker(store, retry_base=60)
    world.anonymous = As(app.test_client(), None)
    world.api = {name: As(client, store.create_token(uid, "tests")) for name, uid in users.items()}
    yield world
    store.close()


def instance_ids(response) -> list[int]:
    return [row["id"] for row in ok(response)["data"]]


# ------------------------------------------------------------------------------ webhooks
def test_a_webhook_with_the_secret_in_the_url_starts_its_process_once_per_key(world):
    hooks = world.anonymous  # no session, no token, no CSRF token
    ticket = world.store.records("ticket").create({"subject": "old"})
    body = {"record_id": ticket["id"], "subject": "from the ERP"}

    refused = problem(hooks.post("/hooks/hook_subject/not-the-secret", json=body), 403)
    assert refused["detail"] == "bad token"
    assert workflow.instances(world.store, process="hook_subject") == []
    wrong_route = problem(hooks.post("/hooks/hook_subject", json=body), 404)
    assert "takes its secret in the URL" in wrong_route["detail"]

    first = ok(
        hooks.post(
            f"/hooks/hook_subject/{URL_SECRET}", json=body, headers={"Idempotency-Key": "a1"}
        ),
        202,
    )
    again = ok(
        hooks.post(
            f"/hooks/hook_subject/{URL_SECRET}", json=body, headers={"Idempotency-Key": "a1"}
        ),
        202,
    )
    assert first == again and isinstance(first["instance"], int)
    assert len(workflow.instances(world.store, process="hook_subject")) == 1

    world.worker.run_once()
    assert world.store.records("ticket").get(ticket["id"])["subject"] == "from the ERP"
    detail = ok(world.api["admin"].get(f"/instances/{first['instance']}"))
    assert detail["status"] == "done" and detail["started_by"] is None
    assert [step["kind"] for step in detail["history"]] == ["start", "set", "end"]
    assert detail["context"]["payload"] == body
    assert detail["context"]["trigger"]["kind"] == "webhook"

    other = ok(hooks.post(f"/hooks/hook_subject/{URL_SECRET}", json=body), 202)
    assert other["instance"] != first["instance"]  # no key: every call starts one


def test_webhook_bodies_that_cannot_start_the_process_are_refused(world):
    hooks = world.anonymous
    url = f"/hooks/hook_subject/{URL_SECRET}"
    ticket = world.store.records("ticket").create({"subject": "old"})
    not_json = hooks.post(url, data=b"subject=x", content_type="application/x-www-form-urlencoded")
    assert "not JSON" in problem(not_json, 400)["detail"]
    assert "record_id" in problem(hooks.post(url, json={"subject": "x"}), 422)["errors"]
    assert "record_id" in problem(hooks.post(url, json={"record_id": "1"}), 422)["errors"]
    assert problem(hooks.post(url, json={"record_id": 10**6}), 404)["detail"] == (
        "ticket 1000000 not found"
    )
    nul = problem(hooks.post(url, json={"record_id": ticket["id"], "subject": "a\x00b"}), 422)
    assert "subject" in nul["errors"]
    too_long = hooks.post(
        url, json={"record_id": ticket["id"]}, headers={"Idempotency-Key": "k" * 101}
    )
    assert "Idempotency-Key" in problem(too_long, 400)["detail"]
    assert (
        "no enabled process 'nothing'"
        in problem(hooks.post("/hooks/nothing/x", json={}), 404)["detail"]
    )
    assert problem(hooks.post("/hooks/escalate/x", json={}), 404)  # not a webhook process
    assert problem(hooks.get(url), 405)
    assert problem(hooks.post("/hooks/a/b/c", json={}), 404)
    assert workflow.instances(world.store, process="hook_subject") == []


def test_signed_webhooks_need_a_fresh_signature_of_the_exact_body(world, monkeypatch):
    hooks = world.anonymous
    body = json.dumps({"subject": "Printer on fire", "priority": "high"}).encode()
    now = int(time.time())

    def post(data: bytes, signature: str | None, **headers):
        if signature is not None:
            headers["X-XRM-Signature"] = signature
        return hooks.post("/hooks/erp_ticket", data=data, headers=headers)

    for signature in (
        None,  # missing
        sign("another-secret-42", body, now),  # wrong secret
        sign(HMAC_SECRET, body, now - 600),  # ten minutes old
        "t=abc,v1=00",  # not even a signature
    ):
        assert problem(post(body, signature), 403)["detail"] == "bad or missing signature"
    tampered = body.replace(b"high", b"low")
    assert problem(post(tampered, sign(HMAC_SECRET, body, now)), 403)
    secret_in_url = hooks.post(f"/hooks/erp_ticket/{HMAC_SECRET}", data=body)
    assert "takes signed calls" in problem(secret_in_url, 404)["detail"]
    assert workflow.instances(world.store, process="erp_ticket") == []

    signature = sign(HMAC_SECRET, body, now)
    first = ok(post(body, signature, **{"Idempotency-Key": "erp-7"}), 202)
    assert ok(post(body, signature, **{"Idempotency-Key": "erp-7"}), 202) == first
    world.worker.run_once()
    created = world.store.records("ticket").query(fields=["subject", "priority"]).rows
    assert [(t["subject"], t["priority"]) for t in created] == [("Printer on fire", "high")]

    monkeypatch.delenv("XRM_TEST_HOOK_SECRET")
    unset = problem(post(body, sign(HMAC_SECRET, body, now)), 503)
    assert "not configured" in unset["detail"] and "XRM_TEST_HOOK_SECRET" not in unset["detail"]
    assert "not configured" in problem(hooks.post("/hooks/unconfigured/whatever"), 503)["detail"]


def test_webhooks_have_a_budget_per_process_and_address_and_a_size_limit(world):
    app = create_app(
        world.store,
        {"TESTING": True, "XRM_HOOK_RATE_LIMIT": "2 per minute", "MAX_CONTENT_LENGTH": 512},
    )
    hooks = As(app.test_client(), None)
    url = "/hooks/hook_subject/wrong"
    assert [hooks.post(url, json={}).status_code for _ in range(2)] == [403, 403]
    limited = problem(hooks.post(url, json={}), 429)
    assert int(limited["retry_after"]) > 0 and limited["retry_after"] == int(
        hooks.post(url, json={}).headers["Retry-After"]
    )
    # Another process has its own budget; the body limit applies before anything is parsed.
    big = {"subject": "x" * 1000}
    assert problem(hooks.post("/hooks/erp_ticket", json=big), 413)


# ------------------------------------------------------------------------- notifications
def approval_requests(world, amount: str = "5000", title: str = "Desk") -> dict:
    """A purchase by Ann that needs Boss 1 and Boss 2, who are asked in-app."""
    purchase = world.store.records("purchase", world.users["ann"]).create(
        {"title": title, "amount": amount}
    )
    world.worker.run_once()
    return purchase


def test_notifications_list_count_and_mark_read(world):
    boss = world.api["boss1"]
    first = approval_requests(world, title="Desk")
    second = approval_requests(world, title="Chair")
    listed = ok(boss.get("/notifications"))
    assert [n["record_id"] for n in listed["data"]] == [second["id"], first["id"]]  # newest first
    assert all(n["title"].startswith("Approval requested") for n in listed["data"])
    assert all(n["read_at"] is None and n["created_at"].endswith("Z") for n in listed["data"])
    assert listed["next_before"] is None
    assert ok(boss.get("/notifications/unread")) == {"unread": 2}

    page = ok(boss.get("/notifications?limit=1"))
    assert [n["record_id"] for n in page["data"]] == [second["id"]]
    older = ok(boss.get(f"/notifications?limit=1&before={page['next_before']}"))
    assert [n["record_id"] for n in older["data"]] == [first["id"]]

    newest = page["data"][0]["id"]
    others = [n["id"] for n in ok(world.api["boss2"].get("/notifications"))["data"]]
    assert ok(boss.post("/notifications/read", json={"ids": others})) == {"marked": 0}
    assert ok(boss.post("/notifications/read", json={"ids": [newest]})) == {"marked": 1}
    assert ok(boss.get("/notifications/unread")) == {"unread": 1}
    unread = ok(boss.get("/notifications?unread=1"))["data"]
    assert [n["record_id"] for n in unread] == [first["id"]]
    read = ok(boss.get("/notifications"))["data"][0]
    assert read["id"] == newest and read["read_at"] is not None
    assert ok(boss.post("/notifications/read", json={})) == {"marked": 1}
    assert ok(boss.get("/notifications/unread")) == {"unread": 0}
    assert ok(world.api["boss2"].get("/notifications/unread")) == {"unread": 2}  # untouched
    assert ok(world.api["ann"].get("/notifications")) == {"data": [], "next_before": None}

    assert "ids" in problem(boss.post("/notifications/read", json={"ids": "all"}), 422)["errors"]
    assert "every" in problem(boss.post("/notifications/read", json={"every": True}), 422)["errors"]
    problem(boss.post("/notifications/read", data="{}", content_type="text/plain"), 415)
    problem(boss.get("/notifications?limit=0"), 400)
    problem(world.anonymous.get("/api/v1/notifications"), 401)


def test_session_cookie_writes_need_the_csrf_header(world):
    approval_requests(world)
    client = world.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post(
        "/login",
        data={"email": "boss1@example.com", "password": "pass-phrase", "csrf_token": token},
    )
    assert client.get(f"{API}/notifications/unread").get_json() == {"unread": 1}
    refused = client.post(f"{API}/notifications/read", json={})
    assert problem(refused, 400)["type"] == "urn:xrm:problem:csrf-failed"
    csrf = client.get(f"{API}/meta").get_json()["csrf_token"]
    marked = client.post(f"{API}/notifications/read", json={}, headers={"X-CSRFToken": csrf})
    assert ok(marked) == {"marked": 1}


# ------------------------------------------------------------------------------ approvals
def test_approvers_decide_and_delegate_and_nobody_else_may(world):
    purchase = approval_requests(world)
    boss1, boss2, ann, max_ = (world.api[n] for n in ("boss1", "boss2", "ann", "max"))
    [mine] = ok(boss1.get("/approvals"))["data"]
    assert mine["process"] == "purchase_approval" and mine["record_id"] == purchase["id"]
    assert mine["entity"] == "purchase" and mine["delegated_from"] is None
    assert ok(ann.get("/approvals")) == {"data": []}

    # Ann is no approver: she can neither decide nor delegate Boss 1's approval.
    assert problem(ann.post(f"/approvals/{mine['id']}", json={"decision": "approved"}), 404)
    assert problem(
        ann.post(f"/approvals/{mine['id']}/delegate", json={"to": world.users["bob"]}), 404
    )
    assert problem(boss1.post("/approvals/999999", json={"decision": "approved"}), 404)
    assert (
        "decision"
        in problem(boss1.post(f"/approvals/{mine['id']}", json={"decision": "maybe"}), 422)[
            "errors"
        ]
    )
    assert (
        "to"
        in problem(
            boss1.post(f"/approvals/{mine['id']}/delegate", json={"to": world.users["boss1"]}), 422
        )["errors"]
    )
    assert (
        "no active user"
        in problem(boss1.post(f"/approvals/{mine['id']}/delegate", json={"to": 10**6}), 422)[
            "errors"
        ]["to"][0]
    )
    assert problem(  # Boss 2 approves this step already
        boss1.post(f"/approvals/{mine['id']}/delegate", json={"to": world.users["boss2"]}), 409
    )
    assert [a["id"] for a in ok(boss1.get("/approvals"))["data"]] == [mine["id"]]

    handed = ok(
        boss1.post(
            f"/approvals/{mine['id']}/delegate",
            json={"to": world.users["max"], "comment": "Max knows desks"},
        )
    )
    assert handed["delegated_to"] == world.users["max"] and handed["approval"] != mine["id"]
    assert ok(boss1.get("/approvals")) == {"data": []}
    [delegated] = ok(max_.get("/approvals"))["data"]
    assert delegated["id"] == handed["approval"]
    assert delegated["delegated_from"] == world.users["boss1"]
    gone = problem(boss1.post(f"/approvals/{mine['id']}", json={"decision": "rejected"}), 409)
    assert gone["detail"] == f"approval {mine['id']} is delegated already"
    world.worker.run_once()  # the delegate is asked like the first approvers
    assert [n["record_id"] for n in ok(max_.get("/notifications"))["data"]] == [purchase["id"]]

    decided = ok(max_.post(f"/approvals/{delegated['id']}", json={"decision": "approved"}))
    assert decided == {
        "approval": delegated["id"],
        "decision": "approved",
        "instance": delegated["instance_id"],
    }
    world.worker.run_once()
    assert world.store.records("purchase").get(purchase["id"])["status"] == "draft"  # Boss 2
    [theirs] = ok(boss2.get("/approvals"))["data"]
    ok(boss2.post(f"/approvals/{theirs['id']}", json={"decision": "approved", "comment": "fine"}))
    problem(boss2.post(f"/approvals/{theirs['id']}", json={"decision": "rejected"}), 409)
    world.worker.run_once()
    assert world.store.records("purchase").get(purchase["id"])["status"] == "approved"
    outcome = ok(world.api["admin"].get(f"/instances/{theirs['instance_id']}"))
    assert outcome["status"] == "done"
    assert outcome["context"]["vars"]["approval"]["outcome"] == "approved"


# ------------------------------------------------------------------------- manual starts
def test_manual_start_by_an_allowed_role_and_refusals(world):
    ticket = world.store.records("ticket", world.users["ann"]).create({"subject": "slow"})
    start = "/processes/escalate/start"
    refused = problem(world.api["ann"].post(start, json={"record_id": ticket["id"]}), 403)
    assert refused["detail"] == "only manager may start 'escalate'"
    not_theirs = problem(world.api["eve"].post(start, json={"record_id": ticket["id"]}), 403)
    assert not_theirs["detail"] == "you may not update this ticket"  # not her team's ticket
    assert (
        "cannot be started by hand"
        in problem(
            world.api["max"].post(
                "/processes/ticket_assign/start", json={"record_id": ticket["id"]}
            ),
            403,
        )["detail"]
    )
    assert problem(world.api["max"].post("/processes/nope/start", json={}), 404)
    assert problem(world.api["max"].post(start, json={"record_id": 10**6}), 404)
    assert "record_id" in problem(world.api["max"].post(start, json={}), 422)["errors"]
    assert (
        "payload"
        in problem(
            world.api["max"].post(start, json={"record_id": ticket["id"], "payload": [1]}), 422
        )["errors"]
    )
    assert workflow.instances(world.store, process="escalate") == []

    response = world.api["max"].post(
        start, json={"record_id": ticket["id"], "payload": {"level": 3}}
    )
    started = ok(response, 202)
    assert response.headers["Location"] == f"{API}/instances/{started['instance']}"
    world.worker.run_once()
    after = world.store.records("ticket").get(ticket["id"])
    assert after["escalated"] is True and after["counter"] == 3
    detail = ok(world.api["max"].get(response.headers["Location"]))
    assert detail["status"] == "done" and detail["started_by"] == world.users["max"]
    assert detail["label"] == "Escalate"  # no label of its own: the name, humanized
    assert "context" not in detail  # administrators only


# ------------------------------------------------------------------------------ instances
def test_who_sees_which_instances(world):
    store, api, users = world.store, world.api, world.users
    anns = store.records("ticket", users["ann"]).create({"subject": "Ann's"})
    nobodys = store.records("ticket").create({"subject": "the platform's"})
    escalated = ok(
        api["max"].post(
            "/processes/escalate/start", json={"record_id": anns["id"], "payload": {"level": 1}}
        ),
        202,
    )["instance"]
    hooked = ok(
        world.anonymous.post(
            f"/hooks/hook_subject/{URL_SECRET}", json={"record_id": nobodys["id"], "subject": "s"}
        ),
        202,
    )["instance"]
    pinged = ok(api["zed"].post("/processes/ping/start", json={"payload": {"subject": "z"}}), 202)[
        "instance"
    ]
    world.worker.run_once()

    def visible(name: str, process: str) -> list[int]:
        return instance_ids(api[name].get(f"/processes/{process}/instances"))

    # admin: all; Max started it; Ann owns the ticket; Bob shares her team; Eve reads all
    for name in ("admin", "max", "ann", "bob", "eve"):
        assert visible(name, "escalate") == [escalated], name
    assert visible("zed", "escalate") == []  # reads only his own tickets
    # the platform's ticket: only for those who read every ticket
    assert visible("admin", "hook_subject") == visible("eve", "hook_subject") == [hooked]
    assert visible("ann", "hook_subject") == visible("zed", "hook_subject") == []
    # no record: who started it (and administrators)
    assert visible("zed", "ping") == visible("admin", "ping") == [pinged]
    assert visible("ann", "ping") == visible("eve", "ping") == []

    for name, instance, status in (
        ("ann", escalated, 200),
        ("zed", escalated, 404),
        ("ann", hooked, 404),
        ("eve", hooked, 200),
        ("zed", pinged, 200),
        ("bob", pinged, 404),
    ):
        response = api[name].get(f"/instances/{instance}")
        assert response.status_code == status, (name, instance, response.get_data(as_text=True))
    assert "context" not in ok(api["ann"].get(f"/instances/{escalated}"))
    assert ok(api["admin"].get(f"/instances/{pinged}"))["context"]["payload"] == {"subject": "z"}
    problem(api["admin"].get("/instances/999999"), 404)

    admin = api["admin"]
    assert instance_ids(admin.get(f"/processes/escalate/instances?record_id={anns['id']}")) == [
        escalated
    ]
    assert instance_ids(admin.get(f"/processes/escalate/instances?record_id={nobodys['id']}")) == []
    assert instance_ids(admin.get("/processes/escalate/instances?status=done")) == [escalated]
    assert instance_ids(admin.get("/processes/escalate/instances?status=failed")) == []
    second = ok(
        api["max"].post(
            "/processes/escalate/start", json={"record_id": anns["id"], "payload": {"level": 2}}
        ),
        202,
    )["instance"]
    page = ok(admin.get("/processes/escalate/instances?limit=1"))
    assert [i["id"] for i in page["data"]] == [second] and page["data"][0]["status"] == "waiting"
    assert instance_ids(
        admin.get(f"/processes/escalate/instances?limit=1&before={page['next_before']}")
    ) == [escalated]
    problem(admin.get("/processes/escalate/instances?status=lost"), 400)
    problem(admin.get("/processes/nope/instances"), 404)
