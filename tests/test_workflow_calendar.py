"""Business time: working intervals in a time zone, public holidays, daylight saving, and
a cost proportional to the intervals crossed."""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType

import pytest

from xrm.metadata.labels import Label
from xrm.metadata.processes import Calendar
from xrm.workflow import calendar as C
from xrm.workflow.calendar import BusinessHours

NINE_SIX = ((dt.time(9), dt.time(13)), (dt.time(14), dt.time(18)))  # 8 hours with lunch


def office(tz="Europe/Moscow", country=None, closed=(), special=None) -> BusinessHours:
    week = tuple(NINE_SIX if day < 5 else () for day in range(7))
    return BusinessHours(
        Calendar(
            name="office",
            label=Label.of("Office"),
            time_zone=tz,
            week=week,
            country=country,
            closed=frozenset(closed),
            special=MappingProxyType(special or {}),
        )
    )


def at(text: str, tz="Europe/Moscow") -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def test_elapsed_counts_working_hours_only():
    hours = office()
    # Friday 17:00 -> Monday 10:00 local: 1h on Friday, 1h on Monday
    assert hours.elapsed(at("2025-03-07 17:00"), at("2025-03-10 10:00")) == 2 * 3600
    # lunch does not count
    assert hours.elapsed(at("2025-03-10 12:30"), at("2025-03-10 14:30")) == 3600
    assert hours.elapsed(at("2025-03-10 19:00"), at("2025-03-10 08:00")) == 0


def test_add_walks_forward_over_nights_weekends_and_lunch():
    hours = office()
    assert hours.add(at("2025-03-07 17:00"), 2 * 3600) == at("2025-03-10 10:00")
    assert hours.add(at("2025-03-10 12:00"), 2 * 3600) == at("2025-03-10 15:00")
    assert hours.add(at("2025-03-08 12:00"), 1) == at("2025-03-10 09:00:01")  # starts on Saturday
    start = at("2025-03-10 09:30")
    for seconds in (1, 1800, 3600 * 8, 3600 * 40, 3600 * 123 + 17):
        assert hours.elapsed(start, hours.add(start, seconds)) == seconds


def test_public_holidays_and_closed_days_are_skipped():
    hours = office(country="RU")
    # 2025-03-07 (Fri) is a working day; 2025-03-08 (women's day) falls on Saturday anyway.
    # 2025-05-01..02 and 2025-05-08..09 are Russian holidays
    assert hours.add(at("2025-04-30 17:00"), 2 * 3600) == at("2025-05-05 10:00")
    closed = office(closed=[dt.date(2025, 3, 10)])
    assert closed.add(at("2025-03-07 17:00"), 2 * 3600) == at("2025-03-11 10:00")
    special = office(special={dt.date(2025, 3, 8): ((dt.time(10), dt.time(12)),)})
    assert special.add(at("2025-03-07 17:00"), 2 * 3600) == at("2025-03-08 11:00")


def test_daylight_saving_days_are_shorter_or_longer():
    hours = BusinessHours(
        Calendar(
            name="n",
            label=Label.of("n"),
            time_zone="America/New_York",
            week=tuple(((dt.time(0), dt.time(23, 59, 59, 999999)),) for _ in range(7)),
        )
    )
    # 2025-03-09: clocks jump forward, the local day has 23 hours
    start = at("2025-03-09 00:00", "America/New_York")
    end = at("2025-03-10 00:00", "America/New_York")
    assert hours.elapsed(start, end) == 23 * 3600


def test_around_the_clock_without_a_calendar():
    hours = BusinessHours(None)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert hours.add(start, 90000) == start + dt.timedelta(seconds=90000)
    assert hours.elapsed(start, start + dt.timedelta(days=3)) == 3 * 86400


def test_cost_is_proportional_to_intervals_not_seconds(monkeypatch):
    """A year of business time walks about 260 days of two intervals, whatever the seconds."""
    hours = office()
    calls = 0
    original = BusinessHours.day_intervals

    def counting(self, day):
        nonlocal calls
        calls += 1
        return original(self, day)

    monkeypatch.setattr(BusinessHours, "day_intervals", counting)
    start = at("2025-01-06 09:00")
    end = hours.add(start, 8 * 3600 * 250)
    assert calls < 400
    calls = 0
    assert hours.elapsed(start, end) == 8 * 3600 * 250
    assert calls < 400


def test_a_calendar_without_hours_gives_up(monkeypatch):
    monkeypatch.setattr(C, "MAX_DAYS", 30)
    empty = BusinessHours(Calendar(name="e", label=Label.of("e"), time_zone="UTC", week=((),) * 7))
    with pytest.raises(ValueError):
        empty.add(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), 60)
