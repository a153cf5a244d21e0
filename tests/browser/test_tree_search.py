"""Searching a tree view in a real browser: typing in the box replaces the tree with the
matches and their paths (htmx) and puts the query in the address; Clear returns to the
plain tree, and the back button brings the search back."""

from __future__ import annotations

from .support import SELLER, settled


def test_typing_in_the_tree_search_shows_the_match_with_its_path(visit, site):
    accounts = site.store.records("account", site.seller)
    nordic = accounts.create({"name": "Acme Nordic", "parent": site.acme["id"]})
    harbour = accounts.create({"name": "Nordic Harbour", "parent": nordic["id"]})
    accounts.create({"name": "Acme Baltic", "parent": site.acme["id"]})
    page = visit.login(SELLER)
    visit.go("/views/account_hierarchy", "hierarchy")
    tree = page.locator('[data-testid="tree"]')
    assert not tree.get_by_text("Nordic Harbour").is_visible()

    page.fill("#tree-search", "harbo")
    match = tree.locator(f'[data-testid="tree-node"][data-id="{harbour["id"]}"][data-match="1"]')
    match.wait_for()
    settled(page)
    visit.shot("found")
    assert page.url.endswith("/views/account_hierarchy?q=harbo")
    assert match.locator("mark").inner_text() == "Harbo"
    path = tree.locator('[data-testid="tree-node"][data-context="1"] > .xrm-tree-row')
    assert [t.strip() for t in path.locator('[data-testid="tree-title"]').all_inner_texts()] == [
        "Acme Corporation",
        "Acme Nordic",
    ]
    assert not tree.get_by_text("Acme Baltic").count()  # a sibling that does not match
    assert page.locator("#tree-search").evaluate("el => el === document.activeElement")

    page.click('[data-testid="tree-search-clear"]')
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/views/account_hierarchy")
    assert page.locator("#tree-search").input_value() == ""
    assert not tree.locator("[data-match]").count()
    acme = tree.locator(f'[data-testid="tree-node"][data-id="{site.acme["id"]}"]')
    assert acme.get_attribute("aria-expanded") == "false"

    page.go_back()
    match.wait_for()
    visit.shot("back")
    assert page.locator("#tree-search").input_value() == "harbo"
