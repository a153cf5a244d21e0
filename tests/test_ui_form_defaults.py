"""A new record's form starts with the field's ``today`` and ``now`` defaults (the day in
the user's zone), so a required date with such a default is not refused as empty when
the user leaves it as it is; a read-only default still shows after a refused save.  On
SQLite and PostgreSQL, through the WSGI app with real CSRF tokens."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from browser.support import PASSWORD, SOLUTIONS, Client, make_app, world

AGENT = "agent@example.com"


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui-form-defaults")) as built:
        built.store.install([SOLUTIONS / "service"])
        built.store.add_user(
            AGENT,
            "Alex Agent",
            password=PASSWORD,
            roles=["service_agent"],
            teams=["support"],
            time_zone="Europe/Moscow",
        )
        built.case = built.store.records("support_case").create({"subject": "Printer jam"})
        yield built


@pytest.fixture
def agent(w):
    return Client(make_app(w.store)).login(AGENT)


def _value(page: str, name: str) -> str:
    match = re.search(rf'<input[^>]*id="f-{name}"[^>]*value="([^"]*)"', page)
    assert match, f"no input f-{name}"
    return match.group(1)


def test_today_and_now_fill_a_new_form_in_the_users_zone(w, agent):
    today = w.store.clock.now().astimezone(ZoneInfo("Europe/Moscow")).date()  # the agent's zone
    entry = agent.get(f"/r/time_entry/new?support_case={w.case['id']}").get_data(as_text=True)
    assert _value(entry, "work_date") == today.isoformat()
    case = agent.get("/r/support_case/new").get_data(as_text=True)
    received = dt.datetime.fromisoformat(_value(case, "received_at"))
    assert received.date() == today


def test_a_required_date_left_at_its_default_is_saved(w, agent):
    page = agent.get(f"/r/time_entry/new?support_case={w.case['id']}").get_data(as_text=True)
    day = _value(page, "work_date")
    posted = [
        ("_fields", name) for name in ("support_case", "description", "work_date", "duration")
    ] + [
        ("support_case", str(w.case["id"])),
        ("description", "Cleared the jam"),
        ("work_date", day),
        ("duration", "45m"),
    ]
    response = agent.post("/r/time_entry/new", posted)
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    ident = int(response.location.rsplit("/", 1)[1])
    assert w.store.records("time_entry").get(ident)["work_date"].isoformat() == day


def test_a_read_only_default_still_shows_after_a_refused_save(w, agent):
    posted = [("_fields", "support_case"), ("_fields", "description"), ("description", "")]
    response = agent.post("/r/time_entry/new", posted)
    assert response.status_code == 422
    assert "$60.00" in response.get_data(as_text=True)  # the hourly rate, read-only to agents


def test_saving_a_form_keeps_the_seconds_of_a_moment_left_as_it_was(w, agent):
    case = w.store.records("support_case").get(w.case["id"])
    assert case["received_at"].second or case["received_at"].microsecond  # made at "now"
    page = agent.get(f"/r/support_case/{case['id']}/edit").get_data(as_text=True)
    shown = _value(page, "received_at")  # minutes only
    version = re.search(r'name="_version" value="(\d+)"', page).group(1)
    posted = [("_fields", "subject"), ("_fields", "received_at"), ("_version", version)] + [
        ("subject", "Printer jam, tray 2"),
        ("received_at", shown),
    ]
    response = agent.post(f"/r/support_case/{case['id']}", posted)
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    saved = w.store.records("support_case").get(case["id"])
    assert saved["subject"] == "Printer jam, tray 2"
    assert saved["received_at"] == case["received_at"]  # not cut to the minute
    # a moment the user changes is what they typed
    moved = dt.datetime.fromisoformat(shown) - dt.timedelta(hours=1)
    posted[-1] = ("received_at", moved.isoformat(timespec="minutes"))
    posted[2] = ("_version", str(saved["version"]))
    assert agent.post(f"/r/support_case/{case['id']}", posted).status_code == 303
    later = w.store.records("support_case").get(case["id"])
    assert later["received_at"].second == 0
    assert later["received_at"] < case["received_at"]
