"""The API guide (docs/guides/api.md) works as written: its curl and Python examples run,
in order, against the web application served over real HTTP on a fresh database (SQLite,
or PostgreSQL with XRM_TEST_DATABASE_URL), and each answer is checked against the one the
guide shows under it.

The guide's conventions, which these helpers read (the quick start's and administrator's
tests use them too): a fenced block runs unless the line before it is an HTML comment
``<!-- not run…: reason -->``; a ``http`` block after a command shows its answers (status
line, some headers, the JSON body: members not shown may be there too, ``"…"`` stands for
any value, ``…`` inside a text for any text, and a list ending in ``"…"`` may go on); a
``text`` block shows its output line by line, ``…`` again standing for any text."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser.support import Server, make_app
from conftest import ROOT, SOLUTIONS, fresh_database

from xrm.cli import main

GUIDE = ROOT / "docs" / "guides" / "api.md"
FENCE = re.compile(r"(?:<!-- (not run[^>]*?) -->\n)?```(\w*)\n(.*?)```", re.S)
ANY = "…"
SECRET = "guide-email-secret-1"


@dataclass
class Block:
    lang: str
    text: str
    line: int  # where the block starts in its file, for messages
    skip: str | None  # the reason it is not run, or None


def blocks(path: Path) -> list[Block]:
    source = path.read_text(encoding="utf-8")
    return [
        Block(m.group(2), m.group(3), source.count("\n", 0, m.start(2)) + 1, m.group(1))
        for m in FENCE.finditer(source)
    ]


# ------------------------------------------------------------------------ matching
def like(pattern: str, text: str) -> bool:
    """Does ``text`` read as ``pattern``, each ``…`` standing for any text?"""
    parts = [re.escape(p) for p in pattern.split(ANY)]
    return re.fullmatch(".*".join(parts), text, re.S) is not None


def matches(expected, actual, where: str = "") -> list[str]:
    """What differs between a shown JSON value and the real one (empty: it matches)."""
    if expected == ANY:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or '.'}: expected an object, got {actual!r}"]
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{where}.{key}: missing (got {sorted(actual)})")
            else:
                found += matches(value, actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        more = bool(expected) and expected[-1] == ANY
        shown = expected[:-1] if more else expected
        if len(actual) < len(shown) or (not more and len(actual) != len(shown)):
            return [
                f"{where}: expected {len(shown)} items{' or more' if more else ''}, got {actual!r}"
            ]
        found = []
        for index, item in enumerate(shown):
            found += matches(item, actual[index], f"{where}[{index}]")
        return found
    if isinstance(expected, str) and ANY in expected and isinstance(actual, str):
        return [] if like(expected, actual) else [f"{where}: {actual!r} is not like {expected!r}"]
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def responses(text: str) -> tuple[list[str], list[tuple[int, dict[str, str], str]]]:
    """Text before the first status line, then (status, headers, body) per answer."""
    lines = text.replace("\r\n", "\n").split("\n")
    before: list[str] = []
    answers: list[tuple[int, dict[str, str], list[str]]] = []
    in_headers = False
    for line in lines:
        status = re.match(r"HTTP/[\d.]+ (\d{3})", line)
        if status:
            answers.append((int(status.group(1)), {}, []))
            in_headers = True
        elif not answers:
            before.append(line)
        elif in_headers:
            if line.strip() == "":
                in_headers = False
            else:
                name, _, value = line.partition(":")
                answers[-1][1][name.strip().lower()] = value.strip()
        else:
            answers[-1][2].append(line)
    return [b for b in before if b.strip()], [(s, h, "\n".join(b).strip()) for s, h, b in answers]


def check_http(shown: str, got: str) -> list[str]:
    before, expected = responses(shown)
    got_before, actual = responses(got)
    problems = []
    if [b.strip() for b in before] != [b.strip() for b in got_before]:
        problems.append(f"output before the answers: expected {before}, got {got_before}")
    if len(expected) != len(actual):
        return [*problems, f"expected {len(expected)} answers, got {len(actual)}:\n{got}"]
    for (status, headers, body), (real_status, real_headers, real_body) in zip(
        expected, actual, strict=True
    ):
        if status != real_status:
            problems.append(f"status: expected {status}, got {real_status}: {real_body[:500]}")
            continue
        for name, value in headers.items():
            if not like(value, real_headers.get(name, "")):
                problems.append(f"{name}: expected {value!r}, got {real_headers.get(name)!r}")
        if body:
            try:
                wanted = json.loads(body)
            except ValueError as exc:
                problems.append(f"the guide's body is not JSON ({exc}): {body}")
                continue
            try:
                real = json.loads(real_body)
            except ValueError:
                problems.append(f"the answer is not JSON: {real_body[:500]}")
                continue
            problems += [f"body{p}" for p in matches(wanted, real)]
    return problems


def check_text(shown: str, got: str) -> list[str]:
    expected = shown.rstrip("\n").split("\n")
    actual = got.rstrip("\n").split("\n")
    if len(expected) != len(actual) or not all(
        like(e, a) for e, a in zip(expected, actual, strict=False)
    ):
        return [f"expected:\n{shown}\ngot:\n{got}"]
    return []


# ------------------------------------------------------------------------ the instance
def run_xrm(argv: list[str]) -> tuple[int, str, str]:
    """The ``xrm`` command in this process, as a shell would run it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def url_of(database) -> str:
    """The database as a URL the command takes (a PostgreSQL test schema named in it)."""
    options = database.engine_options.get("connect_args", {}).get("options")
    if options:
        return f"{database.url}?options={options.replace('=', '%3D')}"
    return database.url


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The platform with Core, Sales and Service and its administrator, served over HTTP;
    the guide's variables (XRM, TOKEN, the email-to-case secret) for its commands."""
    if shutil.which("curl") is None:
        pytest.skip("the guide's examples use curl")
    folder = tmp_path_factory.mktemp("api-guide")
    previous = os.environ.get("XRM_EMAIL_TO_CASE_SECRET")
    os.environ["XRM_EMAIL_TO_CASE_SECRET"] = SECRET  # the server's environment
    try:
        with fresh_database(folder) as database:
            store = database.open()
            try:
                store.install([SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "service"])
                store.add_user(
                    "admin@example.com", "Administrator", password=None, roles=["administrator"]
                )
                app = make_app(store)
                with Server(app) as server:
                    yield store, database, server, folder
            finally:
                store.close()
    finally:
        if previous is None:
            os.environ.pop("XRM_EMAIL_TO_CASE_SECRET", None)
        else:
            os.environ["XRM_EMAIL_TO_CASE_SECRET"] = previous


def test_the_guide_marks_what_it_does_not_run():
    found = blocks(GUIDE)
    skipped = [b for b in found if b.skip]
    assert all(re.match(r"not run[^:]*: \w", b.skip) for b in skipped), [b.skip for b in skipped]
    assert len(skipped) <= 2
    runnable = [b for b in found if b.lang in ("bash", "python") and not b.skip]
    assert len(runnable) >= 20
    # every runnable example is followed by the answer it gives
    for block in runnable:
        after = found[found.index(block) + 1]
        assert after.lang in ("http", "text"), f"line {block.line}: no answer shown after it"


def test_every_example_answers_as_the_guide_shows(served):
    from xrm.workflow.worker import Worker

    store, database, server, folder = served
    found = blocks(GUIDE)
    setup = found[0]
    assert setup.skip and setup.lang == "bash"
    lines = setup.text.strip().split("\n")
    assert lines[0] == "export XRM=http://127.0.0.1:5000"
    command = re.fullmatch(r"export TOKEN=\$\((xrm token create [^)]*)\)", lines[1]).group(1)
    import shlex

    previous = os.environ.get("XRM_DATABASE_URL")
    os.environ["XRM_DATABASE_URL"] = url_of(database)
    try:
        code, token, err = run_xrm(shlex.split(command)[1:])
    finally:
        if previous is None:
            os.environ.pop("XRM_DATABASE_URL", None)
        else:
            os.environ["XRM_DATABASE_URL"] = previous
    assert code == 0, err
    token = token.strip()
    assert token.startswith("xrm_")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(folder),
        "XRM": server.url,
        "TOKEN": token,
        "XRM_EMAIL_TO_CASE_SECRET": SECRET,
    }
    ran = 0
    failures = []
    worker = Worker(store, smtp="")
    for index, block in enumerate(found):
        if block.skip or block.lang not in ("bash", "python"):
            continue
        worker.run_once()  # what xrm run's embedded worker does between two requests
        if block.lang == "bash":
            argv = ["bash", "-e", "-o", "pipefail", "-c", block.text]
        else:
            script = folder / f"example_{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
            argv = [sys.executable, str(script)]
        done = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=60)
        ran += 1
        answer = found[index + 1]
        if done.returncode != 0:
            failures.append(f"line {block.line}: exit {done.returncode}: {done.stderr}")
            continue
        check = check_http if answer.lang == "http" else check_text
        problems = check(answer.text, done.stdout)
        if problems:
            failures.append(f"line {block.line}:\n  " + "\n  ".join(problems))
    assert not failures, "\n\n".join(failures)
    assert ran >= 20


def test_the_matching_rules_catch_a_wrong_answer():
    """The checks are not vacuous: a different status, value, header or line fails."""
    shown = 'HTTP/1.1 201 CREATED\nETag: "1"\n\n{"id": 1, "tags": ["a", "…"], "at": "…"}'
    good = 'HTTP/1.1 201 CREATED\nETag: "1"\nX: y\n\n{"id": 1, "tags": ["a", "b"], "at": 5, "z": 0}'
    assert check_http(shown, good) == []
    assert check_http(shown, good.replace("201", "200"))
    assert check_http(shown, good.replace('"1"\n', '"2"\n'))
    assert check_http(shown, good.replace('"id": 1', '"id": 2'))
    assert check_http(shown, good.replace('["a", "b"]', '["b"]'))
    assert check_text("one\nt…o", "one\ntwo") == []
    assert check_text("one\nt…o", "one\ntwo\nthree")
    assert check_text("one\nt…o", "one\nxyz")
