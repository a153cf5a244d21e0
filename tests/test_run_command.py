"""``xrm run`` as a user starts it: the web server answers, the embedded workflow worker
runs beside it, and stopping the server (SIGTERM, or the server killed outright) leaves no
process behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from conftest import fresh_database

import xrm
from xrm import workflow
from xrm.workflow import heartbeat

PASSWORD = "a long enough password"
XRM = [str(Path(sys.executable).with_name("xrm"))]  # the installed command, as users run it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> set[int]:
    """Every descendant of a process, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead, only not yet reaped
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def wait_until(check, seconds: float, what: str):
    """``check()``'s first true value, asked every 0.2 s for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def environment(database, folder: Path) -> dict:
    """What the child processes need to find the test's instance folder and database."""
    url = database.url
    options = database.engine_options.get("connect_args", {}).get("options")
    if options:  # a PostgreSQL schema of its own, named in the URL for the child processes
        url = f"{url}?options={quote(options)}"
    return {**os.environ, "XRM_INSTANCE_PATH": str(folder), "XRM_DATABASE_URL": url}


def set_up(env: dict) -> dict:
    setup = subprocess.run(
        [*XRM, "setup", "--admin-password", PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    return env


@pytest.fixture
def instance(tmp_path):
    with fresh_database(tmp_path) as database:
        yield environment(database, tmp_path)


@pytest.fixture
def installed(instance):
    return set_up(instance)


def sign_in(port: int) -> None:
    """The administrator signs in over plain HTTP on loopback, as a browser would: the
    session cookie must come back for the home page to open."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(f"{base}/login", timeout=10).read().decode()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "email": "admin@example.com", "password": PASSWORD}
    with opener.open(
        urllib.request.Request(f"{base}/login", data=urlencode(form).encode()), timeout=10
    ) as response:
        assert "/login" not in response.url  # signed in: the home page, not the form again
        assert 'data-testid="admin-link"' in response.read().decode()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_server_stops_everything_it_started(installed, tmp_path, stop):
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    server = subprocess.Popen(
        [*XRM, "run", "--port", str(port), "--workers", "2"],
        env=installed,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(answers, 60, "the server to answer")
        sign_in(port)
        started = children_of(server.pid)
        worker = [
            pid
            for pid in started
            if b"xrm.workflow.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(worker) == 1 and len(started) >= 3  # the worker and two web workers
        server.send_signal(stop)
        server.wait(60)
        try:
            wait_until(lambda: not any(alive(pid) for pid in started), 45, "every child to exit")
        except AssertionError:
            left = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in started if alive(p)}
            raise AssertionError(f"still running: {left}") from None
    finally:
        if server.poll() is None:
            server.kill()
        for pid in children_of(server.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "run.log").read_text()
    assert "Traceback" not in output, output


@contextlib.contextmanager
def running(env: dict, log: Path, cwd: Path | None = None):
    """``xrm run`` on a free port until the block ends; yields the port."""
    port = free_port()
    with log.open("w") as output:
        server = subprocess.Popen(
            [*XRM, "run", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: health(port) is not None, 60, "the server to answer")
            yield port
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            for pid in children_of(server.pid):
                os.kill(pid, signal.SIGKILL)


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return json.load(answer)
    except OSError:
        return None


def workers_of(port: int) -> list[int]:
    """The workflow worker processes under the server listening on ``port``."""
    server = next(
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if f"--port\x00{port}\x00".encode() in _cmdline(pid)
    )
    return [pid for pid in children_of(server) if b"xrm.workflow.worker" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def opened(env: dict):
    return contextlib.closing(xrm.open(env["XRM_DATABASE_URL"]))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One ``xrm run`` for the worker's tests, started from a folder that holds a folder
    named ``xrm`` with a broken ``__init__.py``: ``python -c`` would import it instead of
    the platform.  Yields the environment, the port and the server's log."""
    folder = tmp_path_factory.mktemp("served")
    project = folder / "project"
    (project / "xrm").mkdir(parents=True)
    (project / "xrm" / "__init__.py").write_text('raise ImportError("not the platform")\n')
    log = folder / "run.log"
    with fresh_database(folder) as database:
        env = set_up(environment(database, folder))
        with running(env, log, cwd=project) as port:
            wait_until(lambda: (health(port) or {}).get("status") == "ok", 60, "a heartbeat")
            yield {"env": env, "port": port, "log": log}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_a_folder_named_xrm_where_it_starts_cannot_stop_the_worker(served):
    with opened(served["env"]) as store:
        admin = store.user_by_email("admin@example.com").id
        now = dt.datetime.now(dt.UTC)
        store.records("task", admin).create({"subject": "Ring back", "remind_at": now})
        wait_until(lambda: workflow.unread_count(store, admin), 60, "the reminder to run")
        [note] = workflow.notifications(store, admin)
        assert note["title"] == "Reminder: Ring back"
    output = served["log"].read_text()
    assert "Traceback" not in output and "not the platform" not in output, output


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_a_worker_that_dies_is_started_again_and_beats(served):
    port = served["port"]
    [first] = wait_until(lambda: workers_of(port), 60, "the worker")
    os.kill(first, signal.SIGKILL)
    [second] = wait_until(lambda: [p for p in workers_of(port) if p != first], 60, "a new worker")
    with opened(served["env"]) as store:
        wait_until(
            lambda: (heartbeat.latest(store) or {}).get("pid") == second,
            60,
            "the new worker's heartbeat",
        )
    assert health(port)["status"] == "ok"
    output = served["log"].read_text()
    assert f"the workflow worker (pid {first}) was killed by SIGKILL" in output, output
    assert f"the workflow worker is started again (pid {second})" in output, output
