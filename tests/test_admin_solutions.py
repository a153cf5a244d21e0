"""Solution packs in the admin area, through the real WSGI app: the list of installed and
offered packs, each install, uninstall and purge shown as its plan and applied only when
confirmed, refusals shown with their reason, and the customization layer downloaded as a
pack — administrators only."""

from __future__ import annotations

import io
import zipfile

import pytest
from browser.support import ADMIN, SELLER, Client, make_app, world
from conftest import write_pack

GADGET = """
entity: gadget
label: {en: Gadget, ru: Гаджет}
plural: {en: Gadgets, ru: Гаджеты}
title: name
fields:
  name: {type: text, required: true}
"""


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("admin-solutions")) as built:
        yield built


@pytest.fixture
def admin(w, tmp_path, monkeypatch):
    packs = tmp_path / "offered"
    write_pack(packs, "gadgets", {"entities/gadget.yaml": GADGET}, depends={"core": ">=1.0"})
    monkeypatch.setenv("XRM_SOLUTIONS_PATH", str(packs))
    return Client(make_app(w.store)).login(ADMIN)


def text(response) -> str:
    return response.get_data(as_text=True)


def test_install_uninstall_and_purge_each_planned_then_applied(w, admin):
    page = text(admin.get("/admin/solutions"))
    assert 'data-solution="gadgets"' in page and "Install…" in page
    assert "needed by sales" in page  # core cannot be uninstalled while sales needs it

    plan = admin.get("/admin/solutions/plan?action=install&name=gadgets")
    assert plan.status_code == 200
    assert "install gadgets 1.0.0" in text(plan) and "+ entity gadget (added, gadgets)" in text(
        plan
    )
    assert "gadget" not in w.store.refresh().entities  # nothing applied yet
    done = admin.post("/admin/solutions/apply", {"action": "install", "name": "gadgets"})
    assert done.status_code == 303
    assert "gadget" in w.store.refresh().entities
    w.store.records("gadget").create({"name": "Widget"})

    refused = admin.get("/admin/solutions/plan?action=uninstall&name=core")
    assert refused.status_code == 422
    assert "core cannot be uninstalled" in text(refused) and 'data-testid="apply"' not in text(
        refused
    )

    plan = text(admin.get("/admin/solutions/plan?action=uninstall&name=gadgets"))
    assert "uninstall gadgets 1.0.0" in plan and "- entity gadget (removed, gadgets)" in plan
    assert (
        admin.post("/admin/solutions/apply", {"action": "uninstall", "name": "gadgets"}).status_code
        == 303
    )
    assert "gadget" not in w.store.refresh().entities

    plan = text(admin.get("/admin/solutions/plan?action=purge"))
    assert "- table gadget (dropped with its data)" in plan
    # the table holds a row: the loss is named, and must be ticked by that name
    assert 'name="allow_loss" value="gadget"' in plan and "rows: 1" in plan
    refused = admin.post("/admin/solutions/apply", {"action": "purge"})
    assert refused.status_code == 422 and "--allow-loss gadget" in text(refused)
    assert "gadget" in {t for t in w.store.plan().kept_tables}
    done = admin.post("/admin/solutions/apply", {"action": "purge", "allow_loss": "gadget"})
    assert done.status_code == 303
    _schema, left = w.store.purge(dry_run=True)
    assert left == []


def test_export_downloads_the_customization_layer_as_a_pack(w, admin):
    w.store.customize(
        "views", {"views": {"big_accounts": {"entity": "account", "columns": ["name"]}}}
    )
    response = admin.get("/admin/solutions/export.zip?name=acme_custom")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    names = archive.namelist()
    assert "acme_custom/solution.yaml" in names
    assert "customization: true" in archive.read("acme_custom/solution.yaml").decode()
    assert any(name.startswith("acme_custom/views/") for name in names)


def test_only_administrators_see_solutions(w, admin):
    seller = Client(make_app(w.store)).login(SELLER)
    assert seller.get("/admin/solutions").status_code == 403
    assert seller.post("/admin/solutions/apply", {"action": "purge"}).status_code == 403
    assert admin.post("/admin/solutions/apply", {"action": "purge"}, csrf=False).status_code == 400
