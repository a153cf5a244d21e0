"""The sales pack's engine parts: territories and round-robin assignment within a
territory's team, lead scoring (compiling, scoring on write, decay), quotes and orders."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack
from workflow_pack import START, MovableClock

from xrm.cli import main
from xrm.storage.database import WRITE
from xrm.storage.records import ValidationFailed
from xrm.storage.scoring import rescore
from xrm.storage.tables import tables_for
from xrm.workflow import Worker


@pytest.fixture
def sales(database):
    store = database.open(clock=MovableClock())
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.users = {
        name: store.add_user(f"{name}@example.com", name.title(), roles=["user"], teams=["sales"])
        for name in ("ann", "bob", "cid", "dan", "eve")
    }
    yield store
    store.close()


def territory(store, name, *members):
    t = store.records("territory").create({"name": name})
    for user in members:
        store.records("territory_member").create({"territory": t["id"], "member": user})
    return t["id"]


def owners(store, ids) -> list[int]:
    leads = store.records("lead")
    return [leads.get(i)["owner"] for i in ids]


# ------------------------------------------------------------------ territories
def test_leads_go_round_robin_within_their_territory_and_turns_survive_a_restart(sales, database):
    u = sales.users
    north = territory(sales, "North", u["ann"], u["bob"])
    south = territory(sales, "South", u["cid"], u["dan"], u["eve"])
    leads = sales.records("lead")
    made = []
    for n in range(5):  # interleaved: each territory keeps its own turn
        made.append(("n", leads.create({"last_name": f"N{n}", "territory": north})["id"]))
        made.append(("s", leads.create({"last_name": f"S{n}", "territory": south})["id"]))
    Worker(sales).run_once()
    north_owners = owners(sales, [i for t, i in made if t == "n"])
    south_owners = owners(sales, [i for t, i in made if t == "s"])
    assert north_owners == [u["ann"], u["bob"], u["ann"], u["bob"], u["ann"]]
    assert south_owners == [u["cid"], u["dan"], u["eve"], u["cid"], u["dan"]]
    # a web lead without a territory goes to the sales team, on a turn of its own
    web = leads.create({"last_name": "Web", "source": "web_form"})
    Worker(sales).run_once()
    assert owners(sales, [web["id"]]) == [u["ann"]]
    # another process, as after a restart: the turn is kept in the database
    again = database.open()
    try:
        nxt = again.records("lead").create({"last_name": "N5", "territory": north})
        Worker(again).run_once()
        assert owners(again, [nxt["id"]]) == [u["bob"]]
    finally:
        again.close()


def test_a_territory_without_members_falls_back_to_the_sales_team(sales):
    empty = territory(sales, "Nowhere")
    lead = sales.records("lead").create({"last_name": "Lone", "territory": empty})
    Worker(sales).run_once()
    assert owners(sales, [lead["id"]])[0] in sales.users.values()


def test_concurrent_workers_share_a_territory_fairly(sales, database):
    u = sales.users
    west = territory(sales, "West", u["ann"], u["bob"], u["cid"])
    sales.records("lead").bulk_create(
        [{"last_name": f"L{n}", "territory": west} for n in range(30)]
    )
    stores = [database.open() for _ in range(3)]
    workers = [Worker(s, batch_size=4, name=f"w{n}") for n, s in enumerate(stores)]
    errors = []

    def work(w):
        try:
            for _ in range(20):
                w.run_once()
        except Exception as exc:  # pragma: no cover - shown below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert errors == []
    rows = sales.records("lead").query(fields=["owner"], limit=100).rows
    assert Counter(r["owner"] for r in rows) == {u["ann"]: 10, u["bob"]: 10, u["cid"]: 10}


def test_the_checker_names_a_bad_members_path(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "bad",
        {
            "processes/p.yaml": (
                "process: p\nentity: lead\non: {created: true}\nsteps:\n"
                "  - assign: {to: territory.members.territory}\n"
            )
        },
        depends={"sales": ">=1.0"},
    )
    code = main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "p.yaml:5:18: processes.p: recipient 'territory.members.territory': "
        "territory_member.territory is a lookup field; expected a user field" in out
    )


# ------------------------------------------------------------------ lead scoring
HOT = {
    "last_name": "Hale",
    "company": "Hale Robotics",
    "estimated_value": 60000,  # fit: 20
    "employees": 250,  # fit: 15
    "industry": "technology",  # fit: 10
    "job_title": "Head of operations",  # fit: 10
    "phone": "+1 505 555 0100",  # fit: 5
    "source": "referral",  # engagement: 20
    "estimated_close_date": "2025-06-30",  # engagement: 5
}


def test_a_lead_is_scored_and_graded_when_written_and_people_cannot_set_the_score(sales):
    ann = sales.users["ann"]
    leads = sales.records("lead", principal=sales.principal(ann))
    lead = leads.create(HOT)
    assert (lead["score"], lead["grade"]) == (85, "a")
    lead = leads.update(lead["id"], {"status": "contacted"})  # engagement: 10
    assert (lead["score"], lead["grade"]) == (95, "a")
    cold = leads.create({"last_name": "Cole", "email": "cole@gmail.com"})
    assert (cold["score"], cold["grade"]) == (-5, "d")
    with pytest.raises(ValidationFailed) as refused:
        leads.update(cold["id"], {"score": 99})
    assert refused.value.errors == {"score": ["score is read-only"]}


def _rescore(store, now) -> int:
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        return rescore(conn, store.catalog, store.catalog.entity("lead"), now)


def test_engagement_points_fade_without_activity_in_one_statement(sales):
    clock = sales.clock
    leads = sales.records("lead")
    hot = leads.create(HOT)
    done = leads.create({**HOT, "last_name": "Done", "email": "done@hale.example"})
    leads.update(done["id"], {"status": "qualified"})
    assert leads.get(done["id"])["score"] == 85
    # fit 60 stays; engagement 25 keeps 100% for 14 days, then loses 10% a week
    expected = {13: 85, 14: 85, 20: 85, 21: 82, 28: 80, 35: 77, 63: 67, 200: 60}
    for days, score in expected.items():
        now = START + dt.timedelta(days=days, minutes=1)
        _rescore(sales, now)
        got = leads.get(hot["id"])
        assert got["score"] == score, days
        assert got["grade"] == ("a" if score >= 60 else "b")
    assert leads.get(done["id"])["score"] == 85  # qualified: out of the model's where
    # any change is activity: the lead is scored in full again
    clock.set(START + dt.timedelta(days=200))
    assert leads.update(hot["id"], {"city": "Austin"})["score"] == 85
    assert _rescore(sales, START + dt.timedelta(days=200, hours=1)) == 0  # nothing moved


def test_the_nightly_process_rescores(sales):
    lead = sales.records("lead").create(HOT)
    worker = Worker(sales)
    worker.run_once()  # schedules the 03:00 tick
    sales.clock.set(START + dt.timedelta(days=35, hours=20))
    worker.run_once()
    assert sales.records("lead").get(lead["id"])["score"] == 77


SCORED = """
entity: prospect
fields:
  name: {type: text, required: true}
  kind: {type: choice, options: [{value: a}, {value: b}]}
  visits: {type: integer}
  seen_at: {type: datetime}
  score: {type: integer, read_only: true}
  band: {type: choice, options: [{value: high}, {value: low}], read_only: true}
scoring:
  field: score
  rating: {field: band, bands: [{min: 10, value: high}, {value: low}]}
  decay: {since: seen_at, every: 1d, lose: 30, floor: 10}
  rules:
    - {if: [kind, eq, a], points: 7, decays: false}
    - {if: [visits, ge, 3], points: 25}
    - {if: [visits, ge, 10], points: -19}
"""


def test_python_and_sql_agree_on_negative_points_and_floors(database, tmp_path):
    pack = write_pack(tmp_path, "scored", {"entities/prospect.yaml": SCORED}, {"core": ">=1.0"})
    store = database.open(clock=MovableClock())
    try:
        store.install([SOLUTIONS / "core", pack])
        records = store.records("prospect")
        made = []
        for kind in ("a", "b", None):
            for visits in (0, 3, 10, None):
                for age in (None, 0, 1, 2, 3, 5):
                    seen = None if age is None else START - dt.timedelta(days=age, minutes=5)
                    made.append(
                        records.create(
                            {"name": "p", "kind": kind, "visits": visits, "seen_at": seen}
                        )["id"]
                    )
        written = {i: (records.get(i)["score"], records.get(i)["band"]) for i in made}
        # what SQL makes at the very moment of the writes is what Python wrote
        assert _rescore_entity(store, "prospect", START) == 0
        later = START + dt.timedelta(days=2)
        store.clock.set(later)
        _rescore_entity(store, "prospect", later)
        for i in made:  # each record written again at `later`: Python's own answer
            sql = records.get(i)
            records.update(i, {"name": "q"})
            python = records.get(i)
            assert (sql["score"], sql["band"]) == (python["score"], python["band"]), i
        assert written[made[5]] != (None, None)
    finally:
        store.close()


def _rescore_entity(store, name, now) -> int:
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        return rescore(conn, store.catalog, store.catalog.entity(name), now)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("score: {type: integer, read_only: true}", "score: {type: integer}"),
            "prospect.yaml:11:10: prospect.scoring: 'score' must be read_only: true",
        ),
        (
            ("field: score\n", "field: visits_count\n"),
            "prospect.scoring: unknown field 'visits_count'",
        ),
        (
            ("{min: 10, value: high}", "{min: 10, value: top}"),
            "prospect.scoring: rating band 'top' is no option of band",
        ),
        (
            ("{value: low}]}", "{min: 20, value: low}]}"),
            "prospect.scoring: rating bands go from the highest min down: 20 follows 10",
        ),
        (
            ("since: seen_at", "since: name"),
            "prospect.scoring: decay since 'name': expected a datetime field of prospect",
        ),
        (
            ("[visits, ge, 3]", "[visits, contains, 3]"),
            "prospect.scoring: visits: operator 'contains' does not apply to integer fields",
        ),
        (("lose: 30", "lose: 300"), "scoring.decay.lose"),
    ],
)
def test_the_checker_names_scoring_mistakes(tmp_path, capsys, change, message):
    text = SCORED.replace(*change)
    assert text != SCORED
    pack = write_pack(tmp_path, "scored", {"entities/prospect.yaml": text}, {"core": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(pack)]) == 1
    assert message in capsys.readouterr().out


def test_rescore_needs_an_entity_with_a_model(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "bad",
        {
            "processes/p.yaml": "process: p\non: {schedule: '0 3 * * *'}\nsteps:\n  - rescore: opportunity\n"
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    assert "p.yaml:4:14: processes.p: rescore: opportunity has no scoring model" in out
    assert "entities with one: lead" in out


# ------------------------------------------------------------------ quotes and orders
@pytest.fixture
def deal(sales):
    """An opportunity with two products, a price list, and its owner ann."""
    ann = sales.users["ann"]
    rec = lambda entity: sales.records(entity, principal=sales.principal(ann))  # noqa: E731
    acme = rec("account").create({"name": "Acme"})
    pump = rec("product").create({"code": "P-1", "name": "Pump", "list_price": 1200})
    valve = rec("product").create({"code": "V-2", "name": "Valve", "list_price": 80})
    seal = rec("product").create({"code": "S-3", "name": "Seal", "list_price": 7})
    prices = rec("price_list").create({"name": "Partners"})
    for product, price in ((pump, 1000), (valve, 50)):
        rec("price_list_item").create(
            {"price_list": prices["id"], "product": product["id"], "price": price}
        )
    opp = rec("opportunity").create(
        {
            "name": "Acme pumps",
            "account": acme["id"],
            "close_date": "2025-06-30",
            "price_list": prices["id"],
        }
    )
    for product, qty, price, discount in ((pump, 3, "999.99", 15), (valve, 7, 50, 0)):
        rec("opportunity_line").create(
            {
                "opportunity": opp["id"],
                "product": product["id"],
                "quantity": qty,
                "unit_price": price,
                "discount": discount,
            }
        )
    return {"rec": rec, "opp": opp, "acme": acme, "seal": seal, "valve": valve, "ann": ann}


def _quote_from(sales, deal, **inputs) -> int:
    from xrm.forms.wizard import WizardRun

    wizard = sales.catalog.wizards["create_quote"]
    principal = sales.principal(deal["ann"])
    run = WizardRun.start(wizard, sales, principal, origin=("opportunity", deal["opp"]["id"]))
    run.accept({"valid_until": "2025-04-30", **inputs}, store=sales, principal=principal)
    outcome = run.finish(sales, principal)
    return outcome.records["quote"][1]


def test_a_quote_copies_the_deals_lines_and_adds_up_with_exact_money(sales, deal):
    from decimal import Decimal

    quote_id = _quote_from(sales, deal)
    quote = deal["rec"]("quote").get(quote_id)
    # 3 x 999.99 less 15% = 2549.9745 -> money keeps cents; 7 x 50 = 350
    assert quote["number"].startswith("Q-") and quote["status"] == "draft"
    assert quote["line_count"] == 2
    assert quote["subtotal"] == Decimal("3349.97")
    assert quote["total"] == Decimal("2899.97")
    assert quote["discount_amount"] == Decimal("450.00")
    assert quote["account"] == deal["acme"]["id"] and quote["price_list"] is not None
    # a line with no price: the price list's, else the product's list price
    lines = deal["rec"]("quote_line")
    valve = lines.create({"quote": quote_id, "product": deal["valve"]["id"], "quantity": 2})
    seal = lines.create({"quote": quote_id, "product": deal["seal"]["id"], "quantity": 10})
    Worker(sales).run_once()
    assert lines.get(valve["id"])["unit_price"] == Decimal("50.00")
    assert lines.get(valve["id"])["price_item"] is not None
    assert lines.get(seal["id"])["unit_price"] == Decimal("7.00")
    assert deal["rec"]("quote").get(quote_id)["total"] == Decimal("3069.97")


def test_one_accepted_quote_per_opportunity_and_accepting_sets_the_amount(sales, deal):
    from decimal import Decimal

    quotes = deal["rec"]("quote")
    first, second = _quote_from(sales, deal), _quote_from(sales, deal, name="Plan B")
    with pytest.raises(ValidationFailed) as refused:
        quotes.update(first, {"status": "accepted"})  # draft -> accepted skips sent
    assert "status" in refused.value.errors
    quotes.update(first, {"status": "sent"})
    quotes.update(second, {"status": "sent"})
    quotes.update(first, {"status": "accepted"})
    with pytest.raises(ValidationFailed) as refused:
        quotes.update(second, {"status": "accepted"})
    assert refused.value.errors == {
        "accepted_opportunity": ["another quote already has this value"]
    }
    Worker(sales).run_once()
    assert sales.records("opportunity").get(deal["opp"]["id"])["amount"] == Decimal("2899.97")
    assert quotes.get(first)["decided_on"] is not None
    # the database refuses it too, whoever writes (two writers at once, a raw import)
    table = tables_for(sales.catalog)["quote"]
    with pytest.raises(sa.exc.IntegrityError), sales.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.id == second)
            .values(accepted_opportunity=deal["opp"]["id"])
        )
    # rejected and sent back to draft, the second may be accepted once the first is not
    quotes.update(second, {"status": "rejected", "rejection_reason": "price"})
    assert quotes.get(second)["accepted_opportunity"] is None


def test_an_order_is_made_only_from_an_accepted_quote(sales, deal):
    from xrm.forms.wizard import WizardRun, WizardUnavailable

    quote_id = _quote_from(sales, deal)
    principal = sales.principal(deal["ann"])
    wizard = sales.catalog.wizards["create_order"]
    with pytest.raises(WizardUnavailable):
        WizardRun.start(wizard, sales, principal, origin=("quote", quote_id))
    deal["rec"]("quote").update(quote_id, {"status": "sent"})
    deal["rec"]("quote").update(quote_id, {"status": "accepted"})
    run = WizardRun.start(wizard, sales, principal, origin=("quote", quote_id))
    run.accept({"delivery_date": "2025-05-01"}, store=sales, principal=principal)
    order_id = run.finish(sales, principal).records["order"][1]
    order = deal["rec"]("sales_order").get(order_id)
    assert order["number"].startswith("SO-") and order["line_count"] == 2
    assert order["total"] == deal["rec"]("quote").get(quote_id)["total"]
    assert order["quote"] == quote_id and order["opportunity"] == deal["opp"]["id"]


@pytest.mark.parametrize(
    ("each", "message"),
    [
        ("record.line", "each: opportunity has no children field 'line'; did you mean 'lines'?"),
        ("offer.lines", "each: unknown 'offer' (expected record or an earlier action's as)"),
        ("record.account", "each: opportunity has no children field 'account'"),
    ],
)
def test_the_checker_names_a_bad_each(tmp_path, capsys, each, message):
    text = f"""
wizards:
  copy:
    label: Copy
    open_from: {{record: opportunity}}
    steps:
      - {{name: one, fields: [{{input: n, type: text}}]}}
    finish:
      - create: quote_line
        each: {each}
        values: {{product: "{{{{ item.product }}}}"}}
"""
    pack = write_pack(tmp_path, "bad", {"wizards/w.yaml": text}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    assert message in out and "w.yaml:10:15" in out


def test_sales_sample_data_installs_with_the_core_it_needs(store):
    """Installing sales alone with --demo brings core along; core's sample data (the
    territories) is written before sales' accounts, which name them."""
    store.install([SOLUTIONS / "sales"], demo=True)
    assert {"core", "sales"} <= set(store.catalog.solutions)
    accounts = store.records("account").query(fields=["name", "territory"], limit=500).rows
    assert accounts and any(a["territory"] is not None for a in accounts)
