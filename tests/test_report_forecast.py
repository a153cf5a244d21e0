"""The sales forecast against targets (the sales pack's ``sales_forecast``): the weighted
pipeline of open opportunities by close month and forecast category, the won amount and
the month's sales target side by side, each figure against SQL written here, on SQLite
and PostgreSQL; a seller with scope own sees only their own deals and targets (run
directly and through the API); lead source shares; the checker's messages on targets."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.reports import run_report
from xrm.web import create_app

ROLES = {
    "roles/roles.yaml": """
roles:
  seller:
    label: {en: Seller, ru: Продавец}
    permissions:
      "*": {read: own, create: own, update: own}
"""
}
CATEGORIES = ["pipeline", "best_case", "commit", "omitted"]
OPEN = ["prospecting", "qualification", "proposal", "negotiation"]


@pytest.fixture
def sales(database, tmp_path):
    store = database.open()
    store.install(
        [
            SOLUTIONS / "core",
            SOLUTIONS / "sales",
            write_pack(tmp_path, "probe", ROLES, {"sales": ">=1.0"}),
        ]
    )
    store.seller = store.add_user("seller@x.test", roles=["seller"])
    store.other = store.add_user("other@x.test", roles=["seller"])
    store.add_to_team(store.other, "west")
    account = store.records("account").create({"name": "Acme"})["id"]
    contact = store.records("contact").create({"last_name": "Buyer", "account": account})["id"]
    rnd = random.Random(5)
    year = dt.date.today().year
    rows = []
    for i in range(120):
        stage = rnd.choice([*OPEN, "won", "lost"])
        # this year's months, and a few of last year's (outside the default period)
        day = dt.date(year - (1 if i % 10 == 0 else 0), rnd.randrange(1, 13), rnd.randrange(1, 29))
        rows.append(
            {
                "name": f"deal {i}",
                "account": account,
                "contact": contact,
                "stage": stage,
                "amount": Decimal(rnd.randrange(1, 500) * 10),
                "probability": Decimal(rnd.randrange(0, 11) * 10),
                "close_date": day,
                "forecast_category": rnd.choice(CATEGORIES),
                "lost_reason": rnd.choice(["price", "competitor"]) if stage == "lost" else None,
                "owner": store.seller if i % 3 else store.other,
            }
        )
    result = store.records("opportunity").bulk_create(rows)
    assert not result.failures, result.failures
    targets = []
    for month in range(1, 13):
        for owner in (store.seller, store.other):
            targets.append(
                {
                    "name": f"{month}/{owner}",
                    "period": dt.date(year, month, 1 + month),
                    "amount": Decimal(1000 * month + owner),
                    "owner": owner,
                }
            )
    targets.append(
        {
            "name": "old",
            "period": dt.date(year - 1, 5, 1),
            "amount": Decimal(7),
            "owner": store.seller,
        }
    )
    assert not store.records("sales_target").bulk_create(targets).failures
    yield store
    store.close()


def sql(store, text: str, **params) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


def month(store, column: str) -> str:
    if store.engine.dialect.name == "postgresql":
        return f"to_char({column}, 'YYYY-MM')"
    return f"strftime('%Y-%m', {column})"


def money(value) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def by_month(store, query: str, **params) -> dict[str, Decimal]:
    return {key: money(value) for key, value in sql(store, query, **params) if value is not None}


def expected(store, owner: int | None = None) -> dict[str, dict[str, Decimal]]:
    """Measure -> {YYYY-MM: figure} from SQL written here."""
    year = dt.date.today().year
    mine = " AND owner = :owner" if owner is not None else ""
    params = {"low": dt.date(year, 1, 1), "high": dt.date(year + 1, 1, 1), "owner": owner}
    in_year = "close_date >= :low AND close_date < :high"
    weighted = (
        f"SELECT {month(store, 'close_date')}, sum(amount * probability / 100.0) FROM opportunity"
        f" WHERE {in_year}{mine} AND stage NOT IN ('won', 'lost') AND forecast_category {{}}"
        f" GROUP BY 1"
    )
    out = {
        category: by_month(store, weighted.format(f"= '{category}'"), **params)
        for category in ("commit", "best_case", "pipeline")
    }
    out["weighted"] = by_month(store, weighted.format("<> 'omitted'"), **params)
    out["won"] = by_month(
        store,
        f"SELECT {month(store, 'close_date')}, sum(amount) FROM opportunity"
        f" WHERE {in_year}{mine} AND stage = 'won' GROUP BY 1",
        **params,
    )
    out["target"] = by_month(
        store,
        f"SELECT {month(store, 'period')}, sum(amount) FROM sales_target"
        f" WHERE period >= :low AND period < :high{mine} GROUP BY 1",
        **params,
    )
    return out


def got(result) -> dict[str, dict[str, Decimal]]:
    names = ["commit", "best_case", "pipeline", "weighted", "won", "target"]
    out: dict = {n: {} for n in names}
    for row in result.rows:
        key = str(row["close_date:month"])[:7]
        for n in names:
            if row[n] not in (None, 0):
                out[n][key] = money(row[n])
    return out


def run(store, name, params=None, principal=None):
    return run_report(store, store.refresh().reports[name], params or {}, principal)


def test_every_figure_of_the_forecast_agrees_with_sql(sales):
    result = run(sales, "sales_forecast", {"period": "this_year"})
    want = expected(sales)
    assert got(result) == {n: {k: v for k, v in m.items() if v} for n, m in want.items()}
    assert len(result.rows) == 12  # every month of the year has a target
    assert money(result.totals["target"]) == sum(want["target"].values())
    assert money(result.totals["won"]) == sum(want["won"].values())
    assert all(want[n] for n in want)  # every figure has something to compare


def test_scope_own_sees_only_its_own_deals_and_targets(sales):
    result = run(sales, "sales_forecast", {"period": "this_year"}, sales.principal(sales.seller))
    want = expected(sales, owner=sales.seller)
    assert got(result) == {n: {k: v for k, v in m.items() if v} for n, m in want.items()}
    everyone = run(sales, "sales_forecast", {"period": "this_year"})
    assert money(result.totals["target"]) < money(everyone.totals["target"])


def test_scope_own_through_the_api(sales):
    app = create_app(sales, {"TESTING": True})
    token = sales.create_token(sales.seller, "tests")
    response = app.test_client().get(
        "/api/v1/reports/sales_forecast?period=this_year",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    want = expected(sales, owner=sales.seller)
    targets = {
        str(row["close_date:month"])[:7]: money(row["target"])
        for row in body["rows"]
        if row["target"]
    }
    assert targets == want["target"]
    assert [m["key"] for m in body["measures"]][-1] == "target"


def test_owner_and_team_parameters_apply_to_the_targets_too(sales):
    result = run(sales, "sales_forecast", {"period": "this_year", "team": "west"})
    want = expected(sales, owner=sales.other)
    assert got(result)["target"] == want["target"]
    assert got(result)["won"] == want["won"]


def test_an_empty_period_is_an_empty_report(sales):
    result = run(sales, "won_lost_by_reason", {"period": "next_year"})
    assert result.rows == []
    assert result.totals["deals"] == 0


def test_lead_source_effectiveness_counts_and_shares(sales):
    rnd = random.Random(3)
    leads = [
        {
            "last_name": f"L{i}",
            "company": "C",
            "email": f"l{i}@example.com",
            "source": rnd.choice(["web_form", "referral", None]),
            "status": rnd.choice(["new", "contacted", "qualified"]),
            "owner": sales.seller,
        }
        for i in range(40)
    ]
    assert not sales.records("lead").bulk_create(leads).failures
    result = run(sales, "lead_source_effectiveness")
    want = sql(
        sales,
        "SELECT source, count(*), sum(CASE WHEN status = 'qualified' THEN 1 ELSE 0 END)"
        " FROM lead GROUP BY source",
    )
    rows = {row["source"]: row for row in result.rows}
    for source, count, converted in want:
        row = rows[source]
        assert (row["leads"], row["converted"]) == (count, converted)
        assert row["conversion"] == round(converted * 100 / count, 1)
    total = sum(c for _, c, _ in want)
    assert result.totals["conversion"] == round(sum(c for *_, c in want) * 100 / total, 1)


def test_won_and_lost_by_reason_agree_with_sql(sales):
    result = run(sales, "won_lost_by_reason", {"period": "all"})
    want = sql(
        sales,
        "SELECT stage, lost_reason, count(*), sum(amount) FROM opportunity"
        " WHERE stage IN ('won', 'lost') GROUP BY stage, lost_reason",
    )
    assert {
        (r["stage"], r["lost_reason"]): (r["deals"], money(r["amount"])) for r in result.rows
    } == {(s, reason): (n, money(a)) for s, reason, n, a in want}


# ------------------------------------------------------------------ the checker
def test_bad_targets_get_positioned_messages(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "probe",
        {
            "reports/bad.yaml": """reports:
  forecast:
    entity: opportunity
    filter: {param: owner}
    parameters:
      owner: {type: user, field: owner}
    group_by: ["close_date:month"]
    measures:
      won: {sum: amount, where: [stage, eq, wonn]}
      rate: {share: [won, deals]}
    targets:
      target:
        entity: sales_target
        sum: amount
        groups: {"close_date:month": "period:year"}
        parameters: {owner: amount, region: owner}
      other:
        entity: sales_targt
        sum: amount
"""
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(pack)]) == 1
    out = capsys.readouterr().out
    where = "probe/reports/bad.yaml"
    for line in [
        f"{where}:9:33: reports.forecast: measure won: where: ",
        f"{where}:10:27: reports.forecast: measure rate: share: unknown measure 'deals'",
        f"{where}:15:38: reports.forecast: targets target: groups: 'close_date:month' and "
        "'period:year' are not buckets of the same size (month and year)",
        f"{where}:16:29: reports.forecast: targets target: parameters: owner is a user parameter,"
        " it needs a user field, and amount is a money",
        f"{where}:16:45: reports.forecast: targets target: parameters: unknown parameter 'region'",
        f"{where}:18:17: reports.forecast: targets other: unknown entity 'sales_targt'; did you "
        "mean 'sales_target'?",
    ]:
        assert line in out, (line, out)
