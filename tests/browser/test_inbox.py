"""The inbox in a real browser: a seller starts a review from the record form's button
(htmx, a toast, the page stays), the worker asks the manager, the manager sees the badge
in the top bar, opens the inbox, approves with a comment, and the badge drops without a
reload; the worker then finishes the process."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from test_ui_inbox import MANAGER, deal, install_review_pack

from xrm import workflow
from xrm.workflow import Worker

from .conftest import open_tab
from .support import SELLER, serve, toast, world


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The shared browser world with the review pack and its approver installed."""
    with world(tmp_path_factory.mktemp("browser-inbox")) as built:
        built.manager = install_review_pack(built.store, tmp_path_factory.mktemp("packs"))
        with serve(built):
            yield built


def test_approve_from_the_inbox_and_the_badge_drops(browser, visit, site, request):
    record = deal(site, "Browser review")
    # the seller presses the record's button, in a browser context of their own
    with open_tab(browser, site.url, request, "seller") as seller:
        page = seller.login(SELLER)
        seller.go(f"/r/opportunity/{record['id']}", "record with its button")
        page.click('[data-testid="actions-menu"]')  # two processes: in the Actions menu
        page.click('[data-testid="start-deal_review"]')
        started = toast(page, "Started: Request review.")
        seller.shot("started")
        assert "Started: Request review." in started.inner_text()
        assert page.url.endswith(f"/r/opportunity/{record['id']}")
    Worker(site.store).run_once()
    [pending] = workflow.pending_approvals(site.store, site.manager)

    page = visit.login(MANAGER)
    approvals = page.locator('[data-testid="inbox-approvals"]')
    assert approvals.inner_text().strip() == "1"
    assert page.locator('[data-testid="inbox-unread"]').inner_text().strip() == "1"
    page.click('[data-testid="inbox-link"]')
    page.wait_for_url(f"{site.url}/inbox")
    page.wait_for_load_state("networkidle")
    visit.shot("inbox")
    card = page.locator(f'[data-testid="approval-{pending["id"]}"]')
    assert "Deal review" in card.inner_text() and "Browser review" in card.inner_text()
    page.fill(f"#comment-{pending['id']}", "Good to go")
    page.click(f'[data-testid="approve-{pending["id"]}"]')
    card.wait_for(state="detached")
    approvals.wait_for(state="detached")  # the badge, swapped out of band
    toast(page, "Approved.")
    visit.shot("approved")
    expect(page.locator('[data-testid="inbox-link"]')).to_have_attribute("data-approvals", "0")
    assert page.locator('[data-testid="no-approvals"]').is_visible()
    Worker(site.store).run_once()
    assert site.store.records("opportunity").get(record["id"])["next_step"] == "Review approved"
