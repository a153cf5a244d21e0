"""The marketing pack on SQLite and PostgreSQL: its sample data making every marketing
report and the dashboard show figures; ROI computed from won opportunities; the campaign's
mass email through a real SMTP server (aiosmtpd on loopback) going only to contacts who
agreed, throttled by the outbox, each with an unsubscribe link that works through the web
app (and a forged one that does not); a response becoming a lead of its campaign.  Plus
the checker's words for the ``mass_email`` step and a saved filter that names nothing
sending nothing."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import make_app
from conftest import SOLUTIONS, write_pack
from test_workflow_delivery import smtp_server  # noqa: F401  (the fixture)
from workflow_pack import MovableClock

from xrm.metadata import check
from xrm.reports.dashboards import run_dashboard
from xrm.reports.run import run_report
from xrm.workflow import Worker, start
from xrm.workflow import tables as W
from xrm.workflow.instances import instance as instance_of

MONDAY = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PACKS = [SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "marketing"]
LINK = re.compile(r"http://[^\s]+/u/[A-Za-z0-9_.\-]+")


@pytest.fixture
def shop(database):
    clock = MovableClock(MONDAY)
    store = database.open(clock=clock)
    store.install(PACKS)
    people = {
        "manager": store.add_user(
            "mia@example.com",
            "Mia Marketing",
            password="pass-phrase-1",
            roles=["marketing_manager"],
        ),
        "specialist": store.add_user(
            "sam@example.com", "Sam Specialist", password="pass-phrase-1", roles=["marketing_user"]
        ),
    }
    shop = type("Shop", (), {})()
    shop.store, shop.clock, shop.people = store, clock, people
    yield shop
    store.close()


def as_user(shop, who: str, entity: str):
    uid = shop.people[who]
    return shop.store.records(entity, uid, principal=shop.store.principal(uid))


def outbox(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(sa.select(W.emails).order_by(W.emails.c.id)).mappings()
        ]


# ------------------------------------------------------------------------ the pack
def test_the_pack_checks_clean_and_its_sample_data_fills_every_report(database):
    catalog, problems = check(PACKS)
    assert problems == [] and "marketing" in catalog.solutions
    store = database.open(clock=MovableClock(dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)))
    try:
        store.install(PACKS, demo=True)
        catalog = store.refresh()
        expo = store.records("campaign").query(filter=["name", "eq", "Moscow IT Expo 2026"]).rows[0]
        assert expo["actual_revenue"] == Decimal("48000.00")
        assert expo["open_pipeline"] == Decimal("30000.00")
        assert expo["roi"] == Decimal("190.91")  # (48000 - 16500) / 16500
        assert expo["lead_count"] == 3 and expo["member_count"] == 4 and expo["response_count"] == 4
        assert expo["response_rate"] == Decimal("100.00")
        marketing = [r for r in catalog.reports.values() if r.solution == "marketing"]
        assert len(marketing) >= 5
        for report in marketing:
            result = run_report(store, report, {})
            assert result.rows, f"report {report.name} is empty on the sample data"
        Worker(store).run_once()  # the new response of the sample data becomes a lead
        assert store.records("lead").query(filter=["email", "eq", "grace@kimarch.example"]).rows
        board = run_dashboard(store, catalog.dashboards["marketing"], {}, None, fresh=True)
        for widget in board.widgets:
            assert widget.error is None, (widget.title, widget.error)
        kpis = [w for w in board.widgets if w.kind == "kpi"]
        assert [w.value for w in kpis] == [Decimal("24900.00"), Decimal("75500.00"), 9]
    finally:
        store.close()


def test_roi_comes_from_the_won_opportunities_of_the_campaign(shop):
    store = shop.store
    campaign = store.records("campaign").create(
        {
            "name": "Expo",
            "campaign_type": "trade_show",
            "budget": 2000,
            "actual_cost": 2500,
            "expected_revenue": 10000,
        }
    )
    assert campaign["roi"] == Decimal("-100.00")  # spent, nothing won yet
    assert campaign["expected_roi"] == Decimal("400.00")
    acme = store.records("account").create({"name": "Acme"})["id"]
    deals = store.records("opportunity")
    for amount, stage in ((10000, "won"), (4000, "won"), (7000, "proposal")):
        deals.create(
            {
                "name": f"Deal {amount}",
                "account": acme,
                "amount": amount,
                "close_date": "2026-03-20",
                "stage": stage,
                "campaign": campaign["id"],
            }
        )
    campaign = store.records("campaign").get(campaign["id"])
    assert campaign["actual_revenue"] == Decimal("14000.00")
    assert campaign["open_pipeline"] == Decimal("7000.00")
    assert campaign["roi"] == Decimal("460.00")  # (14000 - 2500) / 2500


# ------------------------------------------------------------------------ mass email
def _audience(shop, *, kind="static"):
    store = shop.store
    contacts = store.records("contact")
    people = {
        "ann": contacts.create(
            {
                "first_name": "Ann",
                "last_name": "Lee",
                "email": "ann@example.com",
                "email_consent": True,
            }
        ),
        "bob": contacts.create(
            {
                "first_name": "Bob",
                "last_name": "Stone",
                "email": "bob@example.com",
                "email_consent": False,
            }
        ),
        "ivan": contacts.create(
            {
                "first_name": "Иван",
                "last_name": "Петров",
                "email": "ivan@example.com",
                "email_consent": True,
                "preferred_language": "ru",
            }
        ),
        "nomail": contacts.create({"first_name": "No", "last_name": "Mail", "email_consent": True}),
    }
    values = {"name": "Customers", "kind": kind}
    if kind == "static":
        values["contacts"] = [p["id"] for p in people.values()]
    else:
        values["criteria"] = ["email", "contains", "example.com"]
    segment = store.records("segment").create(values)
    text = store.records("email_template").create(
        {
            "name": "News",
            "subject": "Spring news",
            "body": "Our spring line is <b>here</b>.",
            "subject_ru": "Весенние новости",
            "body_ru": "Весенняя коллекция уже здесь.",
        }
    )
    campaign = as_user(shop, "manager", "campaign").create(
        {"name": "Spring mailing", "segment": segment["id"], "email_template": text["id"]}
    )
    return people, campaign


def test_a_campaign_email_reaches_only_consenting_contacts_throttled_and_unsubscribes(
    shop,
    smtp_server,  # noqa: F811  (the imported fixture)
):
    store, clock = shop.store, shop.clock
    store.save_settings({"mail_from": "news@example.org", "base_url": "http://crm.example"})
    people, campaign = _audience(shop)
    start(store, "campaign_send_email", campaign["id"], user_id=shop.people["manager"])
    worker = Worker(store, smtp=smtp_server.url)
    worker.run_once()
    queued = outbox(store)
    assert sorted(e["to_address"] for e in queued) == ["ann@example.com", "ivan@example.com"]
    # 600/hour: one every 6 seconds, whichever worker sends them
    assert [e["due_at"] - MONDAY for e in queued] == [dt.timedelta(0), dt.timedelta(seconds=6)]
    assert [m[0] for m in smtp_server.messages] == [["ann@example.com"]]
    ann_mail = smtp_server.messages[0][1]
    assert ann_mail["Subject"] == "Spring news"
    body = ann_mail.get_content()
    assert body.startswith("Hello Ann,") and "Our spring line is <b>here</b>." in body
    members = store.records("campaign_member").query(filter=["campaign", "eq", campaign["id"]]).rows
    assert {m["contact"] for m in members} == {people["ann"]["id"], people["ivan"]["id"]}
    assert all(m["status"] == "sent" for m in members)
    assert store.records("campaign").get(campaign["id"])["status"] == "active"

    # Ivan unsubscribes through his link before his (throttled) email leaves the outbox
    ivan_row = next(e for e in queued if e["to_address"] == "ivan@example.com")
    assert ivan_row["subject"] == "Весенние новости" and "Отписаться:" in ivan_row["body"]
    link = LINK.search(ivan_row["body"]).group(0)
    path = link.removeprefix("http://crm.example")
    app = make_app(store)
    client = app.test_client()
    page = client.get(path, headers={"Accept-Language": "ru"})
    assert page.status_code == 200 and "Отказаться от наших рассылок?" in page.get_data(
        as_text=True
    )
    assert (
        store.records("contact").get(people["ivan"]["id"])["email_consent"] is True
    )  # a GET changes nothing
    done = client.post(path, headers={"Accept-Language": "ru"})
    assert done.status_code == 200 and "Вы отписались" in done.get_data(as_text=True)
    ivan = store.records("contact").get(people["ivan"]["id"])
    assert ivan["email_consent"] is False
    assert [e["status"] for e in outbox(store) if e["to_address"] == "ivan@example.com"] == [
        "withdrawn"
    ]
    assert client.post(path).status_code == 200  # again: the same answer, nothing more
    worker.run_once()  # the consent process notes the moment
    assert store.records("contact").get(people["ivan"]["id"])["unsubscribed_at"] == clock.now()
    clock.advance(minutes=5)
    worker.run_once()
    assert len(smtp_server.messages) == 1  # Ivan's email never left

    # a forged or altered link unsubscribes nobody
    assert client.get("/u/not-a-token").status_code == 404
    assert client.post(path[:-3] + "abc").status_code == 404
    assert store.records("contact").get(people["ann"]["id"])["email_consent"] is True

    # pressing Send again mails nobody twice: every reader is a member already
    start(store, "campaign_send_email", campaign["id"], user_id=shop.people["manager"])
    worker.run_once()
    assert len(outbox(store)) == 2


def test_a_dynamic_segment_mails_whom_its_saved_filter_finds_now(shop):
    store = shop.store
    people, campaign = _audience(shop, kind="dynamic")
    start(store, "campaign_send_email", campaign["id"], user_id=shop.people["manager"])
    Worker(store).run_once()
    assert sorted(e["to_address"] for e in outbox(store)) == ["ann@example.com", "ivan@example.com"]


def test_a_saved_filter_that_names_nothing_sends_nothing_and_says_why(shop):
    store = shop.store
    people, campaign = _audience(shop, kind="dynamic")
    segment = store.records("campaign").get(campaign["id"])["segment"]
    with store.engine.begin() as conn:  # as an old row or a hand edit could hold it
        table = sa.table("segment", sa.column("id"), sa.column("criteria", sa.JSON))
        conn.execute(
            table.update().where(table.c.id == segment).values(criteria=["nickname", "eq", "x"])
        )
    instance = start(store, "campaign_send_email", campaign["id"], user_id=shop.people["manager"])
    worker = Worker(store, retry_base=1)
    for _ in range(8):
        worker.run_once()
        shop.clock.advance(minutes=10)
    found = instance_of(store, instance)
    assert found["status"] == "failed"
    assert (
        "saved filter segment.criteria: nickname: contact has no field 'nickname'" in found["error"]
    )
    assert outbox(store) == []
    assert store.records("campaign_member").query().rows == []


def test_only_a_marketing_manager_may_send(shop):
    people, campaign = _audience(shop)
    with pytest.raises(PermissionError):
        start(shop.store, "campaign_send_email", campaign["id"], user_id=shop.people["specialist"])


# ------------------------------------------------------------------------ responses
def test_an_interested_response_becomes_a_lead_of_its_campaign(shop):
    store = shop.store
    campaign = as_user(shop, "manager", "campaign").create(
        {"name": "Webinar", "campaign_type": "webinar"}
    )
    response = as_user(shop, "specialist", "campaign_response").create(
        {
            "campaign": campaign["id"],
            "first_name": "Ann",
            "last_name": "Lee",
            "company": "Acme",
            "email": "ann@acme.example",
            "response_type": "interested",
        }
    )
    Worker(store).run_once()
    response = store.records("campaign_response").get(response["id"])
    lead = store.records("lead").get(response["lead"])
    assert response["status"] == "converted"
    assert (lead["campaign"], lead["source"], lead["company"], lead["owner"]) == (
        campaign["id"],
        "campaign",
        "Acme",
        shop.people["specialist"],
    )
    assert store.records("campaign").get(campaign["id"])["lead_count"] == 1


# ------------------------------------------------------------------------ the checker
def test_the_checker_names_each_mistake_of_a_mass_email(tmp_path):
    step = """process: bad_{n}
entity: campaign
on: {{manual: true}}
steps:
  - mass_email:
{spec}
"""
    cases = {
        "no_audience": "      {entity: contact, email: email, consent: email_consent, template: campaign_email}",
        "not_boolean": "      {entity: contact, filter: [email, is_not_empty], email: email, consent: first_name, template: campaign_email}",
        "not_a_list": "      {entity: contact, list: segment.name, email: email, consent: email_consent, template: campaign_email}",
        "no_way_out": "      {entity: contact, filter: [email, is_not_empty], email: email, consent: email_consent, template: plain}",
        "bad_rate": "      {entity: contact, filter: [email, is_not_empty], email: email, consent: email_consent, template: campaign_email, rate: fast}",
    }
    files = {
        f"processes/{name}.yaml": step.format(n=name, spec=spec) for name, spec in cases.items()
    }
    files["templates/plain.yaml"] = (
        'templates:\n  plain:\n    entity: campaign\n    subject: "Hi"\n    body: {en: "No link here", ru: "Без ссылки"}\n'
    )
    pack = write_pack(tmp_path, "probe", files, depends={"marketing": ">=1.0"})
    _, problems = check([*PACKS, pack])
    problems = [str(p) for p in problems]
    text = "\n".join(problems)
    assert "with none it would email everyone" in text
    assert "consent: contact.first_name is a text field (expected boolean)" in text
    assert "list: segment.name must be a many-to-many field to contact (it is a text field)" in text
    assert (
        "template 'plain' (en) must offer the way out: put {{ unsubscribe_url }} in its body"
        in text
    )
    assert "rate: expected emails per second, minute, hour or day" in text
    assert all(re.match(r".*probe/(processes|templates)/\w+\.yaml:\d+:\d+: ", p) for p in problems)
