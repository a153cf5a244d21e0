"""A customization's whole trip in Chromium (issue 14): an administrator switches off a
shipped process in the structured process editor, rewords a shipped validation rule in
its form, each through its plan; downloads the customization layer as a pack from the
admin area; the pack installs on a fresh instance (a second database) whose catalog is
the same, definition for definition, and which behaves the same: the process starts no
more, and its new-lead form refuses a lead with the reworded message."""

from __future__ import annotations

import contextlib
import datetime as dt
import zipfile
from decimal import Decimal

import pytest
import sqlalchemy as sa

from xrm.metadata.dump import canonical
from xrm.storage.records import ValidationFailed
from xrm.workflow import Worker
from xrm.workflow import tables as W

from .conftest import open_tab
from .support import ADMIN, PASSWORD, SOLUTIONS, Server, make_app, opened

MESSAGE_EN = "Add an email or a phone number, then qualify."
MESSAGE_RU = "Добавьте почту или телефон, затем квалифицируйте."


def follow_ups(store) -> int:
    """Runs of proposal_follow_up the worker started."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(W.instances)
            .where(W.instances.c.process == "proposal_follow_up")
        ).scalar_one()


def to_proposal(store) -> None:
    """An opportunity walked to the proposal stage (the process's trigger), and the worker
    run over it."""
    account = store.records("account").create({"name": "Trigger Ltd"})
    contact = store.records("contact").create({"last_name": "Ray", "account": account["id"]})
    deal = store.records("opportunity").create(
        {
            "name": "Trigger deal",
            "account": account["id"],
            "contact": contact["id"],
            "amount": Decimal("900"),
            "close_date": dt.date.today() + dt.timedelta(days=30),
        }
    )
    store.records("opportunity").update(deal["id"], {"stage": "qualification"})
    store.records("opportunity").update(deal["id"], {"stage": "proposal"})
    Worker(store).run_once()


@contextlib.contextmanager
def fresh_instance(tmp):
    """Another instance: its own database with the same packs and an administrator."""
    with opened(tmp, [SOLUTIONS / "core", SOLUTIONS / "sales"]) as store:
        store.add_user(ADMIN, "Ada Admin", password=PASSWORD, roles=["administrator"])
        yield store


def test_a_customized_process_and_rule_export_and_behave_the_same_elsewhere(
    visit, site, browser, tmp_path, request
):
    store = site.store
    page = visit.login(ADMIN)

    # 1. the shipped process, switched off in the structured editor, through its plan
    visit.go("/admin/processes/proposal_follow_up/edit", "process editor")
    assert page.is_checked("[data-testid=process-enabled]")
    page.uncheck("[data-testid=process-enabled]")
    page.click("[data-testid=editor-save]")
    page.wait_for_selector("[data-testid=plan-lines]")
    visit.shot("process plan")
    assert "+enabled: false" in page.inner_text("[data-testid=plan-diff]")
    assert not store.customization_documents()  # nothing until applied
    page.click("[data-testid=apply]")
    page.wait_for_load_state("networkidle")
    assert not store.refresh().processes["proposal_follow_up"].enabled

    # 2. the shipped validation rule, reworded in its form, through its plan
    visit.go("/admin/entities/lead#validation-rules", "lead rules")
    row = page.locator("[data-rule=qualified_needs_contact]")
    assert "Give an email or a phone number before qualifying the lead." in row.inner_text()
    row.locator("[data-testid=rule-edit]").click()
    page.wait_for_selector("[data-testid=rule-editor]")
    page.fill("[data-testid=rule-message-en]", MESSAGE_EN)
    page.fill("[data-testid=rule-message-ru]", MESSAGE_RU)
    visit.shot("rule form")
    page.click("[data-testid=rule-save]")
    page.wait_for_selector("[data-testid=plan-lines]")
    visit.shot("rule plan")
    diff = page.inner_text("[data-testid=plan-diff]")
    assert f"+  en: {MESSAGE_EN}" in diff and "-  en: Give an email" in diff
    page.click("[data-testid=apply]")
    page.wait_for_load_state("networkidle")
    visit.shot("rule applied")
    assert "/admin/entities/lead" in page.url
    row = page.locator("[data-rule=qualified_needs_contact]")
    assert MESSAGE_EN in row.inner_text() and "customized" in row.inner_text()
    expected = canonical(store.refresh())

    # 3. the customization layer, downloaded as a pack
    visit.go("/admin/solutions", "solutions")
    page.fill("#export-name", "acme_tuning")
    with page.expect_download() as download:
        page.click("[data-testid=export]")
    archive = tmp_path / "acme_tuning.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        opened.extractall(tmp_path / "unpacked")
    assert "acme_tuning/solution.yaml" in names
    assert any(n.startswith("acme_tuning/processes/") for n in names)
    assert any("validation-lead_qualified_needs_contact" in n for n in names)

    # 4. a fresh instance: the exported pack installs, the catalog is the same
    with fresh_instance(tmp_path / "elsewhere") as there:
        there.install([tmp_path / "unpacked" / "acme_tuning"])
        catalog = there.refresh()
        assert canonical(catalog) == expected
        assert not catalog.processes["proposal_follow_up"].enabled
        to_proposal(there)
        assert follow_ups(there) == 0  # switched off here as there
        with pytest.raises(ValidationFailed) as refused:
            there.records("lead").create(
                {"last_name": "Lee", "company": "Acme", "status": "qualified"}
            )
        assert MESSAGE_EN in str(refused.value.errors)

        # and its new-lead form says so, in the browser
        with (
            Server(make_app(there)) as server,
            open_tab(browser, server.url, request, "elsewhere") as tab,
        ):
            other = tab.login(ADMIN)
            tab.go("/r/lead/new", "new lead elsewhere")
            other.fill("#f-last_name", "Lee")
            other.fill("#f-company", "Acme")
            other.select_option("#f-status", "qualified")
            other.click("[data-testid=save]")
            other.get_by_text(MESSAGE_EN).first.wait_for()
            tab.shot("refused with the new message")
        assert there.records("lead").query(filter=["last_name", "eq", "Lee"]).rows == []
    to_proposal(store)  # and here, where it was switched off
    assert follow_ups(store) == 0
