"""The forms layer without a request (no Flask app): a form built for one reader from a
pack's layout (tabs, sections, labels and help in their language, widgets, choices and
defaults, read-only and hidden fields by role), visible_if/required_if evaluated on the
values being edited, posted text read in the reader's locale (``1 234,5`` in Russian,
dates), errors in Russian, the save through the records service; the quick-create form;
and required_if enforced by the records service for API and service writes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from browser.support import PASSWORD
from conftest import SOLUTIONS, fresh_database, write_pack

from xrm.forms import quick_create_form, reader_for, record_form
from xrm.storage.records import ValidationFailed
from xrm.web.ui.i18n import translate_error

PACK = {
    "entities/job.yaml": """
entity: job
title: name
fields:
  name:     {type: text, required: true, label: {en: Name, ru: Название}}
  status:   {type: choice, options: [open, done, cancelled], default: open}
  result:   {type: text, help: {en: What came of it, ru: Чем закончилось}}
  reason:   {type: text}
  budget:   {type: decimal, label: {en: Budget, ru: Бюджет}}
  due:      {type: date}
  secret:   {type: text}
  locked:   {type: integer}
  urgent:   {type: boolean}
  worker:   {type: user, default: current_user}
""",
    "forms/job.yaml": """
forms:
  job_main:
    entity: job
    tabs:
      - label: {en: Job, ru: Работа}
        sections:
          - columns:
              - [name, status, budget, urgent, worker]
              - - {field: result, required_if: [status, eq, done]}
                - {field: reason, visible_if: [status, eq, cancelled], required_if: [status, eq, cancelled]}
                - secret
                - locked
          - label: {en: Urgent, ru: Срочно}
            visible_if: [urgent, eq, true]
            columns:
              - - {field: due, required_if: [budget, gt, 1000]}
  job_quick:
    entity: job
    quick_create: true
    tabs:
      - sections:
          - columns: [[name, budget]]
""",
    "roles/roles.yaml": """
roles:
  worker:
    permissions:
      job: {create: all, read: all, update: all, delete: all}
    fields:
      job: {secret: hidden, locked: read_only}
""",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms-layer")
    pack = write_pack(root, "jobs", PACK, depends={"core": ">=0"})
    with fresh_database(root) as database:
        opened = database.open()
        opened.install([SOLUTIONS / "core", pack])
        yield opened
        opened.close()


@pytest.fixture(scope="module")
def users(store):
    return {
        "en": store.add_user("w-en@example.com", "Wendy", password=PASSWORD, roles=["worker"]),
        "ru": store.add_user(
            "w-ru@example.com",
            "Вера",
            password=PASSWORD,
            roles=["worker"],
            locale="ru",
            time_zone="Europe/Moscow",
        ),
        "admin": store.add_user(
            "boss@example.com", "Boss", password=PASSWORD, roles=["administrator"]
        ),
    }


def form_of(store, user_id, form=None):
    reader = reader_for(store, user_id, translate_error)
    catalog = store.refresh()
    entity = catalog.entity("job")
    return record_form(catalog, entity, reader, form), reader


def post(**values):
    return {"_fields": list(values), **values}


# ------------------------------------------------------------------------ the form's shape
def test_the_form_knows_its_tabs_sections_fields_for_the_reader(store, users):
    spec, _reader = form_of(store, users["ru"])
    assert [t.label for t in spec.tabs] == ["Работа"]
    first, urgent = spec.tabs[0].sections
    assert urgent.label == "Срочно" and urgent.visible_if is not None
    names = [f.name for f in first.fields]
    assert "secret" not in names  # hidden from the worker role
    assert spec.fields["locked"].read_only and "locked" not in spec.editable
    assert spec.fields["name"].label == "Название" and spec.fields["name"].required
    assert spec.fields["result"].help == "Чем закончилось"
    assert spec.fields["budget"].widget == "number"
    assert spec.fields["urgent"].widget == "boolean"
    assert [v for v, _ in spec.fields["status"].choices] == ["open", "done", "cancelled"]
    assert spec.fields["status"].default == "open"

    admin, _ = form_of(store, users["admin"])
    assert "secret" in admin.fields and not admin.fields["locked"].read_only
    assert admin.fields["name"].label == "Name"


def test_form_class_is_cached_per_catalog_locale_and_permission_set(store, users):
    ru, _ = form_of(store, users["ru"])
    en, _ = form_of(store, users["en"])
    admin, _ = form_of(store, users["admin"])
    assert ru is form_of(store, users["ru"])[0]
    assert ru is not en  # another language
    assert en is not admin  # another permission set
    assert "secret" in admin.form_class.__dict__ or hasattr(admin.form_class, "secret")
    assert not hasattr(en.form_class, "secret") and not hasattr(en.form_class, "locked")


def test_defaults_for_a_new_record(store, users):
    spec, reader = form_of(store, users["en"])
    bound = spec.bind(reader, {}, creating=True)
    assert bound.evaluation["status"] == "open"
    assert bound.evaluation["worker"] == users["en"]


# ------------------------------------------------------------------------ conditions
def test_visible_and_required_conditions_follow_the_values_being_edited(store, users):
    spec, reader = form_of(store, users["en"])
    bound = spec.bind(reader, {"status": "open"})
    assert not bound.visible("reason") and not bound.required("result")
    urgent = spec.tabs[0].sections[1]
    assert not bound.section_visible(urgent)

    typed = spec.bind(reader, {"status": "open"}, post(status="cancelled", urgent="y"))
    assert typed.visible("reason") and typed.required("reason")
    assert typed.section_visible(urgent)


def test_required_if_on_shown_fields_only(store, users):
    spec, reader = form_of(store, users["en"])
    done = spec.bind(reader, {}, post(name="Fix", status="done", result=""), creating=True)
    assert not done.validate()
    assert done.errors == {"result": ["required"]}

    # reason is required when cancelled and shown then; when not cancelled it is hidden
    cancelled = spec.bind(reader, {}, post(name="Fix", status="cancelled", reason=""))
    assert not cancelled.validate() and cancelled.errors == {"reason": ["required"]}

    # due is required over a budget of 1000, but only while its section shows (urgent)
    quiet = spec.bind(reader, {}, post(name="Big", budget="5000", due=""))
    assert quiet.validate(), quiet.errors
    shown = spec.bind(reader, {}, post(name="Big", budget="5000", urgent="y", due=""))
    assert not shown.validate() and shown.errors == {"due": ["required"]}


# ------------------------------------------------------------------------ reading a post
def test_posted_text_is_read_in_the_readers_locale(store, users):
    spec, reader = form_of(store, users["ru"])
    bound = spec.bind(reader, {}, post(name="Ремонт", budget="1 234,5", due="2026-03-01"))
    assert bound.validate(), bound.errors
    assert bound.values["budget"] == Decimal("1234.5")
    assert bound.values["due"] == dt.date(2026, 3, 1)

    en, en_reader = form_of(store, users["en"])
    english = en.bind(en_reader, {}, post(name="Fix", budget="1,234.5"))
    assert english.validate() and english.values["budget"] == Decimal("1234.5")


def test_errors_come_back_in_russian(store, users):
    spec, reader = form_of(store, users["ru"])
    bound = spec.bind(reader, {}, post(name="", budget="много", due="вчера"))
    assert not bound.validate()
    assert bound.errors == {
        "name": ["обязательное поле"],
        "budget": ["ожидается число"],
        "due": ["ожидается дата"],
    }


def test_only_offered_editable_fields_are_read(store, users):
    spec, reader = form_of(store, users["en"])
    bound = spec.bind(reader, {}, post(name="Fix", locked="7", secret="psst"))
    assert bound.validate()
    assert bound.values == {"name": "Fix"}  # read-only and hidden fields are not read


def test_save_goes_through_the_records_service(store, users):
    spec, reader = form_of(store, users["ru"])
    records = store.records("job", principal=store.principal(users["ru"]))
    bound = spec.bind(reader, {}, post(name="Смета", budget="2 000,25"), creating=True)
    record = bound.save(records)
    assert record is not None and record["budget"] == Decimal("2000.25")
    assert record["worker"] == users["ru"]

    # the records service's own refusal (here: a field the role may not change) comes back
    # as the form's error, and nothing is written
    stale = spec.bind(reader, record, post(name="Смета", status="done", result=""))
    assert stale.save(records, record["id"], version=record["version"]) is None
    assert stale.errors == {"result": ["обязательное поле"]}
    assert records.get(record["id"])["status"] == "open"


# ------------------------------------------------------------------------ quick create
def test_quick_create_form_is_the_packs_or_a_generated_one(store, users):
    catalog = store.refresh()
    quick = quick_create_form(catalog, catalog.entity("job"))
    assert quick.name == "job_quick"
    assert catalog.form_for("job").name == "job_main"  # never the main form
    spec, reader = form_of(store, users["en"], quick)
    assert list(spec.fields) == ["name", "budget"]

    account = catalog.entity("account")
    generated = quick_create_form(catalog, account)
    names = [item.field for item in generated.fields()]
    assert names[0] == "name"
    assert all(
        account.fields[n].required or n == account.title for n in names
    )  # title and required fields only


# ------------------------------------------------------------------------ the service
def test_records_service_enforces_required_if_for_every_write(store, users):
    records = store.records("job", principal=store.principal(users["en"]))
    with pytest.raises(ValidationFailed) as refused:
        records.create({"name": "Fix", "status": "done"})
    assert refused.value.errors == {"result": ["required when status eq done"]}

    job = records.create({"name": "Fix"})
    with pytest.raises(ValidationFailed) as refused:
        records.update(job["id"], {"status": "cancelled"})
    assert refused.value.errors == {"reason": ["required when status eq cancelled"]}
    records.update(job["id"], {"status": "cancelled", "reason": "No budget"})

    # a field whose section is hidden is not required (urgent is not set)
    records.create({"name": "Big", "budget": "5000"})
    with pytest.raises(ValidationFailed) as refused:
        records.create({"name": "Big", "budget": "5000", "urgent": True})
    assert refused.value.errors == {"due": ["required when budget gt 1000"]}
    assert translate_error(refused.value.errors["due"][0], "ru") == (
        "обязательно, когда budget gt 1000"
    )


def test_api_writes_obey_required_if(store, users):
    from xrm.web import create_app

    app = create_app(store, {"TESTING": True})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {store.create_token(users['en'], 'forms')}"}
    refused = client.post("/api/v1/job", json={"name": "Fix", "status": "done"}, headers=headers)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert refused.get_json()["errors"] == {"result": ["required when status eq done"]}

    made = client.post("/api/v1/job", json={"name": "Fix"}, headers=headers)
    assert made.status_code == 201
    job = made.get_json()
    patch = client.patch(
        f"/api/v1/job/{job['id']}",
        json={"status": "done"},
        headers={**headers, "If-Match": f'"{job["version"]}"'},
    )
    assert patch.status_code == 422
    assert patch.get_json()["errors"] == {"result": ["required when status eq done"]}
    done = client.patch(
        f"/api/v1/job/{job['id']}",
        json={"status": "done", "result": "Fixed"},
        headers={**headers, "If-Match": f'"{job["version"]}"'},
    )
    assert done.status_code == 200, done.get_data(as_text=True)


def test_a_quick_create_form_cannot_be_the_main_form(tmp_path):
    from xrm.metadata.problems import DefinitionError

    files = dict(PACK)
    files["forms/job.yaml"] = PACK["forms/job.yaml"].replace(
        "    quick_create: true\n", "    quick_create: true\n    default: true\n"
    )
    pack = write_pack(tmp_path, "jobs", files, depends={"core": ">=0"})
    with fresh_database(tmp_path) as database:
        opened = database.open()
        try:
            with pytest.raises(DefinitionError) as caught:
                opened.install([SOLUTIONS / "core", pack])
        finally:
            opened.close()
    problems = caught.value.problems
    assert [(p.subject, p.message) for p in problems] == [
        ("forms.job_quick", "a quick-create form cannot be the entity's main form (default: true)")
    ]
    assert "jobs/forms/job.yaml:20:19: forms.job_quick" in str(problems[0])  # at quick_create
