"""Fault test (PostgreSQL): 4 worker processes drain 20,000 due reminders while one of them
is killed with SIGKILL every second and replaced.  Afterwards every reminder fired exactly
once (one notification, one queued email each), and every email reached the SMTP server at
least once under the Message-ID derived from its idempotency key.  A kill between an SMTP
send and its commit sends a message twice; the test reports how often that happened."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal
import time

import pytest
import sqlalchemy as sa
from conftest import PG_URL, SOLUTIONS
from test_workflow_delivery import Inbox, free_port

from xrm.workflow import ensure_tables
from xrm.workflow import tables as W
from xrm.workflow.consumer import consume
from xrm.workflow.worker import serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (XRM_TEST_DATABASE_URL)"),
]

TIMERS = int(os.environ.get("XRM_FAULT_TIMERS", "20000"))
WORKERS = 4


def scalar(store, statement):
    with store.engine.connect() as conn:
        return conn.execute(statement).scalar_one()


def test_killed_workers_lose_nothing_and_double_nothing(database, record_property):
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    store = database.open()
    # replacements fork from a server that imported the engine already, so a new worker
    # only has to open its store before it works (a killed worker's successor is up fast)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["xrm.workflow.worker", "psycopg", "sqlalchemy.dialects.postgresql.psycopg"]
    )
    processes: list = []
    try:
        store.install([SOLUTIONS / "core"])
        owner = store.add_user("owner@example.com")
        ensure_tables(store)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        tasks = store.records("task", owner)
        for start in range(0, TIMERS, 5000):
            tasks.bulk_create(
                [
                    {"subject": f"t{n}", "due": later, "reminder": "10m"}
                    for n in range(start, min(TIMERS, start + 5000))
                ]
            )
        while consume(store, store.refresh(), store.clock.now(), "UTC", 5000)[0]:
            pass
        i, n, e = W.instances, W.notifications, W.emails
        assert scalar(store, sa.select(sa.func.count()).where(i.c.status == "waiting")) == TIMERS

        options = {
            "smtp": f"smtp://127.0.0.1:{port}",
            "lease": 3.0,
            "poll": 0.5,
            "batch_size": 200,
            "retry_base": 0.5,
        }

        def spawn(number: int):
            # no shared locks or events: a process killed while holding one would leave it
            # held for good; workers stop on SIGTERM
            process = context.Process(
                target=serve,
                args=(database.url, database.engine_options),
                kwargs={**options, "name": f"fault-{number}"},
                daemon=True,
            )
            process.start()
            return process

        processes = [spawn(k) for k in range(WORKERS)]
        with store.engine.begin() as conn:  # all due at once
            conn.execute(
                i.update().where(i.c.status == "waiting").values(due_at=dt.datetime.now(dt.UTC))
            )
        kills, spawned = 0, WORKERS
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(1)
            done = scalar(store, sa.select(sa.func.count()).where(i.c.status == "done"))
            sent = scalar(store, sa.select(sa.func.count()).where(e.c.status == "sent"))
            if os.environ.get("XRM_FAULT_VERBOSE"):
                with store.engine.connect() as conn:
                    states = dict(
                        conn.execute(
                            sa.select(e.c.status, sa.func.count()).group_by(e.c.status)
                        ).all()
                    )
                    errors = conn.execute(
                        sa.select(e.c.attempts, e.c.last_error, e.c.due_at)
                        .where(e.c.last_error.is_not(None))
                        .limit(2)
                    ).all()
                print(
                    f"{time.monotonic() - deadline + 600:5.0f}s: {done} reminders done, {sent} emails sent, {kills} kills {states} {errors}"
                )
            if done == TIMERS and sent == TIMERS:
                break
            victim = random.randrange(len(processes))
            os.kill(processes[victim].pid, signal.SIGKILL)
            processes[victim].join()
            processes[victim] = spawn(spawned)
            kills += 1
            spawned += 1
        else:
            pytest.fail(f"not finished: {done} reminders done, {sent} emails sent")

        # every reminder fired exactly once: one notification and one email each
        assert scalar(store, sa.select(sa.func.count()).where(i.c.status == "done")) == TIMERS
        per_instance = (
            sa.select(n.c.instance_id, sa.func.count().label("c"))
            .group_by(n.c.instance_id)
            .subquery()
        )
        assert scalar(store, sa.select(sa.func.count()).select_from(per_instance)) == TIMERS
        assert scalar(store, sa.select(sa.func.max(per_instance.c.c))) == 1
        assert scalar(store, sa.select(sa.func.count()).select_from(e)) == TIMERS
        # every email delivered at least once, with the Message-ID of its row
        with store.engine.connect() as conn:
            expected = dict(conn.execute(sa.select(e.c.key, e.c.message_id)).all())
        delivered: dict[str, int] = {}
        for _recipients, message in inbox.messages:
            key = message["X-XRM-Key"]
            assert message["Message-ID"] == expected[key]
            delivered[key] = delivered.get(key, 0) + 1
        assert set(delivered) == set(expected)
        repeats = sum(c - 1 for c in delivered.values())
        record_property("kills", kills)
        record_property("second_deliveries", repeats)
        print(
            f"\n{kills} workers killed; {repeats} emails delivered twice (killed between send and commit)"
        )
        assert kills >= 3
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=20)
            if process.is_alive():
                process.kill()
        smtp.stop()
        store.close()
