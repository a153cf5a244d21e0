"""Batches of timers: a worker claims many due instances in its batch's own transaction
(PostgreSQL), runs them, and commits their claims, effects and states together.  One bad
run must not stop the batch: a step that fails retries its own run only; a run that breaks
the batch's transaction sends the batch through one run at a time and is parked alone.  A
repeated run adds no second effect, and a worker that dies mid-batch costs its runs one
attempt, so that a run that kills every worker is parked in the end."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS
from workflow_pack import START, MovableClock

from xrm import workflow
from xrm.workflow import Worker, claims
from xrm.workflow import tables as W
from xrm.workflow.runner import MAX_CLAIMS, Batch
from xrm.workflow.steps import HANDLERS

COUNT = 12


@pytest.fixture
def tasks(database):
    """A store with ``COUNT`` task reminders scheduled for START + 45 min, and its worker."""
    clock = MovableClock()
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core"])
    ann = store.add_user("ann@example.com", "Ann")
    records = store.records("task", ann)
    made = [
        records.create(
            {"subject": f"Task {n}", "due": START + dt.timedelta(hours=1), "reminder": "15m"}
        )
        for n in range(COUNT)
    ]
    worker = Worker(store, batch_size=100, retry_base=60)
    worker.run_once()  # the reminders are scheduled
    yield store, clock, ann, worker, made
    store.close()


def reminder_rows(store) -> dict[int, dict]:
    """record id -> its reminder instance."""
    i = W.instances
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(i).where(i.c.process == "task_reminder")).mappings()
        return {row["record_id"]: dict(row) for row in rows}


def effects_per_instance(store) -> tuple[dict, dict]:
    n, e = W.notifications, W.emails
    with store.engine.connect() as conn:
        notes = dict(
            conn.execute(
                sa.select(n.c.instance_id, sa.func.count()).group_by(n.c.instance_id)
            ).all()
        )
        mails = dict(conn.execute(sa.select(e.c.key, sa.func.count()).group_by(e.c.key)).all())
    return notes, mails


def test_a_failing_step_retries_its_own_run_and_the_batch_commits(tasks, monkeypatch):
    store, clock, ann, worker, made = tasks
    bad = made[5]["id"]
    notify = HANDLERS["notify"]

    def flaky(batch, run, step):
        if run.record_id == bad:
            raise RuntimeError("the mail template service is down")
        return notify(batch, run, step)

    monkeypatch.setitem(HANDLERS, "notify", flaky)
    clock.set(START + dt.timedelta(minutes=50))
    assert worker.run_once()["ran"] == COUNT  # one batch
    rows = reminder_rows(store)
    assert {r["status"] for k, r in rows.items() if k != bad} == {"done"}
    failed = rows[bad]
    assert failed["status"] == "waiting" and "mail template service" in failed["error"]
    assert failed["attempts"] == 1 and failed["due_at"] > clock.now()  # a retry, backed off
    notes, mails = effects_per_instance(store)
    assert len(notes) == COUNT - 1 and set(notes.values()) == {1}
    assert len(mails) == COUNT - 1
    # the retry goes through once the service is back, with one notification
    monkeypatch.setitem(HANDLERS, "notify", notify)
    clock.advance(minutes=5)
    assert worker.run_once()["ran"] == 1
    assert reminder_rows(store)[bad]["status"] == "done"
    assert reminder_rows(store)[bad]["attempts"] == 0
    notes, _ = effects_per_instance(store)
    assert len(notes) == COUNT and set(notes.values()) == {1}


def test_a_run_that_breaks_the_batch_is_parked_alone(tasks, monkeypatch):
    store, clock, ann, worker, made = tasks
    bad = made[3]["id"]
    persist = Batch.persist

    def breaking(self, runs):
        # the state write of one run fails outside its savepoint: the whole transaction
        # (claims, effects, states) rolls back
        if any(run.record_id == bad for run in runs):
            raise ValueError("a state the database refuses")
        return persist(self, runs)

    monkeypatch.setattr(Batch, "persist", breaking)
    clock.set(START + dt.timedelta(minutes=50))
    worker.run_once()
    rows = reminder_rows(store)
    assert {r["status"] for k, r in rows.items() if k != bad} == {"done"}
    parked = rows[bad]
    assert parked["status"] == "failed" and "refuses" in parked["error"]
    assert parked["history"][-1]["kind"] == "park"
    notes, mails = effects_per_instance(store)
    assert len(notes) == COUNT - 1 and set(notes.values()) == {1}
    assert len(mails) == COUNT - 1 and set(mails.values()) == {1}
    # parked, not retried forever, and no batch note left behind to count
    clock.advance(hours=2)
    assert "ran" not in worker.run_once()
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(W.inflight)).scalar() == 0


def test_a_run_repeated_after_its_effects_committed_adds_none(tasks):
    store, clock, ann, worker, made = tasks
    clock.set(START + dt.timedelta(minutes=50))
    worker.run_once()
    before = effects_per_instance(store)
    assert len(before[0]) == COUNT
    # every run claimed and run once more from its start, as after a lost state write
    i = W.instances
    with store.engine.begin() as conn:
        conn.execute(
            i.update()
            .where(i.c.process == "task_reminder")
            .values(status="waiting", started=False, position=None, due_at=clock.now())
        )
    assert worker.run_once()["ran"] == COUNT
    assert {r["status"] for r in reminder_rows(store).values()} == {"done"}
    assert effects_per_instance(store) == before
    assert workflow.unread_count(store, ann) == COUNT


def test_a_worker_dying_mid_batch_costs_its_runs_one_attempt(tasks, database):
    if database.dialect != "postgresql":
        pytest.skip("batches claim inside their transaction on PostgreSQL; SQLite leases")
    store, clock, ann, worker, made = tasks
    clock.set(START + dt.timedelta(minutes=50))
    # a worker takes a batch, notes it, and dies before its commit
    with store.engine.connect() as conn:
        transaction = conn.begin()
        taken = [row["id"] for row in claims.take(conn, clock.now(), 5)]
        claims.note_batch(store.engine, "dead", taken, clock.now() + dt.timedelta(seconds=30))
        transaction.rollback()
    i = W.instances
    with store.engine.connect() as conn:
        attempts = dict(
            conn.execute(sa.select(i.c.id, i.c.attempts).where(i.c.id.in_(taken))).all()
        )
    assert set(attempts.values()) == {0}  # the claims died with the transaction
    assert claims.reap(store.engine, clock.now()) == 0  # the note has not run out yet
    clock.advance(seconds=31)
    claims.reap(store.engine, clock.now())
    with store.engine.connect() as conn:
        attempts = dict(
            conn.execute(sa.select(i.c.id, i.c.attempts).where(i.c.id.in_(taken))).all()
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(W.inflight)).scalar() == 0
    assert set(attempts.values()) == {1}
    # the runs go through once, and their attempts start again from nothing
    worker.run_once()
    rows = reminder_rows(store)
    assert {r["status"] for r in rows.values()} == {"done"}
    assert {r["attempts"] for r in rows.values()} == {0}
    notes, mails = effects_per_instance(store)
    assert len(notes) == COUNT and set(notes.values()) == {1} and set(mails.values()) == {1}


def test_a_run_its_workers_keep_dying_on_is_parked(tasks):
    store, clock, ann, worker, made = tasks
    victim = made[0]["id"]
    i = W.instances
    with store.engine.begin() as conn:  # as after MAX_CLAIMS deaths in its batch
        conn.execute(
            i.update()
            .where(i.c.process == "task_reminder", i.c.record_id == victim)
            .values(attempts=MAX_CLAIMS)
        )
    clock.set(START + dt.timedelta(minutes=50))
    worker.run_once()
    rows = reminder_rows(store)
    assert rows[victim]["status"] == "failed" and "claimed" in rows[victim]["error"]
    assert {r["status"] for k, r in rows.items() if k != victim} == {"done"}
