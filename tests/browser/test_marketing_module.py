"""The marketing module's main flow in a real browser: a marketing manager makes a static
segment and adds its contacts, creates a campaign for it with its budget, cost and email
text, and presses *Send email*; the worker sends through a real SMTP server (aiosmtpd on
loopback) only to the contact who agreed, with her own unsubscribe link; she follows it
and confirms, and her consent is gone; a response to the campaign is recorded from the
campaign's page and becomes a lead of the campaign; once a deal from it is won, the
campaign shows its revenue and ROI."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from test_workflow_delivery import smtp_server  # noqa: F401  (the fixture)

from xrm.workflow import Worker

from .conftest import open_tab
from .support import PASSWORD, pick, saved_id, serve, world

MIA = "mia@example.com"
LINK = re.compile(r"http://\S+/u/[A-Za-z0-9_.\-]+")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The shared browser world with the marketing pack: a marketing manager, two contacts
    (one agreed to campaign email, one did not) and an email text; links in emails point
    at this server."""
    with world(tmp_path_factory.mktemp("browser-marketing"), "marketing") as built:
        store = built.store
        built.mia = store.add_user(
            MIA, "Mia Marketing", password=PASSWORD, roles=["marketing_manager"]
        )
        contacts = store.records("contact")
        built.ann = contacts.create(
            {
                "first_name": "Ann",
                "last_name": "Lee",
                "email": "ann@lee.example",
                "email_consent": True,
            }
        )
        built.bob = contacts.create(
            {
                "first_name": "Bob",
                "last_name": "Stone",
                "email": "bob@stone.example",
                "email_consent": False,
            }
        )
        built.text = store.records("email_template").create(
            {
                "name": "Winter offer",
                "subject": "Our winter offer",
                "body": "Twenty percent off every plan until January.",
            }
        )
        with serve(built, mail_from="news@example.org"):
            yield built


@pytest.fixture
def reader(browser, site, request):
    """The tab of the email's reader, who never signs in."""
    with open_tab(browser, site.url, request, "reader", width=900, height=800) as tab:
        yield tab


def test_a_campaign_mailed_unsubscribed_answered_and_paid_back(
    visit,
    reader,
    site,
    smtp_server,  # noqa: F811  (the imported fixture)
):
    store = site.store
    worker = Worker(store, smtp=smtp_server.url)

    # -- a static segment with its two contacts
    page = visit.login(MIA)
    visit.go("/r/segment/new", "new segment")
    page.fill("#f-name", "Winter prospects")
    assert page.input_value("#f-kind") == "static"
    pick(page, "contacts", "Ann", "Ann Lee", close=True)
    pick(page, "contacts", "Bob", "Bob Stone", close=True)
    visit.shot("segment with contacts")
    page.click('[data-testid="save"]')
    segment = saved_id(page, "segment")
    members = store.records("segment").get(segment)["contacts"]
    assert sorted(members) == sorted([site.ann["id"], site.bob["id"]])

    # -- the campaign for it
    visit.go("/r/campaign/new", "new campaign")
    page.fill("#f-name", "Winter offer 2026")
    page.select_option("#f-campaign_type", "email")
    pick(page, "segment", "Winter", "Winter prospects", close=True)
    pick(page, "email_template", "Winter", "Winter offer", close=True)
    page.fill("#f-budget", "1000")
    page.fill("#f-actual_cost", "800")
    page.click('[data-testid="save"]')
    campaign = saved_id(page, "campaign")
    visit.shot("the campaign")

    # -- Send email: through the outbox, to the contact who agreed
    page.locator('[data-testid="start-campaign_send_email"]').click()
    # the save's "Saved." toast may still show beside it
    toast = page.locator('[data-xrm-toast][data-level="success"]', has_text="Started")
    toast.wait_for()
    visit.shot("sending started")
    worker.run_once()  # the process queues the emails; the first leaves at once
    worker.run_once()
    assert [m[0] for m in smtp_server.messages] == [["ann@lee.example"]]
    mail = smtp_server.messages[0][1]
    assert mail["Subject"] == "Our winter offer"
    body = mail.get_content()
    assert body.startswith("Hello Ann,") and "Twenty percent off" in body
    sent = store.records("campaign").get(campaign)
    assert (sent["status"], sent["member_count"]) == ("active", 1)

    # -- Ann follows her unsubscribe link and confirms
    link = LINK.search(body).group(0)
    assert link.startswith(site.url + "/u/")
    out = reader.page
    out.goto(link)
    out.wait_for_load_state("networkidle")
    reader.shot("unsubscribe asks")
    assert store.records("contact").get(site.ann["id"])["email_consent"] is True  # a GET: no
    out.get_by_role("button").click()
    out.wait_for_load_state("networkidle")
    reader.shot("unsubscribed")
    assert "unsubscribed" in out.locator("[role=status]").inner_text().lower()
    assert store.records("contact").get(site.ann["id"])["email_consent"] is False

    # -- a response recorded on the campaign becomes a lead of it
    visit.go(f"/r/campaign/{campaign}", "the campaign again")
    page.get_by_role("tab", name="Responses").click()
    page.locator('[data-testid="related-responses"]').get_by_role("link", name="New").click()
    page.wait_for_load_state("networkidle")
    assert "Winter offer 2026" in page.locator("#field-campaign").inner_text()
    page.fill("#f-first_name", "Carl")
    page.fill("#f-last_name", "Berg")
    page.fill("#f-company", "Berg Bakeries")
    page.fill("#f-email", "carl@berg.example")
    page.select_option("#f-response_type", "interested")
    page.click('[data-testid="save"]')
    response = saved_id(page, "campaign_response")
    worker.run_once()  # response_to_lead
    visit.go(f"/r/campaign_response/{response}", "the response, a lead now")
    lead = store.records("campaign_response").get(response)["lead"]
    assert lead is not None
    page.get_by_role("link", name="Carl Berg").first.click()
    page.wait_for_url(f"{site.url}/r/lead/{lead}")
    page.wait_for_load_state("networkidle")
    visit.shot("the lead")
    assert "Winter offer 2026" in page.inner_text("body")
    assert store.records("lead").get(lead)["campaign"] == campaign

    # -- sales wins a deal from it (the sales flow has its own browser test); the ROI shows
    store.records("opportunity", site.seller).create(
        {
            "name": "Berg Bakeries, 40 seats",
            "account": site.acme["id"],
            "amount": Decimal("4000"),
            "close_date": dt.date.today(),
            "stage": "won",
            "campaign": campaign,
            "owner": site.seller,
        }
    )
    visit.go(f"/r/campaign/{campaign}", "revenue and ROI")
    money = page.inner_text("body")
    assert "$4,000.00" in money  # actual revenue
    assert "400%" in money or "400.00%" in money  # (4000 - 800) / 800
    assert store.records("campaign").get(campaign)["roi"] == Decimal("400.00")
