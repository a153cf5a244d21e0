"""A quote's printable document in a real browser: the record page's Print button leads to
it, its Print button calls the browser's print dialog, and under print media the toolbar
is gone and the quote prints on one A4 page (Chromium's own PDF of the print preview)."""

from __future__ import annotations

import re

from .support import SELLER


def test_a_quote_prints_on_a4_without_the_toolbar(visit, site):
    rec = lambda entity: site.store.records(entity, site.seller)  # noqa: E731
    pump = rec("product").create({"code": "PR-PUMP", "name": "Pump P2", "list_price": 700})
    quote = rec("quote").create(
        {
            "name": "Printed pumps",
            "opportunity": site.deal["id"],
            "account": site.acme["id"],
            "contact": site.jane["id"],
            "valid_until": "2027-01-31",
            "terms": "Prices include delivery.\nPayment within 30 days.",
            "owner": site.seller,
        }
    )
    rec("quote_line").create(
        {"quote": quote["id"], "product": pump["id"], "quantity": 2, "unit_price": 700}
    )

    page = visit.login(SELLER)
    visit.go(f"/r/quote/{quote['id']}", "the quote")
    assert page.get_attribute('[data-testid="print"]', "href") == f"/r/quote/{quote['id']}/print"
    visit.go(f"/r/quote/{quote['id']}/print", "the printable quote")
    assert "Pump P2" in page.inner_text('[data-testid="print-lines"]')
    # the dialog itself cannot be driven headless: the button's call is what is checked
    page.evaluate("window.print = () => { window.xrmPrinted = true; }")
    page.click('[data-testid="print-now"]')
    assert page.evaluate("window.xrmPrinted") is True

    page.emulate_media(media="print")
    assert not page.is_visible('[data-testid="print-toolbar"]')
    assert page.is_visible('[data-testid="print-document"]')
    pdf = page.pdf(prefer_css_page_size=True)
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1  # one page
    box = re.search(rb"/MediaBox\s*\[0 0 ([\d.]+) ([\d.]+)\]", pdf)
    assert (round(float(box[1])), round(float(box[2]))) == (595, 842)  # A4 in points
