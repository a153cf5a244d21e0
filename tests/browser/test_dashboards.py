"""Dashboards in a real browser: the home page is the user's dashboard with its charts
drawn by Chart.js (under the Content-Security-Policy), a click on a bar opens the list of
exactly the records behind it, and a global filter's change redraws the widgets in place
and lands in the URL."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import sqlalchemy as sa

from .support import SELLER
from .test_reports import BARS, DRAWN, listed, still


def scalar(store, text: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).scalar()


def chart_data(page, index: int) -> dict:
    return json.loads(page.locator(f"#widget-chart-data-{index}").text_content())


def test_home_dashboard_bar_opens_its_records(visit, site):
    store, now = site.store, dt.datetime.now(dt.UTC)
    tasks = store.records("task")
    for i in range(3):
        tasks.create(
            {"subject": f"Call back {i}", "due": now + dt.timedelta(days=i), "owner": site.seller}
        )
    tasks.create({"subject": "Finished", "status": "done", "owner": site.seller})
    page = visit.login(SELLER)
    # the home page is the first dashboard the seller's roles see: core's activities
    assert page.locator('[data-testid="home-dashboard"]').inner_text() == "Activities"
    assert page.locator('[data-testid="widget"]').count() == 3
    assert page.locator('[data-testid="widget-fresh"]').first.inner_text().startswith("updated")
    page.wait_for_selector(DRAWN)
    chart = chart_data(page, 2)  # open tasks by owner
    expected = scalar(
        store, "SELECT count(*) FROM task WHERE status = 'open' AND owner = :o", o=site.seller
    )
    label = chart["labels"].index("Sam Seller")
    assert chart["datasets"][0]["data"][label] == expected >= 3
    still(page, "#widget-chart-2")
    bars = page.locator("#widget-chart-2").evaluate(BARS)
    page.mouse.click(bars[label]["x"], bars[label]["y"])
    page.wait_for_url("**/views/**")
    page.wait_for_load_state("networkidle")
    visit.shot("the records behind the bar")
    assert len(listed(page)) == expected
    assert "Finished" not in listed(page)


def test_a_global_filter_redraws_the_widgets(visit, site):
    store, today = site.store, dt.date.today()
    store.records("opportunity").create(
        {
            "name": "Closing today",
            "account": site.acme["id"],
            "amount": Decimal("900"),
            "close_date": today,
            "owner": site.seller,
        }
    )
    page = visit.login(SELLER)
    visit.go("/dashboards/sales", "sales dashboard")
    page.wait_for_selector("#widget-chart-3[data-drawn=true]")
    this_month = sum(v or 0 for v in chart_data(page, 3)["datasets"][0]["data"])
    everything = scalar(
        store, "SELECT sum(amount) FROM opportunity WHERE stage NOT IN ('won', 'lost')"
    )
    assert this_month < float(everything)
    page.select_option('[data-testid="filter-period"]', "all")
    page.wait_for_url("**period=all**")
    page.wait_for_function(
        "total => { const s = document.getElementById('widget-chart-data-3');"
        " return s && JSON.parse(s.textContent).datasets[0].data.reduce((a, b) => a + b, 0)"
        " === total; }",
        arg=float(everything),
    )
    page.wait_for_selector("#widget-chart-3[data-drawn=true]")
    visit.shot("any time")
    assert page.locator('[data-testid="dashboard-title"]').count() == 1  # swapped in place
