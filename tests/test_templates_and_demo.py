"""Messages read well, stopped processes say why, and the demo looks like an organization.

* Template filters (``date``, ``datetime``, ``time``, ``number``, ``money``, ``url`` and
  ``link(record)``) format for the reader: the recipient's locale and zone, the public
  address from the settings; a message to several people is rendered once per way of
  reading it; ``xrm check`` knows the filters and reports unknown ones.
* A step that cannot go on (nobody to approve or to tell, a record gone) parks its
  instance at once with the reason in words, tells the starter and the administrators,
  and a manual start (button or API) answers with the reason.
* ``xrm setup --demo`` makes a sales team with a manager (so the deal review works) and
  data shaped like a funnel, dated around today, with meetings in working hours.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from browser.support import ADMIN, SELLER, Client, make_app, world
from conftest import SOLUTIONS, write_pack
from test_workflow_delivery import Inbox, free_port
from workflow_pack import MovableClock

import xrm
from xrm import workflow
from xrm.cli import main
from xrm.metadata.formats import FORMATS, Formats, Link
from xrm.metadata.process_compiler import template_problems
from xrm.solutions.setup import SetupAnswers, run_setup
from xrm.storage.tables import tables_for
from xrm.workflow import Worker, steps
from xrm.workflow.context import render_text
from xrm.workflow.effects import public_base_url

MOMENT = dt.datetime(2026, 12, 5, 7, 0, tzinfo=dt.UTC)  # a Saturday: 10:00 in Moscow
NEW_YORK = Formats("en", "America/New_York", "USD", "https://crm.example.com")
MOSCOW = Formats("ru", "Europe/Moscow", "RUB", "https://crm.example.com")
PASSWORD = "Correct horse battery 9"


def render(source: str, formats: Formats, **names) -> str:
    return render_text(source, {FORMATS: formats, **names})


def spaced(text: str) -> str:
    """Babel separates with no-break spaces (narrow ones before AM); compare with plain."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


# ------------------------------------------------------------------------ the filters
@pytest.mark.parametrize(
    "source, new_york, moscow",
    [
        ("{{ at | datetime }}", "Dec 5, 2026, 2:00 AM", "5 дек. 2026 г., 10:00"),
        ("{{ at | date }}", "Dec 5, 2026", "5 дек. 2026 г."),
        ("{{ at | time }}", "2:00 AM", "10:00"),
        ("{{ at | datetime('d.M.y HH:mm') }}", "5.12.2026 02:00", "5.12.2026 10:00"),
        ("{{ day | date }}", "Mar 20, 2026", "20 мар. 2026 г."),
        ("{{ day | date('short') }}", "3/20/26", "20.03.2026"),
        ("{{ day | datetime }}", "Mar 20, 2026", "20 мар. 2026 г."),  # no time to show
        ("{{ amount | money }}", "$12,500.00", "12 500,00 ₽"),
        ("{{ amount | money('EUR') }}", "€12,500.00", "12 500,00 €"),
        ("{{ amount | number }}", "12,500", "12 500"),
        ("{{ ratio | number }}", "1,234.567", "1 234,567"),
        ("{{ ratio | number(1) }}", "1,234.6", "1 234,6"),
        (
            "{{ '2026-12-05T07:00:00+00:00' | datetime }}",
            "Dec 5, 2026, 2:00 AM",
            "5 дек. 2026 г., 10:00",
        ),
    ],
)
def test_filters_format_for_the_readers_locale_and_zone(source, new_york, moscow):
    names = {
        "at": MOMENT,
        "day": dt.date(2026, 3, 20),
        "amount": Decimal("12500.00"),
        "ratio": 1234.567,
    }
    assert spaced(render(source, NEW_YORK, **names)) == new_york
    assert spaced(render(source, MOSCOW, **names)) == moscow


def test_empty_values_stay_empty_and_text_that_is_no_value_is_left_alone():
    for name in ("date", "datetime", "time", "money", "number", "url"):
        assert render(f"[{{{{ v | {name} }}}}]", MOSCOW, v=None) == "[]"
    assert render("{{ v | money }}", MOSCOW, v="on request") == "on request"
    assert render("{{ v | datetime }}", MOSCOW, v="soon") == "soon"
    # without a reader (a formula, a value): English, UTC, dollars, the default address
    assert spaced(render_text("{{ v | datetime }}", {"v": MOMENT})) == "Dec 5, 2026, 7:00 AM"


def test_url_and_link_give_absolute_addresses(monkeypatch):
    link = Link(MOSCOW, {"entity": "opportunity", "id": 7})
    assert render("{{ link }}", MOSCOW, link=link) == "https://crm.example.com/r/opportunity/7"
    assert (
        render("{{ link(other) }}", MOSCOW, link=link, other={"entity": "account", "id": 3})
        == "https://crm.example.com/r/account/3"
    )
    assert render("{{ '/inbox' | url }}", MOSCOW) == "https://crm.example.com/inbox"
    assert render("{{ 'https://elsewhere.test/x' | url }}", MOSCOW) == "https://elsewhere.test/x"
    # where the address comes from: the environment, the setting, then what xrm run serves
    monkeypatch.delenv("XRM_BASE_URL", raising=False)
    monkeypatch.delenv("XRM_SERVED_URL", raising=False)
    assert public_base_url({}) == "http://127.0.0.1:5000"
    monkeypatch.setenv("XRM_SERVED_URL", "http://127.0.0.1:8765")  # `xrm run --port 8765`
    assert public_base_url({}) == "http://127.0.0.1:8765"
    assert public_base_url({"base_url": "https://crm.example.com/"}) == "https://crm.example.com"
    monkeypatch.setenv("XRM_BASE_URL", "https://xrm.internal")
    assert public_base_url({"base_url": "https://crm.example.com"}) == "https://xrm.internal"


def test_the_checker_knows_the_filters_and_reports_unknown_ones(tmp_path, capsys):
    known = "{{ record.amount | money }} {{ record.close_date | date('short') }} {{ record | url }}"
    assert template_problems(known, None, lambda name: None) == []
    assert template_problems("{{ record.amount | mony }}", None, lambda name: None) == [
        "unknown filter 'mony' in template; did you mean 'money'?"
    ]
    # the shipped packs use the filters and pass
    assert main(["check"]) == 0
    capsys.readouterr()
    files = {
        "templates/t.yaml": textwrap.dedent(
            """
            templates:
              closing:
                entity: opportunity
                subject: "Closing {{ record.close_date | date }}"
                body: "{{ record.amount | mony }}"
            """
        ).lstrip()
    }
    pack = write_pack(tmp_path, "typo", files, depends={"core": ">=1.0", "sales": ">=1.0"})
    assert main(["check", str(SOLUTIONS / "core"), str(SOLUTIONS / "sales"), str(pack)]) == 1
    out = capsys.readouterr()
    assert re.search(
        r"t\.yaml:\d+:\d+: templates\.closing: .*unknown filter 'mony' in template; "
        r"did you mean 'money'\?",
        out.out + out.err,
    )


# ------------------------------------------------------------------------ rendering per reader
@pytest.fixture
def sales(database):
    """Core and sales on a clock the test moves; links point at https://crm.example.com."""
    clock = MovableClock(MOMENT - dt.timedelta(days=1))
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.save_settings({"base_url": "https://crm.example.com", "currency": "USD"})
    yield store, clock
    store.close()


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd) keeping what it accepts."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()


def test_each_owner_reads_a_reminder_in_their_language_and_zone_also_by_email(
    sales, smtp_server, monkeypatch
):
    monkeypatch.delenv("XRM_BASE_URL", raising=False)
    store, clock = sales
    # a reminder tells its owner what their roles let them read: their own meetings
    ann = store.add_user(
        "ann@example.com", "Ann", roles=["user"], locale="ru", time_zone="Europe/Moscow"
    )
    bob = store.add_user(
        "bob@example.com", "Bob", roles=["user"], locale="en", time_zone="America/New_York"
    )
    meetings = {
        user: store.records("meeting", user).create(
            {"subject": "Review", "starts_at": MOMENT, "reminder": "15m", "location": "Room 5"}
        )
        for user in (ann, bob)
    }
    worker = Worker(store, smtp=smtp_server.url)
    worker.run_once()
    clock.set(MOMENT - dt.timedelta(minutes=15))
    assert worker.run_once()["sent"] == 2
    [for_ann] = workflow.notifications(store, ann)
    [for_bob] = workflow.notifications(store, bob)
    assert spaced(for_ann["body"]) == (
        "Встреча «Review» начинается 5 дек. 2026 г., 10:00 (Room 5).\n"
        f"https://crm.example.com/r/meeting/{meetings[ann]['id']}"
    )
    assert spaced(for_bob["body"]) == (
        "Review starts Dec 5, 2026, 2:00 AM (Room 5).\n"
        f"https://crm.example.com/r/meeting/{meetings[bob]['id']}"
    )
    mail = {to[0]: message.get_content() for to, message in smtp_server.messages}
    for address, note in (("ann@example.com", for_ann), ("bob@example.com", for_bob)):
        assert [line.rstrip() for line in mail[address].splitlines()] == note["body"].splitlines()


PEOPLE_PACK = {
    "templates/t.yaml": """
        templates:
          heads_up:
            entity: opportunity
            subject: {en: "{{ record.name }}: {{ record.amount | money }}", ru: "{{ record.name }}: {{ record.amount | money }}"}
            body: {en: "Closes {{ record.close_date | date }}", ru: "Закрытие {{ record.close_date | date }}"}
          greeting:
            entity: opportunity
            subject: "Hello {{ user.name }}: {{ record.amount | money }}"
    """,
    "processes/p.yaml": """
        process: tell_managers
        entity: opportunity
        on: {manual: true}
        steps:
          - notify: {to: role:manager, template: heads_up, channels: [app]}
          - notify: {to: role:manager, template: greeting, channels: [app]}
    """,
}


def test_a_message_to_many_is_rendered_once_per_way_of_reading_it(database, tmp_path, monkeypatch):
    files = {k: textwrap.dedent(v).lstrip() for k, v in PEOPLE_PACK.items()}
    pack = write_pack(tmp_path, "people", files, depends={"core": ">=1.0", "sales": ">=1.0"})
    store = database.open()
    try:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales", pack])
        store.save_settings({"currency": "EUR"})
        managers = {
            "ny1": store.add_user(
                "ny1@example.com", "Nina", roles=["manager"], time_zone="America/New_York"
            ),
            "ny2": store.add_user(
                "ny2@example.com", "Ned", roles=["manager"], time_zone="America/New_York"
            ),
            "msk": store.add_user(
                "msk@example.com", "Маша", roles=["manager"], locale="ru", time_zone="Europe/Moscow"
            ),
        }
        account = store.records("account").create({"name": "Acme"})
        deal = store.records("opportunity").create(
            {"name": "Deal", "account": account["id"], "amount": 1500, "close_date": "2027-03-20"}
        )
        calls = Counter()
        original = steps.message

        def counting(batch, run, name, locale, user):
            calls[name] += 1
            return original(batch, run, name, locale, user)

        monkeypatch.setattr(steps, "message", counting)
        workflow.start(store, "tell_managers", deal["id"])
        Worker(store).run_once()
        # the two New York managers read alike; a template naming its reader is personal
        assert calls == {"heads_up": 2, "greeting": 3}
        titles = {
            name: sorted(n["title"] for n in workflow.notifications(store, user))
            for name, user in managers.items()
        }
        assert titles["ny1"] == ["Deal: €1,500.00", "Hello Nina: €1,500.00"]
        assert titles["ny2"] == ["Deal: €1,500.00", "Hello Ned: €1,500.00"]
        assert [spaced(t) for t in titles["msk"]] == ["Deal: 1 500,00 €", "Hello Маша: 1 500,00 €"]
        bodies = {spaced(n["body"]) for n in workflow.notifications(store, managers["msk"])}
        assert "Закрытие 20 мар. 2027 г." in bodies
    finally:
        store.close()


# ------------------------------------------------------------------------ steps that cannot go on
@pytest.fixture
def sales_world(tmp_path):
    """Core and sales with an administrator, a seller and a reader, and no manager."""
    with world(tmp_path) as built:
        yield built


def test_request_deal_review_without_a_manager_says_why_and_tells_people(sales_world):
    w = sales_world
    app = make_app(w.store)
    seller = Client(app).login(SELLER)
    response = seller.post(
        f"/r/opportunity/{w.deal['id']}/start", {"process": "opportunity_review"}, htmx=True
    )
    toast = re.search(r'<div class="toast-body">([^<]*)</div>', response.get_data(as_text=True))
    assert toast.group(1).strip().replace("&#34;", '"') == (
        "Request deal review could not go on: there is nobody to approve it "
        "(role Manager: no active user). The administrators have been told."
    )
    [row] = workflow.instances(w.store, process="opportunity_review")
    assert row["status"] == "failed" and row["error"] == (
        "cannot go on: there is nobody to approve it (role Manager: no active user)"
    )
    # nothing the stopped pass did is kept: the review field was not set
    assert w.store.records("opportunity").get(w.deal["id"])["review"] is None
    # the seller and the administrator are told, each with links
    for user in (w.seller, w.admin):
        [note] = workflow.notifications(w.store, user)
        assert note["title"] == "Deal review cannot go on"
        assert note["instance_id"] == row["id"] and note["record_id"] == w.deal["id"]
        assert "there is nobody to approve it (role Manager: no active user)" in note["body"]
        assert f"http://127.0.0.1:5000/r/opportunity/{w.deal['id']}" in note["body"]
        assert f"http://127.0.0.1:5000/admin/instances/{row['id']}" in note["body"]
    # the administrators' instance list shows it parked, with the reason
    page = Client(app).login(ADMIN).get("/admin/instances").get_data(as_text=True)
    listed = re.search(
        rf'<tr data-instance="{row["id"]}" data-status="failed">.*?</tr>', page, re.S
    )
    assert "Parked" in listed.group(0)
    assert "there is nobody to approve it (role Manager: no active user)" in listed.group(0)

    # once someone has the role, a retry asks them
    manager = w.store.add_user("boss@example.com", "Boss", roles=["manager"], teams=["east"])
    assert workflow.retry(w.store, row["id"])
    Worker(w.store).run_once()
    assert workflow.instance(w.store, row["id"])["status"] == "waiting"
    [asked] = workflow.pending_approvals(w.store, manager)
    assert asked["record_id"] == w.deal["id"]
    assert w.store.records("opportunity").get(w.deal["id"])["review"] == "requested"


def test_the_api_answers_a_start_that_could_not_go_on_in_the_callers_language(sales_world):
    w = sales_world
    w.store.set_preferences(w.seller, locale="ru")
    app = make_app(w.store)
    token = w.store.create_token(w.seller, "tests")
    response = app.test_client().post(
        "/api/v1/processes/opportunity_review/start",
        json={"record_id": w.big_deal["id"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "failed"
    assert body["reason"] == "некому согласовать (роль «Руководитель»: нет активных пользователей)"
    [note] = workflow.notifications(w.store, w.seller)
    assert note["title"] == "«Согласование сделки» не может продолжиться"
    # a start that can go on is queued as before: nothing ran yet
    w.store.add_user("boss@example.com", "Boss", roles=["manager"])
    again = (
        app.test_client()
        .post(
            "/api/v1/processes/opportunity_review/start",
            json={"record_id": w.deal["id"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        .get_json()
    )
    assert again["status"] == "waiting" and "reason" not in again
    assert workflow.instance(w.store, again["instance"])["status"] == "waiting"
    assert w.store.records("opportunity").get(w.deal["id"])["review"] is None


def test_a_reminder_with_nobody_to_tell_and_a_step_on_a_vanished_record_park_at_once(
    database, tmp_path
):
    files = {
        "processes/later.yaml": textwrap.dedent(
            """
            process: note_later
            entity: opportunity
            on: {manual: true}
            steps:
              - wait: {for: 1h}
              - set: {next_step: Call back}
            """
        ).lstrip()
    }
    pack = write_pack(tmp_path, "later", files, depends={"core": ">=1.0", "sales": ">=1.0"})
    clock = MovableClock(MOMENT)
    store = database.open(clock=clock)
    try:
        store.install([SOLUTIONS / "core", SOLUTIONS / "sales", pack])
        admin = store.add_user("root@example.com", "Root", roles=["administrator"])
        gone = store.add_user("gone@example.com", "Gone", roles=["user"])
        store.records("task", gone).create(
            {"subject": "Call", "due": MOMENT + dt.timedelta(hours=1), "reminder": "15m"}
        )
        store.set_active(gone, False)
        account = store.records("account").create({"name": "Acme"})
        deal = store.records("opportunity").create(
            {"name": "D", "account": account["id"], "close_date": "2027-01-10"}
        )
        later = workflow.start(store, "note_later", deal["id"], user_id=admin, check=True)
        worker = Worker(store)
        worker.run_once()
        assert workflow.instance(store, later)["status"] == "waiting"  # the wait went on
        # the record disappears behind the platform's back (no delete event to cancel it)
        table = tables_for(store.catalog)["opportunity"]
        with store.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.id == deal["id"]))
        clock.set(MOMENT + dt.timedelta(hours=1))
        worker.run_once()
        stopped = {row["process"]: row for row in workflow.instances(store, status="failed")}
        # parked on the first attempt, not after five
        assert stopped["task_reminder"]["attempts"] == 1
        assert stopped["task_reminder"]["error"] == (
            "cannot go on: there is nobody to tell (the record's owner: no active user or address)"
        )
        assert stopped["note_later"]["error"] == (
            f"cannot go on: the Opportunity record #{deal['id']} no longer exists"
        )
        titles = sorted(n["title"] for n in workflow.notifications(store, admin))
        assert titles == ["Note later cannot go on", "Task reminder cannot go on"]
    finally:
        store.close()


# ------------------------------------------------------------------------ the demo
TIME_ZONE = "America/New_York"


def test_xrm_setup_prints_the_demo_teams_passwords_and_keeps_the_public_address(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'setup.db'}"
    assert main(["setup", "--database", url, "--base-url", "crm.example.com"]) == 2
    assert "is not an http(s) address" in capsys.readouterr().err
    command = ["setup", "--database", url, "--demo", "--demo-size", "3"]
    assert main([*command, "--base-url", "https://crm.example.com/"]) == 0
    out = capsys.readouterr().out
    printed = dict(re.findall(r"demo \w+: (\S+) \(team sales\)  password: (\S+)", out))
    assert set(printed) == {"manager@example.com", "seller@example.com", "seller2@example.com"}
    store = xrm.open(url)
    try:
        for email, password in printed.items():
            assert store.check_password(email, password) is not None
        assert store.settings()["base_url"] == "https://crm.example.com"
    finally:
        store.close()


@pytest.fixture
def demo(database):
    store = database.open()
    result = run_setup(
        store,
        SetupAnswers(
            sample_data=True,
            time_zone=TIME_ZONE,
            admin_password=PASSWORD,
            modules=("core", "sales"),
        ),
    )
    yield store, result
    store.close()


def test_the_demo_has_a_sales_team_whose_manager_approves_deal_reviews(demo):
    store, result = demo
    team = {member.role: member for member in result.demo_users}
    assert set(team) == {"manager", "user"}
    for member in result.demo_users:  # the printed passwords sign in
        assert store.check_password(member.email, member.password) is not None
        principal = store.principal(member.id)
        assert principal.roles == (member.role,) or set(principal.roles) == {member.role}
    manager = team["manager"]
    seller = next(m for m in result.demo_users if m.role == "user")
    t = sa.table("xrm_team_member", sa.column("team_id"), sa.column("user_id"))
    with store.engine.connect() as conn:
        teams = {
            user: team_id
            for team_id, user in conn.execute(sa.select(t.c.team_id, t.c.user_id)).all()
        }
    assert teams[manager.id] == teams[seller.id]  # the sellers' team

    deals = store.records("opportunity")
    deal = deals.query(
        filter={"all": [["stage", "not_in", ["won", "lost"]], ["amount", "is_not_empty"]]},
        limit=1,
    ).rows[0]
    deals.update(deal["id"], {"owner": seller.id})
    started = workflow.start(store, "opportunity_review", deal["id"], user_id=seller.id, check=True)
    assert workflow.instance(store, started)["status"] == "waiting"  # queued, not stopped
    Worker(store).run_once()
    [asked] = workflow.pending_approvals(store, manager.id)
    workflow.decide(store, asked["id"], manager.id, "approved", "Go ahead")
    Worker(store).run_once()
    assert deals.get(deal["id"])["review"] == "approved"
    told = [n for n in workflow.notifications(store, seller.id) if n["instance_id"] == started]
    assert told[0]["title"].startswith("Deal review of")


def test_demo_data_looks_like_a_real_organizations(demo):
    store, _ = demo
    zone = ZoneInfo(TIME_ZONE)
    today = store.clock.now().astimezone(zone).date()
    catalog = store.refresh()
    flow = catalog.entity("opportunity").stages
    deals = store.records("opportunity").query(limit=1000).rows
    assert len(deals) == 25

    # a funnel: fewer deals in each open stage than in the one before, some won and lost
    stages = Counter(d["stage"] for d in deals)
    opened = [name for name, stage in flow.steps.items() if not stage.closed]
    counts = [stages[name] for name in opened]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0
    assert stages["prospecting"] >= 0.3 * len(deals)
    assert stages["won"] > 0 and stages["lost"] > 0

    for d in deals:
        step = flow.steps[d["stage"]]
        # the stage set the probability, and the records service the expected revenue
        assert d["probability"] == Decimal(str(step.probability))
        if d["amount"] is None:
            assert d["expected_revenue"] is None
        else:
            expected = (d["amount"] * d["probability"] / 100).quantize(Decimal("0.01"))
            assert abs(d["expected_revenue"] - expected) <= Decimal("0.01")
        if step.closed:  # closed in the past, and dated so
            assert d["close_date"] < today and d["closed_on"] == d["close_date"]
            assert d["forecast_category"] == "closed"
        else:  # expected ahead, not closed
            assert d["close_date"] > today and d["closed_on"] is None
            assert d["forecast_category"] != "closed"
        for name in step.requires:  # what the stage asks for is there
            assert d[name] is not None

    # activities on weekdays between 9:00 and 18:00 in the organization's zone
    meetings = store.records("meeting").query(limit=1000).rows
    assert meetings
    for m in meetings:
        start, end = m["starts_at"].astimezone(zone), m["ends_at"].astimezone(zone)
        assert start.weekday() < 5 and start.date() == end.date()
        assert dt.time(9, 0) <= start.time() and end.time() <= dt.time(18, 0) and start < end
        ahead = m["starts_at"] > store.clock.now()
        assert (m["status"] == "open") == ahead
    for entity, field in (("task", "due"), ("call", "starts_at")):
        for row in store.records(entity).query(limit=1000).rows:
            if row[field] is not None:
                local = row[field].astimezone(zone)
                assert local.weekday() < 5 and dt.time(9, 0) <= local.time() < dt.time(18, 0)

    # a lead's qualification moment only on qualified leads, in the past
    for lead in store.records("lead").query(limit=1000).rows:
        if lead["status"] == "qualified":
            assert lead["qualified_at"] is not None and lead["qualified_at"] < store.clock.now()
        else:
            assert lead["qualified_at"] is None

    # the first worker round keeps the closing dates and stops nothing
    Worker(store).run_once()
    after = {d["id"]: d for d in store.records("opportunity").query(limit=1000).rows}
    assert all(after[d["id"]]["closed_on"] == d["closed_on"] for d in deals)
    assert workflow.instances(store, status="failed") == []
