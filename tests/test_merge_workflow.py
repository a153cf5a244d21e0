"""Merging two records and the removed record's processes (xrm/workflow/merging.py): its
waiting instances of a process the kept record does not run move to the kept record, and
their timers fire there exactly once; those the kept record runs already are cancelled
with a note naming the merge; SLA clocks follow the record, with their timers; undoing
the merge brings back what is still waiting and lets the cancelled wait again.  SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack
from workflow_pack import MovableClock

from xrm import workflow
from xrm.storage import merge as M
from xrm.storage.tables import tables_for
from xrm.workflow import Worker
from xrm.workflow import tables as W

START = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)  # a Monday
PROCESSES = {
    "processes/follow_up.yaml": """
        process: follow_up
        entity: contact
        on: {manual: true}
        steps:
          - wait: {for: 1h}
          - create:
              entity: note
              values:
                body: "Follow up {{ record.last_name }}"
                regarding: {entity: contact, id: "{{ record.id }}"}
        """,
    "processes/check_in.yaml": """
        process: check_in
        entity: contact
        on: {manual: true}
        steps:
          - wait: {for: 2h}
          - create:
              entity: note
              values:
                body: "Check in {{ record.last_name }}"
                regarding: {entity: contact, id: "{{ record.id }}"}
        """,
    # parks on a contact whose last name makes too long a job title (a wait first, so
    # that a contact can run it without parking yet)
    "processes/retitle.yaml": """
        process: retitle
        entity: contact
        on: {manual: true}
        max_attempts: 1
        steps:
          - wait: {for: 1h}
          - set: {job_title: "{{ record.last_name * 10 }}"}
        """,
    # a date trigger: a pending start three days before the contact's birthday
    "processes/card.yaml": """
        process: card
        entity: contact
        on: {date: {field: birthday, offset: -3d}}
        steps:
          - create:
              entity: note
              values:
                body: "Card for {{ record.last_name }}"
                regarding: {entity: contact, id: "{{ record.id }}"}
        """,
    # a wait relative to the birthday, started by hand
    "processes/greet.yaml": """
        process: greet
        entity: contact
        on: {manual: true}
        steps:
          - wait: {until: birthday, offset: -1d}
          - create:
              entity: note
              values:
                body: "Greet {{ record.last_name }}"
                regarding: {entity: contact, id: "{{ record.id }}"}
        """,
}


@pytest.fixture
def office(database, tmp_path):
    clock = MovableClock(START)
    store = database.open(clock=clock)
    pack = write_pack(
        tmp_path,
        "follow_ups",
        {path: textwrap.dedent(text).lstrip() for path, text in PROCESSES.items()},
        depends={"core": ">=1.0"},
    )
    store.install([SOLUTIONS / "core", pack])
    admin = store.add_user("root@example.com", "Root", roles=["administrator"])
    contacts = store.records("contact", admin)
    keep = contacts.create({"first_name": "Jane", "last_name": "Doe", "owner": admin})
    dupe = contacts.create({"first_name": "Jane", "last_name": "Doe-Smith", "owner": admin})
    yield store, clock, admin, keep["id"], dupe["id"]
    store.close()


def _start(store, admin, process: str, record_id: int) -> int:
    """Start a process and run it to its wait: a timer due later."""
    ident = workflow.start(store, process, record_id, user_id=admin, check=True)
    Worker(store).run_once()
    row = workflow.instance(store, ident)
    assert row["status"] == "waiting" and row["context"]["wait"]["kind"] == "time"
    return ident


def _notes(store, record_id: int) -> list[str]:
    """The bodies of the notes about a contact (what the processes' last steps write)."""
    note = tables_for(store.refresh())["note"]
    with store.engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(note.c.body).where(
                    note.c.regarding_entity == "contact", note.c.regarding_id == record_id
                )
            ).scalars()
        )


def _run_until(store, clock, hours: int) -> None:
    worker = Worker(store)
    worker.run_once()
    clock.advance(hours=hours)
    worker.run_once()
    worker.run_once()  # nothing more is due: a timer that fired does not fire again


def test_a_waiting_instance_moves_to_the_kept_record_and_fires_there_once(office):
    store, clock, admin, keep, dupe = office
    ident = _start(store, admin, "follow_up", dupe)
    M.merge(store, "contact", keep, dupe, take=["last_name"], user_id=admin)
    Worker(store).run_once()  # the worker reads the deletion: the merge's, not a delete
    moved = workflow.instance(store, ident)
    assert moved["status"] == "waiting" and moved["record_id"] == keep
    assert moved["due_at"] == START + dt.timedelta(hours=1)  # its timer kept its moment
    assert moved["history"][-1]["kind"] == "merge"
    assert f"moved from #{dupe} to #{keep}" in moved["history"][-1]["result"]
    _run_until(store, clock, 1)
    assert workflow.instance(store, ident)["status"] == "done"
    assert _notes_text(store, keep) == ["Follow up Doe-Smith"]
    assert _notes_text(store, dupe) == []


def test_what_the_kept_record_runs_already_is_cancelled_with_a_note(office):
    store, clock, admin, keep, dupe = office
    own = _start(store, admin, "follow_up", keep)
    twin = _start(store, admin, "follow_up", dupe)
    other = _start(store, admin, "check_in", dupe)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    cancelled = workflow.instance(store, twin)
    assert cancelled["status"] == "cancelled" and cancelled["record_id"] == dupe
    assert cancelled["error"] == (
        f"the record was merged into #{keep} (merge #{result.merge_id}),"
        " which runs this process already"
    )
    assert workflow.instance(store, other)["record_id"] == keep
    _run_until(store, clock, 2)
    assert workflow.instance(store, own)["status"] == "done"
    assert workflow.instance(store, other)["status"] == "done"
    # one follow-up (the kept record's own) and the check-in that moved, each once
    assert [n.split()[0] for n in _notes_text(store, keep)] == ["Check", "Follow"]


def _notes_text(store, record_id: int) -> list[str]:
    return sorted(
        body.removeprefix("<p>").removesuffix("</p>") for body in _notes(store, record_id)
    )


@pytest.mark.parametrize("worker_between", [True, False], ids=["worker-between", "undo-first"])
def test_undo_brings_the_processes_back(office, worker_between):
    store, clock, admin, keep, dupe = office
    own = _start(store, admin, "follow_up", keep)
    twin = _start(store, admin, "follow_up", dupe)
    other = _start(store, admin, "check_in", dupe)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    if worker_between:
        Worker(store).run_once()
        assert workflow.instance(store, other)["record_id"] == keep
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    for ident, record in ((own, keep), (twin, dupe), (other, dupe)):
        row = workflow.instance(store, ident)
        assert (row["status"], row["record_id"]) == ("waiting", record), ident
        assert "merge" not in row["context"]
    assert workflow.instance(store, twin)["error"] is None
    _run_until(store, clock, 2)
    assert [n.split()[0] for n in _notes_text(store, keep)] == ["Follow"]
    assert [n.split()[0] for n in _notes_text(store, dupe)] == ["Check", "Follow"]


def test_an_instance_that_ran_on_the_kept_record_stays_there_after_undo(office):
    store, clock, admin, keep, dupe = office
    other = _start(store, admin, "check_in", dupe)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    _run_until(store, clock, 2)
    assert workflow.instance(store, other)["status"] == "done"
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    row = workflow.instance(store, other)
    assert (row["status"], row["record_id"]) == ("done", keep)
    assert len(_notes_text(store, keep)) == 1 and _notes_text(store, dupe) == []


# ------------------------------------------------------------------------ SLA clocks
def _clocks(store, record_id: int) -> list[dict]:
    c = W.sla_clocks
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(c).where(c.c.entity == "support_case", c.c.record_id == record_id)
        ).mappings()
        return [dict(r) for r in rows]


def test_sla_clocks_and_their_timers_follow_the_record(database):
    clock = MovableClock(START)
    store = database.open(clock=clock)
    try:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "service"])
        admin = store.add_user("root@example.com", "Root", roles=["administrator"])
        cases = store.records("support_case", admin)
        dupe = cases.create({"subject": "Printer on fire", "priority": "high"})["id"]
        Worker(store).run_once()  # its SLA clocks start, with their timers
        # the kept one was logged cancelled: no clock of its own
        keep = cases.create(
            {
                "subject": "Printer on fire (again)",
                "status": "cancelled",
                "cancel_reason": "duplicate",
            }
        )["id"]
        twin = cases.create({"subject": "Printer still on fire", "priority": "high"})["id"]
        Worker(store).run_once()
        assert _clocks(store, keep) == [] and len(_clocks(store, twin)) == 2
        running = {c["id"] for c in _clocks(store, dupe) if c["status"] == "running"}
        assert running
        timers = [
            r
            for r in workflow.instances(store, status="waiting")
            if r["record_id"] == dupe and (r["key"] or "").startswith("sla:")
        ]
        result = M.merge(store, "support_case", keep, dupe, user_id=admin)
        Worker(store).run_once()
        assert {c["id"] for c in _clocks(store, keep) if c["status"] == "running"} >= running
        for timer in timers:
            assert workflow.instance(store, timer["id"])["record_id"] == keep
        M.undo(store, "support_case", result.merge_id, user_id=admin)
        Worker(store).run_once()
        assert {c["id"] for c in _clocks(store, dupe) if c["status"] == "running"} == running
        for timer in timers:
            row = workflow.instance(store, timer["id"])
            assert (row["record_id"], row["status"]) == (dupe, "waiting")

        # merged into a case with clocks of its own: those go on, the other's stop with
        # their timers; the undo starts them again where they were
        before = {c["id"]: c for c in _clocks(store, dupe)}
        result = M.merge(store, "support_case", twin, dupe, user_id=admin)
        Worker(store).run_once()
        assert {c["status"] for c in _clocks(store, dupe)} == {"cancelled"}
        assert {c["status"] for c in _clocks(store, twin)} == {"running"}
        for timer in timers:
            row = workflow.instance(store, timer["id"])
            assert (row["record_id"], row["status"]) == (dupe, "cancelled")
            assert f"merge #{result.merge_id}" in row["error"]
        M.undo(store, "support_case", result.merge_id, user_id=admin)
        Worker(store).run_once()
        for again in _clocks(store, dupe):
            was = before[again["id"]]
            assert [again[k] for k in ("status", "deadline", "resumed_at", "elapsed_s")] == [
                was[k] for k in ("status", "deadline", "resumed_at", "elapsed_s")
            ]
        for timer in timers:
            row = workflow.instance(store, timer["id"])
            assert (row["record_id"], row["status"]) == (dupe, "waiting")
    finally:
        store.close()


# ------------------------------------------------------------------ parked instances
LONG_NAME = "Doe-Smithson-Jones"  # ten times over 120 characters: retitle parks on it


def _park(store, clock, admin, record_id: int) -> int:
    """Start retitle on a contact with a long last name and let it park."""
    ident = workflow.start(store, "retitle", record_id, user_id=admin)
    worker = Worker(store)
    worker.run_once()
    clock.advance(hours=1)
    worker.run_once()
    row = workflow.instance(store, ident)
    assert row["status"] == "failed" and "at most 120 characters" in row["error"], row
    return ident


def test_a_parked_instance_moves_to_the_kept_record_and_is_retried_there(office):
    store, clock, admin, keep, dupe = office
    contacts = store.records("contact", admin)
    contacts.update(dupe, {"last_name": LONG_NAME})
    parked = _park(store, clock, admin, dupe)
    error = workflow.instance(store, parked)["error"]
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    moved = workflow.instance(store, parked)
    assert (moved["status"], moved["record_id"], moved["error"]) == ("failed", keep, error)
    assert moved["context"]["merge"] == {"id": result.merge_id, "from": dupe, "moved": True}
    assert f"moved from #{dupe} to #{keep}" in moved["history"][-1]["result"]
    # retried, it runs its failed step on the kept record, whose name fits
    assert workflow.retry(store, parked)
    Worker(store).run_once()
    assert workflow.instance(store, parked)["status"] == "done"
    assert contacts.get(keep)["job_title"] == "Doe" * 10


def test_undo_moves_a_parked_instance_back_still_parked(office):
    store, clock, admin, keep, dupe = office
    store.records("contact", admin).update(dupe, {"last_name": LONG_NAME})
    parked = _park(store, clock, admin, dupe)
    error = workflow.instance(store, parked)["error"]
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    assert workflow.instance(store, parked)["record_id"] == keep
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    row = workflow.instance(store, parked)
    assert (row["status"], row["record_id"], row["error"]) == ("failed", dupe, error)
    assert "merge" not in row["context"]
    assert f"back on #{dupe}" in row["history"][-1]["result"]


def test_a_parked_instance_of_a_process_the_kept_record_runs_is_cancelled(office):
    store, clock, admin, keep, dupe = office
    store.records("contact", admin).update(dupe, {"last_name": LONG_NAME})
    parked = _park(store, clock, admin, dupe)
    error = workflow.instance(store, parked)["error"]
    own = _start(store, admin, "retitle", keep)  # the kept record runs retitle: waiting
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    cancelled = workflow.instance(store, parked)
    assert (cancelled["status"], cancelled["record_id"]) == ("cancelled", dupe)
    assert cancelled["error"] == (
        f"the record was merged into #{keep} (merge #{result.merge_id}),"
        " which runs this process already"
    )
    assert workflow.instance(store, own)["status"] == "waiting"
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    again = workflow.instance(store, parked)  # parked again, with its own error
    assert (again["status"], again["record_id"], again["error"]) == ("failed", dupe, error)
    assert again["finished_at"] is None and "merge" not in again["context"]
    assert workflow.retry(store, parked)  # and retryable, as before the merge


# ------------------------------------------------------------------ date triggers
def _birthday_moment(day: dt.date, days_before: int) -> dt.datetime:
    """When card (3 days) or greet (1 day) is due for a birthday: 09:00 UTC."""
    return dt.datetime.combine(day, dt.time(9, 0), dt.UTC) - dt.timedelta(days=days_before)


def _cards(store, record_id: int, status: str = "waiting") -> list[dict]:
    return [
        r
        for r in workflow.instances(store, process="card", status=status)
        if r["record_id"] == record_id
    ]


@pytest.fixture
def cards(database, tmp_path):
    """A contact whose birthday was entered before the processes existed (so it has no
    pending card), and one entered after (which has)."""
    clock = MovableClock(START)
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core"])
    admin = store.add_user("root@example.com", "Root", roles=["administrator"])
    keep = store.records("contact", admin).create(
        {"last_name": "Doe", "birthday": dt.date(2027, 1, 20), "owner": admin}
    )["id"]
    Worker(store).run_once()  # its creation is read while no process watches birthdays
    pack = write_pack(
        tmp_path,
        "follow_ups",
        {path: textwrap.dedent(text).lstrip() for path, text in PROCESSES.items()},
        depends={"core": ">=1.0"},
    )
    store.install([SOLUTIONS / "core", pack])
    dupe = store.records("contact", admin).create(
        {"last_name": "Doe-Smith", "birthday": dt.date(2027, 1, 10), "owner": admin}
    )["id"]
    Worker(store).run_once()
    assert _cards(store, keep) == []
    yield store, clock, admin, keep, dupe
    store.close()


def test_a_moved_date_trigger_is_timed_from_the_kept_records_date(cards):
    store, clock, admin, keep, dupe = cards
    [card] = _cards(store, dupe)
    assert card["due_at"] == _birthday_moment(dt.date(2027, 1, 10), 3)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    moved = workflow.instance(store, card["id"])
    assert (moved["status"], moved["record_id"]) == ("waiting", keep)
    assert moved["due_at"] == _birthday_moment(dt.date(2027, 1, 20), 3)
    assert moved["context"]["trigger"]["at"] == moved["due_at"].isoformat()
    assert moved["history"][-1]["result"] == (
        f"moved from #{dupe} to #{keep} by merge #{result.merge_id},"
        f" due {moved['due_at'].isoformat()}"
    )
    clock.set(_birthday_moment(dt.date(2027, 1, 10), 3))  # the removed record's moment
    Worker(store).run_once()
    assert workflow.instance(store, card["id"])["status"] == "waiting"
    # undone: back on the restored record, timed from its own birthday again, which is
    # due now: it runs there
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    back = workflow.instance(store, card["id"])
    assert (back["status"], back["record_id"]) == ("done", dupe)
    assert back["due_at"] == card["due_at"] and back["key"] == card["key"]
    assert back["context"]["trigger"]["at"] == card["due_at"].isoformat()
    assert _notes_text(store, dupe) == ["Card for Doe-Smith"] and _notes_text(store, keep) == []


def test_a_moved_date_trigger_is_cancelled_when_the_kept_record_has_no_date(cards):
    store, clock, admin, keep, dupe = cards
    contacts = store.records("contact", admin)
    contacts.update(keep, {"birthday": None})
    [card] = _cards(store, dupe)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    row = workflow.instance(store, card["id"])
    assert (row["status"], row["record_id"]) == ("cancelled", dupe)
    assert row["error"] == (
        f"the record was merged into #{keep} (merge #{result.merge_id}), and #{keep} has no"
        " birthday"
    )
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    row = workflow.instance(store, card["id"])
    assert (row["status"], row["record_id"], row["due_at"]) == ("waiting", dupe, card["due_at"])


@pytest.mark.parametrize("worker_between", [True, False], ids=["worker-between", "undo-first"])
def test_a_date_the_merge_takes_keeps_one_start_which_comes_back_on_undo(cards, worker_between):
    store, clock, admin, keep, dupe = cards
    store.records("contact", admin).update(keep, {"birthday": None})
    Worker(store).run_once()
    [card] = _cards(store, dupe)
    result = M.merge(store, "contact", keep, dupe, take=["birthday"], user_id=admin)
    if worker_between:
        Worker(store).run_once()
        # the kept record took the birthday: the moved start is its one start, same moment
        [only] = _cards(store, keep)
        assert only["id"] == card["id"] and only["due_at"] == card["due_at"]
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    # the undo emptied the kept record's birthday (its start went) and brought the
    # restored record's back
    assert _cards(store, keep) == []
    [back] = _cards(store, dupe)
    assert back["id"] == card["id"] and back["due_at"] == card["due_at"]


def test_a_moved_date_trigger_the_kept_record_ran_for_that_moment_is_cancelled(cards):
    store, clock, admin, keep, dupe = cards
    contacts = store.records("contact", admin)
    contacts.update(keep, {"birthday": dt.date(2027, 1, 5)})
    Worker(store).run_once()
    clock.set(_birthday_moment(dt.date(2027, 1, 5), 3))
    Worker(store).run_once()
    [ran] = _cards(store, keep, "done")
    [card] = _cards(store, dupe)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()
    row = workflow.instance(store, card["id"])
    assert (row["status"], row["record_id"]) == ("cancelled", dupe)
    assert row["error"].startswith(
        f"the record was merged into #{keep} (merge #{result.merge_id}), and #{keep} had"
        " this process started for"
    )
    assert f"(instance {ran['id']})" in row["error"]
    clock.set(_birthday_moment(dt.date(2027, 1, 10), 3))
    Worker(store).run_once()
    assert _notes_text(store, keep) == ["Card for Doe"]  # one card, not two


def test_a_moved_wait_until_a_date_re_checks_on_the_kept_record(cards):
    store, clock, admin, keep, dupe = cards
    ident = workflow.start(store, "greet", dupe, user_id=admin)
    Worker(store).run_once()
    assert workflow.instance(store, ident)["due_at"] == _birthday_moment(dt.date(2027, 1, 10), 1)
    result = M.merge(store, "contact", keep, dupe, user_id=admin)
    Worker(store).run_once()  # reads the merge: the wait is woken...
    Worker(store).run_once()  # ...and waits again, until the kept record's date
    row = workflow.instance(store, ident)
    assert (row["status"], row["record_id"]) == ("waiting", keep)
    assert row["due_at"] == _birthday_moment(dt.date(2027, 1, 20), 1)
    M.undo(store, "contact", result.merge_id, user_id=admin)
    Worker(store).run_once()
    Worker(store).run_once()
    row = workflow.instance(store, ident)
    assert (row["status"], row["record_id"]) == ("waiting", dupe)
    assert row["due_at"] == _birthday_moment(dt.date(2027, 1, 10), 1)
