"""The sales pack's engine parts: territories and round-robin assignment within a
territory's team, lead scoring (compiling, scoring on write, decay), quotes and orders."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from conftest import SOLUTIONS, write_pack
from workflow_pack import START, MovableClock

from xrm.cli import main
from xrm.storage.database import WRITE
from xrm.storage.records import ValidationFailed
from xrm.storage.scoring import rescore
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
