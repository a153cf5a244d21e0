"""Reports: each measure, bucket, pivot and total agrees with an independent SQL query
written here (on SQLite and PostgreSQL), parameters narrow the figures or are refused
clearly, a seller with scope own sees only their own figures through the API, and bad
report files get positioned messages from the checker."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.metadata import load_catalog
from xrm.reports import ParameterError, ReportRefused, run_report
from xrm.web import create_app

PACK = {
    "entities/deal.yaml": """
entity: deal
title: name
fields:
  name:        {type: text, required: true}
  stage:       {type: choice, options: [new, proposal, negotiation, won, lost]}
  region:      {type: choice, options: [north, south]}
  amount:      {type: money}
  probability: {type: percent}
  qty:         {type: integer}
  closes:      {type: date}
  signed:      {type: datetime}
  account:     {type: lookup, to: account}
  secret:      {type: text}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {read: own}
      account: {read: all}
    fields:
      deal: {secret: hidden}
""",
    "reports/deals.yaml": """
reports:
  by_stage:
    entity: deal
    filter: {all: [[stage, not_in, [lost]], {param: period}, {param: owner}, {param: region}, {param: team}]}
    parameters:
      period: {type: period, field: closes}
      owner: {type: user, field: owner}
      region: {type: choice, field: region, multiple: true}
      team: {type: team, field: owner}
    group_by: [stage]
    measures:
      deals: count
      accounts: {count_distinct: account}
      amount: {sum: amount}
      weighted: {weighted: {sum: amount, by: probability, divide: 100}}
      average: {avg: qty}
      first: {min: closes}
      largest: {max: amount}
    totals: true
  by_month:
    entity: deal
    filter: {param: period}
    parameters:
      period: {type: period, field: closes, default: last_12_months}
    group_by: ["closes:month"]
    measures: {deals: count, amount: {sum: amount}}
    totals: true
  by_quarter_and_account:
    entity: deal
    group_by: ["closes:quarter", account.name]
    measures: {deals: count}
  stage_by_region:
    entity: deal
    group_by: [stage, region]
    pivot: region
    measures: {deals: count, amount: {sum: amount}}
    totals: true
  average_by_region:
    entity: deal
    group_by: [stage, region]
    pivot: region
    measures: {average: {avg: qty}, amount: {sum: amount}, largest: {max: amount}}
    totals: true
  top_accounts:
    entity: deal
    group_by: [account.name]
    measures: {amount: {sum: amount}}
    sort: [[amount, desc]]
    limit: 2
  signed_recently:
    entity: deal
    filter: {param: period}
    parameters:
      period: {type: period, field: signed, default: last_3_months}
    measures: {deals: count}
    totals: true
  secrets:
    entity: deal
    group_by: [stage]
    measures: {secrets: {count_distinct: secret}}
""",
}
STAGES = ["new", "proposal", "negotiation", "won", "lost"]


@pytest.fixture
def shop(database, tmp_path):
    store = database.open()
    store.install([SOLUTIONS / "core", write_pack(tmp_path, "shop", PACK, {"core": ">=1.0"})])
    store.seller = store.add_user("seller@x.test", roles=["seller"])
    store.other = store.add_user("other@x.test", roles=["seller"])
    store.add_to_team(store.seller, "east")
    accounts = [store.records("account").create({"name": n})["id"] for n in "ABCD"]
    rnd = random.Random(12)
    today = dt.date.today()
    rows = []
    for i in range(150):
        rows.append(
            {
                "name": f"deal {i}",
                "stage": rnd.choice([*STAGES, None]),
                "region": rnd.choice(["north", "south", None]),
                # whole amounts and probabilities in tens: every weighted figure is exact
                "amount": Decimal(rnd.randrange(0, 5000)) if rnd.random() > 0.1 else None,
                "probability": Decimal(rnd.randrange(0, 11) * 10),
                "qty": rnd.randrange(0, 40),
                "closes": today - dt.timedelta(days=rnd.randrange(-60, 900)),
                "signed": dt.datetime.now(dt.UTC) - dt.timedelta(hours=rnd.randrange(-500, 5000)),
                "account": rnd.choice(accounts),
                "secret": rnd.choice(["a", "b"]),
                "owner": store.seller if i % 3 else store.other,
            }
        )
    store.records("deal").bulk_create(rows)
    store.rows = rows
    yield store
    store.close()


def sql(store, text: str, **params) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


def money(value) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def month_sql(store) -> str:
    if store.engine.dialect.name == "postgresql":
        return "to_char(closes, 'YYYY-MM')"
    return "strftime('%Y-%m', closes)"


def date_of(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def run(store, name, params=None, principal=None):
    return run_report(store, store.refresh().reports[name], params or {}, principal)


# ------------------------------------------------------------------ measures and buckets
def test_every_measure_agrees_with_sql_in_stage_order(shop):
    result = run(shop, "by_stage")
    expected = sql(
        shop,
        "SELECT stage, count(*), count(DISTINCT account), sum(amount),"
        " sum(amount * probability / 100.0), avg(qty), min(closes), max(amount)"
        " FROM deal WHERE stage IS NULL OR stage <> 'lost' GROUP BY stage",
    )
    order = {s: i for i, s in enumerate(STAGES)}
    expected.sort(key=lambda r: (r[0] is None, order.get(r[0], 0)))
    assert [row["stage"] for row in result.rows] == [r[0] for r in expected]
    assert [row["stage"] for row in result.rows][:4] == ["new", "proposal", "negotiation", "won"]
    for row, (_stage, count, accounts, amount, weighted, average, first, largest) in zip(
        result.rows, expected
    ):
        assert row["deals"] == count
        assert row["accounts"] == accounts
        assert row["amount"] == money(amount)
        assert row["weighted"] == money(weighted)
        assert abs(float(row["average"]) - float(average)) < 1e-9
        assert row["first"] == date_of(first)
        assert row["largest"] == money(largest)
    (count, amount, weighted) = sql(
        shop,
        "SELECT count(*), sum(amount), sum(amount * probability / 100.0) FROM deal"
        " WHERE stage IS NULL OR stage <> 'lost'",
    )[0]
    assert result.totals["deals"] == count
    assert result.totals["amount"] == money(amount)
    assert result.totals["weighted"] == money(weighted)


def test_month_buckets_and_the_default_period_of_twelve_months(shop):
    today = dt.date.today()
    index = today.year * 12 + today.month - 1 - 11
    start = dt.date(index // 12, index % 12 + 1, 1)
    result = run(shop, "by_month")
    expected = sql(
        shop,
        f"SELECT {month_sql(shop)}, count(*), sum(amount) FROM deal"
        " WHERE closes >= :start AND closes < :end GROUP BY 1 ORDER BY 1",
        start=start,
        end=(today.replace(day=28) + dt.timedelta(days=4)).replace(day=1),
    )
    assert len(result.rows) == len(expected) <= 12
    for row, (month, count, amount) in zip(result.rows, expected):
        assert row["closes:month"] == dt.date.fromisoformat(month + "-01")
        assert (row["deals"], row["amount"]) == (count, money(amount))
    assert result.totals["deals"] == sum(r[1] for r in expected)
    everything = run(shop, "by_month", {"period": "all"})
    assert everything.totals["deals"] == 150


def test_a_time_series_has_its_empty_buckets_at_zero(shop):
    long_ago = dt.date.today().replace(day=1) - dt.timedelta(days=6 * 365)
    shop.records("deal").create({"name": "old deal", "closes": long_ago, "amount": 7})
    result = run(shop, "by_month", {"period": "all"})
    months = [row["closes:month"] for row in result.rows]
    first, last = months[0], months[-1]
    expected = []
    while first <= last:  # every month from the first to the last, none skipped
        expected.append(first)
        first = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    assert months == expected
    with_deals = {r[0] for r in sql(shop, f"SELECT DISTINCT {month_sql(shop)} FROM deal")}
    empty = [row for row in result.rows if row["closes:month"].isoformat()[:7] not in with_deals]
    assert empty, "the sample leaves some months without deals"
    assert all(row["deals"] == 0 and row["amount"] == 0 for row in empty)
    assert result.totals["deals"] == 151


def test_quarter_buckets_and_lookup_paths(shop):
    if shop.engine.dialect.name == "postgresql":
        quarter = "to_char(date_trunc('quarter', closes), 'YYYY-MM-DD')"
    else:
        quarter = (
            "printf('%s-%02d-01', strftime('%Y', closes),"
            " (CAST(strftime('%m', closes) AS INTEGER) - 1) / 3 * 3 + 1)"
        )
    expected = sql(
        shop,
        f"SELECT {quarter}, a.name, count(*) FROM deal d JOIN account a ON a.id = d.account"
        " GROUP BY 1, 2 ORDER BY 1, 2",
    )
    result = run(shop, "by_quarter_and_account")
    got = [
        (row["closes:quarter"].isoformat(), row["account.name"], row["deals"])
        for row in result.rows
    ]
    assert got == [tuple(r) for r in expected]


def test_a_pivot_has_columns_cells_and_totals_of_its_own(shop):
    result = run(shop, "stage_by_region")
    assert result.groups == ("stage",)
    assert result.columns == ("north", "south", None)
    cells = {
        (stage, region): (count, money(amount))
        for stage, region, count, amount in sql(
            shop, "SELECT stage, region, count(*), sum(amount) FROM deal GROUP BY stage, region"
        )
    }
    for row in result.rows:
        for region, cell in zip(result.columns, row["cells"]):
            expected = cells.get((row["stage"], region))
            got = None if cell is None else (cell["deals"], cell["amount"])
            assert got == expected
        assert row["total"]["deals"] == sum(
            c for (s, _r), (c, _a) in cells.items() if s == row["stage"]
        )
    by_region = dict(sql(shop, "SELECT region, count(*) FROM deal GROUP BY region"))
    assert [c["deals"] for c in result.totals["cells"]] == [
        by_region.get(r) for r in result.columns
    ]
    assert result.totals["deals"] == 150


def _close(a, b) -> bool:
    return (a is None and b is None) or abs(float(a) - float(b)) < 1e-6


def test_pivot_totals_of_sums_come_from_the_cells_and_of_averages_from_sql(shop):
    """Sums and maximums of a row, a column or the whole are made of the cells' figures;
    an average is not, so the same report's totals must still agree with SQL's."""
    for name in ("stage_by_region", "average_by_region"):
        result = run(shop, name)
        by_stage = {
            s: (money(a), money(m), q)
            for s, a, m, q in sql(
                shop, "SELECT stage, sum(amount), max(amount), avg(qty) FROM deal GROUP BY stage"
            )
        }
        by_region = {
            r: (money(a), money(m), q)
            for r, a, m, q in sql(
                shop, "SELECT region, sum(amount), max(amount), avg(qty) FROM deal GROUP BY region"
            )
        }
        ((amount, largest, average),) = sql(
            shop, "SELECT sum(amount), max(amount), avg(qty) FROM deal"
        )
        for row in result.rows:
            assert row["total"]["amount"] == by_stage[row["stage"]][0]
        for region, cell in zip(result.columns, result.totals["cells"]):
            assert cell["amount"] == by_region[region][0]
        assert result.totals["amount"] == money(amount)
        if name == "average_by_region":
            for row in result.rows:
                assert row["total"]["largest"] == by_stage[row["stage"]][1]
                assert _close(row["total"]["average"], by_stage[row["stage"]][2])
            for region, cell in zip(result.columns, result.totals["cells"]):
                assert _close(cell["average"], by_region[region][2])
            assert result.totals["largest"] == money(largest)
            assert _close(result.totals["average"], average)


def test_sort_by_a_measure_and_limit(shop):
    expected = sql(
        shop,
        "SELECT a.name, sum(d.amount) FROM deal d JOIN account a ON a.id = d.account"
        " GROUP BY a.name ORDER BY 2 DESC LIMIT 2",
    )
    result = run(shop, "top_accounts")
    assert [(r["account.name"], r["amount"]) for r in result.rows] == [
        (name, money(amount)) for name, amount in expected
    ]


# ------------------------------------------------------------------ parameters
def test_parameters_narrow_the_figures(shop):
    (count,) = sql(
        shop,
        "SELECT count(*) FROM deal WHERE (stage IS NULL OR stage <> 'lost')"
        " AND owner = :owner AND region IN ('north', 'south') AND closes >= :start"
        " AND closes <= :today",  # last_30_days: the 30 days before today, and today
        owner=shop.seller,
        start=dt.date.today() - dt.timedelta(days=30),
        today=dt.date.today(),
    )[0]
    result = run(
        shop,
        "by_stage",
        {"owner": str(shop.seller), "region": "north,south", "period": "last_30_days"},
    )
    assert result.totals["deals"] == count
    (team,) = sql(
        shop,
        "SELECT count(*) FROM deal WHERE (stage IS NULL OR stage <> 'lost') AND owner = :o",
        o=shop.seller,
    )[0]
    assert run(shop, "by_stage", {"team": "east"}).totals["deals"] == team


def test_a_period_of_months_on_a_datetime_starts_at_a_local_midnight(shop):
    now = dt.datetime.now(dt.UTC)
    index = now.year * 12 + now.month - 1
    start = dt.datetime(index // 12 - (now.month <= 2), (now.month - 3) % 12 + 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(index // 12 + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    expected = sum(1 for row in shop.rows if start <= row["signed"] < end)
    assert 0 < run(shop, "signed_recently").totals["deals"] == expected < 150


def test_weighted_sums_through_the_aggregate_api(shop, seller_api):
    response = seller_api("/deal/aggregate?measures=count,weighted:amount*probability/100")
    assert response.status_code == 200, response.get_data(as_text=True)
    (row,) = response.get_json()["data"]
    (weighted,) = sql(
        shop, "SELECT sum(amount * probability / 100.0) FROM deal WHERE owner = :o", o=shop.seller
    )[0]
    assert row["weighted:amount*probability/100"] == format(money(weighted), "f")


def test_an_empty_result_is_an_empty_report(shop):
    result = run(shop, "by_stage", {"period": "next_year", "owner": "me"})
    assert result.rows == []
    assert result.totals["deals"] == 0 and result.totals["amount"] is None


@pytest.mark.parametrize(
    ("params", "name", "message"),
    [
        ({"period": "last_quater"}, "period", "unknown period 'last_quater'"),
        ({"owner": "bob"}, "owner", "expected me or a user id, got 'bob'"),
        ({"region": "west"}, "region", "west"),
        ({"team": "wset"}, "team", "unknown team 'wset'"),
        ({"colour": "red"}, "colour", "unknown parameter of report 'by_stage'"),
    ],
)
def test_bad_parameter_values_are_refused_by_name(shop, params, name, message):
    with pytest.raises(ParameterError) as caught:
        run(shop, "by_stage", params)
    assert caught.value.name == name
    assert message in str(caught.value)


# ------------------------------------------------------------------ permissions and API
@pytest.fixture
def seller_api(shop):
    app = create_app(shop, {"TESTING": True})
    token = shop.create_token(shop.seller, "tests")
    client = app.test_client()

    def get(path):
        return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})

    return get


def test_scope_own_sees_only_its_own_figures_through_the_api(shop, seller_api):
    response = seller_api("/reports/by_stage")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    expected = sql(
        shop,
        "SELECT stage, count(*), sum(amount) FROM deal"
        " WHERE (stage IS NULL OR stage <> 'lost') AND owner = :o GROUP BY stage",
        o=shop.seller,
    )
    got = {row["stage"]: (row["deals"], row["amount"]) for row in body["rows"]}
    assert got == {s: (c, format(money(a), "f") if a is not None else None) for s, c, a in expected}
    assert body["totals"]["deals"] == sum(r[1] for r in expected) < 150
    assert [m["key"] for m in body["measures"]][:3] == ["deals", "accounts", "amount"]
    exported = list(
        csv.reader(io.StringIO(seller_api("/reports/by_stage?format=csv").get_data(as_text=True)))
    )
    assert exported[0][:2] == ["Stage", "Deals"]
    assert exported[-1][:2] == ["Total", str(body["totals"]["deals"])]
    assert len(exported) == len(body["rows"]) + 2


def test_a_report_on_a_hidden_field_is_refused(shop, seller_api):
    with pytest.raises(ReportRefused, match="secret: you may not read this field"):
        run(shop, "secrets", principal=shop.principal(shop.seller))
    response = seller_api("/reports/secrets")
    assert response.status_code == 403
    assert "secret: you may not read this field" in response.get_json()["detail"]


def test_api_problems_for_bad_parameters_and_unknown_reports(seller_api):
    bad = seller_api("/reports/by_stage?period=yesteryear")
    assert bad.status_code == 400
    assert bad.get_json()["parameter"] == "period"
    missing = seller_api("/reports/by_stag")
    assert missing.status_code == 404
    assert "did you mean 'by_stage'" in missing.get_json()["detail"]
    assert seller_api("/reports/by_stage?format=xml").status_code == 400


def test_the_openapi_document_describes_the_reports_endpoint(seller_api):
    document = seller_api("/openapi.json").get_json()
    operation = document["paths"]["/api/v1/reports/{name}"]["get"]
    assert "by_stage" in operation["parameters"][0]["schema"]["enum"]


# ------------------------------------------------------------------ the checker
def test_bad_report_files_get_positioned_messages(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "probe",
        {
            "reports/bad.yaml": """reports:
  bad:
    entity: opportunity
    filter: {all: [[stage, eq, won], {param: owner}, {param: perod}]}
    parameters:
      owner: {type: user, field: amount}
    group_by: ["close_date:fortnight", account.industy]
    measures:
      n: count
      s: {sum: name}
      w: {weighted: {sum: amount, by: stage}}
    pivot: owner
    sort: [[amout, desc]]
  other:
    entity: oportunity
    measures: {n: count}
"""
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(pack)]) == 1
    lines = capsys.readouterr().out.splitlines()
    where = "probe/reports/bad.yaml"
    expected = [
        f"{where}:4:62: reports.bad: filter: unknown parameter 'perod'",
        f"{where}:6:34: reports.bad: parameter owner: a user parameter needs a user field, and amount is a money",
        f"{where}:7:16: reports.bad: group_by: unknown bucket 'fortnight'",
        f"{where}:7:40: reports.bad: group_by: account has no field 'industy'; did you mean 'industry'?",
        f"{where}:10:7: reports.bad: measure s: sum needs a number, and name is a text",
        f"{where}:11:7: reports.bad: measure w: a weighted sum needs numbers, and stage is a choice",
        f"{where}:12:12: reports.bad: pivot 'owner' is not one of the groups",
        f"{where}:13:12: reports.bad: sort: 'amout' is neither a group nor a measure",
        f"{where}:15:13: reports.other: unknown entity 'oportunity'; did you mean 'opportunity'?",
    ]
    for line in expected:
        assert any(got.endswith(line) or line in got for got in lines), (line, lines)


def test_the_sales_pack_ships_its_two_reports():
    catalog = load_catalog([SOLUTIONS / "core", SOLUTIONS / "sales"])
    pipeline = catalog.reports["pipeline_by_stage"]
    assert pipeline.group_by == ("stage",)
    assert [m.spec for m in pipeline.measures] == [
        "count",
        "sum:amount",
        "weighted:amount*probability/100",
    ]
    won = catalog.reports["won_revenue_by_month"]
    assert won.group_by == ("close_date:month",)
    assert won.parameters["period"].default == "last_12_months"


def test_the_sales_reports_run_on_opportunities(database):
    store = database.open()
    try:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
        account = store.records("account").create({"name": "Acme"})["id"]
        today = dt.date.today()
        opportunities = store.records("opportunity")
        for name, stage, amount in [
            ("a", "negotiation", "1000"),
            ("b", "prospecting", "200"),
            ("c", "negotiation", "300"),
            ("d", "won", "5000"),
        ]:
            opportunities.create(
                {
                    "name": name,
                    "account": account,
                    "stage": stage,
                    "amount": amount,
                    "close_date": today,
                }
            )
        pipeline = run(store, "pipeline_by_stage")
        expected = sql(
            store,
            "SELECT stage, count(*), sum(amount), sum(amount * probability / 100.0)"
            " FROM opportunity WHERE stage NOT IN ('won', 'lost') GROUP BY stage",
        )
        assert [r["stage"] for r in pipeline.rows] == ["prospecting", "negotiation"]
        got = {r["stage"]: (r["deals"], r["amount"], r["weighted"]) for r in pipeline.rows}
        assert got == {s: (c, money(a), money(w)) for s, c, a, w in expected}
        won = run(store, "won_revenue_by_month")
        assert [(r["close_date:month"], r["revenue"]) for r in won.rows] == [
            (today.replace(day=1), Decimal("5000.00"))
        ]
    finally:
        store.close()


def test_an_empty_parameter_matches_everything_wherever_it_stands():
    from xrm.metadata.reports import fill_filter

    raw = {"all": [["stage", "eq", "won"], {"any": [["qty", "gt", 1], {"param": "p"}]}]}
    assert fill_filter(raw, {"p": None}) == {"all": [["stage", "eq", "won"]]}
    assert fill_filter(raw, {"p": ["region", "eq", "north"]}) == {
        "all": [["stage", "eq", "won"], {"any": [["qty", "gt", 1], ["region", "eq", "north"]]}]
    }
    assert fill_filter({"not": {"param": "p"}}, {"p": None}) is None


def test_a_mistyped_measure_is_explained_in_the_form_it_was_meant(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "probe",
        {
            "reports/r.yaml": (
                "reports:\n  r:\n    entity: opportunity\n    measures:\n"
                "      a: {summ: amount}\n      c: cnt\n"
            ),
            "reports/s.yaml": (
                "reports:\n  s:\n    entity: opportunity\n    measures:\n"
                "      b: {sum: amount, avg: amount}\n"
            ),
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(pack)]) == 1
    lines = [line.split("/probe/", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        "reports/r.yaml:5:11: reports.r: unknown key 'summ' in reports.r.measures.a (expected "
        "one of count, count_distinct, sum, avg, min, max, weighted, label, where, share); did you "
        "mean 'sum'?",
        "reports/r.yaml:6:10: reports.r: reports.r.measures.c: 'cnt' is not allowed "
        "(expected one of count); did you mean 'count'?",
        "reports/s.yaml:5:7: reports.s: measure b: one of count, count_distinct, sum, avg, "
        "min, max, weighted per measure (got sum and avg)",
    ]
