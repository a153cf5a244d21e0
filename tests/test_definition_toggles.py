"""Validation rules and SLAs switched off and on, and a pack's named validation rule changed
from the customization layer (``validation: ENTITY.NAME``): a switched-off rule is not
enforced by the records service, whatever writes (the REST API, an import); the change
survives a pack upgrade (and an upgrade that changes the rule itself is a conflict); it
exports and installs elsewhere with the same catalog and behaviour; a change naming no
rule is refused at its file, line and column; the admin area's switches and rule form go
through plan, apply, history and revert; a switched-off SLA starts no clock and stops the
running ones."""

from __future__ import annotations

import html
import json

import pytest
import sqlalchemy as sa
from browser.support import ADMIN, Client, make_app
from conftest import SOLUTIONS, fresh_database, write_pack
from workflow_pack import FILES as HELPDESK
from workflow_pack import open_helpdesk

from xrm.data.imports import Importer
from xrm.data.sources import open_source
from xrm.metadata.dump import canonical
from xrm.metadata.problems import DefinitionError
from xrm.solutions.export import export_customizations
from xrm.solutions.lifecycle import plan_install
from xrm.storage import history
from xrm.storage.records import ValidationFailed
from xrm.web import create_app
from xrm.workflow import Worker
from xrm.workflow import tables as W

GADGET = """
entity: gadget
label: {en: Gadget, ru: Гаджет}
plural: {en: Gadgets, ru: Гаджеты}
title: name
fields:
  name:   {type: text, required: true, label: {en: Name, ru: Название}}
  status: {type: choice, options: [draft, ready, retired], default: draft, label: {en: Status, ru: Статус}}
  reason: {type: text, label: {en: Reason, ru: Причина}}
  weight: {type: integer, label: {en: Weight, ru: Вес}}
validations:
  - name: retired_needs_reason
    when: {all: [[status, eq, retired], [reason, is_empty]]}
    message: {en: A retired gadget needs a reason., ru: Укажите причину списания.}
    fields: [reason]
  - name: no_negative_weight
    when: [weight, lt, 0]
    message: {en: The weight cannot be negative., ru: Вес не может быть отрицательным.}
    enabled: false
  - when: [name, eq, forbidden]
    message: {en: Not that name., ru: Не это название.}
"""
RULE = "gadget.retired_needs_reason"


def gadgets_pack(root, version: str = "1.0.0", text: str = GADGET):
    return write_pack(
        root / version, "gadgets", {"entities/gadget.yaml": text}, {"core": ">=1.0"}, version
    )


@pytest.fixture
def gadgets(store, tmp_path):
    store.install([gadgets_pack(tmp_path)])
    return store


def refused(store, values) -> dict:
    with pytest.raises(ValidationFailed) as caught:
        store.records("gadget").create(values)
    return caught.value.errors


def switch_off(store, **extra):
    store.customize_all(
        [("validation", {"validation": RULE, "enabled": False, **extra})],
        replacing=[("validation", RULE)],
    )


# ------------------------------------------------------------------ the model
def test_pack_rules_carry_their_name_and_switch(gadgets):
    rules = gadgets.refresh().entity("gadget").validations
    assert [(r.name, r.enabled, r.solution, r.customized) for r in rules] == [
        ("retired_needs_reason", True, "gadgets", False),
        ("no_negative_weight", False, "gadgets", False),
        (None, True, "gadgets", False),
    ]
    # switched off in its pack: not enforced; the others are
    assert gadgets.records("gadget").create({"name": "Heavy", "weight": -3})["weight"] == -3
    assert refused(gadgets, {"name": "Old", "status": "retired"}) == {
        "reason": ["A retired gadget needs a reason."]
    }
    assert "Not that name." in str(refused(gadgets, {"name": "forbidden"}))


def test_a_rule_switched_off_in_the_layer_is_not_enforced_through_the_api_and_import(
    gadgets, tmp_path
):
    switch_off(gadgets)
    rule = gadgets.refresh().entity("gadget").validations[0]
    assert (rule.enabled, rule.customized, rule.solution) == (False, True, "gadgets")
    admin = gadgets.add_user(
        "admin@example.com", "Ada", password="correct horse battery", roles=["administrator"]
    )
    api = create_app(gadgets, {"TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {gadgets.create_token(admin, 'tests')}"}
    made = api.post(
        "/api/v1/gadget", json={"name": "Via API", "status": "retired"}, headers=headers
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    source = tmp_path / "gadgets.csv"
    source.write_text("Name,Status\nImported,retired\n", encoding="utf-8")
    result = Importer(gadgets, "gadget", open_source(source)).run()
    assert (result.created, result.rejects) == (1, [])

    # switched on again with another message: enforced with it, on both paths
    gadgets.customize_all(
        [
            (
                "validation",
                {"validation": RULE, "message": {"en": "Say why it retired.", "ru": "Почему?"}},
            )
        ],
        replacing=[("validation", RULE)],
    )
    refusal = api.post(
        "/api/v1/gadget", json={"name": "Again", "status": "retired"}, headers=headers
    )
    assert refusal.status_code == 422
    assert refusal.get_json()["errors"]["reason"] == ["Say why it retired."]
    result = Importer(gadgets, "gadget", open_source(source)).run()
    assert result.created == 0 and "Say why it retired." in str(result.rejects[0])
    assert len(gadgets.customization_documents()) == 1  # saving again replaced the change
    entries = history.entries(gadgets, "validation", RULE)
    assert len(entries) == 2 and "Say why it retired." in entries[0]["after_text"]
    assert "A retired gadget needs a reason." in entries[1]["before_text"]  # the pack's


def test_the_change_survives_an_upgrade_and_a_change_to_the_rule_is_a_conflict(gadgets, tmp_path):
    switch_off(gadgets)
    v11 = GADGET.replace(
        "  weight: {type: integer", "  colour: {type: text}\n  weight: {type: integer"
    )
    gadgets.install([gadgets_pack(tmp_path, "1.1.0", v11)])
    assert "colour" in gadgets.refresh().entity("gadget").fields
    assert gadgets.records("gadget").create({"name": "Old", "status": "retired"})["id"]
    # 1.2.0 rewords the rule the administrator switched off: the plan says so
    v12 = v11.replace("A retired gadget needs a reason.", "Retired gadgets need a reason.")
    plan = plan_install(gadgets, [gadgets_pack(tmp_path, "1.2.0", v12)])
    assert ("validation", RULE) in {(k, n) for k, n, _path in plan.conflicts}
    assert f"~ validation {RULE} (changed, gadgets)" in plan.lines()
    gadgets.install([gadgets_pack(tmp_path, "1.2.0", v12)])
    rule = gadgets.refresh().entity("gadget").validations[0]
    assert not rule.enabled and rule.message.get("en") == "Retired gadgets need a reason."


def test_export_round_trip_keeps_the_change(database, tmp_path):
    pack = gadgets_pack(tmp_path)
    source = database.open()
    try:
        source.install([SOLUTIONS / "core", pack])
        switch_off(source, message={"en": "Reason, please.", "ru": "Причину, пожалуйста."})
        expected = canonical(source.refresh())
        folder = tmp_path / "export"
        export_customizations(source, folder, "gadget_custom")
    finally:
        source.close()
    written = sorted(p.name for p in (folder / "entities").glob("*.yaml"))
    assert written == ["0001-validation-gadget_retired_needs_reason.yaml"]
    with fresh_database(tmp_path / "there") as there:
        target = there.open()
        try:
            target.install([SOLUTIONS / "core", pack])
            target.install([folder])
            assert canonical(target.refresh()) == expected
            assert target.records("gadget").create({"name": "Old", "status": "retired"})["id"]
            target.install([folder])  # again: nothing piles up
            assert len(target.customization_documents()) == 1
        finally:
            target.close()


# ------------------------------------------------------------------ mistakes
def test_a_change_naming_no_rule_is_refused_at_its_file_line_and_column(gadgets, tmp_path):
    folder = write_pack(
        tmp_path,
        "bad_custom",
        {
            "entities/0001-validation.yaml": "validation: gadget.retired_need_reason\n"
            "enabled: false\n"
        },
        {"gadgets": ">=1.0"},
    )
    manifest = folder / "solution.yaml"
    manifest.write_text(manifest.read_text() + "customization: true\n")
    with pytest.raises(DefinitionError) as caught:
        gadgets.install([folder])
    (problem,) = caught.value.problems
    assert (problem.position.line, problem.position.column) == (1, 13)
    assert problem.position.path.endswith("0001-validation.yaml")
    assert "gadget has no validation rule named 'retired_need_reason'" in problem.message
    assert "did you mean 'retired_needs_reason'?" in problem.message
    assert gadgets.customization_documents() == []  # nothing half-installed

    with pytest.raises(DefinitionError, match="unknown entity 'gizmo'"):
        gadgets.customize(
            "validation", {"validation": "gizmo.retired_needs_reason", "enabled": False}
        )
    with pytest.raises(DefinitionError, match="enabled"):
        gadgets.customize("validation", {"validation": RULE, "enabled": "no"})
    with pytest.raises(
        DefinitionError, match="changes nothing: give message, when, fields or enabled"
    ):
        gadgets.customize("validation", {"validation": RULE})  # changes nothing at all


def test_packs_may_neither_hold_a_change_nor_repeat_a_rule_name(store, tmp_path):
    twice = GADGET.replace("  - name: no_negative_weight", "  - name: retired_needs_reason")
    with pytest.raises(DefinitionError) as caught:
        store.install([gadgets_pack(tmp_path, "1.0.0", twice)])
    (problem,) = caught.value.problems
    assert "validation rule 'retired_needs_reason' is defined twice in solution 'gadgets'" in str(
        problem
    )
    assert problem.position.line == 16  # the second name:
    folder = write_pack(
        tmp_path / "other",
        "tweaks",
        {"entities/rule.yaml": f"validation: {RULE}\nenabled: false\n"},
        {"gadgets": ">=1.0"},
    )
    store.install([gadgets_pack(tmp_path / "ok")])
    with pytest.raises(
        DefinitionError, match="a validation rule is changed in the customization layer"
    ):
        store.install([folder])


def test_every_shipped_validation_rule_has_a_name(tmp_path):
    from xrm.metadata.loader import load_catalog

    catalog = load_catalog(
        [SOLUTIONS / p for p in ("core", "sales", "service", "marketing", "partner")]
    )
    shipped = [
        (e.name, v.name)
        for e in catalog.entities.values()
        for v in e.validations
        if e.solution in ("core", "sales", "service", "marketing", "partner")
    ]
    assert shipped and all(name for _entity, name in shipped), shipped
    assert ("opportunity", "won_needs_amount") in shipped


# ------------------------------------------------------------------ the admin area
def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def documents_of(page) -> str:
    raw = page.get_data(as_text=True)
    return html.unescape(raw.split('name="documents" value="')[1].split('"')[0])


@pytest.fixture
def admin(gadgets):
    gadgets.add_user(ADMIN, "Ada Admin", password="correct horse battery", roles=["administrator"])
    return Client(make_app(gadgets)).login(ADMIN, "correct horse battery")


def test_admin_switches_a_rule_off_and_changes_it_through_plan_history_and_revert(gadgets, admin):
    page = text(admin.get("/admin/entities/gadget"))
    assert 'data-rule="retired_needs_reason"' in page and "A retired gadget needs a reason." in page
    plan = admin.post("/admin/entities/gadget/validations/retired_needs_reason/toggle")
    assert plan.status_code == 200 and "Plan of the change" in text(plan)
    assert gadgets.customization_documents() == []  # nothing until applied
    document = json.loads(documents_of(plan))[0][1]
    assert document["enabled"] is False and document["when"]["all"][0] == [
        "status",
        "eq",
        "retired",
    ]
    done = admin.post(
        f"/admin/definitions/validation/{RULE}/apply",
        {"documents": documents_of(plan), "back": "/admin/entities/gadget#validation-rules"},
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("#validation-rules")
    assert gadgets.records("gadget").create({"name": "Old", "status": "retired"})["id"]
    page = text(admin.get("/admin/entities/gadget"))
    assert "customized" in page and "Switch on" in page

    # the form: a new message, switched on again; a bad condition is refused in place
    form = {
        "enabled": "1",
        "message_en": "Tell us why.",
        "message_ru": "Скажите почему.",
        "fields": "reason",
        "when": "[weight, between, 1]",
    }
    bad = admin.post("/admin/entities/gadget/validations/retired_needs_reason", form)
    assert bad.status_code == 422 and 'data-testid="editor-problems"' in text(bad)
    form["when"] = "{all: [[status, eq, retired], [reason, is_empty]]}"
    plan = admin.post("/admin/entities/gadget/validations/retired_needs_reason", form)
    assert plan.status_code == 200, text(plan)
    admin.post(f"/admin/definitions/validation/{RULE}/apply", {"documents": documents_of(plan)})
    assert refused(gadgets, {"name": "Old", "status": "retired"}) == {"reason": ["Tell us why."]}
    assert "Tell us why." in text(
        admin.get("/admin/entities/gadget/validations/retired_needs_reason")
    )

    entries = history.entries(gadgets, "validation", RULE)
    assert len(entries) == 2 and entries[1]["document"]["enabled"] is False
    page = text(admin.get(f"/admin/definitions/validation/{RULE}/history"))
    assert page.count('data-testid="history-entry"') == 2
    # revert to the pack's own rule: through its plan, then applied
    review = admin.post(f"/admin/definitions/validation/{RULE}/revert", {})
    assert review.status_code == 200
    admin.post(f"/admin/definitions/validation/{RULE}/revert", {"confirm": "1"})
    assert gadgets.customization_documents() == []
    assert refused(gadgets, {"name": "Old", "status": "retired"}) == {
        "reason": ["A retired gadget needs a reason."]
    }
    # an unnamed rule has no switch, an unknown one no page
    assert admin.get("/admin/entities/gadget/validations/nope").status_code == 404
    assert admin.get("/admin/definitions/new?kind=validation&name=x").status_code == 303


# ------------------------------------------------------------------ SLAs
def clocks(store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(W.sla_clocks.c.metric, W.sla_clocks.c.status).order_by(W.sla_clocks.c.id)
        ).all()
    return [tuple(r) for r in rows]


def waiting_timers(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(W.instances)
            .where(W.instances.c.process.like("sla:%"), W.instances.c.status == "waiting")
        ).scalar_one()


def sla_document() -> dict:
    import textwrap

    import yaml

    return yaml.safe_load(textwrap.dedent(HELPDESK["processes/ticket_sla.yaml"]))


def test_a_switched_off_sla_starts_no_clock_and_stops_running_ones(database, tmp_path):
    store, clock = open_helpdesk(database, tmp_path)
    try:
        worker = Worker(store)
        first = store.records("ticket").create({"subject": "Printer", "priority": "urgent"})
        worker.run_once()
        assert clocks(store) == [("first_response", "running"), ("resolution", "running")]
        assert waiting_timers(store) > 0
        store.customize_all(
            [("sla", {**sla_document(), "enabled": False})], replacing=[("sla", "ticket_sla")]
        )
        assert not store.refresh().slas["ticket_sla"].enabled
        worker.run_once()
        assert clocks(store) == [("first_response", "cancelled"), ("resolution", "cancelled")]
        assert waiting_timers(store) == 0
        store.records("ticket").create({"subject": "Scanner", "priority": "urgent"})
        clock.advance(hours=30)  # past every deadline
        worker.run_once()
        assert len(clocks(store)) == 2  # no clock for the new ticket
        assert not store.records("ticket").get(first["id"])["escalated"]  # no breach
        # on again: records get clocks as they next change; a cancelled clock stays so
        store.uncustomize("sla", "ticket_sla")
        third = store.records("ticket").create({"subject": "Phone", "priority": "high"})
        store.records("ticket").update(first["id"], {"subject": "Printer (again)"})
        worker.run_once()
        with store.engine.connect() as conn:
            by_record = conn.execute(
                sa.select(W.sla_clocks.c.record_id, W.sla_clocks.c.status)
            ).all()
        assert {(r, s) for r, s in by_record if r == third["id"]} == {(third["id"], "running")}
        assert {s for r, s in by_record if r == first["id"]} == {"cancelled"}
    finally:
        store.close()


def test_admin_switches_an_sla_off_from_the_processes_page(database, tmp_path):
    store, _clock = open_helpdesk(database, tmp_path)
    try:
        store.add_user(
            ADMIN, "Ada Admin", password="correct horse battery", roles=["administrator"]
        )
        admin = Client(make_app(store)).login(ADMIN, "correct horse battery")
        page = text(admin.get("/admin/processes"))
        assert 'data-testid="sla-toggle"' in page
        plan = admin.post("/admin/slas/ticket_sla/toggle")
        assert plan.status_code == 200
        assert json.loads(documents_of(plan))[0][1]["enabled"] is False
        done = admin.post(
            "/admin/definitions/sla/ticket_sla/apply",
            {"documents": documents_of(plan), "back": "/admin/processes#slas"},
        )
        assert done.status_code == 303
        assert not store.refresh().slas["ticket_sla"].enabled
        assert "Switch on" in text(admin.get("/admin/processes"))
        assert history.entries(store, "sla", "ticket_sla")[0]["document"]["enabled"] is False
        assert admin.post("/admin/slas/nothing/toggle").status_code == 404
    finally:
        store.close()
