"""Business time: working intervals of a calendar in its time zone, with public holidays.

Elapsed business time and "this many business seconds after" walk the calendar one working
interval at a time (a day has a handful), so the cost is proportional to the number of
intervals crossed, never to the number of seconds.  Local times become UTC per day through
zoneinfo, so daylight-saving changes shorten or lengthen the day they fall on, as a clock
on the office wall would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from zoneinfo import ZoneInfo

from ..metadata.processes import Calendar

UTC = dt.UTC
#: How far the walk looks for working time before giving up (a calendar with no hours).
MAX_DAYS = 3660


@lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int) -> frozenset[dt.date]:
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())


class BusinessHours:
    """Working time of one calendar (``None``: around the clock, in UTC)."""

    def __init__(self, calendar: Calendar | None):
        self.calendar = calendar
        self.zone = ZoneInfo(calendar.time_zone) if calendar else UTC

    def is_closed(self, day: dt.date) -> bool:
        c = self.calendar
        if day in c.special:
            return False
        if day in c.closed:
            return True
        return bool(c.country) and day in _holidays(c.country, c.subdivision, day.year)

    def day_intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The working intervals of one local day, in UTC."""
        if self.calendar is None:
            start = dt.datetime.combine(day, dt.time(), UTC)
            return [(start, start + dt.timedelta(days=1))]
        if self.is_closed(day):
            return []
        hours = self.calendar.special.get(day, self.calendar.week[day.weekday()])
        result = []
        for start, end in hours:
            begin = dt.datetime.combine(day, start, self.zone).astimezone(UTC)
            if end == dt.time(23, 59, 59, 999999):
                finish = dt.datetime.combine(
                    day + dt.timedelta(days=1), dt.time(), self.zone
                ).astimezone(UTC)
            else:
                finish = dt.datetime.combine(day, end, self.zone).astimezone(UTC)
            if finish > begin:
                result.append((begin, finish))
        return result

    def intervals(self, start: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        """Working intervals from ``start`` on (the first one clipped to start)."""
        day = start.astimezone(self.zone).date() - dt.timedelta(days=1)
        for _ in range(MAX_DAYS):
            for begin, finish in self.day_intervals(day):
                if finish <= start:
                    continue
                yield max(begin, start), finish
            day += dt.timedelta(days=1)

    def elapsed(self, start: dt.datetime, end: dt.datetime) -> int:
        """Business seconds between two instants (0 when end is not after start)."""
        if end <= start:
            return 0
        total = 0.0
        for begin, finish in self.intervals(start):
            if begin >= end:
                break
            total += (min(finish, end) - begin).total_seconds()
        return int(total)

    def add(self, start: dt.datetime, seconds: int) -> dt.datetime:
        """The instant at which ``seconds`` of business time have passed since ``start``."""
        if seconds <= 0:
            return start
        remaining = float(seconds)
        for begin, finish in self.intervals(start):
            length = (finish - begin).total_seconds()
            if remaining <= length:
                return begin + dt.timedelta(seconds=remaining)
            remaining -= length
        raise ValueError(
            f"calendar {self.calendar.name if self.calendar else '24x7'} has no working time ahead"
        )

    def subtract(self, deadline: dt.datetime, seconds: int, not_before: dt.datetime) -> dt.datetime:
        """The instant ``seconds`` of business time before ``deadline`` (found forwards from
        ``not_before``, which is returned when the deadline is closer than that)."""
        available = self.elapsed(not_before, deadline)
        if available <= seconds:
            return not_before
        return self.add(not_before, available - seconds)
