"""The report builder through the test client (real CSRF, real database: SQLite, and
PostgreSQL with XRM_TEST_DATABASE_URL): a business user builds, previews and saves a
personal report whose figures agree with SQL written here and are only their own records;
nobody else reaches it through any channel (index, page, exports, API, OpenAPI, builder);
an administrator publishes one to a role; a bad draft shows its problems next to their
controls and saves nothing; the saved document round-trips through the customization
layer and a catalog built afresh; saving again replaces it and delete removes it."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, database_url, make_app
from conftest import SOLUTIONS, write_pack

import xrm
from xrm.storage import tables as T

PROBE = {
    "roles/roles.yaml": """
roles:
  seller:
    label: {en: Seller, ru: Продавец}
    permissions:
      opportunity: {create: all, read: own, update: own}
      account: {read: all}
  head_of_sales:
    label: {en: Head of sales, ru: Руководитель продаж}
    permissions:
      opportunity: {read: all}
      account: {read: all}
  blinkered:
    permissions:
      opportunity: {read: all}
      account: {read: all}
    fields:
      opportunity: {probability: hidden}
""",
}
ADMIN, SAM, SUE, MIA, BO = "admin@b.test", "sam@b.test", "sue@b.test", "mia@b.test", "bo@b.test"
STAGES = ["prospecting", "qualification", "proposal", "won"]


class Shop:
    pass


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-builder")
    probe = write_pack(tmp, "probe", PROBE, {"sales": ">=1.0"})
    with database_url(tmp) as (url, options):
        store = xrm.open(url, **options)
        try:
            store.install([SOLUTIONS / "core", SOLUTIONS / "sales", probe])
            s = Shop()
            s.store, s.url, s.options = store, url, options
            store.add_user(BO, "Bo", password=PASSWORD, roles=["blinkered"])
            s.admin = store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"])
            s.sam = store.add_user(SAM, "Sam", password=PASSWORD, roles=["seller"])
            s.sue = store.add_user(SUE, "Sue", password=PASSWORD, roles=["seller"])
            s.mia = store.add_user(
                MIA, "Mia", password=PASSWORD, roles=["head_of_sales"], locale="ru"
            )
            account = store.records("account").create({"name": "Acme"})["id"]
            contact = store.records("contact").create(
                {"first_name": "Jane", "last_name": "Doe", "account": account}
            )["id"]
            today = dt.date.today()
            store.records("opportunity").bulk_create(
                [
                    {
                        "name": f"Deal {i:02d}",
                        "account": account,
                        "contact": contact,
                        "amount": Decimal(500 + 125 * i),
                        "close_date": today - dt.timedelta(days=40 * (i % 4)),
                        "stage": STAGES[i % len(STAGES)],
                        "owner": (s.sam, s.sue, s.admin)[i % 3],
                    }
                    for i in range(30)
                ]
            )
            s.app = make_app(store)
            yield s
        finally:
            store.close()


def client(shop, email) -> Client:
    return Client(shop.app).login(email)


def text(response) -> str:
    return response.get_data(as_text=True)


def sql(shop, query: str, **params) -> list:
    with shop.store.engine.connect() as conn:
        return conn.execute(sa.text(query), params).all()


def layer_documents(shop, name: str) -> list[dict]:
    with shop.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(T.customizations.c.document).where(T.customizations.c.kind == "reports")
        ).scalars()
        return [d for d in rows if name in d.get("reports", {})]


def problems(page: str) -> dict[str, str]:
    """control -> its problems' text, as the builder shows them next to it."""
    found = {}
    for control, body in re.findall(
        r'<div id="problem-([\w-]+)" class="invalid-feedback[^"]*"[^>]*>(.*?)</div>\s*(?=<|$)',
        page,
        re.S,
    ):
        words = html.unescape(re.sub(r"<[^>]+>", " ", body)).strip()
        if words:
            found[control] = words
    return found


def cells(page: str) -> list[tuple[str, str, str]]:
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


DRAFT = {
    "entity": "opportunity",
    "title": "My pipeline",
    "group-0": "stage",
    "measure-kind-0": "count",
    "measure-kind-1": "sum",
    "measure-field-1": "amount",
    "totals": "1",
    "chart": "bar",
    "param-period": "close_date",
    "param-period-default": "all",
}


def stage_figures(shop, owner: int | None = None) -> dict[str, tuple[int, Decimal]]:
    where = "WHERE owner = :owner" if owner is not None else ""
    rows = sql(
        shop,
        f"SELECT stage, count(*), sum(amount) FROM opportunity {where} GROUP BY stage",
        owner=owner,
    )
    return {r[0]: (r[1], Decimal(str(r[2])).quantize(Decimal("0.01"))) for r in rows}


def list_count(c: Client, url: str) -> int:
    """The record count the list at ``url`` shows (its count endpoint, as the page loads it)."""
    parts = urlsplit(url)
    view = parts.path.rsplit("/", 1)[1]
    answer = text(c.get(f"/views/{view}/count?{parts.query}"))
    found = re.search(r"(\d+)", answer.replace(",", ""))
    assert found, answer
    return int(found.group(1))


def money(value: Decimal) -> str:
    return f"${value:,.2f}"


# ------------------------------------------------------------------ a personal report
def test_a_business_user_builds_previews_and_saves_a_personal_report(shop):
    sam = client(shop, SAM)
    page = text(sam.get("/reports/new?entity=opportunity"))
    assert 'data-testid="report-builder"' in page
    # only what a seller may read is offered: the lookup one level deep, date buckets
    assert 'value="account.name"' in page and 'value="close_date:month"' in page

    preview = sam.post("/reports/builder/preview", DRAFT, htmx=True)
    assert preview.status_code == 200
    body = text(preview)
    assert problems(body) == {}
    expected = stage_figures(shop, owner=shop.sam)  # own scope: Sam's records alone
    order = [s for s in STAGES if s in expected]
    assert heads(body) == [s.capitalize() for s in order]
    figures = [t for _, t, _ in cells(body)]
    wanted = [x for s in order for x in (str(expected[s][0]), money(expected[s][1]))]
    total = (sum(c for c, _ in expected.values()), sum(a for _, a in expected.values()))
    assert figures == wanted + [str(total[0]), money(total[1])]
    assert "report-chart-data" in body and "export-csv" not in body  # nothing to export yet
    assert "owner: sam@b.test" in html.unescape(body)  # the definition it would save

    saved = sam.post("/reports/builder/save", DRAFT)
    assert saved.status_code == 303 and saved.headers["Location"].endswith("/reports/my_pipeline")
    page = text(sam.get("/reports/my_pipeline"))
    assert [t for _, t, _ in cells(page)] == figures  # the saved report shows the preview
    assert 'data-testid="report-edit"' in page
    assert 'data-testid="report-my_pipeline"' in text(sam.get("/reports"))
    api = sam.get("/api/v1/reports/my_pipeline", headers={"Accept": "application/json"})
    assert api.status_code == 200
    assert {r["stage"]: r["records"] for r in api.get_json()["rows"]} == {
        s: c for s, (c, _) in expected.items()
    }
    # the records behind a figure: the list holds as many as the figure counts
    measure, figure, link = cells(page)[0]
    assert measure == "records"
    assert list_count(sam, link) == int(figure)

    # a title made of Russian words makes a Latin name; a second one gets a free name
    other = {**DRAFT, "title": "Мои сделки"}
    assert sam.post("/reports/builder/save", other).headers["Location"].endswith("/moi_sdelki")
    again = sam.post("/reports/builder/save", other)
    assert again.headers["Location"].endswith("/moi_sdelki_2")


def test_nobody_else_reaches_a_personal_report_through_any_channel(shop):
    sam = client(shop, SAM)
    sam.post("/reports/builder/save", {**DRAFT, "title": "Sam secret"})
    assert "sam_secret" in shop.store.refresh().reports
    unknown = "no_such_report"
    for email in (SUE, MIA, ADMIN):  # another seller, a manager, even an administrator
        other = client(shop, email)
        assert 'data-testid="report-sam_secret"' not in text(other.get("/reports"))
        for url in (
            "/reports/sam_secret",
            "/reports/sam_secret/export.csv",
            "/reports/sam_secret/export.xlsx",
            "/reports/sam_secret/edit",
            "/reports/new?copy=sam_secret",
        ):
            assert other.get(url).status_code == 404, (email, url)
            # answered as an unknown report, so guessing names tells nothing
            assert other.get(url.replace("sam_secret", unknown)).status_code == 404
        api = other.get("/api/v1/reports/sam_secret")
        assert api.status_code == 404
        assert api.get_json()["detail"].startswith("unknown report 'sam_secret'")
        assert other.post("/reports/sam_secret/delete").status_code == 404
        posted = other.post(
            "/reports/builder/preview", {**DRAFT, "editing": "sam_secret"}, htmx=True
        )
        assert posted.status_code == 404
    listing = client(shop, SUE).get("/api/v1/openapi.json").get_json()
    path = listing["paths"]["/api/v1/reports/{name}"]["get"]["parameters"][0]["schema"]
    assert "sam_secret" not in path.get("enum", []) and "pipeline_by_stage" in path["enum"]
    assert "sam_secret" in text(sam.get("/reports"))  # still Sam's


def test_a_personal_report_stays_its_owners_in_dashboards_runs_and_emails(shop):
    """The channels that run a report without the report pages: ``run_report`` itself, a
    dashboard widget (whose cache is keyed by roles for readers of everything) and the
    scheduled email.  Another seller with the same roles gets a refusal, never Sam's
    figures."""
    from xrm.metadata.formats import Formats
    from xrm.reports import ReportRefused, run_report
    from xrm.reports.dashboards import run_dashboard
    from xrm.reports.mailing import report_mail

    store = shop.store
    client(shop, SAM).post("/reports/builder/save", {**DRAFT, "title": "Sam private"})
    report = store.refresh().reports["sam_private"]
    sam, sue = store.principal(shop.sam), store.principal(shop.sue)
    assert run_report(store, report, {}, sam).rows  # Sam's own
    with pytest.raises(ReportRefused, match="not shared"):
        run_report(store, report, {}, sue)
    assert run_report(store, report, {}, None).rows  # the platform sees every report
    store.customize(
        "dashboards",
        {
            "dashboards": {
                "shared_board": {"label": "Shared", "widgets": [{"report": "sam_private"}]}
            }
        },
    )
    try:
        board = store.refresh().dashboards["shared_board"]
        [mine] = run_dashboard(store, board, {}, sam).widgets
        assert mine.error is None and mine.result.rows
        [theirs] = run_dashboard(store, board, {}, sue).widgets  # after Sam's is cached
        assert theirs.status == 403 and theirs.result is None and "not shared" in theirs.error
    finally:
        store.uncustomize("dashboards", "shared_board")
    with pytest.raises(ReportRefused):
        report_mail(store, report, {}, sue, Formats("en"))


def test_a_business_user_cannot_publish(shop):
    sam = client(shop, SAM)
    sam.post(
        "/reports/builder/save",
        {**DRAFT, "title": "Try publish", "visibility": "published", "roles": "head_of_sales"},
    )
    report = shop.store.refresh().reports["try_publish"]
    assert report.owner == SAM and report.roles == ()
    assert client(shop, MIA).get("/reports/try_publish").status_code == 404


# ------------------------------------------------------------------ published to a role
def test_an_administrator_publishes_a_report_to_a_role(shop):
    admin = client(shop, ADMIN)
    page = text(admin.get("/reports/new?entity=opportunity"))
    assert 'data-testid="builder-role-head_of_sales"' in page  # administrators choose roles
    draft = {**DRAFT, "title": "Team pipeline", "visibility": "published", "roles": "head_of_sales"}
    assert admin.post("/reports/builder/save", draft).status_code == 303
    report = shop.store.refresh().reports["team_pipeline"]
    assert report.owner is None and report.roles == ("head_of_sales",)

    mia = client(shop, MIA)  # the role sees every record: her figures are all of them
    assert 'data-testid="report-team_pipeline"' in text(mia.get("/reports"))
    rows = mia.get("/api/v1/reports/team_pipeline").get_json()["rows"]
    assert {r["stage"]: r["records"] for r in rows} == {
        s: c for s, (c, _) in stage_figures(shop).items()
    }
    assert mia.get("/reports/team_pipeline/export.csv").status_code == 200
    sue = client(shop, SUE)  # no such role: as if it did not exist
    assert 'data-testid="report-team_pipeline"' not in text(sue.get("/reports"))
    assert sue.get("/reports/team_pipeline").status_code == 404
    assert sue.get("/api/v1/reports/team_pipeline").status_code == 404
    assert sue.get("/reports/team_pipeline/export.xlsx").status_code == 404
    # the administrator edits a published report of the layer; Mia cannot
    assert admin.get("/reports/team_pipeline/edit").status_code == 200
    assert mia.get("/reports/team_pipeline/edit").status_code == 404
    # publishing to a role that does not exist is a problem at the roles, nothing saved
    bad = admin.post("/reports/builder/save", {**draft, "title": "Ghost", "roles": "ghost"})
    assert bad.status_code == 422
    assert "unknown role 'ghost'" in problems(text(bad))["roles"]
    assert "ghost" not in shop.store.refresh().reports


# ------------------------------------------------------------------ a bad draft
def test_a_bad_draft_shows_positioned_problems_and_saves_nothing(shop):
    sam = client(shop, SAM)
    before = len(layer_documents(shop, "broken"))
    bad = {
        **DRAFT,
        "title": "Broken",
        "measure-field-1": "name",  # a sum of a text
        "chart": "pie",  # with a pivot
        "group-1": "close_date:month",
        "pivot": "owner",  # not one of the groups
    }
    answer = sam.post("/reports/builder/preview", bad, htmx=True)
    found = problems(text(answer))
    assert set(found) == {"measure-1", "chart", "pivot"}, found
    assert re.search(
        r"draft:\d+:\d+: reports\.broken: measure sum_name: sum needs a number", found["measure-1"]
    )
    assert "a pie chart shows the rows, and this report has a pivot" in found["chart"]
    assert "pivot 'owner' is not one of the groups" in found["pivot"]
    assert "Fix the marked problems" in text(answer)
    saved = sam.post("/reports/builder/save", bad)
    assert saved.status_code == 422
    assert problems(text(saved))["measure-1"] == found["measure-1"]
    assert "broken" not in shop.store.refresh().reports
    assert len(layer_documents(shop, "broken")) == before
    # the JSON Schema's problems come first (as in a pack), at their control too
    found = problems(text(sam.post("/reports/builder/preview", {**DRAFT, "limit": "5000"})))
    assert set(found) == {"limit"} and re.search(
        r"^draft:\d+:\d+: reports\.my_pipeline_2: .*5000 is more than the maximum of 1000",
        found["limit"],
    )
    # a filter row that cannot be read is refused at the filter
    rows = [*DRAFT.items(), ("fb.field", "amount"), ("fb.op", "gt"), ("fb.value", "lots")]
    found = problems(text(sam.post("/reports/builder/preview", rows, htmx=True)))
    assert "Amount" in found["filter"]
    # a name given by hand that another report has
    taken = sam.post("/reports/builder/save", {**DRAFT, "name": "pipeline_by_stage"})
    assert taken.status_code == 422
    assert "pipeline_by_stage is taken" in problems(text(taken))["name"]
    # no CSRF token, no save
    assert sam.post("/reports/builder/save", DRAFT, csrf=False).status_code == 400


def test_a_field_the_user_may_not_read_is_refused(shop):
    bo = client(shop, BO)  # the probability is hidden from Bo
    page = text(bo.get("/reports/new?entity=opportunity"))
    assert 'value="probability"' not in page  # not offered
    assert 'value="probability"' in text(client(shop, ADMIN).get("/reports/new?entity=opportunity"))
    draft = {**DRAFT, "title": "Peek", "measure-kind-2": "avg", "measure-field-2": "probability"}
    body = html.unescape(text(bo.post("/reports/builder/preview", draft, htmx=True)))
    assert "You may not run this report" in body and "probability" in body
    assert 'data-testid="report-table"' not in body
    assert bo.post("/reports/builder/save", draft).status_code == 422
    assert "peek" not in shop.store.refresh().reports


# ------------------------------------------------------------------ the layer
def test_the_document_round_trips_through_the_layer_and_a_fresh_catalog(shop):
    sam = client(shop, SAM)
    draft = {
        **DRAFT,
        "title": "Round trip",
        "group-1": "close_date:quarter",
        "pivot": "close_date:quarter",
        "chart": "stacked_bar",
        "measure-kind-2": "weighted",
        "measure-field-2": "amount",
        "measure-by-2": "probability",
        "measure-divide-2": "100",
        "param-owner": "1",
        "sort-key": "stage",
        "sort-dir": "asc",
        "limit": "10",
        "fb.field": "stage",
        "fb.op": "ne",
        "fb.value": "won",
    }
    assert sam.post("/reports/builder/save", draft).status_code == 303
    (document,) = layer_documents(shop, "round_trip")
    spec = document["reports"]["round_trip"]
    assert spec["owner"] == SAM and spec["entity"] == "opportunity"
    assert spec["measures"]["weighted_amount"]["weighted"] == {
        "sum": "amount",
        "by": "probability",
        "divide": 100,
    }
    assert spec["filter"] == {
        "all": [{"all": [["stage", "ne", "won"]]}, {"param": "period"}, {"param": "owner"}]
    }
    report = shop.store.refresh().reports["round_trip"]
    fresh = xrm.open(shop.url, **shop.options)
    try:
        again = fresh.refresh().reports["round_trip"]
    finally:
        fresh.close()
    assert again == report and again.solution == "customization"
    assert report.pivot == "close_date:quarter" and report.sort == (("stage", "asc"),)
    assert report.limit == 10 and set(report.parameters) == {"period", "owner"}
    # the builder reads it back as it was saved: saving unchanged changes nothing
    page = text(sam.get("/reports/round_trip/edit"))
    assert 'value="weighted" selected' in page and 'name="editing" value="round_trip"' in page
    resaved = sam.post("/reports/builder/save", {**draft, "editing": "round_trip"})
    assert resaved.status_code == 303
    assert layer_documents(shop, "round_trip") == [document]  # replaced, not piled up
    assert shop.store.refresh().reports["round_trip"] == report
    # edited: one document, the new one
    sam.post("/reports/builder/save", {**draft, "editing": "round_trip", "title": "Renamed"})
    (document,) = layer_documents(shop, "round_trip")
    assert document["reports"]["round_trip"]["label"] == {"en": "Renamed", "ru": "Renamed"}
    # and deleted
    assert sam.post("/reports/round_trip/delete").status_code == 303
    assert layer_documents(shop, "round_trip") == []
    assert "round_trip" not in shop.store.refresh().reports
    assert sam.get("/reports/round_trip").status_code == 404


def test_a_pack_report_is_copied_not_edited(shop):
    sam = client(shop, SAM)
    page = text(sam.get("/reports/pipeline_by_stage"))
    assert 'data-testid="report-copy"' in page and 'data-testid="report-edit"' not in page
    assert sam.get("/reports/pipeline_by_stage/edit").status_code == 404
    copy = text(sam.get("/reports/new?copy=pipeline_by_stage"))
    assert 'value="Copy of Pipeline by stage"' in copy
    assert 'name="editing"' not in copy
    assert 'value="stage" selected' in copy  # its group, measures and chart come along


def test_the_builder_speaks_russian(shop):
    page = text(client(shop, MIA).get("/reports/new?entity=opportunity"))
    assert "Конструктор отчётов" in page and "Группировать по" in page and "Показатели" in page


def test_owner_and_roles_in_a_pack_are_checked_at_their_place(tmp_path):
    from xrm.metadata import load_catalog
    from xrm.metadata.problems import DefinitionError

    pack = write_pack(
        tmp_path,
        "audience",
        {
            "reports/r.yaml": """
reports:
  mine:
    entity: account
    owner: someone@x.test
    measures: {n: count}
  for_roles:
    entity: account
    roles: [user, salse_manager]
    measures: {n: count}
""",
        },
        {"core": ">=1.0"},
    )
    with pytest.raises(DefinitionError) as caught:
        load_catalog([SOLUTIONS / "core", pack])
    messages = [str(p).split("audience/", 1)[1] for p in caught.value.problems]
    assert messages == [
        "reports/r.yaml:5:12: reports.mine: owner: a personal report is made in the browser "
        "(customization layer); a pack publishes a report to roles instead",
        "reports/r.yaml:9:19: reports.for_roles: unknown role 'salse_manager'; "
        "did you mean 'manager'?",
    ]
