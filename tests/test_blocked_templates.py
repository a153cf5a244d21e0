"""A parked instance whose recipients were a template (``team:{{ record.queue.team }}``)
says what the template named, from the record's values when it parked, to each reader as
their roles let them read it: the team it named, or the expression in words and why it
named nobody; the expression alone to a reader who may not read a field it reads, and in
the instance's stored error.  Notifications, the administrators' instance pages, the
record page's start button and the API's start answer.  SQLite and PostgreSQL."""

from __future__ import annotations

import re
import textwrap

import pytest
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, write_pack

from xrm import workflow
from xrm.workflow import Worker
from xrm.workflow.blocked import stop_reason

PACKS = [SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "service"]
#: Reads and starts processes on cases, but may not see which team a queue has.
NO_TEAMS = {
    "label": {"en": "Case desk without teams"},
    "permissions": {
        "*": {"read": "all"},
        "support_case": {"create": "all", "read": "all", "update": "all"},
    },
    "fields": {"queue": {"team": "hidden"}},
}
ROUTE_AGAIN = """
process: route_again
entity: support_case
label: {en: Route again}
on: {manual: true}
steps:
  - assign: {to: "team:{{ record.queue.team }}"}
"""
EXPRESSION = "team named by the case's queue's team"


@pytest.fixture
def desk(database, tmp_path):
    store = database.open()
    pack = write_pack(
        tmp_path,
        "rerouting",
        {"processes/route_again.yaml": textwrap.dedent(ROUTE_AGAIN).lstrip()},
        depends={"service": ">=1.0"},
    )
    store.install([*PACKS, pack])
    store.customize("roles", {"roles": {"no_teams": NO_TEAMS}})
    people = {
        "admin": store.add_user("root@example.com", "Root", roles=["administrator"]),
        "clerk": store.add_user(
            "clerk@example.com", "Clerk", password=PASSWORD, roles=["no_teams"]
        ),
        "boss": store.add_user(
            "boss@example.com", "Boss", password=PASSWORD, roles=["administrator"], locale="ru"
        ),
    }
    queues = store.records("queue")
    night = queues.create({"name": "Night", "code": "NIGHT", "team": "nightshift"})
    bare = queues.create({"name": "Bare", "code": "BARE"})
    yield store, people, night, bare
    store.close()


def _case(store, user, **values):
    return store.records("support_case", user).create({"subject": "Printer on fire", **values})


def _parked(store, process: str) -> dict:
    [row] = workflow.instances(store, process=process, status="failed")
    return row


def _notes(store, user) -> str:
    return "\n".join(n["body"] for n in workflow.notifications(store, user))


def test_the_team_a_template_named_is_shown_to_those_who_may_read_it(desk):
    store, people, night, _bare = desk
    case = _case(store, people["clerk"], queue=night["id"])
    Worker(store).run_once()  # case_routing: the least loaded of team nightshift: nobody
    row = _parked(store, "case_routing")
    # the stored error names the expression, never a value nor the raw template
    assert row["error"] == (
        f"cannot go on: there is nobody to assign it to ({EXPRESSION}: no active user)"
    )
    # what the template read is kept, as it was when the instance parked
    store.records("queue").update(night["id"], {"team": "dayshift"})
    admin = store.principal(people["admin"])
    clerk = store.principal(people["clerk"])
    assert stop_reason(store, row["id"], "en", admin) == (
        "there is nobody to assign it to (team nightshift: no active user)"
    )
    assert stop_reason(store, row["id"], "ru", admin) == (
        "не на кого назначить (команда «nightshift»: нет активных пользователей)"
    )
    # the clerk who created the case may not read a queue's team: the expression
    assert stop_reason(store, row["id"], "en", clerk) == (
        f"there is nobody to assign it to ({EXPRESSION}: no active user)"
    )
    assert stop_reason(store, row["id"], "en") == (
        f"there is nobody to assign it to ({EXPRESSION}: no active user)"
    )
    # the notifications: each reader in their language, with what they may read
    assert "(team nightshift: no active user)" in _notes(store, people["admin"])
    assert "(команда «nightshift»: нет активных пользователей)" in _notes(store, people["boss"])
    told = _notes(store, people["clerk"])
    assert f"({EXPRESSION}: no active user)" in told
    assert "nightshift" not in told and "{{" not in told
    # the administrators' pages: the list, the record's own view and the instance
    app = make_app(store)
    root = Client(app).login("boss@example.com")
    shown = re.compile(r'<tr data-instance="\d+" data-status="failed">.*?</tr>', re.S)
    for url in (
        "/admin/instances?status=failed",
        f"/admin/instances?entity=support_case&record_id={case['id']}",
    ):
        [listed] = shown.findall(root.get(url).get_data(as_text=True))
        assert "команда «nightshift»" in listed, url
    page = root.get(f"/admin/instances/{row['id']}").get_data(as_text=True)
    alert = re.search(r'data-testid="instance-error">(.*?)</div>', page, re.S).group(1)
    assert "команда «nightshift»" in alert and "{{" not in alert


def test_a_template_that_named_nobody_says_why(desk):
    store, people, _night, bare = desk
    admin = store.principal(people["admin"])
    in_bare = _case(store, people["admin"], queue=bare["id"])
    nowhere = _case(store, people["admin"])
    for case in (in_bare, nowhere):
        ident = workflow.start(
            store, "route_again", case["id"], user_id=people["admin"], check=True
        )
        assert workflow.instance(store, ident)["status"] == "failed"
    reasons = {
        stop_reason(store, row["id"], "en", admin)
        for row in workflow.instances(store, process="route_again", status="failed")
    }
    assert reasons == {
        f"there is nobody to assign it to ({EXPRESSION}: the case has no queue)",
        f"there is nobody to assign it to ({EXPRESSION}: the case's queue has no team)",
    }
    russian = {
        stop_reason(store, row["id"], "ru", admin)
        for row in workflow.instances(store, process="route_again", status="failed")
    }
    assert russian == {
        "не на кого назначить (команда из поля «Обращение › Очередь › Команда»: "
        "поле «Обращение › Очередь» не заполнено)",
        "не на кого назначить (команда из поля «Обращение › Очередь › Команда»: "
        "поле «Обращение › Очередь › Команда» не заполнено)",
    }


def test_the_record_page_and_the_api_answer_as_the_starter_may_read(desk):
    store, people, night, _bare = desk
    case = _case(store, people["admin"])
    store.records("support_case").update(case["id"], {"queue": night["id"]})
    Worker(store).run_once()
    app = make_app(store)
    # the clerk starts it from the record page: told why, without the hidden team
    clerk = Client(app).login("clerk@example.com")
    response = clerk.post(
        f"/r/support_case/{case['id']}/start", {"process": "route_again"}, htmx=True
    )
    toast = re.search(r'<div class="toast-body">([^<]*)</div>', response.get_data(as_text=True))
    text = toast.group(1).replace("&#39;", "'")
    assert f"({EXPRESSION}: no active user)" in text and "nightshift" not in text
    # an administrator through the API reads the team
    token = store.create_token(people["boss"], "tests")
    body = (
        app.test_client()
        .post(
            "/api/v1/processes/route_again/start",
            json={"record_id": case["id"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        .get_json()
    )
    assert body["status"] == "failed"
    assert body["reason"] == (
        "не на кого назначить (команда «nightshift»: нет активных пользователей)"
    )
