"""The workflow engine end to end, on SQLite and PostgreSQL, with a clock moved by hand:
triggers, conditions, steps, waits, approvals, SLAs, stage flows, reminders, retries and
parking, idempotency under repeated and concurrent runs, dry runs and manual starts."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS
from workflow_pack import START, MovableClock, helpdesk_pack, open_helpdesk

from xrm import workflow
from xrm.storage import tables as T
from xrm.storage.records import ValidationFailed
from xrm.workflow import Worker
from xrm.workflow import tables as W
from xrm.workflow.instances import StartRefused


def count(store, table, *where) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(*where)
        ).scalar_one()


def rows(store, table, *where, order=None) -> list[dict]:
    with store.engine.connect() as conn:
        query = (
            sa.select(table)
            .where(*where)
            .order_by(order if order is not None else table.c[list(table.c.keys())[0]])
        )
        return [dict(r) for r in conn.execute(query).mappings()]


@pytest.fixture
def helpdesk(database, tmp_path):
    store, clock = open_helpdesk(database, tmp_path)
    users = {
        name: store.add_user(f"{name}@example.com", name.capitalize(), roles=roles, teams=teams)
        for name, roles, teams in (
            ("ann", ["user"], ["support", "desk"]),
            ("bob", ["user"], ["support"]),
            ("max", ["manager"], ["desk"]),
            ("boss1", ["manager"], []),
            ("boss2", ["manager"], []),
        )
    }
    store.users_by_name = users
    yield store, clock, Worker(store, retry_base=60)
    store.close()


# ------------------------------------------------------------------------ the cases
def test_an_opportunity_moved_to_proposal_gets_a_follow_up_task_three_days_before_close(database):
    clock = MovableClock()
    store = database.open(clock=clock)
    try:
        store.install([SOLUTIONS / "sales"])
        seller = store.add_user("seller@example.com", "Seller", roles=["user"], locale="ru")
        worker = Worker(store)
        account = store.records("account", seller).create({"name": "ACME"})
        contact = store.records("contact", seller).create(
            {"last_name": "Roe", "account": account["id"]}
        )
        deals = store.records("opportunity", seller)
        deal = deals.create(
            {
                "name": "Big deal",
                "account": account["id"],
                "contact": contact["id"],
                "close_date": "2025-03-20",
            }
        )
        worker.run_once()
        deals.update(deal["id"], {"stage": "qualification"})
        worker.run_once()
        deals.update(deal["id"], {"stage": "proposal", "amount": "5000"})
        worker.run_once()
        inbox = workflow.notifications(store, seller)
        assert [n["title"] for n in inbox] == ["Стадия КП: Big deal"]  # the owner's language
        assert count(store, T.tables_for(store.catalog)["task"]) == 0
        clock.set(
            dt.datetime(2025, 3, 17, 8, 59, tzinfo=dt.UTC)
        )  # 09:00 UTC three days before is not yet here
        worker.run_once()
        assert store.records("task").count().value == 0
        clock.advance(minutes=1)
        worker.run_once()
        tasks = (
            store.records("task")
            .query(fields=["subject", "due", "owner", "regarding", "reminder"])
            .rows
        )
        assert len(tasks) == 1
        task = tasks[0]
        assert task["subject"] == "Follow up: Big deal" and task["owner"] == seller
        assert task["regarding"] == {"entity": "opportunity", "id": deal["id"]}
        assert (
            task["due"] == dt.datetime(2025, 3, 18, 9, 0, tzinfo=dt.UTC)
            and task["reminder"] == 3600
        )
        clock.advance(days=30)
        worker.run_once()
        assert store.records("task").count().value == 1  # never twice
        # the new task's own reminder fired an hour before its due time (beside what
        # other processes tell the owner over the month, such as a stale deal)
        titles = [n["title"] for n in workflow.notifications(store, seller)]
        assert titles.count("Напоминание: Follow up: Big deal") == 1, titles
        history = workflow.instances(store, process="proposal_follow_up")
        assert [i["status"] for i in history] == ["done"]
        steps = workflow.instance(store, history[0]["id"])["history"]
        assert [s["kind"] for s in steps] == [
            "start",
            "notify",
            "wait",
            "wait",
            "if",
            "activity",
            "end",
        ]
    finally:
        store.close()


def test_the_shipped_deal_review_asks_a_manager_and_tells_the_owner(database):
    store = database.open(clock=MovableClock())
    try:
        store.install([SOLUTIONS / "sales"])
        seller = store.add_user("seller@example.com", roles=["user"])
        boss = store.add_user("boss@example.com", roles=["manager"], locale="ru")
        reader = store.add_user("reader@example.com", roles=["read_only"])
        worker = Worker(store)
        account = store.records("account", seller).create({"name": "ACME"})
        deals = store.records("opportunity", seller)
        deal = deals.create(
            {"name": "Big", "account": account["id"], "close_date": "2025-03-20", "amount": 900}
        )
        with pytest.raises(StartRefused):
            workflow.start(store, "opportunity_review", deal["id"], user_id=reader)
        workflow.start(store, "opportunity_review", deal["id"], user_id=seller)
        worker.run_once()
        assert deals.get(deal["id"])["review"] == "requested"
        [asked] = workflow.pending_approvals(store, boss)
        [note] = workflow.notifications(store, boss)
        assert note["title"] == "Согласование сделки: Big"  # in the manager's language
        workflow.decide(store, asked["id"], boss, "approved", "Go ahead")
        worker.run_once()
        assert deals.get(deal["id"])["review"] == "approved"
        [told] = workflow.notifications(store, seller)
        assert told["title"] == "Deal review of Big: approved"
        assert told["body"].startswith("Go ahead\n")
    finally:
        store.close()


def test_a_follow_up_is_not_created_when_the_deal_closed_meanwhile(database):
    clock = MovableClock()
    store = database.open(clock=clock)
    try:
        store.install([SOLUTIONS / "sales"])
        seller = store.add_user("seller@example.com", roles=["user"])
        worker = Worker(store)
        account = store.records("account", seller).create({"name": "ACME"})
        deals = store.records("opportunity", seller)
        deal = deals.create(
            {"name": "D", "account": account["id"], "close_date": "2025-03-20", "amount": 10}
        )
        deals.update(
            deal["id"],
            {
                "stage": "qualification",
                "contact": store.records("contact").create({"last_name": "X"})["id"],
            },
        )
        deals.update(deal["id"], {"stage": "proposal"})
        worker.run_once()
        deals.update(deal["id"], {"stage": "won"})
        worker.run_once()
        assert deals.get(deal["id"])["closed_on"] == START.date()  # the stage's on-enter step
        clock.set(dt.datetime(2025, 3, 18, tzinfo=dt.UTC))
        worker.run_once()
        assert store.records("task").count().value == 0
        # leaving won clears the date again
        deals.update(deal["id"], {"stage": "negotiation"})
        worker.run_once()
        assert deals.get(deal["id"])["closed_on"] is None
    finally:
        store.close()


def test_an_approval_with_two_approvers_needs_both(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    purchases = store.records("purchase", users["ann"])
    purchase = purchases.create({"title": "Laptops", "amount": "5000"})
    line = store.records("purchase_line").create({"purchase": purchase["id"], "item": "laptop"})
    small = purchases.create({"title": "Pens", "amount": "10"})
    worker.run_once()
    assert (
        workflow.instances(store, process="purchase_approval", record_id=small["id"]) == []
    )  # condition
    first = workflow.pending_approvals(store, users["boss1"])
    second = workflow.pending_approvals(store, users["boss2"])
    assert len(first) == len(second) == 1 and first[0]["record_id"] == purchase["id"]
    assert workflow.unread_count(store, users["boss1"]) == 1  # asked in-app (and by email)
    workflow.decide(store, first[0]["id"], users["boss1"], "approved", "fine")
    worker.run_once()
    assert purchases.get(purchase["id"])["status"] == "draft"  # one of two is not enough
    with pytest.raises(workflow.inbox.ApprovalError):
        workflow.decide(store, first[0]["id"], users["boss1"], "approved")  # decided already
    with pytest.raises(workflow.inbox.ApprovalError):
        workflow.decide(store, second[0]["id"], users["boss1"], "approved")  # not theirs
    workflow.decide(store, second[0]["id"], users["boss2"], "approved")
    worker.run_once()
    assert purchases.get(purchase["id"])["status"] == "approved"
    assert store.records("purchase_line").get(line["id"])["state"] == "ordered"  # update related
    assert [n["title"] for n in workflow.notifications(store, users["ann"])] == [
        "Purchase Laptops: approved"
    ]
    [instance] = workflow.instances(store, process="purchase_approval")
    assert instance["status"] == "done"


def test_one_rejection_rejects_and_a_delegate_may_decide(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    purchase = store.records("purchase", users["ann"]).create({"title": "Car", "amount": "50000"})
    worker.run_once()
    [mine] = workflow.pending_approvals(store, users["boss1"])
    delegated = workflow.delegate(store, mine["id"], users["boss1"], users["max"])
    assert workflow.pending_approvals(store, users["boss1"]) == []
    assert workflow.unread_count(store, users["max"]) == 0
    worker.run_once()  # the delegation woke the instance: the delegate is asked, once
    worker.run_once()
    [asked] = workflow.notifications(store, users["max"])
    assert asked["title"].startswith("Approval requested") and asked["record_id"] == purchase["id"]
    assert sum(m["user_id"] == users["max"] for m in workflow.mail.outbox(store)) == 1
    workflow.decide(store, delegated, users["max"], "approved")
    [other] = workflow.pending_approvals(store, users["boss2"])
    workflow.decide(store, other["id"], users["boss2"], "rejected", "too expensive")
    worker.run_once()
    assert store.records("purchase").get(purchase["id"])["status"] == "rejected"


def test_an_outcome_or_a_cancel_withdraws_the_unanswered_approvals(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    purchases = store.records("purchase", users["ann"])
    purchases.create({"title": "Desk", "amount": "2000"})
    worker.run_once()
    [first] = workflow.pending_approvals(store, users["boss1"])
    [second] = workflow.pending_approvals(store, users["boss2"])
    workflow.decide(store, first["id"], users["boss1"], "rejected", "no")
    worker.run_once()
    assert workflow.pending_approvals(store, users["boss2"]) == []  # no longer asked
    with pytest.raises(workflow.inbox.ApprovalError, match="already withdrawn"):
        workflow.decide(store, second["id"], users["boss2"], "approved")
    # cancelling an instance that waits for approvals withdraws them too
    purchases.create({"title": "Chair", "amount": "3000"})
    worker.run_once()
    assert len(workflow.pending_approvals(store, users["boss1"])) == 1
    [waiting] = workflow.instances(store, process="purchase_approval", status="waiting")
    assert workflow.cancel(store, waiting["id"])
    assert workflow.pending_approvals(store, users["boss1"]) == []
    assert workflow.pending_approvals(store, users["boss2"]) == []


def test_an_approval_times_out(helpdesk):
    store, clock, worker = helpdesk
    purchase = store.records("purchase", store.users_by_name["ann"]).create(
        {"title": "Boat", "amount": "9000"}
    )
    worker.run_once()
    clock.advance(days=3)
    worker.run_once()
    assert store.records("purchase").get(purchase["id"])["status"] == "expired"


def test_an_sla_breach_escalates_a_ticket(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    tickets = store.records("ticket", users["ann"])
    # Monday 08:00 UTC: the office opens at 09:00; high priority: first response within 4h
    ticket = tickets.create({"subject": "Printer on fire", "priority": "high"})
    worker.run_once()
    assert tickets.get(ticket["id"])["agent"] in (users["ann"], users["bob"])  # round robin
    clocks = {c["metric"]: c for c in workflow.sla_clocks(store, "ticket", ticket["id"])}
    assert clocks["first_response"]["deadline"] == dt.datetime(2025, 3, 3, 13, 0, tzinfo=dt.UTC)
    assert clocks["resolution"]["deadline"] == dt.datetime(
        2025, 3, 4, 17, 0, tzinfo=dt.UTC
    )  # 16 office hours
    clock.set(dt.datetime(2025, 3, 3, 12, 0, tzinfo=dt.UTC))  # 75% of 4h after 09:00
    worker.run_once()
    agent = tickets.get(ticket["id"])["agent"]
    assert [n["title"] for n in workflow.notifications(store, agent)] == [
        "SLA warning: Printer on fire (first_response)"
    ]
    clock.set(dt.datetime(2025, 3, 3, 12, 59, tzinfo=dt.UTC))
    worker.run_once()
    assert tickets.get(ticket["id"])["escalated"] is False
    clock.set(dt.datetime(2025, 3, 3, 13, 0, tzinfo=dt.UTC))
    worker.run_once()
    escalated = tickets.get(ticket["id"])
    assert escalated["escalated"] is True and escalated["priority"] == "urgent"
    for manager in ("max", "boss1", "boss2"):
        titles = [n["title"] for n in workflow.notifications(store, users[manager])]
        assert titles == [
            "SLA breached: Printer on fire (first_response, deadline 2025-03-03T13:00:00+00:00)"
        ]
    emails = workflow.mail.outbox(store)
    assert {e["to_address"] for e in emails if e["subject"].startswith("SLA breached")} == {
        "max@example.com",
        "boss1@example.com",
        "boss2@example.com",
    }
    clocks = {c["metric"]: c for c in workflow.sla_clocks(store, "ticket", ticket["id"])}
    assert clocks["first_response"]["breached_at"] == dt.datetime(2025, 3, 3, 13, 0, tzinfo=dt.UTC)
    # the escalation made it urgent: resolution is re-targeted to 4h from the start (13:00)
    assert clocks["resolution"]["target_s"] == 4 * 3600
    assert clocks["resolution"]["deadline"] == dt.datetime(2025, 3, 3, 13, 0, tzinfo=dt.UTC)
    worker.run_once()  # the resolution breach is due at once; it is already escalated
    assert len(workflow.notifications(store, users["max"])) == 1


def test_sla_clocks_pause_resume_and_stop(helpdesk):
    store, clock, worker = helpdesk
    tickets = store.records("ticket", store.users_by_name["ann"])
    clock.set(dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC))
    ticket = tickets.create({"subject": "Slow", "priority": "normal"})
    worker.run_once()
    clock.set(dt.datetime(2025, 3, 3, 11, 0, tzinfo=dt.UTC))
    tickets.update(ticket["id"], {"status": "waiting"})  # paused after 2 office hours
    worker.run_once()
    clock.set(dt.datetime(2025, 3, 5, 10, 0, tzinfo=dt.UTC))  # days later
    worker.run_once()
    clocks = {c["metric"]: c for c in workflow.sla_clocks(store, "ticket", ticket["id"])}
    assert clocks["resolution"]["status"] == "paused" and clocks["resolution"]["used_s"] == 2 * 3600
    assert clocks["resolution"]["breached"] is False
    tickets.update(ticket["id"], {"status": "open", "first_response_at": clock.now()})
    worker.run_once()
    clocks = {c["metric"]: c for c in workflow.sla_clocks(store, "ticket", ticket["id"])}
    assert (
        clocks["first_response"]["status"] == "done"
        and clocks["first_response"]["elapsed_s"] == 2 * 3600
    )
    # 40h target, 2h used: 38 office hours from Wednesday 10:00 -> next Tuesday 16:00
    assert clocks["resolution"]["deadline"] == dt.datetime(2025, 3, 11, 16, 0, tzinfo=dt.UTC)
    tickets.update(ticket["id"], {"status": "resolved"})
    worker.run_once()
    clock.set(dt.datetime(2025, 4, 1, tzinfo=dt.UTC))
    worker.run_once()
    clocks = {c["metric"]: c for c in workflow.sla_clocks(store, "ticket", ticket["id"])}
    assert clocks["resolution"]["status"] == "done" and clocks["resolution"]["breached_at"] is None
    assert tickets.get(ticket["id"])["escalated"] is False


# ------------------------------------------------------------------------ reminders, inbox
def test_a_task_reminder_reaches_its_owner_on_time_in_app_and_by_email(helpdesk):
    store, clock, worker = helpdesk
    ann = store.users_by_name["ann"]
    tasks = store.records("task", ann)
    task = tasks.create(
        {"subject": "Call Bob", "due": START + dt.timedelta(hours=2), "reminder": "15m"}
    )
    tasks.create({"subject": "No reminder", "due": START + dt.timedelta(hours=2)})
    worker.run_once()
    assert workflow.unread_count(store, ann) == 0
    clock.set(START + dt.timedelta(hours=1, minutes=44, seconds=59))
    worker.run_once()
    assert workflow.unread_count(store, ann) == 0
    clock.advance(seconds=1)
    worker.run_once()
    assert workflow.unread_count(store, ann) == 1
    [email] = workflow.mail.outbox(store)
    assert email["to_address"] == "ann@example.com" and email["subject"] == "Reminder: Call Bob"
    assert email["message_id"].startswith("<") and email["message_id"].endswith("@localhost>")
    assert email["body"].rstrip().endswith(f"/r/task/{task['id']}")  # the task's form
    # moving the due time re-arms the reminder for the new time, once
    tasks.update(task["id"], {"due": START + dt.timedelta(days=1)})
    worker.run_once()
    clock.set(START + dt.timedelta(days=1) - dt.timedelta(minutes=15))
    worker.run_once()
    worker.run_once()
    assert workflow.unread_count(store, ann) == 2
    # a done task gets no reminder
    late = tasks.create(
        {
            "subject": "Done already",
            "due": clock.now() + dt.timedelta(hours=1),
            "reminder": "30m",
            "status": "done",
        }
    )
    worker.run_once()
    clock.advance(hours=1)
    worker.run_once()
    assert workflow.unread_count(store, ann) == 2
    assert [
        i["status"]
        for i in workflow.instances(store, process="task_reminder", record_id=late["id"])
    ] == ["skipped"]
    [first] = workflow.notifications(store, ann, limit=1)
    assert workflow.mark_read(store, ann, [first["id"]]) == 1
    assert workflow.unread_count(store, ann) == 1
    assert workflow.mark_read(store, ann) == 1 and workflow.unread_count(store, ann) == 0


def test_a_reminder_at_an_explicit_time_fires_then_and_follows_changes(helpdesk):
    store, clock, worker = helpdesk
    ann = store.users_by_name["ann"]
    tasks = store.records("task", ann)
    at = START + dt.timedelta(hours=5, minutes=30)
    task = tasks.create({"subject": "Send quote", "remind_at": at})
    worker.run_once()
    clock.set(at - dt.timedelta(seconds=1))
    worker.run_once()
    assert workflow.unread_count(store, ann) == 0
    clock.set(at)
    worker.run_once()
    assert workflow.unread_count(store, ann) == 1
    [note] = workflow.notifications(store, ann)
    assert note["title"] == "Reminder: Send quote"
    # a new moment arms it again, once; clearing it arms nothing
    later = at + dt.timedelta(days=1)
    tasks.update(task["id"], {"remind_at": later})
    worker.run_once()
    clock.set(later)
    worker.run_once()
    worker.run_once()
    assert workflow.unread_count(store, ann) == 2
    tasks.update(task["id"], {"remind_at": later + dt.timedelta(days=1)})
    worker.run_once()
    tasks.update(task["id"], {"remind_at": None})
    worker.run_once()
    clock.advance(days=2)
    worker.run_once()
    assert workflow.unread_count(store, ann) == 2


def test_deleting_a_task_cancels_its_reminder(helpdesk):
    store, clock, worker = helpdesk
    tasks = store.records("task", store.users_by_name["ann"])
    task = tasks.create(
        {"subject": "Call", "due": START + dt.timedelta(hours=2), "reminder": "15m"}
    )
    worker.run_once()
    tasks.delete(task["id"])
    worker.run_once()
    clock.advance(hours=3)
    worker.run_once()
    assert count(store, W.notifications) == 0
    assert [i["status"] for i in workflow.instances(store, process="task_reminder")] == [
        "cancelled"
    ]


# ------------------------------------------------------------------------ stage flows
def test_stage_history_is_written_with_the_change_and_roles_guard_stages(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    tickets = store.records("ticket", principal=store.principal(users["ann"]))
    ticket = tickets.create({"subject": "S"})
    clock.advance(hours=1)
    tickets.update(ticket["id"], {"status": "open"})
    clock.advance(hours=2)
    tickets.update(ticket["id"], {"status": "resolved"})
    with pytest.raises(ValidationFailed) as refused:
        tickets.update(ticket["id"], {"status": "closed"})
    assert refused.value.errors == {"status": ["your role may not move a record to Closed"]}
    store.records("ticket", principal=store.principal(users["max"])).update(
        ticket["id"], {"status": "closed"}
    )
    history = workflow.stage_history(store, "ticket", ticket["id"])
    assert [(h["stage"], h["previous"], h["seconds"]) for h in history] == [
        ("new", None, 3600),
        ("open", "new", 7200),
        ("resolved", "open", 0),
        ("closed", "resolved", 0),
    ]
    assert history[-1]["left_at"] is None and history[0]["left_at"] == START + dt.timedelta(hours=1)
    # a rolled-back change leaves no stay behind
    with pytest.raises(RuntimeError), store.transaction():
        store.records("ticket").update(ticket["id"], {"status": "open"})
        raise RuntimeError
    assert len(workflow.stage_history(store, "ticket", ticket["id"])) == 4


# ------------------------------------------------------------------------ triggers and steps
def test_updated_triggers_see_old_values_and_watch_only_their_fields(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    tickets = store.records("ticket", users["ann"])
    ticket = tickets.create({"subject": "T", "agent": users["bob"]})
    worker.run_once()
    tickets.update(ticket["id"], {"subject": "T2"})  # not a watched field
    tickets.update(ticket["id"], {"priority": "high"})
    worker.run_once()
    tickets.update(ticket["id"], {"priority": "urgent"})  # was high: `was` does not hold
    worker.run_once()
    notes = [
        n for n in workflow.notifications(store, users["bob"]) if n["title"].startswith("Ticket")
    ]
    assert [(n["title"], n["body"]) for n in notes] == [("Ticket T2", "Priority high, was normal")]


def test_assignment_round_robin_and_least_loaded(database, tmp_path):
    extra = {
        "processes/least.yaml": """
            process: least
            entity: purchase
            on: {created: true}
            steps:
              - assign: {to: team:buyers, method: least_loaded}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        ann = store.add_user("ann@example.com", teams=["support", "buyers"])
        bob = store.add_user("bob@example.com", teams=["support", "buyers"])
        worker = Worker(store)
        agents = []
        for n in range(4):
            ticket = store.records("ticket").create({"subject": f"t{n}"})
            worker.run_once()
            agents.append(store.records("ticket").get(ticket["id"])["agent"])
        assert agents == [ann, bob, ann, bob]
        store.records("purchase").create({"title": "a", "owner": ann})
        store.records("purchase").create({"title": "b", "owner": ann})
        worker.run_once()
        owners = sorted(r["owner"] for r in store.records("purchase").query(fields=["owner"]).rows)
        assert owners == [ann, bob]  # the second went to whoever had fewer
    finally:
        store.close()


def test_waiting_for_a_condition_wakes_on_change_or_times_out(database, tmp_path):
    extra = {
        "processes/watch.yaml": """
            process: watch
            entity: ticket
            on: {created: true}
            steps:
              - wait: {condition: [status, eq, resolved], timeout: 1d}
                timed_out:
                  - set: {escalated: true}
                  - stop: true
              - set: {counter: 1}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store)
        tickets = store.records("ticket")
        quick = tickets.create({"subject": "quick"})
        slow = tickets.create({"subject": "slow"})
        worker.run_once()
        clock.advance(hours=1)
        tickets.update(quick["id"], {"status": "resolved"})
        worker.run_once()
        assert tickets.get(quick["id"])["counter"] == 1
        clock.advance(hours=23)
        worker.run_once()
        assert (
            tickets.get(slow["id"])["escalated"] is True and tickets.get(slow["id"])["counter"] == 0
        )
    finally:
        store.close()


def test_a_failing_step_retries_with_back_off_then_parks_without_blocking_others(
    database, tmp_path
):
    extra = {
        "processes/breaks.yaml": """
            process: breaks
            entity: ticket
            on: {created: true}
            max_attempts: 3
            if: [subject, starts_with, bad]
            steps:
              - set: {counter: 7}
              - set: {subject: "{{ record.subject * 40 }}"}
        """,
        "processes/works.yaml": """
            process: works
            entity: ticket
            on: {created: true}
            steps:
              - set: {escalated: true}
        """,
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store, retry_base=60)
        tickets = store.records("ticket")
        bad = tickets.create({"subject": "bad one"})
        good = tickets.create({"subject": "good one"})
        worker.run_once()
        assert tickets.get(good["id"])["escalated"] is True
        assert tickets.get(bad["id"])["counter"] == 0  # the whole run rolled back, not half of it
        [failing] = workflow.instances(store, process="breaks")
        assert failing["status"] == "waiting" and "subject" in failing["error"]
        assert failing["due_at"] == START + dt.timedelta(seconds=60)
        clock.advance(seconds=60)
        worker.run_once()
        assert workflow.instance(store, failing["id"])["due_at"] == clock.now() + dt.timedelta(
            seconds=120
        )
        clock.advance(seconds=120)
        worker.run_once()
        parked = workflow.instance(store, failing["id"])
        assert parked["status"] == "failed" and "at most 80 characters" in parked["error"]
        errors = [h for h in parked["history"] if h["status"] == "error"]
        assert len(errors) == 3
        # each names the step that failed (the second set), though its run rolled back
        assert {(e["kind"], e["path"]) for e in errors} == {("set", "1")}
        clock.advance(days=1)
        worker.run_once()
        assert workflow.instance(store, failing["id"])["status"] == "failed"  # parked stays parked
        assert workflow.retry(store, failing["id"])
        worker.run_once()
        assert workflow.instance(store, failing["id"])["status"] == "waiting"  # tried again
    finally:
        store.close()


def test_a_process_that_retriggers_itself_stops(database, tmp_path):
    extra = {
        "processes/loop.yaml": """
            process: loop
            entity: ticket
            on: {updated: [counter]}
            steps:
              - set: {counter: "{{ record.counter + 1 }}"}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store)
        ticket = store.records("ticket").create({"subject": "x"})
        store.records("ticket").update(ticket["id"], {"counter": 1})
        worker.run_once()
        assert store.records("ticket").get(ticket["id"])["counter"] == 1 + 9  # depth 0..8
    finally:
        store.close()


def test_a_sub_process_runs_and_its_parent_waits_for_it(database, tmp_path):
    extra = {
        "processes/parent.yaml": """
            process: parent
            entity: ticket
            on: {created: true}
            steps:
              - start: {process: child, wait: true}
              - set: {subject: "after child {{ record.counter }}"}
        """,
        "processes/child.yaml": """
            process: child
            entity: ticket
            on: {manual: true}
            steps:
              - wait: {for: 1h}
              - set: {counter: 5}
        """,
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store)
        ticket = store.records("ticket").create({"subject": "x"})
        worker.run_once()
        assert store.records("ticket").get(ticket["id"])["subject"] == "x"
        clock.advance(hours=1)
        worker.run_once()
        assert store.records("ticket").get(ticket["id"])["subject"] == "after child 5"
        [child] = workflow.instances(store, process="child")
        [parent] = workflow.instances(store, process="parent")
        assert child["parent_id"] == parent["id"] and child["status"] == parent["status"] == "done"
    finally:
        store.close()


def test_a_scheduled_process_runs_for_each_matching_record(database, tmp_path):
    extra = {
        "processes/daily.yaml": """
            process: daily
            entity: ticket
            on: {schedule: "0 9 * * *"}
            if: [status, eq, new]
            steps:
              - set: {counter: "{{ record.counter + 1 }}"}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store)
        tickets = store.records("ticket")
        fresh = tickets.create({"subject": "a"})
        done = tickets.create({"subject": "b", "status": "resolved"})
        worker.run_once()
        clock.set(START.replace(hour=9))
        worker.run_once()
        clock.set(START.replace(hour=9) + dt.timedelta(days=1))
        worker.run_once()
        assert tickets.get(fresh["id"])["counter"] == 2 and tickets.get(done["id"])["counter"] == 0
        ticks = [i for i in workflow.instances(store, process="daily") if i["record_id"] is None]
        assert [t["status"] for t in ticks] == ["waiting", "done", "done"]
    finally:
        store.close()


def test_a_failing_run_of_a_scheduled_process_keeps_its_schedule(database, tmp_path):
    """The next tick is queued apart from the run of the steps: a run that fails (here a
    record it creates is invalid) must not take the schedule down with it."""
    extra = {
        "processes/nightly.yaml": """
            process: nightly
            on: {schedule: "0 9 * * *"}
            steps:
              - create: {entity: ticket, values: {counter: 1}}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store)
        worker.run_once()
        for day in range(3):
            clock.set(START.replace(hour=9) + dt.timedelta(days=day))
            worker.run_once()
        every = workflow.instances(store, process="nightly")
        ticks = sorted((r for r in every if r["key"].startswith("cron:")), key=lambda r: r["key"])
        runs = [r for r in every if r["key"].startswith("run:")]
        assert [t["status"] for t in ticks] == ["done", "done", "done", "waiting"]
        assert ticks[-1]["due_at"] > clock.now()
        assert len(runs) == 3  # one a day, each failing on its own (retried with back-off)
        assert all(r["status"] in ("waiting", "failed") and r["error"] for r in runs)
    finally:
        store.close()


def test_manual_start_checks_roles_and_access(database, tmp_path):
    extra = {
        "processes/escalate.yaml": """
            process: escalate
            entity: ticket
            on: {manual: {label: Escalate, roles: [manager]}}
            steps:
              - set: {escalated: true}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        ann = store.add_user("ann@example.com", roles=["user"], teams=["desk"])
        max_ = store.add_user("max@example.com", roles=["manager"], teams=["desk"])
        stranger = store.add_user("eve@example.com", roles=["manager"])
        ticket = store.records("ticket", ann).create({"subject": "x"})
        with pytest.raises(PermissionError, match="only manager may start"):
            workflow.start(store, "escalate", ticket["id"], user_id=ann)
        with pytest.raises(PermissionError):
            workflow.start(
                store, "ticket_assign", ticket["id"], user_id=max_
            )  # not a manual process
        with pytest.raises(PermissionError, match="may not update this ticket"):
            workflow.start(store, "escalate", ticket["id"], user_id=stranger)  # not their team's
        ident = workflow.start(store, "escalate", ticket["id"], user_id=max_)
        Worker(store).run_once()
        assert store.records("ticket").get(ticket["id"])["escalated"] is True
        assert workflow.instance(store, ident)["user_id"] == max_
    finally:
        store.close()


def test_dry_run_shows_what_would_happen_and_writes_nothing(helpdesk):
    store, clock, worker = helpdesk
    users = store.users_by_name
    purchase = store.records("purchase", users["ann"]).create({"title": "Desk", "amount": "2000"})
    ticket = store.records("ticket", users["ann"]).create(
        {"subject": "t", "agent": users["bob"], "priority": "high"}
    )
    tables = [W.instances, W.notifications, W.emails, W.approvals, T.audit, T.outbox]
    before = [count(store, t) for t in tables]
    report = workflow.dry_run(store, "purchase_approval", purchase["id"])
    assert report["condition"] is True
    assert [s["kind"] for s in report["steps"]] == ["start", "approval", "end"]
    assert {a["user_id"] for a in report["approvals"]} == {users["boss1"], users["boss2"]}
    report = workflow.dry_run(store, "sla:ticket_sla:breach", ticket["id"])
    assert [s["kind"] for s in report["steps"]] == ["start", "if", "set", "notify", "end"]
    assert {n["title"] for n in report["notifications"]} == {
        "SLA breached: t (first_response, deadline 2025-03-03T08:00:00+00:00)"
    }
    assert {n["user_id"] for n in report["notifications"]} == {
        users["max"],
        users["boss1"],
        users["boss2"],
    }
    assert [count(store, t) for t in tables] == before
    assert store.records("ticket").get(ticket["id"])["escalated"] is False
    text = workflow.dryrun.describe(report)
    assert "nothing was written" in text


def test_concurrent_workers_run_each_reminder_once(database, tmp_path):
    store, clock = open_helpdesk(database, tmp_path)
    try:
        owner = store.add_user("ann@example.com")
        due = START + dt.timedelta(minutes=30)
        store.records("task", owner).bulk_create(
            [{"subject": f"t{n}", "due": due, "reminder": "10m"} for n in range(300)]
        )
        Worker(store).run_once()  # schedules the 300 reminders
        clock.set(due)
        workers = [
            Worker(store, batch_size=25, name=f"w{n}")
            for n in range(3 if database.dialect == "postgresql" else 2)
        ]
        errors = []

        def work(w):
            try:
                w.run_once()
            except Exception as exc:  # pragma: no cover - shown below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert workflow.unread_count(store, owner) == 300
        assert count(store, W.emails) == 300
        assert count(store, W.instances, W.instances.c.status == "done") == 300
    finally:
        store.close()


def test_a_dead_workers_claims_are_re_readied_and_run_once(helpdesk):
    store, clock, worker = helpdesk
    ann = store.users_by_name["ann"]
    store.records("task", ann).create(
        {"subject": "x", "due": START + dt.timedelta(minutes=20), "reminder": "5m"}
    )
    worker.run_once()
    clock.advance(minutes=15)
    from xrm.workflow import claims

    claimed = claims.claim_instances(store.engine, "dead-worker", clock.now(), 30, 10)
    assert len(claimed) == 1  # ... and the worker dies here
    worker.run_once()
    assert workflow.unread_count(store, ann) == 0  # leased to the dead worker
    clock.advance(seconds=31)
    worker.run_once()
    assert workflow.unread_count(store, ann) == 1
    # the dead worker coming back to life cannot apply its stale batch
    assert worker._execute(claimed, store.settings()) == []
    assert workflow.unread_count(store, ann) == 1 and count(store, W.emails) == 1


def test_created_records_are_not_doubled_when_a_step_is_repeated(helpdesk):
    store, clock, worker = helpdesk
    ann = store.users_by_name["ann"]
    from xrm.workflow.runner import Batch, load_runs

    extra_process = store.catalog.processes["purchase_approval"]
    assert extra_process  # the pack is loaded
    deal = store.records("purchase", ann).create({"title": "p", "amount": "5"})
    # run a create step twice for one instance (as a retry after a lost commit would)
    i = W.instances
    with store.engine.begin() as conn:
        ident = conn.execute(
            i.insert()
            .values(
                **workflow.effects.new_instance(
                    "purchase_approval", "purchase", deal["id"], clock.now(), key=None
                )
            )
            .returning(i.c.id)
        ).scalar_one()
    from xrm.metadata.processes import Step

    step = Step(
        kind="create",
        path=(9,),
        spec={"entity": "note", "values": {"body": "hello", "regarding": f"purchase:{deal['id']}"}},
    )
    from xrm.workflow.steps import step_create

    for _ in range(2):
        with store.transaction() as unit:
            batch = Batch(store, unit, store.catalog, clock.now(), settings={})
            row = dict(workflow.instance(store, ident))
            [run] = load_runs(batch, [row])
            step_create(batch, run, step)
            batch._close_savepoint(run, ok=True)
    assert store.records("note").count().value == 1


def test_inbound_webhooks_need_the_secret_and_start_once_per_key(database, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret-s3cret")
    extra = {
        "processes/inbound.yaml": """
            process: inbound
            entity: ticket
            on: {webhook: {secret: {env: HOOK_SECRET}, signature: hmac}}
            steps:
              - set: {subject: "{{ payload.subject }}"}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        from xrm.workflow.webhooks import WebhookRefused, sign

        ticket = store.records("ticket").create({"subject": "old"})
        body = json.dumps({"record_id": ticket["id"], "subject": "from outside"}).encode()
        import time

        header = sign("s3cret-s3cret", body, int(time.time()))
        with pytest.raises(WebhookRefused):
            workflow.receive_webhook(
                store,
                "inbound",
                body,
                {"X-XRM-Signature": sign("wrong-secret", body, int(time.time()))},
            )
        first = workflow.receive_webhook(
            store, "inbound", body, {"X-XRM-Signature": header, "Idempotency-Key": "k1"}
        )
        again = workflow.receive_webhook(
            store, "inbound", body, {"X-XRM-Signature": header, "Idempotency-Key": "k1"}
        )
        assert first == again
        Worker(store).run_once()
        assert store.records("ticket").get(ticket["id"])["subject"] == "from outside"
    finally:
        store.close()


# ------------------------------------------------------------------------ the long-running worker
def test_a_running_worker_wakes_when_a_record_changes(database, tmp_path):
    """PostgreSQL: LISTEN/NOTIFY wakes it long before its (here 30 s) poll; SQLite: it polls."""
    import time

    store = database.open()  # the real clock
    try:
        store.install([SOLUTIONS / "core", helpdesk_pack(tmp_path)])
        ann = store.add_user("ann@example.com", teams=["support"])
        poll = 30.0 if database.dialect == "postgresql" else 0.2
        worker = Worker(store, poll=poll)
        thread = worker.start()
        time.sleep(1.0)  # the worker has looked for work and sleeps
        ticket = store.records("ticket").create({"subject": "wake up"})
        started = time.monotonic()
        while (
            time.monotonic() - started < 10
            and store.records("ticket").get(ticket["id"])["agent"] is None
        ):
            time.sleep(0.05)
        assert store.records("ticket").get(ticket["id"])["agent"] == ann
        assert time.monotonic() - started < 5
        worker.stop()
        thread.join(timeout=35)
        assert not thread.is_alive()
    finally:
        store.close()


def test_users_and_teams_named_by_processes_are_checked_against_the_database(database, tmp_path):
    from xrm.workflow.checks import database_problems

    extra = {
        "processes/names.yaml": """
            process: names
            entity: ticket
            on: {created: true}
            steps:
              - notify: {to: [user:ghost@example.com, team:support], template: ticket_note}
              - assign: {to: team:nobody}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        store.add_user("ann@example.com", teams=["support"])
        problems = sorted(str(p).split("/helpdesk/")[1] for p in database_problems(store))
        assert problems[0].startswith(
            "processes/names.yaml:5:5: processes.names: no active user with email 'ghost@example.com'"
        )
        assert (
            problems[1]
            == "processes/names.yaml:6:5: processes.names: no team 'nobody' in this database"
        )
        assert [p.split(": ")[0] for p in problems[2:]] == [
            "processes/purchase_approval.yaml:6:5"
        ] * 2  # boss1, boss2
    finally:
        store.close()


def test_the_command_line_entry_points(helpdesk, capsys, tmp_path):
    """xrm worker --once, xrm process list / dry-run / diagram / instances / retry (the CLI
    registers these parsers; here they run on the fixture's store)."""
    import argparse
    import contextlib

    from xrm.workflow import commands

    store, clock, worker = helpdesk

    @contextlib.contextmanager
    def store_of(args):
        yield store

    parser = argparse.ArgumentParser(prog="xrm")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_worker(sub, store_of)
    commands.add_process(sub, store_of)

    def run(*argv) -> tuple[int, str]:
        args = parser.parse_args(list(argv))
        code = args.handler(args)
        return code, capsys.readouterr().out

    purchase = store.records("purchase", store.users_by_name["ann"]).create(
        {"title": "Desk", "amount": "2000"}
    )
    code, out = run("process", "list")
    assert code == 0 and "purchase_approval\tpurchase\tcreated" in out
    code, out = run("process", "dry-run", "purchase_approval", "--record", str(purchase["id"]))
    assert code == 0 and "approval" in out and "nothing was written" in out
    code, out = run("process", "diagram", "purchase_approval", "--out", str(tmp_path / "p.svg"))
    assert code == 0 and (tmp_path / "p.svg").read_text().startswith("<svg")
    assert run("process", "dry-run", "purchase_aproval")[0] == 2
    code, out = run("worker", "--once")
    assert code == 0 and json.loads(out)["started"] >= 1
    code, out = run("process", "instances", "--process", "purchase_approval")
    assert code == 0 and "\twaiting\t" in out
    assert run("process", "retry", "1")[0] == 1  # not parked


def test_a_run_that_fails_after_creating_a_record_leaves_no_record_and_retries_once(
    database, tmp_path
):
    extra = {
        "processes/create_then_set.yaml": """
            process: create_then_set
            entity: ticket
            on: {created: true}
            steps:
              - create: {entity: note, values: {body: "about {{ record.id }}", regarding: "ticket:{{ record.id }}"}}
              - set: {subject: "{{ record.hook_url.nope if record.hook_url == 'bad' else record.hook_url }}"}
        """
    }
    store, clock = open_helpdesk(database, tmp_path, extra)
    try:
        worker = Worker(store, retry_base=60)
        ticket = store.records("ticket").create({"subject": "s", "hook_url": "bad"})
        worker.run_once()  # the set step fails before it touches the database
        assert store.records("note").count().value == 0
        [instance] = workflow.instances(store, process="create_then_set")
        assert instance["status"] == "waiting" and instance["error"]
        store.records("ticket").update(ticket["id"], {"hook_url": "short"})
        clock.advance(seconds=60)
        worker.run_once()
        assert workflow.instance(store, instance["id"])["status"] == "done"
        assert store.records("note").count().value == 1
        assert store.records("ticket").get(ticket["id"])["subject"] == "short"
    finally:
        store.close()
