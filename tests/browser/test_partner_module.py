"""The partner module's main flow in a real browser: a partner's employee signs in to the
partner portal and sees only their own account's records (the menu, the lists, the
global search, and another partner's or a customer's record refused at its address);
they register a deal and submit it; the channel manager finds it to review, names the
customer's account and approves it on the stage bar; the approval opens an opportunity
for the customer with the partner; and the partner sees that opportunity in the portal,
not the customer's account."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from xrm.workflow import Worker

from .conftest import open_tab
from .support import PASSWORD, pick, saved_id, serve, stage_reached, swapped_in, world

ANN = "ann@northwind.test"
CHRIS = "chris@example.com"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The shared browser world with the partner pack: a channel manager; Northwind
    (gold, his) and Contoso, each with a portal user; a registration of each partner."""
    with world(tmp_path_factory.mktemp("browser-partner"), "partner") as built:
        store = built.store
        built.chris = store.add_user(
            CHRIS, "Chris Channel", password=PASSWORD, roles=["channel_manager"]
        )
        accounts = store.records("account")
        built.northwind = accounts.create(
            {
                "name": "Northwind Partners",
                "account_type": "partner",
                "partner_tier": "gold",
                "channel_manager": built.chris,
            }
        )["id"]
        built.contoso = accounts.create(
            {"name": "Contoso Resellers", "account_type": "reseller", "partner_tier": "silver"}
        )["id"]
        built.ann = store.add_user(
            ANN, "Ann North", password=PASSWORD, roles=["partner_user"], account=built.northwind
        )
        built.carl = store.add_user(
            "carl@contoso.test",
            "Carl Contoso",
            password=PASSWORD,
            roles=["partner_user"],
            account=built.contoso,
        )
        close = dt.date.today() + dt.timedelta(days=45)

        def register(user, customer, amount):
            records = store.records("deal_registration", principal=store.principal(user))
            return records.create(
                {"customer_name": customer, "estimated_amount": amount, "expected_close": close}
            )

        built.own = register(built.ann, "Fabrikam Foods", 12000)
        built.theirs = register(built.carl, "Tailspin Toys", 30000)
        with serve(built):
            yield built


@pytest.fixture
def manager(browser, site, request):
    """The channel manager's own browser."""
    with open_tab(browser, site.url, request, "manager") as tab:
        yield tab


def list_text(page) -> str:
    return page.locator('[data-testid="list-table"]').inner_text()


def test_a_partner_registers_a_deal_and_sees_the_approved_opportunity(visit, manager, site):
    store = site.store
    worker = Worker(store)

    # -- the portal: the partner's own records only
    page = visit.login(ANN)
    assert page.locator('[data-testid="nav-deal_registration"]').count() == 1
    for entity in ("support_case", "campaign", "price_list", "partner_territory"):
        assert page.locator(f'[data-testid="nav-{entity}"]').count() == 0
    visit.go("/views/deal_registrations", "registrations")
    rows = list_text(page)
    assert "Fabrikam Foods" in rows and "Tailspin Toys" not in rows
    visit.go("/e/account", "accounts")
    rows = list_text(page)
    assert "Northwind Partners" in rows
    assert "Contoso" not in rows and "Acme" not in rows and "Globex" not in rows
    visit.go("/e/opportunity", "opportunities: none yet")
    assert "Acme renewal" not in page.inner_text("main")
    # the global search finds only what the partner may read
    page.fill("#global-search", "Tailspin")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=Tailspin"))
    page.wait_for_load_state("networkidle")
    visit.shot("search for another partner's deal")
    assert "Tailspin Toys" not in page.inner_text("main")
    visit.go("/search?q=Fabrikam", "search for their own deal")
    assert "Fabrikam Foods" in page.inner_text("main")
    # another partner's registration and a customer's account, by address: refused
    for url in (f"/r/deal_registration/{site.theirs['id']}", f"/r/account/{site.acme['id']}"):
        response = page.goto(site.url + url)
        assert response.status == 404, url
        assert "Tailspin" not in page.content() and "Acme Corporation" not in page.content()
    visit.shot("refused")

    # -- registers a deal and submits it
    visit.go("/r/deal_registration/new", "new registration")
    page.fill("#f-customer_name", "Acme Corporation")
    page.fill("#f-contact_name", "Wile Coyote")
    page.fill("#f-estimated_amount", "42000")
    close = dt.date.today() + dt.timedelta(days=60)
    page.fill("#f-expected_close", close.isoformat())
    page.fill("#f-product_interest", "Rocket skates, 40 pairs")
    page.click('[data-testid="save"]')
    ident = saved_id(page, "deal_registration")
    made = store.records("deal_registration").get(ident)
    assert made["partner_account"] == site.northwind  # their account, by the role's scope
    assert page.locator('[data-testid="stage-approved"]').is_disabled()  # not theirs to do
    page.click('[data-testid="stage-submitted"]')
    stage_reached(page, "submitted")
    visit.shot("submitted")
    worker.run_once()  # the day noted, the channel manager named and told
    submitted = store.records("deal_registration").get(ident)
    assert submitted["channel_manager"] == site.chris and submitted["submitted_on"]

    # -- the channel manager reviews and approves it
    review = manager.login(CHRIS)
    manager.go("/views/registrations_to_review", "to review")
    assert "Acme Corporation" in list_text(review)
    review.locator('[data-testid="list-table"] tbody tr', has_text="Acme Corporation").get_by_role(
        "link"
    ).first.click()
    review.wait_for_url(f"{site.url}/r/deal_registration/{ident}")
    review.wait_for_load_state("networkidle")
    review.click('[data-testid="stage-approved"]')  # the customer's account is missing
    # the form asking for it is swapped in: used once htmx has settled it
    swapped_in(review.locator("#field-customer_account .ts-control"))
    manager.shot("approval needs the customer's account")
    review.get_by_role("tab", name="Review").click()
    pick(review, "customer_account", "Acme", "Acme Corporation")
    assert review.input_value("#f-status") == "approved"  # the move asked for is kept
    review.click('[data-testid="save"]')
    stage_reached(review, "approved")
    manager.shot("approved")
    worker.run_once()  # registration_approved opens the opportunity
    approved = store.records("deal_registration").get(ident)
    deal = store.records("opportunity").get(approved["opportunity"])
    assert (deal["account"], deal["partner_account"]) == (site.acme["id"], site.northwind)

    # -- the partner sees the opportunity, not the customer's account
    visit.go(f"/r/deal_registration/{ident}", "approved, with its opportunity")
    assert "Approved" in page.inner_text('[data-testid="stage-bar"]')
    visit.go("/e/opportunity", "the partner's opportunity")
    rows = list_text(page)
    assert deal["name"] in rows and "Acme renewal" not in rows
    page.locator('[data-testid="list-table"] tbody tr', has_text=deal["name"]).get_by_role(
        "link"
    ).first.click()
    page.wait_for_url(f"{site.url}/r/opportunity/{deal['id']}")
    page.wait_for_load_state("networkidle")
    page.get_by_role("tab", name="Partners").click()
    visit.shot("the opportunity in the portal")
    assert "Northwind Partners" in page.inner_text("main")
    assert page.locator('[data-testid="edit"]').count() == 0  # read-only to the partner
    assert page.locator(f'a[href$="/r/account/{site.acme["id"]}"]').count() == 0
