"""The guides in docs/guides work as written: the consultant's guide is followed step by
step (each file written, the pack checked after every step), then installed with its
sample data on SQLite and PostgreSQL, and its scenarios run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, SOLUTIONS

from xrm.metadata.loader import check
from xrm.solutions.scenarios import run_scenarios

GUIDE = ROOT / "docs" / "guides" / "consultant.md"
# A file of the guide: a YAML block whose first line is a comment naming it (written with
# that line, as a reader copies it).
BLOCK = re.compile(r"```yaml\n(# (lettings/[^\n]+)\n.*?)```", re.S)


def steps() -> list[tuple[str, dict[str, str]]]:
    """The guide's steps in order, each with the files it writes (path -> text)."""
    text = GUIDE.read_text(encoding="utf-8")
    found = []
    for part in re.split(r"(?m)^## ", text)[1:]:
        title = part.splitlines()[0]
        files = {path: body for body, path in BLOCK.findall(part)}
        if files:
            found.append((title, files))
    return found


def write_step(folder: Path, files: dict[str, str]) -> None:
    for relative, body in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """The guide's pack, written step by step; every step checks clean."""
    folder = tmp_path_factory.mktemp("guide")
    for title, files in steps():
        write_step(folder, files)
        _catalog, problems = check([SOLUTIONS / "core", folder / "lettings"])
        assert not problems, f"after step {title!r}:\n" + "\n".join(map(str, problems))
    return folder / "lettings"


def test_the_guide_has_its_steps():
    titles = [title for title, _files in steps()]
    assert len(titles) >= 7
    written = {path for _t, files in steps() for path in files}
    for kind in (
        "solution.yaml",
        "entities/",
        "views/",
        "forms/",
        "roles/",
        "processes/",
        "reports/",
        "dashboards/",
        "demo/",
        "tests/",
    ):
        assert any(kind in path for path in written), kind


def test_the_mistake_the_guide_shows_is_reported_as_it_says(pack, tmp_path):
    import shutil

    text = GUIDE.read_text(encoding="utf-8")
    quoted = re.search(r"check says so — `([^`]+)`", text).group(1)
    copy = tmp_path / "lettings"
    shutil.copytree(pack, copy)
    entity = copy / "entities" / "property.yaml"
    entity.write_text(entity.read_text().replace("to: account,", "to: acount,"))
    _catalog, problems = check([SOLUTIONS / "core", copy])
    assert [str(p).split("lettings/", 1)[1] for p in problems] == [quoted.split("lettings/", 1)[1]]


def test_every_step_checks_clean_and_the_catalog_holds_what_the_guide_says(pack):
    catalog, problems = check([SOLUTIONS / "core", pack])
    assert not problems
    assert {"property", "unit", "lease"} <= set(catalog.entities)
    assert "lease_renewal" in catalog.processes
    assert "rent_roll" in catalog.reports and "lettings" in catalog.dashboards
    assert "letting_agent" in catalog.roles


def test_installed_with_sample_data_the_report_and_dashboard_have_figures(database, pack):
    from xrm.reports import run_report
    from xrm.workflow.worker import Worker

    store = database.open()
    try:
        store.install([SOLUTIONS / "core", pack], demo=True)
        Worker(store).run_once()
        catalog = store.refresh()
        result = run_report(store, catalog.reports["rent_roll"], {}, None)
        assert result.totals["leases"] == 3
        assert float(result.totals["rent"]) == 1150 + 1250 + 2350
        houses = {
            r["name"]: r
            for r in store.records("property")
            .query(fields=["name", "unit_count", "let_count", "occupancy"])
            .rows
        }
        assert houses["Harbour House"]["unit_count"] == 3
        assert houses["Harbour House"]["let_count"] == 2
        assert houses["Northgate Court"]["let_count"] == 1
        leases = store.records("lease").query(fields=["number", "annual_rent"]).rows
        assert all(r["number"].startswith("L-") for r in leases)
    finally:
        store.close()


def test_the_guides_scenarios_pass(pack):
    outcomes = run_scenarios([SOLUTIONS / "core", pack], solutions=["lettings"])
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert not outcome.failures, (outcome.name, outcome.failures)
