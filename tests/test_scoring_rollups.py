"""A child's change that moves a parent's rollup rescores the parent when its scoring rules
read the rollup (directly or through a formula): the score, the band and the formulas over
the score follow at once, not at the nightly rescore; a bulk import of children rescores
their parents set-based, not once per child.  SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack

PROSPECT = """
entity: prospect
fields:
  name: {type: text, required: true}
  visits: {type: children, entity: visit, via: prospect}
  visit_count: {type: integer, rollup: {children: visits, count: true}}
  minutes: {type: integer, rollup: {children: visits, sum: minutes}}
  hours: {type: integer, formula: "minutes // 60"}
  score: {type: integer, read_only: true}
  band: {type: choice, options: [{value: high}, {value: low}], read_only: true}
  hot: {type: formula, expression: "band == 'high'", result: boolean}
  per_visit: {type: integer, formula: "score + visit_count"}
scoring:
  field: score
  rating: {field: band, bands: [{min: 10, value: high}, {value: low}]}
  rules:
    - {if: [visit_count, ge, 2], points: 10}
    - {if: [hours, ge, 1], points: 5}
"""

VISIT = """
entity: visit
fields:
  subject: {type: text, required: true}
  prospect: {type: lookup, to: prospect, on_delete: cascade}
  minutes: {type: integer}
"""


@pytest.fixture
def store(database, tmp_path):
    pack = write_pack(
        tmp_path,
        "scored",
        {"entities/prospect.yaml": PROSPECT, "entities/visit.yaml": VISIT},
        {"core": ">=1.0"},
    )
    store = database.open()
    store.install([SOLUTIONS / "core", pack])
    yield store
    store.close()


def shown(store, ident: int) -> tuple:
    record = store.records("prospect").get(ident)
    return (
        record["visit_count"],
        record["score"],
        record["band"],
        record["hot"],
        record["per_visit"],
    )


def test_a_child_added_moves_the_parents_score_band_and_formulas(store):
    prospects, visits = store.records("prospect"), store.records("visit")
    p = prospects.create({"name": "p"})
    assert shown(store, p["id"]) == (0, 0, "low", False, 0)
    visits.create({"subject": "a", "prospect": p["id"]})
    assert shown(store, p["id"]) == (1, 0, "low", False, 1)
    second = visits.create({"subject": "b", "prospect": p["id"]})
    assert shown(store, p["id"]) == (2, 10, "high", True, 12)
    visits.delete(second["id"])
    assert shown(store, p["id"]) == (1, 0, "low", False, 1)


def test_a_rule_over_a_formula_over_a_rollup_rescores_too(store):
    prospects, visits = store.records("prospect"), store.records("visit")
    p = prospects.create({"name": "p"})
    v = visits.create({"subject": "a", "prospect": p["id"], "minutes": 30})
    assert prospects.get(p["id"])["score"] == 0
    visits.update(v["id"], {"minutes": 90})  # the sum moves, hours is 1: 5 points
    record = prospects.get(p["id"])
    assert (record["hours"], record["score"], record["per_visit"]) == (1, 5, 6)
    other = prospects.create({"name": "q"})
    visits.update(v["id"], {"prospect": other["id"]})  # both parents move
    assert prospects.get(p["id"])["score"] == 0
    assert prospects.get(other["id"])["score"] == 5


def test_a_bulk_import_of_children_rescores_the_parents_set_based(store):
    prospects, visits = store.records("prospect"), store.records("visit")
    parents = [prospects.create({"name": f"p{i}"})["id"] for i in range(3)]
    table = f"{store.records('prospect').table.name}"
    rescores = []

    def count(conn, cursor, statement, parameters, context, executemany):
        text = statement.lower()
        # the rescore's own statement: an UPDATE of the parents' score
        if text.startswith("update") and table in text and "score" in text:
            rescores.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        rows = [{"subject": f"v{n}", "prospect": parents[n % 3]} for n in range(300)]
        result = visits.bulk_create(rows)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    assert not getattr(result, "errors", None)
    assert len(rescores) < 10  # per batch of the import, not per child (300)
    for ident in parents:
        assert shown(store, ident) == (100, 10, "high", True, 110)
