"""The conversion funnel (``kind: conversion_funnel``): entered, reached a later stage,
conversion and the median days in stage agree with SQL written here from the stage
history, on SQLite and PostgreSQL; the period filters when a stage was entered; a seller
with scope own sees only their own records' history (run directly and through the API);
medians of odd and even counts; an empty period is an empty report; the checker's
positioned messages."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.metadata import load_catalog
from xrm.reports import ParameterError, run_report
from xrm.storage import tables as T
from xrm.web import create_app

PACK = {
    "entities/deal.yaml": """
entity: deal
title: name
fields:
  name:   {type: text, required: true}
  stage:  {type: choice, options: [new, proposal, negotiation, won, lost]}
  region: {type: choice, options: [north, south]}
stages:
  field: stage
  steps:
    new:         {}
    proposal:    {}
    negotiation: {}
    won:         {closed: won}
    lost:        {closed: lost}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {read: own}
""",
    "reports/funnel.yaml": """
reports:
  conversion:
    kind: conversion_funnel
    entity: deal
    label: {en: Conversion, ru: Конверсия}
    filter: {all: [{param: owner}, {param: region}, {param: team}]}
    parameters:
      period: {type: period, field: entered_at, default: last_12_months}
      owner: {type: user, field: owner}
      region: {type: choice, field: region}
      team: {type: team, field: owner}
    chart: {kind: funnel, measures: [entered]}
""",
}
FUNNEL = ["new", "proposal", "negotiation", "won"]  # lost is not a step of the funnel
PATHS = [
    ["new"],
    ["new", "proposal"],
    ["new", "proposal", "negotiation"],
    ["new", "proposal", "negotiation", "won"],
    ["new", "lost"],
    ["new", "proposal", "lost"],
    ["new", "negotiation", "won"],  # skips a stage: still reaches a later one
    ["new", "proposal", "new", "proposal", "negotiation"],  # goes back, then on
]
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def shop(database, tmp_path):
    store = database.open()
    store.install([SOLUTIONS / "core", write_pack(tmp_path, "shop", PACK, {"core": ">=1.0"})])
    store.seller = store.add_user("seller@x.test", roles=["seller"])
    store.other = store.add_user("other@x.test", roles=["seller"])
    store.add_to_team(store.other, "west")
    rnd = random.Random(7)
    deals = []
    for i in range(90):
        path = rnd.choice(PATHS)
        region = rnd.choice(["north", "south", None])
        owner = store.seller if i % 3 else store.other
        deals.append((path, region, owner))
    created = store.records("deal").bulk_create(
        [
            {"name": f"deal {i}", "stage": path[-1], "region": region, "owner": owner}
            for i, (path, region, owner) in enumerate(deals)
        ]
    )
    ids = created.ids
    history = []
    for ident, (path, _region, _owner) in zip(ids, deals):
        # a third of the deals began long ago (before any twelve months), the rest in the
        # last 200 days; each stay lasts whole hours, the last one is still open
        start = NOW - dt.timedelta(
            days=rnd.choice([rnd.randrange(20, 200), 500 + rnd.randrange(80)])
        )
        moment = start
        for index, stage in enumerate(path):
            stay = dt.timedelta(hours=rnd.randrange(1, 24 * 30))
            last = index == len(path) - 1
            history.append(
                {
                    "entity": "deal",
                    "record_id": ident,
                    "stage": stage,
                    "previous": path[index - 1] if index else None,
                    "entered_at": moment,
                    "left_at": None if last else moment + stay,
                    "user_id": None,
                }
            )
            moment += stay
    with store.engine.begin() as conn:
        conn.execute(T.stage_history.delete().where(T.stage_history.c.entity == "deal"))
        conn.execute(T.stage_history.insert(), history)
    yield store
    store.close()


def sql(store, text: str, **params) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


def days_sql(store) -> str:
    if store.engine.dialect.name == "postgresql":
        return "EXTRACT(EPOCH FROM (h.left_at - h.entered_at)) / 86400.0"
    return "julianday(h.left_at) - julianday(h.entered_at)"


def expected(store, since: dt.datetime | None = None, owner: int | None = None, region=None):
    """Stage -> (entered, reached a later stage, median days) from SQL written here: one
    query per stage, the later stages listed by name, the median read off the sorted
    lengths with LIMIT and OFFSET."""
    where = "h.entity = 'deal'"
    params: dict = {}
    if since is not None:
        where += " AND h.entered_at >= :since"
        params["since"] = since.replace(tzinfo=None)
    if owner is not None:
        where += " AND d.owner = :owner"
        params["owner"] = owner
    if region is not None:
        where += " AND d.region = :region"
        params["region"] = region
    out = {}
    for index, stage in enumerate(FUNNEL):
        later = ", ".join(f"'{s}'" for s in FUNNEL[index + 1 :]) or "NULL"
        ((entered, reached),) = sql(
            store,
            f"SELECT count(*), coalesce(sum(CASE WHEN EXISTS (SELECT 1 FROM xrm_stage_history l"
            f" WHERE l.entity = 'deal' AND l.record_id = h.record_id"
            f" AND l.entered_at > h.entered_at AND l.stage IN ({later})) THEN 1 ELSE 0 END), 0)"
            f" FROM xrm_stage_history h JOIN deal d ON d.id = h.record_id"
            f" WHERE {where} AND h.stage = :stage",
            stage=stage,
            **params,
        )[0:1]
        lengths = f"SELECT {days_sql(store)} AS days FROM xrm_stage_history h JOIN deal d ON d.id = h.record_id WHERE {where} AND h.stage = :stage AND h.left_at IS NOT NULL"
        ((count,),) = sql(store, f"SELECT count(*) FROM ({lengths}) x", stage=stage, **params)
        median = None
        if count:
            middle = sql(
                store,
                f"SELECT days FROM ({lengths}) x ORDER BY days LIMIT :n OFFSET :skip",
                stage=stage,
                n=1 if count % 2 else 2,
                skip=(count - 1) // 2,
                **params,
            )
            median = round(sum(float(d) for (d,) in middle) / len(middle), 2)
        out[stage] = (int(entered), int(reached), median)
    return out


def figures(result) -> dict:
    return {
        row["stage"]: (row["entered"], row["reached_next"], row["median_days"])
        for row in result.rows
    }


def run(store, params=None, principal=None):
    return run_report(store, store.refresh().reports["conversion"], params or {}, principal)


# ------------------------------------------------------------------ figures
def test_every_stage_agrees_with_sql_in_flow_order(shop):
    result = run(shop, {"period": "all"})
    assert [row["stage"] for row in result.rows] == FUNNEL
    want = expected(shop)
    got = figures(result)
    for stage in FUNNEL[:-1]:
        assert got[stage] == want[stage], stage
    # the last stage has no later one: its reach and share are empty
    assert got["won"] == (want["won"][0], None, want["won"][2])
    for row in result.rows[:-1]:
        share = round(row["reached_next"] * 100 / row["entered"], 1) if row["entered"] else None
        assert row["conversion"] == share
    assert result.rows[-1]["conversion"] is None
    assert sum(row["entered"] for row in result.rows) > 100  # the data is not trivial
    assert 0 < got["new"][1] < got["new"][0]


def test_the_period_filters_when_a_stage_was_entered(shop):
    everything = figures(run(shop, {"period": "all"}))
    recent = figures(run(shop))  # the default, last_12_months
    # the old stays began over 500 days ago, the recent ones within 200 days (plus stays
    # of at most 30 days each): a cut 400 days back separates them, whatever today is
    want = expected(shop, since=NOW - dt.timedelta(days=400))
    assert {s: v[0] for s, v in recent.items()} == {s: v[0] for s, v in want.items()}
    assert {s: v[1] for s, v in recent.items() if s != "won"} == {
        s: v[1] for s, v in want.items() if s != "won"
    }
    assert {s: v[2] for s, v in recent.items()} == {s: v[2] for s, v in want.items()}
    assert recent["new"][0] < everything["new"][0]


def test_choice_and_owner_parameters_narrow_the_records(shop):
    got = figures(run(shop, {"period": "all", "region": "north", "owner": str(shop.other)}))
    want = expected(shop, owner=shop.other, region="north")
    assert {s: v[0] for s, v in got.items()} == {s: v[0] for s, v in want.items()}
    assert got["new"][1] == want["new"][1]
    team = figures(run(shop, {"period": "all", "team": "west"}))
    assert {s: v[0] for s, v in team.items()} == {
        s: v[0] for s, v in expected(shop, owner=shop.other).items()
    }


def test_scope_own_sees_only_its_own_records_history(shop):
    mine = run(shop, {"period": "all"}, principal=shop.principal(shop.seller))
    want = expected(shop, owner=shop.seller)
    assert figures(mine)["new"] == want["new"]
    assert {s: v[0] for s, v in figures(mine).items()} == {s: v[0] for s, v in want.items()}
    everyone = figures(run(shop, {"period": "all"}))
    assert figures(mine)["new"][0] < everyone["new"][0]


def test_scope_own_through_the_api(shop):
    app = create_app(shop, {"TESTING": True})
    token = shop.create_token(shop.seller, "tests")
    client = app.test_client()
    response = client.get(
        "/api/v1/reports/conversion?period=all", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    want = expected(shop, owner=shop.seller)
    assert {row["stage"]: row["entered"] for row in body["rows"]} == {
        s: v[0] for s, v in want.items()
    }
    assert [m["key"] for m in body["measures"]] == [
        "entered",
        "reached_next",
        "conversion",
        "median_days",
    ]
    bad = client.get(
        "/api/v1/reports/conversion?period=yesteryear",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 400
    assert bad.get_json()["parameter"] == "period"


def test_an_empty_period_is_an_empty_report(shop):
    # no stay of the data begins in the future
    result = run(shop, {"period": "next_month"})
    assert result.rows == []
    app = create_app(shop, {"TESTING": True})
    client = app.test_client()
    token = shop.create_token(shop.seller, "tests")
    body = client.get(
        "/api/v1/reports/conversion?period=next_month",
        headers={"Authorization": f"Bearer {token}"},
    ).get_json()
    assert body["rows"] == []


def test_bad_parameters_are_refused_by_name(shop):
    with pytest.raises(ParameterError) as caught:
        run(shop, {"period": "last_quater"})
    assert caught.value.name == "period"
    with pytest.raises(ParameterError) as caught:
        run(shop, {"regoin": "north"})
    assert caught.value.name == "regoin"
    assert "did you mean 'region'" in str(caught.value)


# ------------------------------------------------------------------ medians
@pytest.mark.parametrize(
    ("lengths", "median"),
    [([1, 3, 10], 3.0), ([1, 3, 10, 20], 6.5), ([5], 5.0), ([2, 4], 3.0)],
)
def test_the_median_of_odd_and_even_counts(shop, lengths, median):
    """Stays in proposal of the given whole days (and one still open, which has no length
    yet), on fresh deals of their own: the median is the middle one or the mean of the two."""
    created = shop.records("deal").bulk_create(
        [
            {"name": f"m{i}", "stage": "negotiation", "region": "south"}
            for i in range(len(lengths) + 1)
        ]
    )
    ids = created.ids
    start = NOW - dt.timedelta(days=100)
    rows = []
    for ident, days in zip(ids, [*lengths, None]):
        end = None if days is None else start + dt.timedelta(days=days)
        rows.append(
            {
                "entity": "deal",
                "record_id": ident,
                "stage": "proposal",
                "entered_at": start,
                "left_at": end,
            }
        )
    with shop.engine.begin() as conn:
        conn.execute(T.stage_history.delete().where(T.stage_history.c.record_id.in_(ids)))
        conn.execute(T.stage_history.insert(), rows)
        # only these deals: move every other deal's history out of the period
        conn.execute(
            T.stage_history.update()
            .where(T.stage_history.c.record_id.not_in(ids))
            .values(entered_at=NOW - dt.timedelta(days=3000))
        )
    result = run(shop, {"period": "last_12_months"})
    got = {row["stage"]: row for row in result.rows}
    assert got["proposal"]["entered"] == len(lengths) + 1
    assert got["proposal"]["median_days"] == median
    assert got["new"]["entered"] == 0 and got["new"]["median_days"] is None


# ------------------------------------------------------------------ the shipped funnel
def test_the_sales_pack_ships_the_opportunity_conversion_funnel():
    catalog = load_catalog([SOLUTIONS / "core", SOLUTIONS / "sales"])
    report = catalog.reports["opportunity_conversion"]
    assert report.kind == "conversion_funnel"
    assert report.group_by == ("stage",)
    assert report.parameters["period"].field == "entered_at"
    for measure in report.measures:
        assert measure.label.get("ru") != measure.label.get("en")


# ------------------------------------------------------------------ the checker
def test_bad_funnels_get_positioned_messages(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "probe",
        {
            "reports/bad.yaml": """reports:
  on_accounts:
    kind: conversion_funnel
    entity: account
  with_measures:
    kind: conversion_funnel
    entity: opportunity
    measures: {n: count}
    group_by: [stage]
    parameters:
      when: {type: user, field: entered_at}
""",
            "reports/typo.yaml": """reports:
  typo:
    kind: conversion_funel
    entity: opportunity
""",
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(pack)]) == 1
    out = capsys.readouterr().out
    where = "probe/reports/bad.yaml"
    for line in [
        f"{where}:3:11: reports.on_accounts: a conversion_funnel reads the stage history, and "
        "account has no stage flow (stages:); entities with one: lead, opportunity",
        f"{where}:8:5: reports.with_measures: measures: a conversion_funnel has its own rows",
        f"{where}:9:5: reports.with_measures: group_by: a conversion_funnel has its own rows",
        f"{where}:11:33: reports.with_measures: parameter when: entered_at (when a record "
        "entered a stage) takes a period parameter, not a user one",
    ]:
        assert line in out, (line, out)
    assert "probe/reports/typo.yaml:3:11: reports.typo" in out
    assert "did you mean 'conversion_funnel'?" in out
