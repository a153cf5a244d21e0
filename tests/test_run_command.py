"""``xrm run`` as a user starts it: the web server answers, the embedded workflow worker
runs beside it, and stopping the server (SIGTERM, or the server killed outright) leaves no
process behind."""

from __future__ import annotations

import http.cookiejar
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


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def instance(tmp_path):
    with fresh_database(tmp_path) as database:
        url = database.url
        options = database.engine_options.get("connect_args", {}).get("options")
        if options:  # a PostgreSQL schema of its own, named in the URL for the child processes
            url = f"{url}?options={quote(options)}"
        yield {
            **os.environ,
            "XRM_INSTANCE_PATH": str(tmp_path),
            "XRM_DATABASE_URL": url,
        }


@pytest.fixture
def installed(instance):
    env = instance
    setup = subprocess.run(
        [*XRM, "setup", "--admin-password", PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    return env


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
