"""Global search in a real browser: "/" focuses the top bar's box, typing shows the hits
grouped by entity with the matched words marked, a click opens the record; Ctrl+K brings
the box back, empty, with that record among the recent ones; the arrow keys and Enter
open a hit, and Enter in the box opens the results page."""

from __future__ import annotations

from .support import SELLER


def test_find_a_record_from_the_global_search_box(visit, site):
    page = visit.login(SELLER)
    box = page.locator("#global-search")
    menu = page.locator('[data-testid="global-search-results"]')

    page.locator("body").click()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "global-search"
    box.press_sequentially("acme")
    deal = menu.locator('[data-testid="search-hit"][data-entity="opportunity"]')
    deal.wait_for()
    visit.shot("search dropdown")
    assert menu.is_visible()
    groups = menu.locator('[data-testid="search-group"]')
    entities = [groups.nth(i).get_attribute("data-entity") for i in range(groups.count())]
    assert {"account", "opportunity"} <= set(entities)
    account = menu.locator('[data-testid="search-hit"][data-entity="account"]')
    assert account.inner_text().strip() == "Acme Corporation"
    assert deal.locator("mark").first.inner_text() == "Acme"
    assert "Acme renewal" in deal.inner_text()

    deal.click()
    page.wait_for_url(f"**/r/opportunity/{site.deal['id']}")
    page.wait_for_load_state("networkidle")
    visit.shot("record found")

    page.locator("body").click()
    page.keyboard.press("Control+k")
    assert page.evaluate("document.activeElement.id") == "global-search"
    recent = menu.locator('[data-testid="search-hit"]').first
    recent.wait_for()
    visit.shot("recent records")
    assert "Acme renewal" in recent.inner_text()
    page.keyboard.press("Escape")
    assert not menu.is_visible()

    box.focus()
    box.press_sequentially("jane")
    contact = menu.locator('[data-testid="search-hit"][data-entity="contact"]')
    contact.wait_for()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.entity") == "contact"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/r/contact/{site.jane['id']}")
    page.wait_for_load_state("networkidle")
    visit.shot("contact opened from the keyboard")

    box.fill("globex")
    box.press("Enter")
    page.wait_for_url("**/search?q=globex")
    page.wait_for_load_state("networkidle")
    visit.shot("results page")
    accounts = page.locator('[data-testid="search-group"][data-entity="account"]')
    assert "Globex" in accounts.inner_text()
