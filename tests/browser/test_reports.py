"""Reports in a real browser: the index links a report, whose chart Chart.js draws on the
canvas (under the page's Content-Security-Policy: a script error or a refused inline
script fails the test); changing a parameter redraws the figures in place and puts the
parameter in the URL; a click on a bar, and on a table cell, opens the list of exactly the
records behind it."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from .support import SELLER

DRAWN = "canvas[data-xrm-chart][data-drawn=true]"
#: The chart on a canvas drawn and done moving (a click lands where its bars stay).
STILL = """canvas => {
  const chart = Chart.getChart(canvas);
  return !!chart && !Chart.animator.running(chart);
}"""
INKED = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return inked;
}"""
BARS = """canvas => {
  const chart = Chart.getChart(canvas);
  const box = canvas.getBoundingClientRect();
  return chart.getDatasetMeta(0).data.map(bar => {
    const p = bar.getCenterPoint();
    return {x: box.left + p.x, y: box.top + p.y};
  });
}"""


def listed(page) -> list[str]:
    return page.locator("#list-results a.fw-medium").all_inner_texts()


def still(page, canvas: str = DRAWN) -> None:
    """Wait until the chart on ``canvas`` (the page's one drawn chart unless named) has
    grown its bars to their height: a bar's place read sooner is where it was then."""
    page.wait_for_function(STILL, arg=page.locator(canvas).element_handle())


def test_a_report_draws_its_chart_changes_with_a_parameter_and_opens_its_records(visit, site):
    store, today = site.store, dt.date.today()
    won = store.records("opportunity")
    old = won.create(
        {
            "name": "Won long ago",
            "account": site.acme["id"],
            "amount": Decimal("7000"),
            "close_date": today - dt.timedelta(days=500),
            "stage": "won",
            "owner": site.seller,
        }
    )
    recent = won.create(
        {
            "name": "Won lately",
            "account": site.globex["id"],
            "amount": Decimal("3000"),
            "close_date": today - dt.timedelta(days=3),
            "stage": "won",
            "owner": site.seller,
        }
    )
    assert old["id"] and recent["id"]
    page = visit.login(SELLER)
    page.click('[data-testid="reports-link"]')
    page.wait_for_load_state("networkidle")
    visit.shot("reports index")
    page.click('[data-testid="report-won_revenue_by_month"]')
    page.wait_for_selector(DRAWN)
    visit.shot("won revenue, last 12 months")
    canvas = page.locator(DRAWN)
    assert canvas.evaluate(INKED) > 500  # bars, axes and labels were painted
    # the default period (the last 12 months) holds the recent deal only
    assert page.locator('[data-testid="report-row"]').count() == 1
    assert "Won lately" not in page.content()  # figures, not records

    page.select_option('[data-testid="param-period"]', "all")
    # every month from the old deal's to the recent one's, the empty ones at zero
    first, last = old["close_date"], recent["close_date"]
    months = (last.year * 12 + last.month) - (first.year * 12 + first.month) + 1
    page.wait_for_function(
        f"() => document.querySelectorAll('[data-testid=report-row]').length === {months}"
    )
    page.wait_for_selector(DRAWN)
    still(page)
    visit.shot("won revenue, any time")
    assert "period=all" in page.url  # the URL is the report as chosen
    bars = page.locator(DRAWN).evaluate(BARS)
    assert len(bars) == months
    assert page.locator(DRAWN).evaluate(INKED) > 500

    # the first bar is the oldest month: the deal closed long ago
    page.mouse.click(bars[0]["x"], bars[0]["y"])
    page.wait_for_url(re.compile(r"/views/opportunity__all\?filter="))
    page.wait_for_load_state("networkidle")
    visit.shot("records behind the first bar")
    assert listed(page) == ["Won long ago"]
    page.wait_for_selector('[data-testid="list-count"]:has-text("1")')

    # the funnel: a click on a table cell opens the deals of that stage
    visit.go("/reports/pipeline_by_stage", "pipeline by stage")
    page.wait_for_selector(DRAWN)
    assert page.locator(DRAWN).evaluate(INKED) > 500
    cell = page.locator('[data-testid="report-row"]').first.locator('[data-measure="deals"]')
    count = int(cell.inner_text())
    cell.click()
    page.wait_for_url(re.compile(r"/views/opportunity__all\?filter="))
    page.wait_for_load_state("networkidle")
    visit.shot("records behind the first stage")
    names = listed(page)
    assert len(names) == count == 3
    assert set(names) == {"Acme renewal", "Globex rollout", "Initech pilot"}
