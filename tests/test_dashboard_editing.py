"""Personal dashboards made in the browser: *Add to dashboard* on a report page puts a
report's chart, table or KPI on a new "My dashboard" (or one of the user's own), whose
owner alone sees it on every channel (index, page, API, home page; 404 for others); its
owner moves and removes widgets and deletes it; a bad request saves nothing and says why;
the checker refuses an ``owner`` in a pack.  Figures are compared with SQL written here,
for a seller whose scope is ``own``.  On SQLite, and on PostgreSQL with
XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app, opened
from conftest import SOLUTIONS, write_pack

from xrm.metadata.dashboards import dashboard_document
from xrm.metadata.problems import DefinitionError
from xrm.reports.dashboards import clear_cache

SELLER, OTHER, ADMIN = "sam@x.test", "oz@x.test", "ada@x.test"

PROBE = {
    "roles/roles.yaml": """
roles:
  own_seller:
    label: Own seller
    permissions:
      opportunity: {read: own, update: own}
      account: {read: all}
""",
    # a report published to administrators only: a seller does not see it
    "reports/secret.yaml": """
reports:
  secret_pipeline:
    entity: opportunity
    label: Secret pipeline
    roles: [administrator]
    group_by: [stage]
    measures:
      deals: {count: true}
  plain_pipeline:
    entity: opportunity
    label: Plain pipeline
    group_by: [stage]
    measures:
      deals: {count: true}
""",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard_editing")
    probe = write_pack(tmp, "probe", PROBE, {"sales": ">=1.0"})
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales", probe]) as store:
        store.admin = store.add_user(ADMIN, "Ada", password=PASSWORD, roles=["administrator"])
        store.seller = store.add_user(SELLER, "Sam", password=PASSWORD, roles=["own_seller"])
        store.other = store.add_user(OTHER, "Oz", password=PASSWORD, roles=["own_seller"])
        account = store.records("account").create({"name": "Acme"})["id"]
        contact = store.records("contact").create(
            {"first_name": "Jane", "last_name": "Doe", "account": account}
        )["id"]
        stages = ["prospecting", "qualification", "proposal", "won"]
        store.records("opportunity").bulk_create(
            [
                {
                    "name": f"Deal {i:02d}",
                    "account": account,
                    "contact": contact,
                    "amount": Decimal(1000 + 100 * i),
                    "close_date": dt.date.today(),
                    "stage": stages[i % 4],
                    "owner": (store.seller, store.other, store.admin)[i % 3],
                }
                for i in range(24)
            ]
        )
        store.app = make_app(store)
        yield store


@pytest.fixture(autouse=True)
def _fresh(shop):
    clear_cache(shop)
    yield
    # each test starts without personal dashboards
    for name, dashboard in list(shop.refresh().dashboards.items()):
        if dashboard.owner is not None:
            shop.uncustomize("dashboards", name)


def sql(store, text: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def add(client, report="pipeline_by_stage", **form):
    return client.post("/dashboards/add", {"report": report, **form})


def personal(store) -> dict:
    return {n: d for n, d in store.refresh().dashboards.items() if d.owner is not None}


# ------------------------------------------------------------------ adding
def test_report_page_offers_add_to_dashboard_in_both_languages(shop):
    seller = Client(shop.app).login(SELLER)
    page = text(seller.get("/reports/pipeline_by_stage"))
    assert 'data-testid="add-to-dashboard-form"' in page
    assert 'name="csrf_token"' in page and "Add to dashboard" in page
    seller.post("/preferences", {"locale": "ru"})
    page = text(seller.get("/reports/pipeline_by_stage"))
    assert "Добавить на дашборд" in page and "Новый: Мой дашборд" in page
    seller.post("/preferences", {"locale": "en"})  # the language is the user's, kept


def test_add_a_report_to_a_new_personal_dashboard_with_own_figures(shop):
    seller = Client(shop.app).login(SELLER)
    answer = add(seller, widget="table", width="8")
    assert answer.status_code == 303, text(answer)[:500]
    assert answer.headers["Location"].endswith("/dashboards/my_dashboard")
    made = personal(shop)
    assert list(made) == ["my_dashboard"]
    mine = made["my_dashboard"]
    assert mine.owner == SELLER and mine.solution == "customization"
    assert [(w.kind, w.report, w.show, w.width) for w in mine.widgets] == [
        ("report", "pipeline_by_stage", "table", 8)
    ]
    # the page and the API show the seller's own figures only (scope own), as SQL counts
    count = sql(
        shop,
        "SELECT count(*) FROM opportunity WHERE stage NOT IN ('won', 'lost') AND owner = :o",
        o=shop.seller,
    )[0][0]
    everyone = sql(shop, "SELECT count(*) FROM opportunity WHERE stage NOT IN ('won', 'lost')")
    assert 0 < count < everyone[0][0]
    page = text(seller.get("/dashboards/my_dashboard"))
    deals = re.findall(r'data-measure="deals" data-testid="widget-cell">([^<]*)<', page)
    assert sum(int(d) for d in deals) == count
    assert 'data-testid="widget-remove"' in page and 'data-testid="dashboard-delete"' in page
    body = seller.get("/api/v1/dashboards/my_dashboard").get_json()
    assert body["widgets"][0]["report"]["totals"]["deals"] == count
    # the index lists it under My dashboards
    index = text(seller.get("/dashboards"))
    assert 'data-testid="my-dashboards"' in index and "My dashboard" in index
    # a second one is my_dashboard_2, "My dashboard 2"; a KPI takes the chosen measure
    answer = add(seller, widget="kpi", measure="amount", width="4", dashboard="new")
    assert answer.headers["Location"].endswith("/dashboards/my_dashboard_2")
    second = personal(shop)["my_dashboard_2"]
    assert second.label.get("en") == "My dashboard 2" and second.label.get("ru") == "Мой дашборд 2"
    kpi = second.widgets[0]
    assert (kpi.kind, kpi.measure, kpi.width, kpi.compare) == ("kpi", "amount", 4, True)
    amount = sql(
        shop,
        "SELECT sum(amount) FROM opportunity WHERE stage NOT IN ('won', 'lost') AND owner = :o",
        o=shop.seller,
    )[0][0]
    figure = seller.get("/api/v1/dashboards/my_dashboard_2").get_json()["widgets"][0]
    assert Decimal(str(figure["value"])) == Decimal(str(amount))


def test_another_user_never_sees_a_personal_dashboard(shop):
    seller = Client(shop.app).login(SELLER)
    add(seller, widget="chart")
    assert "my_dashboard" in personal(shop)
    for who in (OTHER, ADMIN):  # the administrator included: it is someone's own
        client = Client(shop.app).login(who)
        assert client.get("/dashboards/my_dashboard").status_code == 404
        api = client.get("/api/v1/dashboards/my_dashboard")
        assert api.status_code == 404
        assert "my_dashboard" not in api.get_json()["detail"].replace("'my_dashboard'", "", 1)
        assert "my_dashboard" not in text(client.get("/dashboards"))
        assert "/dashboards/my_dashboard" not in text(client.get("/"))  # menu and home
        # nor may they change it, nor make it their home page
        for url in (
            "/dashboards/my_dashboard/home",
            "/dashboards/my_dashboard/delete",
            "/dashboards/my_dashboard/widgets/0/remove",
        ):
            assert client.post(url).status_code == 404
        refused = add(client, dashboard="my_dashboard")
        assert refused.status_code == 404
        assert "There is no dashboard 'my_dashboard' of yours." in text(refused)
    assert len(personal(shop)["my_dashboard"].widgets) == 1
    # its owner makes it their home page
    assert seller.post("/dashboards/my_dashboard/home").status_code == 303
    home = text(seller.get("/"))
    assert 'data-testid="home-dashboard"' in home and "/dashboards/my_dashboard" in home


def test_remove_move_and_delete(shop):
    seller = Client(shop.app).login(SELLER)
    add(seller, widget="chart")
    add(seller, widget="table", dashboard="my_dashboard", width="12")
    add(seller, widget="kpi", measure="deals", dashboard="my_dashboard", width="4")

    def shape():
        return [(w.kind, w.show if w.kind == "report" else w.measure) for w in
                personal(shop)["my_dashboard"].widgets]  # fmt: skip

    assert shape() == [("report", "chart"), ("report", "table"), ("kpi", "deals")]
    assert (
        seller.post("/dashboards/my_dashboard/widgets/2/move", {"direction": "up"}).status_code
        == 303
    )
    assert shape() == [("report", "chart"), ("kpi", "deals"), ("report", "table")]
    seller.post("/dashboards/my_dashboard/widgets/0/move", {"direction": "down"})
    assert shape() == [("kpi", "deals"), ("report", "chart"), ("report", "table")]
    # the first cannot go up: nothing changes
    seller.post("/dashboards/my_dashboard/widgets/0/move", {"direction": "up"})
    assert shape() == [("kpi", "deals"), ("report", "chart"), ("report", "table")]
    assert seller.post("/dashboards/my_dashboard/widgets/1/remove").status_code == 303
    assert shape() == [("kpi", "deals"), ("report", "table")]
    seller.post("/dashboards/my_dashboard/widgets/0/remove")
    assert shape() == [("report", "table")]
    # the last widget stays: the dashboard itself is deleted instead
    last = seller.post("/dashboards/my_dashboard/widgets/0/remove")
    assert last.status_code == 400 and "delete the dashboard instead" in text(last)
    assert shape() == [("report", "table")]
    # without the CSRF token nothing changes
    assert seller.post("/dashboards/my_dashboard/delete", csrf=False).status_code in (400, 403)
    seller.post("/dashboards/my_dashboard/home")
    assert seller.post("/dashboards/my_dashboard/delete").status_code == 303
    assert personal(shop) == {}
    assert seller.get("/dashboards/my_dashboard").status_code == 404
    assert shop.home_dashboard(shop.seller) is None
    # one layer document per dashboard: moving and removing replaced it, deleting removed it
    left = sql(shop, "SELECT count(*) FROM xrm_customization WHERE kind = 'dashboards'")
    assert left[0][0] == 0


def test_bad_requests_save_nothing_and_say_why(shop):
    seller = Client(shop.app).login(SELLER)
    unknown = add(seller, report="pipeline_by_stag")
    assert unknown.status_code == 404
    assert "There is no report 'pipeline_by_stag' you may see." in text(unknown)
    # a report published to administrators answers as an unknown one
    hidden = add(seller, report="secret_pipeline")
    assert hidden.status_code == 404
    assert "There is no report 'secret_pipeline' you may see." in text(hidden)
    bad_kind = add(seller, widget="gauge")
    assert bad_kind.status_code == 400 and "Unknown widget kind 'gauge'." in text(bad_kind)
    bad_width = add(seller, widget="table", width="13")
    assert bad_width.status_code == 400 and "from 1 to 12" in text(bad_width)
    # the checker's own words: a measure the report has not
    no_measure = add(seller, widget="kpi", measure="revenu")
    assert no_measure.status_code == 422
    assert "has no measure 'revenu'" in text(no_measure)
    # a chart of a report without one
    no_chart = add(seller, report="plain_pipeline", widget="chart")
    assert no_chart.status_code == 422 and "has no chart" in text(no_chart)
    assert personal(shop) == {}
    # Russian messages for a Russian reader
    seller.post("/preferences", {"locale": "ru"})
    assert "Нет доступного вам отчёта" in text(add(seller, report="nope"))
    seller.post("/preferences", {"locale": "en"})
    assert personal(shop) == {}


def test_a_report_on_a_dashboard_is_not_deleted_from_under_it(shop):
    seller = Client(shop.app).login(SELLER)
    built = seller.post(
        "/reports/builder/save",
        {
            "entity": "opportunity",
            "title": "Mine by stage",
            "group-0": "stage",
            "measure-kind-0": "count",
        },
    )
    assert built.status_code == 303, text(built)[:800]
    name = built.headers["Location"].rsplit("/", 1)[-1]
    assert add(seller, report=name, widget="table").status_code == 303
    refused = seller.post(f"/reports/{name}/delete", follow_redirects=True)
    assert "remove it from the dashboard first" in text(refused)
    assert name in shop.refresh().reports
    seller.post("/dashboards/my_dashboard/delete")
    assert seller.post(f"/reports/{name}/delete").status_code == 303
    assert name not in shop.refresh().reports


# ------------------------------------------------------------------ definitions
def test_owner_is_refused_in_a_pack_at_its_place(tmp_path):
    pack = write_pack(
        tmp_path,
        "mine",
        {
            "dashboards/d.yaml": """dashboards:
  mine:
    label: Mine
    owner: sam@x.test
    roles: [administrator]
    widgets:
      - report: pipeline_by_stage
""",
        },
        {"sales": ">=1.0"},
    )
    with opened(tmp_path) as store, pytest.raises(DefinitionError) as caught:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales", pack])
    messages = [str(p) for p in caught.value.problems]
    assert any(
        "dashboards/d.yaml:4:12: dashboards.mine: owner: a personal dashboard is made in the"
        " browser (customization layer)" in m
        for m in messages
    ), messages
    assert any("roles: a personal dashboard (owner) has no roles" in m for m in messages)


def test_a_shipped_dashboard_written_back_compiles_to_itself(shop):
    catalog = shop.refresh()
    for dashboard in catalog.dashboards.values():
        spec = dashboard_document(dashboard)
        again = shop.customize_all(
            [("dashboards", {"dashboards": {dashboard.name: spec}})], dry_run=True
        )[0].dashboards[dashboard.name]
        assert again.widgets == dashboard.widgets
        assert (again.label, again.roles, again.filters) == (
            dashboard.label,
            dashboard.roles,
            dashboard.filters,
        )
