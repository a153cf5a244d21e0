"""The sales pack's "New customer" wizard in a real browser: opened from the menu, an error
shown in place, back and forth between steps keeping every value typed, the review listing
them, and Finish creating the account, its contact and the opportunity linked together,
landing on the new account."""

from __future__ import annotations

from decimal import Decimal

from .support import SELLER


def test_back_and_forth_keeps_values_and_finish_creates_the_records(visit, site):
    store = site.store
    page = visit.login(SELLER)
    page.click('[data-testid="nav-wizard-new_customer"]')
    page.wait_for_load_state("networkidle")
    visit.shot("company step")
    assert page.get_attribute('[data-testid="wizard-new_customer"]', "data-step") == "company"

    # Next without the required name: the error is shown at the field, nothing is lost
    page.fill("#f-website", "https://wizard.example.com")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    visit.shot("name missing")
    assert page.locator('[data-testid="error-name"]').is_visible()
    assert page.input_value("#f-website") == "https://wizard.example.com"

    page.fill("#f-name", "Wizardry Ltd")
    page.check("#f-with_deal")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute('[data-testid="wizard-new_customer"]', "data-step") == "contact"
    page.fill("#f-first_name", "Merlin")
    page.fill("#f-last_name", "Ambrosius")
    page.fill("#f-email", "merlin@example.com")
    visit.shot("contact typed")

    # Back to the company: what was typed on the contact step comes back after Next
    page.click('[data-testid="wizard-back"]')
    page.wait_for_load_state("networkidle")
    visit.shot("back on company")
    assert page.input_value("#f-name") == "Wizardry Ltd"
    assert page.input_value("#f-website") == "https://wizard.example.com"
    assert page.is_checked("#f-with_deal")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.input_value("#f-first_name") == "Merlin"
    assert page.input_value("#f-email") == "merlin@example.com"
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")

    assert page.get_attribute('[data-testid="wizard-new_customer"]', "data-step") == "deal"
    page.fill("#f-deal_name", "Spellbooks")
    page.fill("#f-amount", "12,500.00")
    page.fill("#f-close_date", "2027-06-30")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    visit.shot("review")
    assert page.inner_text('[data-testid="review-value-name"]') == "Wizardry Ltd"
    assert page.inner_text('[data-testid="review-value-last_name"]') == "Ambrosius"
    assert "12,500.00" in page.inner_text('[data-testid="review-value-amount"]')

    # the review links back to a step; its values are there, and Next returns onwards
    page.click('[data-testid="review-edit-contact"]')
    page.wait_for_load_state("networkidle")
    assert page.input_value("#f-last_name") == "Ambrosius"
    page.fill("#f-job_title", "Court wizard")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_load_state("networkidle")
    assert page.get_attribute('[data-testid="wizard-new_customer"]', "data-step") == "review"

    page.click('[data-testid="wizard-finish"]')
    page.wait_for_load_state("networkidle")
    visit.shot("landed on the account")
    assert "/r/account/" in page.url
    account_id = int(page.url.rstrip("/").split("/")[-1])
    account = store.records("account").get(account_id)
    assert account["name"] == "Wizardry Ltd" and account["website"] == "https://wizard.example.com"
    [contact] = store.records("contact").query(["account", "eq", account_id]).rows
    assert contact["last_name"] == "Ambrosius" and contact["job_title"] == "Court wizard"
    [deal] = store.records("opportunity").query(["account", "eq", account_id]).rows
    assert deal["contact"] == contact["id"] and deal["amount"] == Decimal("12500.00")
    assert deal["owner"] == site.seller  # written as the seller
