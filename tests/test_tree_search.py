"""Searching a tree view through the real WSGI application: a match deep in the tree shows
the path from its top level (context, not matches) and no other siblings, a parent the
user may not read is never named or linked (the path starts below it), only records the
user may read match, the matches are bounded with a count of them all, a search with no
match says so, and Clear leads back to the plain tree."""

from __future__ import annotations

import html
import re

import pytest
from browser.support import PASSWORD, SOLUTIONS, Client, opened

from xrm.web.ui.tree_search import MATCHES

SELLER = "seller@example.com"
OUTSIDER = "outsider@example.com"
ADMIN = "admin@example.com"
BULK = MATCHES + 5


class World:
    def __init__(self, store):
        self.store = store
        self.admin = store.add_user(
            "admin@example.com", "Ada", password=PASSWORD, roles=["administrator"]
        )
        self.seller = store.add_user(
            SELLER, "Sam", password=PASSWORD, roles=["user"], teams=["east"]
        )
        self.outsider = store.add_user(
            OUTSIDER, "Olga", password=PASSWORD, roles=["user"], teams=["west"]
        )
        mine = store.records("account", self.seller)
        as_admin = store.records("account", self.admin)
        # Hidden Holding (outsider's) > Acme Group > Acme East > Acme East Retail > Zephyr Kiosk
        #                                          > Acme West
        #                                          > Shadow Unit (outsider's) > Zephyr Depot
        #                             Acme East > Zephyr Secret (outsider's)
        self.holding = as_admin.create({"name": "Hidden Holding", "owner": self.outsider})
        self.acme = mine.create({"name": "Acme Group"})
        as_admin.update(self.acme["id"], {"parent": self.holding["id"]})
        self.east = mine.create({"name": "Acme East", "parent": self.acme["id"]})
        self.west = mine.create({"name": "Acme West", "parent": self.acme["id"]})
        self.retail = mine.create({"name": "Acme East Retail", "parent": self.east["id"]})
        self.kiosk = mine.create({"name": "Zephyr Kiosk", "parent": self.retail["id"]})
        self.shadow = as_admin.create(
            {"name": "Shadow Unit", "parent": self.acme["id"], "owner": self.outsider}
        )
        self.depot = mine.create({"name": "Zephyr Depot"})
        as_admin.update(self.depot["id"], {"parent": self.shadow["id"]})
        self.secret = as_admin.create(
            {"name": "Zephyr Secret", "parent": self.east["id"], "owner": self.outsider}
        )
        self.lone = mine.create({"name": "Lone Ltd"})
        for number in range(BULK):
            mine.create({"name": f"Widget {number:03d}", "parent": self.lone["id"]})


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with opened(tmp_path_factory.mktemp("tree-search"), [SOLUTIONS / "core"]) as store:
        yield World(store)


@pytest.fixture
def seller(app):
    return Client(app).login(SELLER)


def text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    return response.get_data(as_text=True)


def nodes(page: str) -> list[tuple[str, str, str]]:
    """Each node as (its title without markup, match/context/plain, its depth)."""
    found = []
    for item in re.finditer(
        r'<li role="treeitem"[^>]*?aria-level="(\d+)"[^>]*?data-testid="tree-node" data-id="\d+"'
        r'( data-match="1"| data-context="1")?>.*?data-testid="tree-title">(.*?)</a>',
        page,
        re.S,
    ):
        level, kind, title = item.groups()
        role = "match" if "match" in (kind or "") else "context" if kind else "plain"
        found.append((html.unescape(re.sub(r"<[^>]+>", "", title)), role, level))
    return found


def test_a_match_deep_in_the_tree_shows_its_path_and_no_siblings(w, seller):
    page = text(seller.get("/views/account_hierarchy?q=kiosk"))
    assert nodes(page) == [
        ("Acme Group", "context", "1"),
        ("Acme East", "context", "2"),
        ("Acme East Retail", "context", "3"),
        ("Zephyr Kiosk", "match", "4"),
    ]
    # the matched word is marked; siblings that do not match are not loaded
    assert "<mark>Kiosk</mark>" in page
    assert "Acme West" not in page and "Lone Ltd" not in page
    # the search box keeps the query, and the note counts the matches
    assert re.search(r'id="tree-search" name="q" value="kiosk"', page)
    assert "Found for “kiosk”: 1" in page


def test_an_ancestor_the_user_may_not_read_is_never_named_or_linked(w, seller):
    page = text(seller.get("/views/account_hierarchy?q=zephyr"))
    # Zephyr Depot sits under the outsider's Shadow Unit: the path starts below it, so
    # Acme Group (above the hidden unit) is not on that path either; Zephyr Secret is the
    # outsider's and does not match for the seller
    assert nodes(page) == [
        ("Acme Group", "context", "1"),
        ("Acme East", "context", "2"),
        ("Acme East Retail", "context", "3"),
        ("Zephyr Kiosk", "match", "4"),
        ("Zephyr Depot", "match", "1"),
    ]
    for hidden in (w.holding, w.shadow, w.secret):
        assert hidden["name"] not in page
        assert f'data-id="{hidden["id"]}"' not in page
        assert f"/r/account/{hidden['id']}" not in page
    assert "Found for “zephyr”: 2" in page
    # the administrator reads everything: the whole paths, the outsider's record matching
    admin = text(Client(seller.app).login(ADMIN).get("/views/account_hierarchy?q=zephyr"))
    assert [n for n in nodes(admin) if n[1] == "match"] == [
        ("Zephyr Kiosk", "match", "5"),
        ("Zephyr Secret", "match", "4"),
        ("Zephyr Depot", "match", "4"),
    ]
    assert ("Hidden Holding", "context", "1") in nodes(admin)
    assert ("Shadow Unit", "context", "3") in nodes(admin)


def test_matches_are_bounded_and_counted(w, seller):
    page = text(seller.get("/views/account_hierarchy?q=widget"))
    shown = nodes(page)
    assert shown[0] == ("Lone Ltd", "context", "1")
    assert [n[0] for n in shown[1:]] == [f"Widget {i:03d}" for i in range(MATCHES)]
    assert {n[1:] for n in shown[1:]} == {("match", "2")}
    note = re.search(r'data-testid="tree-search-note">(.*?)</p>', page, re.S).group(1)
    assert f"Showing the first {MATCHES} of {BULK} matches." in note
    # the entity's list, searched for the same words, pages through every match
    link = html.unescape(re.search(r'href="([^"]*)" data-testid="tree-search-list"', note).group(1))
    assert link.endswith("q=widget")
    listed = text(seller.get(link))
    assert "Widget 000" in listed and "Lone Ltd" not in listed


def test_no_match_says_so_and_clear_returns_to_the_tree(w, seller):
    page = text(seller.get("/views/account_hierarchy?q=nothinglikethis"))
    assert nodes(page) == []
    assert "Nothing found for “nothinglikethis”." in page
    assert 'data-testid="tree-search-none"' in page
    clear = re.search(r'href="([^"]*)" data-testid="tree-search-clear"', page).group(1)
    assert clear == "/views/account_hierarchy"
    plain = text(seller.get(clear))
    assert [n[0] for n in nodes(plain)] == ["Acme Group", "Lone Ltd", "Zephyr Depot"]
    assert {n[1] for n in nodes(plain)} == {"plain"}
    assert 'data-testid="tree-search-clear"' not in plain
    # a query with no word in it is no search: the plain tree
    assert nodes(text(seller.get("/views/account_hierarchy?q=%21%21"))) == nodes(plain)


def test_a_parent_the_view_filter_leaves_out_cuts_the_path(w, seller):
    w.store.customize(
        "views",
        {
            "views": {
                "without_acme_east": {
                    "entity": "account",
                    "kind": "tree",
                    "parent": "parent",
                    "columns": ["name"],
                    "filter": ["name", "ne", "Acme East"],
                }
            }
        },
    )
    page = text(seller.get("/views/without_acme_east?q=kiosk"))
    # as in the plain tree, Acme East Retail is on top: its parent is not in the view
    assert nodes(page) == [("Acme East Retail", "context", "1"), ("Zephyr Kiosk", "match", "2")]
    assert "Acme East<" not in page and "Acme Group" not in page
