"""The workflow worker as an operator meets it: workers keep a heartbeat row while they
run; ``GET /health`` (no sign-in) and the administrators' processes page say whether one
is beating; ``xrm worker --once --now ISO`` does one round as if it were that moment."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
import time
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS
from workflow_pack import MovableClock

from xrm import workflow
from xrm.cli import main
from xrm.supervisor import Keeper
from xrm.workflow import heartbeat
from xrm.workflow.worker import Worker

ADMIN = "ops@example.com"


@pytest.fixture
def clock():
    return MovableClock()


@pytest.fixture
def store(database, clock):
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core"])
    store.add_user(ADMIN, "Ops", password=PASSWORD, roles=["administrator"])
    yield store
    store.close()


@pytest.fixture
def app(store):
    return make_app(store)


def wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def health(app) -> tuple[int, dict]:
    answer = app.test_client().get("/health")  # nobody signed in
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.status_code, answer.get_json()


def worker_line(app) -> tuple[str, str]:
    """The processes page's line about the worker: its state and its words."""
    page = Client(app).login(ADMIN, PASSWORD).get("/admin/processes")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    start = body.index('data-testid="worker-status"')
    line = body[start : body.index("\n", start)]  # the template keeps it on one line
    state = re.search(r'data-state="(\w+)"', line).group(1)
    words = re.sub(r"<[^>]+>", "", line.split(">", 1)[1])
    return state, " ".join(words.split())


def test_health_and_the_processes_page_follow_the_workers_heartbeat(app, store, clock):
    assert health(app) == (200, {"status": "degraded", "worker": {"last_beat_age_s": None}})
    state, words = worker_line(app)
    assert state == "degraded" and "No workflow worker is running" in words

    worker = Worker(store, poll=0.2)
    thread = worker.start()
    try:
        beating = wait_until(lambda: heartbeat.latest(store), 10, "the worker's first beat")
        assert (beating["host"], beating["pid"]) == (socket.gethostname(), os.getpid())
        assert beating["name"] == worker.name
        code, body = health(app)
        assert (code, body["status"]) == (200, "ok")
        assert list(body) == ["status", "worker"] and list(body["worker"]) == ["last_beat_age_s"]
        assert body["worker"]["last_beat_age_s"] == 0  # the movable clock stands still
        assert worker_line(app) == ("ok", "Workflow worker: last heartbeat 1s ago.")
    finally:
        worker.stop()
        thread.join(timeout=30)
    # Stopped on purpose, it leaves no row to wait for.
    assert heartbeat.latest(store) is None
    assert health(app)[1]["status"] == "degraded"


def test_a_worker_that_stopped_beating_reads_as_gone(app, store, clock):
    # A worker killed outright cannot delete its row: the row ages.
    heartbeat.register(store, "host:1:killed")
    clock.advance(seconds=heartbeat.STALE_AFTER - 1)
    assert health(app) == (200, {"status": "ok", "worker": {"last_beat_age_s": 59.0}})
    clock.advance(seconds=2)
    assert health(app) == (200, {"status": "degraded", "worker": {"last_beat_age_s": 61.0}})
    state, words = worker_line(app)
    assert state == "degraded"
    assert words.endswith("email wait. Last heartbeat 1m 1s ago.")
    # The next worker to start clears rows of workers gone a day.
    clock.advance(days=1)
    heartbeat.register(store, "host:2:new")
    with store.engine.connect() as conn:
        names = conn.execute(sa.select(workflow.tables.workers.c.name)).scalars().all()
    assert names == ["host:2:new"]


def test_health_is_503_without_secrets_when_the_database_does_not_answer(
    app, store, database, tmp_path, monkeypatch
):
    gone = (
        "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"  # discard port: refused
        if database.dialect == "postgresql"
        else f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'xrm.db'}"
    )
    monkeypatch.setattr(store, "engine", sa.create_engine(gone))
    answer = app.test_client().get("/health")
    assert answer.status_code == 503
    assert answer.get_json() == {"status": "unavailable"}


def cli_url(database) -> str:
    """The test's database as ``--database`` takes it (a PostgreSQL schema in the URL)."""
    options = database.engine_options.get("connect_args", {}).get("options")
    return f"{database.url}?options={quote(options)}" if options else database.url


def test_worker_once_now_runs_the_timers_due_at_that_moment(database, capsys):
    store = database.open()  # the real clock: the CLI's --now is what moves time here
    try:
        store.install([SOLUTIONS / "core"])
        ann = store.add_user("ann@example.com", "Ann", roles=["user"])
        remind_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
        store.records("task", ann).create({"subject": "Call back", "remind_at": remind_at})
        url = cli_url(database)

        def once(*now: str) -> dict:
            assert main(["worker", "--once", "--database", url, *now]) == 0
            return json.loads(capsys.readouterr().out)

        once()  # today: the reminder's timer is set, two days out
        [timer] = workflow.instances(store, process="task_reminder_at")
        assert (timer["status"], timer["due_at"]) == ("waiting", remind_at)
        assert "ran" not in once("--now", (remind_at - dt.timedelta(minutes=1)).isoformat())
        assert workflow.unread_count(store, ann) == 0
        assert once("--now", remind_at.strftime("%Y-%m-%dT%H:%M:%SZ"))["ran"] == 1
        [note] = workflow.notifications(store, ann)
        assert note["title"] == "Reminder: Call back"
        assert note["created_at"] >= remind_at  # written at the given moment, not today
    finally:
        store.close()


def test_worker_now_is_refused_without_once_or_when_it_is_no_moment(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--now", "2026-03-05T09:00Z"])
    assert exit_.value.code == 2
    assert "--now needs --once" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--once", "--now", "next tuesday"])
    assert exit_.value.code == 2
    assert "not an ISO 8601 moment: 'next tuesday'" in capsys.readouterr().err


def test_the_keeper_starts_a_dying_worker_again_with_growing_delays(capfd):
    """xrm run's keeper (xrm/supervisor.py) on a worker that dies at once, every time:
    each death and restart is said on stderr, the waits double up to their cap."""
    dying = "import sys; sys.exit('cannot reach the database')"  # as a worker would, only fast
    keeper = Keeper(dict(os.environ), os.getppid(), program=dying, first_delay=0.05, max_delay=0.2)
    thread = threading.Thread(target=keeper.run)
    thread.start()
    said = []
    try:

        def restarts() -> list[str]:
            said.extend(capfd.readouterr().err.splitlines())
            lines = [line for line in said if line.startswith("xrm run: the workflow worker (")]
            return lines if len(lines) >= 4 else []

        deaths = wait_until(restarts, 120, "four restarts")
    finally:
        keeper.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert all("exited with code 1" in line for line in deaths)
    delays = [line.rsplit("starting it again in ", 1)[1] for line in deaths[:4]]
    assert delays == ["0.05 s", "0.1 s", "0.2 s", "0.2 s"]
    assert sum("the workflow worker is started again" in line for line in said) >= 3
