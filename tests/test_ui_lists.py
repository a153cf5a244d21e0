"""Lists, kanban and calendars through the test client: columns from the view, sort by
column, search, quick filters, the filter builder writing the filter language, keyset
pages, counts, saved views, bulk update and delete, CSV and XLSX export, kanban moves
with stage rules, calendars in the user's zone, and row-level security throughout."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from browser.support import ADMIN, READER, SELLER, Client, make_app, world


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui-lists")) as built:
        store = built.store
        today = dt.date.today()
        # 60 leads for paging, owned by the seller
        store.records("lead", built.seller).bulk_create(
            [
                {
                    "last_name": f"Lead {i:02d}",
                    "company": f"Company {i:02d}",
                    "owner": built.seller,
                    "source": "web_form" if i % 2 else "referral",
                }
                for i in range(60)
            ]
        )
        store.records("meeting", built.seller).create(
            {
                "subject": "Quarterly review",
                "starts_at": dt.datetime.combine(today.replace(day=10), dt.time(21, 30), dt.UTC),
            }
        )
        yield built


@pytest.fixture(scope="module")
def app(w):
    return make_app(w.store, XRM_KANBAN_CARDS=10)


def text(response) -> str:
    return response.get_data(as_text=True)


def names(page: str) -> list[str]:
    """The record titles in a list page, top to bottom."""
    return re.findall(r'<a href="/r/\w+/\d+" class="fw-medium">([^<]*)</a>', page)


def deal(w, name, **values):
    base = {
        "name": name,
        "account": w.acme["id"],
        "close_date": dt.date.today() + dt.timedelta(days=30),
        "owner": w.seller,
    }
    base.update(values)
    return w.store.records("opportunity", w.seller).create(base)


# ------------------------------------------------------------------------ columns and sort
def test_list_shows_the_views_columns_in_the_users_formats(w, seller):
    page = text(seller.get("/views/open_opportunities"))
    headers = re.findall(r'<th scope="col"[^>]*data-path="([^"]+)"', page)
    assert headers == ["name", "account", "amount", "close_date", "stage", "probability", "owner"]
    assert "$1,200.50" in page and "Acme Corporation" in page and "Sam Seller" in page
    assert '<span class="badge xrm-badge xrm-badge-gray">Prospecting</span>' in page


def test_sort_by_column_and_back(w, seller):
    by_amount = names(text(seller.get("/views/open_opportunities?sort=-amount")))
    assert by_amount.index("Globex rollout") < by_amount.index("Acme renewal")
    assert by_amount[-1] == "Initech pilot" or "Initech pilot" not in by_amount  # no amount: last
    header = text(seller.get("/views/open_opportunities?sort=amount"))
    assert re.search(r'aria-sort="ascending"', header)
    assert "sort=-amount" in header  # clicking again sorts the other way


def test_htmx_requests_get_only_the_results(seller):
    response = seller.get(
        "/views/open_opportunities?sort=name",
        headers={"HX-Request": "true", "HX-Target": "list-results"},
    )
    page = text(response)
    assert "<!doctype html>" not in page and 'data-testid="list-table"' in page
    assert 'id="list-state" hx-swap-oob="true"' in page and 'name="sort" value="name"' in page


def test_search(w, seller):
    assert names(text(seller.get("/views/open_opportunities?q=globex"))) == ["Globex rollout"]


def test_quick_filters(w, seller):
    deal(w, "Industry check")
    retail = names(text(seller.get("/views/open_opportunities?qf.account.industry=retail")))
    assert "Acme renewal" in retail and "Globex rollout" not in retail
    mine = names(text(seller.get("/views/open_opportunities?qf.owner=me")))
    assert "Acme renewal" in mine
    soon = names(text(seller.get("/views/open_opportunities?qf.close_date=next_n_days:7")))
    assert "Initech pilot" in soon and "Globex rollout" not in soon
    page = text(seller.get("/views/open_leads?qf.source=referral"))
    assert "Lead 00" in page and "Lead 01" not in page


def test_filter_builder_writes_the_filter_language(w, seller):
    url = "/views/open_opportunities?fb.mode=all&fb.field=amount&fb.op=gt&fb.value=1000&fb.field=name&fb.op=contains&fb.value=roll"
    page = text(seller.get(url))
    assert names(page) == ["Globex rollout"]
    written = re.search(r'data-testid="filter-json">([^<]*)<', page).group(1)
    assert json.loads(written.replace("&#34;", '"')) == {
        "all": [["amount", "gt", 1000], ["name", "contains", "roll"]]
    }
    # the same filter given as the language itself
    same = names(
        text(
            seller.get(
                "/views/open_opportunities?filter="
                + json.dumps({"all": [["amount", "gt", 1000], ["name", "contains", "roll"]]})
            )
        )
    )
    assert same == ["Globex rollout"]
    # links keep it (sort, pages) as the language
    assert "filter=%7B%22all%22" in page
    row = text(seller.get("/views/open_opportunities/filter-row?path=stage"))
    assert 'value="in"' in row and "Prospecting" in row


def test_a_bad_filter_is_reported_not_raised(seller):
    page = text(
        seller.get("/views/open_opportunities?filter=" + json.dumps(["no_such_field", "eq", 1]))
    )
    assert 'data-testid="list-error"' in page and "no field" in page
    response = seller.get("/views/open_opportunities?filter={not json")
    assert response.status_code == 302


def test_keyset_pages_forward_and_back(w, seller):
    first = text(seller.get("/views/open_leads?sort=last_name"))
    page_one = names(first)
    assert len(page_one) == 50 and page_one[0] == "Lead 00"
    next_link = (
        re.search(r'href="(/views/open_leads\?[^"]+)"[^>]*data-testid="next-page"', first)
        .group(1)
        .replace("&amp;", "&")
    )
    second = text(seller.get(next_link))
    page_two = names(second)
    assert page_two[0] == "Lead 50" and len(page_two) == 10
    assert 'data-testid="next-page"' not in second
    back = (
        re.search(r'href="(/views/open_leads\?[^"]+)"[^>]*data-testid="previous-page"', second)
        .group(1)
        .replace("&amp;", "&")
    )
    assert names(text(seller.get(back))) == page_one
    assert text(seller.get("/views/open_leads/count")) == "60 records"


def test_saved_views_are_personal(w, app, seller):
    response = seller.post(
        "/views/open_opportunities/saved",
        {"name": "Big deals", "filter": json.dumps(["amount", "gt", 1000]), "sort": "-amount"},
    )
    saved = parse_qs(urlsplit(response.location).query)["saved"][0]
    page = text(seller.get(f"/views/open_opportunities?saved={saved}"))
    assert names(page)[0] == "Globex rollout" and "Initech pilot" not in names(page)
    assert "Big deals" in page
    other = Client(app).login(ADMIN)
    assert "Big deals" not in text(other.get("/views/open_opportunities"))
    assert "Initech pilot" in names(
        text(other.get(f"/views/open_opportunities?saved={saved}"))
    )  # not theirs: ignored
    seller.post(f"/saved/{saved}/delete", {"view": "open_opportunities"})
    assert "Big deals" not in text(seller.get("/views/open_opportunities"))


def headers_of(page: str) -> list[str]:
    return re.findall(r'<th scope="col"[^>]*data-path="([^"]+)"', page)


def test_users_choose_the_columns_and_their_order(w, seller):
    page = text(seller.get("/views/open_opportunities?cols=stage,name,account.industry"))
    assert headers_of(page) == ["stage", "name", "account.industry"]
    # the chooser offers every column, the shown ones first and ticked, in their order
    chooser = re.search(r'data-testid="columns-form"(.*?)</form>', page, re.S).group(1)
    offered = re.findall(r'data-path="([^"]+)"', chooser)
    assert offered[:3] == ["stage", "name", "account.industry"] and "amount" in offered[3:]
    ticked = re.findall(r'value="([^"]+)" id="col-\d+" checked', chooser)
    assert ticked == ["stage", "name", "account.industry"]
    assert "lines" not in offered  # no column behind a children field
    # what does not resolve is dropped; nothing left means the view's own columns
    assert headers_of(text(seller.get("/views/open_opportunities?cols=nope,amount"))) == ["amount"]
    default = ["name", "account", "amount", "close_date", "stage", "probability", "owner"]
    assert headers_of(text(seller.get("/views/open_opportunities?cols="))) == default
    assert headers_of(text(seller.get("/views/open_opportunities?cols=nope"))) == default
    # without scripts the checkboxes arrive one by one
    page = text(
        seller.get("/views/open_opportunities?columns_form=1&col=amount&col=name&cols_ignored=1")
    )
    assert headers_of(page) == ["amount", "name"]
    # the choice rides along with sorting and filtering links
    page = text(seller.get("/views/open_opportunities?cols=name,amount&sort=-amount"))
    assert 'name="cols" value="name,amount"' in page  # kept in the controls form
    assert "cols=name%2Camount" in page  # and in the column-sort links


def test_a_saved_view_keeps_its_columns_and_exports_follow_them(w, seller):
    response = seller.post(
        "/views/open_opportunities/saved",
        {"name": "Narrow", "cols": "name,amount", "sort": "-amount"},
        htmx=True,
    )
    assert response.status_code == 204  # htmx: the browser is sent to the saved view
    saved = parse_qs(urlsplit(response.headers["HX-Redirect"]).query)["saved"][0]
    page = text(seller.get(f"/views/open_opportunities?saved={saved}"))
    assert headers_of(page) == ["name", "amount"]
    assert names(page)[0] == "Globex rollout"
    exported = seller.get(f"/views/open_opportunities/export.csv?saved={saved}")
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["Name", "Amount"]


# ------------------------------------------------------------------------ bulk
def test_bulk_update_and_delete(w, seller):
    a, b = deal(w, "Bulk A"), deal(w, "Bulk B")
    form = [
        ("ids", str(a["id"])),
        ("ids", str(b["id"])),
        ("action", "update"),
        ("field", "forecast_category"),
        ("forecast_category", "commit"),
    ]
    response = seller.post("/views/open_opportunities/bulk", form, htmx=True)
    assert response.status_code == 204 and response.headers["HX-Redirect"].startswith(
        "/views/open_opportunities"
    )
    records = w.store.records("opportunity")
    assert (
        records.get(a["id"])["forecast_category"]
        == records.get(b["id"])["forecast_category"]
        == "commit"
    )
    assert "2 records updated." in text(seller.get("/views/open_opportunities"))
    response = seller.post(
        "/views/open_opportunities/bulk",
        [("ids", str(a["id"])), ("ids", str(b["id"])), ("action", "delete")],
    )
    assert response.status_code == 303
    assert records.count(["id", "in", [a["id"], b["id"]]]).value == 0


def test_bulk_update_is_all_or_nothing(w, seller):
    a, b = deal(w, "Atomic A"), deal(w, "Atomic B", amount=Decimal("5"))
    # moving to "won" needs an amount: b can, a cannot, so neither moves
    form = [
        ("ids", str(b["id"])),
        ("ids", str(a["id"])),
        ("action", "update"),
        ("field", "stage"),
        ("stage", "lost"),
    ]
    seller.post("/views/open_opportunities/bulk", form)
    page = text(seller.get("/views/open_opportunities"))
    assert "Nothing was changed" in page and "Lost reason" in page
    records = w.store.records("opportunity")
    assert records.get(a["id"])["stage"] == records.get(b["id"])["stage"] == "prospecting"


def test_bulk_needs_a_selection(seller):
    seller.post("/views/open_opportunities/bulk", {"action": "delete"})
    assert "Select records first." in text(seller.get("/views/open_opportunities"))


# ------------------------------------------------------------------------ export
def test_export_csv_and_xlsx_of_the_list_as_it_stands(w, seller):
    response = seller.get(
        "/views/open_opportunities/export.csv?sort=-amount&filter="
        + json.dumps(["amount", "gt", 1000])
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["Name", "Account", "Amount", "Close date", "Stage", "Probability", "Owner"]
    assert [r[0] for r in rows[1:]][:2] == ["Globex rollout", "Acme renewal"]
    assert rows[1][1] == "Globex" and rows[1][2] == "50000.00" and rows[1][6] == "Sam Seller"
    response = seller.get("/views/open_opportunities/export.xlsx?q=globex")
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(response.data)).active
    values = list(sheet.values)
    assert values[0][0] == "Name" and values[1][0] == "Globex rollout"
    assert values[1][2] == 50000 and isinstance(values[1][3], dt.datetime | dt.date)


def test_exported_text_is_never_run_as_a_formula(w, app):
    w.store.records("account").create({"name": '=HYPERLINK("x")'})
    reader = Client(app).login(READER)
    exported = reader.get("/views/all_accounts/export.csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(exported.lstrip("\ufeff"))))
    assert [r[0] for r in rows if "HYPERLINK" in r[0]] == ['\'=HYPERLINK("x")']
    from openpyxl import load_workbook

    workbook = reader.get("/views/all_accounts/export.xlsx").data
    cells = [c for row in load_workbook(io.BytesIO(workbook)).active.iter_rows() for c in row]
    (cell,) = [c for c in cells if "HYPERLINK" in str(c.value)]
    assert cell.value == '=HYPERLINK("x")' and cell.data_type == "s"  # text, as typed


def test_export_respects_row_level_security(w, app):
    reader = Client(app).login(READER)  # reads everything
    everything = reader.get("/views/all_accounts/export.csv").get_data(as_text=True)
    assert "Initech" in everything
    seller = Client(app).login(SELLER)  # reads only the team's records
    theirs = seller.get("/views/all_accounts/export.csv").get_data(as_text=True)
    assert "Acme Corporation" in theirs and "Initech" not in theirs
    assert "Initech" not in text(seller.get("/views/all_accounts"))


# ------------------------------------------------------------------------ kanban
def test_kanban_columns_and_cards(w, seller):
    page = text(seller.get("/views/pipeline_board"))
    columns = re.findall(r'data-testid="column-(\w+)"', page)
    assert columns[:6] == ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
    assert f'data-testid="card-{w.deal["id"]}"' in page


def test_kanban_move_goes_through_the_records_service(w, seller):
    moved = deal(w, "Board move", contact=w.jane["id"])
    response = seller.post(
        "/kanban/pipeline_board/move",
        {"id": str(moved["id"]), "value": "qualification", "version": str(moved["version"])},
    )
    assert response.status_code == 200 and response.get_json()["ok"]
    assert w.store.records("opportunity").get(moved["id"])["stage"] == "qualification"
    # a stage rule: proposal needs an amount
    version = response.get_json()["version"]
    response = seller.post(
        "/kanban/pipeline_board/move",
        {"id": str(moved["id"]), "value": "proposal", "version": str(version)},
    )
    assert response.status_code == 422
    assert "Amount: required for stage Proposal" in response.get_json()["message"]
    # not an allowed transition
    response = seller.post(
        "/kanban/pipeline_board/move",
        {"id": str(moved["id"]), "value": "won", "version": str(version)},
    )
    assert response.status_code == 422
    # a stale card
    response = seller.post(
        "/kanban/pipeline_board/move",
        {"id": str(moved["id"]), "value": "prospecting", "version": "1"},
    )
    assert response.status_code == 409
    assert w.store.records("opportunity").get(moved["id"])["stage"] == "qualification"


def test_kanban_counts_what_does_not_fit(w, seller):
    page = text(seller.get("/views/lead_board"))
    assert "50 more…" in page  # 60 new leads, 10 cards a column here


# ------------------------------------------------------------------------ calendar
def test_calendar_view_and_activities_calendar_in_the_users_zone(w, seller):
    today = dt.date.today()
    month = today.strftime("%Y-%m")
    page = text(seller.get(f"/views/meetings_calendar?month={month}"))
    assert "Quarterly review" in page
    # 21:30 UTC on the 10th is 00:30 on the 11th in Moscow
    day = re.search(
        rf'data-date="{today:%Y-%m}-11">(?:(?!data-date=).)*?<a class="xrm-event[^>]*title="([^"]*)"',
        page,
        re.S,
    )
    assert day and "Quarterly review" in day.group(1)
    assert "Quarterly review" in text(seller.get(f"/calendar?month={month}"))
    assert "Quarterly review" not in text(seller.get("/calendar?month=1999-01"))
    closes = text(
        seller.get(
            "/views/opportunity_calendar?month=" + (today + dt.timedelta(days=40)).strftime("%Y-%m")
        )
    )
    assert "Globex rollout" in closes
