"""The UI in a real browser over real HTTP: sign in; create a record through its form,
see a validation error, fix it, save; filter and sort a list; move a kanban card (and
see a stage rule refuse one); add a field as an administrator and find it, with no
restart, in the form, the list, the filter builder and the API; switch to Russian; and
the same pages on a phone-sized screen."""

from __future__ import annotations

import datetime as dt
import re

from playwright.sync_api import expect

from .support import ADMIN, SELLER, pick, settled, swapped_in, toast

#: SortableJS has started a drag: the ghost that follows the pointer is on the page.
DRAGGING = "() => !!document.querySelector('.sortable-fallback')"
#: The dragged item sits in the target list (SortableJS moves it there while dragging).
OVER = "([item, target]) => target.contains(item)"


def drag(page, source, target) -> None:
    """Drag with the mouse in small steps (SortableJS listens to pointer events) and drop
    once the item is over the target.  The press waits for the item to stand still (after
    a drop SortableJS slides the items around it into place for 120 ms); SortableJS starts
    the drag a tick after the first move, and moves the item into the list under the
    pointer on a 50 ms timer of its own: the drop waits for each of those, never for a
    fixed time."""
    item = source.element_handle()
    into = target.element_handle()
    assert not page.evaluate(OVER, [item, into]), "the item is in the target list already"
    source.hover()  # playwright's own wait for a still element, the pointer at its centre
    start = source.bounding_box()
    end = target.bounding_box()
    page.mouse.down()
    page.mouse.move(
        start["x"] + start["width"] / 2 + 10, start["y"] + start["height"] / 2 + 10, steps=5
    )
    page.wait_for_function(DRAGGING)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 30, steps=15)
    page.mouse.move(end["x"] + end["width"] / 2 + 1, end["y"] + 31, steps=2)
    page.wait_for_function(OVER, arg=[item, into])
    page.mouse.up()


def test_sign_in(visit):
    page = visit.login(SELLER)
    assert page.url.rstrip("/") == visit.base
    assert page.get_by_text("Welcome, Sam Seller").is_visible()
    assert page.locator('[data-testid="nav-opportunity"]').is_visible()


def test_create_a_record_see_an_error_fix_it_and_save(visit, site):
    page = visit.login(SELLER)
    visit.go("/r/opportunity/new", "new opportunity")
    page.fill("#f-name", "")
    pick(page, "account", "Acme", "Acme Corporation")
    page.fill("#f-amount", "2500")
    page.click('[data-testid="save"]')
    error = swapped_in(page.locator('[data-testid="error-close_date"]'))
    visit.shot("validation errors")
    assert error.inner_text() == "required"
    assert page.locator('[data-testid="error-name"]').inner_text() == "required"
    assert page.input_value("#f-amount") == "2500"  # what was typed is kept
    assert "Acme Corporation" in page.locator("#field-account").inner_text()
    page.fill("#f-name", "Browser deal")
    page.fill("#f-close_date", (dt.date.today() + dt.timedelta(days=10)).isoformat())
    page.click('[data-testid="save"]')
    page.wait_for_url(re.compile(r"/r/opportunity/\d+$"))
    page.wait_for_load_state("networkidle")
    visit.shot("saved")
    assert page.locator('[data-testid="record-title"]').inner_text().endswith("Browser deal")
    ident = int(page.url.rsplit("/", 1)[1])
    saved = site.store.records("opportunity").get(ident)
    assert saved["account"] == site.acme["id"] and str(saved["amount"]) == "2500.00"
    visit.go(f"/r/opportunity/{ident}/edit", "edit form")
    # the live rules: choosing "lost" shows the lost reason, required
    assert not page.locator("#field-lost_reason").is_visible()
    page.select_option("#f-stage", "lost")
    page.locator("#field-lost_reason").wait_for(state="visible")
    assert page.locator('[data-testid="required-lost_reason"]').is_visible()
    visit.shot("live rules")


def test_filter_and_sort_a_list(visit, site):
    page = visit.login(SELLER)
    visit.go("/views/open_opportunities", "open opportunities")
    rows = page.locator('[data-testid="list-table"] tbody tr')

    def first_names() -> list[str]:
        return [
            t.strip()
            for t in page.locator(
                '[data-testid="list-table"] tbody tr td:nth-child(2)'
            ).all_inner_texts()
        ]

    # the sort link is in the list swapped in: clicked before htmx binds it, the browser
    # would follow it itself
    page.click('[data-testid="sort-amount"]')
    swapped_in(page.locator('th[data-path="amount"][aria-sort="ascending"]'))
    page.click('[data-testid="sort-amount"]')
    swapped_in(page.locator('th[data-path="amount"][aria-sort="descending"]'))
    visit.shot("sorted by amount, descending")
    assert first_names()[0] == "Globex rollout"
    assert "sort=-amount" in page.url  # the state is in the address
    # a quick filter
    page.select_option('[data-testid="qf-account.industry"]', "retail")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=list-table]').innerText.includes('Globex')"
    )
    settled(page)
    visit.shot("quick filter retail")
    assert all("Acme" in n or "Browser" in n for n in first_names())
    page.select_option('[data-testid="qf-account.industry"]', "")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=list-table]').innerText.includes('Globex')"
    )
    settled(page)
    # the advanced filter builder writes the filter language
    page.click('[data-testid="advanced-toggle"]')
    page.click('[data-testid="add-condition"]')
    row = swapped_in(page.locator('[data-testid="filter-row"]').last)
    blank = row.element_handle()
    row.locator('[data-testid="filter-field"]').select_option("amount")
    # the row comes back from the server with the field's operators: wait for the swap,
    # or what is typed next goes into the row about to be replaced
    page.wait_for_function("row => !row.isConnected", arg=blank)
    settled(page)
    row = page.locator('[data-testid="filter-row"]').last
    row.locator('[data-testid="filter-op"]').select_option("gt")
    row.locator('[data-testid="filter-value"]').fill("10000")
    page.click('[data-testid="apply-filter"]')
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=list-table]').innerText.includes('Acme renewal')"
    )
    settled(page)
    visit.shot("advanced filter")
    assert first_names() == ["Globex rollout"]
    expect(rows).to_have_count(1)
    # search
    visit.go("/views/open_opportunities", "search")
    page.fill("#list-search", "initech")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=list-table]').innerText.includes('Globex')"
    )
    assert first_names() == ["Initech pilot"]
    visit.shot("searched")


def test_choose_columns_then_save_the_filtered_list_as_a_view(visit, site):
    page = visit.login(SELLER)
    visit.go("/views/open_opportunities", "open opportunities")

    def headers() -> list[str]:
        return page.eval_on_selector_all(
            '[data-testid="list-table"] thead th[data-path]', "els => els.map(e => e.dataset.path)"
        )

    assert "probability" in headers()
    page.click('[data-testid="columns-menu"]')
    page.uncheck('[data-testid="col-probability"]')
    page.uncheck('[data-testid="col-owner"]')
    page.check('[data-testid="col-account.industry"]')
    page.click('[data-testid="columns-apply"]')
    page.wait_for_function(
        "() => !document.querySelector('th[data-path=probability]')"
        " && document.querySelector('th[data-path=\"account.industry\"]')"
    )
    settled(page)
    visit.shot("columns chosen")
    assert headers() == ["name", "account", "amount", "close_date", "stage", "account.industry"]
    assert "cols=" in page.url
    # filter after the page loaded, then save: the saved view has both
    page.select_option('[data-testid="qf-account.industry"]', "retail")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=list-table]').innerText.includes('Globex')"
    )
    settled(page)  # the list's state the saved view takes is the swapped-in one's
    page.click('button[data-bs-target="#save-view"]')
    page.fill("#saved-name", "Retail, narrow")
    page.click('[data-testid="save-view-form"] button[type=submit]')
    page.wait_for_url("**saved=*")
    page.wait_for_selector('[data-testid="list-table"]')
    visit.shot("saved view")
    assert headers() == ["name", "account", "amount", "close_date", "stage", "account.industry"]
    table = page.locator('[data-testid="list-table"]').inner_text()
    assert "Acme renewal" in table and "Globex" not in table  # the filter came along
    # reset brings the view's own columns back
    page.click('[data-testid="columns-menu"]')
    page.click('[data-testid="columns-reset"]')
    page.wait_for_selector('th[data-path="probability"]')
    assert not visit.errors, visit.errors


def test_move_a_kanban_card(visit, site):
    store = site.store
    deal = store.records("opportunity", site.seller).create(
        {
            "name": "Kanban card",
            "account": site.acme["id"],
            "contact": site.jane["id"],
            "close_date": dt.date.today(),
            "owner": site.seller,
        }
    )
    stuck = store.records("opportunity", site.seller).create(
        {
            "name": "Stuck card",
            "account": site.acme["id"],
            "close_date": dt.date.today(),
            "owner": site.seller,
        }
    )
    page = visit.login(SELLER)
    visit.go("/views/pipeline_board", "sales funnel")
    card = page.locator(f'[data-testid="card-{deal["id"]}"]')
    target = page.locator('[data-testid="column-qualification"] .xrm-cards')
    drag(page, card, target)
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=column-qualification] [data-testid=card-{deal['id']}]')"
    )
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=card-{deal['id']}]').dataset.version === '2'"
    )
    visit.shot("card moved")
    assert store.records("opportunity").get(deal["id"])["stage"] == "qualification"
    # qualification requires a contact: the move is refused, the card goes back, the reason is shown
    card = page.locator(f'[data-testid="card-{stuck["id"]}"]')
    drag(page, card, target)
    refused = toast(page, "Contact: required for stage Qualification", level="danger")
    visit.shot("card refused")
    assert "Contact: required for stage Qualification" in refused.inner_text()
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=column-prospecting] [data-testid=card-{stuck['id']}]')"
    )
    assert store.records("opportunity").get(stuck["id"])["stage"] == "prospecting"


def test_an_administrator_adds_a_field_and_sees_it_everywhere(visit, site):
    page = visit.login(ADMIN)
    visit.go("/admin/entities/account", "fields of account")
    page.fill("#nf-name", "segment")
    page.select_option("#nf-type", "choice")
    page.fill("#nf-en", "Segment")
    page.fill("#nf-ru", "Сегмент")
    page.fill(
        "#nf-options",
        "smb | Small business | Малый бизнес\nenterprise | Enterprise | Крупный бизнес",
    )
    page.click('[data-testid="review-field"]')
    page.wait_for_selector('[data-testid="plan-title"]')
    visit.shot("plan")
    assert "+ column account.segment" in page.locator('[data-testid="plan-added"]').inner_text()
    page.click('[data-testid="apply"]')
    page.wait_for_url(re.compile(r"/admin/entities/account$"))
    visit.shot("applied")
    assert page.locator('tr[data-field="segment"]').is_visible()
    # the form
    visit.go(f"/r/account/{site.acme['id']}/edit", "form with the new field")
    assert page.locator('[data-testid="field-segment"]').is_visible()
    page.select_option("#f-segment", "enterprise")
    with page.expect_navigation():
        page.click('[data-testid="save"]')
    page.wait_for_load_state("networkidle")
    # the list
    visit.go("/views/all_accounts", "list with the new field")
    assert page.locator('th[data-path="segment"]').is_visible()
    assert "Enterprise" in page.locator('[data-testid="list-table"]').inner_text()
    # the filter builder
    page.click('[data-testid="advanced-toggle"]')
    page.click('[data-testid="add-condition"]')
    row = swapped_in(page.locator('[data-testid="filter-row"]').last)
    assert row.locator('[data-testid="filter-field"] option[value="segment"]').count() == 1
    row.locator('[data-testid="filter-field"]').select_option("segment")
    page.wait_for_selector('datalist#fv-segment option[value="smb"]', state="attached")
    visit.shot("filter builder with the new field")
    # the API
    record = page.request.get(f"{visit.base}/api/v1/account/{site.acme['id']}").json()
    assert record["segment"] == "enterprise"
    meta = page.request.get(f"{visit.base}/api/v1/meta/entities/account").text()
    assert "segment" in meta


def test_switch_the_ui_to_russian(visit, site):
    page = visit.login(SELLER)
    visit.go(f"/r/opportunity/{site.deal['id']}/edit", "form in English")
    assert page.locator('[data-testid="save"]').inner_text() == "Save"
    page.click("#user-menu")
    page.click('[data-testid="language-ru"]')
    page.wait_for_load_state("networkidle")
    visit.shot("form in Russian")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.locator('[data-testid="save"]').inner_text() == "Сохранить"
    assert "Контрагент" in page.locator("#field-account label").inner_text()
    visit.go("/views/open_opportunities", "list in Russian")
    assert "1\u00a0200,50\u00a0$" in page.locator('[data-testid="list-table"]').inner_text()
    page.click("#user-menu")
    page.click('[data-testid="language-en"]')
    page.wait_for_load_state("networkidle")
    assert page.locator("html").get_attribute("lang") == "en"


def test_phone_sized_screen(browser, site, request):
    from .conftest import PHONE, open_tab

    with open_tab(browser, site.url, request, **PHONE) as tab:
        page = tab.page
        tab.login(SELLER)
        tab.go("/views/open_opportunities", "list on a phone")
        assert not page.locator("#sidebar").is_visible()
        page.click('[aria-controls="sidebar"]')
        page.locator("#sidebar").wait_for(state="visible")
        tab.shot("menu on a phone")
        tab.go(f"/r/opportunity/{site.deal['id']}/edit", "form on a phone")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 400  # nothing forces a sideways scroll


def test_an_administrator_rearranges_a_form_by_dragging(visit, site):
    page = visit.login(ADMIN)
    visit.go("/admin/forms/contact", "form layout editor")
    field = page.locator('[data-testid="palette"] [data-testid="layout-field-full_name"]')
    if field.count() == 0:  # already placed by the pack: take another field off the form first
        field = page.locator('[data-testid="layout-field-job_title"]')
    column = page.locator('[data-testid="layout-column"]').first
    in_palette = page.locator('[data-testid="palette"] [data-testid="layout-field-mobile"]')
    drag(
        page,
        page.locator('[data-testid="layout-field-mobile"]'),
        page.locator('[data-testid="palette"]'),
    )
    assert in_palette.count() == 1
    drag(page, field, column)
    visit.shot("rearranged")
    page.click('[data-testid="review-layout"]')
    page.wait_for_selector('[data-testid="plan-title"]')
    visit.shot("layout plan")
    page.click('[data-testid="apply"]')
    page.wait_for_url(re.compile(r"/admin/forms/contact$"))
    placed = [item.field for item in site.store.refresh().form_for("contact").fields()]
    assert "mobile" not in placed
    visit.go(f"/r/contact/{site.jane['id']}", "contact form after the change")
    assert not page.locator('[data-testid="field-mobile"]').count()
