"""Report pages through the test client: the index of the reports a user may run (by
module, in their language), a report's parameters as a GET form, the table with option
labels, money in the user's locale, pivots and totals, the chart's data, CSV and XLSX
exports (opened with openpyxl), the records behind every figure (the list's count equals
the figure), the API's refusal for a report on a hidden field, and the ``chart:`` block's
checks.  On SQLite, and on PostgreSQL with XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser.support import PASSWORD, Client, make_app, opened
from conftest import SOLUTIONS, write_pack
from openpyxl import load_workbook

import xrm
from xrm.cli import main
from xrm.reports import run_report

PROBE = {
    "roles/roles.yaml": """
roles:
  limited:
    label: Limited
    permissions:
      opportunity: {read: own}
      account: {read: all}
    fields:
      opportunity: {amount: hidden}
""",
    "reports/probe.yaml": """
reports:
  stage_by_month:
    entity: opportunity
    label: {en: Stages by month, ru: Стадии по месяцам}
    filter: {param: period}
    parameters:
      period: {type: period, field: close_date, default: all}
    group_by: ["close_date:month", stage]
    pivot: stage
    measures:
      deals: {count: true, label: {en: Deals, ru: Сделки}}
      amount: {sum: amount, label: {en: Amount, ru: Сумма}}
    totals: true
    chart: {kind: stacked_bar, measures: [deals]}
  by_industry:
    entity: opportunity
    label: {en: Deals by industry, ru: Сделки по отраслям}
    filter: {all: [{param: stage}]}
    parameters:
      stage: {type: choice, field: stage, multiple: true}
    group_by: [account.industry]
    measures: {deals: count}
    totals: true
    chart: {kind: pie}
  by_owner_today:
    entity: opportunity
    group_by: [owner, "created_at:day"]
    measures: {deals: count}
    totals: true
    chart: {kind: line}
  leads_by_status:
    entity: lead
    group_by: [status]
    measures: {leads: count}
  headline:
    entity: opportunity
    label: {en: Headline, ru: Главное}
    measures:
      deals: {count: true, label: {en: Deals, ru: Сделки}}
      amount: {sum: amount, label: {en: Amount, ru: Сумма}}
      average: {avg: amount, label: {en: Average, ru: Среднее}}
    chart: {kind: kpi, measures: [deals, amount]}
""",
}
ADMIN, SELLER, LIMITED, OLGA = (
    "admin@x.test",
    "seller@x.test",
    "limited@x.test",
    "olga@x.test",
)
STAGES = ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
NBSP = "\u00a0"


class Shop:
    pass


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-reports")
    probe = write_pack(tmp, "probe", PROBE, {"sales": ">=1.0"})
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales", probe]) as store:
        s = Shop()
        s.store = store
        s.admin = store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"])
        s.seller = store.add_user(
            SELLER, "Sam Seller", password=PASSWORD, roles=["user"], teams=["east"]
        )
        s.limited = store.add_user(LIMITED, "Lim", password=PASSWORD, roles=["limited"])
        s.olga = store.add_user(
            OLGA,
            "Ольга",
            password=PASSWORD,
            roles=["read_only"],
            locale="ru",
            time_zone="Europe/Moscow",
        )
        accounts = store.records("account")
        retail = accounts.create({"name": "Acme", "industry": "retail"})["id"]
        finance = accounts.create({"name": "Initech", "industry": "finance"})["id"]
        bare = accounts.create({"name": "No industry"})["id"]
        jane = store.records("contact").create(
            {"first_name": "Jane", "last_name": "Doe", "account": retail}
        )["id"]
        today = dt.date.today()
        rows = []
        for i in range(36):
            stage = STAGES[i % len(STAGES)]
            rows.append(
                {
                    "name": f"Deal {i:02d}",
                    "account": (retail, finance, bare)[i % 3],
                    "contact": jane,
                    "amount": Decimal(1000 + 250 * i) + Decimal("0.50"),
                    "close_date": today - dt.timedelta(days=95 * (i % 5)),
                    "stage": stage,
                    "lost_reason": "price" if stage == "lost" else None,
                    "owner": (s.seller, s.admin, s.limited)[i // 6 % 3],
                }
            )
        store.records("opportunity").bulk_create(rows)
        s.app = make_app(store)
        yield s


def client(shop, email) -> Client:
    return Client(shop.app).login(email)


def text(response) -> str:
    return response.get_data(as_text=True)


def run(shop, name, params=None, user=None):
    store = shop.store
    principal = store.principal(user) if user else None
    return run_report(store, store.refresh().reports[name], params or {}, principal)


def cells(page: str) -> list[tuple[str, str, str]]:
    """(measure, text, link) of every figure in a report page's table."""
    found = re.findall(
        r'<a href="([^"]+)" data-measure="(\w+)" data-testid="report-(?:cell|total)">([^<]*)</a>',
        page,
    )
    return [(m, html.unescape(t), html.unescape(u)) for u, m, t in found]


def heads(page: str) -> list[str]:
    return [
        html.unescape(h)
        for h in re.findall(r'<th scope="row" class="fw-normal">([^<]*)</th>', page)
    ]


def chart_of(page: str) -> dict:
    block = re.search(
        r'<script type="application/json" id="report-chart-data">(.*?)</script>', page
    )
    assert block, "no chart data on the page"
    return json.loads(block.group(1))


def option_labels(shop, field: str, locale: str = "en") -> dict:
    entity = shop.store.refresh().entity("opportunity")
    return {o.value: o.label.get(locale) for o in entity.fields[field].choices}


def list_count(c: Client, url: str) -> int:
    """The record count the list at ``url`` shows (its count endpoint, as the page loads it)."""
    parts = urlsplit(url)
    view = parts.path.rsplit("/", 1)[1]
    answer = text(c.get(f"/views/{view}/count?{parts.query}"))
    found = re.search(r"(\d+)", answer.replace(",", ""))
    assert found, answer
    return int(found.group(1))


# ------------------------------------------------------------------ the index
def test_the_index_lists_the_reports_a_user_may_run_by_module(shop):
    page = text(client(shop, SELLER).get("/reports"))
    assert 'data-testid="reports-link"' in page  # the navigation links the index
    for name in ("pipeline_by_stage", "won_revenue_by_month", "stage_by_month", "headline"):
        assert f'data-testid="report-{name}"' in page
    modules = re.findall(r'<h2 class="h6[^"]*">([^<]*)</h2>', page)
    assert modules == ["Core", "Sales", "Probe"], modules  # in install order
    sales, probe = (page.index(f">{m}</h2>") for m in modules[1:])
    assert sales < page.index("Pipeline by stage") < probe < page.index("Stages by month")
    # a user who may not read the amount is not offered the reports that sum it
    limited = text(client(shop, LIMITED).get("/reports"))
    assert 'data-testid="report-by_industry"' in limited
    assert 'data-testid="report-pipeline_by_stage"' not in limited
    assert 'data-testid="report-headline"' not in limited


def test_the_index_and_labels_in_russian(shop):
    olga = client(shop, OLGA)
    page = text(olga.get("/reports"))
    assert "Отчёты" in page and "Воронка по стадиям" in page and "Продажи" in page
    report = text(olga.get("/reports/pipeline_by_stage"))
    assert "Стадия" in report and "Итого" in report and "Поиск" in heads(report)[0]


# ------------------------------------------------------------------ the page
def test_the_table_shows_option_labels_money_and_totals_in_stage_order(shop):
    seller = client(shop, SELLER)
    response = seller.get("/reports/pipeline_by_stage")
    assert response.status_code == 200
    page = text(response)
    result = run(shop, "pipeline_by_stage", user=shop.seller)
    labels = option_labels(shop, "stage")
    assert heads(page) == [labels[r["stage"]] for r in result.rows]
    assert heads(page)[:4] == ["Prospecting", "Qualification", "Proposal", "Negotiation"]
    figures = cells(page)
    deals = [t for m, t, _ in figures if m == "deals"]
    amounts = [t for m, t, _ in figures if m == "amount"]
    assert deals == [str(r["deals"]) for r in result.rows] + [str(result.totals["deals"])]
    total = result.totals["amount"]
    assert amounts[-1] == f"${total:,.2f}"  # money in the user's locale: "$12,345.50"
    assert "prospecting</th>" not in page  # option labels, not raw values
    assert 'data-testid="report-totals"' in page


def test_money_and_numbers_in_the_russian_locale(shop):
    page = text(client(shop, OLGA).get("/reports/headline"))
    result = run(shop, "headline", user=shop.olga)
    amount = result.rows[0]["amount"]
    whole, cents = f"{amount:,.2f}".split(".")
    expected = whole.replace(",", NBSP) + "," + cents + NBSP + "$"
    kpi = re.search(
        r'data-testid="kpi-amount">.*?<div class="display-6[^"]*">([^<]*)</div>', page, re.S
    )
    assert kpi and html.unescape(kpi.group(1)) == expected
    deals = re.search(
        r'data-testid="kpi-deals">.*?<div class="display-6[^"]*">([^<]*)</div>', page, re.S
    )
    assert deals.group(1) == str(result.rows[0]["deals"])
    assert "Сделки" in page and "Главное" in page


def test_parameters_are_a_get_form_and_narrow_the_figures(shop):
    seller = client(shop, SELLER)
    page = text(seller.get("/reports/won_revenue_by_month"))
    form = re.search(r'<form id="report-parameters"[^>]*>', page).group(0)
    assert 'method="get"' in form and 'hx-get="/reports/won_revenue_by_month"' in form
    assert 'hx-target="#report-body"' in form and 'hx-push-url="true"' in form
    # the default period (last 12 months) is chosen; "all" widens it
    assert re.search(r'<option value="last_12_months" selected>', page)
    default = run(shop, "won_revenue_by_month", user=shop.seller)
    everything = run(shop, "won_revenue_by_month", {"period": "all"}, user=shop.seller)
    wide = text(seller.get("/reports/won_revenue_by_month?period=all"))
    assert [t for m, t, _ in cells(wide) if m == "deals"][-1] == str(everything.totals["deals"])
    assert [t for m, t, _ in cells(page) if m == "deals"][-1] == str(default.totals["deals"])
    assert everything.totals["deals"] > default.totals["deals"]
    # owner = me: only the seller's deals
    mine = text(seller.get("/reports/pipeline_by_stage?owner=me"))
    expected = run(shop, "pipeline_by_stage", {"owner": "me"}, user=shop.seller)
    assert [t for m, t, _ in cells(mine) if m == "deals"][-1] == str(expected.totals["deals"])
    assert '<option value="me" selected>' in mine
    # a team: its members' deals
    east = text(seller.get("/reports/pipeline_by_stage?team=east"))
    assert '<option value="east" selected>east</option>' in east
    by_team = run(shop, "pipeline_by_stage", {"team": "east"}, user=shop.seller)
    assert [t for m, t, _ in cells(east) if m == "deals"][-1] == str(by_team.totals["deals"])
    # several options of a choice parameter
    two = text(seller.get("/reports/by_industry?stage=won&stage=lost"))
    both = run(shop, "by_industry", {"stage": "won,lost"}, user=shop.seller)
    assert [t for m, t, _ in cells(two) if m == "deals"][-1] == str(both.totals["deals"])
    assert '<option value="won" selected>' in two and '<option value="lost" selected>' in two


def test_a_parameter_change_redraws_only_the_report_body(shop):
    seller = client(shop, SELLER)
    response = seller.get(
        "/reports/won_revenue_by_month?period=this_year",
        headers={"HX-Request": "true", "HX-Target": "report-body"},
    )
    assert response.status_code == 200
    body = text(response)
    assert "<html" not in body
    assert 'data-testid="report-table"' in body or 'data-testid="report-empty"' in body
    assert "period=this_year" in body  # the export links carry the parameters


def test_a_bad_parameter_is_explained_on_the_page(shop):
    response = client(shop, SELLER).get("/reports/won_revenue_by_month?period=yesteryear")
    assert response.status_code == 400
    page = html.unescape(text(response))
    assert 'data-testid="report-problem"' in page and "unknown period 'yesteryear'" in page
    assert 'data-testid="report-parameters"' in page  # the form stays, to choose again


def test_an_empty_result_is_an_empty_report(shop):
    nothing = text(client(shop, SELLER).get("/reports/won_revenue_by_month?period=next_month"))
    assert run(shop, "won_revenue_by_month", {"period": "next_month"}).rows == []
    assert 'data-testid="report-empty"' in nothing and "No records match" in nothing
    assert 'id="report-chart-data"' not in nothing
    assert 'data-testid="report-parameters"' in nothing


def test_a_pivot_shows_its_columns_and_a_stacked_chart(shop):
    page = text(client(shop, ADMIN).get("/reports/stage_by_month"))
    result = run(shop, "stage_by_month", user=shop.admin)
    columns = re.findall(r'data-testid="pivot-column">([^<]*)</th>', page)
    assert columns == ["Prospecting", "Qualification", "Proposal", "Negotiation", "Won", "Lost"]
    labels = option_labels(shop, "stage")
    assert columns == [labels[c] for c in result.columns]
    chart = chart_of(page)
    assert chart["kind"] == "stacked_bar"
    assert [d["label"] for d in chart["datasets"]] == columns
    first = chart["datasets"][0]
    assert first["data"] == [(r["cells"][0] or {}).get("deals") for r in result.rows]
    assert len(chart["labels"]) == len(result.rows)
    # month buckets read as months ("March 2025"), not dates
    assert re.fullmatch(r"[A-Z][a-z]+ \d{4}", heads(page)[0])


def test_charts_of_the_shipped_reports(shop):
    seller = client(shop, SELLER)
    funnel = chart_of(text(seller.get("/reports/pipeline_by_stage")))
    assert funnel["kind"] == "funnel"
    assert funnel["labels"][:2] == ["Prospecting", "Qualification"]
    assert funnel["datasets"][0]["label"] == "Amount"
    assert funnel["datasets"][0]["text"][0].startswith("$")
    bars = chart_of(text(seller.get("/reports/won_revenue_by_month?period=all")))
    assert bars["kind"] == "bar" and bars["datasets"][0]["label"] == "Revenue"
    page = text(seller.get("/reports/pipeline_by_stage"))
    assert "vendor/chartjs/chart.umd.min.js" in page and "js/reports.js" in page
    assert "<script>" not in page  # no inline script: the data is a JSON block
    asset = seller.get("/static/vendor/chartjs/chart.umd.min.js")
    assert asset.status_code == 200 and b"Chart.js v4" in asset.data[:200]


# ------------------------------------------------------------------ exports
def test_the_xlsx_export_has_typed_cells_labels_and_a_bold_total(shop):
    seller = client(shop, SELLER)
    response = seller.get("/reports/stage_by_month/export.xlsx")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    result = run(shop, "stage_by_month", user=shop.seller)
    assert rows[0][:3] == ("Close date", "Prospecting Deals", "Prospecting Amount")
    assert rows[0][-2:] == ("Total Deals", "Total Amount")
    first = rows[1]
    assert (
        isinstance(first[0], dt.datetime) and first[0].date() == result.rows[0]["close_date:month"]
    )
    assert sheet.cell(row=2, column=1).number_format == "mmm yyyy"
    deals = first[1]
    assert deals == ((result.rows[0]["cells"][0] or {}).get("deals"))
    amount = sheet.cell(row=2, column=3)
    if amount.value is not None:
        assert isinstance(amount.value, int | float)
        assert amount.number_format == "#,##0.00"
    totals = rows[-1]
    assert totals[0] == "Total"
    assert totals[-2] == result.totals["deals"]
    assert abs(Decimal(str(totals[-1])) - result.totals["amount"]) < Decimal("0.001")
    last = sheet.max_row
    assert all(sheet.cell(row=last, column=c).font.b for c in range(1, sheet.max_column + 1))
    assert sheet.cell(row=1, column=1).font.b and not sheet.cell(row=2, column=2).font.b
    assert len(rows) == len(result.rows) + 2


def test_exports_show_option_labels_and_the_api_gives_values(shop):
    seller = client(shop, SELLER)
    exported = seller.get("/reports/pipeline_by_stage/export.csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    body = text(exported)
    assert body.startswith("\ufeff")
    lines = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert lines[0] == ["Stage", "Deals", "Amount", "Weighted amount"]
    assert lines[1][0] == "Prospecting" and lines[-1][0] == "Total"
    xlsx = load_workbook(io.BytesIO(seller.get("/reports/pipeline_by_stage/export.xlsx").data))
    assert xlsx.active.cell(row=2, column=1).value == "Prospecting"
    # the API: values as its JSON has them, in CSV and in XLSX
    api = load_workbook(
        io.BytesIO(seller.get("/api/v1/reports/pipeline_by_stage?format=xlsx").data)
    )
    assert api.active.cell(row=2, column=1).value == "prospecting"
    assert isinstance(api.active.cell(row=2, column=2).value, int)
    raw = list(
        csv.reader(io.StringIO(text(seller.get("/api/v1/reports/pipeline_by_stage?format=csv"))))
    )
    assert raw[1][0] == "prospecting"
    russian = client(shop, OLGA).get("/reports/pipeline_by_stage/export.xlsx")
    sheet = load_workbook(io.BytesIO(russian.data)).active
    assert sheet.cell(row=1, column=1).value == "Стадия"
    assert sheet.cell(row=sheet.max_row, column=1).value == "Итого"


def test_the_openapi_document_offers_xlsx(shop):
    document = client(shop, SELLER).get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/reports/{name}"]["get"]
    formats = next(p for p in operation["parameters"] if p["name"] == "format")
    assert formats["schema"]["enum"] == ["json", "csv", "xlsx"]
    content = operation["responses"]["200"]["content"]
    assert "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" in content


# ------------------------------------------------------------------ click-through
@pytest.mark.parametrize(
    "user, url",
    [
        (SELLER, "/reports/pipeline_by_stage"),
        (SELLER, "/reports/pipeline_by_stage?owner=me&period=this_year"),
        (ADMIN, "/reports/stage_by_month"),
        (SELLER, "/reports/won_revenue_by_month?period=all"),
        (SELLER, "/reports/by_industry?stage=won,lost"),
        (OLGA, "/reports/by_owner_today"),
        (LIMITED, "/reports/by_industry"),
    ],
)
def test_the_records_behind_every_figure_are_as_many_as_it_counts(shop, user, url):
    c = client(shop, user)
    page = text(c.get(url))
    figures = [(m, t, u) for m, t, u in cells(page) if m == "deals"]
    assert figures, page[:2000]
    for _measure, shown, link in figures:
        assert link.startswith("/views/opportunity__all?")
        assert list_count(c, link) == int(shown.replace(",", "").replace(NBSP, "")), link
    # the chart's bars link to the same lists
    block = re.search(r'id="report-chart-data">(.*?)</script>', page)
    if block:
        chart = json.loads(block.group(1))
        for dataset in chart["datasets"]:
            for value, link in zip(dataset["data"], dataset["links"]):
                if value is not None and chart["measure"] == "Deals":  # a count
                    assert list_count(c, link) == value


def test_an_empty_group_and_a_date_bucket_become_conditions_of_the_list(shop):
    c = client(shop, SELLER)
    page = text(c.get("/reports/by_industry"))
    rows = dict(zip(heads(page), [u for m, t, u in cells(page) if m == "deals"]))
    empty = rows["(empty)"]
    raw = json.loads(parse_qs(urlsplit(empty).query)["filter"][0])
    assert ["account.industry", "is_empty"] in raw["all"]
    listing = text(c.get(empty))
    shown = re.findall(r'<a href="/r/opportunity/\d+" class="fw-medium">([^<]*)</a>', listing)
    expected = run(shop, "by_industry", user=shop.seller)
    count = next(r["deals"] for r in expected.rows if r["account.industry"] is None)
    assert len(shown) == count > 0
    assert 'data-testid="filter-text"' in listing  # the list says what it is filtered by
    months = text(c.get("/reports/won_revenue_by_month?period=all"))
    link = [u for m, t, u in cells(months) if m == "deals"][0]
    raw = json.loads(parse_qs(urlsplit(link).query)["filter"][0])
    ranges = [cond for cond in raw["all"] if cond[0] == "close_date"]
    start = dt.date.fromisoformat(ranges[0][2])
    assert ranges[0][1] == "ge" and ranges[1][1] == "lt" and start.day == 1
    end = dt.date.fromisoformat(ranges[1][2])
    assert end.day == 1 and (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1


def test_scope_own_sees_only_its_own_figures_on_the_page(shop):
    c = client(shop, LIMITED)
    page = text(c.get("/reports/by_industry"))
    total = [t for m, t, u in cells(page) if m == "deals"][-1]
    own = sum(1 for i in range(36) if i // 6 % 3 == 2)
    assert int(total) == own
    # the page's exports carry the same figures: the totals line of the CSV and the XLSX
    exported = list(
        csv.reader(
            io.StringIO(
                c.get("/reports/by_industry/export.csv").get_data(as_text=True).lstrip("\ufeff")
            )
        )
    )
    assert exported[-1][0] == "Total" and int(exported[-1][1]) == own
    sheet = load_workbook(io.BytesIO(c.get("/reports/by_industry/export.xlsx").data)).active
    last = [cell.value for cell in list(sheet.iter_rows())[-1]]
    assert last[1] == own


# ------------------------------------------------------------------ refusals
def test_a_report_on_a_hidden_field_is_refused_as_the_api_refuses_it(shop):
    c = client(shop, LIMITED)
    api = c.get("/api/v1/reports/pipeline_by_stage")
    assert api.status_code == 403
    detail = api.get_json()["detail"]
    assert "amount: you may not read this field" in detail
    page = c.get("/reports/pipeline_by_stage")
    assert page.status_code == 403
    assert detail in html.unescape(text(page))  # the API's words
    assert c.get("/reports/pipeline_by_stage/export.xlsx").status_code == 403
    assert c.get("/reports/pipeline_by_stage/export.csv").status_code == 403


def test_a_report_on_records_the_user_may_not_read_is_refused(shop):
    limited = client(shop, LIMITED)
    assert 'data-testid="report-leads_by_status"' not in text(limited.get("/reports"))
    page = limited.get("/reports/leads_by_status")
    assert page.status_code == 403
    assert "you may not read lead records" in text(page)
    assert limited.get("/reports/leads_by_status/export.xlsx").status_code == 403
    seller = client(shop, SELLER)
    assert 'data-testid="report-leads_by_status"' in text(seller.get("/reports"))
    assert seller.get("/reports/leads_by_status").status_code == 200


def test_unknown_reports_and_formats_are_not_found(shop):
    c = client(shop, SELLER)
    assert c.get("/reports/no_such_report").status_code == 404
    assert c.get("/reports/pipeline_by_stage/export.pdf").status_code == 404


def test_every_text_of_the_report_pages_has_a_russian_translation():
    from xrm.web.ui import i18n

    literal = re.compile(r"""\b_\(\s*(?P<q>["'])(?P<text>(?:\\.|(?!(?P=q)).)*)(?P=q)""")
    web = Path(xrm.__file__).parent / "web"
    files = [*(web / "templates" / "ui" / "reports").glob("*.html"), web / "ui" / "reports.py"]
    used = {m.group("text") for f in files for m in literal.finditer(f.read_text("utf-8"))}
    assert used and not sorted(t for t in used if t not in i18n.RU)


# ------------------------------------------------------------------ the chart block
def test_chart_blocks_are_checked_with_positions(tmp_path, capsys):
    pack = write_pack(
        tmp_path,
        "charts",
        {
            "reports/charts.yaml": """reports:
  bad:
    entity: opportunity
    group_by: [stage]
    measures: {n: count, amount: {sum: amount}}
    chart: {kind: bar, measures: [n, amout]}
  stacked:
    entity: opportunity
    group_by: [stage]
    measures: {n: count}
    chart: {kind: stacked_bar}
  pie:
    entity: opportunity
    group_by: [stage, owner]
    pivot: owner
    measures: {n: count}
    chart: {kind: pie}
  kpi:
    entity: opportunity
    group_by: [stage]
    measures: {n: count}
    chart: {kind: kpi}
  funnel:
    entity: opportunity
    group_by: [stage]
    measures: {n: count, s: {sum: amount}}
    chart: {kind: funnel, measures: [n, s]}
  line:
    entity: opportunity
    measures: {n: count}
    chart: {kind: line}
""",
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(pack)]) == 1
    out = capsys.readouterr().out
    where = "charts/reports/charts.yaml"
    expected = [
        f"{where}:6:38: reports.bad: chart: unknown measure 'amout'; did you mean 'amount'?"
        " (expected one of n, amount)",
        f"{where}:11:19: reports.stacked: chart: a stacked_bar stacks the pivot's columns:"
        " the report needs a pivot",
        f"{where}:17:19: reports.pie: chart: a pie chart shows the rows, and this report has"
        " a pivot",
        f"{where}:22:19: reports.kpi: chart: a kpi shows the totals of a grouped report:"
        " set totals: true",
        f"{where}:27:37: reports.funnel: chart: a funnel chart shows one measure (got 2)",
        f"{where}:31:19: reports.line: chart: a line chart needs a group for its bars, slices"
        " or points (group_by)",
    ]
    lines = out.splitlines()
    for line in expected:
        assert any(got.endswith(line) for got in lines), (line, lines)
    assert len(lines) == len(expected)  # nothing else
    shape = write_pack(
        tmp_path,
        "shape",
        {
            "reports/shape.yaml": """reports:
  shape:
    entity: opportunity
    measures: {n: count}
    chart: {kind: donut, colour: red}
"""
        },
        {"sales": ">=1.0"},
    )
    assert main(["check", str(shape)]) == 1
    out = capsys.readouterr().out
    assert (
        "shape/reports/shape.yaml:5:19: reports.shape: reports.shape.chart.kind: 'donut' is not allowed"
        in out
    )
    assert "colour" in out


def test_the_shipped_reports_have_charts():
    from xrm.metadata import load_catalog

    catalog = load_catalog([SOLUTIONS / "core", SOLUTIONS / "sales"])
    assert catalog.reports["pipeline_by_stage"].chart.kind == "funnel"
    assert catalog.reports["pipeline_by_stage"].chart.measures == ("amount",)
    assert catalog.reports["won_revenue_by_month"].chart.kind == "bar"
