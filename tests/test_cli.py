"""The ``xrm`` command, in process: solution install/list, db plan/url, check, bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORE_VERSION

from xrm.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "xrm" / "solutions" / "packs"


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_pack(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    (folder / "entities").mkdir(parents=True)
    (folder / "solution.yaml").write_text(
        f"solution: {name}\nversion: 1.0.0\ndepends: {{core: '>=1.0'}}\n", encoding="utf-8"
    )
    for relative, text in files.items():
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


GOOD_ENTITY = """\
entity: gadget
label: Gadget
fields:
  name: {type: text, required: true}
  account: {type: lookup, to: account}
"""

BAD_ENTITY = """\
entity: gadget
label: Gadget
fields:
  name: {type: txt}
  account: {type: lookup, to: acount}
"""


# ------------------------------------------------------------------------------ solution
def test_install_by_name_prints_the_plan_then_what_was_installed(capsys, db):
    code, out, err = run(capsys, "solution", "install", "core", "--database", db)
    assert code == 0, err
    lines = out.splitlines()
    assert "+ table account" in lines
    assert lines[-1].startswith(f"installed core {CORE_VERSION} (catalog version ")

    code, out, _ = run(capsys, "db", "plan", "--database", db)
    assert (code, out) == (0, "nothing to change\n")


def test_install_plan_changes_nothing(capsys, db):
    code, out, _ = run(
        capsys, "solution", "install", str(SOLUTIONS / "core"), "--plan", "--database", db
    )
    assert code == 0
    assert "+ table account" in out.splitlines()
    assert "installed" not in out

    code, out, _ = run(capsys, "solution", "list", "--database", db)
    assert (code, out) == (0, "no solutions installed\n")
    code, out, _ = run(capsys, "db", "plan", "--database", db)
    assert (code, out) == (0, "nothing to change\n")


def test_install_resolves_dependencies_and_lists_them_in_order(capsys, db, tmp_path):
    pack = write_pack(tmp_path / "packs", "gadgets", {"entities/gadget.yaml": GOOD_ENTITY})
    code, out, err = run(capsys, "solution", "install", str(pack), "--database", db)
    assert code == 0, err
    assert "+ table gadget" in out.splitlines()
    assert out.splitlines()[-1].startswith(f"installed core {CORE_VERSION}, gadgets 1.0.0 ")

    code, out, _ = run(capsys, "solution", "list", "--database", db)
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines()]
    assert rows == [["NAME", "VERSION"], ["core", CORE_VERSION], ["gadgets", "1.0.0"]]

    code, out, _ = run(capsys, "solution", "list", "--json", "--database", db)
    assert code == 0
    assert [(s["name"], s["version"]) for s in json.loads(out)] == [
        ("core", CORE_VERSION),
        ("gadgets", "1.0.0"),
    ]


def test_a_bad_pack_prints_each_problem_and_exits_1(capsys, db, tmp_path):
    pack = write_pack(tmp_path / "packs", "gadgets", {"entities/gadget.yaml": BAD_ENTITY})
    code, out, err = run(capsys, "solution", "install", str(pack), "--database", db)
    assert code == 1
    lines = out.splitlines()
    assert lines, "each problem is printed"
    assert all("gadget.yaml:" in line for line in lines), lines
    assert any("gadget.name" in line and "'txt'" in line for line in lines), lines
    assert "problem" in err
    code, out, _ = run(capsys, "solution", "list", "--database", db)
    assert out == "no solutions installed\n"  # all or nothing


def test_a_refused_schema_change_fails_the_plan_and_the_install(capsys, db, tmp_path):
    entity = "entity: gadget\nlabel: Gadget\nfields:\n  name: {{type: text, max_length: {}}}\n"
    pack = write_pack(tmp_path / "packs", "gadgets", {"entities/gadget.yaml": entity.format(200)})
    assert run(capsys, "solution", "install", str(pack), "--database", db)[0] == 0
    (pack / "entities" / "gadget.yaml").write_text(entity.format(20), encoding="utf-8")

    for extra in (["--plan"], []):
        code, out, err = run(capsys, "solution", "install", str(pack), *extra, "--database", db)
        assert code == 1
        assert any(line.startswith("~ REFUSED gadget.name") for line in out.splitlines()), out
        assert err.startswith("xrm: ") and "refused" in err


def test_an_unknown_solution_name_is_a_usage_error(capsys, db):
    code, out, err = run(capsys, "solution", "install", "salse", "--database", db)
    assert code == 2
    assert "unknown solution 'salse'" in err and "did you mean 'sales'?" in err
    code, _, err = run(capsys, "solution", "install", "./no/such/pack", "--database", db)
    assert code == 2 and "no such folder: ./no/such/pack" in err


def test_an_unreachable_database_is_reported(capsys, tmp_path):
    code, _, err = run(capsys, "db", "plan", "--database", "nosuchdialect://x")
    assert code == 2 and "not a usable database URL" in err
    code, _, err = run(
        capsys, "solution", "list", "--database", f"sqlite:///{tmp_path}"
    )  # a folder
    assert code == 1
    assert err.startswith(f"xrm: cannot open database sqlite:///{tmp_path}: ")


# ------------------------------------------------------------------------------ db
def test_db_plan_shows_pending_changes_as_lines_and_json(capsys, db):
    import xrm

    store = xrm.open(db)
    store.install([SOLUTIONS / "core"])
    with store.engine.begin() as conn:  # a definition without its index: the plan notices
        conn.exec_driver_sql("DROP INDEX ix_account_owner")
    store.close()
    code, out, _ = run(capsys, "db", "plan", "--database", db)
    assert code == 0
    assert "+ index ix_account_owner on account" in out.splitlines()
    code, out, _ = run(capsys, "db", "plan", "--json", "--database", db)
    assert code == 0
    assert json.loads(out)["add_indexes"] == ["account.ix_account_owner"]


def test_db_url_hides_the_password(capsys, monkeypatch):
    code, out, _ = run(capsys, "db", "url", "--database", "postgresql://me:secret@db.example/crm")
    assert (code, out) == (0, "postgresql+psycopg://me:***@db.example/crm\n")
    code, out, _ = run(
        capsys,
        "db",
        "url",
        "--show-password",
        "--database",
        "postgresql://me:secret@db.example/crm",
    )
    assert out == "postgresql+psycopg://me:secret@db.example/crm\n"
    monkeypatch.setenv("XRM_DATABASE_URL", "sqlite:////srv/xrm/crm.db")
    code, out, _ = run(capsys, "db", "url")
    assert out == "sqlite:////srv/xrm/crm.db\n"


def test_unknown_options_are_refused_by_the_command_that_got_them(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["db", "plan", "--bogus"])
    assert exc.value.code == 2
    assert "xrm db plan: error: unrecognized arguments: --bogus" in capsys.readouterr().err


# ------------------------------------------------------------------------------ check
def test_check_ok(capsys):
    code, out, _ = run(capsys, "check", str(SOLUTIONS / "core"))
    assert code == 0
    assert out.startswith("ok: 1 solution, ")


def test_check_reports_problems_and_exits_1(capsys, tmp_path):
    pack = write_pack(tmp_path / "packs", "gadgets", {"entities/gadget.yaml": BAD_ENTITY})
    code, out, err = run(capsys, "check", str(pack))
    assert code == 1
    assert all(":" in line for line in out.splitlines()) and out
    assert err.strip().endswith("found")


def test_check_with_a_database_reports_unknown_users_and_teams_at_their_line(capsys, tmp_path, db):
    import xrm

    pack = write_pack(tmp_path / "packs", "gadgets", {"entities/gadget.yaml": GOOD_ENTITY})
    (pack / "processes").mkdir()
    (pack / "templates").mkdir()
    (pack / "templates" / "gadget.yaml").write_text(
        "templates:\n  hello: {subject: Hello, body: A gadget}\n", encoding="utf-8"
    )
    process = pack / "processes" / "hello.yaml"
    process.write_text(
        "process: hello\nentity: gadget\non: {created: true}\nsteps:\n"
        "  - notify: {to: [user:ann@example.com, team:support], template: hello}\n",
        encoding="utf-8",
    )
    store = xrm.open(db)
    try:
        store.install([SOLUTIONS / "core"])
        ann = store.add_user("ann@example.com")
    finally:
        store.close()

    code, out, err = run(capsys, "check", str(pack), "--database", db)
    assert code == 1
    assert out.strip().endswith(
        "gadgets/processes/hello.yaml:5:5: processes.hello: no team 'support' in this database"
    )
    assert "1 problem found" in err

    store = xrm.open(db)
    try:
        store.add_to_team(ann, "support")
    finally:
        store.close()
    code, out, _ = run(capsys, "check", str(pack), "--database", db)
    assert code == 0 and out.startswith("ok: ")


# ------------------------------------------------------------------------------ bench
STORAGE_FIGURES = (
    "create_per_s",
    "create_vs_core",
    "bulk_per_s",
    "bulk_vs_core",
    "list_first_page_ms",
    "list_first_page_vs_core",
    "list_deep_page_vs_first",
    "count_ms",
    "add_field_ms",
    "rows",
)


def test_bench_storage_json(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "bench",
        "storage",
        "--json",
        "--rows",
        "2000",
        "--database",
        f"sqlite:///{tmp_path / 'bench.db'}",
    )
    assert code == 0, err
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    for key in STORAGE_FIGURES:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)
    assert result["rows"] == 2000
    assert result["database"] == "sqlite"
    assert result["python"] and result["sqlite"]
    assert list(tmp_path.iterdir()) == [], "the run's database file is removed"


def test_bench_json_may_come_before_the_suite_and_help_goes_to_the_suite(capsys):
    code, out, _ = run(capsys, "bench", "--json", "storage", "--help")
    assert code == 0
    assert "--rows" in out


def test_bench_unknown_suite(capsys):
    code, _, err = run(capsys, "bench", "storag")
    assert code == 2
    assert "unknown benchmark suite 'storag'; did you mean 'storage'?" in err


@pytest.mark.parametrize(
    ("suite", "figures"),
    [
        ("ui", ("list_page_ms", "list_query_ms", "form_page_ms", "form_query_ms")),
        (
            "reports",
            ("group_by_stage_ms", "group_by_stage_core_ms", "pipeline_report_ms", "history_rows"),
        ),
    ],
)
def test_bench_page_suites_run_on_a_small_table(capsys, tmp_path, suite, figures):
    """The suites that fill the shipped packs' tables keep running as the packs change
    (a password rule once stopped the UI suite at its first user)."""
    code, out, err = run(
        capsys,
        "bench",
        suite,
        "--json",
        "--quiet",
        "--rows",
        "300",
        "--repeats",
        "1",
        "--database",
        f"sqlite:///{tmp_path / 'bench.db'}",
    )
    assert code == 0, err
    result = json.loads(out)
    for key in figures:
        assert isinstance(result[key], int | float) and result[key] > 0, (key, result[key])
    assert list(tmp_path.iterdir()) == [], "the run's database file is removed"
