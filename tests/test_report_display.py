"""One reading of report values on every output, and dashboards by email.

A report with a target measure on another entity's field that the report's own entity
lacks (``quota``) and a share reads the same on the page, in its CSV/XLSX exports and in
its email: money in the reader's currency, the share as a percent (a 0.0% cell in the
workbook).  A ``send_report`` step with ``dashboard:`` sends each recipient the dashboard
run as them (the real worker, a real SMTP server on loopback): a seller with scope own and
a boss with scope all get different figures, each checked against SQL written here, a
widget the seller may not see is a one-line note, and the workbook has a sheet per widget
(opened with openpyxl).  On SQLite, and on PostgreSQL with XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack
from openpyxl import load_workbook
from test_report_schedules import smtp_server  # noqa: F401 - a fixture
from workflow_pack import START, MovableClock

from xrm.metadata.formats import Formats
from xrm.reports.mailing import report_mail
from xrm.storage.tables import tables_for
from xrm.workflow import Worker

PACK = {
    "entities/deal.yaml": """
entity: deal
label: {en: Deal, ru: Сделка}
plural: {en: Deals, ru: Сделки}
title: name
fields:
  name:   {type: text, required: true}
  stage:  {type: choice, options: [new, won, lost]}
  amount: {type: money}
  closes: {type: date}
""",
    "entities/quota.yaml": """
entity: quota
label: {en: Quota, ru: План}
title: name
fields:
  name:  {type: text, required: true}
  quota: {type: money}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {read: own}
      quota: {read: own}
  boss:
    permissions:
      deal: {read: all}
      quota: {read: all}
""",
    "reports/deals.yaml": """
reports:
  vs_quota:
    entity: deal
    label: {en: Deals against quota, ru: Сделки и план}
    group_by: [owner]
    measures:
      deals: {count: true, label: {en: Deals, ru: Сделки}}
      won: {count: true, where: [stage, eq, won], label: {en: Won, ru: Выиграно}}
      amount: {sum: amount, label: {en: Amount, ru: Сумма}}
      win_rate: {share: [won, deals], label: {en: Win rate, ru: Доля выигранных}}
    targets:
      target:
        entity: quota
        sum: quota
        groups: {owner: owner}
        label: {en: Quota, ru: План}
    totals: true
  amount_by_month:
    entity: deal
    label: {en: Amount by month, ru: Сумма по месяцам}
    filter: {param: period}
    parameters:
      period: {type: period, field: closes, default: this_year}
    group_by: ["closes:month"]
    measures:
      amount: {sum: amount, label: {en: Amount, ru: Сумма}}
    totals: true
  bosses_only:
    entity: deal
    label: {en: For bosses, ru: Для начальства}
    roles: [boss]
    group_by: [stage]
    measures:
      deals: {count: true, label: {en: Deals, ru: Сделки}}
""",
    "dashboards/desk.yaml": """
dashboards:
  desk:
    label: {en: Sales desk, ru: Стол продаж}
    widgets:
      - kpi: amount_by_month
        measure: amount
        label: {en: Amount this year, ru: Сумма за год}
      - report: vs_quota
        show: table
      - report: bosses_only
      - list:
          entity: deal
          columns: [name, amount, owner]
          sort: [[amount, desc]]
        limit: 3
""",
    "processes/weekly.yaml": """
process: weekly_desk
on: {schedule: "0 7 * * 1"}
steps:
  - send_report:
      dashboard: desk
      to: [role:seller, role:boss]
""",
}
TICK = dt.datetime(2025, 3, 10, 7, 0, tzinfo=dt.UTC)  # the first Monday 07:00 after START


@pytest.fixture
def shop(database, tmp_path):
    clock = MovableClock(START)
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core", write_pack(tmp_path, "shop", PACK, {"core": ">=1.0"})])
    store.clock_ = clock
    store.save_settings({"mail_from": "crm@example.org", "currency": "USD"})
    from browser.support import PASSWORD

    store.seller = store.add_user("seller@x.test", "Sam", password=PASSWORD, roles=["seller"])
    store.boss = store.add_user(
        "boss@x.test", "Борис", password=PASSWORD, roles=["boss"], locale="ru"
    )
    rows = [
        {
            "name": f"deal {i}",
            "stage": ("new", "won", "lost")[i % 3],
            "amount": Decimal(100 * i + 50),
            "closes": dt.date(2025, 1, 1) + dt.timedelta(days=i),
            "owner": store.seller if i % 4 == 0 else store.boss,
        }
        for i in range(20)
    ]
    assert not store.records("deal").bulk_create(rows).failures
    for owner, quota in ((store.seller, "1500.00"), (store.boss, "7250.50")):
        store.records("quota").create(
            {"name": f"q{owner}", "quota": Decimal(quota), "owner": owner}
        )
    yield store
    store.close()


def by_owner(store, owner=None) -> dict:
    """owner -> (deals, won, amount, quota), by hand-written SQL."""
    t = tables_for(store.catalog)
    deal, quota = t["deal"], t["quota"]
    won = sa.func.sum(sa.case((deal.c.stage == "won", 1), else_=0))
    deals = sa.select(deal.c.owner, sa.func.count(), won, sa.func.sum(deal.c.amount)).group_by(
        deal.c.owner
    )
    quotas = sa.select(quota.c.owner, sa.func.sum(quota.c.quota)).group_by(quota.c.owner)
    if owner is not None:
        deals, quotas = deals.where(deal.c.owner == owner), quotas.where(quota.c.owner == owner)
    with store.engine.connect() as conn:
        targets = {o: Decimal(q) for o, q in conn.execute(quotas)}
        return {o: (n, int(w), Decimal(a), targets.get(o)) for o, n, w, a in conn.execute(deals)}


def pct(part, whole) -> str:
    return f"{round(part * 100 / whole, 1):g}%"


def usd(value) -> str:
    return f"${Decimal(value):,.2f}"


def rub_style(value) -> str:  # Russian grouping and decimal comma (the currency is USD)
    return f"{Decimal(value):,.2f}".replace(",", "\u00a0").replace(".", ",")


# ------------------------------------------------------------------ a target on another field
def test_a_target_on_another_entitys_field_reads_alike_on_page_exports_and_email(shop):
    from browser.support import Client, make_app

    app = make_app(shop)
    mine, everything = by_owner(shop, shop.seller), by_owner(shop)
    assert set(mine) == {shop.seller} and set(everything) == {shop.seller, shop.boss}

    seller = Client(app).login("seller@x.test")
    page = seller.get("/reports/vs_quota")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    n, won, amount, quota = mine[shop.seller]
    assert usd(quota) in html and usd(amount) in html
    assert pct(won, n) in html  # the share reads as a percent
    assert usd(everything[shop.boss][3]) not in html  # the boss's quota is not the seller's

    text = seller.get("/reports/vs_quota/export.csv").get_data(as_text=True).lstrip("\ufeff")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["Owner", "Deals", "Won", "Amount", "Win rate", "Quota"]
    assert lines[1][0] == "Sam"
    assert Decimal(lines[1][5]) == quota and Decimal(lines[1][3]) == amount

    boss = Client(app).login("boss@x.test")
    data = boss.get("/reports/vs_quota/export.xlsx").get_data()
    sheet = load_workbook(io.BytesIO(data)).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    names = {"Sam": shop.seller, "Борис": shop.boss}
    for row in rows[1:-1]:
        n, won, amount, quota = everything[names[row[0]]]
        assert (row[1], row[2], Decimal(str(row[3])), Decimal(str(row[5]))) == (
            n,
            won,
            amount,
            quota,
        )
        assert row[4] == pytest.approx(round(won * 100 / n, 1) / 100)  # a fraction shown as %
    assert sheet.cell(row=2, column=5).number_format == "0.0%"
    assert Decimal(str(rows[-1][5])) == sum(q for *_, q in everything.values())

    # the email reads the same as the page, for each reader their own
    report = shop.catalog.reports["vs_quota"]
    mail = report_mail(shop, report, {}, shop.principal(shop.seller), Formats("en", "UTC", "USD"))
    n, won, amount, quota = mine[shop.seller]
    assert usd(quota) in mail.html and pct(won, n) in mail.html
    assert usd(everything[shop.boss][3]) not in mail.html
    mail = report_mail(shop, report, {}, shop.principal(shop.boss), Formats("ru", "UTC", "USD"))
    assert rub_style(everything[shop.boss][3]) in mail.html and "План" in mail.html
    attached = load_workbook(io.BytesIO(_decoded(mail.attachments[0]))).active
    assert attached.cell(row=2, column=5).number_format == "0.0%"


def _decoded(attachment) -> bytes:
    import base64

    return base64.b64decode(attachment["data"])


# ------------------------------------------------------------------ dashboards by email
def test_each_recipient_gets_the_dashboard_as_they_see_it(shop, smtp_server):  # noqa: F811
    worker = Worker(shop, smtp=smtp_server.url)
    worker.run_once()
    shop.clock_.set(TICK)
    worker.run_once()
    messages = {rcpt[0]: message for rcpt, message in smtp_server.messages}
    assert sorted(messages) == ["boss@x.test", "seller@x.test"]
    mine, everything = by_owner(shop, shop.seller), by_owner(shop)

    seller = messages["seller@x.test"]
    assert seller["Subject"].startswith("Sales desk: Mar 10, 2025")
    html = seller.get_body(("html",)).get_content()
    text = seller.get_body(("plain",)).get_content()
    titles = ["Amount this year", "Deals against quota", "For bosses", "Deals"]
    assert re.findall(r'data-widget="\d+">([^<]*)</h3>', html) == titles
    assert all(title in text for title in titles)
    n, won, amount, quota = mine[shop.seller]
    assert usd(quota) in html and usd(amount) in html  # the KPI and the report: own figures
    assert usd(sum(a for _, _, a, _ in everything.values())) not in html
    # the report only bosses see is a note in its place
    assert re.search(r">For bosses</h3>\s*<p[^>]*>Not shown to you: .*not shared", html)
    assert "Previous period" in html and "Change" in html
    # the list: the seller's own deals, the largest first, at most three
    own = sorted(
        (d for d in shop.records("deal").query(limit=100).rows if d["owner"] == shop.seller),
        key=lambda d: -d["amount"],
    )[:3]
    for d in own:
        assert f">{d['name']}</td>" in html
    book = load_workbook(io.BytesIO(next(seller.iter_attachments()).get_content()))
    assert book.sheetnames == ["Amount this year", "Deals against quota", "Deals"]
    kpi = [list(r) for r in book["Amount this year"].iter_rows(values_only=True)]
    assert Decimal(str(kpi[1][0])) == amount
    table = [list(r) for r in book["Deals against quota"].iter_rows(values_only=True)]
    assert table[1][0] == "Sam" and Decimal(str(table[1][5])) == quota
    assert [r[0] for r in book["Deals"].iter_rows(values_only=True)][1:] == [d["name"] for d in own]

    boss = messages["boss@x.test"]
    assert boss["Subject"].startswith("Стол продаж: ")
    html = boss.get_body(("html",)).get_content()
    total = sum(a for _, _, a, _ in everything.values())
    assert rub_style(total) in html  # every deal's amount, in Russian
    assert ">Для начальства</h3>" in html and "Вам не показывается" not in html
    for _, _, _, quota in everything.values():
        assert rub_style(quota) in html
    book = load_workbook(io.BytesIO(next(boss.iter_attachments()).get_content()))
    assert "Для начальства" in book.sheetnames
    sheet = [list(r) for r in book["Для начальства"].iter_rows(values_only=True)]
    t = tables_for(shop.catalog)["deal"]
    with shop.engine.connect() as conn:
        query = sa.select(t.c.stage, sa.func.count()).group_by(t.c.stage)
        counts = {stage: n for stage, n in conn.execute(query)}
    stage = shop.catalog.entity("deal").fields["stage"]
    assert {r[0]: r[1] for r in sheet[1:]} == {
        stage.option(k).label.get("ru"): n for k, n in counts.items()
    }


def test_a_send_report_step_names_a_report_or_a_dashboard_at_its_line(tmp_path):
    from xrm.metadata import load_catalog
    from xrm.metadata.problems import DefinitionError

    bad = {
        **PACK,
        "processes/weekly.yaml": """
process: weekly_desk
on: {schedule: "0 7 * * 1"}
steps:
  - send_report:
      dashboard: dsk
      to: role:boss
  - send_report:
      dashboard: desk
      report: vs_quota
      to: role:boss
  - send_report:
      dashboard: desk
      to: role:boss
      parameters: {perod: this_month}
""",
    }
    pack = write_pack(tmp_path, "shop", bad, {"core": ">=1.0"})
    with pytest.raises(DefinitionError) as caught:
        load_catalog([SOLUTIONS / "core", pack])
    text = str(caught.value)
    for line in (
        r"weekly.yaml:6:18: .*unknown dashboard 'dsk'; did you mean 'desk'\?",
        r"weekly.yaml:\d+:\d+: .*give either report: or dashboard:, not both",
        r"weekly.yaml:15:20: .*dashboard desk has no filter 'perod'",
    ):
        assert re.search(line, text), (line, text)
