"""Quick create in a real browser: from a record form's lookup, "+ New" opens the target
entity's short form (xrm.forms' quick-create form) in a dialog; an empty required field is
refused in place; the saved record is selected in the lookup, and the form saves with it."""

from __future__ import annotations

from .support import SELLER, saved_id, swapped_in


def test_create_an_account_from_the_contacts_lookup(visit, site):
    page = visit.login(SELLER)
    visit.go("/r/contact/new", "new contact")
    dialog = page.locator('[data-testid="quick-dialog"]')
    assert not dialog.is_visible()

    page.click('[data-testid="quick-create-account"]')
    # the dialog's form posts through htmx once htmx has settled it (before, a click on
    # Save would post the whole page away)
    form = swapped_in(dialog.locator('[data-testid="quick-create-form"]'))
    visit.shot("quick create dialog")
    assert dialog.is_visible()
    assert form.locator("#q-f-name").is_visible()
    assert form.locator("#q-f-annual_revenue").count() == 0  # a short form, not the main one

    form.locator('[data-testid="quick-save"]').click()
    error = swapped_in(dialog.locator('[data-testid="quick-error-name"]'))
    visit.shot("quick create refused")
    assert error.inner_text() == "required"
    assert site.store.records("account").count(filter=["name", "eq", "Quickly Made Ltd"]).value == 0

    dialog.locator("#q-f-name").fill("Quickly Made Ltd")
    dialog.locator('[data-testid="quick-save"]').click()
    dialog.wait_for(state="hidden")
    visit.shot("account selected")
    made = site.store.records("account").query(filter=["name", "eq", "Quickly Made Ltd"]).rows
    assert len(made) == 1
    selected = page.locator("#field-account .ts-control .item")
    assert selected.inner_text() == "Quickly Made Ltd"
    assert page.locator("#f-account").input_value() == str(made[0]["id"])

    page.fill("#f-first_name", "Quinn")
    page.fill("#f-last_name", "Quick")
    page.click('[data-testid="save"]')
    ident = saved_id(page, "contact")  # the save answers through htmx, then the page moves
    visit.shot("contact saved")
    contact = site.store.records("contact").get(ident)
    assert contact["last_name"] == "Quick" and contact["account"] == made[0]["id"]


def test_quick_create_needs_the_right_to_create_and_a_csrf_token(site):
    from .support import READER, Client, make_app

    app = make_app(site.store)
    reader = Client(app).login(READER)  # read-only role: may not create accounts
    assert reader.get("/r/account/quick-create?for=account").status_code == 403
    assert (
        reader.post("/r/account/quick-create", {"_fields": "name", "name": "X"}).status_code == 403
    )

    seller = Client(app).login(SELLER)
    refused = seller.post("/r/account/quick-create", {"_fields": "name", "name": "X"}, csrf=False)
    assert refused.status_code in (400, 403)
    made = seller.post(
        "/r/account/quick-create", {"_fields": "name", "name": "Made By Post", "for": "account"}
    )
    assert made.status_code == 200
    page = made.get_data(as_text=True)
    assert 'data-target="account"' in page and 'data-text="Made By Post"' in page
    # a "for" that is not a field name is not echoed into the page's script hooks
    odd = seller.post(
        "/r/account/quick-create", {"_fields": "name", "name": "Odd", "for": '"><script>'}
    )
    assert 'data-target=""' in odd.get_data(as_text=True)
