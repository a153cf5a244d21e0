"""Lead conversion in a real browser: a lead whose company is an existing account written
another way ("Acme Corp" for "Acme Corporation") is opened, Convert lead is chosen on its
page, the wizard starts from the lead's values, offers the account it found by the
duplicate rules with the rule that matched, the seller picks it, leaves "create a new
contact", finishes, and lands on the lead: qualified, stamped with the account, the new
contact and the opportunity; the contact belongs to the existing account; and the lead
no longer offers the conversion."""

from __future__ import annotations

from .support import SELLER


def test_a_lead_converted_with_a_duplicate_account_found_and_linked(visit, site):
    store = site.store
    accounts_before = store.records("account").count().value
    lead = store.records("lead", site.seller).create(
        {
            "first_name": "Wile",
            "last_name": "Coyote",
            "company": "Acme Corp",
            "email": "wile@desert.example.com",
            "phone": "+1 505 555 0142",
            "topic": "Rocket skates",
            "estimated_value": "4200",
            "estimated_close_date": "2027-09-01",
            "owner": site.seller,
        }
    )
    page = visit.login(SELLER)
    visit.go(f"/r/lead/{lead['id']}", "the lead")
    page.click('[data-testid="offer-convert_lead"]')
    page.wait_for_load_state("networkidle")
    visit.shot("qualify step, from the lead")
    wizard = '[data-testid="wizard-convert_lead"]'
    assert page.get_attribute(wizard, "data-step") == "qualify"
    assert page.input_value("#f-company") == "Acme Corp"
    assert page.input_value("#f-last_name") == "Coyote"
    assert page.input_value("#f-email") == "wile@desert.example.com"

    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute(wizard, "data-step") == "account"
    acme = site.acme["id"]
    found = page.locator(f'[data-testid="pick-account-{acme}"]')
    assert found.is_visible()
    matched = page.inner_text(f'[data-testid="matched-account-{acme}"]')
    assert "Same name" in matched
    assert page.is_checked('[data-testid="pick-account-new"]')  # nothing chosen for them
    found.check()
    visit.shot("the existing account picked")

    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute(wizard, "data-step") == "contact"
    assert page.locator('[data-testid="no-candidates-contact"]').is_visible()
    assert page.is_checked('[data-testid="pick-contact-new"]')
    visit.shot("no such contact: a new one")

    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute(wizard, "data-step") == "opportunity"
    assert page.input_value("#f-opportunity_name") == "Rocket skates"
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute(wizard, "data-step") == "review"
    visit.shot("review")
    assert page.inner_text('[data-testid="review-value-account"]') == "Acme Corporation"

    page.click('[data-testid="wizard-finish"]')
    page.wait_for_load_state("networkidle")
    visit.shot("back on the lead, converted")
    assert page.url.rstrip("/").endswith(f"/r/lead/{lead['id']}")
    assert page.locator('[data-testid="offer-convert_lead"]').count() == 0

    stamped = store.records("lead").get(lead["id"])
    assert stamped["status"] == "qualified"
    assert stamped["converted_account"] == acme
    contact = store.records("contact").get(stamped["converted_contact"])
    assert contact["account"] == acme and contact["last_name"] == "Coyote"
    deal = store.records("opportunity").get(stamped["converted_opportunity"])
    assert deal["account"] == acme and deal["contact"] == contact["id"]
    assert store.records("account").count().value == accounts_before  # linked, not copied
    text = page.inner_text("body")
    assert "Acme Corporation" in text and "Wile Coyote" in text
