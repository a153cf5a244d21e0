"""The report builder in a real browser: a seller builds a report by clicking (the records,
a group, a measure, a chart), sees the live preview change with each choice, saves it,
opens it from the index, and a click on a bar lands on the list of exactly the records
the bar counts."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from .support import SELLER
from .test_reports import BARS, DRAWN, listed, still

ROWS = '#builder-preview [data-testid="report-row"]'


def acme_expansion(site) -> dict:
    """The seller's open deal of 800 with Acme, closing in nine days (a second bar)."""
    return site.store.records("opportunity", site.seller).create(
        {
            "name": "Acme expansion",
            "account": site.acme["id"],
            "amount": Decimal("800"),
            "close_date": dt.date.today() + dt.timedelta(days=9),
            "owner": site.seller,
        }
    )


def test_build_preview_save_open_and_click_a_bar(visit, site):
    acme_expansion(site)
    page = visit.login(SELLER)
    visit.go("/reports", "reports index")
    page.click('[data-testid="report-new"]')
    page.wait_for_url(re.compile(r"/reports/new$"))
    page.wait_for_load_state("networkidle")  # app.js listens before the choice is made
    with page.expect_navigation():  # the records chosen, the page offers their fields
        page.select_option('[data-testid="builder-entity"]', "opportunity")
    page.wait_for_selector('[data-testid="report-builder"]')
    visit.shot("builder on opportunities")

    # a group: one row per account, counted (the preview follows every change)
    page.select_option('[data-testid="builder-group-0"]', "account.name")
    page.wait_for_function(
        "() => document.querySelectorAll('#builder-preview [data-testid=report-row]').length === 3"
    )
    heads = page.locator(f"{ROWS} th").all_inner_texts()
    # Initech is the administrator's account, which the seller may not read: its name
    # reads as empty for them, as their list shows it
    assert heads == ["Acme Corporation", "Globex", "(empty)"]
    counts = page.locator(f'{ROWS} [data-measure="records"]').all_inner_texts()
    assert counts == ["2", "1", "1"]

    # a second measure: the preview gains its column
    page.select_option('[data-testid="builder-measure-kind-1"]', "sum")
    page.select_option('[data-testid="builder-measure-field-1"]', "amount")
    page.wait_for_selector(f'{ROWS} [data-measure="sum_amount"]')
    assert page.locator(f'{ROWS} [data-measure="sum_amount"]').first.inner_text() == "$2,000.50"

    # a chart kind the report cannot draw is marked at the chart, then a bar chart is drawn
    page.select_option('[data-testid="builder-chart"]', "stacked_bar")
    page.wait_for_selector('[data-testid="problem-chart"]:has-text("needs a pivot")')
    page.select_option('[data-testid="builder-chart"]', "bar")
    page.wait_for_selector(f"#builder-preview {DRAWN}")
    assert page.locator('[data-testid="problem-chart"]').inner_text() == ""
    page.fill('[data-testid="builder-title"]', "Deals by account")
    visit.shot("preview with a bar chart")

    page.click('[data-testid="builder-save"]')
    page.wait_for_url(re.compile(r"/reports/deals_by_account$"))
    page.wait_for_selector(DRAWN)
    visit.shot("the saved report")
    assert page.locator('[data-testid="report-title"]').inner_text() == "Deals by account"
    visit.go("/reports", "index with the new report")
    page.click('[data-testid="report-deals_by_account"]')
    page.wait_for_selector(DRAWN)
    still(page)  # the bars have grown to their height

    bars = page.locator(DRAWN).evaluate(BARS)
    assert len(bars) == 3, bars
    page.mouse.click(bars[0]["x"], bars[0]["y"])  # Acme's bar: two deals
    page.wait_for_url(re.compile(r"/views/opportunity__all\?filter="))
    page.wait_for_load_state("networkidle")
    visit.shot("records behind Acme's bar")
    assert sorted(listed(page)) == ["Acme expansion", "Acme renewal"]
    page.wait_for_selector('[data-testid="list-count"]:has-text("2")')
