"""Processes and instances in the admin area, through the test client on a real database
with real workers: the catalog's processes with instance counts, the inline diagram (with
hostile labels escaped), parked instances with their errors, Retry and Cancel (CSRF
protected, administrators only), the filterable instance list and dry runs that write
nothing."""

from __future__ import annotations

import datetime as dt
import html
import re
import socket
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, fresh_database
from markupsafe import escape
from workflow_pack import MovableClock, helpdesk_pack

from xrm import workflow
from xrm.storage import tables as T
from xrm.workflow import Worker
from xrm.workflow import tables as W

ADMIN = "ops@example.com"
RUSSIAN_ADMIN = "ops-ru@example.com"
AGENT = "agent@example.com"
HOSTILE = 'Hostile "><script>alert(1)</script> & co'

EXTRA = {
    # a set step that breaks the subject's max_length: parked after its first attempt
    "processes/breaks.yaml": """
        process: breaks
        entity: ticket
        label: Breaks on long subjects
        on: {created: true}
        if: [subject, starts_with, bad]
        max_attempts: 1
        steps:
          - set: {counter: 7}
          - name: stretch
            set: {subject: "{{ record.subject * 40 }}"}
    """,
    # a webhook to whatever hook_url says (a closed loopback port in the tests)
    "processes/call_out.yaml": """
        process: call_out
        entity: ticket
        label: Tell the ERP
        on: {enter_stage: resolved}
        steps:
          - webhook: {url: "{{ record.hook_url }}", body: {ticket: "{{ record.id }}"}, retries: 0}
    """,
    # waits two days, then counts: something to cancel while it waits
    "processes/later.yaml": """
        process: later
        entity: ticket
        label: Count later
        on: {created: true}
        if: [subject, starts_with, wait]
        steps:
          - wait: {for: 2d}
          - set: {counter: 42}
    """,
    "processes/hostile.yaml": f"""
        process: hostile
        entity: ticket
        label: '{HOSTILE}'
        on: {{manual: true}}
        steps:
          - label: "<script>alert(2)</script>"
            set: {{counter: 1}}
    """,
}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-processes")
    with fresh_database(tmp) as database:
        clock = MovableClock()
        store = database.open(clock=clock)
        try:
            store.install([SOLUTIONS / "core", helpdesk_pack(tmp, EXTRA)])
            store.add_user(
                ADMIN,
                "Olga Ops",
                password=PASSWORD,
                roles=["administrator"],
                time_zone="Europe/Moscow",
            )
            store.add_user(
                RUSSIAN_ADMIN, "Oleg Ops", password=PASSWORD, roles=["administrator"], locale="ru"
            )
            store.add_user(AGENT, "Ann Agent", password=PASSWORD, roles=["user"], teams=["support"])
            store.test_clock = clock
            store.test_worker = Worker(store, retry_base=60)
            yield store
        finally:
            store.close()


@pytest.fixture(scope="module")
def app(w):
    return make_app(w)


@pytest.fixture
def admin(app):
    return Client(app).login(ADMIN)


def text(response) -> str:
    return response.get_data(as_text=True)


def run(store) -> None:
    store.test_worker.run_once()


def ticket(store, subject: str, **values) -> dict:
    return store.records("ticket").create({"subject": subject, **values})


def only_instance(store, process: str, record_id: int) -> dict:
    [row] = [r for r in workflow.instances(store, process=process) if r["record_id"] == record_id]
    return workflow.instance(store, row["id"])


def count(store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def cells(page: str, row_attribute: str, key: str) -> dict[str, int]:
    """Status -> number from a row of the processes table (0 where nothing is linked)."""
    row = re.search(rf'<tr {row_attribute}="{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {key}"
    found = {}
    for status, cell in re.findall(r'data-status="(\w+)">(.*?)</td>', row.group(1), re.S):
        found[status] = int(re.sub(r"<[^>]+>", "", cell).strip() or 0)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


# ------------------------------------------------------------------------ who may look
def test_only_administrators_reach_processes_and_instances(w, app):
    broken = ticket(w, "bad guard")
    run(w)
    parked = only_instance(w, "breaks", broken["id"])
    anonymous = app.test_client()
    response = anonymous.get("/admin/processes")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    agent = Client(app).login(AGENT)
    for url in (
        "/admin/processes",
        "/admin/processes/breaks",
        "/admin/instances",
        f"/admin/instances/{parked['id']}",
    ):
        assert agent.get(url).status_code == 403, url
    refused = agent.post(f"/admin/instances/{parked['id']}/retry")
    assert refused.status_code == 403
    assert agent.post(f"/admin/instances/{parked['id']}/cancel").status_code == 403
    assert (
        agent.post("/admin/processes/breaks/dry-run", {"record_id": broken["id"]}).status_code
        == 403
    )
    assert workflow.instance(w, parked["id"])["status"] == "failed"  # nothing moved
    mine = w.records("ticket").create(
        {"subject": "agent's own", "owner": w.user_by_email(AGENT).id}
    )
    form = agent.get(f"/r/ticket/{mine['id']}")
    assert form.status_code == 200  # the agent reads their ticket, without the admin's link
    assert 'data-testid="record-processes"' not in form.get_data(as_text=True)


def test_posts_without_a_csrf_token_are_refused(w, admin):
    broken = ticket(w, "bad token")
    run(w)
    parked = only_instance(w, "breaks", broken["id"])
    for action in ("retry", "cancel"):
        response = admin.post(f"/admin/instances/{parked['id']}/{action}", csrf=False)
        assert response.status_code == 400
        assert "The form expired or was not sent from this site" in text(response)
    response = admin.post("/admin/processes/later/dry-run", {"record_id": broken["id"]}, csrf=False)
    assert response.status_code == 400
    assert workflow.instance(w, parked["id"])["status"] == "failed"


# ------------------------------------------------------------------------ the list
def test_the_list_shows_every_process_with_counts_that_match_the_database(w, admin):
    ticket(w, "bad count")
    ticket(w, "wait count")
    ticket(w, "plain count")
    run(w)
    page = text(admin.get("/admin/processes"))
    catalog = w.refresh()
    for name, process in catalog.processes.items():
        if ":" in name:  # an SLA's warning and breach steps: listed with the SLA
            assert f'href="/admin/processes/{name}"' in page
            continue
        assert f'<tr data-process="{name}">' in page
        assert str(escape(process.label.get())) in page  # as Jinja escapes it
    with w.engine.connect() as conn:
        i = W.instances
        expected: dict[str, dict[str, int]] = {}
        for process, status, number in conn.execute(
            sa.select(i.c.process, i.c.status, sa.func.count()).group_by(i.c.process, i.c.status)
        ):
            expected.setdefault(process, {})[status] = number
    for name in ("breaks", "later", "ticket_assign", "task_reminder"):
        shown = {s: n for s, n in cells(page, "data-process", name).items() if n}
        assert shown == expected.get(name, {}), name
    assert expected["breaks"]["failed"] >= 1 and expected["later"]["waiting"] >= 1
    # triggers in words, the pack each came from, and the SLA with its targets
    row = re.search(r'<tr data-process="breaks">(.*?)</tr>', page, re.S).group(1)
    assert "When a record is created" in row and "helpdesk" in row
    sla = re.search(r'<tr data-sla="ticket_sla">(.*?)</tr>', page, re.S).group(1)
    assert "first_response" in sla and "Urgent: 1h" in sla and "any other: 8h" in sla
    assert "Running: " in sla  # its clocks by status
    # reachable from the administration's menu and front page
    front = text(admin.get("/admin/"))
    assert front.count('href="/admin/processes"') == 2  # the menu entry and the card


def test_pages_speak_russian_to_a_russian_administrator(w, app):
    page = text(Client(app).login(RUSSIAN_ADMIN).get("/admin/processes"))
    assert "Процессы" in page and "При создании записи" in page and "Остановлен" in page


# ------------------------------------------------------------------------ one process
def test_a_process_page_draws_its_diagram_inline_with_hostile_labels_escaped(w, admin):
    response = admin.get("/admin/processes/hostile")
    assert response.status_code == 200
    page = text(response)
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    # well-formed, and the label is text, not markup, in the attribute and in the title
    root = ET.fromstring(svg)
    assert root.get("aria-label") == HOSTILE
    assert root.find("{http://www.w3.org/2000/svg}title").text == HOSTILE
    assert root.get("onload") is None
    assert "<script>" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in svg
    assert 'onload="' not in page
    assert "Started by hand" in page


def test_the_diagram_escapes_quotes_in_attributes():
    from xrm.metadata.labels import Label
    from xrm.metadata.processes import Process, Step

    process = Process(
        name="p",
        entity=None,
        label=Label.of("a\" onload='x' <b>"),
        solution="s",
        triggers=(),
        steps=(Step(kind="stop", path=(0,), spec={}, label=Label.of("</text><script>")),),
    )
    root = ET.fromstring(workflow.diagram(process))  # raises if anything broke out
    assert root.get("aria-label") == "a\" onload='x' <b>"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "</text><script>" in texts


def test_a_process_page_says_its_triggers_and_condition_in_words(w, admin):
    page = text(admin.get("/admin/processes/breaks"))
    assert "When a record is created" in page
    condition = re.search(r'data-testid="process-condition">(.*?)</dd>', page, re.S).group(1)
    assert condition.strip() == "Subject starts with bad"
    page = text(admin.get("/admin/processes/priority_raised"))
    assert "When a record is updated and one of these changes: Priority" in page
    assert "Priority is one of High, Urgent" in page  # the condition, with option labels
    assert "Priority is one of Low, Normal" in page  # and the values before the change
    assert "When the stage becomes Resolved" in text(admin.get("/admin/processes/call_out"))
    reminder = text(admin.get("/admin/processes/task_reminder"))
    assert "At the time in Due, minus the duration in Remind before" in reminder
    assert "Status equals Open" in reminder
    assert admin.get("/admin/processes/no_such_process").status_code == 404


# ------------------------------------------------------------------------ failures
def test_a_parked_instance_shows_its_error_and_retry_runs_it_again(w, admin):
    broken = ticket(w, "bad subject that will not fit")
    run(w)
    parked = only_instance(w, "breaks", broken["id"])
    assert parked["status"] == "failed"
    listing = text(admin.get("/admin/instances?process=breaks&status=failed"))
    row = re.search(
        rf'<tr data-instance="{parked["id"]}" data-status="failed">(.*?)</tr>', listing, re.S
    )
    assert row, listing
    assert "Parked" in row.group(1) and "at most 80 characters" in row.group(1)
    assert "bad subject that will not fit" in row.group(1)  # the record, by its title
    page = text(admin.get(f"/admin/instances/{parked['id']}"))
    error = re.search(r'data-testid="instance-error">(.*?)</div>', page, re.S).group(1)
    assert "at most 80 characters" in error
    history = re.search(r'data-testid="instance-history">(.*?)</table>', page, re.S).group(1)
    # the run rolled back as a whole, yet its error names the step that failed
    assert 'data-status="error"' in history and "subject" in history
    assert re.search(r'data-kind="set" data-status="error"', history), history
    assert 'data-kind="park" data-status="failed"' in history
    assert "When a record is created" not in page  # the trigger is said as an event:
    assert "The record was created" in page
    assert "11:00:00" in page  # created at 08:00 UTC, shown in the admin's Moscow time
    assert 'data-testid="retry"' in page and 'data-testid="cancel"' in page

    response = admin.post(f"/admin/instances/{parked['id']}/retry")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/admin/instances/{parked['id']}")
    after = text(admin.get(response.headers["Location"]))
    assert f"Instance #{parked['id']} will run again from the step that failed." in after
    assert 'data-testid="instance-status">Waiting<' in after
    assert workflow.instance(w, parked["id"])["status"] == "waiting"
    run(w)
    again = workflow.instance(w, parked["id"])
    assert again["status"] == "failed"  # ran again and failed again (one attempt allowed)
    assert [h["status"] for h in again["history"]].count("error") == 2

    # a retry of something not parked changes nothing and says why
    done = only_instance(w, "ticket_assign", broken["id"])
    assert done["status"] == "done"
    response = admin.post(f"/admin/instances/{done['id']}/retry")
    after = text(admin.get(response.headers["Location"]))
    assert "is done: only a parked instance can be retried." in after
    assert workflow.instance(w, done["id"])["status"] == "done"


def test_a_webhook_to_a_closed_port_is_parked_with_the_connection_error(w, admin):
    record = ticket(w, "hook", hook_url=f"http://127.0.0.1:{free_port()}/hook")
    w.records("ticket").update(record["id"], {"status": "resolved"})
    run(w)
    parked = only_instance(w, "call_out", record["id"])
    assert parked["status"] == "failed", parked
    page = text(admin.get(f"/admin/instances/{parked['id']}"))
    error = re.search(r'data-testid="instance-error">(.*?)</div>', page, re.S).group(1)
    assert html.escape(parked["error"], quote=False)[:60] in error
    assert 'data-kind="webhook" data-status="error"' in page
    # its record's instances, from the link a record page offers
    listing = text(admin.get(f"/admin/instances?entity=ticket&record_id={record['id']}"))
    assert f'data-instance="{parked["id"]}" data-status="failed"' in listing
    assert "Process instances of hook" in listing
    assert 'data-testid="sla-clocks"' in listing and "first_response" in listing


def test_cancel_stops_a_waiting_instance(w, admin):
    record = ticket(w, "wait and see")
    run(w)
    waiting = only_instance(w, "later", record["id"])
    assert waiting["status"] == "waiting"
    assert waiting["due_at"] == w.test_clock.now() + dt.timedelta(days=2)
    page = text(admin.get(f"/admin/instances/{waiting['id']}"))
    assert 'data-testid="cancel"' in page and 'data-testid="retry"' not in page
    assert "data-xrm-confirm=" in page
    response = admin.post(f"/admin/instances/{waiting['id']}/cancel")
    assert response.status_code == 303
    after = text(admin.get(response.headers["Location"]))
    assert f"Instance #{waiting['id']} cancelled: it will not run again." in after
    assert 'data-testid="instance-status">Cancelled<' in after
    assert 'data-testid="cancel"' not in after
    w.test_clock.advance(days=3)
    run(w)
    assert workflow.instance(w, waiting["id"])["status"] == "cancelled"
    assert w.records("ticket").get(record["id"])["counter"] == 0  # the set never ran
    # cancelling again is refused with the reason
    response = admin.post(f"/admin/instances/{waiting['id']}/cancel")
    after = text(admin.get(response.headers["Location"]))
    assert "is cancelled: only a waiting or parked instance can be cancelled." in after
    assert admin.post("/admin/instances/999999/cancel").status_code == 404


# ------------------------------------------------------------------------ the list's filters
def test_instances_filter_by_record_and_page_newest_first(w, admin):
    record = ticket(w, "bad paging")  # ticket_assign and breaks both start on it
    run(w)
    ids = sorted(
        (r["id"] for r in workflow.instances(w, entity="ticket", record_id=record["id"])),
        reverse=True,
    )
    assert len(ids) >= 2
    url = f"/admin/instances?entity=ticket&record_id={record['id']}"
    form = text(admin.get(f"/r/ticket/{record['id']}"))  # the record's form links here
    link = re.search(r'href="([^"]+)" data-testid="record-processes"', form).group(1)
    assert html.unescape(link) == url
    page = text(admin.get(url))
    assert [int(i) for i in re.findall(r'data-instance="(\d+)"', page)] == ids
    first = text(admin.get(url + "&limit=1"))
    assert [int(i) for i in re.findall(r'data-instance="(\d+)"', first)] == ids[:1]
    older = html.unescape(
        re.search(r'href="([^"]+)" data-testid="older-instances"', first).group(1)
    )
    assert f"before={ids[0]}" in older
    second = text(admin.get(older))
    assert [int(i) for i in re.findall(r'data-instance="(\d+)"', second)] == ids[1:2]
    failed = text(admin.get(url + "&status=failed"))
    assert [int(i) for i in re.findall(r'data-instance="(\d+)"', failed)] == [
        i for i in ids if workflow.instance(w, i)["status"] == "failed"
    ]


# ------------------------------------------------------------------------ dry runs
def test_a_dry_run_shows_the_steps_and_writes_nothing(w, admin):
    waiting = ticket(w, "wait dry")
    broken = ticket(w, "bad dry")
    run(w)
    tables = [W.instances, W.notifications, W.emails, W.approvals, T.audit, T.outbox]
    before = [count(w, t) for t in tables]
    version = w.records("ticket").get(waiting["id"])["version"]
    response = admin.post("/admin/processes/later/dry-run", {"record_id": str(waiting["id"])})
    assert response.status_code == 200
    page = text(response)
    report = re.search(r'data-testid="dry-run-report">(.*?)Nothing was written', page, re.S)
    assert report, page
    kinds = re.findall(r'<tr data-kind="(\w+)">', report.group(1))
    assert kinds == ["start", "wait", "set", "end"]  # the wait is stepped over
    assert "counter" in report.group(1) and "wait dry" in report.group(1)
    assert ">holds<" in report.group(1)
    # the htmx form gets the fragment only, here with the validation error the run would hit
    fragment = text(
        admin.post("/admin/processes/breaks/dry-run", {"record_id": str(broken["id"])}, htmx=True)
    )
    assert "<html" not in fragment and 'data-testid="dry-run-report"' in fragment
    assert "at most 80 characters" in fragment
    # a record the condition does not hold for: the run stops there
    skipped = text(admin.post("/admin/processes/breaks/dry-run", {"record_id": str(waiting["id"])}))
    assert "does not hold" in skipped and 'data-kind="condition"' in skipped
    assert [count(w, t) for t in tables] == before
    after = w.records("ticket").get(waiting["id"])
    assert after["version"] == version and after["counter"] == 0
    assert w.records("ticket").get(broken["id"])["subject"] == "bad dry"


def test_a_dry_run_explains_a_missing_or_unknown_record(w, admin):
    response = admin.post("/admin/processes/later/dry-run", {"record_id": ""})
    assert response.status_code == 422
    assert "This process runs on Ticket records: enter the id of one." in text(response)
    response = admin.post("/admin/processes/later/dry-run", {"record_id": "99999"}, htmx=True)
    assert response.status_code == 422
    assert "There is no Ticket with id 99999." in text(response)
    response = admin.post("/admin/processes/later/dry-run", {"record_id": "x1"})
    assert response.status_code == 422
    assert "A record id is a whole number, such as 42." in text(response)
