"""Every definition kind edited in the browser as YAML, through the real WSGI app: the
text checked as typed against the JSON Schema and the cross-checks at line and column, a
save shown as its plan and applied in place of the earlier version, revert to the pack's
own definition, a new definition, and what the administrator typed kept on an error."""

from __future__ import annotations

import html

import pytest
import sqlalchemy as sa
from browser.support import ADMIN, SELLER, Client, make_app, world

from xrm.storage import tables as T


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("admin-definitions")) as built:
        yield built


@pytest.fixture
def admin(w):
    return Client(make_app(w.store)).login(ADMIN)


def text(response) -> str:
    return response.get_data(as_text=True)


def layer_rows(store, kind: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(T.customizations)
            .where(T.customizations.c.kind == kind)
        ).scalar_one()


URL = "/admin/definitions/process/proposal_follow_up"


def test_a_process_is_disabled_then_reverted_through_plans(w, admin):
    listing = text(admin.get("/admin/definitions"))
    assert 'data-definition="process:proposal_follow_up"' in listing
    assert 'data-definition="reports:pipeline_by_stage"' in listing
    page = text(admin.get(URL))
    assert "process: proposal_follow_up" in page and "enter_stage: proposal" in page

    source = page.split('data-testid="definition-text">')[1].split("</textarea>")[0]

    yaml_text = html.unescape(source).replace(
        "process: proposal_follow_up\n", "process: proposal_follow_up\nenabled: false\n"
    )
    before = layer_rows(w.store, "process")
    plan = admin.post(URL, {"text": yaml_text})
    assert plan.status_code == 200 and 'data-testid="apply"' in text(plan)
    assert w.store.refresh().processes["proposal_follow_up"].enabled  # not yet
    documents = html.unescape(text(plan).split('name="documents" value="')[1].split('"')[0])
    assert admin.post(f"{URL}/apply", {"documents": documents}).status_code == 303
    assert not w.store.refresh().processes["proposal_follow_up"].enabled
    assert layer_rows(w.store, "process") == before + 1
    # saved again: the new version replaces the earlier one, nothing piles up
    again = admin.post(URL, {"text": yaml_text.replace("enabled: false", "enabled: true")})
    documents = html.unescape(text(again).split('name="documents" value="')[1].split('"')[0])
    admin.post(f"{URL}/apply", {"documents": documents})
    assert layer_rows(w.store, "process") == before + 1
    assert "customized" in text(admin.get(URL))

    review = admin.post(f"{URL}/revert", {})
    assert "the pack&#39;s version applies again" in text(
        review
    ) or "pack's version applies again" in text(review)
    assert layer_rows(w.store, "process") == before + 1  # not yet
    assert admin.post(f"{URL}/revert", {"confirm": "1"}).status_code == 303
    assert layer_rows(w.store, "process") == before
    assert w.store.refresh().processes["proposal_follow_up"].enabled


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (
            "process: proposal_follow_up\nentity: opportunity\non: {enter_stage: proposal\n",
            "4:1: YAML syntax: did not find expected",
        ),
        (
            "process: proposal_follow_up\nentity: opportunity\non: {enter_stage: proposal}\n"
            "steps:\n  - notfy: {to: owner}\n",
            "5:5: ",
        ),
        (
            "process: proposal_follow_up\nentity: opportunity\non: {enter_stage: propsal}\n"
            "steps:\n  - stop: true\n",
            "propsal",
        ),
        (
            "process: another_name\nentity: opportunity\nsteps: []\n",
            "this page edits process 'proposal_follow_up'",
        ),
    ],
)
def test_problems_are_shown_as_typed_at_line_and_column(w, admin, typed, expected):
    checked = html.unescape(text(admin.post(f"{URL}/check", {"text": typed})))
    assert 'data-testid="definition-problems"' in checked and expected in checked
    saved = admin.post(URL, {"text": typed})
    assert saved.status_code == 422
    assert typed.splitlines()[0] in html.unescape(text(saved))  # what was typed is kept


def test_a_new_report_is_made_from_yaml(w, admin):
    assert admin.get("/admin/definitions/new?kind=reports&name=Bad Name").status_code == 303
    page = admin.get("/admin/definitions/reports/deals_by_owner?new=1")
    assert page.status_code == 200
    typed = (
        "reports:\n  deals_by_owner:\n    entity: opportunity\n    label: {en: Deals by owner}\n"
        "    group_by: [owner]\n    measures:\n      deals: {count: true}\n"
    )
    assert 'data-testid="definition-ok"' in text(
        admin.post("/admin/definitions/reports/deals_by_owner/check", {"text": typed})
    )
    plan = text(admin.post("/admin/definitions/reports/deals_by_owner", {"text": typed}))

    documents = html.unescape(plan.split('name="documents" value="')[1].split('"')[0])
    admin.post("/admin/definitions/reports/deals_by_owner/apply", {"documents": documents})
    assert "deals_by_owner" in w.store.refresh().reports


def test_only_administrators_edit_definitions(w):
    seller = Client(make_app(w.store)).login(SELLER)
    assert seller.get("/admin/definitions").status_code == 403
    assert seller.post(URL, {"text": "process: x"}).status_code == 403
