"""Calendars: a view of kind calendar (records on its date field), and the activities
calendar (every entity with a ``regarding`` lookup and a date, such as tasks by due date,
calls and meetings by start), by month, week or day, in the user's time zone.

The week and day views are a time grid: an event sits at its start and is as tall as it
lasts (to its ``end_field``, a datetime or a duration; activities use ``ends_at`` or
``duration`` when they have one), side by side with the events it overlaps.  Every
half hour of the grid, and every day of the month, is a link that creates a record there
with its date and time filled in: the entity's quick-create form in a dialog (htmx), or
its full form without scripts.  The page reloads once the record is saved, with it placed.
"""

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
#: Where an activity ends: its end, or how long it lasts.
END_PREFERENCE = ("ends_at", "end_at", "duration")
#: What a click on the activities calendar creates, first the default.
CREATE_PREFERENCE = ("meeting", "call", "task")
MODES = ("month", "week", "day")
#: An event with no end lasts this long on the grid; a shorter one is drawn this tall.
DEFAULT_LENGTH = dt.timedelta(minutes=30)
SHORTEST = dt.timedelta(minutes=15)
#: How far before the first day the week and day grids look for events running into it.
OVERNIGHT = dt.timedelta(days=1)
#: A record created on the grid with an end field ends this much later.
DEFAULT_NEW_LENGTH = dt.timedelta(hours=1)
SLOT_MINUTES = 30
#: Where the grid opens (scrolled to) and the hour a click on a month's day starts at.
WORK_START = 8
DAY_MINUTES = 24 * 60

FIRST_MONTH, LAST_MONTH = MIN_DATE.replace(day=1), MAX_DATE.replace(day=1)


# ------------------------------------------------------------------------ what is shown
def _today() -> dt.date:
    return dt.datetime.now(ZoneInfo(C.tz())).date()


def _mode() -> str:
    mode = request.args.get("mode", "month")
    return mode if mode in MODES else "month"


def _month(arg: str | None) -> dt.date:
    """The month asked for (unreadable: this month).  Months outside the dates a field can
    hold are refused: nothing is there, and the weeks around them would not be dates."""
    today = _today()
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


def _day(arg: str | None) -> dt.date:
    """The day a week or day view shows (unreadable: today), at least a week inside the
    dates a field can hold."""
    if arg:
        try:
            day = dt.date.fromisoformat(arg)
        except ValueError:
            return _today()
        if not MIN_DATE + dt.timedelta(days=7) <= day <= MAX_DATE - dt.timedelta(days=7):
            abort(
                400,
                f"a day from {MIN_DATE + dt.timedelta(days=7)} to {MAX_DATE - dt.timedelta(days=7)}",
            )
        return day
    return _today()


def _month_arg(first: dt.date) -> str | None:
    """A neighbouring month for a link, None past the range."""
    return first.strftime("%Y-%m") if FIRST_MONTH <= first <= LAST_MONTH else None


def _bounds(first: dt.date):
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, last


def _week_start(day: dt.date) -> dt.date:
    first_weekday = Locale.parse(C.locale()).first_week_day
    return day - dt.timedelta(days=(day.weekday() - first_weekday) % 7)


def _span(mode: str) -> tuple[dt.date, dt.date, dt.date]:
    """(the day the page is about, the first day shown, the day after the last)."""
    if mode == "month":
        first, end = _bounds(_month(request.args.get("month")))
        today = _today()
        anchor = today if first <= today < end else first
        return anchor, first, end
    anchor = _day(request.args.get("date"))
    if mode == "day":
        return anchor, anchor, anchor + dt.timedelta(days=1)
    start = _week_start(anchor)
    return anchor, start, start + dt.timedelta(days=7)


# ------------------------------------------------------------------------ events
def _events(
    entity: Entity,
    date_field: str,
    base,
    first: dt.date,
    end: dt.date,
    end_field: str | None = None,
    reach_back: dt.timedelta = dt.timedelta(0),
) -> list[dict]:
    """The records placed between ``first`` and ``end``; with ``reach_back`` also those
    starting that much earlier (a meeting from the evening before runs into the grid)."""
    field = C.field_at(entity, date_field)
    zone = ZoneInfo(C.tz())
    if field.type == "datetime":
        # in far zones the first and the last month reach past the moments a field holds
        low = max(dt.datetime.combine(first, dt.time(), zone) - reach_back, MIN_MOMENT)
        high = dt.datetime.combine(end, dt.time(), zone)
        lower = ["ge", low.isoformat()]
        upper = ["lt", high.isoformat()] if high <= MAX_MOMENT else ["le", MAX_MOMENT.isoformat()]
    else:
        lower = ["ge", first.isoformat()]
        upper = ["le", (end - dt.timedelta(days=1)).isoformat()]
    tree = F.combine(base, [date_field, *lower], [date_field, *upper])
    title = C.title_path(entity)
    if end_field is not None and end_field not in C.readable_names(entity):
        end_field = None
    fields = [date_field] + ([title] if title else []) + ([end_field] if end_field else [])
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
        event = {
            "id": f"{entity.name}-{row['id']}",
            "title": C.record_title(entity, row),
            "url": C.record_url(entity.name, row["id"]),
            "entity": entity.name,
            "entity_label": C.label(entity),
            "icon": entity.icon or "circle",
        }
        if isinstance(value, dt.datetime):
            local = in_zone(value, C.tz())
            finish = _finish(entity, end_field, row, local)
            event.update(
                day=local.date(),
                time=format_time(local, format="short", locale=C.locale()),
                start=local.replace(tzinfo=None),
                end=finish,
                span=f"{format_time(local, format='short', locale=C.locale())}–"
                f"{format_time(finish, format='short', locale=C.locale())}",
                all_day=False,
            )
        else:
            event.update(day=value, time="", all_day=True, span="")
        events.append(event)
    return events


def _finish(entity: Entity, end_field: str | None, row: dict, local: dt.datetime) -> dt.datetime:
    """Where an event ends on the local wall clock: its end field, its duration, else the
    default length; never before it starts."""
    start = local.replace(tzinfo=None)
    finish = start + DEFAULT_LENGTH
    value = row.get(end_field) if end_field else None
    if isinstance(value, dt.datetime):
        finish = in_zone(value, C.tz()).replace(tzinfo=None)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        finish = start + dt.timedelta(seconds=int(value))
    return max(finish, start + SHORTEST) if finish > start else start + SHORTEST


# ------------------------------------------------------------------------ month grid
def _grid(first: dt.date, events: list[dict], creator) -> list[list[dict]]:
    first_weekday = Locale.parse(C.locale()).first_week_day
    month = cal.Calendar(firstweekday=first_weekday).monthdatescalendar(first.year, first.month)
    by_day: dict[dt.date, list] = {}
    for event in events:
        by_day.setdefault(event["day"], []).append(event)
    today = _today()
    return [
        [
            {
                "date": d,
                "in_month": d.month == first.month,
                "today": d == today,
                "events": by_day.get(d, []),
                "create": creator(d, dt.time(WORK_START)) if creator else None,
            }
            for d in week
        ]
        for week in month
    ]


# ------------------------------------------------------------------------ time grid
def _minutes(moment: dt.datetime, day: dt.date) -> int:
    """Minutes of ``moment`` since the start of ``day`` (local wall clock), clipped."""
    delta = moment - dt.datetime.combine(day, dt.time())
    return max(0, min(DAY_MINUTES, int(delta.total_seconds() // 60)))


def _place(day: dt.date, events: list[dict]) -> list[dict]:
    """The timed events of one day with their place: top and height in percent of the day,
    and side by side (left, width) with the events they overlap."""
    pieces = []
    for event in events:
        if event["all_day"]:
            continue
        top = _minutes(event["start"], day)
        bottom = _minutes(event["end"], day)
        if event["end"] <= dt.datetime.combine(day, dt.time()) or top >= DAY_MINUTES:
            continue
        bottom = max(bottom, top + int(SHORTEST.total_seconds() // 60))
        pieces.append({**event, "top": top, "bottom": min(bottom, DAY_MINUTES)})
    pieces.sort(key=lambda p: (p["top"], -p["bottom"]))
    placed: list[dict] = []
    cluster: list[dict] = []
    columns: list[int] = []  # where each column of the cluster is free again

    def close():
        for piece in cluster:
            piece["columns"] = len(columns)
        cluster.clear()
        columns.clear()

    for piece in pieces:
        if cluster and piece["top"] >= max(p["bottom"] for p in cluster):
            close()
        for index, free_at in enumerate(columns):
            if free_at <= piece["top"]:
                columns[index] = piece["bottom"]
                piece["column"] = index
                break
        else:
            columns.append(piece["bottom"])
            piece["column"] = len(columns) - 1
        cluster.append(piece)
        placed.append(piece)
    close()
    for n, piece in enumerate(placed):
        piece["css_id"] = f"ev-{day:%Y%m%d}-{n}"
        piece["css"] = (
            f"top:{piece['top'] * 100 / DAY_MINUTES:.3f}%;"
            f"height:{(piece['bottom'] - piece['top']) * 100 / DAY_MINUTES:.3f}%;"
            f"left:{piece['column'] * 100 / piece['columns']:.3f}%;"
            f"width:{100 / piece['columns']:.3f}%"
        )
    return placed


def _time_grid(first: dt.date, end: dt.date, events: list[dict], creator) -> dict:
    days = [first + dt.timedelta(days=i) for i in range((end - first).days)]
    today = _today()
    locale = C.locale()
    hours = [
        {"hour": h, "label": format_time(dt.time(h), format="short", locale=locale)}
        for h in range(24)
    ]
    columns = []
    for day in days:
        todays = [
            e
            for e in events
            if not e["all_day"] and e["day"] <= day < e["end"].date() + dt.timedelta(days=1)
        ]
        slots = []
        if creator:
            for minute in range(0, DAY_MINUTES, SLOT_MINUTES):
                at = dt.time(minute // 60, minute % 60)
                slots.append(
                    {
                        "time": at,
                        "label": format_time(at, format="short", locale=locale),
                        "create": creator(day, at),
                        "first": minute == WORK_START * 60,
                    }
                )
        columns.append(
            {
                "date": day,
                "iso": day.isoformat(),
                "label": format_date(day, format="EEE d", locale=locale),
                "long": format_date(day, format="full", locale=locale),
                "today": day == today,
                "all_day": [e for e in events if e["all_day"] and e["day"] == day],
                "events": _place(day, todays),
                "slots": slots,
            }
        )
    return {"hours": hours, "columns": columns}


# ------------------------------------------------------------------------ creating
def _creator(
    entity: Entity | None, date_field: str | None, back: str, end_field: str | None = None
):
    """Links that create a record of ``entity`` at a day and time: the full form, and the
    quick-create dialog when its form holds the date field.  An end that is a datetime
    starts an hour later (a meeting's usual length)."""
    if entity is None or date_field is None or not C.can(entity.name, "create"):
        return None
    if date_field not in C.writable_names(entity):
        return None
    from ...forms import quick_create_form

    field = entity.fields.get(date_field)
    if field is None:
        return None
    quick = quick_create_form(C.catalog(), entity)
    quick_fields = {
        item.field for tab in quick.tabs for s in tab.sections for c in s.columns for item in c
    }
    zone = ZoneInfo(C.tz())

    end = entity.fields.get(end_field) if end_field else None
    if end is not None and (end.type != "datetime" or end_field not in C.writable_names(entity)):
        end = None

    def create(day: dt.date, at: dt.time) -> dict:
        values = {}
        if field.type == "datetime":
            moment = dt.datetime.combine(day, at, zone)
            values[date_field] = moment.isoformat()
            if end is not None:
                values[end.name] = (moment + DEFAULT_NEW_LENGTH).isoformat()
        else:
            values[date_field] = day.isoformat()
        return {
            "url": url_for("ui_forms.new", entity_name=entity.name, next=back, **values),
            "quick": url_for("ui_forms.quick_create", entity_name=entity.name, reload=1, **values)
            if date_field in quick_fields
            else None,
        }

    return create


# ------------------------------------------------------------------------ pages
def _navigation(
    mode: str, anchor: dt.date, first: dt.date, end: dt.date, base_url: str, keep: dict
):
    """Previous, today and next links, and the switch between month, week and day."""

    def link(**args) -> str:
        return url_for_args(base_url, {**keep, **args})

    today = _today()
    if mode == "month":
        previous = _month_arg((first - dt.timedelta(days=1)).replace(day=1))
        following = _month_arg(end)
        nav = {
            "previous": link(mode="month", month=previous) if previous else None,
            "following": link(mode="month", month=following) if following else None,
            "today": link(mode="month", month=today.strftime("%Y-%m")),
            "label": format_date(first, format="LLLL yyyy", locale=C.locale()).capitalize(),
        }
    else:
        step = dt.timedelta(days=1 if mode == "day" else 7)
        low, high = MIN_DATE + dt.timedelta(days=7), MAX_DATE - dt.timedelta(days=7)
        before, after = anchor - step, anchor + step
        if mode == "day":
            label = format_date(anchor, format="full", locale=C.locale()).capitalize()
        else:
            last = end - dt.timedelta(days=1)
            label = (
                f"{format_date(first, format='d MMM', locale=C.locale())} – "
                f"{format_date(last, format='d MMM yyyy', locale=C.locale())}"
            )
        nav = {
            "previous": link(mode=mode, date=before.isoformat()) if before >= low else None,
            "following": link(mode=mode, date=after.isoformat()) if after <= high else None,
            "today": link(mode=mode, date=today.isoformat()),
            "label": label,
        }
    nav["modes"] = [
        {
            "mode": m,
            "label": C._({"month": "Month", "week": "Week", "day": "Day"}[m]),
            "url": link(mode="month", month=anchor.strftime("%Y-%m"))
            if m == "month"
            else link(mode=m, date=anchor.isoformat()),
            "active": m == mode,
        }
        for m in MODES
    ]
    return nav


def _render(title: str, events: list[dict], *, base_url: str, keep: dict, creator, **extra):
    mode = _mode()
    anchor, first, end = _span(mode)
    first_weekday = Locale.parse(C.locale()).first_week_day
    names = get_day_names("abbreviated", locale=C.locale())
    weekdays = [names[(first_weekday + i) % 7] for i in range(7)]
    context = {
        "title": title,
        "mode": mode,
        "nav": _navigation(mode, anchor, first, end, base_url, keep),
        "weekdays": weekdays,
        "base_url": base_url,
        **extra,
    }
    if mode == "month":
        context["weeks"] = _grid(first, events, creator)
    else:
        context["grid"] = _time_grid(first, end, events, creator)
        context["work_start"] = WORK_START
    return render_template("ui/calendar.html", **context)


def _with_args(base_url: str, **changes) -> str:
    """This page's address with some arguments changed (None: left out)."""
    args = {**request.args.to_dict(), **changes}
    return url_for_args(base_url, args)


def url_for_args(base_url: str, args: dict) -> str:
    from urllib.parse import urlencode

    kept = {k: v for k, v in args.items() if v is not None}
    return f"{base_url}?{urlencode(kept)}" if kept else base_url


def _end_field(entity: Entity) -> str | None:
    for name in END_PREFERENCE:
        f = entity.fields.get(name)
        if f is not None and f.stored and f.type in ("datetime", "duration"):
            return name
    return None


def month_page(view: View, entity: Entity):
    """``/views/<view>`` for a calendar view (month, week or day by ``mode=``)."""
    mode = _mode()
    _anchor, first, end = _span(mode)
    base = F.to_raw(view.filter)
    back = OVERNIGHT if mode != "month" and view.end_field else dt.timedelta(0)
    events = (
        _events(entity, view.date_field, base, first, end, view.end_field, back)
        if view.date_field
        else []
    )
    base_url = url_for("ui_lists.view", view_name=view.name)
    return _render(
        C.label(view),
        events,
        base_url=base_url,
        keep={},
        creator=_creator(entity, view.date_field, request.full_path.rstrip("?"), view.end_field),
        view=view,
        entity=entity,
        views=C.catalog().views_of(entity.name),
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
    mode = _mode()
    _anchor, first, end = _span(mode)
    mine = request.args.get("mine", "1") != "0"
    events = []
    sources = activity_sources()
    for entity, date_field in sources:
        if not C.can(entity.name, "read") or date_field not in C.readable_names(entity):
            continue
        base = ["owner", "eq", "current_user"] if mine else None
        ends = _end_field(entity)
        back = OVERNIGHT if mode != "month" and ends else dt.timedelta(0)
        events.extend(_events(entity, date_field, base, first, end, ends, back))
    events.sort(key=lambda e: (e["day"], e["time"]))
    # what a click creates: the chosen activity, else the first of meeting, call, task
    creatable = [
        (entity, date_field)
        for entity, date_field in sorted(
            sources,
            key=lambda s: (
                CREATE_PREFERENCE.index(s[0].name)
                if s[0].name in CREATE_PREFERENCE
                else len(CREATE_PREFERENCE)
            ),
        )
        if C.can(entity.name, "create") and date_field in C.writable_names(entity)
    ]
    chosen = next((s for s in creatable if s[0].name == request.args.get("create")), None)
    chosen = chosen or (creatable[0] if creatable else (None, None))
    keep = {"mine": None if mine else "0"}
    if chosen[0] is not None and request.args.get("create"):
        keep["create"] = chosen[0].name
    return _render(
        C._("Calendar"),
        events,
        base_url=url_for("ui_calendar.activities"),
        keep=keep,
        creator=_creator(
            chosen[0],
            chosen[1],
            request.full_path.rstrip("?"),
            _end_field(chosen[0]) if chosen[0] is not None else None,
        ),
        mine=mine,
        mine_url=_with_args(url_for("ui_calendar.activities"), mine="1" if not mine else "0"),
        activity=True,
        creatable=[
            {
                "name": e.name,
                "label": C.label(e),
                "active": e is chosen[0],
                "url": _with_args(url_for("ui_calendar.activities"), create=e.name),
            }
            for e, _ in creatable
        ],
    )
