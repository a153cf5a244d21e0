"""Month calendars: a view of kind calendar (records on its date field), and the activities
calendar (every entity with a ``regarding`` lookup and a date, such as tasks by due date,
calls and meetings by start), in the user's time zone."""

from __future__ import annotations

import calendar as cal
import datetime as dt
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time, get_day_names
from flask import Blueprint, abort, render_template, request, url_for

from ...metadata import Entity, View
from ...metadata.fieldtypes import MAX_DATE, MAX_MOMENT, MIN_DATE, MIN_MOMENT, in_zone
from ...metadata.filters import FilterError
from ...storage.records import RecordError
from . import context as C
from . import filtering as F
from .guards import guard

bp = guard(Blueprint("ui_calendar", __name__))

PER_SOURCE = 500
DATE_PREFERENCE = ("due", "starts_at", "sent_at", "scheduled_at", "date")


FIRST_MONTH, LAST_MONTH = MIN_DATE.replace(day=1), MAX_DATE.replace(day=1)


def _month(arg: str | None) -> dt.date:
    """The month asked for (unreadable: this month).  Months outside the dates a field can
    hold are refused: nothing is there, and the weeks around them would not be dates."""
    today = dt.datetime.now(ZoneInfo(C.tz())).date()
    if arg:
        try:
            year, month = (int(p) for p in arg.split("-"))
            first = dt.date(year, month, 1)
        except ValueError:
            return today.replace(day=1)
        if not FIRST_MONTH <= first <= LAST_MONTH:
            abort(400, f"a month from {FIRST_MONTH:%Y-%m} to {LAST_MONTH:%Y-%m}")
        return first
    return today.replace(day=1)


def _month_arg(first: dt.date) -> str | None:
    """A neighbouring month for a link, None past the range."""
    return first.strftime("%Y-%m") if FIRST_MONTH <= first <= LAST_MONTH else None


def _bounds(first: dt.date):
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, last


def _events(entity: Entity, date_field: str, base, first: dt.date, end: dt.date) -> list[dict]:
    field = C.field_at(entity, date_field)
    zone = ZoneInfo(C.tz())
    if field.type == "datetime":
        # in far zones the first and the last month reach past the moments a field holds
        low = max(dt.datetime.combine(first, dt.time(), zone), MIN_MOMENT)
        high = dt.datetime.combine(end, dt.time(), zone)
        lower = ["ge", low.isoformat()]
        upper = ["lt", high.isoformat()] if high <= MAX_MOMENT else ["le", MAX_MOMENT.isoformat()]
    else:
        lower = ["ge", first.isoformat()]
        upper = ["le", (end - dt.timedelta(days=1)).isoformat()]
    tree = F.combine(base, [date_field, *lower], [date_field, *upper])
    title = C.title_path(entity)
    fields = [date_field] + ([title] if title else [])
    try:
        page = C.records(entity).query(
            filter=tree, sort=[[date_field, "asc"]], fields=fields, limit=PER_SOURCE
        )
    except (FilterError, RecordError):
        return []
    C.titles().want_records(entity, page.rows, fields)
    C.titles().resolve()
    events = []
    for row in page.rows:
        value = row.get(date_field)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            local = in_zone(value, C.tz())
            day, time_text = local.date(), format_time(local, format="short", locale=C.locale())
        else:
            day, time_text = value, ""
        events.append(
            {
                "day": day,
                "time": time_text,
                "title": C.record_title(entity, row),
                "url": url_for("ui_record.view", entity_name=entity.name, record_id=row["id"]),
                "entity": entity.name,
                "icon": entity.icon or "circle",
            }
        )
    return events


def _grid(first: dt.date, events: list[dict]) -> list[list[dict]]:
    first_weekday = Locale.parse(C.locale()).first_week_day
    month = cal.Calendar(firstweekday=first_weekday).monthdatescalendar(first.year, first.month)
    by_day: dict[dt.date, list] = {}
    for event in events:
        by_day.setdefault(event["day"], []).append(event)
    today = dt.datetime.now(ZoneInfo(C.tz())).date()
    return [
        [
            {
                "date": d,
                "in_month": d.month == first.month,
                "today": d == today,
                "events": by_day.get(d, []),
            }
            for d in week
        ]
        for week in month
    ]


def _render(title: str, first: dt.date, events: list[dict], **extra):
    first_weekday = Locale.parse(C.locale()).first_week_day
    names = get_day_names("abbreviated", locale=C.locale())
    weekdays = [names[(first_weekday + i) % 7] for i in range(7)]
    previous = (first - dt.timedelta(days=1)).replace(day=1)
    following = _bounds(first)[1]
    return render_template(
        "ui/calendar.html",
        title=title,
        month_label=format_date(first, format="LLLL yyyy", locale=C.locale()).capitalize(),
        weeks=_grid(first, events),
        weekdays=weekdays,
        previous=_month_arg(previous),
        following=_month_arg(following),
        current=dt.datetime.now(ZoneInfo(C.tz())).strftime("%Y-%m"),
        **extra,
    )


def month_page(view: View, entity: Entity):
    first, end = _bounds(_month(request.args.get("month")))
    base = F.to_raw(view.filter)
    events = _events(entity, view.date_field, base, first, end) if view.date_field else []
    return _render(
        C.label(view),
        first,
        events,
        view=view,
        entity=entity,
        views=C.catalog().views_of(entity.name),
        base_url=url_for("ui_lists.view", view_name=view.name),
    )


def activity_sources() -> list[tuple[Entity, str]]:
    """Entities that are activities (a ``regarding`` lookup) and the date that places them."""
    out = []
    for entity in C.catalog().entities.values():
        regarding = entity.fields.get("regarding")
        if regarding is None or regarding.type != "any_lookup" or entity.name == "note":
            continue
        dates = [n for n, f in entity.fields.items() if f.type in ("date", "datetime") and f.stored]
        if not dates:
            continue
        preferred = next((n for n in DATE_PREFERENCE if n in dates), dates[0])
        out.append((entity, preferred))
    return out


@bp.get("/calendar")
def activities():
    first, end = _bounds(_month(request.args.get("month")))
    mine = request.args.get("mine", "1") != "0"
    events = []
    for entity, date_field in activity_sources():
        if not C.can(entity.name, "read") or date_field not in C.readable_names(entity):
            continue
        base = ["owner", "eq", "current_user"] if mine else None
        events.extend(_events(entity, date_field, base, first, end))
    events.sort(key=lambda e: (e["day"], e["time"]))
    return _render(
        C._("Calendar"),
        first,
        events,
        base_url=url_for("ui_calendar.activities"),
        mine=mine,
        activity=True,
    )
