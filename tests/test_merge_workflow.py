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
