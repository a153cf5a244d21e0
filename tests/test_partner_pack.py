"""The partner pack on SQLite and PostgreSQL: a deal registration from a partner user's
submission to the channel manager's approval and the opportunity it opens with the
partner; a partner cannot approve their own; leads passed on to partners by territory,
value and tier; a fund request approved in the channel managers' inbox and claimed
against; the partner portal (the same UI, the partner role's menu and home dashboard, the
account's records only); the pack's scenarios; and the sample data making every partner
report and both dashboards show figures, the portal's only the partner's own."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, assert_widgets_show_figures, failed_instances, write_pack

from xrm.cli import main
from xrm.reports.dashboards import run_dashboard
from xrm.reports.run import run_report
from xrm.storage.records import Forbidden, NotFound, ValidationFailed
from xrm.workflow import Worker
from xrm.workflow import tables as W
from xrm.workflow.inbox import decide, pending_approvals

PACKS = [SOLUTIONS / "core", SOLUTIONS / "sales", SOLUTIONS / "partner"]


@pytest.fixture
def program(database):
    """The three packs; a channel manager; two partners (Northwind, gold, managed by the
    channel manager; Contoso, silver), a portal user of each; a customer, Acme."""
    store = database.open()
    store.install(PACKS)
    ns = type("Program", (), {})()
    ns.store, ns.worker = store, Worker(store)
    ns.cm = store.add_user(
        "cm@x.test", "Chris Channel", password=PASSWORD, roles=["channel_manager"]
    )
    accounts = store.records("account")
    ns.northwind = accounts.create(
        {
            "name": "Northwind Partners",
            "account_type": "partner",
            "partner_tier": "gold",
            "channel_manager": ns.cm,
        }
    )["id"]
    ns.contoso = accounts.create(
        {"name": "Contoso Resellers", "account_type": "reseller", "partner_tier": "silver"}
    )["id"]
    ns.acme = accounts.create({"name": "Acme Corporation", "account_type": "customer"})["id"]
    ns.north_user = store.add_user(
        "ann@northwind.test",
        "Ann North",
        password=PASSWORD,
        roles=["partner_user"],
        account=ns.northwind,
    )
    ns.contoso_user = store.add_user(
        "carl@contoso.test",
        "Carl Contoso",
        password=PASSWORD,
        roles=["partner_user"],
        account=ns.contoso,
    )
    accounts.update(ns.northwind, {"partner_contact": ns.north_user})
    yield ns
    store.close()


def _as(program, user_id, entity):
    return program.store.records(entity, principal=program.store.principal(user_id))


def _notified(store, user_id, text) -> bool:
    with store.engine.connect() as conn:
        titles = conn.execute(
            sa.select(W.notifications.c.title).where(W.notifications.c.user_id == user_id)
        ).scalars()
        return any(text in title for title in titles)


def test_a_partner_registers_a_deal_and_the_channel_manager_approves_it(program):
    store = program.store
    registrations = _as(program, program.north_user, "deal_registration")
    close = store.clock.now().date() + dt.timedelta(days=60)
    made = registrations.create(
        {"customer_name": "Acme Corporation", "estimated_amount": 42000, "expected_close": close}
    )
    assert made["partner_account"] == program.northwind  # the writer's account
    assert made["number"].startswith("DR-")
    registrations.update(made["id"], {"status": "submitted"})
    program.worker.run_once()
    submitted = store.records("deal_registration").get(made["id"])
    assert submitted["submitted_on"] == store.clock.now().date()
    assert submitted["channel_manager"] == program.cm  # the partner's channel manager
    assert _notified(store, program.cm, f"Deal registration {made['number']}")
    # The partner may not approve it, nor read or write another partner's registrations.
    with pytest.raises(ValidationFailed, match="your role may not move a record"):
        registrations.update(made["id"], {"status": "approved"})
    with pytest.raises(NotFound):
        _as(program, program.contoso_user, "deal_registration").get(made["id"])
    # The channel manager approves it once the customer's account is named.
    review = _as(program, program.cm, "deal_registration")
    with pytest.raises(ValidationFailed) as caught:
        review.update(made["id"], {"status": "approved"})
    assert caught.value.errors == {"customer_account": ["required for stage Approved"]}
    review.update(made["id"], {"status": "approved", "customer_account": program.acme})
    program.worker.run_once()
    approved = store.records("deal_registration").get(made["id"])
    opportunity = store.records("opportunity").get(approved["opportunity"])
    assert (opportunity["account"], opportunity["partner_account"]) == (
        program.acme,
        program.northwind,
    )
    assert (opportunity["amount"], opportunity["close_date"]) == (Decimal("42000.00"), close)
    assert (opportunity["lead_source"], opportunity["owner"]) == ("partner", program.cm)
    assert approved["decided_on"] == store.clock.now().date()
    assert approved["expires_on"] == store.clock.now().date() + dt.timedelta(days=90)
    assert _notified(store, program.north_user, "approved: Acme Corporation")
    # The partner reads the opportunity (through its partner), not the customer's account;
    # the other partner reads neither.
    seen = (
        _as(program, program.north_user, "opportunity").query(fields=["name", "account.name"]).rows
    )
    assert [(r["id"], r["account.name"]) for r in seen] == [(opportunity["id"], None)]
    assert _as(program, program.contoso_user, "opportunity").count().value == 0
    with pytest.raises(NotFound):
        _as(program, program.north_user, "account").get(program.acme)
    # Approved once: a second approval (after a reopening) opens no second opportunity.
    assert (
        store.records("opportunity").count(["partner_account", "eq", program.northwind]).value == 1
    )


def test_leads_go_to_partners_by_territory_value_and_tier(program):
    store = program.store
    territory = store.records("partner_territory").create(
        {
            "name": "North",
            "region": "north",
            "partner_account": program.contoso,
            "premium_partner": program.northwind,
        }
    )["id"]
    # A premium partner must be gold or platinum.
    with pytest.raises(ValidationFailed) as caught:
        store.records("partner_territory").create(
            {"name": "South", "region": "south", "premium_partner": program.contoso}
        )
    assert caught.value.errors == {
        "premium_partner": ["The premium partner must be a gold or platinum partner."]
    }
    leads = _as(program, program.cm, "lead")
    big = leads.create(
        {
            "last_name": "Larsen",
            "company": "Fjord",
            "estimated_value": 90000,
            "partner_territory": territory,
        }
    )["id"]
    small = leads.create(
        {
            "last_name": "Berg",
            "company": "Bakery",
            "estimated_value": 5000,
            "partner_territory": territory,
        }
    )["id"]
    program.worker.run_once()
    system = store.records("lead")
    assert system.get(big)["partner_account"] == program.northwind
    assert system.get(small)["partner_account"] == program.contoso
    assert system.get(big)["distributed_on"] == store.clock.now().date()
    assert _notified(store, program.north_user, "New lead for you: Larsen")
    # Each partner reads and works its own leads, and may not pass them on elsewhere.
    north_leads = _as(program, program.north_user, "lead")
    assert [r["id"] for r in north_leads.query().rows] == [big]
    north_leads.update(big, {"status": "contacted"})
    with pytest.raises(Forbidden):
        north_leads.update(big, {"partner_account": program.contoso})
    with pytest.raises(NotFound):
        north_leads.get(small)


def test_a_fund_request_is_approved_in_the_inbox_and_claimed_against(program):
    store = program.store
    requests = _as(program, program.north_user, "mdf_request")
    fund = requests.create(
        {
            "name": "Spring webinars",
            "activity_type": "webinar",
            "start_date": store.clock.now().date(),
            "requested_amount": 6000,
        }
    )["id"]
    claims = _as(program, program.north_user, "mdf_claim")
    with pytest.raises(ValidationFailed, match="approved fund request"):
        claims.create({"mdf_request": fund, "amount": 100, "spent_on": store.clock.now().date()})
    # The partner may not set what is approved.
    with pytest.raises(Forbidden):
        requests.update(fund, {"approved_amount": 6000})
    requests.update(fund, {"status": "submitted"})
    program.worker.run_once()
    pending = pending_approvals(store, program.cm)
    assert [p["record_id"] for p in pending] == [fund]
    decide(store, pending[0]["id"], program.cm, "approved", "Go ahead")
    program.worker.run_once()
    approved = store.records("mdf_request").get(fund)
    assert (approved["status"], approved["approved_amount"]) == ("approved", Decimal("6000.00"))
    assert _notified(store, program.north_user, "Spring webinars: approved")
    first = claims.create(
        {"mdf_request": fund, "amount": 1500, "spent_on": store.clock.now().date()}
    )
    claims.create({"mdf_request": fund, "amount": 400, "spent_on": store.clock.now().date()})
    program.worker.run_once()
    assert _notified(store, program.cm, f"Fund claim {first['number']}")
    # Claims count once a channel manager approves them; the partner may not.
    with pytest.raises(ValidationFailed):
        claims.update(first["id"], {"status": "approved"})
    _as(program, program.cm, "mdf_claim").update(first["id"], {"status": "approved"})
    assert store.records("mdf_request").get(fund)["claimed_amount"] == Decimal("1500.00")
    assert requests.get(fund)["claimed_amount"] == Decimal("1500.00")
    assert store.records("account").get(program.northwind)["mdf_approved"] == Decimal("6000.00")
    # The other partner reads neither the request nor its claims.
    assert _as(program, program.contoso_user, "mdf_claim").count().value == 0
    assert _as(program, program.contoso_user, "mdf_request").count().value == 0


def test_the_partner_portal_shows_a_partner_their_accounts_records_only(program):
    store = program.store
    for partner, name in ((program.northwind, "North deal"), (program.contoso, "Contoso deal")):
        store.records("deal_registration").create(
            {
                "partner_account": partner,
                "customer_name": name,
                "estimated_amount": 1000,
                "expected_close": store.clock.now().date(),
            }
        )
    app = make_app(store)
    portal = Client(app).login("ann@northwind.test")
    home = portal.get("/").get_data(as_text=True)
    assert "Partner portal" in home  # the partner role's home dashboard
    assert "North deal" in home and "Contoso deal" not in home
    # The menu offers what the partner role reads, nothing of the rest of the CRM.
    assert "/views/deal_registrations" in home and "/views/fund_requests" in home
    for absent in ("/views/partner_territories", "/views/products", "/admin/"):
        assert absent not in home, absent
    listing = portal.get("/views/deal_registrations").get_data(as_text=True)
    assert "North deal" in listing and "Contoso deal" not in listing
    theirs = (
        store.records("deal_registration").query(["customer_name", "eq", "Contoso deal"]).rows[0]
    )
    assert portal.get(f"/r/deal_registration/{theirs['id']}").status_code == 404
    assert portal.get(f"/r/account/{program.acme}").status_code == 404
    assert portal.get(f"/r/account/{program.northwind}").status_code == 200
    assert portal.get("/admin/users").status_code in (403, 404)
    # The channel manager's home is the program's dashboard, with every partner.
    manager = Client(app).login("cm@x.test").get("/").get_data(as_text=True)
    assert "Partner program" in manager


def test_the_packs_scenarios_pass(capsys):
    assert main(["solution", "test", str(SOLUTIONS / "partner")]) == 0, capsys.readouterr()


def test_a_scenario_expecting_what_the_user_sees_fails_when_they_see_otherwise(tmp_path, capsys):
    """``sees`` is an expectation like the others: a partner user who reads another
    account's record makes it fail, with the records named."""
    files = {
        "tests/leak.yaml": """
tests:
  - name: expects a record the partner may not read
    user: {roles: [partner_user], account: mine}
    given:
      - {create: account, as: mine, values: {name: Mine, owner: null}}
      - {create: account, as: other, values: {name: Other, owner: null}}
    expect:
      - {sees: account, records: [mine, other]}
      - {sees: account, count: 2}
""",
    }
    pack = write_pack(tmp_path, "probe", files, depends={"partner": ">=1.0"})
    code = main(
        [
            "solution",
            "test",
            str(SOLUTIONS / "core"),
            str(SOLUTIONS / "sales"),
            str(SOLUTIONS / "partner"),
            str(pack),
            "-k",
            "expects a record",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "the user reads account records ['mine'], expected ['mine', 'other']" in out
    assert "the user reads 1 account record, expected 2" in out


def test_the_checker_refuses_a_scenario_account_that_is_no_account(tmp_path, capsys):
    files = {
        "tests/bad.yaml": """
tests:
  - name: the account is a deal registration
    user: {roles: [partner_user], account: reg}
    given:
      - {create: deal_registration, as: reg, values: {customer_name: X, estimated_amount: 1, expected_close: 2026-05-01}}
    expect:
      - {sees: deal_registration, records: [reg]}
""",
    }
    pack = write_pack(tmp_path, "probe", files, depends={"partner": ">=1.0"})
    assert (
        main(
            [
                "check",
                str(SOLUTIONS / "core"),
                str(SOLUTIONS / "sales"),
                str(SOLUTIONS / "partner"),
                str(pack),
            ]
        )
        == 1
    )
    err = capsys.readouterr()
    assert "user account 'reg' is a deal_registration record; name an account" in err.out + err.err


def test_setup_with_sample_data_makes_every_partner_report_and_dashboard_show_figures(database):
    from xrm.solutions.setup import SetupAnswers, run_setup

    store = database.open()
    try:
        result = run_setup(
            store,
            SetupAnswers(
                sample_data=True,
                admin_password="Correct-Horse-42-battery",
                modules=("core", "sales", "partner"),
            ),
        )
        catalog = store.refresh()
        people = {m.email.split("@")[0]: m for m in result.demo_users}
        channel = store.principal(people["channel"].id)
        north = people["partner.northwind"]
        assert north.account == "Northwind Partners"
        partner = store.principal(north.id)
        assert partner.account_id == store.find_account("Northwind Partners")
        reports = [r for r in catalog.reports.values() if r.solution == "partner"]
        assert len(reports) == 6
        for report in reports:
            out = run_report(store, report, {}, channel)
            assert out.rows, f"report {report.name} is empty"
            figures = [v for row in out.rows for k, v in row.items() if k not in report.group_by]
            assert any(v not in (None, 0) for v in figures), f"{report.name} has only zeros"
            names = {str(row.get("partner_account")) for row in out.rows}
            if report.visible_to(north.id, north.email, partner.roles, False):
                mine = run_report(store, report, {}, partner)
                assert mine.rows, f"report {report.name} is empty for the partner"
                if "partner_account" in report.group_by:
                    assert {row["partner_account"] for row in mine.rows} == {partner.account_id}
                    assert len(names) > 1
        for name, reader in (("partner_program", channel), ("partner_portal", partner)):
            board = run_dashboard(store, catalog.dashboards[name], {}, reader, fresh=True)
            assert_widgets_show_figures(board, name)
        # Invented samples leave the partner fields alone: only the pack's partners are
        # partners, and only its deals and leads have one.
        tiers = store.records("account").query(
            ["partner_tier", "is_not_empty"], fields=["name"], limit=100
        )
        assert len(tiers.rows) == 6
        partnered = store.records("opportunity").count(["partner_account", "is_not_empty"]).value
        assert partnered == 15
        # The partner reads their account's records and no invented ones.
        assert {
            r["name"]
            for r in store.records("account", principal=partner).query(fields=["name"]).rows
        } == {"Northwind Partners"}
        Worker(store).run_once()
        assert failed_instances(store) == []
    finally:
        store.close()


def test_xrm_setup_installs_the_partner_module_with_its_portal_users(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'setup.db'}"
    assert main(["setup", "--database", url, "--modules", "core,sales,partner", "--demo"]) == 0
    out = capsys.readouterr().out
    assert "solutions core, sales, partner" in out
    assert "demo partner user: partner.northwind@example.com (account Northwind Partners)" in out
    assert "demo channel manager: channel@example.com (team channel)" in out
