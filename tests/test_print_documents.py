"""Printable documents (``/r/<entity>/<id>/print``) through the real WSGI application: a
quote and an order of the sales pack printed from their print forms, with the
organization's name, the document's fields, its lines and the quote's own totals in the
reader's formats; a field hidden from the reader is not printed (on the document nor in
its lines); a quote the reader may not read is refused as its record page is; an entity
without a print form has no Print button and no print page; and a print form is never
the entity's main form, nor may it be marked as one."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from browser.support import PASSWORD, Client, world

from xrm.metadata import load_catalog
from xrm.metadata.problems import DefinitionError


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("print")) as built:
        store = built.store
        store.save_settings({"organization": "Northwind Trading", "currency": "EUR"})
        # a role that reads everything but a quote's discounts and a line's description
        store.customize(
            "roles",
            {
                "roles": {
                    "clerk": {
                        "label": {"en": "Clerk"},
                        "permissions": {"*": {"read": "all"}},
                        "fields": {
                            "quote": {"discount_amount": "hidden"},
                            "quote_line": {"description": "hidden"},
                        },
                    }
                }
            },
        )
        built.clerk = store.add_user(
            "clerk@example.com", "Carl Clerk", password=PASSWORD, roles=["clerk"]
        )
        products = store.records("product", built.seller)
        built.widget = products.create({"code": "W-1", "name": "Widget", "list_price": 10})
        built.gadget = products.create({"code": "G-1", "name": "Gadget", "list_price": 250})
        built.quote = quote(
            built,
            built.seller,
            terms="Payment within 30 days.\nDelivery <b>ex works</b>.",
            lines=[
                {"product": built.widget["id"], "quantity": 3, "unit_price": Decimal("1234.5")},
                {
                    "product": built.gadget["id"],
                    "description": "Gadget, installed",
                    "quantity": 2,
                    "unit_price": 250,
                    "discount": 10,
                },
            ],
        )
        # owned by the administrator, outside the seller's team: the seller may not read it
        built.foreign = quote(
            built, built.admin, lines=[{"product": built.widget["id"], "quantity": 1}]
        )
        yield built


@pytest.fixture
def clerk(app):
    return Client(app).login("clerk@example.com")


def quote(w, owner, *, lines, **values):
    made = w.store.records("quote", owner).create(
        {
            "name": "Acme renewal offer",
            "opportunity": w.deal["id"],
            "account": w.acme["id"],
            "contact": w.jane["id"],
            "valid_until": "2027-03-31",
            "owner": owner,
            **values,
        }
    )
    for line in lines:
        w.store.records("quote_line", owner).create({"quote": made["id"], **line})
    return w.store.records("quote").get(made["id"])


def text(response) -> str:
    return response.get_data(as_text=True)


def lines_of(page: str) -> list[list[str]]:
    """The printed lines table's body rows, their cells' text."""
    body = page[page.index('data-testid="print-lines"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def fields_of(page: str) -> dict[str, str]:
    """The printed fields: label -> shown value (tags removed)."""
    found = re.findall(r'data-testid="print-field">\s*<dt>(.*?)</dt>\s*<dd>(.*?)</dd>', page, re.S)
    return {label: re.sub(r"<[^>]+>", "", value).strip() for label, value in found}


# ------------------------------------------------------------------------ the document
def test_the_quote_page_offers_print_and_the_document_shows_the_quote(w, seller):
    record_page = text(seller.get(f"/r/quote/{w.quote['id']}"))
    assert f'href="/r/quote/{w.quote["id"]}/print"' in record_page
    response = seller.get(f"/r/quote/{w.quote['id']}/print")
    assert response.status_code == 200
    page = text(response)
    assert "Northwind Trading" in page
    assert 'data-testid="print-title">Acme renewal offer</h1>' in page
    assert "css/print.css" in page and "xrm-topbar" not in page  # no application chrome
    fields = fields_of(page)
    assert fields["Number"] == w.quote["number"]
    assert fields["Valid until"] == "Mar 31, 2027"
    assert fields["Account"] == "Acme Corporation"
    assert fields["Contact"] == "Jane Doe"
    assert "Sent on" not in fields  # not sent yet: an empty field is left off the paper
    # the quote's own rollups, in the organization's currency and the reader's locale
    assert w.quote["subtotal"] == Decimal("4203.50")
    assert fields["Before discounts"] == "€4,203.50"
    assert fields["Discounts"] == "€50.00"
    assert fields["Total"] == "€4,153.50"
    # terms keep their lines and are escaped, not rendered as markup
    assert "Payment within 30 days.\nDelivery &lt;b&gt;ex works&lt;/b&gt;." in page


def test_the_lines_print_with_the_line_print_forms_columns(w, seller):
    page = text(seller.get(f"/r/quote/{w.quote['id']}/print"))
    head = page[page.index('data-testid="print-lines"') : page.index("</thead>")]
    assert re.findall(r"<th class=[^>]*>(.*?)</th>", head) == [
        "Product",
        "Description",
        "Quantity",
        "Unit price",
        "Discount",
        "Line total",
    ]
    assert lines_of(page) == [
        ["Widget", "", "3", "€1,234.50", "0%", "€3,703.50"],
        ["Gadget", "Gadget, installed", "2", "€250.00", "10%", "€450.00"],
    ]
    assert "<a " not in page[page.index('data-testid="print-lines"') :]  # plain text on paper


def test_the_document_is_in_the_readers_language_and_formats(w, reader):
    page = text(reader.get(f"/r/quote/{w.quote['id']}/print"))
    fields = {k: re.sub(r"[\xa0\u202f]", " ", v) for k, v in fields_of(page).items()}
    assert fields["Действует до"] == "31 мар. 2027 г."
    assert fields["Итого"] == "4 153,50 €"
    assert "Коммерческое предложение" in page and ">Печать</button>" in page


def test_an_order_prints_the_same_way(w, seller):
    order = w.store.records("sales_order", w.seller).create(
        {
            "name": "Acme order",
            "account": w.acme["id"],
            "quote": w.quote["id"],
            "notes": "Deliver to the loading dock.",
            "owner": w.seller,
        }
    )
    w.store.records("sales_order_line", w.seller).create(
        {"sales_order": order["id"], "product": w.gadget["id"], "quantity": 4, "unit_price": 100}
    )
    assert 'data-testid="print"' in text(seller.get(f"/r/sales_order/{order['id']}"))
    page = text(seller.get(f"/r/sales_order/{order['id']}/print"))
    assert fields_of(page)["Total"] == "€400.00"
    assert fields_of(page)["Notes"] == "Deliver to the loading dock."
    assert lines_of(page) == [["Gadget", "", "4", "€100.00", "0%", "€400.00"]]


# ------------------------------------------------------------------------ security
def test_fields_hidden_from_the_reader_are_not_printed(w, clerk):
    response = clerk.get(f"/r/quote/{w.quote['id']}/print")
    assert response.status_code == 200
    page = text(response)
    fields = fields_of(page)
    assert "Discounts" not in fields and "€50.00" not in page
    assert fields["Total"] == "€4,153.50"
    head = page[page.index('data-testid="print-lines"') : page.index("</thead>")]
    assert "Description" not in head and "Gadget, installed" not in page
    assert lines_of(page)[1] == ["Gadget", "2", "€250.00", "10%", "€450.00"]


def test_a_quote_the_reader_may_not_read_is_refused_like_its_record_page(w, seller):
    record_page = seller.get(f"/r/quote/{w.foreign['id']}")
    assert record_page.status_code in (403, 404)
    response = seller.get(f"/r/quote/{w.foreign['id']}/print")
    assert response.status_code == record_page.status_code
    assert w.foreign["number"] not in text(response)


def test_an_entity_without_a_print_form_has_no_print_page(w, seller):
    assert 'data-testid="print"' not in text(seller.get(f"/r/account/{w.acme['id']}"))
    assert seller.get(f"/r/account/{w.acme['id']}/print").status_code == 404
    assert seller.get("/r/quote/999999/print").status_code == 404


# ------------------------------------------------------------------------ definitions
def _pack(tmp_path, forms: str):
    pack = tmp_path / "printing"
    (pack / "entities").mkdir(parents=True)
    (pack / "forms").mkdir()
    (pack / "solution.yaml").write_text("solution: printing\nversion: 1.0.0\nlabel: Printing\n")
    (pack / "entities" / "invoice.yaml").write_text(
        "entity: invoice\nlabel: Invoice\nfields:\n  name: {type: text}\n  due: {type: date}\n"
    )
    (pack / "forms" / "invoice.yaml").write_text(forms)
    return pack


def test_a_print_form_is_never_the_main_form(tmp_path):
    pack = _pack(
        tmp_path,
        "forms:\n"
        "  invoice_print: {entity: invoice, print: true, tabs: [{sections: [{columns: [[name, due]]}]}]}\n"
        "  invoice_main: {entity: invoice, tabs: [{sections: [{columns: [[name]]}]}]}\n",
    )
    catalog = load_catalog([pack])
    assert catalog.form_for("invoice").name == "invoice_main"
    assert catalog.print_form_of("invoice").name == "invoice_print"
    # the printed layout is the pack's own: no generated tab of the fields it leaves out
    assert [f.field for f in catalog.print_form_of("invoice").fields()] == ["name", "due"]


def test_a_print_form_marked_as_the_main_form_is_refused(tmp_path):
    pack = _pack(
        tmp_path,
        "forms:\n"
        "  invoice_print:\n"
        "    entity: invoice\n"
        "    print: true\n"
        "    default: true\n"
        "    tabs: [{sections: [{columns: [[name]]}]}]\n",
    )
    with pytest.raises(
        DefinitionError, match="a print form is only printed: it cannot also be default"
    ):
        load_catalog([pack])
