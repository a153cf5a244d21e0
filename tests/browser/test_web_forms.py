"""A public web form in a real browser: a visitor who is not signed in fills the shipped
web-to-lead form (in Russian, from the browser's language), is told what to correct, sends
it again and is thanked; the shipped process then gives the lead to the sales team, and
the seller who got it signs in and finds it theirs.  The page runs under its own
Content-Security-Policy without a refusal (the ``visit`` fixture fails on any)."""

from __future__ import annotations

import pytest

from xrm.workflow import Worker

from .conftest import open_tab
from .support import ADMIN, PASSWORD, Server, sendable

SALLY = "sally@example.com"


@pytest.fixture(scope="module")
def people(site):
    store = site.store
    store.add_user("web-forms@example.com", "Web forms", roles=["web_form_submitter"])
    sally = store.add_user(SALLY, "Sally Sales", password=PASSWORD, roles=["user"], teams=["sales"])
    return sally


@pytest.fixture
def visitor(browser, site, request):
    """A tab of a browser that never signed in, speaking Russian."""
    with open_tab(
        browser, site.url, request, "visitor", width=900, height=1000, locale="ru-RU"
    ) as tab:
        yield tab


def test_a_visitor_sends_the_form_and_the_process_assigns_the_lead(visitor, visit, site, people):
    page = visitor.go("/f/web_to_lead", "the public form")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.get_by_role("heading", name="Свяжитесь с нами").is_visible()
    assert page.locator("nav").count() == 0  # no application chrome
    honeypot = page.locator("input[name=_website]").bounding_box()
    assert honeypot["x"] + honeypot["width"] <= 0  # the honeypot is out of sight
    assert page.locator("input[name=_website]").get_attribute("tabindex") == "-1"

    page.get_by_label("Имя").fill("Вера")
    page.get_by_label("Компания").fill("Ромашка")
    page.get_by_label("Эл. почта").fill("vera-at-romashka")
    page.get_by_label("Сообщение").fill("Нужно 20 лицензий.")
    # a person takes a moment: the signed token refuses a form sent within 3 seconds
    sendable(page)
    page.get_by_role("button", name="Отправить").click()
    page.wait_for_load_state("networkidle")
    visitor.shot("errors in place")
    assert page.locator("#e-last_name").inner_text() == "обязательное поле"
    assert "неверный адрес эл. почты" in page.locator("#e-email").inner_text()
    assert page.get_by_label("Имя").input_value() == "Вера"  # what was typed is kept
    assert page.get_by_label("Сообщение").input_value() == "Нужно 20 лицензий."
    assert page.get_by_label("Фамилия").get_attribute("aria-invalid") == "true"

    page.get_by_label("Фамилия").fill("Посетитель")
    page.get_by_label("Эл. почта").fill("vera@romashka.example")
    sendable(page)  # the page with the errors carries a token of its own
    page.get_by_role("button", name="Отправить").click()
    page.wait_for_load_state("networkidle")
    visitor.shot("thanked")
    assert "Спасибо! Мы получили вашу заявку" in page.locator("[role=status]").inner_text()

    store = site.store
    (lead,) = [r for r in store.records("lead").query().rows if r["last_name"] == "Посетитель"]
    assert lead["source"] == "web_form" and lead["company"] == "Ромашка"
    Worker(store).run_once()  # the process web_lead_assignment runs

    seller = visit.login(SALLY)
    visit.go(f"/r/lead/{lead['id']}", "the lead, assigned")
    content = seller.content()
    assert "Вера Посетитель" in content and "Sally Sales" in content
    assert store.records("lead").get(lead["id"])["owner"] == people

    admin = visit.login(ADMIN)
    visit.go("/admin/web-forms", "web forms")
    counts = admin.locator("[data-web-form=web_to_lead] [data-testid=web-form-counts]")
    assert "1 accepted" in counts.inner_text() and "1 with errors" in counts.inner_text()
    snippet = admin.locator("#snippet-web_to_lead").input_value()
    assert snippet == f'<script src="{site.url}/f/web_to_lead/embed.js" async></script>'


def host_page(heading: str, snippet: str):
    """A WSGI app serving one page of another site, with the snippet pasted in."""
    body = (
        f'<!doctype html><html lang="en"><head><title>{heading}</title></head><body>'
        f"<h1>{heading}</h1>{snippet}<p>Below the form</p></body></html>"
    ).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    return app


def test_the_form_embedded_in_another_site(browser, site, people, request):
    """The snippet on a page of an allowed site puts the form in a frame sized to it; the
    visitor sends it from there.  Another site's page may not frame it.  Both sites are
    real servers on loopback (other ports: other origins)."""
    snippet = f'<script src="{site.url}/f/web_to_lead/embed.js" async></script>'
    with (
        Server(host_page("Partner site", snippet)) as partner,
        Server(host_page("Another site", snippet)) as elsewhere,
    ):
        site.store.customize(
            "web_forms",
            {
                "web_forms": {
                    "web_to_lead": {
                        "entity": "lead",
                        "title": {"en": "Write to us", "ru": "Напишите нам"},
                        "fields": ["last_name", {"field": "email", "required": True}],
                        "values": {"source": "web_form", "source_details": "Partner site"},
                        "submit_as": "web-forms@example.com",
                        "allowed_origins": [partner.url],
                    }
                }
            },
        )
        try:
            with open_tab(browser, partner.url, request, width=1000) as tab:
                page = tab.page
                tab.go("/contact", "embedded on the partner's page")
                frame = page.frame_locator("iframe")
                frame.get_by_role("heading", name="Write to us").wait_for()
                page.wait_for_function("document.querySelector('iframe').style.height !== ''")
                assert int(page.evaluate("document.querySelector('iframe').offsetHeight")) > 200
                frame.get_by_label("Last name").fill("Framed")
                frame.get_by_label("Email").fill("framed@partners.example.org")
                sendable(page, frame)
                frame.get_by_role("button", name="Send").click()
                frame.get_by_role("status").wait_for()
                tab.shot("sent from the frame")
                assert "Thank you" in frame.get_by_role("status").inner_text()
                rows = site.store.records("lead").query().rows
                (lead,) = [r for r in rows if r["last_name"] == "Framed"]
                assert lead["source_details"] == "Partner site"

                # a site not in allowed_origins: the browser refuses to show the form in a frame
                refusals: list[str] = []
                page.on(
                    "console",
                    lambda m: refusals.append(m.text) if "frame-ancestors" in m.text else None,
                )
                page.goto(elsewhere.url + "/contact")
                page.wait_for_function("document.querySelector('iframe') !== null")
                page.wait_for_load_state("networkidle")
                tab.shot("refused elsewhere")
                heading = page.frame_locator("iframe").get_by_role("heading", name="Write to us")
                assert heading.count() == 0
                assert refusals, "the browser reports the frame-ancestors refusal"
                tab.errors.clear()  # that refusal is the point of this step
        finally:
            site.store.uncustomize("web_forms", "web_to_lead")
