"""Scheduled reports: a ``send_report`` step in a process with a cron trigger, run by the
real worker with a clock moved by hand, delivered to a real SMTP server (aiosmtpd on
loopback) as an HTML table and an XLSX attachment (opened with openpyxl).  Each recipient's
figures are those their own role lets them read (checked against SQL written here); a
repeated tick sends nothing twice; a recipient who may not run the report gets nothing
while the others get theirs; an administrator schedules and removes a report from its page
(through the test client, with CSRF).  On SQLite, and on PostgreSQL with
XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack
from openpyxl import load_workbook
from test_workflow_delivery import Inbox, free_port
from workflow_pack import START, MovableClock

from xrm.storage.tables import tables_for
from xrm.workflow import Worker, instance, instances
from xrm.workflow import tables as W
from xrm.workflow.mail import outbox

PACK = {
    "entities/deal.yaml": """
entity: deal
label: {en: Deal, ru: Сделка}
title: name
fields:
  name:   {type: text, required: true}
  stage:  {type: choice, options: [new, won, lost]}
  amount: {type: money}
  closes: {type: date}
  secret: {type: text}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {read: own}
  boss:
    permissions:
      deal: {read: all}
  blind:
    permissions:
      account: {read: all}
  nosy:
    permissions:
      deal: {read: all}
    fields:
      deal: {amount: hidden}
""",
    "reports/deals.yaml": """
reports:
  by_stage:
    entity: deal
    label: {en: Deals by stage, ru: Сделки по стадиям}
    filter: {all: [{param: period}, {param: owner}]}
    parameters:
      period: {type: period, field: closes}
      owner: {type: user, field: owner}
    group_by: [stage]
    measures:
      deals: {count: true, label: {en: Deals, ru: Сделки}}
      amount: {sum: amount, label: {en: Amount, ru: Сумма}}
    totals: true
""",
    "processes/weekly.yaml": """
process: weekly_deals
on: {schedule: "0 7 * * 1"}
steps:
  - send_report:
      report: by_stage
      to: [role:seller, role:boss, role:blind, role:nosy]
      parameters: {period: all}
""",
}
STAGES = {"new": ("New", "New"), "won": ("Won", "Won"), "lost": ("Lost", "Lost")}
TICK = dt.datetime(2025, 3, 10, 7, 0, tzinfo=dt.UTC)  # the first Monday 07:00 after START


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback keeping what it accepts."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()


@pytest.fixture
def shop(database, tmp_path):
    clock = MovableClock(START)
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core", write_pack(tmp_path, "shop", PACK, {"core": ">=1.0"})])
    store.clock_ = clock
    store.save_settings({"mail_from": "crm@example.org", "currency": "USD"})
    store.seller = store.add_user("seller@x.test", "Sam", roles=["seller"])
    store.boss = store.add_user(
        "boss@x.test", "Борис", roles=["boss"], locale="ru", time_zone="Europe/Moscow"
    )
    store.blind = store.add_user("blind@x.test", "Bea", roles=["blind"])
    store.nosy = store.add_user("nosy@x.test", "Nat", roles=["nosy"])
    rows = []
    for i in range(30):
        rows.append(
            {
                "name": f"deal {i}",
                "stage": ("new", "won", "lost", None)[i % 4],
                "amount": Decimal(100 * i + 50) if i % 5 else None,
                "closes": dt.date(2025, 1, 1) + dt.timedelta(days=i),
                "owner": store.seller if i % 3 == 0 else store.boss,
            }
        )
    store.records("deal").bulk_create(rows)
    yield store
    store.close()


def expected(store, owner=None) -> dict:
    """stage -> (count, sum of amounts), by hand-written SQL."""
    deal = tables_for(store.catalog)["deal"]
    query = sa.select(deal.c.stage, sa.func.count(), sa.func.sum(deal.c.amount)).group_by(
        deal.c.stage
    )
    if owner is not None:
        query = query.where(deal.c.owner == owner)
    with store.engine.connect() as conn:
        return {stage: (count, Decimal(total or 0)) for stage, count, total in conn.execute(query)}


def workbook_figures(message) -> tuple[dict, list]:
    """The attached workbook's lines (stage label -> (deals, amount)) and its totals line."""
    [part] = [p for p in message.iter_attachments()]
    assert part.get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert part.get_filename() == "by_stage-2025-03-10.xlsx"
    sheet = load_workbook(io.BytesIO(part.get_content())).active
    lines = [list(r) for r in sheet.iter_rows(values_only=True)]
    body = {line[0]: (line[1], Decimal(str(line[2] or 0))) for line in lines[1:-1]}
    return body, lines


def by_recipient(smtp) -> dict:
    return {rcpt[0]: message for rcpt, message in smtp.messages}


def run_until_tick(store, worker):
    worker.run_once()  # queues the first tick
    store.clock_.set(TICK)
    return worker.run_once()


def test_each_recipient_gets_their_own_figures_in_a_table_and_a_workbook(shop, smtp_server):
    worker = Worker(shop, smtp=smtp_server.url)
    worker.run_once()
    assert smtp_server.messages == []  # nothing before the schedule's time
    shop.clock_.set(TICK - dt.timedelta(minutes=1))
    worker.run_once()
    assert smtp_server.messages == []
    shop.clock_.set(TICK)
    worker.run_once()
    messages = by_recipient(smtp_server)
    assert sorted(messages) == ["boss@x.test", "seller@x.test"]

    # the seller (scope own) sees their own deals only; the boss (all) sees every deal
    mine, everything = expected(shop, shop.seller), expected(shop)
    assert mine != everything
    for address, figures, labels in (
        ("seller@x.test", mine, {"new": "New", "won": "Won", "lost": "Lost", None: "(empty)"}),
        ("boss@x.test", everything, {"new": "New", "won": "Won", "lost": "Lost", None: "(пусто)"}),
    ):
        message = messages[address]
        body, lines = workbook_figures(message)
        # an empty group stays an empty cell in the workbook, as in the page's export
        assert body == {(labels[s] if s else None): figures[s] for s in figures}
        total = lines[-1]
        assert total[1] == sum(c for c, _ in figures.values())
        assert Decimal(str(total[2])) == sum(s for _, s in figures.values())
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert "<table" in html and "by_stage" in html  # the link back to the report
        for stage in figures:
            assert f">{labels[stage]}</td>" in html
            assert labels[stage] in text
        assert message["From"] == "crm@example.org"

    # money and words in the reader's own locale: the boss reads Russian
    boss = messages["boss@x.test"]
    assert boss["Subject"].startswith("Сделки по стадиям: ")
    assert "Итого" in boss.get_body(("html",)).get_content()
    won = everything["won"][1]
    assert (
        f"{won:,.2f}".replace(",", "\u00a0").replace(".", ",")
        in boss.get_body(("html",)).get_content()
    )
    seller = messages["seller@x.test"]
    assert seller["Subject"].startswith("Deals by stage: Mar 10, 2025")
    assert f"${mine['won'][1]:,.2f}" in seller.get_body(("html",)).get_content()


def test_a_recipient_who_may_not_run_the_report_gets_nothing_and_is_named(shop, smtp_server):
    worker = Worker(shop, smtp=smtp_server.url)
    run_until_tick(shop, worker)
    assert set(by_recipient(smtp_server)) == {"boss@x.test", "seller@x.test"}
    # the tick starts the run of the steps as an instance of its own
    [run] = [i for i in instances(shop, process="weekly_deals") if i["key"].startswith("run:")]
    assert run["status"] == "done"
    [step] = [h for h in instance(shop, run["id"])["history"] if h["kind"] == "send_report"]
    assert step["status"] == "ok"
    assert sorted(step["result"]["sent"]) == sorted([shop.seller, shop.boss])
    refused = {r["user"]: r["reason"] for r in step["result"]["refused"]}
    assert set(refused) == {shop.blind, shop.nosy}
    assert "deal" in refused[shop.blind]  # may not read deals at all
    assert "amount" in refused[shop.nosy]  # may not read the amount the report sums
    # the schedule goes on: the next Monday is queued
    waiting = [i for i in instances(shop, process="weekly_deals") if i["status"] == "waiting"]
    assert [i["due_at"] for i in waiting] == [TICK + dt.timedelta(days=7)]


def test_a_tick_that_runs_twice_sends_nothing_twice(shop, smtp_server):
    worker = Worker(shop, smtp=smtp_server.url)
    run_until_tick(shop, worker)
    assert len(smtp_server.messages) == 2
    worker.run_once()
    assert len(smtp_server.messages) == 2
    # the same tick again, as after a worker died before its batch was marked done
    before = instances(shop, process="weekly_deals")
    [tick] = [i for i in before if i["status"] == "done" and i["key"].startswith("cron:")]
    i = W.instances
    with shop.engine.begin() as conn:
        conn.execute(
            i.update()
            .where(i.c.id == tick["id"])
            .values(
                status="waiting",
                started=False,
                position=None,
                due_at=TICK,
                context={"tick": True, "at": TICK.isoformat(), "vars": {}},
            )
        )
    worker.run_once()
    assert len(smtp_server.messages) == 2
    assert len(outbox(shop)) == 2
    after = instances(shop, process="weekly_deals")
    assert len(after) == len(before) == 3  # the tick, its run, the next tick: none again
    assert [i["status"] for i in after].count("done") == 2


def test_the_email_outbox_gains_its_new_columns_on_an_old_database(shop):
    W.ensure_tables(shop)
    with shop.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE xrm_email DROP COLUMN attachments"))
        conn.execute(sa.text("ALTER TABLE xrm_email DROP COLUMN html"))
    shop._xrm_workflow_tables = False
    W.ensure_tables(shop)
    with shop.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("xrm_email")}
    assert {"html", "attachments"} <= columns


def test_send_report_steps_are_checked_at_their_line(tmp_path):
    from xrm.metadata import load_catalog
    from xrm.metadata.problems import DefinitionError

    bad = {
        **PACK,
        "processes/weekly.yaml": """
process: weekly_deals
on: {schedule: "0 7 * * 1"}
steps:
  - send_report:
      report: by_stag
      to: role:boss
  - send_report:
      report: by_stage
      to: [email:someone@x.test, role:bos]
      parameters: {period: this_quartr, ownr: me, owner: "7"}
""",
    }
    pack = write_pack(tmp_path, "shop", bad, {"core": ">=1.0"})
    with pytest.raises(DefinitionError) as caught:
        load_catalog([SOLUTIONS / "core", pack])
    text = str(caught.value)
    for line in (
        r"weekly.yaml:6:15: .*unknown report 'by_stag'; did you mean 'by_stage'\?",
        r"weekly.yaml:10:12: .*'email:someone@x.test': an email address is not a user",
        r"weekly.yaml:10:34: .*unknown role 'bos'; did you mean 'boss'\?",
        r"weekly.yaml:11:20: .*parameter period: unknown period 'this_quartr'.*did you mean 'this_quarter'\?",
        r"weekly.yaml:11:41: .*has no parameter 'ownr'; did you mean 'owner'\?",
        r"weekly.yaml:11:51: .*parameter owner: expected me \(each reader\)",
    ):
        assert re.search(line, text), (line, text)


# ------------------------------------------------------------------------ in the browser
def test_an_administrator_schedules_a_report_from_its_page_and_removes_it(shop, smtp_server):
    from browser.support import PASSWORD, Client, make_app

    shop.add_user("admin@x.test", "Ada", password=PASSWORD, roles=["administrator"])
    shop.add_user("viewer@x.test", "Vic", password=PASSWORD, roles=["boss"])
    app = make_app(shop)
    admin = Client(app).login("admin@x.test")

    page = admin.get("/reports/by_stage")
    assert 'href="/reports/by_stage/schedules"' in page.get_data(as_text=True)
    page = admin.get("/reports/by_stage/schedules").get_data(as_text=True)
    assert 'data-testid="schedule-weekly_deals"' in page  # the pack's own, not removable
    assert 'data-testid="remove-weekly_deals"' not in page

    # others may not open it, and a form sent without its CSRF token is refused
    viewer = Client(app).login("viewer@x.test")
    assert viewer.get("/reports/by_stage/schedules").status_code == 403
    assert "report-schedules" not in viewer.get("/reports/by_stage").get_data(as_text=True)
    form = {
        "label": "Monday figures",
        "preset": "weekly",
        "time": "07:30",
        "weekday": "1",
        "roles": ["boss"],
        "users": ["seller@x.test"],
        "param-period": "all",
        "format-table": "1",
        "format-xlsx": "1",
    }
    assert admin.post("/reports/by_stage/schedules", form, csrf=False).status_code == 400

    bad = admin.post("/reports/by_stage/schedules", {**form, "preset": "custom", "cron": "99 * *"})
    assert bad.status_code == 422
    assert "is not a cron expression" in bad.get_data(as_text=True)
    nobody = admin.post("/reports/by_stage/schedules", {**form, "roles": [], "users": []})
    assert nobody.status_code == 422
    assert "Choose at least one role or user" in nobody.get_data(as_text=True)

    saved = admin.post("/reports/by_stage/schedules", form)
    assert saved.status_code == 303
    process = shop.refresh().processes["email_by_stage_1"]
    assert process.solution != "shop"  # the customization layer
    assert process.trigger("schedule").cron == "30 7 * * 1"
    [step] = process.steps
    assert step.kind == "send_report"
    assert list(step.spec["to"]) == ["role:boss", "user:seller@x.test"]
    assert dict(step.spec["parameters"]) == {"period": "all"}
    page = admin.get("/reports/by_stage/schedules").get_data(as_text=True)
    assert "Monday figures" in page and "30 7 * * 1" in page

    # the scheduler runs it like any process: at 07:30 the role's members and the user get it
    worker = Worker(shop, smtp=smtp_server.url)
    worker.run_once()
    shop.clock_.set(TICK + dt.timedelta(minutes=30))
    worker.run_once()
    got = [m for (rcpt, m) in smtp_server.messages if m["Subject"].startswith("Monday figures")]
    assert sorted(m["To"] for m in got) == ["boss@x.test", "seller@x.test", "viewer@x.test"]

    removed = admin.post("/reports/by_stage/schedules/email_by_stage_1/delete")
    assert removed.status_code == 303
    assert "email_by_stage_1" not in shop.refresh().processes
    waiting = instances(shop, process="email_by_stage_1", status="waiting")
    assert waiting == []
    assert admin.post("/reports/by_stage/schedules/weekly_deals/delete").status_code == 404


def test_an_empty_report_is_a_sentence_not_an_empty_table(shop, smtp_server):
    shop.customize(
        "process",
        {
            "process": "nothing_to_say",
            "on": {"schedule": "0 7 * * 1"},
            "steps": [
                {
                    "send_report": {
                        "report": "by_stage",
                        "to": "role:boss",
                        "parameters": {"period": "next_year"},  # no deal closes in 2026
                        "formats": ["table"],
                        "subject": "Nothing: {date}",
                    }
                }
            ],
        },
    )
    run_until_tick(shop, Worker(shop, smtp=smtp_server.url))
    [message] = [m for (_r, m) in smtp_server.messages if m["Subject"].startswith("Nothing")]
    assert message["Subject"].replace("\u202f", " ") == "Nothing: 10 мар. 2025 г."  # in Russian
    html = message.get_body(("html",)).get_content()
    assert "<table" not in html and "нет" in html.lower()
    assert list(message.iter_attachments()) == []  # formats: [table] attaches nothing
