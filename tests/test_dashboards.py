"""Dashboards: definitions and the checker's positioned messages, every widget's figures
against an independent SQL query (reports, a KPI against the previous period, lists), a
seller with scope own seeing only their own figures on the page and through the API, the
widget cache (how fresh each widget says it is, what it is keyed by, dropped when the
catalog moves), the home page, and the kanban board's counts and sums per column.  On
SQLite, and on PostgreSQL with XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Mapping
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app, opened
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.reports.dashboards import (
    DashboardError,
    cache_of,
    clear_cache,
    previous_period,
    run_dashboard,
)

ADMIN, SELLER, OTHER, MANAGER = "ada@x.test", "sam@x.test", "oz@x.test", "max@x.test"

# A probe pack: a role that reads only its own opportunities, and a dashboard without
# roles (everyone sees it) made of the sales pack's reports.
PROBE = {
    "roles/roles.yaml": """
roles:
  own_seller:
    label: Own seller
    permissions:
      opportunity: {read: own, update: own}
      account: {read: all}
      task: {read: own}
""",
    "dashboards/desk.yaml": """
dashboards:
  desk:
    label: {en: Desk, ru: Стол}
    filters:
      period: {type: period, default: this_month}
      owner: {type: user}
    widgets:
      - kpi: won_revenue_by_month
        measure: revenue
        width: 4
      - report: pipeline_by_stage
        show: both
        width: 8
      - list:
          entity: opportunity
          filter: [stage, not_in, [won, lost]]
          columns: [name, amount, stage]
          sort: [[amount, desc]]
        limit: 5
""",
}


def month_start(today: dt.date, back: int) -> dt.date:
    index = today.year * 12 + today.month - 1 - back
    return dt.date(index // 12, index % 12 + 1, 1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboards")
    probe = write_pack(tmp, "probe", PROBE, {"sales": ">=1.0"})
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales", probe]) as store:
        store.admin = store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"])
        store.seller = store.add_user(SELLER, "Sam", password=PASSWORD, roles=["own_seller"])
        store.other = store.add_user(OTHER, "Oz", password=PASSWORD, roles=["own_seller"])
        store.manager = store.add_user(MANAGER, "Max", password=PASSWORD, roles=["manager"])
        account = store.records("account").create({"name": "Acme"})["id"]
        contact = store.records("contact").create(
            {"first_name": "Jane", "last_name": "Doe", "account": account}
        )["id"]
        today = dt.date.today()
        this_month, last_month = month_start(today, 0), month_start(today, 1)
        stages = ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
        rows = []
        for i in range(48):
            stage = stages[i % 6]
            # this month, last month and older, spread over owners
            day = (this_month, last_month, month_start(today, 4))[i // 6 % 3]
            rows.append(
                {
                    "name": f"Deal {i:02d}",
                    "account": account,
                    "contact": contact,
                    "amount": Decimal(1000 + 100 * i),
                    "close_date": day + dt.timedelta(days=i % 20),
                    "stage": stage,
                    "lost_reason": "price" if stage == "lost" else None,
                    "owner": (store.seller, store.other, store.admin)[i % 4 % 3],
                }
            )
        store.records("opportunity").bulk_create(rows)
        store.app = make_app(store)
        yield store


@pytest.fixture(autouse=True)
def _no_cached_figures(shop):
    clear_cache(shop)  # each test reads figures of its own
    yield


def sql(store, text: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


def money(value) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def dashboard(store, name="desk", given=None, user=None):
    principal = store.principal(user) if user else None
    return run_dashboard(store, store.refresh().dashboards[name], given or {}, principal)


def text(response) -> str:
    return response.get_data(as_text=True)


# ------------------------------------------------------------------ definitions
def test_shipped_dashboards_compile_with_their_widgets(shop):
    catalog = shop.refresh()
    sales = catalog.dashboards["sales"]
    assert sales.solution == sales.module == "sales"
    assert [w.kind for w in sales.widgets] == [
        "kpi",
        "kpi",
        "kpi",
        "report",
        "report",
        "list",
        "list",
    ]
    assert sum(w.width for w in sales.widgets[:3]) == 12
    assert set(sales.filters) == {"period", "owner", "team"}
    assert sales.label.get("ru") == "Продажи"
    activities = catalog.dashboards["activities"]
    assert activities.solution == "core"
    assert [w.kind for w in activities.widgets] == ["list", "list", "report"]
    assert activities.widgets[0].view == "my_open_tasks"
    assert all(
        w.label is None or w.label.get("ru") for d in catalog.dashboards.values() for w in d.widgets
    )


BAD = """dashboards:
  broken:
    label: Broken
    roles: [managr]
    module: sails
    filters:
      period: {type: period, default: this_mnth}
      team: {type: team}
    widgets:
      - kpi: won_revenue_by_mnth
        measure: revenue
      - kpi: won_revenue_by_month
        measure: revenu
      - report: pipeline_by_stage
        parameters: {perod: this_month}
      - list: closing_this_mnth
      - list: pipeline_board
      - list: {entity: opportunty, columns: [name]}
      - list: {entity: opportunity, columns: [nme], filter: [stage, eq, nope]}
      - report: won_revenue_by_month
        show: chart
        width: 13
"""


def test_the_checker_names_every_mistake_at_its_line(tmp_path, capsys):
    pack = write_pack(tmp_path, "bad", {"dashboards/bad.yaml": BAD}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    where = "bad/dashboards/bad.yaml"
    # the schema check comes first: a width beyond the grid
    assert f"{where}:22:16:" in out and "13" in out
    BAD_OK = BAD.replace("        width: 13\n", "")
    pack = write_pack(tmp_path, "bad", {"dashboards/bad.yaml": BAD_OK}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "sales"), str(pack)]) == 1
    lines = capsys.readouterr().out.splitlines()
    expected = [
        f"{where}:4:13: dashboards.broken: unknown role 'managr'; did you mean 'manager'?",
        f"{where}:5:13: dashboards.broken: module: unknown solution 'sails'; did you mean 'sales'?",
        f"{where}:7:39: dashboards.broken: filter period: unknown period 'this_mnth' (expected",
        f"{where}:10:14: dashboards.broken: kpi: unknown report 'won_revenue_by_mnth'; did you"
        " mean 'won_revenue_by_month'?",
        f"{where}:13:18: dashboards.broken: kpi: report 'won_revenue_by_month' has no measure"
        " 'revenu'; did you mean 'revenue'? (expected one of deals, revenue)",
        f"{where}:15:29: dashboards.broken: report 'pipeline_by_stage' has no parameter 'perod';"
        " did you mean 'period'? (expected period, owner, team)",
        f"{where}:16:15: dashboards.broken: list: unknown view 'closing_this_mnth'; did you mean"
        " 'closing_this_month'?",
        f"{where}:17:15: dashboards.broken: list: view 'pipeline_board' is a kanban, not a list",
        f"{where}:18:24: dashboards.broken: list: unknown entity 'opportunty'; did you mean"
        " 'opportunity'?",
        f"{where}:19:47: dashboards.broken: list: opportunity has no field 'nme'; did you mean"
        " 'name'?",
        f"{where}:19:61: dashboards.broken: list: filter: stage: bad value for 'eq': 'nope' is"
        " not an option",
    ]
    assert len(lines) == len(expected)
    for line in expected:
        assert any(line in got for got in lines), (line, lines)


def test_a_filter_no_widget_takes_and_a_kpi_without_a_period_are_refused(tmp_path, capsys):
    doc = """dashboards:
  odd:
    label: Odd
    filters:
      owner: {type: user}
    widgets:
      - kpi: open_tasks_by_owner
        measure: tasks
        parameters: {owner: me}
      - kpi: plain
        measure: deals
reports:
"""
    reports = "reports:\n  plain: {entity: opportunity, measures: {deals: count}}\n"
    pack = write_pack(
        tmp_path,
        "odd",
        {"dashboards/odd.yaml": doc.replace("reports:\n", ""), "reports/r.yaml": reports},
        {"sales": ">=1.0"},
    )
    assert main(["check", str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    assert (
        "odd/dashboards/odd.yaml:5:7: dashboards.odd: filter 'owner' applies to no widget:"
        " no report of this dashboard has a user parameter left free"
    ) in out
    assert (
        "odd/dashboards/odd.yaml:10:14: dashboards.odd: kpi: comparing with the previous period"
        " needs a report with one period parameter, and 'plain' has 0: set compare: false"
    ) in out


# ------------------------------------------------------------------ figures against SQL
def test_report_widget_and_global_filters_agree_with_sql(shop):
    today = dt.date.today()
    start, end = month_start(today, 0), month_start(today, -1)
    result = dashboard(shop)
    pipeline = next(w for w in result.widgets if w.kind == "report")
    assert pipeline.parameters == {"period": "this_month"}  # the global filter's default
    expected = dict(
        sql(
            shop,
            "SELECT stage, sum(amount) FROM opportunity WHERE stage NOT IN ('won', 'lost')"
            " AND close_date >= :start AND close_date < :end GROUP BY stage",
            start=start,
            end=end,
        )
    )
    got = {row["stage"]: row["amount"] for row in pipeline.result.rows}
    assert got == {k: money(v) for k, v in expected.items()} and got
    # the owner filter reaches the report's owner parameter
    mine = dashboard(shop, given={"owner": str(shop.seller), "period": "all"})
    pipeline = next(w for w in mine.widgets if w.kind == "report")
    (count,) = sql(
        shop,
        "SELECT count(*) FROM opportunity WHERE stage NOT IN ('won', 'lost') AND owner = :o",
        o=shop.seller,
    )[0]
    assert pipeline.result.totals["deals"] == count > 0


def test_kpi_against_the_previous_period_agrees_with_sql(shop):
    today = dt.date.today()
    bounds = [month_start(today, n) for n in (-1, 0, 1, 2)]

    def won(start, end):
        return money(
            sql(
                shop,
                "SELECT sum(amount) FROM opportunity WHERE stage = 'won'"
                " AND close_date >= :s AND close_date < :e",
                s=start,
                e=end,
            )[0][0]
        )

    kpi = dashboard(shop).widgets[0]
    assert kpi.kind == "kpi" and kpi.error is None
    assert money(kpi.value) == won(bounds[1], bounds[0])
    assert money(kpi.previous_value) == won(bounds[2], bounds[1])
    assert kpi.change == pytest.approx(
        (float(kpi.value) - float(kpi.previous_value)) / float(kpi.previous_value)
    )
    # last 2 months against the two before them
    kpi = dashboard(shop, given={"period": "last_2_months"}).widgets[0]
    assert money(kpi.value) == won(bounds[2], bounds[0])
    assert money(kpi.previous_value) == won(month_start(today, 3), bounds[2])
    # any time has no previous period
    kpi = dashboard(shop, given={"period": "all"}).widgets[0]
    assert kpi.previous is None and kpi.change is None


def test_previous_period_of_relative_and_rolling_periods(shop):
    report = shop.refresh().reports["won_revenue_by_month"]
    records = shop.records("opportunity")
    today = records.context().today()
    quarter = previous_period(report, "period", "this_quarter", records)
    start = dt.date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
    low = month_start(start, 3)
    leaf = [c for c in quarter.filter["all"] if isinstance(c, Mapping) and "all" in c][0]
    assert [list(c) for c in leaf["all"]] == [
        ["close_date", "ge", low.isoformat()],
        ["close_date", "lt", start.isoformat()],
    ]
    assert "period" not in quarter.parameters and "owner" in quarter.parameters
    days = previous_period(report, "period", "last_7_days", records)
    leaf = [c for c in days.filter["all"] if isinstance(c, Mapping) and "all" in c][0]
    # the last 7 days and today are 8 days: the 8 before them
    assert leaf["all"][0][2] == (today - dt.timedelta(days=15)).isoformat()
    assert leaf["all"][1][2] == (today - dt.timedelta(days=7)).isoformat()
    assert previous_period(report, "period", "all", records) is None


def test_list_widget_agrees_with_sql(shop):
    listed = dashboard(shop).widgets[2]
    expected = sql(
        shop,
        "SELECT name, amount FROM opportunity WHERE stage NOT IN ('won', 'lost')"
        " ORDER BY amount DESC LIMIT 5",
    )
    assert [(r["name"], r["amount"]) for r in listed.rows] == [(n, money(a)) for n, a in expected]
    (count,) = sql(shop, "SELECT count(*) FROM opportunity WHERE stage NOT IN ('won', 'lost')")[0]
    assert listed.count == count and listed.exact


def test_a_bad_filter_value_is_refused_by_name(shop):
    with pytest.raises(DashboardError, match="period: unknown period 'someday'"):
        dashboard(shop, given={"period": "someday"})
    with pytest.raises(DashboardError, match="unknown filter of dashboard 'desk'"):
        dashboard(shop, given={"colour": "red"})


# ------------------------------------------------------------------ scope own
def own_figures(store, user):
    return sql(
        store,
        "SELECT count(*), sum(amount) FROM opportunity WHERE stage NOT IN ('won', 'lost')"
        " AND owner = :o",
        o=user,
    )[0]


def test_scope_own_sees_own_figures_in_the_page_and_the_api(shop):
    count, amount = own_figures(shop, shop.seller)
    everyone = sql(shop, "SELECT count(*) FROM opportunity WHERE stage NOT IN ('won', 'lost')")
    assert count < everyone[0][0]
    seller = Client(shop.app).login(SELLER)
    answer = seller.get("/api/v1/dashboards/desk?period=all")
    assert answer.status_code == 200, text(answer)
    body = answer.get_json()
    report = body["widgets"][1]
    assert report["kind"] == "report"
    assert report["report"]["totals"]["deals"] == count
    assert Decimal(report["report"]["totals"]["amount"]) == money(amount)
    listed = body["widgets"][2]
    assert listed["count"] == count
    assert all(row["name"] for row in listed["rows"])
    names = {
        r[0] for r in sql(shop, "SELECT name FROM opportunity WHERE owner = :o", o=shop.seller)
    }
    assert {row["name"] for row in listed["rows"]} <= names
    # the page: the table's total is the seller's, the list counts theirs
    page = text(seller.get("/dashboards/desk?period=all"))
    deals = re.findall(r'data-measure="deals" data-testid="widget-cell">([^<]*)<', page)
    assert sum(int(d) for d in deals) == count
    assert f"All {count} records" in page
    # the other seller, with the same roles, has figures of their own (not the cache's)
    other_count, _ = own_figures(shop, shop.other)
    other = Client(shop.app).login(OTHER).get("/api/v1/dashboards/desk?period=all").get_json()
    assert other["widgets"][1]["report"]["totals"]["deals"] == other_count != count


def test_api_answers_problems_and_only_visible_dashboards(shop):
    seller = Client(shop.app).login(SELLER)
    bad = seller.get("/api/v1/dashboards/desk?period=someday")
    assert bad.status_code == 400 and "unknown period" in bad.get_json()["detail"]
    missing = seller.get("/api/v1/dashboards/dsk")
    assert missing.status_code == 404 and "did you mean 'desk'" in missing.get_json()["detail"]
    # the sales dashboard is for the sales pack's roles
    assert seller.get("/api/v1/dashboards/sales").status_code == 404
    manager = Client(shop.app).login(MANAGER)
    sales = manager.get("/api/v1/dashboards/sales")
    assert sales.status_code == 200
    assert [w["kind"] for w in sales.get_json()["widgets"]][:3] == ["kpi", "kpi", "kpi"]
    spec = manager.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/dashboards/{name}" in spec["paths"]


def test_a_widget_the_user_may_not_read_fails_alone(shop):
    seller = Client(shop.app).login(SELLER)
    # the seller reads no tasks of others but may read tasks: the activities dashboard
    # shows; their role has no lead access at all, so a lead list would be refused
    page = seller.get("/dashboards/activities")
    assert page.status_code == 200
    catalog = shop.refresh()
    sales = catalog.dashboards["sales"]
    patched = dataclasses.replace(sales, roles=())
    found = run_dashboard(shop, patched, {}, shop.principal(shop.seller))
    # lists of opportunities are fine; every widget is there, none fails for the others
    assert len(found.widgets) == len(sales.widgets)
    assert all(w.error is None for w in found.widgets)
    limited = dataclasses.replace(
        patched,
        widgets=(
            *patched.widgets,
            dataclasses.replace(
                patched.widgets[-1],
                index=99,
                entity="lead",
                view=None,
                filter=None,
                columns=("full_name",),
            ),
        ),
    )
    found = run_dashboard(shop, limited, {}, shop.principal(shop.seller))
    assert found.widgets[-1].error == "you may not read lead records"
    assert found.widgets[-1].status == 403
    assert all(w.error is None for w in found.widgets[:-1])


# ------------------------------------------------------------------ cache
def test_cached_widgets_say_how_fresh_they_are_and_expire(shop):
    cache = cache_of(shop)
    first = dashboard(shop, user=shop.admin)
    again = dashboard(shop, user=shop.admin)
    assert [w.computed_at for w in again.widgets] == [w.computed_at for w in first.widgets]
    # figures read 20 seconds ago say so on the page
    for key, entry in list(cache.entries.items()):
        cache.entries[key] = dataclasses.replace(entry, computed_at=entry.computed_at - 20)
    admin = Client(shop.app).login(ADMIN)
    page = text(admin.get("/dashboards/desk"))
    ages = re.findall(r'data-testid="widget-fresh" data-age="(\d+)">([^<]*)<', page)
    assert ages and all(20 <= int(age) < 60 for age, _ in ages)
    assert all(re.fullmatch(r"updated \d+ s ago", label) for _, label in ages)
    # a new won deal shows once the entry has lived its minute
    before = dashboard(shop, user=shop.admin).widgets[0].value
    shop.records("opportunity").create(
        {
            "name": "Fresh win",
            "account": shop.records("account").query(limit=1).rows[0]["id"],
            "amount": Decimal("777"),
            "close_date": dt.date.today(),
            "stage": "won",
        }
    )
    assert dashboard(shop, user=shop.admin).widgets[0].value == before  # still cached
    clock = cache.clock
    cache.clock = lambda: clock() + 61
    try:
        after = dashboard(shop, user=shop.admin).widgets[0].value
    finally:
        cache.clock = clock
    assert money(after) == money(before) + Decimal("777")
    page = text(admin.get("/dashboards/desk?refresh=1"))
    assert "updated just now" in page


def test_the_cache_is_keyed_by_scope_and_dropped_with_the_catalog(shop):
    cache = cache_of(shop)
    dashboard(shop, user=shop.seller)
    dashboard(shop, user=shop.other)
    identities = {key[3] for key in cache.entries}
    # own scope: each user their own entries
    assert ("user", shop.seller) in identities and ("user", shop.other) in identities
    dashboard(shop, user=shop.admin, given={"period": "last_month"})
    assert any(key[3][0] == "roles" for key in cache.entries)  # scope all: by role set
    assert len(cache.entries) <= cache.size
    version = cache.version
    shop.customize("views", {"views": {"probe_view": {"entity": "account", "columns": ["name"]}}})
    dashboard(shop, user=shop.admin)
    assert cache.version != version
    # the old entries are gone: only the admin's three widgets, read on the new catalog
    assert len(cache.entries) == 3
    assert {key[3] for key in cache.entries} <= {
        ("user", shop.admin),
        ("roles", ("administrator",), True),
    }


# ------------------------------------------------------------------ pages and home
def test_home_is_the_chosen_dashboard_else_the_first(shop):
    admin = Client(shop.app).login(ADMIN)
    home = text(admin.get("/"))
    first = next(iter(shop.refresh().dashboards.values()))
    assert 'data-testid="home-body"' in home
    assert f'href="/dashboards/{first.name}" data-testid="home-dashboard"' in home
    answer = admin.post("/dashboards/desk/home")
    assert answer.status_code == 303
    home = text(admin.get("/"))
    assert 'href="/dashboards/desk" data-testid="home-dashboard"' in home
    assert home.count('data-testid="widget"') == 3
    # a filter change on the home page swaps the widgets only
    body = admin.get(
        "/?period=last_month", headers={"HX-Request": "true", "HX-Target": "dashboard-body"}
    )
    assert body.status_code == 200 and "<html" not in text(body)
    assert text(body).count('data-testid="widget"') == 3


def test_index_navigation_and_russian_labels(shop):
    manager = Client(shop.app).login(MANAGER)
    index = text(manager.get("/dashboards"))
    assert (
        'data-testid="dashboard-sales"' in index and 'data-testid="dashboard-activities"' in index
    )
    page = text(manager.get("/dashboards/sales"))
    assert 'data-testid="nav-dashboard-sales"' in page
    assert page.count('data-testid="widget"') == 7
    assert page.count('data-testid="widget-chart"') == 2
    assert 'data-testid="kpi-value"' in page
    shop.set_preferences(shop.manager, locale="ru")
    try:
        page = text(manager.get("/dashboards/sales"))
        assert "Выигранная выручка" in page and "обновлено" in page
    finally:
        shop.set_preferences(shop.manager, locale="en")
    assert manager.get("/dashboards/nope").status_code == 404


def test_an_empty_home_is_friendly(tmp_path):
    bare = write_pack(
        tmp_path, "bare", {"entities/thing.yaml": "entity: thing\nfields: {name: {type: text}}\n"}
    )
    with opened(tmp_path, [bare]) as store:
        store.add_user("solo@x.test", "Solo", password=PASSWORD, roles=[])
        page = Client(make_app(store)).login("solo@x.test").get("/")
        assert page.status_code == 200
        assert 'data-testid="home-empty"' in text(page)
        assert "No dashboard is set up for your roles yet." in text(page)


# ------------------------------------------------------------------ kanban
def test_kanban_columns_show_their_count_and_sum(shop):
    manager = Client(shop.app).login(MANAGER)
    page = text(manager.get("/views/pipeline_board"))
    found = dict(
        (stage, (int(count), html.unescape(total)))
        for stage, count, total in re.findall(
            r'data-column="(\w+)"[^>]*data-count="(\d+)"[^>]*data-sum="([^"]*)"', page
        )
    )
    expected = sql(
        shop,
        "SELECT stage, count(*), sum(amount) FROM opportunity WHERE stage <> 'lost' GROUP BY stage",
    )
    assert {s: c for s, (c, _t) in found.items() if c} == {s: c for s, c, _a in expected}
    for stage, _count, amount in expected:
        assert money(found[stage][1]) == money(amount)
    assert 'data-testid="sum-of-column"' in page
    # a seller with scope own counts their own cards only
    seller = Client(shop.app).login(SELLER)
    page = text(seller.get("/views/pipeline_board"))
    mine = {
        stage: int(count)
        for stage, count in re.findall(r'data-column="(\w+)"[^>]*data-count="(\d+)"', page)
        if count != "0"
    }
    expected = sql(
        shop,
        "SELECT stage, count(*) FROM opportunity WHERE stage <> 'lost' AND owner = :o GROUP BY stage",
        o=shop.seller,
    )
    assert mine == {s: c for s, c in expected}
