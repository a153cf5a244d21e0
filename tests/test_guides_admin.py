"""The quick start (docs/guides/quick-start.md) and the administrator's guide
(docs/guides/administrator.md) work as written.

On a fresh SQLite database in a folder of its own (the guides' embedded default,
``instance/xrm.db``), every ``xrm`` command of their ``console`` blocks runs in order —
in this process, as the shell would run it, except ``xrm run``, which is started for real
on a free port, asked for its pages and stopped — and what each prints is checked
against the lines shown under it (``…`` stands for any text; ``$ echo $?`` shows the
exit status the command before it must have). The guides' steps in the browser are done
through the web application with the same forms, and every page of the site the guides
name answers 200 to the administrator: here, and on PostgreSQL too when
XRM_TEST_DATABASE_URL is set. Commands in blocks marked ``<!-- not run: … -->`` must at
least be ones the ``xrm`` command accepts."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser.support import TIER_FIELD, Client, make_app, planned
from conftest import ROOT, SOLUTIONS
from test_guides_api import ANY, blocks, like, run_xrm
from test_run_command import XRM, children_of, free_port, wait_until

import xrm
from xrm.cli import build_parser

QUICK_START = ROOT / "docs" / "guides" / "quick-start.md"
ADMIN_GUIDE = ROOT / "docs" / "guides" / "administrator.md"
DEFAULT_PORT = "5000"
#: Where the guides send people in the browser: every such path they name must open.
SITE = re.compile(r"`(/(?:admin|e|r|views|reports|dashboards|search|me|health|inbox)\b[^`\s]*)`")


def console_steps(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``$ command`` of the guide's runnable console blocks, with the lines shown
    under it and the line of its block."""
    steps = []
    for block in blocks(path):
        if block.lang != "console" or block.skip:
            continue
        for line in block.text.rstrip("\n").split("\n"):
            if line.startswith("$ "):
                steps.append((line[2:], [], block.line))
            else:
                assert steps and steps[-1][2] == block.line, f"{path.name}:{block.line}: {line}"
                steps[-1][1].append(line)
    return steps


def normalized(text: str) -> str:
    return " ".join(text.split())


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The shown lines no line of the output reads as (blanks compared loosely)."""
    got = [normalized(line) for line in output.splitlines()]
    return [
        line
        for line in expected
        if line.strip() not in ("", ANY) and not any(like(normalized(line), g) for g in got)
    ]


# ------------------------------------------------------------------------ xrm run
@contextlib.contextmanager
def served(command: str, folder: Path):
    """``xrm run ...`` as typed, on a free port instead of 5000; yields (port, its log)."""
    port = free_port()
    log = folder / f"run-{port}.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*XRM, *shlex.split(command)[1:], "--port", str(port), "--workers", "1"],
            cwd=folder,
            env={k: v for k, v in os.environ.items() if k != "XRM_DATABASE_URL"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: status(port, "/health") == 200, 60, "xrm run to answer")
            yield port, log
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            for pid in children_of(server.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)


def status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# ------------------------------------------------------------------------ the walk
class Walk:
    """The guides followed on one instance: each command's output, and what they made."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.outputs: dict[str, list[str]] = {}
        self.runs: list[str] = []

    def console(self, path: Path) -> None:
        steps = console_steps(path)
        code = None
        for index, (command, shown, line) in enumerate(steps):
            where = f"{path.name}:{line}: $ {command}"
            if command == "echo $?":
                assert shown == [str(code)], f"{where}: the exit status was {code}"
                continue
            assert command.startswith("xrm "), f"{where}: only xrm commands run here"
            following = steps[index + 1][0] if index + 1 < len(steps) else None
            wanted = 0
            if following == "echo $?":
                wanted = int(steps[index + 1][1][0])
            if command.startswith("xrm run"):
                output, code = self.run_server(command, where), 0
            else:
                code, out, err = run_xrm(shlex.split(command)[1:])
                output = out + err
            assert code == wanted, f"{where}: exit {code}, expected {wanted}:\n{output}"
            lost = missing_lines(shown, output)
            assert not lost, f"{where}: these lines were not printed: {lost}\n---\n{output}"
            self.outputs.setdefault(command, []).append(output)

    def run_server(self, command: str, where: str) -> str:
        with served(command, self.folder) as (port, log):
            fresh = "--database" in command
            if fresh:  # a database not set up: every page leads to the setup wizard
                assert status(port, "/setup") == 200, where
                assert status(port, "/login") == 200, where  # served after the redirect
            else:
                assert status(port, "/login") == 200, where
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as answer:
                    assert json.load(answer)["status"] in ("ok", "degraded")
            time.sleep(0.5)  # the start-up lines are written
            output = log.read_text().replace(f":{port}", f":{DEFAULT_PORT}")
        self.runs.append(command)
        return output


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The quick start, then the administrator's guide, in a new folder as the current
    one, with no XRM_DATABASE_URL: the commands use instance/xrm.db there."""
    folder = tmp_path_factory.mktemp("guides")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("XRM_DATABASE_URL", raising=False)
        done = Walk(folder)
        done.console(QUICK_START)
        store = xrm.open(f"sqlite:///{folder / 'instance' / 'xrm.db'}")
        try:
            done.app = make_app(store)
            done.store = store
            setup = done.outputs["xrm setup --demo --no-input"][0]
            password = re.search(r"administrator: admin@example\.com\s+password: (\S+)", setup)
            done.admin = Client(done.app).login("admin@example.com", password.group(1))
            done.records = quick_start_in_the_browser(done.admin)
            add_the_field(done.admin)
            remove_the_field(done.admin, store, done.records["account"])
            write_files(ADMIN_GUIDE, folder)
            done.console(ADMIN_GUIDE)
            yield done
        finally:
            store.close()


def write_files(path: Path, folder: Path) -> None:
    """The files a guide asks to save ("save this as `NAME`:" and the block under it)."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"save this as `([^`]+)`:\n\n```\w*\n(.*?)```", text, re.S | re.I)
    assert found, f"{path.name} names no file to save"
    for name, body in found:
        (folder / name).write_text(body, encoding="utf-8")


def form(values: dict[str, str]) -> list[tuple[str, str]]:
    return [*(("_fields", name) for name in values), *values.items()]


def created(response, entity: str) -> int:
    assert response.status_code in (302, 303), response.get_data(as_text=True)[:2000]
    found = re.search(rf"/r/{entity}/(\d+)$", response.headers["Location"])
    assert found, response.headers["Location"]
    return int(found.group(1))


def quick_start_in_the_browser(admin: Client) -> dict[str, int]:
    """Quick start §5–7: an account, its contact, an opportunity; the list's filters; the
    report; the search."""
    assert admin.get("/e/account").status_code in (200, 302)
    assert admin.get("/r/account/new").status_code == 200
    account = created(
        admin.post(
            "/r/account/new",
            form({"name": "Larkspur Bakery", "account_type": "customer", "industry": "retail"}),
        ),
        "account",
    )
    contact = created(
        admin.post(
            "/r/contact/new",
            form(
                {
                    "first_name": "Maria",
                    "last_name": "Garcia",
                    "email": "maria@larkspur.example",
                    "account": str(account),
                }
            ),
        ),
        "contact",
    )
    quarter = (dt.date.today().month - 1) // 3
    next_quarter = dt.date(dt.date.today().year + (quarter == 3), (quarter + 1) % 4 * 3 + 1, 15)
    deal = created(
        admin.post(
            "/r/opportunity/new",
            form(
                {
                    "name": "Larkspur: 40 seats",
                    "account": str(account),
                    "contact": str(contact),
                    "amount": "12,000",
                    "close_date": next_quarter.isoformat(),
                }
            ),
        ),
        "opportunity",
    )
    page = admin.get(f"/r/opportunity/{deal}").get_data(as_text=True)
    assert "Larkspur: 40 seats" in page and "Prospecting" in page
    listed = admin.get("/views/open_opportunities?qf.stage=prospecting").get_data(as_text=True)
    assert "Larkspur: 40 seats" in listed
    proposals = admin.get("/views/open_opportunities?qf.stage=proposal").get_data(as_text=True)
    assert "Larkspur: 40 seats" not in proposals
    large = admin.get('/views/open_opportunities?filter=["amount","ge",10000]')
    assert "Larkspur: 40 seats" in large.get_data(as_text=True)
    assert "Amount ≥ $10,000.00" in large.get_data(as_text=True)
    small = admin.get('/views/open_opportunities?filter=["amount","ge",20000]')
    assert "Larkspur: 40 seats" not in small.get_data(as_text=True)
    report = admin.get("/reports/pipeline_by_stage")
    assert report.status_code == 200 and "Pipeline by stage" in report.get_data(as_text=True)
    found = re.sub(r"</?mark>", "", admin.get("/search?q=larkspur").get_data(as_text=True))
    for title in ("Larkspur Bakery", "Maria Garcia", "Larkspur: 40 seats"):
        assert title in found, title
    return {"account": account, "contact": contact, "opportunity": deal}


def apply_the_plan(admin: Client, page: str) -> None:
    """Apply on the plan's page, back to the accounts' page."""
    applied = admin.post(
        "/admin/apply", {"documents": planned(page), "back": "/admin/entities/account"}
    )
    assert applied.status_code == 303, applied.get_data(as_text=True)[:2000]


def add_the_field(admin: Client) -> None:
    """Administrator's guide §3: the field `tier` on accounts, placed on the form and in
    the view All accounts, through its plan."""
    response = admin.post("/admin/entities/account/fields", TIER_FIELD)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "+ column account.tier" in page
    apply_the_plan(admin, page)


def remove_the_field(admin: Client, store, account: int) -> None:
    """Administrator's guide §3 and §6: an account has a tier, then the field is removed
    through its plan; its column and value stay for the purge the guide shows."""
    record = store.records("account").get(account)
    store.records("account").update(account, {"tier": "gold"}, version=record["version"])
    response = admin.post("/admin/entities/account/fields/tier/remove", {})
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "kept column account.tier" in page, page[:2000]
    apply_the_plan(admin, page)
    assert "tier" not in store.refresh().entities["account"].fields


# ------------------------------------------------------------------------ the tests
def test_the_guides_mark_what_they_do_not_run():
    for path in (QUICK_START, ADMIN_GUIDE):
        found = blocks(path)
        skipped = [b for b in found if b.skip]
        assert all(re.match(r"not run: \w", b.skip) for b in skipped), path.name
        assert len(skipped) <= 4, path.name
        # commands of blocks not run are still ones the xrm command takes
        parser = build_parser()
        for block in skipped:
            for line in block.text.split("\n"):
                line = line.split("#")[0].strip()
                if line.startswith("xrm "):
                    parser.parse_args(shlex.split(line)[1:])
        # shell blocks are either not run or console blocks (which are)
        for block in found:
            assert block.lang not in ("bash", "sh", "shell") or block.skip, (
                f"{path.name}:{block.line}: a shell block must be a console block or say why "
                "it is not run"
            )
    assert len(console_steps(QUICK_START)) >= 5
    assert len(console_steps(ADMIN_GUIDE)) >= 25


def test_the_quick_start_commands_print_what_it_shows(walk):
    assert "xrm setup --demo --no-input" in walk.outputs
    assert walk.runs == ["xrm run", "xrm run --database sqlite:///instance/fresh.db"]
    listed = walk.outputs["xrm solution list"][0]
    assert "service" not in listed  # listed before the install that follows it
    installed = {p.name for p in walk.store.installed_packs()}
    assert {"core", "sales", "service"} <= installed


def test_the_quick_start_in_the_browser_made_its_records(walk):
    store = walk.store
    deal = store.records("opportunity").get(walk.records["opportunity"])
    assert deal["account"] == walk.records["account"] and deal["contact"] == walk.records["contact"]
    assert str(deal["amount"]) == "12000.00" and deal["stage"] == "prospecting"


def test_the_administrators_commands_did_what_it_says(walk):
    store = walk.store
    users = {u.email: u for u in store.users()}
    assert "pat@example.com" in users
    assert "support" in store.teams() and users["pat@example.com"].id in store.teams()["support"]
    assert "marketing" not in {p.name for p in store.installed_packs()}  # uninstalled
    import sqlalchemy as sa

    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("account")}
    assert "tier" not in columns  # purged with the loss allowed
    emails = {r["email"] for r in store.records("contact").query(fields=["email"]).rows}
    assert "tom.baker@larkspur.example" in emails and "lena.ross@larkspur" not in emails
    rejected = (walk.folder / "rejected.csv").read_text(encoding="utf-8-sig")
    assert "lena.ross@larkspur" in rejected
    assert (walk.folder / "larkspur.csv").read_text(encoding="utf-8-sig").count("\n") == 3
    assert (walk.folder / "open.xlsx").stat().st_size > 0
    assert (walk.folder / "backup.tar.gz").exists()
    restored = xrm.open(f"sqlite:///{walk.folder / 'instance' / 'restored.db'}")
    try:
        assert restored.records("contact").count().value == store.records("contact").count().value
    finally:
        restored.close()
    assert (walk.folder / "acme-custom" / "solution.yaml").exists()
    tokens = store.tokens()
    assert [(t.email, t.revoked is not None and bool(t.revoked)) for t in tokens] == [
        ("pat@example.com", True)
    ]


def guide_pages(*paths: Path) -> list[str]:
    pages = []
    for path in paths:
        for page in SITE.findall(path.read_text(encoding="utf-8")):
            if "<" not in page and page not in pages:
                pages.append(page)
    return pages


def test_every_page_the_guides_name_opens_for_the_administrator(walk):
    pages = guide_pages(QUICK_START, ADMIN_GUIDE)
    assert len(pages) >= 30
    assert "/admin/definitions/views/all_accounts/history" in pages
    failed = {}
    for page in pages:
        response = walk.admin.get(page, follow_redirects=True)
        if response.status_code != 200:
            failed[page] = response.status_code
    assert not failed
    history = walk.admin.get("/admin/definitions/views/all_accounts/history")
    page = history.get_data(as_text=True)
    # the change that showed the field in the view, in effect, with its diff
    assert 'data-testid="history-diff"' in page and "tier" in page and "in effect" in page


def test_the_administration_pages_open_on_this_database(database):
    """The administrator's guide's pages on the test database (PostgreSQL too): the
    modules installed as the guides install them, the field added through its plan."""
    store = database.open()
    try:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "service"])
        store.add_user(
            "admin@example.com",
            "Administrator",
            password="a long password",
            roles=["administrator"],
        )
        store.records("opportunity").create(
            {
                "name": "Larkspur: 40 seats",
                "account": store.records("account").create({"name": "Larkspur Bakery"})["id"],
                "close_date": dt.date.today(),
            }
        )
        admin = Client(make_app(store)).login("admin@example.com", "a long password")
        add_the_field(admin)
        failed = {}
        for page in guide_pages(ADMIN_GUIDE):
            response = admin.get(page, follow_redirects=True)
            if response.status_code != 200:
                failed[page] = response.status_code
        assert not failed
    finally:
        store.close()
