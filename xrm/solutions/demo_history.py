"""Sample data's past: records of a stage flow walk their stages at past moments through
the records service, so the stage history (the conversion funnel, time in stage) reads
like months of work.

A record is created in the flow's first stage at the moment it came in and moved one
stage at a time, each move written at its moment (the unit of work's time set for it, in
the demo's one transaction: all the sample data or none of it), so the history rows are
those of real stage changes.  A closed record ends on its closing day;
an open one has been in its stage for a while.  Stays last about a median that differs
per stage; records lost leave early more often than late.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import math
from collections import deque

from ..storage.store import Clock

#: The median days a record stays in the n-th open stage of a flow (then again from the start).
MEDIAN_DAYS = (6, 12, 19, 9, 14)
#: The stays of one record together reach back at most this many days.
HISTORY_DAYS = 300

_moment: contextvars.ContextVar[dt.datetime | None] = contextvars.ContextVar(
    "demo_moment", default=None
)


class PastClock(Clock):
    """The store's clock, but at a set moment inside ``at`` (in this context only: other
    threads of a web server that runs the setup wizard keep the real time)."""

    def __init__(self, real: Clock):
        self.real = real

    def now(self) -> dt.datetime:
        moment = _moment.get()
        return moment if moment is not None else self.real.now()


@contextlib.contextmanager
def past_clock(store):
    """Install a ``PastClock`` on the store for the length of the block."""
    real = store.clock
    store.clock = PastClock(real)
    try:
        yield
    finally:
        store.clock = real


@contextlib.contextmanager
def at(store, moment: dt.datetime):
    """Writes at ``moment``: the unit of work's time for the block (the demo's one
    transaction), and the clock's for what reads the clock itself."""
    token = _moment.set(moment)
    try:
        with store.transaction() as unit, unit.dated(moment):
            yield
    finally:
        _moment.reset(token)


def path_to(flow, final: str, rnd) -> list[str]:
    """The stages a record in ``final`` went through, first to last: the open stages in
    order up to it; a won one through all of them, a lost one leaving at a stage chosen
    with falling odds (most are lost early).  Moves the flow does not allow are replaced
    by the shortest allowed way."""
    steps = flow.steps
    opened = [name for name, s in steps.items() if not s.closed]
    stage = steps[final]
    if not opened:
        return [final]
    if not stage.closed:
        path = opened[: opened.index(final) + 1]
    elif stage.closed == "won":
        path = [*opened, final]
    else:
        leaving = [n for n in opened if _allows(steps[n], final)] or opened[:1]
        weights = [0.55**i for i in range(len(leaving))]
        last = rnd.choices(leaving, weights)[0]
        path = [*opened[: opened.index(last) + 1], final]
    if all(_allows(steps[a], b) for a, b in zip(path, path[1:], strict=False)):
        return path
    return _shortest(steps, opened[0], final) or [final]


def _allows(stage, target: str) -> bool:
    return stage.next is None or target in stage.next


def _shortest(steps, start: str, goal: str) -> list[str] | None:
    seen, queue = {start: None}, deque([start])
    while queue:
        here = queue.popleft()
        if here == goal:
            path = [here]
            while seen[path[-1]] is not None:
                path.append(seen[path[-1]])
            return path[::-1]
        for there in steps[here].next if steps[here].next is not None else steps:
            if there not in seen:
                seen[there] = here
                queue.append(there)
    return None


def stays(flow, path: list[str], rnd) -> list[float]:
    """Days spent in each stage of ``path`` but the last, around each stage's median."""
    opened = [name for name, s in flow.steps.items() if not s.closed]
    days = []
    for name in path[:-1]:
        index = opened.index(name) if name in opened else 0
        median = MEDIAN_DAYS[index % len(MEDIAN_DAYS)]
        days.append(max(0.5, median * rnd.lognormvariate(0, 0.45)))
    total = sum(days)
    if total > HISTORY_DAYS - 30:
        days = [d * (HISTORY_DAYS - 30) / total for d in days]
    return days


def moments(sampler, path: list[str], days: list[float], end: dt.date, *, ahead: float = 0):
    """The moment of entering each stage of ``path``: the last on ``end`` (minus ``ahead``
    days already spent in it), the others before it by their stays, on working days, each
    on a day before the next."""
    last = end - dt.timedelta(days=math.floor(ahead))
    entered = [_weekday(last, sampler.today)]
    for stay in reversed(days):
        day = entered[0] - dt.timedelta(days=max(1, round(stay)))
        entered.insert(0, _weekday(day, sampler.today))
    at_moments = [sampler.moment(day) for day in entered]
    if at_moments[-1] > sampler.now:  # today, but later than now: earlier today
        at_moments[-1] = min(sampler.now - dt.timedelta(minutes=5), at_moments[-1])
    for i in range(len(at_moments) - 2, -1, -1):  # strictly in order
        if at_moments[i] >= at_moments[i + 1]:
            at_moments[i] = at_moments[i + 1] - dt.timedelta(hours=1)
    return at_moments


def _weekday(day: dt.date, today: dt.date) -> dt.date:
    day = min(day, today)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day
