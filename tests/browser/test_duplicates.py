"""Possible duplicates in a real browser: typing an existing account's name (written
another way) into a new account's form shows the warning with a link to that account
before anything is saved; a name like no other shows nothing."""

from __future__ import annotations

from .support import SELLER


def test_new_account_form_warns_of_a_likely_duplicate(visit, site):
    page = visit.login(SELLER)
    visit.go("/r/account/new", "new account")
    panel = page.locator('[data-testid="possible-duplicates"]')
    assert panel.inner_text().strip() == ""

    page.fill("#f-name", "ACME corp.")
    page.locator("#f-name").dispatch_event("change")
    warning = panel.locator('[data-testid="duplicates-warning"]')
    warning.wait_for()
    visit.shot("possible duplicate shown")
    assert "Possible duplicates" in warning.inner_text()
    link = warning.locator('[data-testid="duplicate-candidate"] a')
    assert link.inner_text() == "Acme Corporation"
    assert link.get_attribute("href").endswith(f"/r/account/{site.acme['id']}")
    assert site.store.records("account").count(filter=["name", "eq", "ACME corp."]).value == 0

    page.fill("#f-name", "Zyxw Unmatched Holdings")
    page.locator("#f-name").dispatch_event("change")
    warning.wait_for(state="detached")
    visit.shot("no duplicates")
    assert panel.inner_text().strip() == ""
