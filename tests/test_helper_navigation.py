"""Helper entities (``navigation: false``: quote lines, territory members...) are left out
of the navigation and stay reachable: from their parent's related list, by their address
for whoever may read them (and refused to whoever may not), and in the admin area.
An ``extend`` document (so the customization layer) may switch the flag.  SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, write_pack

HELPERS = (
    "territory_member",
    "opportunity_line",
    "opportunity_competitor",
    "price_list_item",
    "quote_line",
    "sales_order_line",
)
#: A role that reads quotes but not their lines, and one that reads lines without prices.
ROLES = {
    "no_lines": {
        "label": {"en": "No lines"},
        "permissions": {
            "*": {"create": "all", "read": "all", "update": "all", "delete": "all"},
            "quote_line": {"read": "none"},
        },
    },
    "no_prices": {
        "label": {"en": "No prices"},
        "permissions": {"*": {"read": "all"}},
        "fields": {"quote_line": {"unit_price": "hidden"}},
    },
}


@pytest.fixture
def sales(database):
    store = database.open()
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.customize("roles", {"roles": ROLES})
    users = {
        "admin": store.add_user("admin@example.com", password=PASSWORD, roles=["administrator"]),
        "seller": store.add_user("seller@example.com", password=PASSWORD, roles=["user"]),
        "lineless": store.add_user("lineless@example.com", password=PASSWORD, roles=["no_lines"]),
        "priceless": store.add_user(
            "priceless@example.com", password=PASSWORD, roles=["no_prices"]
        ),
    }
    seller = users["seller"]
    account = store.records("account", seller).create({"name": "Acme", "owner": seller})
    deal = store.records("opportunity", seller).create(
        {
            "name": "Acme renewal",
            "account": account["id"],
            "close_date": dt.date(2030, 1, 1),
            "owner": seller,
        }
    )
    product = store.records("product").create(
        {"name": "Widget", "code": "W-1", "list_price": Decimal("10")}
    )
    quote = store.records("quote", seller).create(
        {"name": "Q-1", "opportunity": deal["id"], "account": account["id"], "owner": seller}
    )
    line = store.records("quote_line", seller).create(
        {
            "quote": quote["id"],
            "product": product["id"],
            "quantity": 3,
            "unit_price": Decimal("987.65"),
            "owner": seller,
        }
    )
    yield store, users, {"quote": quote, "line": line}
    store.close()


def _nav(client: Client) -> set[str]:
    page = client.get("/").get_data(as_text=True)
    return set(re.findall(r'data-testid="nav-([a-z_]+)"', page))


def test_the_navigation_leaves_helpers_out(sales):
    store, _users, _found = sales
    catalog = store.refresh()
    for name in HELPERS:
        assert catalog.entity(name).navigation is False, name
    assert catalog.entity("quote").navigation is True
    app = make_app(store)
    for email in ("admin@example.com", "seller@example.com"):
        shown = _nav(Client(app).login(email))
        assert {"account", "opportunity", "quote", "sales_order", "product"} <= shown, email
        assert not shown & set(HELPERS), email
    # the admin area still lists them
    admin = Client(app).login("admin@example.com")
    entities = admin.get("/admin/entities").get_data(as_text=True)
    for name in HELPERS:
        assert name in entities, name
    assert admin.get("/admin/entities/quote_line").status_code == 200


def test_a_helper_is_reached_from_its_parent_and_by_address_under_security(sales):
    store, _users, found = sales
    app = make_app(store)
    line_url = f"/r/quote_line/{found['line']['id']}"
    list_url = "/e/quote_line"  # the entity's main list
    seller = Client(app).login("seller@example.com")
    # the quote's page has its lines' related list, each line linked to its record
    quote_url = f"/r/quote/{found['quote']['id']}"
    assert f"{quote_url}/related/lines" in seller.get(quote_url).get_data(as_text=True)
    assert line_url in seller.get(f"{quote_url}/related/lines").get_data(as_text=True)
    line_page = seller.get(line_url)
    assert line_page.status_code == 200
    assert "987.65" in line_page.get_data(as_text=True)
    listed = seller.get(list_url, follow_redirects=True)
    assert listed.status_code == 200 and line_url in listed.get_data(as_text=True)

    # a role that may not read lines: not by address, not in the list, not in the menu
    lineless = Client(app).login("lineless@example.com")
    assert lineless.get(f"/r/quote/{found['quote']['id']}").status_code == 200
    assert lineless.get(line_url).status_code in (403, 404)
    assert lineless.get(list_url, follow_redirects=True).status_code in (403, 404)

    # a role with the price hidden reads the line without it
    priceless = Client(app).login("priceless@example.com")
    page = priceless.get(line_url)
    assert page.status_code == 200
    assert "987.65" not in page.get_data(as_text=True)
    assert "quote_line" not in _nav(priceless)


def test_an_extension_can_switch_the_flag(sales, tmp_path):
    store, _users, _found = sales
    pack = write_pack(
        tmp_path,
        "lines_menu",
        {
            "entities/quote_line.yaml": "extend: quote_line\nnavigation: true\n",
            "entities/quote.yaml": "extend: quote\nnavigation: false\n",
        },
        depends={"sales": ">=1.0"},
    )
    store.install([pack])
    catalog = store.refresh()
    assert catalog.entity("quote_line").navigation is True
    assert catalog.entity("quote").navigation is False
    shown = _nav(Client(make_app(store)).login("seller@example.com"))
    assert "quote_line" in shown and "quote" not in shown
