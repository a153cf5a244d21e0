"""Dates and moments at the ends of what Python holds never give a 5xx: the field types
refuse them on input (with the bounds in the message), and values stored before the
bounds or written around the records service are still shown, exported, bucketed and
put on calendars in every time zone, the far ones (UTC+14, UTC-12) included.  Query
parameters that would overflow (a calendar month, a day count) are 400s."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from browser.support import PASSWORD, Client
from conftest import SOLUTIONS, fresh_database
from workflow_pack import START

from xrm.metadata import CoercionError, Field
from xrm.metadata.fieldtypes import (
    FIELD_TYPES,
    MAX_DATE,
    MAX_DURATION,
    MAX_MOMENT,
    MIN_DATE,
    MIN_MOMENT,
    in_zone,
)
from xrm.metadata.labels import Label
from xrm.storage.tables import tables_for
from xrm.web import create_app

UTC = dt.UTC
LAST = dt.datetime(9999, 12, 31, 23, 0, tzinfo=UTC)  # 10000-01-01 13:00 in UTC+14
LATE = dt.datetime(9999, 12, 31, 22, 0, tzinfo=UTC)
FIRST = dt.datetime(1, 1, 1, 0, 10, tzinfo=UTC)  # year 0 in UTC-12
ZONES = {"east": "Pacific/Kiritimati", "gmt14": "Etc/GMT-14", "west": "Etc/GMT+12"}


def field(type_name: str) -> Field:
    return Field(name="f", type=type_name, label=Label.of("F"), entity="thing", params={})


# ------------------------------------------------------------------------ the registry
def test_dates_moments_and_durations_are_bounded_on_input():
    date, moment, duration = (FIELD_TYPES[t] for t in ("date", "datetime", "duration"))
    assert date.coerce(field("date"), str(MIN_DATE)) == MIN_DATE
    assert date.coerce(field("date"), "31.12.9899") == MAX_DATE
    for bad in ("0001-01-01", "9999-12-31", "31.12.9900", dt.date(999, 12, 31)):
        with pytest.raises(CoercionError, match=r"^must be between 1000-01-01 and 9899-12-31$"):
            date.coerce(field("date"), bad)
    assert moment.coerce(field("datetime"), "1000-01-01T00:00:00Z") == MIN_MOMENT
    assert moment.coerce(field("datetime"), MAX_MOMENT) == MAX_MOMENT
    # a time without zone in UTC+14: 1000-01-01 10:00 local is still 999 in UTC
    with pytest.raises(CoercionError, match=r"\(UTC\)$"):
        moment.coerce(field("datetime"), "1000-01-01T10:00", tz="Etc/GMT-14")
    for bad in (
        "0001-01-01T00:10:00Z",
        "0001-01-01T00:10:00+14:00",
        "9999-12-31T23:00-14:00",
        LAST,
    ):
        with pytest.raises(CoercionError, match=r"^must be between .* \(UTC\)$"):
            moment.coerce(field("datetime"), bad)
    assert duration.coerce(field("duration"), "36500d") == MAX_DURATION
    assert duration.coerce(field("duration"), -MAX_DURATION) == -MAX_DURATION
    for bad in (MAX_DURATION + 1, "99999999999999", "99999999999999d", dt.timedelta(days=36501)):
        with pytest.raises(CoercionError, match=r"^must be at most 100 years \(36500d\) long$"):
            duration.coerce(field("duration"), bad)
    with pytest.raises(CoercionError, match="expected a duration"):
        duration.coerce(field("duration"), "P" + "9" * 400 + "D")  # not even a float


@pytest.mark.parametrize("zone", [*ZONES.values(), "UTC"])
@pytest.mark.parametrize("value", [LAST, FIRST, LATE])
def test_moments_near_the_ends_of_time_are_shown_in_any_zone(zone, value):
    local = in_zone(value, zone)
    assert local == value  # the same moment, on the zone's clock or (past 9999) on UTC's
    text = FIELD_TYPES["datetime"].format(field("datetime"), value, "ru", zone)
    assert str(local.year) in text


# ------------------------------------------------------------------------ a stored world
def write_row(store, entity: str, record_id: int, **values) -> None:
    """Change a record straight in its table, around the records service and its bounds."""
    table = tables_for(store.catalog)[entity]
    with store.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == record_id).values(**values))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Users in the far zones, each owning tasks due at the ends of time and a meeting on
    the last evening, written around the records service (which refuses them now)."""
    with fresh_database(tmp_path_factory.mktemp("extreme")) as database:
        store = database.open()
        try:
            store.install([SOLUTIONS / "core"])
            store.dialect = database.dialect
            store.people = {}
            for name, zone in ZONES.items():
                user = store.add_user(
                    f"{name}@example.com", name, password=PASSWORD, roles=["user"], time_zone=zone
                )
                tasks = store.records("task", user)
                ids = {}
                for subject, moment in (("Last moment", LAST), ("First moment", FIRST)):
                    task = tasks.create({"subject": subject, "due": START})
                    write_row(store, "task", task["id"], due=moment, remind_at=moment)
                    ids[subject] = task["id"]
                meeting = store.records("meeting", user).create(
                    {"subject": "New year", "starts_at": START}
                )
                write_row(store, "meeting", meeting["id"], starts_at=LATE, ends_at=LAST)
                ids["meeting"] = meeting["id"]
                store.people[name] = {"id": user, "zone": zone, "ids": ids}
            yield store
        finally:
            store.close()


@pytest.fixture(scope="module")
def app(world):
    return create_app(
        world,
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            "SESSION_COOKIE_SECURE": False,
            "RATELIMIT_ENABLED": False,
        },
    )


def api(world, app, name: str):
    token = world.create_token(world.people[name]["id"], "tests")
    client = app.test_client()
    return lambda url: client.get(f"/api/v1{url}", headers={"Authorization": f"Bearer {token}"})


def buckets(response, group: str) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [row[group] for row in response.get_json()["data"]]


@pytest.mark.parametrize("name", list(ZONES))
@pytest.mark.parametrize(
    "bucket, last, first",
    [
        ("year", "9999-01-01", "0001-01-01"),
        ("quarter", "9999-10-01", "0001-01-01"),
        ("month", "9999-12-01", "0001-01-01"),
        ("week", "9999-12-27", "0001-01-01"),
        ("day", "9999-12-31", "0001-01-01"),
    ],
)
def test_aggregates_bucket_moments_at_the_ends_of_time(world, app, name, bucket, last, first):
    get = api(world, app, name)
    group = f"starts_at:{bucket}"
    # 22:00 UTC on the last day: past year 9999 in UTC+14, kept in the last bucket
    assert buckets(get(f"/meeting/aggregate?group_by={group}"), group) == [last]
    group = f"due:{bucket}"
    one = get(f"/task/aggregate?group_by={group}&subject=First moment").get_json()
    assert [row[group] for row in one["data"]] == [first]
    assert buckets(get(f"/task/aggregate?group_by={group}&subject=Last moment"), group) == [last]


def test_aggregates_over_both_ends_of_time_answer_without_a_5xx(world, app):
    get = api(world, app, "west")
    response = get("/task/aggregate?group_by=due:year&measures=count,min:due,max:due")
    if world.dialect == "postgresql":
        assert response.get_json()["data"] == [
            {
                "due:year": "0001-01-01",
                "count": 1,
                "min:due": "0001-01-01T00:10:00Z",
                "max:due": "0001-01-01T00:10:00Z",
            },
            {
                "due:year": "9999-01-01",
                "count": 1,
                "min:due": "9999-12-31T23:00:00Z",
                "max:due": "9999-12-31T23:00:00Z",
            },
        ]
    else:  # SQLite enumerates every bucket between the ends: far too many years
        assert response.status_code == 400
        assert "buckets" in response.get_json()["detail"]


def test_relative_date_filters_refuse_day_counts_that_overflow(world, app):
    get = api(world, app, "east")
    refused = get("/task?filter=" + json.dumps(["due", "last_n_days", 10**9]))
    assert refused.status_code == 400
    assert "up to 36500" in refused.get_json()["detail"]
    assert get("/task?filter=" + json.dumps(["due", "older_than_days", 36500])).status_code == 200


# ------------------------------------------------------------------------ the browser UI
def browser(app, name: str) -> Client:
    return Client(app).login(f"{name}@example.com")


@pytest.mark.parametrize("name", list(ZONES))
def test_calendar_months_out_of_range_are_400s(world, app, name):
    user = browser(app, name)
    for url in ("/views/meetings_calendar", "/calendar"):
        for month in ("9999-12", "9900-01", "0001-01", "0999-12"):
            assert user.get(f"{url}?month={month}").status_code == 400, (url, month)
        assert user.get(f"{url}?month=not-a-month").status_code == 200  # this month
        last = user.get(f"{url}?month=9899-12")
        assert last.status_code == 200
        page = last.get_data(as_text=True)
        assert "month=9899-11" in page and "month=9900-01" not in page  # no way past the end
        first = user.get(f"{url}?month=1000-01")
        assert first.status_code == 200
        assert "month=0999-12" not in first.get_data(as_text=True)


@pytest.mark.parametrize("name", list(ZONES))
def test_record_pages_lists_and_exports_show_the_ends_of_time(world, app, name):
    user = browser(app, name)
    person = world.people[name]
    zone = person["zone"]
    listing = user.get("/views/my_open_tasks")
    assert listing.status_code == 200
    page = listing.get_data(as_text=True)
    assert "Last moment" in page and "9999" in page
    for subject in ("Last moment", "First moment"):
        ident = person["ids"][subject]
        moment = LAST if subject == "Last moment" else FIRST
        form = user.get(f"/r/task/{ident}/edit")
        assert form.status_code == 200
        shown = in_zone(moment, zone).strftime("%Y-%m-%dT%H:%M")
        assert f'value="{shown}"' in form.get_data(as_text=True)
        assert user.get(f"/r/task/{ident}/timeline").status_code == 200
    assert user.get(f"/r/meeting/{person['ids']['meeting']}").status_code == 200
    exported = user.get("/views/my_open_tasks/export.csv")
    assert exported.status_code == 200
    cells = {c for row in csv.reader(io.StringIO(exported.get_data(as_text=True))) for c in row}
    assert in_zone(LAST, zone).strftime("%Y-%m-%d %H:%M") in cells
    assert in_zone(FIRST, zone).strftime("%Y-%m-%d %H:%M") in cells
    assert user.get("/views/my_open_tasks/export.xlsx").status_code == 200
    record = api(world, app, name)(f"/task/{person['ids']['Last moment']}")
    assert record.status_code == 200 and record.get_json()["due"] == "9999-12-31T23:00:00Z"
