"""The sales pack's engine parts: territories and round-robin assignment within a
territory's team, lead scoring (compiling, scoring on write, decay), quotes and orders."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from conftest import SOLUTIONS

from xrm.workflow import Worker


@pytest.fixture
def sales(database):
    store = database.open()
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
    from conftest import write_pack

    from xrm.cli import main

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
