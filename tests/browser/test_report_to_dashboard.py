"""A report made in the browser put on a personal dashboard, in a real browser: a seller
builds a report by clicking, saves it, adds its chart to a new "My dashboard" from the
report page, opens the dashboard, and a click on a bar lands on the list of the records
behind it, as many as the bar says."""

from __future__ import annotations

import json
import re

from .support import SELLER
from .test_report_builder import acme_expansion
from .test_reports import BARS, DRAWN, listed, still


def test_build_add_to_a_new_dashboard_and_click_a_bar(visit, site):
    acme_expansion(site)
    page = visit.login(SELLER)
    visit.go("/reports/new", "builder")
    page.wait_for_load_state("networkidle")  # app.js listens before the choice is made
    with page.expect_navigation():
        page.select_option('[data-testid="builder-entity"]', "opportunity")
    page.wait_for_selector('[data-testid="report-builder"]')
    page.select_option('[data-testid="builder-group-0"]', "account.name")
    page.wait_for_selector('#builder-preview [data-testid="report-row"]')
    page.select_option('[data-testid="builder-chart"]', "bar")
    page.wait_for_selector(f"#builder-preview {DRAWN}")
    page.fill('[data-testid="builder-title"]', "Deals per account")
    page.click('[data-testid="builder-save"]')
    page.wait_for_url(re.compile(r"/reports/deals_per_account$"))
    visit.shot("the saved report")

    # Add to dashboard: a new one, the chart, the whole width
    page.click('[data-testid="add-to-dashboard-open"]')
    assert page.locator('[data-testid="add-dashboard"]').input_value() == "new"
    page.select_option('[data-testid="add-widget"]', "chart")
    page.select_option('[data-testid="add-width"]', "12")
    visit.shot("add to dashboard")
    page.click('[data-testid="add-to-dashboard-save"]')
    page.wait_for_url(re.compile(r"/dashboards/my_dashboard$"))
    page.wait_for_selector(DRAWN)
    still(page)  # the bars have grown to their height
    visit.shot("my dashboard")
    assert page.locator('[data-testid="dashboard-title"]').inner_text() == "My dashboard"
    assert page.locator('[data-testid="widget-link"]').inner_text() == "Deals per account"
    dashboard = site.store.refresh().dashboards["my_dashboard"]
    assert dashboard.owner == SELLER and dashboard.widgets[0].report == "deals_per_account"

    chart = json.loads(page.locator("#widget-chart-data-0").text_content())
    first = chart["labels"][0]
    figure = chart["datasets"][0]["data"][0]
    bars = page.locator(DRAWN).evaluate(BARS)
    assert len(bars) == len(chart["labels"]) >= 2, bars
    page.mouse.click(bars[0]["x"], bars[0]["y"])
    page.wait_for_url(re.compile(r"/views/opportunity__all\?filter="))
    page.wait_for_load_state("networkidle")
    visit.shot(f"records behind {first}'s bar")
    names = listed(page)
    assert len(names) == figure >= 2
    page.wait_for_selector(f'[data-testid="list-count"]:has-text("{figure}")')
    # the seller's Acme deals, the one made here among them (as the builder test finds)
    assert first == "Acme Corporation" and "Acme expansion" in names
