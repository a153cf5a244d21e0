"""The sales module's quote-to-order flow in a real browser: a seller opens a deal with
products, chooses Create quote (the wizard copies the deal's products), emails the quote
to the customer's contact with the record's action button, marks it accepted on the
stage bar (the deal's amount becomes the quote's total), and chooses Create order on the
accepted quote, which lands on the order with the same products and total."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from xrm.workflow import Worker
from xrm.workflow import tables as W

from .support import SELLER, stage_reached, toast


def test_a_quote_made_from_a_deal_emailed_accepted_and_ordered(visit, site):
    store = site.store
    rec = lambda entity: store.records(entity, site.seller)  # noqa: E731
    pump = rec("product").create({"code": "BR-PUMP", "name": "Pump P1", "list_price": 1200})
    prices = rec("price_list").create({"name": "Browser prices"})
    rec("price_list_item").create({"price_list": prices["id"], "product": pump["id"], "price": 990})
    deal = rec("opportunity").create(
        {
            "name": "Acme pumps",
            "account": site.acme["id"],
            "contact": site.jane["id"],
            "close_date": dt.date.today() + dt.timedelta(days=30),
            "price_list": prices["id"],
            "owner": site.seller,
        }
    )
    rec("opportunity_line").create(
        {
            "opportunity": deal["id"],
            "product": pump["id"],
            "quantity": 2,
            "unit_price": 990,
            "discount": 10,
        }
    )

    page = visit.login(SELLER)
    visit.go(f"/r/opportunity/{deal['id']}", "the deal with its products")
    page.click('[data-testid="offer-create_quote"]')
    page.wait_for_load_state("networkidle")
    visit.shot("create quote: the deal's values")
    assert page.input_value("#f-name") == "Acme pumps"
    # today + 30 in the seller's time zone (Moscow: already tomorrow late in a UTC evening)
    today = dt.datetime.now(ZoneInfo(store.user(site.seller).time_zone)).date()
    assert page.input_value("#f-valid_until") == (today + dt.timedelta(days=30)).isoformat()
    page.click('[data-testid="wizard-finish"]')
    page.wait_for_load_state("networkidle")
    visit.shot("the draft quote")
    assert "/r/quote/" in page.url
    quote_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    quote = store.records("quote").get(quote_id)
    assert (quote["status"], quote["line_count"], quote["total"]) == (
        "draft",
        1,
        Decimal("1782.00"),
    )
    page.mouse.wheel(0, 2000)  # the products' related list loads once it is in view
    page.wait_for_selector("text=Pump P1")
    body = page.inner_text("body")
    assert quote["number"] in body and "1,782.00" in body and "Pump P1" in body

    page.click('[data-testid="start-quote_email"]')
    # the button posts through htmx (the page stays): its toast says the process is queued,
    # and only then has the worker something to run
    toast(page, "Started: Email to the contact.")
    Worker(store).run_once()
    assert store.records("quote").get(quote_id)["status"] == "sent"
    with store.engine.connect() as conn:
        sent = (
            conn.execute(
                sa.select(W.emails.c.subject).where(W.emails.c.to_address == "jane@acme-corp.com")
            )
            .scalars()
            .all()
        )
    assert f"Quote {quote['number']}: Acme pumps" in sent

    visit.go(f"/r/quote/{quote_id}", "the quote, sent")
    page.click('[data-testid="stage-accepted"]')
    stage_reached(page, "accepted")  # the move answers through htmx: no page load to wait for
    visit.shot("accepted")
    assert store.records("quote").get(quote_id)["status"] == "accepted"
    Worker(store).run_once()
    assert store.records("opportunity").get(deal["id"])["amount"] == Decimal("1782.00")

    visit.go(f"/r/quote/{quote_id}", "the accepted quote offers an order")
    page.click('[data-testid="offer-create_order"]')
    page.wait_for_load_state("networkidle")
    page.fill("#f-delivery_date", (dt.date.today() + dt.timedelta(days=14)).isoformat())
    visit.shot("create order")
    page.click('[data-testid="wizard-finish"]')
    page.wait_for_load_state("networkidle")
    visit.shot("the order")
    assert "/r/sales_order/" in page.url
    order = store.records("sales_order").get(int(page.url.rstrip("/").rsplit("/", 1)[1]))
    assert (order["quote"], order["line_count"], order["total"]) == (
        quote_id,
        1,
        Decimal("1782.00"),
    )
    assert order["number"] in page.inner_text("body")
    assert visit.errors == []
