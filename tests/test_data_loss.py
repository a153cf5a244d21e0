"""Plans that would lose data name what and how many rows, and apply only when each loss
is allowed by name (``--allow-loss``): text cut shorter, decimals rounded, option values
taken out while records hold them.  Without the name nothing is applied; a conversion
that cannot be made at all (fewer whole digits) stays refused; a name that names no loss
is refused too.  Through the store and through ``xrm solution upgrade``."""

from __future__ import annotations

import decimal

import pytest
import sqlalchemy as sa
from conftest import write_pack

import xrm
from xrm.cli import main
from xrm.solutions.lifecycle import plan_install
from xrm.storage.schema import LossNotNamed, SchemaChangeRefused

ENTITY = """
entity: gadget
label: {{en: Gadget}}
plural: {{en: Gadgets}}
title: name
fields:
  name: {{type: text, required: true, max_length: {length}, searchable: true}}
  weight: {{type: decimal, precision: {precision}, scale: {scale}}}
  colour: {{type: choice, options: [{colours}]}}
  features: {{type: multi_choice, options: [{features}]}}
"""


def files(length=200, precision=12, scale=4, colours="red, green, blue", features="a, b, c"):
    return {
        "entities/gadget.yaml": ENTITY.format(
            length=length,
            precision=precision,
            scale=scale,
            colours=", ".join(f"{{value: {c}}}" for c in colours.split(", ")),
            features=", ".join(f"{{value: {c}}}" for c in features.split(", ")),
        )
    }


@pytest.fixture
def gadgets(store, tmp_path):
    folder = write_pack(tmp_path / "v1", "gadgets", files(), {"core": ">=1.0"})
    store.install([folder])
    records = store.records("gadget")
    ids = {
        "long": records.create(
            {
                "name": "An extraordinarily long gadget name",
                "weight": "1.2345",
                "colour": "blue",
                "features": ["a", "c"],
            }
        )["id"],
        "short": records.create(
            {"name": "Cog", "weight": "2.5", "colour": "red", "features": ["b"]}
        )["id"],
    }
    return ids


def newer(tmp_path, version="1.1.0", **changes):
    return write_pack(tmp_path / version, "gadgets", files(**changes), {"core": ">=1.0"}, version)


def values(store, ident) -> tuple:
    row = store.records("gadget").get(ident)
    return row["name"], row["weight"], row["colour"], row["features"]


def test_a_shorter_text_is_refused_until_its_loss_is_named(store, gadgets, tmp_path):
    folder = newer(tmp_path, length=10)
    lines = plan_install(store, [folder]).lines()
    assert (
        "! data loss gadget.name: text longer than 10 characters is cut to 10 "
        "(1 row; allow it with --allow-loss gadget.name)"
    ) in lines
    version = store.refresh().version
    with pytest.raises(SchemaChangeRefused) as refused:
        store.install([folder])
    assert "gadget.name: would shorten text to 10 characters (1 row affected; " in str(
        refused.value
    )
    assert store.refresh().version == version
    assert values(store, gadgets["long"])[0] == "An extraordinarily long gadget name"

    with pytest.raises(LossNotNamed, match="--allow-loss gadget.nme: this change would not lose"):
        store.install([folder], allow_loss=["gadget.nme"])
    assert store.refresh().version == version

    _catalog, plan = store.install([folder], allow_loss=["gadget.name"])
    assert (
        "! data loss gadget.name: text longer than 10 characters is cut to 10 (1 row; allowed)"
        in (plan.lines())
    )
    assert values(store, gadgets["long"])[0] == "An extraor"
    assert values(store, gadgets["short"])[0] == "Cog"
    assert store.records("gadget").count(search="extraor").value == 1  # search follows
    assert store.plan().blocked is False  # converted once; nothing pending afterwards
    again = plan_install(store, [folder]).lines()
    assert not any("data loss" in line for line in again), again


def test_fewer_decimals_round_and_fewer_whole_digits_stay_refused(store, gadgets, tmp_path):
    rounded = newer(tmp_path, scale=2)
    with pytest.raises(SchemaChangeRefused, match=r"gadget.weight: would lose digits \(1 row"):
        store.install([rounded])
    store.install([rounded], allow_loss=["gadget.weight"])
    assert values(store, gadgets["long"])[1] == decimal.Decimal("1.23")
    assert values(store, gadgets["short"])[1] == decimal.Decimal("2.5")

    smaller = newer(tmp_path, version="1.2.0", precision=4, scale=2)
    with pytest.raises(SchemaChangeRefused, match="gadget.weight: would lose digits"):
        store.install([smaller])
    # no loss to name: a value too large has nothing to become
    with pytest.raises(LossNotNamed):
        store.install([smaller], allow_loss=["gadget.weight"])
    assert store.refresh().solutions["gadgets"].version == "1.1.0"


def test_option_values_taken_out_while_in_use(store, gadgets, tmp_path):
    folder = newer(tmp_path, colours="red, green", features="a, b")
    plan = plan_install(store, [folder])
    assert [(x.key, x.rows) for x in plan.schema.losses] == [
        ("gadget.colour", 1),
        ("gadget.features", 1),
    ]
    assert any(
        line.startswith("! data loss gadget.colour: option value blue no longer offered")
        for line in plan.lines()
    )
    with pytest.raises(SchemaChangeRefused, match="--allow-loss gadget.colour"):
        store.install([folder], allow_loss=["gadget.features"])
    assert values(store, gadgets["long"])[2:] == ("blue", ["a", "c"])
    store.install([folder], allow_loss=["gadget.colour", "gadget.features"])
    assert values(store, gadgets["long"])[2:] == (None, ["a"])
    assert values(store, gadgets["short"])[2:] == ("red", ["b"])


def test_an_option_no_record_holds_goes_without_asking(store, gadgets, tmp_path):
    folder = newer(tmp_path, colours="red, blue")
    assert plan_install(store, [folder]).schema.losses == []
    store.install([folder])
    assert store.refresh().entity("gadget").fields["colour"].choice_values == ("red", "blue")


def test_xrm_solution_upgrade_names_the_loss(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'loss.db'}"
    first = write_pack(tmp_path / "v1", "gadgets", files(), {"core": ">=1.0"})
    assert main(["solution", "install", str(first), "--database", url]) == 0
    opened = xrm.open(url)
    try:
        opened.records("gadget").create({"name": "An extraordinarily long gadget name"})
    finally:
        opened.close()
    folder = newer(tmp_path, length=10)
    capsys.readouterr()
    assert main(["solution", "upgrade", str(folder), "--database", url]) == 1
    captured = capsys.readouterr()
    assert "~ REFUSED gadget.name" in captured.out
    assert "! data loss gadget.name: text longer than 10 characters is cut to 10" in captured.out
    assert "(1 row affected; allow it with --allow-loss gadget.name)" in captured.err
    assert main(["solution", "upgrade", "sales", "--database", url]) == 1
    assert "sales is not installed: xrm solution install sales" in capsys.readouterr().err
    assert (
        main(["solution", "upgrade", str(folder), "--allow-loss", "gadget.name", "--database", url])
        == 0
    )
    assert "gadgets 1.0.0 -> 1.1.0 (catalog version" in capsys.readouterr().out
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM gadget")).scalar() == "An extraor"
    engine.dispose()
