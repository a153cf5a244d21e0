"""The permission matrix of the inbox: notifications (the inbox page, the bell's badge and
the API), approval requests (the message that asks, the approvals listed to an approver)
and the emails that go with them.  A process runs as the platform, but what it tells a
user is read by that user: the message is rendered under the recipient's scope and field
rules when it is sent (one that reads what they may not read is replaced by a standard
text), and the record an inbox entry is about is named and linked only while they may
read it.  The same pack, users and roles as tests/test_security_channels.py."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import write_pack
from test_security_channels import PACK, USERS

from xrm import workflow
from xrm.workflow import Worker
from xrm.workflow import tables as W

TELL = ["user:own@c.test", "user:all@c.test", "user:scout@c.test", "user:boss@c.test"]

INBOX = {
    "templates/inbox.yaml": """
templates:
  org_secret:
    entity: org
    subject: "Secret news of {{ record.name }}"
    body: "The secret is {{ record.secret }}."
  org_plain:
    entity: org
    subject: "Plain news of {{ record.name }}"
    body: "Tier {{ record.tier }}."
  org_quiet:
    entity: org
    subject: "Quiet news"
    body: "{% if record.secret == 's-sub-a' %}yes{% else %}no{% endif %}"
  person_org:
    entity: person
    subject: "{{ record.name }} works at {{ record.org.name }}"
  org_link:
    entity: org
    subject: "Look at this"
    body: "{{ link }}"
""",
    "entities/budget.yaml": """
entity: budget
title: name
fields:
  name: {type: text, required: true}
  lines: {type: children, entity: budget_line, via: budget}
  total: {type: integer, rollup: {children: lines, sum: amount}}
""",
    "entities/budget_line.yaml": """
entity: budget_line
title: name
fields:
  name: {type: text, required: true}
  budget: {type: lookup, to: budget, on_delete: cascade}
  amount: {type: integer}
""",
    "roles/ledger.yaml": """
roles:
  ledger_role:
    permissions:
      budget: {read: all}
      budget_line: {read: own}
  nobody_role:
    permissions:
      org: {read: all}
""",
    "processes/handed.yaml": """
process: retiered
entity: org
on: {updated: [tier]}
steps:
  - notify: {to: "role:nobody_role", template: org_plain, channels: [app]}
""",
    "templates/budget.yaml": """
templates:
  budget_total:
    entity: budget
    subject: "{{ record.name }} adds up to {{ record.total }}"
""",
    "processes/budget.yaml": """
process: tell_budget
entity: budget
on: {manual: true}
steps:
  - notify: {to: ["user:ledger@c.test", "user:boss@c.test"], template: budget_total, channels: [app]}
""",
    "processes/inbox.yaml": f"""
process: tell_org
entity: org
on: {{manual: true}}
steps:
  - notify: {{to: {TELL}, template: org_secret}}
  - notify: {{to: {TELL}, template: org_plain, channels: [app]}}
  - notify: {{to: {TELL}, template: org_quiet, channels: [app]}}
  - notify: {{to: {TELL}, template: org_link, channels: [app]}}
""",
    "processes/person.yaml": """
process: tell_person
entity: person
on: {manual: true}
steps:
  - notify: {to: "user:own@c.test", template: person_org, channels: [app]}
""",
    "processes/approve.yaml": """
process: approve_org
entity: org
label: Org approval
on: {manual: true}
steps:
  - approval: {approvers: ["user:own@c.test"], template: org_secret}
  - approval: {approvers: ["user:own@c.test"]}
""",
}


@pytest.fixture
def inbox(database, tmp_path):
    """The pack of the channels' matrix with the processes above; the own user owns Sub A,
    the administrator Holding (which the own user may not read)."""
    store = database.open()
    store.install([write_pack(tmp_path, "inbox", {**PACK, **INBOX})])
    users = {
        who: store.add_user(f"{who}@c.test", password=PASSWORD, roles=[role])
        for who, role in USERS.items()
    }
    users["boss"] = store.add_user("boss@c.test", password=PASSWORD, roles=["boss"])
    users["ledger"] = store.add_user("ledger@c.test", password=PASSWORD, roles=["ledger_role"])
    orgs = store.records("org")
    ids = {
        "Holding": orgs.create(
            {"name": "Holding", "secret": "s-holding", "tier": "gold", "owner": users["boss"]}
        )["id"],
        "Sub A": orgs.create(
            {"name": "Sub A", "secret": "s-sub-a", "tier": "silver", "owner": users["own"]}
        )["id"],
    }
    yield store, users, ids
    store.close()


def _run(store, users, process: str, record_id: int) -> None:
    workflow.start(store, process, record_id, user_id=users["boss"])
    Worker(store).run_once()


def _notifications(store, user_id: int) -> list[dict]:
    return workflow.notifications(store, user_id, limit=100)


def _texts(rows) -> str:
    return "\n".join(f"{r['title']}\n{r['body'] or ''}" for r in rows)


def _emails(store, user_id: int) -> str:
    e = W.emails
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(e.c.subject, e.c.body).where(e.c.user_id == user_id))
        return "\n".join(f"{subject}\n{body}" for subject, body in rows)


def _api(store, users, who: str):
    from xrm.web import create_app

    app = create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False})
    http = app.test_client()
    headers = {"Authorization": f"Bearer {store.create_token(users[who])}"}

    def get(path: str) -> dict:
        response = http.get(f"/api/v1{path}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    return get


def _page(store, who: str) -> str:
    response = Client(make_app(store)).login(f"{who}@c.test").get("/inbox")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# ------------------------------------------------------------------ messages as rendered
def test_a_message_is_rendered_under_the_recipients_field_rules(inbox):
    """A hidden field's value never reaches a recipient from whom it is hidden: not in the
    notification, not in the email, not through a condition on it; the message is replaced
    by a standard text that leaks nothing.  Messages that read only what they may read
    arrive as written."""
    store, users, ids = inbox
    _run(store, users, "tell_org", ids["Sub A"])
    rows = _notifications(store, users["own"])
    own = _texts(rows)
    assert "Plain news of Sub A" in own and "Tier silver." in own
    assert "s-sub-a" not in own and "The secret is" not in own
    assert not {"yes", "no"} & {r["body"] for r in rows}  # the condition's answer
    assert "s-sub-a" not in _emails(store, users["own"])
    # the standard text names the process and links the record they may read
    withheld = [r for r in rows if r["title"] == "Tell org"]
    assert len(withheld) == 2  # the secret, and the condition on it
    assert all(f"/r/org/{ids['Sub A']}" in r["body"] for r in withheld)
    # all reads every org, without the secret
    everyone = _texts(_notifications(store, users["all"]))
    assert "Plain news of Sub A" in everyone and "s-sub-a" not in everyone
    assert "s-sub-a" not in _emails(store, users["all"])
    # the administrator reads everything
    rows = _notifications(store, users["boss"])
    admin = _texts(rows)
    assert "The secret is s-sub-a." in admin and "Plain news of Sub A" in admin
    assert "yes" in {r["body"] for r in rows}
    assert "The secret is s-sub-a." in _emails(store, users["boss"])


def test_a_message_about_a_record_the_recipient_may_not_read_tells_nothing_of_it(inbox):
    """The own user may not read Holding at all, and the scout may not read any org's name:
    neither learns the name, the tier, the secret or the record's address."""
    store, users, ids = inbox
    _run(store, users, "tell_org", ids["Holding"])
    own = _notifications(store, users["own"])
    assert len(own) == 4  # they are told, with the standard text
    text = _texts(own)
    for leaked in ("Holding", "gold", "s-holding", f"/r/org/{ids['Holding']}"):
        assert leaked not in text, leaked
    assert "Holding" not in _emails(store, users["own"])
    scout = _texts(_notifications(store, users["scout"]))
    assert "Holding" not in scout and "s-holding" not in scout
    everyone = _texts(_notifications(store, users["all"]))
    assert "Plain news of Holding" in everyone and f"/r/org/{ids['Holding']}" in everyone


def test_a_lookup_is_followed_only_into_records_the_recipient_may_read(inbox):
    store, users, ids = inbox
    people = store.records("person")
    kim = people.create({"name": "Kim", "org": ids["Sub A"], "owner": users["own"]})["id"]
    lee = people.create({"name": "Lee", "org": ids["Holding"], "owner": users["own"]})["id"]
    _run(store, users, "tell_person", kim)
    _run(store, users, "tell_person", lee)
    text = _texts(_notifications(store, users["own"]))
    assert "Kim works at Sub A" in text
    assert "Holding" not in text and "Lee works at" not in text


def test_a_rollup_reads_as_the_recipient_reads_it(inbox):
    """The ledger user reads every budget but only their own lines: the stored total counts
    the others' too, so they are told the total of their own lines, as their record form
    shows it."""
    store, users, ids = inbox
    budget = store.records("budget").create({"name": "Travel", "owner": users["boss"]})["id"]
    lines = store.records("budget_line")
    lines.create({"name": "mine", "budget": budget, "amount": 100, "owner": users["ledger"]})
    lines.create({"name": "theirs", "budget": budget, "amount": 900, "owner": users["boss"]})
    seen = store.records("budget", principal=store.principal(users["ledger"])).get(budget)
    assert seen["total"] == 100
    _run(store, users, "tell_budget", budget)
    assert [r["title"] for r in _notifications(store, users["ledger"])] == ["Travel adds up to 100"]
    assert [r["title"] for r in _notifications(store, users["boss"])] == ["Travel adds up to 1000"]


def test_a_stop_is_told_to_its_starter_only_as_far_as_they_may_still_read(inbox):
    """The own user changes Sub A's tier, and Sub A is handed to the mate before the worker
    gets to the process that follows; it has nobody to tell and parks. The own user, whose
    change started it, is told it stopped, but not which record it is (they may no longer
    read it); the administrators get the link."""
    store, users, ids = inbox
    mine = store.records("org", principal=store.principal(users["own"]))
    mine.update(ids["Sub A"], {"tier": "gold"})
    store.records("org").update(ids["Sub A"], {"owner": users["mate"]})
    Worker(store).run_once()
    [row] = workflow.instances(store, process="retiered", status="failed")
    assert row["user_id"] == users["own"]
    told = _texts(_notifications(store, users["own"]))
    assert "there is nobody to tell" in told, told
    assert f"/r/org/{ids['Sub A']}" not in told and "Sub A" not in told
    assert f"/r/org/{ids['Sub A']}" in _texts(_notifications(store, users["boss"]))


# ------------------------------------------------------------------ approvals
def test_an_approval_request_reads_as_the_approver_may(inbox):
    """The step's template reads the hidden secret: the approver is asked in the standard
    words. On a record they may not read, the approval is still theirs to decide, but
    neither the request, the inbox nor the API names, numbers or links the record."""
    store, users, ids = inbox
    _run(store, users, "approve_org", ids["Sub A"])
    asked = _notifications(store, users["own"])
    assert [r["title"] for r in asked] == ["Approval requested: Org approval"]
    assert "s-sub-a" not in _texts(asked) + _emails(store, users["own"])
    [mine] = workflow.pending_approvals(store, users["own"])
    workflow.decide(store, mine["id"], users["own"], "approved")
    Worker(store).run_once()
    # the second step has no template: the standard text links the record they may read
    assert f"/r/org/{ids['Sub A']}" in _texts(_notifications(store, users["own"]))

    _run(store, users, "approve_org", ids["Holding"])
    [pending] = [
        a
        for a in workflow.pending_approvals(store, users["own"])
        if a["record_id"] == ids["Holding"]
    ]
    text = _texts(_notifications(store, users["own"])) + _emails(store, users["own"])
    assert "Holding" not in text and "s-holding" not in text
    assert f"/r/org/{ids['Holding']}" not in text
    page = _page(store, "own")
    assert f'data-testid="approval-{pending["id"]}"' in page
    assert "Holding" not in page and f"/r/org/{ids['Holding']}" not in page
    assert f"#{ids['Holding']}" not in page
    listed = _api(store, users, "own")("/approvals")["data"]
    about = {a["id"]: (a["entity"], a["record_id"]) for a in listed}
    assert about[pending["id"]] == (None, None)
    # the administrator, asked the same, sees which record it is
    assert _api(store, users, "boss")("/approvals")["data"] == []


# ------------------------------------------------------------------ on view
def test_an_entry_about_a_record_no_longer_readable_neither_names_nor_links_it(inbox):
    """Sub A is handed to the mate after the own user was told about it: the inbox page
    and the API stop naming, numbering and linking it; the badge counts what the page
    lists."""
    store, users, ids = inbox
    _run(store, users, "tell_org", ids["Sub A"])
    api = _api(store, users, "own")
    before = api("/notifications")["data"]
    assert {n["record_id"] for n in before} == {ids["Sub A"]}
    page = _page(store, "own")
    assert f'href="/r/org/{ids["Sub A"]}"' in page
    store.records("org").update(ids["Sub A"], {"owner": users["mate"]})
    after = api("/notifications")["data"]
    assert [n["id"] for n in after] == [n["id"] for n in before]
    assert {(n["entity"], n["record_id"]) for n in after} == {(None, None)}
    page = _page(store, "own")
    assert f'href="/r/org/{ids["Sub A"]}"' not in page
    assert f"#{ids['Sub A']}" not in page
    assert 'data-testid="notification-record"' not in page
    unread = int(re.search(r'data-unread="(\d+)"', page).group(1))
    assert unread == len(after) == api("/notifications/unread")["unread"]
    # the mate, who reads it now, is told nothing (they were not asked) and the
    # administrator's entries still link it
    boss = _api(store, users, "boss")("/notifications")["data"]
    assert {n["record_id"] for n in boss} == {ids["Sub A"]}
