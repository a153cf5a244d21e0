"""The read view in a real browser: a record opens as a page to read; a field is edited in
place (a text by its pencil, an option by a click on its value, a lookup through its
type-ahead), saved without leaving the page, a wrong value kept with its message; Edit
opens the full form, whose Save comes back to the read view."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from .support import SELLER, pick, swapped_in


def deal(site, name: str):
    return site.store.records("opportunity", site.seller).create(
        {
            "name": name,
            "account": site.acme["id"],
            "amount": Decimal("1200.50"),
            "close_date": dt.date.today() + dt.timedelta(days=12),
            "owner": site.seller,
        }
    )


def test_open_a_record_and_edit_fields_in_place(visit, site):
    record = deal(site, "Inline deal")
    page = visit.login(SELLER)
    url = f"/r/opportunity/{record['id']}"
    visit.go(url, "read view")
    assert page.locator('[data-testid="record-view"]').is_visible()
    assert "$1,200.50" in page.locator('[data-testid="highlight-amount"]').inner_text()
    assert page.locator("#f-next_step").count() == 0  # values, not inputs

    # a text field by its pencil; each swap (the field's form, the page after a save) is
    # waited for until htmx has settled it: before, its buttons are not wired yet
    page.click('[data-testid="pencil-next_step"]')
    swapped_in(page.locator("#f-next_step"))
    visit.shot("next step being edited")
    page.fill("#f-next_step", "Send the proposal")
    page.click('#field-next_step [data-testid="inline-save"]')
    value = swapped_in(page.locator('[data-testid="value-next_step"]'))
    visit.shot("next step saved")
    assert value.inner_text() == "Send the proposal"
    assert page.url.endswith(url)  # still on the page
    saved = site.store.records("opportunity").get(record["id"])
    assert saved["next_step"] == "Send the proposal"
    assert saved["version"] == record["version"] + 1

    # an option by a click on its value: the next save carries the new version
    page.click('[data-testid="value-forecast_category"]')
    swapped_in(page.locator("#f-forecast_category"))
    page.select_option("#f-forecast_category", "commit")
    page.click('#field-forecast_category [data-testid="inline-save"]')
    swapped_in(page.locator('[data-testid="value-forecast_category"]', has_text="Commit"))
    assert site.store.records("opportunity").get(record["id"])["forecast_category"] == "commit"

    # a lookup through its type-ahead
    page.click('[data-testid="pencil-account"]')
    swapped_in(page.locator("#field-account .ts-control"))
    pick(page, "account", "Glob", "Globex")
    page.click('#field-account [data-testid="inline-save"]')
    swapped_in(page.locator('[data-testid="value-account"] a', has_text="Globex"))
    visit.shot("account changed")
    assert site.store.records("opportunity").get(record["id"])["account"] == site.globex["id"]

    # Escape leaves a field as it was
    page.click('[data-testid="pencil-next_step"]')
    swapped_in(page.locator("#f-next_step"))
    page.fill("#f-next_step", "Never mind")
    page.press("#f-next_step", "Escape")
    swapped_in(page.locator('[data-testid="value-next_step"]', has_text="Send the proposal"))
    assert site.store.records("opportunity").get(record["id"])["next_step"] == "Send the proposal"

    # a wrong value stays in its input with the message; Cancel brings the value back
    page.click('[data-testid="pencil-amount"]')
    swapped_in(page.locator("#f-amount"))
    page.fill("#f-amount", "twelve")
    page.click('#field-amount [data-testid="inline-save"]')
    error = swapped_in(page.locator('[data-testid="error-amount"]'))
    visit.shot("amount refused")
    assert error.inner_text() == "expected a number"
    assert page.input_value("#f-amount") == "twelve"
    page.click('#field-amount [data-testid="inline-cancel"]')
    swapped_in(page.locator('[data-testid="value-amount"]'))
    assert "$1,200.50" in page.locator('[data-testid="value-amount"]').inner_text()
    assert site.store.records("opportunity").get(record["id"])["amount"] == Decimal("1200.50")


def test_edit_opens_the_full_form_and_save_returns_to_the_read_view(visit, site):
    record = deal(site, "Full form deal")
    page = visit.login(SELLER)
    visit.go(f"/r/opportunity/{record['id']}", "read view")
    with page.expect_navigation():
        page.click('[data-testid="edit"]')
    page.wait_for_load_state("networkidle")
    visit.shot("edit form")
    assert page.url.endswith(f"/r/opportunity/{record['id']}/edit")
    assert page.locator('[data-testid="record-form"]').is_visible()
    page.fill("#f-next_step", "From the full form")
    with page.expect_navigation():
        page.click('[data-testid="save"]')
    page.wait_for_url(re.compile(rf"/r/opportunity/{record['id']}$"))
    page.wait_for_load_state("networkidle")
    visit.shot("back on the read view")
    assert page.locator('[data-testid="value-next_step"]').inner_text() == "From the full form"


def test_the_read_view_fits_a_phone(browser, site, request):
    from .conftest import PHONE, open_tab

    with open_tab(browser, site.url, request, **PHONE) as tab:
        tab.login(SELLER)
        page = tab.go(f"/r/opportunity/{site.deal['id']}", "read view on a phone")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 400
