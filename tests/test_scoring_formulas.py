"""Scores and formulas on one record: a scoring rule may read a formula (worked out before
the score), a formula may read the score or its rating (worked out after it), and the
checker refuses a model whose conditions read the score through a formula, which would
make the score depend on itself.  SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import SOLUTIONS, write_pack
from workflow_pack import START, MovableClock

from xrm.cli import main
from xrm.metadata.scoring import formulas_over
from xrm.storage.database import WRITE
from xrm.storage.scoring import rescore

PROSPECT = """
entity: prospect
fields:
  name: {type: text, required: true}
  visits: {type: integer}
  weight: {type: integer, formula: "visits * 2"}
  score: {type: integer, read_only: true}
  band: {type: choice, options: [{value: high}, {value: low}], read_only: true}
  double: {type: integer, formula: "score * 2"}
  hot: {type: formula, expression: "band == 'high'", result: boolean}
  loud: {type: integer, formula: "double + 1"}
scoring:
  field: score
  rating: {field: band, bands: [{min: 10, value: high}, {value: low}]}
  rules:
    - {if: [weight, ge, 6], points: 12}
    - {if: [name, eq, vip], points: 3}
"""


@pytest.fixture
def prospects(database, tmp_path):
    pack = write_pack(tmp_path, "scored", {"entities/prospect.yaml": PROSPECT}, {"core": ">=1.0"})
    store = database.open()
    store.install([SOLUTIONS / "core", pack])
    yield store.records("prospect")
    store.close()


def test_a_rule_reads_a_formula_worked_out_in_the_same_write(prospects):
    made = prospects.create({"name": "p", "visits": 3})  # weight 6: 12 points
    assert (made["weight"], made["score"], made["band"]) == (6, 12, "high")
    changed = prospects.update(made["id"], {"visits": 1})  # weight 2: none
    assert (changed["weight"], changed["score"], changed["band"]) == (2, 0, "low")


def test_a_formula_over_the_score_reads_the_score_of_the_same_write(prospects):
    made = prospects.create({"name": "p", "visits": 3})
    assert (made["score"], made["double"], made["loud"], made["hot"]) == (12, 24, 25, True)
    changed = prospects.update(made["id"], {"visits": 1, "name": "vip"})
    assert (changed["score"], changed["double"], changed["loud"]) == (3, 6, 7)
    assert changed["hot"] is False
    assert prospects.get(made["id"])["double"] == 6  # as stored, not only as returned


def test_the_formulas_over_the_score_are_found_through_other_formulas(prospects):
    entity = prospects.entity
    assert formulas_over(entity, ["score", "band"]) == {
        "double": ("double", "score"),
        "hot": ("hot", "band"),
        "loud": ("loud", "double", "score"),
    }


def test_a_rescore_works_the_formulas_over_the_score_out_again(database, tmp_path):
    # the visits' points fade: 12 in full, 60% after a day
    decaying = PROSPECT.replace("  rules:\n", "  decay: {every: 1d, lose: 40}\n  rules:\n")
    pack = write_pack(tmp_path, "scored", {"entities/prospect.yaml": decaying}, {"core": ">=1.0"})
    store = database.open(clock=MovableClock(START))
    try:
        store.install([SOLUTIONS / "core", pack])
        prospects = store.records("prospect")
        faded = prospects.create({"name": "p", "visits": 3})["id"]
        calm = prospects.create({"name": "q", "visits": 0})["id"]  # no points: nothing moves
        later = START + dt.timedelta(days=1, minutes=1)
        with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            assert rescore(conn, store.catalog, store.catalog.entity("prospect"), later) == 1
        row = prospects.get(faded)
        assert (row["score"], row["band"]) == (7, "low")
        assert (row["double"], row["loud"], row["hot"]) == (14, 15, False)
        assert prospects.get(calm)["score"] == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("[name, eq, vip]", "[loud, ge, 5]"),
            "prospect.yaml:17:12: prospect.scoring: 'loud' is a formula over the score "
            "(loud -> double -> score), so its conditions cannot read it (the score would "
            "depend on itself); expected a field or formula that does not read score or band",
        ),
        (
            ("[name, eq, vip]", "{any: [[name, eq, vip], [hot, eq, true]]}"),
            "prospect.yaml:17:12: prospect.scoring: 'hot' is a formula over the score "
            "(hot -> band)",
        ),
        (
            ("[name, eq, vip]", "[score, ge, 5]"),
            "prospect.yaml:17:12: prospect.scoring: 'score' is set by this scoring model, so "
            "its conditions cannot read it",
        ),
        (
            ("  rules:\n", "  where: [double, lt, 100]\n  rules:\n"),
            "prospect.yaml:15:10: prospect.scoring: 'double' is a formula over the score "
            "(double -> score)",
        ),
    ],
    ids=["through-formulas", "nested-condition", "the-score-itself", "where"],
)
def test_the_checker_refuses_a_score_that_reads_itself(tmp_path, capsys, change, message):
    text = PROSPECT.replace(*change)
    assert text != PROSPECT
    pack = write_pack(tmp_path, "scored", {"entities/prospect.yaml": text}, {"core": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(pack)]) == 1
    assert message in capsys.readouterr().out
