"""The parse cache: a file read once is taken from disk by the next process with the same
tree, positions included; files with problems, odd trees and damaged entries never are."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xrm.metadata import load_catalog, parse_cache
from xrm.metadata import packs as packs_module
from xrm.metadata.packs import parse_pack, read_pack_files, shipped_solutions
from xrm.metadata.problems import DefinitionError, Problems
from xrm.metadata.source import Node, load_yaml


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XRM_CACHE_DIR", str(tmp_path / "cache"))
    packs_module._READ.clear()
    yield tmp_path / "cache" / "parsed"
    packs_module._READ.clear()


def same_tree(a, b, where="") -> None:
    """Equal values, the same container classes, and every position the same."""
    assert type(a) is type(b), where
    if isinstance(a, Node):
        assert a.position == b.position, where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert a.at(key) == b.at(key), f"{where}/{key}"
            assert a.value_at(key) == b.value_at(key), f"{where}/{key}"
            same_tree(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert a.at(index) == b.at(index), f"{where}[{index}]"
            same_tree(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


def read(folder: Path) -> list:
    packs_module._READ.clear()  # as a new process: nothing remembered in memory
    problems = Problems()
    pack = parse_pack(read_pack_files(folder), str(folder), problems)
    assert not problems
    return pack.documents


@pytest.mark.parametrize("name", ["core", "sales"])
def test_shipped_documents_come_back_identical(cache_dir, monkeypatch, name):
    folder = shipped_solutions() / name
    monkeypatch.setenv("XRM_CACHE_DIR", "off")
    parsed = read(folder)
    monkeypatch.setenv("XRM_CACHE_DIR", str(cache_dir.parent))
    read(folder)  # writes the cache
    assert len(list(cache_dir.glob("*/*.json"))) == len(parsed) + 1  # and the manifest
    cached = read(folder)
    assert [d.kind for d in cached] == [d.kind for d in parsed]
    for one, other in zip(parsed, cached, strict=True):
        same_tree(one.data, other.data, one.path)


def test_cached_tree_keeps_scalars_and_a_process_on_key(cache_dir):
    text = (
        "process: p\n"
        "on: {created: x}\n"
        "when: 2026-01-02\n"
        "at: 2026-01-02 10:30:00\n"
        "n: [1, 2.5, true, null, '7']\n"
    )
    data = load_yaml(text, "p/processes/p.yaml")
    data["on"] = data.pop(True)  # as the reader normalizes a process
    data.positions["on"] = data.positions.pop(True)
    parse_cache.put("processes/p.yaml", "p/processes/p.yaml", text, "process", data)
    kind, back = parse_cache.get("processes/p.yaml", "p/processes/p.yaml", text)
    assert kind == "process"
    assert back["when"] == dt.date(2026, 1, 2)
    assert back["at"] == dt.datetime(2026, 1, 2, 10, 30)
    assert back["n"] == [1, 2.5, True, None, "7"]
    assert str(back.at("on")) == "p/processes/p.yaml:2:1"
    assert str(back["n"].at(3)) == "p/processes/p.yaml:5:19"


def test_key_covers_text_place_and_display(cache_dir):
    text = "entity: a\nfields: {}\n"
    data = load_yaml(text, "p/entities/a.yaml")
    parse_cache.put("entities/a.yaml", "p/entities/a.yaml", text, "entity", data)
    assert parse_cache.get("entities/a.yaml", "p/entities/a.yaml", text) is not None
    assert parse_cache.get("entities/a.yaml", "p/entities/a.yaml", text + "\n") is None
    assert parse_cache.get("entities/b.yaml", "p/entities/a.yaml", text) is None
    assert parse_cache.get("entities/a.yaml", "q/entities/a.yaml", text) is None


def test_a_file_with_a_problem_is_never_cached(cache_dir, tmp_path):
    folder = tmp_path / "p"
    (folder / "entities").mkdir(parents=True)
    (folder / "solution.yaml").write_text("solution: p\nversion: '1.0'\n")
    (folder / "entities" / "a.yaml").write_text(
        "entity: a\nlabel: {en: A}\nplural: {en: As}\nfields: {n: {type: text, max_lenght: 3}}\n"
    )
    for _ in range(2):  # the second read makes its message anew
        packs_module._READ.clear()
        problems = Problems()
        parse_pack(read_pack_files(folder), str(folder), problems)
        assert "max_lenght" in " ".join(str(p) for p in problems.items)
    assert len(list(cache_dir.glob("*/*.json"))) == 1  # the manifest only


def test_damaged_or_foreign_entries_count_as_misses(cache_dir):
    text = "entity: a\nfields: {}\n"
    data = load_yaml(text, "p/entities/a.yaml")
    parse_cache.put("entities/a.yaml", "p/entities/a.yaml", text, "entity", data)
    (entry,) = cache_dir.glob("*/*.json")
    for body in (
        "{not json",
        '{"kind": "entity"}',
        json.dumps([99, "entity", {}]),
        '[1, "entity", 5]',
    ):
        entry.write_text(body)
        assert parse_cache.get("entities/a.yaml", "p/entities/a.yaml", text) is None


def test_off_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("XRM_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parse_cache.directory() is None
    packs_module._READ.clear()
    load_catalog([str(shipped_solutions())])
    assert not any(tmp_path.iterdir())


def test_a_start_from_the_cache_does_not_import_yaml(cache_dir):
    code = (
        "import sys\n"
        "from xrm.metadata import load_catalog, packs\n"
        f"load_catalog([{str(shipped_solutions())!r}])\n"
        "print('yaml' in sys.modules)\n"
    )
    env_run = [sys.executable, "-c", code]
    import os

    env = {**os.environ, "XRM_CACHE_DIR": str(cache_dir.parent)}
    first = subprocess.run(env_run, env=env, capture_output=True, text=True, check=True)
    again = subprocess.run(env_run, env=env, capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "True"
    assert again.stdout.strip() == "False"


# ------------------------------------------------------------------ remembered answers
_FRESH_LOAD = r"""
import json, sys
from xrm.metadata import load_catalog
catalog = load_catalog([sys.argv[1]])
print(json.dumps({"jinja2": "jinja2" in sys.modules, "croniter": "croniter" in sys.modules,
                  "processes": len(catalog.processes)}))
"""


def fresh_load(tmp_path) -> dict:
    env = {**os.environ, "XRM_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_LOAD, str(shipped_solutions())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_start_with_every_answer_remembered_parses_no_template(tmp_path):
    first = fresh_load(tmp_path)
    assert first["jinja2"] and first["croniter"]  # worked out, then written down
    memo = tmp_path / "cache" / "parsed" / "memo"
    assert {p.name.split(".")[0] for p in memo.iterdir()} >= {"template_shape", "cron"}
    second = fresh_load(tmp_path)
    assert second == {**first, "jinja2": False, "croniter": False}


def test_remembered_answers_are_the_answers(cache_dir):
    from xrm.metadata.expressions import formula_shape, template_shape
    from xrm.metadata.process_compiler import check_cron

    texts = ["Hi {{ record.account.name | upper }} {% set x = 1 %}{{ x }}", "{{ oops", "{{ a.b }}"]
    worked = [template_shape(t) for t in texts] + [formula_shape("a * 2 + b.c")]
    cron = [check_cron("0 8 * * 1-5"), check_cron("61 * * * *")]
    assert worked[0].free == ("record",) and worked[0].chains[0] == ("record", "account", "name")
    assert worked[1].syntax and worked[2].single == ("a", "b")
    assert worked[3].arithmetic == ("a",) and worked[3].attributes == (("b", "c"),)
    assert cron[0] is None and "not a cron expression" in cron[1]
    parse_cache.save_remembered()
    for function in (template_shape, formula_shape, check_cron):
        function.cache_clear()
    parse_cache._tables.clear()  # as a new process: read back from disk
    assert [template_shape(t) for t in texts] + [formula_shape("a * 2 + b.c")] == worked
    assert [check_cron("0 8 * * 1-5"), check_cron("61 * * * *")] == cron


def test_a_damaged_memo_is_worked_out_again(cache_dir):
    from xrm.metadata.expressions import template_shape

    template_shape("{{ record.name }}")
    parse_cache.save_remembered()
    (table,) = (cache_dir / "memo").glob("template_shape.*.json")
    for body in ('{"{{ record.name }}": [1, 2]}', "[1]", "{broken"):
        table.write_text(body)
        template_shape.cache_clear()
        parse_cache._tables.clear()
        assert template_shape("{{ record.name }}").chains == (("record", "name"),)


def test_packs_built_clean_before_skip_their_checked_only_files(cache_dir, tmp_path):
    """Sample data and pack tests are only checked by a build: a second build of the very
    same packs does not read them, and any change to a pack checks them again."""
    core = shipped_solutions() / "core"
    pack = tmp_path / "p"
    (pack / "entities").mkdir(parents=True)
    (pack / "demo").mkdir()
    (pack / "solution.yaml").write_text("solution: p\nversion: '1.0'\ndepends: {core: '>=0'}\n")
    entity = "entity: thing\nlabel: {en: Thing}\nplural: {en: Things}\nfields: {n: {type: text}}\n"
    (pack / "entities" / "thing.yaml").write_text(entity)
    (pack / "demo" / "things.yaml").write_text("demo: thing\nkey: n\nrecords:\n  - {n: one}\n")

    def build():
        packs_module._READ.clear()
        parse_cache._tables.clear()  # as a new process
        found = load_catalog([core, pack])
        parse_cache.save_remembered()
        return found

    build()  # the demo file is checked, then the clean build noted
    build()  # from the cache: the demo file is deferred, and never decoded
    from xrm.metadata.loader import resolve_packs

    packs_module._READ.clear()
    (p,) = [x for x in resolve_packs([core, pack]) if x.name == "p"]
    assert [d[0] for d in p.deferred] == ["demo/things.yaml"]
    assert [d.kind for d in p.documents] == ["demo", "entity"]  # asked for: read after all
    # The entity loses the field the sample data sets: the demo file is checked again.
    (pack / "entities" / "thing.yaml").write_text(
        entity.replace("n: {type: text}", "m: {type: text}")
    )
    with pytest.raises(DefinitionError) as raised:
        build()
    found = [str(problem) for problem in raised.value.problems]
    assert found and all("demo/things.yaml" in p and "'n'" in p for p in found), found


LATER = ("forms", "reports", "dashboards", "processes", "templates", "calendars", "slas")
LATER += ("wizards", "web_forms")


def test_later_sections_of_packs_built_clean_before_wait_for_first_use(cache_dir):
    """A build of the very packs and layer that built clean before decodes forms,
    processes, reports... only when one of them is first asked for, and builds the same
    sections as a build that checks everything (the layer rewrites a pack's form)."""
    from xrm.metadata.loader import resolve_packs
    from xrm.metadata.packs import Document
    from xrm.metadata.source import load_yaml

    shipped = sorted(shipped_solutions().iterdir())
    form = load_yaml((shipped_solutions() / "core" / "forms" / "account.yaml").read_text())
    form["forms"]["account_main"]["label"] = {"en": "Company"}
    layer = [Document("forms", {"forms": {"account_main": form["forms"]["account_main"]}}, "c#1")]

    def build():
        packs_module._READ.clear()
        parse_cache._tables.clear()  # as a new process
        return load_catalog(shipped, layer)

    checked = build()  # checks everything, then notes the clean build
    assert all(type(getattr(checked, name)).__name__ == "mappingproxy" for name in LATER)
    later = build()
    assert {type(getattr(later, name)).__name__ for name in LATER} == {"_LaterSection"}
    packs_module._READ.clear()
    core = next(p for p in resolve_packs(shipped) if p.name == "core")
    assert core.pending and all(f[0].startswith(packs_module.LATER_FOLDERS) for f in core.pending)
    assert later.forms["account_main"].label.get("en") == "Company"  # builds them all, once
    for name in LATER:
        assert dict(getattr(later, name)) == dict(getattr(checked, name)), name
    assert later.summary() == checked.summary()
