"""The service module's main flow in a real browser: a customer writes in through the
public web-to-case form; the case lands in the General support queue and the shipped
routing gives it to the least loaded agent of the queue's team; that agent finds it among
their open cases, sees its SLA clocks running, takes it up, links the knowledge article
that helps, logs the time spent, and resolves it (the stage asks for the resolution
first); the customer gets the satisfaction survey by email, opens its signed link, rates
the help, and the agent sees the answer on the case, with the SLA met."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from xrm.workflow import Worker
from xrm.workflow import tables as W

from .conftest import open_tab
from .support import PASSWORD, pick, sendable, serve, stage_reached, swapped_in, world

AGENT = "alex.agent@example.com"
BUSY = "bea.agent@example.com"
CUSTOMER = "jane@acme-corp.com"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The shared browser world with the service pack: two agents of the support team (Bea
    already has an open case, so routing picks Alex), the public forms' user, a published
    knowledge article, and links in emails pointing at this server."""
    with world(tmp_path_factory.mktemp("browser-service"), "service") as built:
        store = built.store
        built.agent = store.add_user(
            AGENT, "Alex Agent", password=PASSWORD, roles=["service_agent"], teams=["support"]
        )
        built.busy = store.add_user(
            BUSY, "Bea Busy", password=PASSWORD, roles=["service_agent"], teams=["support"]
        )
        store.add_user(
            "web-forms@example.com",
            "Web forms",
            roles=["service_web_forms", "web_form_submitter"],
        )
        store.records("support_case").create({"subject": "Printer jam", "owner": built.busy})
        built.article = store.records("kb_article").create(
            {
                "title": "Resetting a password",
                "summary": "Send the customer the reset link from the sign-in page.",
                "body": "<p>Open the sign-in page and choose <b>Forgot password</b>.</p>",
                "keywords": "password reset sign-in",
                "status": "published",
            }
        )
        with serve(built, mail_from="support@example.org"):
            yield built


@pytest.fixture
def customer(browser, site, request):
    """A tab of a browser that never signed in: the customer's."""
    with open_tab(browser, site.url, request, "customer", width=900, height=1000) as tab:
        yield tab


def survey_mail(store, case_id: int) -> dict:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(W.emails)).mappings().all()
    [mail] = [dict(r) for r in rows if (r["subject"] or "").startswith("How did we do?")]
    return mail


def test_a_case_from_the_web_worked_resolved_and_rated(visit, customer, site):
    store = site.store
    worker = Worker(store)

    # -- the customer writes in
    page = customer.go("/f/web_to_case", "the web-to-case form")
    page.get_by_label("Your name").fill("Jane Doe")
    page.get_by_label("Your email").fill(CUSTOMER)
    page.get_by_label("Category").select_option("access")
    page.get_by_label("What is it about?").fill("Cannot sign in")
    page.get_by_label("Details").fill("The password I set yesterday is refused.")
    sendable(page)  # the signed token refuses a form sent within 3 seconds
    page.get_by_role("button", name="Send").click()
    page.wait_for_load_state("networkidle")
    customer.shot("thanked")
    assert "Your case is registered" in page.locator("[role=status]").inner_text()
    worker.run_once()  # case_intake links Jane and queues it; case_routing assigns it
    worker.run_once()
    [case] = store.records("support_case").query(filter=["subject", "eq", "Cannot sign in"]).rows
    assert (case["channel"], case["contact"], case["account"]) == (
        "web",
        site.jane["id"],
        site.acme["id"],
    )
    assert case["owner"] == site.agent  # Bea has an open case already

    case_url = f"{site.url}/r/support_case/{case['id']}"

    # -- the agent finds it among their open cases, in the queue, with the SLA running
    agent = visit.login(AGENT)
    assert agent.locator('[data-testid="nav-support_case"]').count() == 1
    visit.go("/views/my_open_cases", "my open cases")
    rows = agent.locator('[data-testid="list-table"] tbody tr')
    assert rows.count() == 1 and "Cannot sign in" in rows.first.inner_text()
    rows.first.get_by_role("link", name=case["number"]).click()
    agent.wait_for_url(case_url)
    agent.wait_for_load_state("networkidle")
    visit.shot("the case")
    highlights = agent.inner_text('[data-testid="highlights"]')
    assert "Acme Corporation" in highlights and "Jane Doe" in highlights
    body = agent.inner_text("body")
    assert "General support" in body and "Alex Agent" in body
    sla = agent.locator('[data-testid="sla-status"]')
    assert "Running" in sla.inner_text()

    # -- takes it up: the first response is met
    agent.click('[data-testid="stage-in_progress"]')
    stage_reached(agent, "in_progress")
    worker.run_once()
    assert store.records("support_case").get(case["id"])["first_response_at"] is not None

    # -- links the knowledge article that helps
    visit.go(f"/r/support_case/{case['id']}/edit", "edit the case")
    agent.get_by_role("tab", name="Time and knowledge").click()
    pick(agent, "articles", "password", "Resetting a password")
    agent.click('[data-testid="save"]')
    agent.wait_for_url(case_url)
    agent.wait_for_load_state("networkidle")
    assert store.records("support_case").get(case["id"])["articles"] == [site.article["id"]]

    # -- logs the time spent, from the case's related list
    agent.get_by_role("tab", name="Time and knowledge").click()
    related = agent.locator('[data-testid="related-time_entries"]')
    related.get_by_role("link", name="New").click()
    agent.wait_for_load_state("networkidle")
    visit.shot("new time entry")
    assert case["subject"] in agent.locator("#field-support_case").inner_text()
    agent.fill("#f-description", "Reset the password with the customer on the phone")
    assert agent.input_value("#f-work_date")  # today, as the field's default says
    agent.fill("#f-duration", "1h30m")
    agent.click('[data-testid="save-close"]')  # back where the form was opened from
    agent.wait_for_url(case_url)
    agent.wait_for_load_state("networkidle")
    agent.get_by_role("tab", name="Time and knowledge").click()
    visit.shot("time and knowledge")
    tab = agent.inner_text("body")
    assert "1h 30m" in tab or "1h30m" in tab
    assert "Resetting a password" in tab

    # -- resolves it: the stage asks for the resolution first
    agent.click('[data-testid="stage-resolved"]')
    # the form asking for it is swapped in (htmx, no page load): used once htmx settled it
    swapped_in(agent.locator("#f-resolution"))
    visit.shot("resolution required")
    agent.fill("#f-resolution", "Reset the password; the article explains it for next time.")
    agent.select_option("#f-status", "resolved")
    agent.click('[data-testid="save"]')
    stage_reached(agent, "resolved")
    visit.shot("resolved")
    assert store.records("support_case").get(case["id"])["status"] == "resolved"
    worker.run_once()  # case_resolved: the survey email

    # -- the customer answers the survey from the link in the email
    mail = survey_mail(store, case["id"])
    assert mail["to_address"] == CUSTOMER
    link = re.search(r"http://\S+/f/case_survey\?r=\S+", mail["body"]).group(0)
    assert link.startswith(site.url)
    page = customer.page
    page.goto(link)
    page.wait_for_load_state("networkidle")
    customer.shot("the survey")
    page.get_by_label("Your rating, 1 (poor) to 5 (excellent)").select_option("5")
    page.get_by_label("Anything to add?").fill("Quick and friendly, thank you!")
    sendable(page)
    page.get_by_role("button", name="Send my answer").click()
    page.wait_for_load_state("networkidle")
    customer.shot("answered")
    assert "Thank you for your answer" in page.locator("[role=status]").inner_text()

    # -- the agent sees the answer on the case, and the SLA met
    worker.run_once()
    visit.go(f"/r/support_case/{case['id']}", "resolved and rated")
    agent.get_by_role("tab", name="Satisfaction").click()
    expect(agent.locator("body")).to_contain_text("Quick and friendly, thank you!")
    visit.shot("satisfaction")
    answered = store.records("support_case").get(case["id"])
    assert answered["satisfaction"] == 5 and answered["survey_answered_at"] is not None
    assert "Met" in agent.inner_text('[data-testid="sla-status"]')
