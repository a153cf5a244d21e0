"""Lead conversion: the sales pack's convert_lead wizard, opened from a lead, and the
wizard API.  The inputs start from the lead; the account and contact steps offer the
records the duplicate rules find (email, phone, normalized name), only those the user may
read; a picked record is linked, not copied; the opportunity is optional; the lead is
qualified and stamped with its converted_* lookups (read-only to people, set by the
wizard's stamp) in the same transaction; a lead already converted is refused, and a
failed finish writes nothing.  Then the engine's new keys at the checker, and the API
(``/api/v1/wizards``) with its refusals.  On SQLite, and on PostgreSQL with
XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.forms.wizard import WizardFailed, WizardRun, WizardUnavailable
from xrm.storage.records import ValidationFailed


@pytest.fixture
def sales(database):
    store = database.open()
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.sam = store.add_user(
        "sam@example.com", "Sam", password=PASSWORD, roles=["user"], teams=["east"]
    )
    store.eve = store.add_user(
        "eve@example.com", "Eve", password=PASSWORD, roles=["user"], teams=["east"]
    )
    store.wes = store.add_user(
        "wes@example.com", "Wes", password=PASSWORD, roles=["user"], teams=["west"]
    )
    store.rita = store.add_user(
        "rita@example.com", "Rita", password=PASSWORD, roles=["read_only"], locale="ru"
    )
    yield store
    store.close()


def as_user(store, user, entity):
    return store.records(entity, principal=store.principal(user))


def lead_of(store, user, **values):
    values = {
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "Northwind Traders",
        "email": "ann.lee@northwind.example.com",
        "phone": "+1 212 555 0100",
        "topic": "Pumps for the new plant",
        "estimated_value": "25000",
        "estimated_close_date": "2027-04-30",
        "source": "web_form",
        **values,
    }
    return as_user(store, user, "lead").create(values)


def start(store, user, lead) -> WizardRun:
    return WizardRun.start(
        store.catalog.wizards["convert_lead"],
        store,
        store.principal(user),
        origin=("lead", lead["id"]),
    )


def counts(store) -> dict:
    with store.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("account", "contact", "opportunity", "xrm_audit")
        }


def pick(run, name):
    return run.wizard.inputs[name]


def test_duplicates_found_and_linked_and_the_lead_stamped(sales):
    sam = sales.principal(sales.sam)
    # an account by another name but the lead's phone; a contact with the lead's email
    account = as_user(sales, sales.eve, "account").create(
        {"name": "Northwind Traders Inc.", "phone": "+1 (212) 555-0100", "owner": sales.eve}
    )
    other = as_user(sales, sales.sam, "account").create({"name": "Southwind"})
    contact = as_user(sales, sales.sam, "contact").create(
        {"first_name": "Ann", "last_name": "Lee", "email": "Ann.Lee@Northwind.example.com"}
    )
    lead = lead_of(sales, sales.sam)
    run = start(sales, sales.sam, lead)
    # the inputs start from the lead
    assert run.value("company") == "Northwind Traders" and run.value("last_name") == "Lee"
    assert run.value("opportunity_name") == "Pumps for the new plant"
    assert run.value("amount") == Decimal("25000") and run.value("with_opportunity") is True
    assert run.submit({**_texts(run), "company": "Northwind Traders"}) == {}
    found = run.candidates(pick(run, "account"), sales, sam)
    # the same normalized name ("Inc." dropped) and the same phone; never Southwind
    assert [r["id"] for r in found] == [account["id"]]
    assert set(found[0]["_matched"]) >= {"same_name", "same_phone"}
    assert other["id"] not in [r["id"] for r in found]
    assert run.submit({"account": str(account["id"])}, store=sales, principal=sam) == {}
    found = run.candidates(pick(run, "contact"), sales, sam)
    assert [r["id"] for r in found] == [contact["id"]]
    assert "same_email" in found[0]["_matched"]
    assert run.submit({"contact": str(contact["id"])}, store=sales, principal=sam) == {}
    assert run.current == "opportunity"
    assert run.submit(_texts(run)) == {}
    assert run.step().review
    before = counts(sales)
    outcome = run.finish(sales, sam)
    after = counts(sales)
    assert after["account"] == before["account"] and after["contact"] == before["contact"]
    assert after["opportunity"] == before["opportunity"] + 1
    assert outcome.landing == ("lead", lead["id"])
    assert outcome.linked == {"account", "contact"}
    stamped = sales.records("lead").get(lead["id"])
    deal = sales.records("opportunity").get(outcome.records["opportunity"][1])
    assert stamped["status"] == "qualified" and stamped["qualified_at"] is not None
    assert stamped["converted_account"] == account["id"]
    assert stamped["converted_contact"] == contact["id"]
    assert stamped["converted_opportunity"] == deal["id"]
    assert deal["account"] == account["id"] and deal["contact"] == contact["id"]
    assert deal["amount"] == Decimal("25000") and deal["close_date"] == dt.date(2027, 4, 30)
    assert deal["lead_source"] == "web_form" and deal["owner"] == sales.sam
    # the stamp is one write of the lead, audited as Sam's
    history = sales.records("lead").history(lead["id"])
    stamped_by = {h["field"]: h["user_id"] for h in history if h["action"] == "update"}
    assert stamped_by["converted_account"] == sales.sam and stamped_by["status"] == sales.sam
    assert stamped["version"] == lead["version"] + 1


def _texts(run) -> dict:
    """The current step's inputs as the page shows them (the values they start with)."""
    out = {}
    for item in run.step().inputs:
        value = run.value(item.name)
        if item.field.type == "boolean":
            out[item.name] = "true" if value else ""
        elif value is not None:
            out[item.name] = str(value)
    return out


def test_new_records_created_from_the_lead_without_an_opportunity(sales):
    sam = sales.principal(sales.sam)
    lead = lead_of(
        sales,
        sales.sam,
        company="Brand New Pumps",
        email="",
        phone="+44 20 7946 0958",
        mobile="+44 7700 900123",
        website="https://pumps.example.org",
        industry="manufacturing",
        city="Leeds",
        job_title="Buyer",
    )
    run = start(sales, sales.sam, lead)
    assert run.submit({**_texts(run), "with_opportunity": ""}) == {}
    assert run.candidates(pick(run, "account"), sales, sam) == []
    assert run.submit({"account": "new"}, store=sales, principal=sam) == {}
    assert run.candidates(pick(run, "contact"), sales, sam) == []
    assert run.submit({"contact": "new"}, store=sales, principal=sam) == {}
    assert [s.name for s in run.visible_steps()] == ["qualify", "account", "contact", "review"]
    before = counts(sales)
    outcome = run.finish(sales, sam)
    after = counts(sales)
    assert after["account"] == before["account"] + 1
    assert after["contact"] == before["contact"] + 1
    assert after["opportunity"] == before["opportunity"]
    assert outcome.linked == set() and "opportunity" not in outcome.records
    account = sales.records("account").get(outcome.records["account"][1])
    contact = sales.records("contact").get(outcome.records["contact"][1])
    assert (
        account["name"] == "Brand New Pumps" and account["website"] == "https://pumps.example.org"
    )
    assert account["industry"] == "manufacturing" and account["billing_city"] == "Leeds"
    assert account["phone"] == "+442079460958"
    assert contact["account"] == account["id"] and contact["job_title"] == "Buyer"
    assert contact["mobile"] == "+447700900123"
    stamped = sales.records("lead").get(lead["id"])
    assert stamped["converted_account"] == account["id"]
    assert stamped["converted_contact"] == contact["id"]
    assert stamped["converted_opportunity"] is None and stamped["status"] == "qualified"


def test_the_contact_step_finds_a_namesake_in_the_picked_account(sales):
    sam = sales.principal(sales.sam)
    account = as_user(sales, sales.sam, "account").create({"name": "Contoso"})
    namesake = as_user(sales, sales.sam, "contact").create(
        {"first_name": "Ann", "last_name": "Lee", "account": account["id"]}
    )
    elsewhere = as_user(sales, sales.sam, "contact").create(
        {"first_name": "Ann", "last_name": "Lee"}
    )
    lead = lead_of(sales, sales.sam, company="Contoso", email="", phone="")
    run = start(sales, sales.sam, lead)
    assert run.submit({**_texts(run), "phone": "+1 415 555 0199"}) == {}
    assert run.submit({"account": str(account["id"])}, store=sales, principal=sam) == {}
    found = run.candidates(pick(run, "contact"), sales, sam)
    # the same name within the account picked; a namesake in no account is not a match
    assert [r["id"] for r in found] == [namesake["id"]]
    assert elsewhere["id"] not in [r["id"] for r in found]
    assert found[0]["_matched"] == ["same_name_in_account"]


def test_a_user_who_may_not_read_an_account_is_not_offered_it(sales):
    sam = sales.principal(sales.sam)
    # Wes is in another team: Sam (scope team) may not read his account, same name or not
    hidden = as_user(sales, sales.wes, "account").create(
        {"name": "Northwind Traders", "email": "ann.lee@northwind.example.com"}
    )
    lead = lead_of(sales, sales.sam)
    run = start(sales, sales.sam, lead)
    assert run.submit(_texts(run)) == {}
    assert run.candidates(pick(run, "account"), sales, sam) == []
    assert sales.records("account").find_duplicates({"name": "Northwind Traders"})  # it is there
    # nor can it be forced in by id: the pick is checked as the user reads it
    assert run.submit({"account": str(hidden["id"])}, store=sales, principal=sam) == {
        "account": ["no such record"]
    }
    # a manager (scope all) is offered it
    boss = sales.add_user("bo@example.com", "Bo", password=PASSWORD, roles=["manager"])
    run = start(sales, boss, lead)
    run.submit(_texts(run))
    found = run.candidates(pick(run, "account"), sales, sales.principal(boss))
    assert [r["id"] for r in found] == [hidden["id"]]


def test_a_lead_already_converted_is_refused(sales):
    sam = sales.principal(sales.sam)
    lead = lead_of(sales, sales.sam)
    run = start(sales, sales.sam, lead)
    # a second run opened before the first one finished
    late = start(sales, sales.sam, lead)
    _walk_new(run, sales, sam)
    run.finish(sales, sam)
    with pytest.raises(WizardUnavailable) as refused:
        start(sales, sales.sam, lead)
    assert refused.value.label.get("ru") == "Этот лид уже квалифицирован или дисквалифицирован."
    _walk_new(late, sales, sam)
    before = counts(sales)
    with pytest.raises(WizardUnavailable):
        late.finish(sales, sam)  # checked again when it finishes: nothing made twice
    assert counts(sales) == before
    # a disqualified lead is not converted either
    gone = lead_of(sales, sales.sam, status="disqualified", disqualify_reason="no_budget")
    with pytest.raises(WizardUnavailable):
        start(sales, sales.sam, gone)


def _walk_new(run, store, principal, **qualify):
    assert run.submit({**_texts(run), **qualify}) == {}
    assert run.submit({"account": "new"}, store=store, principal=principal) == {}
    assert run.submit({"contact": "new"}, store=store, principal=principal) == {}
    if run.current == "opportunity":
        assert run.submit(_texts(run)) == {}


def test_a_failed_finish_writes_nothing(sales):
    sam = sales.principal(sales.sam)
    # the lead's rule: a qualified lead needs an email or a phone (the lead has no mobile)
    lead = lead_of(sales, sales.sam)
    run = start(sales, sales.sam, lead)
    _walk_new(run, sales, sam, email="", phone="")
    before = counts(sales)
    with pytest.raises(WizardFailed) as failed:
        run.finish(sales, sam)
    # the lead's refusal is shown on the qualify step, at the input its field came from
    assert failed.value.step == "qualify"
    assert failed.value.errors == {
        "email": ["Give an email or a phone number before qualifying the lead."]
    }
    assert counts(sales) == before  # no account, contact, opportunity, nor audit row
    unchanged = sales.records("lead").get(lead["id"])
    assert unchanged["status"] == "new" and unchanged["converted_account"] is None
    assert unchanged["version"] == lead["version"]


def test_converted_fields_stay_read_only_to_people(sales):
    lead = lead_of(sales, sales.sam)
    account = as_user(sales, sales.sam, "account").create({"name": "Sneaky"})
    with pytest.raises(ValidationFailed) as refused:
        as_user(sales, sales.sam, "lead").update(lead["id"], {"converted_account": account["id"]})
    assert "converted_account" in refused.value.errors
    # a stamp still needs the right to update the record: Eve may not update Sam's lead
    eve = as_user(sales, sales.eve, "lead")
    from xrm.storage.records import Forbidden

    with pytest.raises(Forbidden):
        eve.update(lead["id"], {}, stamp={"converted_account": account["id"]})
    # and a computed field is no stamp
    with pytest.raises(ValidationFailed) as computed:
        as_user(sales, sales.sam, "lead").update(lead["id"], {}, stamp={"full_name": "X"})
    assert computed.value.errors == {"full_name": ["full_name cannot be stamped"]}


def test_roles_the_wizard_does_not_name_are_not_offered_it(sales):
    lead = lead_of(sales, sales.sam)
    app = make_app(sales)
    reader = Client(app).login("rita@example.com")
    assert reader.get(f"/wizards/convert_lead?from=lead:{lead['id']}").status_code == 403
    page = reader.get(f"/r/lead/{lead['id']}").get_data(as_text=True)
    assert "offer-convert_lead" not in page
    seller = Client(app).login("sam@example.com")
    page = seller.get(f"/r/lead/{lead['id']}").get_data(as_text=True)
    assert f"/wizards/convert_lead?from=lead:{lead['id']}" in page


def test_a_converted_lead_offers_no_conversion_and_its_page_says_why(sales):
    sam = sales.principal(sales.sam)
    lead = lead_of(sales, sales.sam)
    run = start(sales, sales.sam, lead)
    _walk_new(run, sales, sam)
    run.finish(sales, sam)
    seller = Client(make_app(sales)).login("sam@example.com")
    page = seller.get(f"/r/lead/{lead['id']}").get_data(as_text=True)
    assert "offer-convert_lead" not in page
    opened = seller.get(f"/wizards/convert_lead?from=lead:{lead['id']}")
    assert opened.status_code == 302 and opened.headers["Location"].endswith(
        f"/r/lead/{lead['id']}"
    )
    landed = seller.get(opened.headers["Location"]).get_data(as_text=True)
    assert "This lead is already converted or disqualified." in landed


# ---------------------------------------------------------------------------- the checker
BAD = """wizards:
  broken:
    label: Broken
    open_from: {list: lead, if: [status, eq, new], message: Not this one}
    steps:
      - name: first
        fields:
          - {input: company, field: lead.company, default: "{{ record.compnay }}"}
          - input: firm
            pick: account
            duplicates: {name: "{{ inputs.company }}", tax_id: "1", nmae: x}
          - input: deal
            pick: opportunity
            duplicates: {name: "{{ inputs.company }}"}
    finish:
      - create: account
        as: account
        values: {name: "{{ inputs.company }}"}
      - update: account
        values: {converted_leads: 1}
        stamp: {open_pipeline: 5}
"""


def test_the_checker_names_mistakes_in_the_new_keys(tmp_path, capsys):
    pack = write_pack(tmp_path, "bad", {"wizards/bad.yaml": BAD}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    b = "bad/wizards/bad.yaml:{}: wizards.broken: "
    for line in [
        b.format("4:33") + "open_from: if: needs one entity's records (open_from: record: ENTITY)",
        b.format("8:60") + "input 'company': default: the template reads record, but the wizard"
        " is not opened from a record",
        b.format("11:64") + "duplicates: no duplicate rule of account reads 'tax_id' (the rules"
        " read email, name, phone, website)",
        b.format("14:25") + "duplicates: opportunity has no duplicate rules",
        b.format("20:35") + "values: account.converted_leads is computed or read only",
        b.format("21:32") + "stamp: account.open_pipeline is not a field the platform can set",
    ]:
        assert line in out, (line, out)


def test_the_checker_reads_templates_of_defaults_and_duplicates_against_the_record(
    tmp_path, capsys
):
    doc = """wizards:
  odd:
    label: Odd
    open_from: {record: lead, if: [stauts, eq, new]}
    steps:
      - name: first
        fields:
          - {input: company, field: lead.company, default: "{{ record.compnay }}"}
          - {input: first, field: lead.first_name, default: "{{ inputs.company }}"}
          - input: firm
            pick: account
            duplicates: {email: "{{ inputs.emial }}", tax_id: "1"}
    finish:
      - update: record
        stamp: {converted_account: "{{ inputs.firm }}"}
"""
    pack = write_pack(tmp_path, "odd", {"wizards/odd.yaml": doc}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    assert "open_from: if: stauts: " in out and "did you mean 'status'" in out
    assert "input 'company': default: lead has no field 'compnay'; did you mean 'company'?" in out
    assert "input 'first': default: unknown input 'company'" in out
    assert "duplicates: email: unknown input 'emial'" in out
    assert "duplicates: no duplicate rule of account reads 'tax_id'" not in out  # first error only
    lines = [line for line in out.splitlines() if ": wizards.odd: " in line]
    assert len(lines) == 4, lines


# ---------------------------------------------------------------------------- the API
def api(store, user):
    token = store.create_token(user, "tests")
    client = make_app(store).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_the_api_lists_describes_and_runs_the_conversion(sales):
    account = as_user(sales, sales.sam, "account").create(
        {"name": "Northwind Traders", "email": "info@northwind.example.com"}
    )
    lead = lead_of(sales, sales.sam)
    client = api(sales, sales.sam)
    listed = client.get("/api/v1/wizards").get_json()["data"]
    assert {"convert_lead", "new_customer"} <= {w["name"] for w in listed}
    convert = next(w for w in listed if w["name"] == "convert_lead")
    assert convert["open_from"]["record"] == ["lead"]
    assert [s["name"] for s in convert["steps"]][:3] == ["qualify", "account", "contact"]
    described = client.get(f"/api/v1/wizards/convert_lead?from=lead:{lead['id']}").get_json()
    assert described["values"]["company"] == "Northwind Traders"
    candidates = described["candidates"]["account"]
    assert [c["id"] for c in candidates] == [account["id"]]
    assert "same_name" in candidates[0]["matched"]
    assert candidates[0]["title"] == "Northwind Traders"
    before = counts(sales)
    done = client.post(
        "/api/v1/wizards/convert_lead",
        json={
            "from": f"lead:{lead['id']}",
            "inputs": {"account": account["id"], "contact": "new", "amount": 1500.5},
        },
    )
    assert done.status_code == 201, done.get_json()
    body = done.get_json()
    assert body["records"]["account"] == {
        "entity": "account",
        "id": account["id"],
        "created": False,
        "href": f"/api/v1/account/{account['id']}",
    }
    assert body["records"]["contact"]["created"] is True
    assert body["landing"]["id"] == lead["id"]
    after = counts(sales)
    assert after["account"] == before["account"]
    assert after["contact"] == before["contact"] + 1
    deal = sales.records("opportunity").get(body["records"]["opportunity"]["id"])
    assert deal["amount"] == Decimal("1500.5") and deal["account"] == account["id"]
    stamped = sales.records("lead").get(lead["id"])
    assert stamped["converted_account"] == account["id"]
    assert stamped["converted_contact"] == body["records"]["contact"]["id"]
    # once converted: 409 for the description and the run, nothing written
    again = client.post(
        "/api/v1/wizards/convert_lead", json={"from": f"lead:{lead['id']}", "inputs": {}}
    )
    assert again.status_code == 409
    assert again.get_json()["type"] == "urn:xrm:problem:wizard-not-applicable"
    assert client.get(f"/api/v1/wizards/convert_lead?from=lead:{lead['id']}").status_code == 409
    assert counts(sales) == after


def test_the_api_refuses_bad_inputs_and_writes_nothing(sales):
    lead = lead_of(sales, sales.sam)
    hidden = lead_of(sales, sales.wes)  # another team's lead: Sam may not read it
    client = api(sales, sales.sam)
    url = "/api/v1/wizards/convert_lead"
    before = counts(sales)

    def post(payload):
        return client.post(url, json=payload)

    # an input on a step: its step and its message
    bad = post({"from": f"lead:{lead['id']}", "inputs": {"email": "not-mail", "company": ""}})
    assert bad.status_code == 422
    problem = bad.get_json()
    assert problem["step"] == "qualify" and set(problem["errors"]) == {"email", "company"}
    bad = post({"from": f"lead:{lead['id']}", "inputs": {"close_date": "someday"}})
    assert bad.status_code == 422 and bad.get_json()["step"] == "opportunity"
    bad = post({"from": f"lead:{lead['id']}", "inputs": {"account": 999999}})
    assert bad.status_code == 422 and bad.get_json()["errors"] == {"account": ["no such record"]}
    bad = post({"from": f"lead:{lead['id']}", "inputs": {"acount": 1}})
    assert bad.status_code == 422
    assert bad.get_json()["errors"]["acount"] == [
        "not an input of this wizard; did you mean 'account'?"
    ]
    # the finish's refusal (the lead's rule) comes back on its step, nothing written
    bad = post({"from": f"lead:{lead['id']}", "inputs": {"email": "", "phone": ""}})
    assert bad.status_code == 422 and bad.get_json()["step"] == "qualify"
    assert set(bad.get_json()["errors"]) == {"email"}
    # the record: needed, of the right entity, readable
    assert post({"inputs": {}}).status_code == 400
    assert post({"from": "account:1", "inputs": {}}).status_code == 400
    assert post({"from": "lead:x", "inputs": {}}).status_code == 400
    assert post({"from": "lead:999999", "inputs": {}}).status_code == 404
    assert post({"from": f"lead:{hidden['id']}", "inputs": {}}).status_code == 404
    assert post({"from": f"lead:{lead['id']}", "inputs": [], "x": 1}).status_code == 400
    assert counts(sales) == before
    assert sales.records("lead").get(lead["id"])["status"] == "new"
    # a role the wizard does not name: as if it did not exist
    reader = api(sales, sales.rita)
    assert "convert_lead" not in {
        w["name"] for w in reader.get("/api/v1/wizards").get_json()["data"]
    }
    assert reader.post(url, json={"from": f"lead:{lead['id']}"}).status_code == 404


def test_the_api_needs_csrf_with_a_session_cookie(sales):
    lead = lead_of(sales, sales.sam)
    seller = Client(make_app(sales)).login("sam@example.com")
    url = "/api/v1/wizards/convert_lead"
    payload = {"from": f"lead:{lead['id']}", "inputs": {"account": "new", "contact": "new"}}
    refused = seller.http.post(url, json=payload)
    assert refused.status_code in (400, 403)
    assert sales.records("lead").get(lead["id"])["status"] == "new"
    done = seller.http.post(url, json=payload, headers={"X-CSRFToken": seller.csrf()})
    assert done.status_code == 201, done.get_json()
    assert sales.records("lead").get(lead["id"])["status"] == "qualified"


def test_the_openapi_document_describes_the_wizard_endpoints(sales):
    client = api(sales, sales.sam)
    document = client.get("/api/v1/openapi.json").get_json()
    paths = document["paths"]
    assert set(paths["/api/v1/wizards/{name}"]) >= {"get", "post"}
    assert "get" in paths["/api/v1/wizards"]
    assert "wizards.Outcome" in document["components"]["schemas"]


def test_the_shipped_wizard_follows_the_published_schema():
    import jsonschema
    import yaml

    from xrm.metadata.schemas import published_schemas

    schema = published_schemas()["wizards.schema.json"]
    shipped = yaml.safe_load((SOLUTIONS / "sales" / "wizards" / "convert_lead.yaml").read_text())
    jsonschema.validate(shipped, schema)
    update = shipped["wizards"]["convert_lead"]["finish"][-1]
    with pytest.raises(jsonschema.ValidationError):  # an update needs values or a stamp
        jsonschema.validate(
            {
                "wizards": {
                    "w": {**shipped["wizards"]["convert_lead"], "finish": [{"update": "record"}]}
                }
            },
            schema,
        )
    assert "stamp" in update
