"""Merging two contacts in a real browser: from the contacts list to the duplicates view,
Compare and merge, a value picked from the other record, confirmed; the kept record has
it and the other record's task; then the merge is undone from the kept record's history
and the other contact is back with its task."""

from __future__ import annotations

from .support import SELLER


def test_merge_two_contacts_and_undo(visit, site):
    store, jane = site.store, site.jane
    dupe = store.records("contact", site.seller).create(
        {
            "first_name": "Jane",
            "last_name": "Doe",
            "email": "Jane+web@acme-corp.com",
            "job_title": "Buyer",
            "mobile": "+12125550199",
            "owner": site.seller,
        }
    )
    task = store.records("task", site.seller).create(
        {
            "subject": "Send Jane the price list",
            "regarding": {"entity": "contact", "id": dupe["id"]},
        }
    )
    page = visit.login(SELLER)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations

    visit.go("/views/all_contacts", "contacts")
    page.click('[data-testid="duplicates-link"]')
    page.wait_for_load_state("networkidle")
    group = page.locator('[data-testid="duplicate-group"]').filter(has_text="Jane Doe")
    assert group.locator('[data-testid="duplicate-member"]').count() == 2
    visit.shot("duplicates view")
    group.locator('[data-testid="compare-and-merge"]').click()
    page.wait_for_load_state("networkidle")
    visit.shot("merge page")
    assert page.locator('[data-testid="master-a"]').is_checked()
    assert "Tasks: 1" in page.locator('[data-testid="related-b"]').inner_text()
    # Jane has no job title: the other record's is offered first; the email stays hers
    assert page.locator('[data-testid="pick-job_title-b"]').is_checked()
    assert page.locator('[data-testid="pick-email-a"]').is_checked()
    page.check('[data-testid="pick-mobile-a"]')  # keep hers (empty) over the other's
    page.click('[data-testid="merge-submit"]')
    page.wait_for_url(f"**/r/contact/{jane['id']}")
    page.wait_for_load_state("networkidle")
    visit.shot("merged")
    kept = store.records("contact").get(jane["id"])
    assert (kept["job_title"], kept["email"], kept["mobile"]) == (
        "Buyer",
        "jane@acme-corp.com",
        None,
    )
    assert store.records("contact").count(filter=["id", "eq", dupe["id"]]).value == 0
    assert store.records("task").get(task["id"])["regarding"]["id"] == jane["id"]

    entry = page.locator('[data-testid="timeline-merge"]')
    entry.wait_for()
    assert "merged Jane Doe into this record" in entry.inner_text()
    entry.locator('[data-testid="merge-details"]').click()
    page.wait_for_load_state("networkidle")
    visit.shot("merge details")
    assert "Jane+web@acme-corp.com" in page.locator('[data-testid="merged-values"]').inner_text()
    page.click('[data-testid="undo-merge"]')
    page.wait_for_url(f"**/r/contact/{dupe['id']}")
    page.wait_for_load_state("networkidle")
    visit.shot("undone")
    back = store.records("contact").get(dupe["id"])
    assert (back["email"], back["job_title"]) == ("Jane+web@acme-corp.com", "Buyer")
    assert store.records("contact").get(jane["id"])["job_title"] is None
    assert store.records("task").get(task["id"])["regarding"]["id"] == dupe["id"]
