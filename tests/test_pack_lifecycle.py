"""A pack's life after install: the plan of an upgrade (definitions, kept data,
customizations in conflict), downgrades refused, uninstall keeping data and refused while
another pack needs it, and purge dropping what no definition uses without touching the
rows of other tables — through the store and through ``xrm solution``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import write_pack

import xrm
from xrm.cli import main
from xrm.solutions.lifecycle import plan_install, plan_uninstall
from xrm.storage.schema import LossNotNamed, SchemaChangeRefused
from xrm.storage.store import LifecycleRefused

GADGET_V1 = {
    "entities/gadget.yaml": """
entity: gadget
label: {en: Gadget}
plural: {en: Gadgets}
title: name
fields:
  name: {type: text, required: true}
  code: {type: text}
  maker: {type: lookup, to: account, on_delete: set_null}
""",
    "entities/account_ext.yaml": """
extend: account
fields:
  favourite_gadget: {type: lookup, to: gadget, on_delete: set_null}
  gadget_note: {type: text}
""",
    "views/gadgets.yaml": """
views:
  all_gadgets: {entity: gadget, label: {en: All gadgets}, columns: [name, code]}
""",
}


def gadget_v2() -> dict:
    files = dict(GADGET_V1)
    files["entities/gadget.yaml"] = files["entities/gadget.yaml"].replace(
        "  code: {type: text}\n", "  colour: {type: text}\n"
    )
    files["views/gadgets.yaml"] = """
views:
  all_gadgets: {entity: gadget, label: {en: All gadgets}, columns: [name, colour]}
  by_colour: {entity: gadget, label: {en: By colour}, columns: [colour, name]}
"""
    return files


@pytest.fixture
def gadgets(store, tmp_path):
    """Core plus the gadget pack 1.0.0, with an account, a contact of it and two gadgets."""
    folder = write_pack(tmp_path / "v1", "gadgets", GADGET_V1, depends={"core": ">=1.0"})
    store.install([folder])
    account = store.records("account").create({"name": "Acme", "gadget_note": "likes them"})
    contact = store.records("contact").create(
        {"first_name": "Ann", "last_name": "Lee", "account": account["id"]}
    )
    for name in ("Widget", "Sprocket"):
        store.records("gadget").create({"name": name, "code": name[:3], "maker": account["id"]})
    store.records("account").update(account["id"], {"favourite_gadget": 1})
    return {"account": account["id"], "contact": contact["id"], "folder": folder}


def columns(store, table: str) -> set[str]:
    with store.engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def tables(store) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_upgrade_plan_lists_definitions_kept_data_and_conflicts(store, gadgets, tmp_path):
    store.customize(
        "views",
        {
            "views": {
                "all_gadgets": {"entity": "gadget", "label": {"en": "Mine"}, "columns": ["name"]}
            }
        },
    )
    newer = write_pack(tmp_path / "v2", "gadgets", gadget_v2(), {"core": ">=1.0"}, "1.1.0")
    plan = plan_install(store, [newer])
    lines = plan.lines()
    assert "upgrade gadgets 1.0.0 -> 1.1.0" in lines
    assert "~ entity gadget (changed, gadgets)" in lines
    assert "+ views by_colour (added, gadgets)" in lines
    assert "~ views all_gadgets (changed, gadgets)" in lines
    assert "+ column gadget.colour" in lines
    assert any(
        line.startswith("= kept column gadget.code: no longer defined, 2 rows of data kept")
        for line in lines
    ), lines
    assert any(
        line.startswith("! views all_gadgets: customized by an administrator") for line in lines
    )
    assert "code" in columns(store, "gadget") and "colour" not in columns(store, "gadget")


def test_a_downgrade_is_refused_and_changes_nothing(store, gadgets, tmp_path):
    older = write_pack(tmp_path / "v0", "gadgets", gadget_v2(), {"core": ">=1.0"}, "0.9.0")
    version = store.catalog.version
    with pytest.raises(LifecycleRefused, match=r"gadgets 1.0.0 is installed and 0.9.0 is older"):
        store.install([older])
    with pytest.raises(LifecycleRefused, match="downgrades are refused"):
        plan_install(store, [older])
    assert store.refresh().version == version
    assert "colour" not in columns(store, "gadget")


def test_uninstall_is_refused_while_another_pack_depends_on_it(store, gadgets):
    with pytest.raises(LifecycleRefused, match="core cannot be uninstalled: gadgets depends on it"):
        store.uninstall("core")
    with pytest.raises(LifecycleRefused, match="'nothing' is not installed"):
        store.uninstall("nothing")
    assert "gadgets" in store.refresh().solutions


def test_uninstall_keeps_data_and_purge_drops_only_what_no_definition_uses(store, gadgets):
    plan = plan_uninstall(store, "gadgets")
    lines = plan.lines()
    assert "uninstall gadgets 1.0.0" in lines
    assert "- entity gadget (removed, gadgets)" in lines
    store.uninstall("gadgets")
    catalog = store.refresh()
    assert "gadgets" not in catalog.solutions and "gadget" not in catalog.entities
    assert "favourite_gadget" not in catalog.entity("account").fields
    assert "gadget" in tables(store)  # the data stays
    assert {"favourite_gadget", "gadget_note"} <= columns(store, "account")

    _plan, would = store.purge(dry_run=True)
    assert "- table gadget (dropped with its data)" in would
    assert "- column account.favourite_gadget (dropped with its data)" in would
    assert "gadget" in tables(store)

    # what holds data goes only when named: refused with the rows, and nothing dropped
    with pytest.raises(SchemaChangeRefused) as refused:
        store.purge(allow_loss=["gadget"])
    message = str(refused.value)
    assert "account.gadget_note: the column is dropped with its data (1 row affected" in message
    assert "--allow-loss account.gadget_note" in message
    assert "gadget" in tables(store) and "gadget_note" in columns(store, "account")
    with pytest.raises(LossNotNamed, match="--allow-loss acount: this change would not lose"):
        store.purge(allow_loss=["gadget", "account", "acount"])
    _plan, dropped = store.purge(allow_loss=["gadget", "account"])  # a table names its columns
    assert set(would) == set(dropped)
    assert "gadget" not in tables(store)
    assert not {"favourite_gadget", "gadget_note"} & columns(store, "account")
    # the rebuilt account table kept its rows, its children and their references
    assert store.records("account").get(gadgets["account"])["name"] == "Acme"
    contact = store.records("contact").get(gadgets["contact"])
    assert contact["account"] == gadgets["account"]
    accounts = store.records("account")
    assert accounts.count(search="Acme").value == 1  # its search index was built again
    accounts.create({"name": "Globex"})
    assert accounts.count(search="Globex").value == 1
    store.records("contact").create(
        {"first_name": "Bo", "last_name": "Ng", "account": gadgets["account"]}
    )
    _plan, again = store.purge()
    assert again == []


def test_solution_commands_plan_uninstall_and_purge(capsys, tmp_path):
    """The commands, on an SQLite file of their own (they open a store by URL)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    older = write_pack(tmp_path / "v1", "gadgets", GADGET_V1, {"core": ">=1.0"})
    assert main(["solution", "install", str(older), "--database", url]) == 0
    newer = write_pack(tmp_path / "v2", "gadgets", gadget_v2(), {"core": ">=1.0"}, "1.1.0")
    assert main(["solution", "install", str(newer), "--database", url]) == 0
    capsys.readouterr()
    assert main(["solution", "plan", str(older), "--database", url]) == 1
    assert "downgrades are refused" in capsys.readouterr().err
    assert main(["solution", "install", str(older), "--database", url]) == 1
    assert "gadgets 1.1.0 is installed and 1.0.0 is older" in capsys.readouterr().err
    assert main(["solution", "uninstall", "core", "--database", url]) == 1
    assert "gadgets depends on it" in capsys.readouterr().err
    opened = xrm.open(url)
    try:
        for name in ("Widget", "Sprocket"):
            opened.records("gadget").create({"name": name})
    finally:
        opened.close()
    assert main(["solution", "plan", "gadgets", "--uninstall", "--database", url]) == 0
    assert "- entity gadget (removed, gadgets)" in capsys.readouterr().out
    assert main(["solution", "uninstall", "gadgets", "--purge", "--database", url]) == 1
    captured = capsys.readouterr()
    assert "! data loss gadget: the table is dropped with its data (2 rows;" in captured.out
    assert "nothing was applied; to accept, add --allow-loss gadget" in captured.err
    assert main(["solution", "list", "--database", url]) == 0
    assert "gadgets" in capsys.readouterr().out  # not even uninstalled
    assert (
        main(
            ["solution", "uninstall", "gadgets", "--purge", "--allow-loss", "gadget"]
            + ["--database", url]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "uninstalled gadgets" in out and "- table gadget (dropped with its data)" in out
    assert "- column gadget.code" not in out  # went with its table
    assert main(["solution", "purge", "--plan", "--database", url]) == 0
    assert "nothing to purge" in capsys.readouterr().out


# ------------------------------------------------------------------ export
def test_exported_customizations_install_elsewhere_to_an_identical_catalog(tmp_path, capsys):
    from xrm.metadata.dump import canonical

    here, there = (f"sqlite:///{tmp_path / name}.db" for name in ("here", "there"))
    for url in (here, there):
        assert main(["solution", "install", "sales", "--database", url]) == 0
    source = xrm.open(here)
    try:
        source.customize(
            "extend",
            {
                "extend": "account",
                "fields": {
                    "loyalty": {"type": "integer", "label": {"en": "Loyalty", "ru": "Лояльность"}}
                },
            },
        )
        source.customize(
            "views",
            {
                "views": {
                    "loyal_accounts": {
                        "entity": "account",
                        "columns": ["name", "loyalty"],
                        "filter": ["loyalty", "ge", 3],
                    }
                }
            },
        )
        source.customize_all(
            [
                (
                    "reports",
                    {
                        "reports": {
                            "by_loyalty": {
                                "entity": "account",
                                "label": {"en": "By loyalty"},
                                "group_by": ["loyalty"],
                                "measures": {"accounts": {"count": True}},
                            }
                        }
                    },
                )
            ],
            replacing=[("reports", "by_loyalty")],
        )
        expected = canonical(source.refresh())
    finally:
        source.close()
    folder = tmp_path / "export"
    capsys.readouterr()
    assert (
        main(
            ["solution", "export", "--to", str(folder), "--name", "acme_custom", "--database", here]
        )
        == 0
    )
    assert "exported 3 customization document(s)" in capsys.readouterr().out
    assert (folder / "solution.yaml").read_text().count("customization: true") == 1
    assert (
        main(["solution", "export", "--to", str(folder), "--name", "again", "--database", here])
        == 2
    )
    assert "is not empty" in capsys.readouterr().err

    assert main(["solution", "install", str(folder), "--database", there]) == 0
    target = xrm.open(there)
    try:
        catalog = target.refresh()
        assert canonical(catalog) == expected
        assert "acme_custom" not in catalog.solutions  # it joined the layer
        target.records("account").create({"name": "Acme", "loyalty": 4})
        assert main(["solution", "install", str(folder), "--database", there]) == 0  # again
        assert len(target.customization_documents()) == 3  # nothing piled up
        assert canonical(target.refresh()) == expected
    finally:
        target.close()


# ------------------------------------------------------------------ data/ and demo/
CODES = {
    "entities/industry.yaml": """
entity: industry
label: {en: Industry}
plural: {en: Industries}
title: name
fields:
  code: {type: text, required: true, unique: true}
  name: {type: text, required: true}
  parent: {type: lookup, to: industry, on_delete: set_null}
""",
    "data/industries.yaml": """
data: industry
key: code
records:
  - {code: it, name: IT services}
  - {code: saas, name: Software as a service, parent: {code: it}}
""",
    "demo/accounts.yaml": """
demo: account
key: name
records:
  - {name: Sample Corp}
""",
}


def industries(store) -> dict:
    rows = store.records("industry").query(fields=["code", "name", "parent"]).rows
    return {row["code"]: row for row in rows}


def test_reference_data_is_upserted_by_key_and_demo_only_when_asked(store, tmp_path):
    folder = write_pack(tmp_path / "v1", "codes", CODES, {"core": ">=1.0"})
    store.install([folder])
    found = industries(store)
    assert {k: v["name"] for k, v in found.items()} == {
        "it": "IT services",
        "saas": "Software as a service",
    }
    assert found["saas"]["parent"] == found["it"]["id"]
    assert store.records("account").count().value == 0  # no sample data unless asked

    renamed = dict(CODES)
    renamed["data/industries.yaml"] = (
        CODES["data/industries.yaml"].replace("IT services", "Information technology")
        + "  - {code: fin, name: Finance}\n"
    )
    newer = write_pack(tmp_path / "v2", "codes", renamed, {"core": ">=1.0"}, "1.1.0")
    store.install([newer], demo=True)
    again = industries(store)
    assert len(again) == 3 and again["it"]["id"] == found["it"]["id"]
    assert again["it"]["name"] == "Information technology"
    assert store.records("account").count().value == 1
    store.install([newer], demo=True)  # once more: nothing added twice
    assert len(industries(store)) == 3 and store.records("account").count().value == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("parent: {code: it}", "parent: {code: nope}"), "data/industries.yaml:6:"),
        (
            ("{code: it, name: IT services}", "{code: it, nam: IT services}"),
            "'nam' is not a field of industry",
        ),
        (
            ("{code: it, name: IT services}", "{code: it}"),
            "industries.yaml:5:5: industry: name: required",
        ),
    ],
)
def test_bad_reference_data_installs_nothing(store, tmp_path, change, message):
    from xrm.metadata import DefinitionError

    files = dict(CODES)
    files["data/industries.yaml"] = files["data/industries.yaml"].replace(*change)
    folder = write_pack(tmp_path / "bad", "codes", files, {"core": ">=1.0"})
    version = store.catalog.version
    with pytest.raises(DefinitionError) as caught:
        store.install([folder])
    assert message in str(caught.value)
    assert store.refresh().version == version
    assert "industry" not in tables(store)


def test_an_upgrade_conflicting_with_a_customization_waits_for_acceptance(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'conflict.db'}"
    older = write_pack(tmp_path / "v1", "gadgets", GADGET_V1, {"core": ">=1.0"})
    assert main(["solution", "install", str(older), "--database", url]) == 0
    store = xrm.open(url)
    try:
        store.customize(
            "views",
            {
                "views": {
                    "all_gadgets": {
                        "entity": "gadget",
                        "label": {"en": "Mine"},
                        "columns": ["name"],
                    }
                }
            },
        )
    finally:
        store.close()
    newer = write_pack(tmp_path / "v2", "gadgets", gadget_v2(), {"core": ">=1.0"}, "1.1.0")
    capsys.readouterr()
    assert main(["solution", "install", str(newer), "--database", url]) == 1
    captured = capsys.readouterr()
    assert "! views all_gadgets: customized by an administrator" in captured.out
    assert "--accept-conflicts" in captured.err
    store = xrm.open(url)
    try:
        assert store.refresh().solutions["gadgets"].version == "1.0.0"  # nothing applied
    finally:
        store.close()
    assert main(["solution", "install", str(newer), "--accept-conflicts", "--database", url]) == 0
    store = xrm.open(url)
    try:
        catalog = store.refresh()
        assert catalog.solutions["gadgets"].version == "1.1.0"
        assert catalog.views["all_gadgets"].columns == ("name",)  # the customization stays on top
    finally:
        store.close()


def test_a_field_renamed_from_its_old_name_keeps_its_data(store, gadgets, tmp_path):
    files = dict(GADGET_V1)
    files["entities/gadget.yaml"] = (
        files["entities/gadget.yaml"]
        .replace(
            "  code: {type: text}\n", "  sku: {type: text, renamed_from: code, searchable: true}\n"
        )
        .replace("  maker: {type: lookup", "  manufacturer: {renamed_from: maker, type: lookup")
    )
    files["views/gadgets.yaml"] = files["views/gadgets.yaml"].replace("[name, code]", "[name, sku]")
    renamed = write_pack(tmp_path / "v3", "gadgets", files, {"core": ">=1.0"}, "1.2.0")
    lines = plan_install(store, [renamed]).lines()
    assert "~ rename column gadget.code -> gadget.sku (data kept)" in lines
    assert "~ rename column gadget.maker -> gadget.manufacturer (data kept)" in lines
    assert not any(line.startswith("= kept column gadget.") for line in lines)
    store.install([renamed])
    rows = store.records("gadget").query(fields=["name", "sku", "manufacturer"]).rows
    assert sorted((r["name"], r["sku"], r["manufacturer"]) for r in rows) == [
        ("Sprocket", "Spr", gadgets["account"]),
        ("Widget", "Wid", gadgets["account"]),
    ]
    assert {"sku", "manufacturer"} <= columns(store, "gadget")
    assert not {"code", "maker"} & columns(store, "gadget")
    assert store.records("gadget").count(search="Wid").value == 1
    # the foreign key still holds: deleting the account clears the renamed lookup
    store.records("account").delete(gadgets["account"])
    assert {
        r["manufacturer"] for r in store.records("gadget").query(fields=["manufacturer"]).rows
    } == {None}
    # installing again renames nothing twice
    assert not any("rename" in line for line in plan_install(store, [renamed]).lines())


def test_renamed_from_a_field_that_still_exists_is_refused(store, tmp_path):
    from xrm.metadata import DefinitionError

    files = dict(GADGET_V1)
    files["entities/gadget.yaml"] = files["entities/gadget.yaml"].replace(
        "  code: {type: text}\n", "  code: {type: text}\n  sku: {type: text, renamed_from: code}\n"
    )
    folder = write_pack(tmp_path / "bad", "gadgets", files, {"core": ">=1.0"})
    with pytest.raises(
        DefinitionError, match="renamed_from 'code' names a field the entity still has"
    ):
        store.install([folder])
