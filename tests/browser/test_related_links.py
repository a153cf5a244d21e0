"""A many-to-many related list in a real browser: on a record's read view, "Add existing"
searches the target entity and links the records chosen (several at once), "Remove"
unlinks one; each answers with the record page and a toast, without leaving the page."""

from __future__ import annotations

import pytest

from .support import SELLER, pick, serve, settled, swapped_in, toast, world

GUEST_LIST = """
entity: guest_list
label: {en: Guest list, ru: Список гостей}
plural: {en: Guest lists, ru: Списки гостей}
title: name
fields:
  name:   {type: text, required: true, label: {en: Name, ru: Название}}
  guests: {type: many_to_many, to: contact, label: {en: Guests, ru: Гости}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The browser tests' site with an entity whose generated form lists its guests."""
    root = tmp_path_factory.mktemp("browser-related-links")
    pack = root / "guests"
    (pack / "entities").mkdir(parents=True)
    (pack / "solution.yaml").write_text(
        "solution: guests\nversion: 1.0.0\ndepends: {core: '>=1.0'}\n", encoding="utf-8"
    )
    (pack / "entities" / "guest_list.yaml").write_text(GUEST_LIST, encoding="utf-8")
    with world(root) as built:
        built.store.install([pack])
        with serve(built):
            yield built


def test_add_existing_records_then_remove_one(visit, site):
    contacts = site.store.records("contact", site.seller)
    ann, bob = (
        contacts.create({"first_name": first, "last_name": "Guest", "owner": site.seller})
        for first in ("Annika", "Boris")
    )
    party = site.store.records("guest_list", site.seller).create(
        {"name": "Launch party", "owner": site.seller}
    )
    page = visit.login(SELLER)
    visit.go(f"/r/guest_list/{party['id']}", "guest list")
    swapped_in(page.locator('[data-testid="link-form-guests"]'))
    # nothing chosen: refused with its message, the page stays as it was
    page.click('[data-testid="link-add-guests"]')
    toast(page, "Choose at least one record.", "danger")
    swapped_in(page.locator('[data-testid="link-form-guests"]'))
    visit.shot("nothing chosen")

    pick(page, "guests", "Annika", "Annika Guest", close=True, within="#link-guests")
    pick(page, "guests", "Boris", "Boris Guest", close=True, within="#link-guests")
    visit.shot("two guests chosen")
    page.click('[data-testid="link-add-guests"]')
    toast(page, "Added to Guests: 2.")
    swapped_in(page.locator(f'[data-testid="related-row-{bob["id"]}"]'))
    visit.shot("two guests linked")
    assert page.locator(f'[data-testid="related-row-{ann["id"]}"]').is_visible()
    assert page.url.endswith(f"/r/guest_list/{party['id']}")
    stored = site.store.records("guest_list").get(party["id"])
    assert stored["guests"] == sorted([ann["id"], bob["id"]])

    page.click(f'[data-testid="unlink-{ann["id"]}"]')
    toast(page, "Removed from Guests: 1.")
    swapped_in(page.locator(f'[data-testid="related-row-{bob["id"]}"]'))
    settled(page)
    visit.shot("one guest removed")
    assert page.locator(f'[data-testid="related-row-{ann["id"]}"]').count() == 0
    assert site.store.records("guest_list").get(party["id"])["guests"] == [bob["id"]]
    assert site.store.records("contact").get(ann["id"])["first_name"] == "Annika"
