"""What the save computes, in the order a user expects: stage defaults, defaults and
autonumbers before formulas; sums and counts of rollups start at 0."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import SOLUTIONS, write_pack


@pytest.fixture
def sales(database):
    app = database.open()
    app.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    yield app
    app.close()


def test_formulas_read_the_probability_of_the_stage_just_entered(sales):
    account = sales.records("account").create({"name": "Acme"})
    contact = sales.records("contact").create({"last_name": "Lee", "account": account["id"]})
    deals = sales.records("opportunity")
    deal = deals.create(
        {
            "name": "Big",
            "account": account["id"],
            "stage": "prospecting",
            "amount": 1000,
            "close_date": "2027-01-31",
        }
    )
    assert (deal["probability"], deal["expected_revenue"]) == (10, Decimal("100"))
    steps = [("qualification", 20, {"contact": contact["id"]}), ("proposal", 50, {})]
    for stage, probability, extra in steps:
        deal = deals.update(deal["id"], {"stage": stage, **extra})
        stored = deals.get(deal["id"])
        assert stored["probability"] == probability
        assert stored["expected_revenue"] == Decimal(10 * probability)
        assert deal["expected_revenue"] == stored["expected_revenue"]
    # The amount and the stage in one save: both are read by the formula.
    deals.update(deal["id"], {"stage": "negotiation", "amount": 2000, "close_date": "2027-01-31"})
    assert deals.get(deal["id"])["expected_revenue"] == Decimal("1600")


def test_formulas_read_defaults_and_autonumbers(database, tmp_path):
    pack = write_pack(
        tmp_path,
        "numbers",
        {
            "entities/ticket.yaml": """
entity: ticket
fields:
  number: {type: autonumber, pattern: "T-{####}"}
  priority: {type: integer, default: 3}
  heading: {type: formula, expression: "number ~ ' (p' ~ priority ~ ')'", result: text}
  weight: {type: integer, formula: "priority * 10"}
""",
        },
    )
    app = database.open()
    try:
        app.install([pack])
        tickets = app.records("ticket")
        first = tickets.create({})
        assert first["heading"] == "T-0001 (p3)" and first["weight"] == 30
        assert tickets.get(first["id"])["heading"] == "T-0001 (p3)"
        tickets.bulk_create([{"priority": 1}, {}])
        headings = [r["heading"] for r in tickets.query(sort=[["number", "asc"]]).rows]
        assert headings == ["T-0001 (p3)", "T-0002 (p1)", "T-0003 (p3)"]
    finally:
        app.close()


def test_sums_and_counts_without_children_are_zero(sales):
    deal = sales.records("opportunity").create(
        {
            "name": "Empty",
            "close_date": "2027-01-31",
            "account": sales.records("account").create({"name": "A"})["id"],
        }
    )
    stored = sales.records("opportunity").get(deal["id"])
    assert stored["line_count"] == 0 and stored["total"] == Decimal("0")
    account = sales.records("account").get(stored["account"])
    assert account["won_revenue"] == Decimal("0")


def test_each_change_is_judged_on_the_values_it_wrote(database, tmp_path):
    """received -> negotiating -> accepted before the worker runs: a process with
    ``if: [stage, eq, accepted]`` starts once, for the change that accepted the offer."""
    from xrm.workflow import Worker

    pack = write_pack(
        tmp_path,
        "offers",
        {
            "entities/offer.yaml": """
entity: offer
title: title
fields:
  title: {type: text, required: true}
  stage: {type: choice, options: [received, negotiating, accepted, rejected], default: received}
""",
            "processes/accepted.yaml": """
process: offer_accepted
entity: offer
on: {updated: [stage]}
if: [stage, eq, accepted]
was: [stage, ne, accepted]
steps:
  - activity: {entity: task, subject: "Prepare the contract for {{ record.title }}", due: +2d}
""",
        },
    )
    app = database.open()
    try:
        app.install([SOLUTIONS / "core", pack])
        offers = app.records("offer")
        offer = offers.create({"title": "12 Elm St"})
        offers.update(offer["id"], {"stage": "negotiating"})
        offers.update(offer["id"], {"stage": "accepted"})
        # An offer accepted, then moved on before the worker runs, was still accepted once.
        other = offers.create({"title": "3 Oak Ave"})
        offers.update(other["id"], {"stage": "accepted"})
        offers.update(other["id"], {"stage": "rejected"})
        Worker(app).run_once()
        subjects = sorted(r["subject"] for r in app.records("task").query(fields=["subject"]).rows)
        assert subjects == [
            "Prepare the contract for 12 Elm St",
            "Prepare the contract for 3 Oak Ave",
        ]
    finally:
        app.close()


def test_ids_users_see_stay_dense(store):
    """One record per save (a form, an API call) or one batch: consecutive ids, on
    PostgreSQL too (sequence blocks are only taken by a unit that keeps creating)."""
    accounts = store.records("account")
    ids = [accounts.create({"name": f"A{i}"})["id"] for i in range(3)]
    ids += accounts.bulk_create([{"name": "B1"}, {"name": "B2"}]).ids
    ids.append(accounts.create({"name": "C"})["id"])
    assert ids == list(range(ids[0], ids[0] + 6))
