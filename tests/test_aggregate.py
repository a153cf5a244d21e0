"""Aggregates (the base of reports): groups and measures computed in SQL agree with the
same figures computed in Python over the records, on SQLite and PostgreSQL; date buckets
follow the user's time zone across daylight-saving changes; permissions and bad specs."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from conftest import SOLUTIONS, write_pack

from xrm.metadata.filters import FilterError

PACK = {
    "entities/deal.yaml": """
entity: deal
title: name
fields:
  name:    {type: text, required: true}
  stage:   {type: choice, options: [new, won, lost]}
  amount:  {type: money}
  qty:     {type: integer}
  closes:  {type: date}
  signed:  {type: datetime}
  hot:     {type: boolean}
  account: {type: lookup, to: account}
  secret:  {type: text}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {create: own, read: own, update: own, delete: own}
      account: {read: all}
    fields:
      deal: {secret: hidden}
""",
}
ZONE = "America/New_York"  # daylight saving starts 2025-03-09 and ends 2025-11-02


@pytest.fixture
def shop(database, tmp_path):
    store = database.open()
    store.install([SOLUTIONS / "core", write_pack(tmp_path, "shop", PACK, {"core": ">=1.0"})])
    seller = store.add_user("seller@x.test", roles=["seller"], time_zone=ZONE)
    other = store.add_user("other@x.test", roles=["seller"], time_zone=ZONE)
    accounts = [store.records("account").create({"name": n})["id"] for n in ("A", "B", "C")]
    rnd = random.Random(7)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(240):
        signed = start + dt.timedelta(hours=rnd.randrange(0, 24 * 365))
        rows.append(
            {
                "name": f"deal {i}",
                "stage": rnd.choice(["new", "won", "lost", None]),
                "amount": Decimal(rnd.randrange(0, 100000)) / 100 if rnd.random() > 0.1 else None,
                "qty": rnd.randrange(0, 50),
                "closes": (start + dt.timedelta(days=rnd.randrange(0, 730))).date(),
                "signed": signed if rnd.random() > 0.05 else None,
                "hot": rnd.random() > 0.5,
                "account": rnd.choice(accounts),
                "secret": "x",
                "owner": seller if i % 3 else other,
            }
        )
    # moments either side of New York's midnight and of both daylight-saving changes
    for moment in (
        "2025-03-09T04:59:00",
        "2025-03-09T05:00:00",
        "2025-11-02T03:59:00",
        "2025-11-02T04:00:00",
        "2025-11-03T04:59:00",
        "2025-11-03T05:00:00",
    ):
        rows.append(
            {
                "name": moment,
                "signed": dt.datetime.fromisoformat(moment + "+00:00"),
                "owner": seller,
                "qty": 1,
            }
        )
    store.records("deal").bulk_create(rows)
    store.seller, store.other = seller, other
    yield store
    store.close()


def start_of(day: dt.date, bucket: str) -> dt.date:
    if bucket == "day":
        return day
    if bucket == "week":
        return day - dt.timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    if bucket == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def expected(records, key, measures):
    """The same aggregate in Python over every record the user reads."""
    groups = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    result = []
    for group in sorted(groups, key=lambda g: tuple((v is None, v) for v in g)):
        members = groups[group]
        row = {}
        for name, value in measures.items():
            row[name] = value(members)
        result.append((group, row))
    return result


def deals_of(store, user):
    """The records service as the user sees it: their roles, their time zone."""
    return store.records("deal", principal=store.principal(user))


def everything(store, user):
    return deals_of(store, user).query(limit=1000).rows


def test_groups_and_measures_match_python(shop):
    deals = deals_of(shop, shop.seller)
    got = deals.aggregate(
        ["stage", "account"], ["count", "sum:amount", "max:qty", "distinct:closes", "min:closes"]
    )
    mine = everything(shop, shop.seller)
    assert sum(r["count"] for r in got) == len(mine)  # the seller's own deals only

    def amounts(members):
        values = [m["amount"] for m in members if m["amount"] is not None]
        return sum(values, Decimal("0.00")) if values else None

    want = expected(
        mine,
        lambda r: (r["stage"], r["account"]),
        {
            "count": len,
            "sum:amount": amounts,
            "max:qty": lambda ms: max(m["qty"] for m in ms),
            "distinct:closes": lambda ms: len({m["closes"] for m in ms if m["closes"]}),
            "min:closes": lambda ms: min((m["closes"] for m in ms if m["closes"]), default=None),
        },
    )
    assert [((r["stage"], r["account"]), {k: r[k] for k in want[0][1]}) for r in got] == want
    assert all(isinstance(r["sum:amount"], Decimal | None) for r in got)


@pytest.mark.parametrize("bucket", ["day", "week", "month", "quarter", "year"])
def test_date_buckets_match_python(shop, bucket):
    deals = deals_of(shop, shop.seller)
    got = deals.aggregate([f"closes:{bucket}"], ["count", "avg:qty"])
    want = expected(
        everything(shop, shop.seller),
        lambda r: (start_of(r["closes"], bucket) if r["closes"] else None,),
        {"count": len, "avg:qty": lambda ms: sum(m["qty"] for m in ms) / len(ms)},
    )
    assert [(r[f"closes:{bucket}"],) for r in got] == [g for g, _ in want]
    assert [r["count"] for r in got] == [w["count"] for _, w in want]
    assert [r["avg:qty"] for r in got] == pytest.approx([w["avg:qty"] for _, w in want])


@pytest.mark.parametrize("bucket", ["day", "week", "month", "quarter", "year"])
def test_moments_fall_in_the_users_local_buckets(shop, bucket):
    zone = ZoneInfo(ZONE)
    deals = deals_of(shop, shop.seller)
    got = deals.aggregate([f"signed:{bucket}"], ["count"])
    want = expected(
        everything(shop, shop.seller),
        lambda r: (start_of(r["signed"].astimezone(zone).date(), bucket) if r["signed"] else None,),
        {"count": len},
    )
    assert [(r[f"signed:{bucket}"], r["count"]) for r in got] == [
        (g[0], w["count"]) for g, w in want
    ]


def test_local_days_around_daylight_saving_changes(shop):
    deals = deals_of(shop, shop.seller)
    names = [
        "2025-03-09T04:59:00",  # 23:59 on the 8th in New York (EST)
        "2025-03-09T05:00:00",  # 00:00 on the 9th (EST; clocks go forward at 02:00)
        "2025-11-02T03:59:00",  # 23:59 on the 1st (EDT)
        "2025-11-02T04:00:00",  # 00:00 on the 2nd (EDT; clocks go back at 02:00)
        "2025-11-03T04:59:00",  # 23:59 on the 2nd (EST)
        "2025-11-03T05:00:00",  # 00:00 on the 3rd (EST)
    ]
    got = deals.aggregate(["signed:day"], ["count"], ["name", "in", names])
    assert [(r["signed:day"].isoformat(), r["count"]) for r in got] == [
        ("2025-03-08", 1),
        ("2025-03-09", 1),
        ("2025-11-01", 1),
        ("2025-11-02", 2),
        ("2025-11-03", 1),
    ]


def test_filters_search_and_dotted_groups(shop):
    deals = deals_of(shop, shop.seller)
    got = deals.aggregate(["account.name", "hot"], ["count"], ["stage", "eq", "won"])
    mine = [r for r in everything(shop, shop.seller) if r["stage"] == "won"]
    titles = {a["id"]: a["name"] for a in shop.records("account").query().rows}
    want = expected(mine, lambda r: (titles[r["account"]], r["hot"]), {"count": len})
    assert [((r["account.name"], r["hot"]), r["count"]) for r in got] == [
        (g, w["count"]) for g, w in want
    ]
    assert deals.aggregate([], ["count"]) == [{"count": len(everything(shop, shop.seller))}]


def test_permissions_apply(shop):
    seller = deals_of(shop, shop.seller)
    system = shop.records("deal")
    total = system.aggregate([], ["count"])[0]["count"]
    mine = seller.aggregate([], ["count"])[0]["count"]
    theirs = deals_of(shop, shop.other).aggregate([], ["count"])[0]["count"]
    assert mine + theirs == total and 0 < theirs < mine
    for spec in (["secret"], []):
        measures = ["count"] if spec else ["distinct:secret"]
        with pytest.raises(FilterError, match="you may not read this field"):
            seller.aggregate(spec, measures)
    with pytest.raises(FilterError, match="you may not read this field"):
        seller.aggregate([], ["count"], ["secret", "eq", "x"])


@pytest.mark.parametrize(
    ("group_by", "measures", "message"),
    [
        (["nope"], ["count"], "deal has no field 'nope'"),
        (["stage:month"], ["count"], "only dates have buckets, and stage is a choice"),
        (["closes:fortnight"], ["count"], "unknown bucket 'fortnight'"),
        (["amount"], ["count"], "cannot group by a money field"),
        ([], ["median:amount"], "unknown measure 'median'"),
        ([], ["sum:stage"], "sum needs a number, and stage is a choice"),
        ([], ["sum"], "sum needs a field"),
        ([], ["count:qty"], "count takes no field"),
        ([], ["max:hot"], "max needs a number, date or time, and hot is a boolean"),
    ],
)
def test_bad_specs_are_errors_not_sql(shop, group_by, measures, message):
    with pytest.raises(FilterError, match=message):
        deals_of(shop, shop.seller).aggregate(group_by, measures)
