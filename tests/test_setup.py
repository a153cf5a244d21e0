"""First-time setup through the CLI: modules, administrator, sample data, idempotence,
and precise refusals of bad answers."""

from __future__ import annotations

import pytest

import xrm
from xrm.cli import main


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'setup.db'}"


def test_setup_installs_modules_admin_and_samples_once(url, capsys):
    assert (
        main(
            [
                "setup",
                "--database",
                url,
                "--demo",
                "--demo-size",
                "5",
                "--locale",
                "ru",
                "--time-zone",
                "Europe/Moscow",
                "--currency",
                "rub",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "solutions core, sales" in out
    password = out.split("password: ")[1].split()[0]
    store = xrm.open(url)
    try:
        assert store.check_password("admin@example.com", password) is not None
        assert store.principal(store.user_by_email("admin@example.com").id).is_admin
        settings = store.settings()
        assert (settings["locale"], settings["currency"], settings["time_zone"]) == (
            "ru",
            "RUB",
            "Europe/Moscow",
        )
        first = store.records("opportunity").count().value
        assert first > 0  # the sales pack's own sample deals (demo/), whatever the size
        assert 0 < store.records("task").count().value <= 5  # invented samples: 5 each
        # Samples follow the rules: every opportunity's account exists.
        for row in store.records("opportunity").query(fields=["account.name"]).rows:
            assert row["account.name"]
        people = len(store.users())  # the administrator and the demo's sales team
    finally:
        store.close()
    # A second run keeps the earlier answers, adds no second administrator or samples.
    assert main(["setup", "--database", url, "--demo"]) == 0
    out = capsys.readouterr().out
    assert "setup was done already" in out and "password" not in out
    store = xrm.open(url)
    try:
        assert store.records("opportunity").count().value == first
        assert store.settings()["locale"] == "ru"
        assert len(store.users()) == people
    finally:
        store.close()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--time-zone", "Europe/Moskow", "did you mean 'Europe/Moscow'"),
        ("--currency", "XYZ", "not an ISO 4217 code"),
        ("--locale", "zz", "locale 'zz' is not known"),
        ("--modules", "core,sale", "did you mean 'sales'"),
        ("--admin-password", "short", "at least 10 characters"),
        ("--admin-password", "Password2024!", "too common"),
    ],
)
def test_bad_answers_are_refused_and_change_nothing(url, capsys, option, value, message):
    assert main(["setup", "--database", url, option, value]) == 2
    assert message in capsys.readouterr().err
    store = xrm.open(url)
    try:
        assert store.settings() == {}
        assert store.users() == []
        assert list(store.catalog.solutions) == []
    finally:
        store.close()


def test_user_and_token_commands(url, capsys):
    assert main(["setup", "--database", url, "--admin-password", "correct horse"]) == 0
    assert (
        main(
            [
                "user",
                "add",
                "rep@example.com",
                "--role",
                "user",
                "--team",
                "east",
                "--password",
                "east coast seller",
                "--database",
                url,
            ]
        )
        == 0
    )
    assert main(["user", "add", "rep@example.com", "--database", url]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["user", "add", "x@example.com", "--role", "wizard", "--database", url]) == 1
    assert "unknown role 'wizard'" in capsys.readouterr().err
    assert main(["token", "create", "rep@example.com", "--database", url]) == 0
    token = capsys.readouterr().out.strip()
    store = xrm.open(url)
    try:
        assert store.user_for_token(token).email == "rep@example.com"
        assert store.principal(store.user_by_email("rep@example.com").id).roles == ("user",)
    finally:
        store.close()


# ------------------------------------------------------------------ in a terminal
def _converse(url: str, answers: list[tuple[str, str]]) -> str:
    """Run ``xrm setup`` on a pseudo-terminal, answering each prompt when it shows."""
    import os
    import pty
    import select
    import subprocess
    import sys

    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from xrm.cli import main; sys.exit(main(sys.argv[1:]))"]
        + ["setup", "--database", url],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    seen = ""
    pending = list(answers)
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            child.kill()
            raise AssertionError(f"no prompt came; so far:\n{seen}")
        try:
            chunk = os.read(leader, 4096).decode()
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        while pending and pending[0][0] in seen.rsplit("\n", 1)[-1]:
            os.write(leader, (pending.pop(0)[1] + "\n").encode())
            seen += "\n"
    assert child.wait(60) == 0, seen
    os.close(leader)
    return seen


def test_setup_in_a_terminal_asks_for_what_is_missing_and_checks_each_answer(url):
    seen = _converse(
        url,
        [
            ("Organization", "Acme"),
            ("Language", "xx_YY_ZZ"),  # refused, asked again
            ("Language", "ru"),
            ("Currency", "RUB"),
            ("Time zone", "Europe/Moscva"),  # refused with a suggestion
            ("Time zone", "Europe/Moscow"),
            ("email", "boss@acme.test"),
            ("password", ""),  # generated
            ("Modules", "sales"),  # core is added and the reason said
            ("sample data", "n"),
        ],
    )
    assert "locale 'xx_YY_ZZ' is not known" in seen
    assert "did you mean 'Europe/Moscow'" in seen
    assert "core is added too: sales needs it" in seen
    assert "administrator: boss@acme.test  password:" in seen
    store = xrm.open(url)
    try:
        settings = store.settings()
        assert (settings["organization"], settings["locale"], settings["time_zone"]) == (
            "Acme",
            "ru",
            "Europe/Moscow",
        )
        assert set(store.refresh().solutions) == {"core", "sales"}
    finally:
        store.close()


def test_setup_with_no_input_or_options_asks_nothing(url, capsys):
    assert main(["setup", "--database", url, "--no-input"]) == 0
    assert "My company" in capsys.readouterr().out
