"""Wizards: the checker's positioned messages, and the engine without a request: step
conditions, Back keeping what was typed, numbers and dates read in the user's locale, a
run's state through JSON, the finish actions creating and linking records, updating the
record opened from and queueing a process in the same transaction, a pick input's
candidates, a failure on the last action writing nothing, refusals for roles, and a wizard
built in Python with a callable finish.  Then the pages through the test client: the
signed state, refusals, offers by role.  On SQLite, and on PostgreSQL with
XRM_TEST_DATABASE_URL."""

from __future__ import annotations

import html
import json
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.forms.wizard import FinishContext, WizardFailed, WizardRefused, WizardRun
from xrm.metadata.labels import Label
from xrm.metadata.wizards import WizardInput, WizardStep, build_wizard, plain_field
from xrm.storage.records import ValidationFailed
from xrm.workflow import tables as W

BAD = """wizards:
  broken:
    label: Broken
    roles: [managr]
    open_from: {menu: sails, list: acount}
    steps:
      - name: first
        visible_if: [later, eq, true]
        fields:
          - {input: name, field: account.nme}
          - {input: kind, field: acount.name}
          - {input: total, field: opportunity.expected_revenue}
          - {input: sector, type: choice, options: industri}
          - {input: flag, type: boolean}
      - name: second
        visible_if: [flg, eq, true]
        fields:
          - {input: later, type: boolean}
          - {input: firm, pick: account, candidates: [name, eq, "{{ inputs.nam }}"]}
    finish:
      - create: account
        as: account
        values: {name: "{{ inputs.name }}", revenue: 5, employees: "{{ inputs.missing }}"}
      - create: contact
        if: [flag, eq, true]
        values: {last_name: x, account: "{{ acount.id }}"}
      - update: record
        values: {name: x}
      - start: welcome
        for: account
    done: {open: deal}
"""


def test_the_checker_names_every_mistake_at_its_line(tmp_path, capsys):
    pack = write_pack(tmp_path, "bad", {"wizards/bad.yaml": BAD}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    lines = capsys.readouterr().out.splitlines()
    where = "bad/wizards/bad.yaml"
    b = f"{where}:{{}}: wizards.broken: "
    expected = [
        b.format("4:13") + "unknown role 'managr'; did you mean 'manager'?",
        b.format("5:23") + "open_from: menu: unknown solution 'sails'; did you mean 'sales'?",
        b.format("5:36") + "open_from: list: unknown entity 'acount'; did you mean 'account'?",
        b.format("8:21") + "step first: visible_if: later: unknown input 'later' (a step's"
        " condition reads inputs of the steps before it)",
        b.format("10:34") + "field: account has no field 'nme'; did you mean 'name'?",
        b.format("11:34") + "field: unknown entity 'acount'; did you mean 'account'?",
        b.format("12:35") + "field: opportunity.expected_revenue is not a field a person"
        " enters (money, computed)",
        b.format("13:52") + "input 'sector': a choice input needs options: an option set;"
        " unknown option set 'industri'; did you mean 'industry'?",
        b.format("16:21") + "step second: visible_if: flg: unknown input 'flg'; did you mean"
        " 'flag'?",
        b.format("19:54") + "candidates: name: unknown input 'nam'",
        b.format("23:54") + "values: account has no field 'revenue'",
        b.format("23:68") + "values: employees: unknown input 'missing'",
        b.format("26:41") + "values: account: unknown name 'acount' in template; did you mean"
        " 'account'?",
        b.format("27:17") + "record: the wizard must be opened from one entity's records",
        b.format("29:16") + "start: unknown process 'welcome'",
        b.format("31:18") + "done: unknown action 'deal' (expected record or an action's as)",
    ]
    for line in expected:
        assert any(line in got for got in lines), (line, lines)
    assert sum(1 for got in lines if ": wizards.broken: " in got) == len(expected)


def test_the_schema_check_comes_first_with_its_position(tmp_path, capsys):
    doc = BAD.replace("        visible_if: [later, eq, true]\n", "        shown_if: [later]\n")
    pack = write_pack(tmp_path, "bad", {"wizards/bad.yaml": doc}, {"sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr().out
    assert "bad/wizards/bad.yaml:8:9: wizards.broken: unknown key 'shown_if'" in out


def test_the_schema_is_published_and_the_shipped_wizard_follows_it():
    import jsonschema
    import yaml

    from xrm.metadata.schemas import SCHEMA_DIR, published_schemas

    schema = published_schemas()["wizards.schema.json"]
    assert (SCHEMA_DIR / "wizards.schema.json").exists()  # test_definitions: kept current
    shipped = yaml.safe_load((SOLUTIONS / "sales" / "wizards" / "new_customer.yaml").read_text())
    jsonschema.validate(shipped, schema)
    wrong = {"wizards": {"w": {"label": "W", "steps": [{"name": "s"}], "finish": [{"stat": 1}]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


# ---------------------------------------------------------------------------- engine
PROBE = {
    "processes/welcome.yaml": """
process: welcome_account
entity: account
label: Welcome
on: {manual: {roles: [user, manager]}}
steps:
  - set: {billing_city: Welcomed}
""",
    "wizards/probe.yaml": """
wizards:
  qualify:
    label: {en: Qualify, ru: Квалифицировать}
    roles: [user, manager]
    open_from: {record: lead}
    steps:
      - name: match
        label: Account
        fields:
          - input: account
            pick: account
            or_create: true
            candidates: {any: [[name, eq, "{{ record.company }}"], [email, eq, "{{ record.email }}"]]}
      - name: deal
        fields:
          - {input: amount, field: opportunity.amount}
          - {input: close_date, type: date, label: Close date}
      - name: review
        review: true
    finish:
      - create: account
        use: account
        as: account
        values: {name: "{{ record.company }}", email: "{{ record.email }}"}
      - create: contact
        as: contact
        values: {last_name: "{{ record.last_name }}", account: "{{ account.id }}"}
      - update: record
        values: {status: qualified, description: "Qualified as {{ account.name }}"}
      - start: welcome_account
        for: account
      - create: opportunity
        as: deal
        values:
          name: "{{ record.topic }}"
          account: "{{ account.id }}"
          contact: "{{ contact.id }}"
          amount: "{{ inputs.amount }}"
          close_date: "{{ inputs.close_date }}"
    done: {open: deal}
  open_to_all:
    label: Open to all
    steps:
      - name: only
        fields:
          - {input: name, field: account.name, required: true}
    finish:
      - create: account
        values: {name: "{{ inputs.name }}"}
""",
}


@pytest.fixture
def shop(database, tmp_path):
    store = database.open()
    probe = write_pack(tmp_path, "probe", PROBE, {"sales": ">=1.0"})
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales", probe])
    store.seller = store.add_user("sam@example.com", "Sam", password=PASSWORD, roles=["user"])
    store.reader = store.add_user(
        "rita@example.com", "Rita", password=PASSWORD, roles=["read_only"], locale="ru"
    )
    yield store
    store.close()


def count(store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def counts(store) -> dict:
    W.ensure_tables(store)
    tables = ("account", "contact", "opportunity", W.instances.name)
    return {t: count(store, t) for t in tables}


def test_conditions_show_steps_as_the_inputs_change(shop):
    run = WizardRun(shop.catalog.wizards["new_customer"])
    assert [s.name for s in run.visible_steps()] == ["company", "contact", "review"]
    assert run.submit({"name": "Acme", "with_contact": "", "with_deal": "true"}) == {}
    assert [s.name for s in run.visible_steps()] == ["company", "deal", "review"]
    assert run.current == "deal"  # the hidden contact step is skipped
    run.back()
    assert run.current == "company"
    assert run.submit({"name": "Acme", "with_contact": "true"}) == {}
    assert run.current == "contact"
    assert [s.name for s in run.visible_steps()] == ["company", "contact", "review"]


def test_back_keeps_what_was_typed_valid_or_not(shop):
    run = WizardRun(shop.catalog.wizards["new_customer"])
    assert run.submit({"name": "Acme", "with_contact": "true"}) == {}
    errors = run.submit({"first_name": "Ann", "last_name": "", "email": "not-mail"})
    assert errors["last_name"] == ["required"] and "email" in errors
    assert run.current == "contact"
    run.back({"first_name": "Ann", "last_name": "", "email": "not-mail"})
    assert run.current == "company"
    assert run.value("name") == "Acme"  # the earlier step keeps its values
    run = WizardRun.from_dict(run.wizard, json.loads(json.dumps(run.to_dict())))
    assert run.submit({"name": "Acme Ltd", "with_contact": "true"}) == {}
    contact = run.step()
    assert [run.shown_text(i) for i in contact.inputs[:1]] == ["Ann"]
    assert run.shown_text(contact.inputs[3]) == "not-mail"
    assert run.value("name") == "Acme Ltd"


def test_numbers_and_dates_are_read_in_the_users_locale(shop):
    wizard = shop.catalog.wizards["new_customer"]
    ru = WizardRun(wizard, locale="ru")
    ru.submit({"name": "Acme", "with_deal": "true"})
    assert ru.submit({"deal_name": "Big", "amount": "1 234,50", "close_date": "2027-03-01"}) == {}
    assert ru.value("amount") == Decimal("1234.50")
    en = WizardRun(wizard, locale="en")
    en.submit({"name": "Acme", "with_deal": "true"})
    assert en.submit({"deal_name": "Big", "amount": "1,234.50", "close_date": "2027-03-01"}) == {}
    assert en.value("amount") == Decimal("1234.50")
    en.back()
    assert en.current == "deal"
    errors = en.submit({"deal_name": "Big", "amount": "12,34.5", "close_date": "soon"})
    assert set(errors) == {"amount", "close_date"}


def test_finish_creates_and_links_the_records_in_one_go(shop):
    principal = shop.principal(shop.seller)
    run = WizardRun(shop.catalog.wizards["new_customer"], locale="en")
    run.submit({"name": "Globex", "industry": "", "with_contact": "true", "with_deal": "true"})
    run.submit({"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com"})
    run.submit({"deal_name": "Globex deal", "amount": "5000", "close_date": "2027-01-15"})
    assert run.step().review and run.is_last
    outcome = run.finish(shop, principal)
    kind, account_id = outcome.landing
    assert kind == "account"
    account = shop.records("account").get(account_id)
    contact = shop.records("contact").get(outcome.records["contact"][1])
    deal = shop.records("opportunity").get(outcome.records["deal"][1])
    assert account["name"] == "Globex" and account["account_type"] == "customer"
    assert account["owner"] == shop.seller  # written as the user who ran it
    assert contact["account"] == account_id and contact["email"] == "ann@example.com"
    assert deal["account"] == account_id and deal["contact"] == contact["id"]
    assert deal["amount"] == Decimal("5000") and str(deal["close_date"]) == "2027-01-15"


def test_a_skipped_step_creates_nothing_of_its_own(shop):
    before = counts(shop)
    run = WizardRun(shop.catalog.wizards["new_customer"])
    run.submit({"name": "Solo", "with_contact": ""})
    outcome = run.finish(shop, shop.principal(shop.seller))
    after = counts(shop)
    assert after["account"] == before["account"] + 1
    assert after["contact"] == before["contact"] and set(outcome.records) == {"account"}


def make_lead(store, user, **values):
    # a qualified lead needs an email or a phone (the sales pack's rule)
    values = {"last_name": "Lee", "topic": "Pumps", "phone": "+1 212 555 0100", **values}
    return store.records("lead", principal=store.principal(user)).create(values)


def test_from_a_record_a_pick_input_links_a_candidate_and_the_process_is_queued(shop):
    principal = shop.principal(shop.seller)
    accounts = shop.records("account", principal=principal)
    initech = accounts.create({"name": "Initech", "email": "hello@initech.example.com"})
    accounts.create({"name": "Other"})
    lead = make_lead(shop, shop.seller, company="Initech Inc", email="hello@initech.example.com")
    wizard = shop.catalog.wizards["qualify"]
    run = WizardRun(wizard, origin=("lead", lead["id"]))
    pick = wizard.steps[0].inputs[0]
    found = run.candidates(pick, shop, principal)
    assert [r["id"] for r in found] == [initech["id"]]  # by email; the name differs
    assert run.submit({"account": str(initech["id"])}, store=shop, principal=principal) == {}
    assert run.submit({"amount": "700", "close_date": "2027-02-01"}) == {}
    before = counts(shop)
    outcome = run.finish(shop, principal)
    after = counts(shop)
    assert after["account"] == before["account"]  # linked, not created
    assert after[W.instances.name] == before[W.instances.name] + 1
    deal = shop.records("opportunity").get(outcome.landing[1])
    assert deal["account"] == initech["id"] and deal["name"] == "Pumps"
    lead = shop.records("lead").get(lead["id"])
    assert lead["status"] == "qualified" and lead["description"] == "Qualified as Initech"
    with shop.engine.connect() as conn:
        queued = conn.execute(
            sa.select(W.instances.c.process, W.instances.c.record_id).order_by(
                W.instances.c.id.desc()
            )
        ).first()
    assert tuple(queued) == ("welcome_account", initech["id"])


def test_create_new_is_chosen_when_no_candidate_fits(shop):
    principal = shop.principal(shop.seller)
    lead = make_lead(shop, shop.seller, company="Brand New Co")
    wizard = shop.catalog.wizards["qualify"]
    run = WizardRun(wizard, origin=("lead", lead["id"]))
    assert run.candidates(wizard.steps[0].inputs[0], shop, principal) == []  # no email: none
    assert run.submit({"account": "new"}, store=shop, principal=principal) == {}
    run.submit({"amount": "", "close_date": "2027-02-01"})
    outcome = run.finish(shop, principal)
    assert shop.records("account").get(outcome.records["account"][1])["name"] == "Brand New Co"


def test_a_failure_on_the_last_action_writes_nothing(shop):
    principal = shop.principal(shop.seller)
    lead = make_lead(shop, shop.seller, company="Doomed Co")
    run = WizardRun(shop.catalog.wizards["qualify"], origin=("lead", lead["id"]))
    run.submit({"account": "new"}, store=shop, principal=principal)
    assert run.submit({"amount": "10", "close_date": ""}) == {}  # not required on the step
    before = counts(shop)
    with pytest.raises(WizardFailed) as failed:
        run.finish(shop, principal)
    # the opportunity's required close date came from the deal step's input: shown there
    assert failed.value.step == "deal" and failed.value.errors == {"close_date": ["required"]}
    assert run.current == "deal"
    assert counts(shop) == before  # no account, contact or queued process
    assert shop.records("lead").get(lead["id"])["status"] == "new"


def test_roles_the_wizard_does_not_name_are_refused(shop):
    run = WizardRun(shop.catalog.wizards["new_customer"])
    run.submit({"name": "Nope", "with_contact": ""})
    before = counts(shop)
    with pytest.raises(WizardRefused):
        run.finish(shop, shop.principal(shop.reader))
    assert counts(shop) == before


def test_the_records_service_refuses_what_the_role_may_not_do(shop):
    run = WizardRun(shop.catalog.wizards["open_to_all"])
    assert run.submit({"name": "Read-only made"}) == {}
    before = counts(shop)
    with pytest.raises(WizardFailed) as failed:
        run.finish(shop, shop.principal(shop.reader))  # read_only may not create accounts
    assert failed.value.general and "create" in failed.value.general[0]
    assert counts(shop) == before


def test_a_state_that_does_not_fit_the_wizard_is_refused_or_dropped(shop):
    wizard = shop.catalog.wizards["new_customer"]
    state = WizardRun(wizard).to_dict()
    with pytest.raises(WizardRefused):
        WizardRun.from_dict(shop.catalog.wizards["open_to_all"], state)
    with pytest.raises(WizardRefused):
        WizardRun.from_dict(wizard, {**state, "current": "nowhere"})
    forged = WizardRun.from_dict(wizard, {**state, "values": {"amount": "lots", "nope": 1}})
    assert "amount" not in forged.values and "nope" not in forged.values
    assert not forged.may_go_to("review")  # steps not done cannot be jumped to


def python_wizard(fail: bool = False):
    """A platform wizard (like setup): plain inputs and a callable finish."""
    label = Label.of({"en": "Organization", "ru": "Организация"})
    name = plain_field("setup", "organization", "text", label, max_length=50)
    size = plain_field("setup", "size", "integer", Label.of("Size"), min=1)

    def finish(ctx: FinishContext):
        account = ctx.records("account").create({"name": ctx.values["organization"]})
        if fail:
            raise ValidationFailed({"size": ["must be at least 1000"]})
        return ("account", account["id"])

    steps = [
        WizardStep("about", Label.of("About"), (WizardInput("organization", name, label, True),)),
        WizardStep("size", Label.of("Size"), (WizardInput("size", size, size.label),)),
    ]
    return build_wizard("setup", Label.of("Setup"), steps, finish=finish)


def test_a_wizard_built_in_python_runs_its_callable_in_one_transaction(shop):
    admin = shop.add_user("ada@example.com", "Ada", password=PASSWORD, roles=["administrator"])
    principal = shop.principal(admin)
    run = WizardRun(python_wizard(), locale="ru")
    assert run.submit({"organization": ""}) == {"organization": ["required"]}
    assert run.submit({"organization": "Umbrella"}) == {}
    assert run.submit({"size": "1 500"}) == {}
    assert run.value("size") == 1500
    landing = run.finish(shop, principal).landing
    assert shop.records("account").get(landing[1])["name"] == "Umbrella"
    before = counts(shop)
    failing = WizardRun(python_wizard(fail=True))
    failing.submit({"organization": "Ghost"})
    failing.submit({"size": "3"})
    with pytest.raises(WizardFailed) as failed:
        failing.finish(shop, principal)
    assert failed.value.general == ["size: must be at least 1000"]
    assert counts(shop) == before


# ---------------------------------------------------------------------------- pages
STATE = re.compile(r'name="state" value="([^"]+)"')


def state_of(response) -> str:
    return html.unescape(STATE.search(response.get_data(as_text=True)).group(1))


def test_pages_sign_the_state_and_refuse_what_does_not_belong(shop):
    app = make_app(shop)
    seller = Client(app).login("sam@example.com")
    page = seller.get("/wizards/new_customer")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'data-testid="nav-wizard-new_customer"' in text  # offered in the sales menu
    state = state_of(page)
    tampered = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
    assert seller.post("/wizards/new_customer", {"state": tampered}).status_code == 400
    # another user cannot take over this user's run
    other = shop.add_user("oz@example.com", "Oz", password=PASSWORD, roles=["user"])
    assert other
    second = Client(app).login("oz@example.com")
    assert second.post("/wizards/new_customer", {"state": state}).status_code == 400
    # without the CSRF token nothing is taken
    bare = seller.post("/wizards/new_customer", {"state": state}, csrf=False)
    assert bare.status_code == 400
    # a role the wizard does not name neither sees nor opens it
    reader = Client(app).login("rita@example.com")
    assert "nav-wizard-new_customer" not in reader.get("/").get_data(as_text=True)
    assert reader.get("/wizards/new_customer").status_code == 403
    assert seller.get("/wizards/nothing").status_code == 404


def test_pages_walk_to_the_end_and_a_finished_run_is_not_run_twice(shop):
    seller = Client(make_app(shop)).login("sam@example.com")
    page = seller.get("/wizards/new_customer")
    page = seller.post(
        "/wizards/new_customer",
        {"state": state_of(page), "name": "", "with_contact": "", "_action": "next"},
    )
    assert page.status_code == 422 and 'data-testid="error-name"' in page.get_data(as_text=True)
    page = seller.post(
        "/wizards/new_customer",
        {"state": state_of(page), "name": "Paged Co", "with_contact": "", "_action": "next"},
    )
    assert 'data-step="review"' in page.get_data(as_text=True)
    assert ">Paged Co<" in page.get_data(as_text=True)
    before = counts(shop)
    state = state_of(page)
    done = seller.post("/wizards/new_customer", {"state": state, "_action": "finish"})
    assert done.status_code == 302 and "/r/account/" in done.headers["Location"]
    assert counts(shop)["account"] == before["account"] + 1
    again = seller.post("/wizards/new_customer", {"state": state, "_action": "finish"})
    assert again.status_code == 302 and counts(shop)["account"] == before["account"] + 1


def test_a_record_page_offers_the_wizards_opened_from_it(shop):
    lead = make_lead(shop, shop.seller, company="Offer Co")
    seller = Client(make_app(shop)).login("sam@example.com")
    page = seller.get(f"/r/lead/{lead['id']}").get_data(as_text=True)
    assert f"/wizards/qualify?from=lead:{lead['id']}" in page
    opened = seller.get(f"/wizards/qualify?from=lead:{lead['id']}")
    assert opened.status_code == 200 and "Lee" in opened.get_data(as_text=True)
    assert seller.get("/wizards/qualify?from=lead:999999").status_code == 404
    assert seller.get("/wizards/qualify?from=account:1").status_code == 404


def test_the_customization_layer_adds_and_replaces_wizards(shop):
    from xrm.metadata.problems import DefinitionError

    mine = {
        "label": "Quick account",
        "open_from": {"list": "account"},
        "steps": [{"name": "only", "fields": [{"input": "name", "field": "account.name"}]}],
        "finish": [{"create": "account", "values": {"name": "{{ inputs.name }}"}}],
    }
    shop.customize("wizards", {"wizards": {"quick_account": mine}})
    assert shop.catalog.wizards["quick_account"].solution == "customization"
    renamed = {**mine, "label": {"en": "Customer, quickly", "ru": "Быстро: клиент"}}
    shop.customize("wizards", {"wizards": {"new_customer": renamed}})
    assert shop.catalog.wizards["new_customer"].label.get("ru") == "Быстро: клиент"
    broken = {**mine, "finish": [{"create": "acount", "values": {}}]}
    with pytest.raises(DefinitionError) as refused:
        shop.customize("wizards", {"wizards": {"broken": broken}})
    assert "create: unknown entity 'acount'; did you mean 'account'?" in str(refused.value)
    assert "broken" not in shop.catalog.wizards


def test_a_pick_input_takes_a_record_found_by_search_over_the_candidates(shop):
    principal = shop.principal(shop.seller)
    elsewhere = shop.records("account", principal=principal).create({"name": "Far Away Ltd"})
    lead = make_lead(shop, shop.seller, company="Nearby Co")
    run = WizardRun(shop.catalog.wizards["qualify"], origin=("lead", lead["id"]))
    posted = {"account": "new", "account__other": str(elsewhere["id"])}
    assert run.submit(posted, store=shop, principal=principal) == {}
    assert run.value("account") == elsewhere["id"]
    run.back()
    assert run.submit({"account__other": "999999"}, store=shop, principal=principal) == {
        "account": ["no such record"]
    }
    assert (
        run.submit({"account__other": str(elsewhere["id"])}, store=shop, principal=principal) == {}
    )
    run.submit({"amount": "", "close_date": "2027-05-01"})
    outcome = run.finish(shop, principal)
    assert outcome.records["account"] == ("account", elsewhere["id"])
