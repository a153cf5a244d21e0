"""Moments worked out from a record's date fields: when a date trigger starts its process
(``consumer``, and ``merging`` when a pending start moves to another record) and when a
``wait: {until: <field>}`` ends (``steps``).  One computation, so a timer moved between
records is timed exactly as a change of the date would time it.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from ..metadata.processes import Trigger

#: A date field's moment: 09:00 in the organization's zone, unless a ``time:`` says otherwise.
DEFAULT_DATE_TIME = dt.time(9, 0)
#: A date trigger whose moment passed longer ago than this when scheduled is not run.
STALE = dt.timedelta(days=1)


def moment_of(value, offset: int, time_of_day: dt.time | None, tz: str) -> dt.datetime | None:
    """A date or datetime value moved by ``offset`` seconds (None: the value is empty).  A
    date stands for ``time_of_day`` (default 09:00) in the zone ``tz``."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.combine(
            value, time_of_day or DEFAULT_DATE_TIME, ZoneInfo(tz)
        ).astimezone(dt.UTC)
    return moment + dt.timedelta(seconds=offset)


def date_moment(trigger: Trigger, record: dict, tz: str) -> dt.datetime | None:
    """When a date trigger fires for a record (None: the date or the duration is empty)."""
    moment = moment_of(record.get(trigger.date_field), trigger.offset, trigger.time, tz)
    if moment is None or trigger.before_field is None:
        return moment
    before = record.get(trigger.before_field)
    if before is None:
        return None
    return moment - dt.timedelta(seconds=int(before))


def date_key(process_name: str, record_id, moment: dt.datetime) -> str:
    """The idempotency key of a date trigger's pending start: one per record and moment, so
    a change that leaves the moment where it was does not queue a second one."""
    return f"date:{process_name}:{record_id}:{moment.isoformat()}"
