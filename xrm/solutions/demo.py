"""Sample data: plausible records for every entity of the installed packs, and the people
who own them.

Values come from each field type's ``sample`` method (the field registry owns what a
plausible value looks like); lookups point at records created earlier, so entities are
filled in dependency order.  On top of that the data is shaped to look like a real
organization's, from what the definitions say rather than from entity names:

* records of a stage flow spread over its stages like a funnel: many in the first stage,
  fewer in each one after it, some closed (won and lost); each has what its stage
  requires, and the stage sets its probability (and the formulas over it), as always;
* dates of a record in a closed stage lie in the past and those of an open one ahead; a
  read-only date that a process notes (``closed_on``, ``qualified_at``) is only on the
  records in the stages it belongs to;
* moments (meetings, tasks, calls) fall on weekdays between 9:00 and 18:00 in the
  organization's time zone, a meeting ends on the day it starts, and an activity in the
  past is done while one ahead is open (and may remind its owner);
* a lookup follows the others where it can: an opportunity's contact works for its
  account;
* a polymorphic lookup (an activity's ``regarding``) points at an account or a record that
  belongs to one (a contact, an opportunity, a case...), so timelines fill up;
* a hierarchy (a lookup to the entity itself marked ``hierarchy: true``) gets a few trees:
  groups of companies with subsidiaries and their branches, and people reporting up to a
  head within their own company (records are grouped by the lookup whose target lists
  them, as an account lists its contacts).

Everything goes through the records service (its bulk path; records of a stage flow one
move at a time at past moments, ``demo_history``), so sample data obeys the same
validation, defaults and formulas as real data, and the stage history is real.  ``people`` adds a sales team (sellers
and their manager) for the shipped processes to address.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import random
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from faker import Faker

from ..metadata import Catalog, Entity
from ..metadata.aggregates import months_from
from ..metadata.model import default_account_paths
from ..storage.records import ValidationFailed
from . import demo_history as history

LOCALES = {"en": "en_US", "ru": "ru_RU"}
#: Each open stage of a funnel keeps about this share of the records of the stage before.
FUNNEL_RATIO = 0.62
#: The share of a flow's records in its closed stages (won and lost).
CLOSED_SHARE = 0.22
WORKDAY = (dt.time(9, 0), dt.time(18, 0))
#: Activities lie within this many days of today, either way.
ACTIVITY_DAYS = 45
SALES_TEAM = "sales"
SUPPORT_TEAM = "support"
CHANNEL_TEAM = "channel"
#: The demo's people: (local part of the email, what they are, role, team); each only when
#: an installed pack defines the role (the service desk comes with the service pack).
PEOPLE = (
    ("manager", "manager", "manager", SALES_TEAM),
    ("seller", "seller", "user", SALES_TEAM),
    ("seller2", "seller", "user", SALES_TEAM),
    ("support.lead", "service manager", "service_manager", SUPPORT_TEAM),
    ("agent", "service agent", "service_agent", SUPPORT_TEAM),
    ("agent2", "service agent", "service_agent", SUPPORT_TEAM),
    ("channel", "channel manager", "channel_manager", CHANNEL_TEAM),
)
#: The partner portal's people, made once the sample data's accounts exist: (local part,
#: what they are, role, the account they belong to, whether they are its main user).
PARTNER_PEOPLE = (
    ("partner.northwind", "partner user", "partner_user", "Northwind Partners", True),
    ("partner.contoso", "partner user", "partner_user", "Contoso Resellers", True),
)


@dataclass
class DemoUser:
    email: str
    name: str
    title: str  # what they are in the demo: manager, seller, agent
    role: str
    password: str
    id: int
    team: str = "sales"
    account: str = ""  # a partner's user: the account they belong to


def fill_order(catalog: Catalog) -> list[Entity]:
    """Entities so that every lookup's target comes before the entity that uses it."""
    graph = {}
    for entity in catalog.entities.values():
        graph[entity.name] = {
            f.params["to"]
            for f in entity.fields.values()
            if f.type == "lookup" and f.params["to"] != entity.name
        }
    # what a polymorphic lookup (an activity's regarding) may name comes first too
    polymorphic = {
        e.name
        for e in catalog.entities.values()
        if any(f.type == "any_lookup" for f in e.fields.values())
    }
    for name in polymorphic:
        entity = catalog.entities[name]
        named = set().union(
            *(
                set(f.params.get("to") or ())
                for f in entity.fields.values()
                if f.type == "any_lookup"
            )
        )
        graph[name] |= {
            n
            for n in (named or set(graph))
            if n not in polymorphic and not _depends_on(graph, n, name)
        }
    sorter = graphlib.TopologicalSorter(graph)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        order = sorted(graph)
    return [catalog.entities[name] for name in order]


def _depends_on(graph: dict[str, set[str]], name: str, target: str) -> bool:
    """Whether ``name`` needs ``target`` made first, through its lookups."""
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(graph.get(current, ()))
    return False


def funnel(entity: Entity, count: int, rnd: random.Random) -> list[str | None]:
    """A stage for each of ``count`` records: open stages in falling numbers, in the order
    the flow declares them, and a share closed; shuffled."""
    if entity.stages is None:
        return [None] * count
    steps = entity.stages.steps
    opened = [name for name, stage in steps.items() if not stage.closed]
    closed = [name for name, stage in steps.items() if stage.closed]
    weights = {name: FUNNEL_RATIO**index for index, name in enumerate(opened)}
    total = sum(weights.values())
    share = {name: (1 - CLOSED_SHARE) * w / total for name, w in weights.items()}
    for name in closed:
        share[name] = CLOSED_SHARE / len(closed)
    if not opened or not closed:  # a flow of one kind only: all of it
        share = {name: value / sum(share.values()) for name, value in share.items()}
    # largest remainders, so the counts add up and keep the shares' order
    exact = {name: count * value for name, value in share.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: (counts[n] - exact[n], list(steps).index(n)))[
        : count - sum(counts.values())
    ]:
        counts[name] += 1
    stages = [name for name in steps for _ in range(counts.get(name, 0))]
    rnd.shuffle(stages)
    return stages


class Sampler:
    """What one run of sample data shares: the fakers, the day, the zone, the records made."""

    def __init__(self, fake: Faker, rnd: random.Random, users: list[int], tz: str, now):
        self.fake = fake
        self.rnd = rnd
        self.users = users
        self.zone = ZoneInfo(tz)
        self.now = now
        self.today = now.astimezone(self.zone).date()
        self.ids: dict[str, list[int]] = {}
        #: entity -> id -> the lookups it was created with (to keep related records related)
        self.links: dict[str, dict[int, dict[str, int]]] = {}
        self.targets: dict[str, frozenset[str]] = {}  # entity -> the entities it looks up
        self.rows: dict[str, list[dict]] = {}  # entity -> the values of the records made
        #: entity -> fields some report groups by: always filled, so no report shows a blank group
        self.grouped: dict[str, set[str]] = {}
        #: (entity, field) left empty: what a pack that ships its own samples adds to
        #: another pack's entity (``pack_fields``)
        self.left_empty: set[tuple[str, str]] = set()
        #: entities with related lists (children fields): what activities are about
        self.parents: list[str] = []

    # -- time
    def day(self, low: int, high: int) -> dt.date:
        """A weekday between ``low`` and ``high`` days from today."""
        day = self.today + dt.timedelta(days=self.rnd.randint(low, high))
        step = -1 if day > self.today else 1  # towards today, staying inside the range
        while day.weekday() >= 5:
            day += dt.timedelta(days=step)
        return day

    def moment(self, day: dt.date, minutes: int = 0) -> dt.datetime:
        """A quarter-hour in working hours on ``day`` that leaves ``minutes`` before 18:00."""
        start = WORKDAY[0].hour * 60
        latest = WORKDAY[1].hour * 60 - max(minutes, 15)
        at = self.rnd.randrange(start, latest + 1, 15)
        local = dt.datetime.combine(day, dt.time(at // 60, at % 60), self.zone)
        return local.astimezone(dt.UTC)

    # -- one record
    def values(self, entity: Entity, stage: str | None) -> dict:
        rnd = self.rnd
        flow = entity.stages
        closed = flow is not None and stage is not None and bool(flow.steps[stage].closed)
        required = _required(entity, stage)
        grouped = self.grouped.get(entity.name, set())
        values: dict = {}
        for f in entity.fields.values():
            if f.type == "any_lookup" and not (f.computed or f.read_only):
                choices = [n for n in (f.params.get("to") or self.parents) if self.ids.get(n)]
                if choices and rnd.random() < 0.85:
                    name = rnd.choice(choices)
                    values[f.name] = {"entity": name, "id": rnd.choice(self.ids[name])}
                continue
            if f.computed or f.read_only or f.type in _SKIPPED:
                continue
            if (entity.name, f.name) in self.left_empty:
                continue  # its pack's own samples say what it holds
            if f.name in _closing_only(entity) and f.name not in required:
                continue  # a lost reason belongs to lost records only
            if flow is not None and f.name in (flow.field, flow.probability_field):
                continue  # the stage is chosen below; its probability comes with it
            if f.type == "lookup":
                targets = self.ids.get(f.params["to"])
                if targets and (f.required or f.name in required or rnd.random() < 0.7):
                    values[f.name] = rnd.choice(targets)
                continue
            if f.type == "many_to_many":
                targets = self.ids.get(f.params["to"])
                if targets:
                    values[f.name] = rnd.sample(targets, k=min(len(targets), rnd.randint(0, 3)))
                continue
            if f.type == "user":
                if self.users:
                    values[f.name] = rnd.choice(self.users)
                continue
            if f.type == "choice" and flow is not None and f.default is not None:
                # a category that follows the stage (a forecast): its default while open,
                # "closed" once closed when it offers that; never a random one
                if closed and "closed" in f.choice_values:
                    values[f.name] = "closed"
                elif stage is not None and not closed:
                    values[f.name] = _category(flow, stage, f.choice_values, rnd)
                continue
            if f.name in grouped and f.type == "choice" and f.choice_values:
                # a few options common and the rest rare, as lead sources are
                options = list(f.choice_values)
                values[f.name] = rnd.choices(options, [0.6**i for i in range(len(options))])[0]
                continue
            optional = not f.required and f.name not in required and f.name not in grouped
            if optional and rnd.random() < 0.2:
                continue
            if f.type == "date" and flow is not None:
                # closed: closed within the last half year; open: expected within four months
                values[f.name] = self.day(-180, -1) if closed else self.day(7, 120)
                continue
            if f.type == "datetime":
                continue  # moments are placed together, below
            value = f.kind.sample(f, self.fake, rnd)
            if value is not None:  # None: no sample for this field; its default applies
                values[f.name] = value
        if flow is not None and stage is not None:
            values[flow.field] = stage
            self._dated(entity, stage, values)
        self._moments(entity, values)
        self._related(entity, values, required)
        if self.users:
            values["owner"] = rnd.choice(self.users)
        return values

    def _dated(self, entity: Entity, stage: str, values: dict) -> None:
        """Read-only dates a process notes: ``closed_on`` on closed records, a stage's own
        (``qualified_at``) on the records in that stage; when it happened, in the past."""
        flow = entity.stages
        closed = bool(flow.steps[stage].closed)
        when = next((v for v in values.values() if isinstance(v, dt.date)), None)
        if when is None or isinstance(when, dt.datetime) or when > self.today:
            when = self.day(-180, -1)
        for f in entity.fields.values():
            if not f.read_only or f.computed or f.type not in ("date", "datetime"):
                continue
            owner = next((s for s in flow.steps if f.name.startswith(f"{s}_")), None)
            if owner == stage or (owner is None and f.name.startswith("closed") and closed):
                values[f.name] = when if f.type == "date" else self.moment(when)

    def _moments(self, entity: Entity, values: dict) -> None:
        """Datetime fields in working hours; a start and its end on one day; status and
        reminders that fit whether the activity is past or ahead."""
        moments = [
            f
            for f in entity.fields.values()
            if f.type == "datetime" and not f.computed and not f.read_only
        ]
        if not moments:
            return
        rnd = self.rnd
        # a few of every kind this week, so "due this week" lists have something to show
        week = rnd.random() < 0.15
        monday = self.today - dt.timedelta(days=self.today.weekday())
        low, high = (
            ((monday - self.today).days, (monday - self.today).days + 4)
            if week
            else (
                -ACTIVITY_DAYS,
                ACTIVITY_DAYS,
            )
        )
        day = self.day(low, high)
        length = rnd.choice((30, 45, 60, 90)) if "ends_at" in entity.fields else 0
        start = self.moment(day, length)
        for f in moments:
            if f.name == "ends_at":
                values[f.name] = start + dt.timedelta(minutes=length)
            elif f.name == "remind_at":
                continue  # the reminder before the start says when; a set moment would not fit
            elif f.required or rnd.random() < 0.9:
                values[f.name] = start
        ahead = start > self.now
        status = entity.fields.get("status")
        if status is not None and {"open", "done"} <= set(status.choice_values or ()):
            # an activity without an end (a task) may be overdue when it fell due lately
            overdue = length == 0 and start > self.now - dt.timedelta(days=10)
            if ahead or (overdue and rnd.random() < 0.5):
                values["status"] = "open"
            else:
                values["status"] = rnd.choice(("done",) * 5 + ("cancelled",))
        reminder = entity.fields.get("reminder")
        if reminder is not None and reminder.type == "duration":
            if ahead and rnd.random() < 0.6:
                values["reminder"] = rnd.choice((15, 30, 60)) * 60
            else:
                values.pop("reminder", None)

    def _related(self, entity: Entity, values: dict, required: set[str]) -> None:
        """An optional lookup to a record that itself points at what a required lookup of
        this record points at takes a record that agrees (an opportunity's contact works
        at the opportunity's account)."""
        anchors = [
            f
            for f in entity.fields.values()
            if f.type == "lookup" and f.required and values.get(f.name) is not None
        ]
        for f in entity.fields.values():
            if f.type != "lookup" or f.required or values.get(f.name) is None:
                continue
            made = self.links.get(f.params["to"], {})
            related = self.targets.get(f.params["to"], frozenset())
            for other in anchors:
                if other.params["to"] == f.params["to"] or other.params["to"] not in related:
                    continue  # its records cannot point at what this one points at
                wanted = values[other.name]
                fitting = [
                    ident
                    for ident, links in made.items()
                    if other.params["to"] in links and links[other.params["to"]] == wanted
                ]
                if fitting:
                    values[f.name] = self.rnd.choice(fitting)
                elif f.name not in required:
                    del values[f.name]  # better none than one of another company's
                break

    def remember(self, entity: Entity, ids: list[int], rows: list[dict]) -> None:
        self.ids[entity.name] = ids
        self.rows[entity.name] = rows
        targets = {f.name: f.params["to"] for f in entity.fields.values() if f.type == "lookup"}
        self.targets[entity.name] = frozenset(targets.values())
        self.links[entity.name] = {
            ident: {targets[k]: v for k, v in row.items() if k in targets and v is not None}
            for ident, row in zip(ids, rows, strict=True)
        }


_SKIPPED = ("children", "file", "json", "any_lookup", "autonumber")


def _closing_only(entity: Entity) -> set[str]:
    """Fields only a lost stage requires (a lost reason): set on records lost so only."""
    flow = entity.stages
    if flow is None:
        return set()
    closing = {n for s in flow.steps.values() if s.closed == "lost" for n in s.requires}
    closing -= {n for s in flow.steps.values() if s.closed != "lost" for n in s.requires}
    return {n for n in closing if n in entity.fields and not entity.fields[n].required}


def _category(flow, stage: str, options, rnd: random.Random) -> str:
    """A forecast category that firms up as the record moves on: pipeline early, best
    case midway, commit near the end (the options before "closed", in their order)."""
    options = list(options)
    options = options[: options.index("closed")] if "closed" in options else options
    opened = [name for name, s in flow.steps.items() if not s.closed]
    progress = opened.index(stage) / max(1, len(opened) - 1) if stage in opened else 0
    index = min(len(options) - 1, int(progress * (len(options) - 1) + rnd.random() * 0.9))
    return options[index]


def _required(entity: Entity, stage: str | None) -> set[str]:
    """What a record in ``stage`` has: what the stage requires and, as it got there through
    the open stages before it, what they require; a closed record may have gone through
    all of them (a lost one may have been lost anywhere), so it has what they ask."""
    flow = entity.stages
    if flow is None or stage is None:
        return set()
    opened = [name for name, s in flow.steps.items() if not s.closed]
    current = flow.steps[stage]
    if current.closed:
        passed = opened
    else:
        passed = opened[: opened.index(stage)]
    return set(current.requires).union(*(flow.steps[name].requires for name in passed))


def generate(
    store,
    per_entity: int = 25,
    *,
    locale: str = "en",
    seed: int = 7,
    users: list[int] | None = None,
    time_zone: str | None = None,
    skip=(),
    leave_empty=(),
    lenient: bool = False,
) -> dict[str, int]:
    """Create ``per_entity`` sample records for each entity; returns counts per entity.
    ``lenient``: an entity none of whose samples its rules accept (a claim needs an
    approved request) is left without any, instead of failing all of them.
    ``time_zone`` is the organization's (default: its settings'), where working hours are.
    Entities in ``skip`` get none (their pack ships their sample data, ``pack_samples``);
    the records they have are looked up by the samples of other entities.  The fields in
    ``leave_empty`` (``(entity, field)``, ``pack_fields``) are left empty."""
    catalog = store.refresh()
    fake = Faker(LOCALES.get(locale, locale))
    fake.seed_instance(seed)
    rnd = random.Random(seed)
    tz = time_zone or store.settings().get("time_zone") or "UTC"
    sampler = Sampler(fake, rnd, list(users or []), tz, store.clock.now())
    sampler.left_empty = set(leave_empty)
    for report in catalog.reports.values():
        grouped = sampler.grouped.setdefault(report.entity, set())
        grouped.update(g.split(":")[0] for g in report.group_by)
    targets = _target_specs(catalog)
    # activities are about a customer's records: the accounts and what belongs to one
    sampler.parents = sorted(
        e.name
        for e in catalog.entities.values()
        if "regarding" not in e.fields and default_account_paths(e)
    )
    created: dict[str, int] = {}
    # One transaction: all the sample data, or none of it.  Records with a stage flow walk
    # their stages at past moments inside it (each move dated, ``demo_history.at``).
    with store.transaction(), history.past_clock(store):
        for entity in fill_order(catalog):
            if entity.name in skip or (not sampler.users and _needs_a_user(entity)):
                # its pack's samples, or a record that cannot be without a user (samples
                # made with no users): the records it has are what others link to
                ids = [r["id"] for r in store.records(entity.name).query(limit=1000).rows]
                sampler.remember(entity, ids, [{} for _ in ids])
                continue
            if entity.name in targets:
                continue  # made last, around what the records they are set against won
            try:
                if entity.stages is not None:
                    _fill_flow(store, entity, per_entity, sampler, created)
                else:
                    _fill(store, entity, per_entity, sampler, created)
            except ValidationFailed:
                if not lenient:
                    raise
                sampler.remember(entity, [], [])
                continue
            _hierarchies(store, catalog, entity, sampler)
        for name, spec in targets.items():
            _fill_targets(store, catalog.entities[name], spec, sampler, created)
    return created


def _hierarchies(store, catalog: Catalog, entity: Entity, sampler: Sampler) -> None:
    """Trees over the entity's ``hierarchy: true`` lookups among the records just made.
    Records are grouped by the lookup whose target lists them (a contact's account), and
    each group gets one head with a level or two under it; without such a lookup a few
    groups of three to six (a holding, its subsidiaries, their branches) are made and the
    rest stay alone."""
    fields = [
        f
        for f in entity.fields.values()
        if f.type == "lookup" and f.params.get("hierarchy") and f.params.get("to") == entity.name
    ]
    ids, rows = sampler.ids.get(entity.name) or [], sampler.rows.get(entity.name) or []
    if not fields or len(ids) < 2:
        return
    anchor = next(
        (
            f.name
            for f in entity.fields.values()
            if f.type == "lookup"
            and f.params.get("to") != entity.name
            and any(
                c.type == "children"
                and c.params.get("entity") == entity.name
                and c.params.get("via") == f.name
                for c in catalog.entities[f.params["to"]].fields.values()
            )
        ),
        None,
    )
    rnd = sampler.rnd
    groups: list[list[int]] = []
    moves: dict[int, dict] = {}  # what else a record takes with its place (its company)
    if anchor is not None:
        by: dict[int, list[int]] = {}
        for ident, row in zip(ids, rows, strict=True):
            if row.get(anchor) is not None:
                by.setdefault(row[anchor], []).append(ident)
        # a few companies with a real org chart: people from elsewhere join the largest
        largest = sorted(by, key=lambda k: -len(by[k]))[:3]
        alone = [g[0] for k, g in by.items() if len(g) == 1 and k not in largest]
        rnd.shuffle(alone)
        for index, ident in enumerate(alone[: len(ids) // 3]):
            target = largest[index % len(largest)]
            by[target].append(ident)
            moves[ident] = {anchor: target}
        groups = [g for g in by.values() if len(g) > 1]
    else:
        pool = list(ids)
        rnd.shuffle(pool)
        while len(pool) >= 3 and sum(len(g) for g in groups) < len(ids) * 0.6:
            size = min(len(pool), rnd.randint(3, 6))
            groups.append(pool[:size])
            pool = pool[size:]
    records = store.records(entity.name)
    for f in fields:
        for group in groups:
            head, *rest = group
            placed = [(head, 0)]
            for ident in rest:
                # under the head mostly, else under someone one level down
                parent, depth = rnd.choice([p for p in placed if p[1] < 2] or placed[:1])
                try:
                    records.update(ident, {**moves.get(ident, {}), f.name: parent})
                except ValidationFailed:
                    continue
                placed.append((ident, depth + 1))
        break  # one hierarchy per entity is plenty for sample data


def _needs_a_user(entity: Entity) -> bool:
    return any(f.type == "user" and f.required for f in entity.fields.values())


def _fill(store, entity: Entity, per_entity: int, sampler: Sampler, created: dict) -> None:
    """One entity's samples; rows that break a rule (a random pair already taken, say) are
    left out, but an entity none of whose rows fit is a bug in its sample values."""
    records = store.records(entity.name)
    stages = funnel(entity, per_entity, sampler.rnd)
    rows = [sampler.values(entity, stage) for stage in stages]
    result = records.bulk_create(rows, partial=True)
    if not result.ids and result.failures:
        first = next(iter(result.failures.values()))
        raise ValidationFailed(first)
    kept = [row for index, row in enumerate(rows) if index not in result.failures]
    sampler.remember(entity, result.ids, kept)
    created[entity.name] = len(result.ids)


def _fill_flow(store, entity: Entity, per_entity: int, sampler: Sampler, created: dict) -> None:
    """Samples of a stage flow: each created in the first stage when it came in and moved
    stage by stage at past moments through the records service (``demo_history``)."""
    flow, rnd = entity.stages, sampler.rnd
    rows = [sampler.values(entity, stage) for stage in funnel(entity, per_entity, rnd)]
    _this_month(entity, rows, sampler)
    dates = [
        f.name
        for f in entity.fields.values()
        if f.type == "date" and not f.read_only and not f.computed
    ]
    noted = [  # read-only dates a process notes on closing (closed_on, qualified_at)
        f
        for f in entity.fields.values()
        if f.read_only and not f.computed and f.type in ("date", "datetime")
    ]
    late_names = _closing_only(entity) | {f.name for f in noted}
    records = store.records(entity.name)
    ids, kept, first_error = [], [], None
    for row in rows:
        final = row[flow.field]
        path = history.path_to(flow, final, rnd)
        days = history.stays(flow, path, rnd)
        if flow.steps[final].closed:
            end = next((row[n] for n in dates if row.get(n) is not None), None)
            end = end if end is not None and end < sampler.today else sampler.day(-180, -1)
            spent = 0.0
        else:
            end, spent = sampler.today, rnd.uniform(0.1, 1.0) * history.MEDIAN_DAYS[0]
        when = history.moments(sampler, path, days, end, ahead=spent)
        late = {n: row[n] for n in late_names if n in row}
        for f in noted:  # noted when it happened: the moment of the last move
            if f.name in late:
                local = when[-1].astimezone(sampler.zone)
                late[f.name] = when[-1] if f.type == "datetime" else local.date()
        category = _closed_category(entity, row)
        first = {k: v for k, v in row.items() if k not in late and k != flow.field}
        if category:
            first.pop(category)
            late[category] = row[category]
        first[flow.field] = path[0]
        try:
            with history.at(store, when[0]):
                ident = records.create(first)["id"]
            for stage, moment in zip(path[1:], when[1:], strict=True):
                change = {flow.field: stage, **(late if stage == path[-1] else {})}
                with history.at(store, moment):
                    records.update(ident, change)
        except ValidationFailed as exc:
            first_error = first_error or exc
            continue
        ids.append(ident)
        kept.append({**row, **late})
    if not ids and first_error is not None:
        raise first_error
    sampler.remember(entity, ids, kept)
    created[entity.name] = len(ids)


def _closed_category(entity: Entity, row: dict) -> str | None:
    """The category field a closed record was set to "closed" in (set when it closes)."""
    for f in entity.fields.values():
        if f.type == "choice" and row.get(f.name) == "closed" and f.name != entity.stages.field:
            return f.name
    return None


def _this_month(entity: Entity, rows: list[dict], sampler: Sampler) -> None:
    """A couple of records won earlier this month and a couple due to close in the rest
    of it, so "this month" on a dashboard is never blank (when the month has such days)."""
    flow, today = entity.stages, sampler.today
    dates = [f.name for f in entity.fields.values() if f.type == "date" and not f.read_only]
    if not dates:
        return
    start = today.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    before = [start + dt.timedelta(days=i) for i in range((today - start).days)]
    after = [today + dt.timedelta(days=i) for i in range(1, (end - today).days + 1)]
    for won, days in ((True, before), (False, after)):
        days = [d for d in days if d.weekday() < 5]
        if not days:
            continue
        fitting = [
            r
            for r in rows
            if (flow.steps[r[flow.field]].closed == "won") == won
            and (won or not flow.steps[r[flow.field]].closed)
        ]
        for row in fitting[:2]:
            for name in dates:
                row[name] = sampler.rnd.choice(days)


def _target_specs(catalog: Catalog) -> dict[str, tuple]:
    """Entities that reports set their figures against (``targets:`` summing a field by
    month): entity -> (the report's entity, its summed field, the target's field, the
    target's date field)."""
    specs = {}
    for report in catalog.reports.values():
        for measure in report.measures:
            source = measure.source
            if source is None or not measure.spec.startswith("sum:"):
                continue
            months = [v.split(":")[0] for v in source.groups.values() if v.endswith(":month")]
            field = measure.spec.split(":", 1)[1]
            if months and source.entity in catalog.entities:
                mine = field if field in catalog.entities[report.entity].fields else None
                specs[source.entity] = (report.entity, mine, field, months[0])
    return specs


def _fill_targets(store, entity: Entity, spec: tuple, sampler: Sampler, created: dict) -> None:
    """A target per owner per month, from six months back to three ahead, around what an
    owner won in an average month of the records the target is set against."""
    of, mine, field, month_field = spec
    rnd, users = sampler.rnd, sampler.users or [None]
    flow = store.refresh().entities[of].stages
    won = [
        row.get(mine) or 0
        for row in sampler.rows.get(of, ())
        # a pack's own records (skipped above) are remembered without their values
        if mine
        and flow is not None
        and row.get(flow.field) in flow.steps
        and flow.steps[row[flow.field]].closed == "won"
    ]
    per_month = float(sum(won)) / (6 * len(users)) if won else 20000.0
    names = {u: (store.user(u).name if u is not None else "") for u in users}
    rows = []
    first = sampler.today.replace(day=1)
    for back in range(-6, 4):
        month = months_from(first, back)
        for user in users:
            values = sampler.values(entity, None)
            amount = round(per_month * rnd.uniform(0.75, 1.3), -3) or 1000
            values.update({field: amount, month_field: month})
            if entity.title in entity.fields and entity.fields[entity.title].type == "text":
                values[entity.title] = f"{month:%Y-%m}, {names[user]}".strip(", ")
            if user is not None:
                values["owner"] = user
            rows.append(values)
    result = store.records(entity.name).bulk_create(rows, partial=True)
    if not result.ids and result.failures:
        raise ValidationFailed(next(iter(result.failures.values())))
    created[entity.name] = len(result.ids)


def pack_samples(packs, catalog: Catalog) -> set[str]:
    """The entities whose own pack ships records for them (``data/`` or ``demo/``): their
    samples are the pack's, not invented from the field types."""
    owned = set()
    for pack in packs:
        for document in pack.documents:
            if document.kind in ("data", "demo"):
                entity = catalog.entities.get(document.data.get(document.kind))
                if entity is not None and entity.solution == pack.name:
                    owned.add(entity.name)
    return owned


def pack_fields(packs, catalog: Catalog) -> set[tuple[str, str]]:
    """The fields a pack adds to another pack's entity when it ships sample records of that
    entity itself (a partner on an opportunity, a tier on an account): invented records
    leave them empty, so that the pack's own samples alone say what they hold (no invented
    customer becomes a partner, no invented deal gets a random one)."""
    shipped = {
        (pack.name, document.data.get(document.kind))
        for pack in packs
        for document in pack.documents
        if document.kind in ("data", "demo")
    }
    return {
        (entity.name, f.name)
        for entity in catalog.entities.values()
        for f in entity.fields.values()
        if f.solution != entity.solution and (f.solution, entity.name) in shipped
    }


def people(
    store,
    catalog: Catalog,
    domain: str,
    *,
    locale: str = "en",
    time_zone: str = "UTC",
    seed: int = 7,
) -> list[DemoUser]:
    """The demo's teams: two sellers (role user) and their manager (role manager), so that
    processes addressing ``role:manager`` (the deal review) find someone; with the
    service pack, two agents and their service manager in the support team, whom cases are
    routed and escalated to.  Each gets a random password, returned once; existing emails
    are left alone."""
    fake = Faker(LOCALES.get(locale, locale))
    fake.seed_instance(seed)
    made = []
    for local, title, role, team in PEOPLE:
        if role not in catalog.roles:
            continue
        email = f"{local}@{domain}"
        if store.user_by_email(email) is not None:
            continue
        member = _add_person(store, email, fake.name(), title, role, locale, time_zone, team=team)
        if member is not None:
            made.append(member)
    return made


def partner_people(
    store,
    catalog: Catalog,
    domain: str,
    *,
    locale: str = "en",
    time_zone: str = "UTC",
    seed: int = 11,
) -> list[DemoUser]:
    """With the partner pack, a portal user for two of its sample partners, each linked to
    their account (the account scope shows them its records) and made its main user (who
    hears of the leads passed on to it).  Made after the packs' sample data, whose accounts
    they belong to; existing emails, and accounts that are not there, are left alone."""
    fake = Faker(LOCALES.get(locale, locale))
    fake.seed_instance(seed)
    made = []
    for local, title, role, account_name, main in PARTNER_PEOPLE:
        email = f"{local}@{domain}"
        if role not in catalog.roles or store.user_by_email(email) is not None:
            continue
        try:
            account = store.find_account(account_name)
        except ValueError:
            continue
        member = _add_person(
            store, email, fake.name(), title, role, locale, time_zone, account=account
        )
        if member is None:
            continue
        member.account = account_name
        if main and "partner_contact" in catalog.entity("account").fields:
            store.records("account").update(account, {"partner_contact": member.id})
        made.append(member)
    return made


def _add_person(
    store, email, name, title, role, locale, time_zone, *, team=None, account=None
) -> DemoUser | None:
    # a policy may refuse a random password now and then (one built from the email,
    # a minimum length set higher): draw another
    for _ in range(10):
        password = _password(store.settings())
        try:
            ident = store.add_user(
                email,
                name,
                password=password,
                roles=[role],
                teams=[team] if team else [],
                locale=locale.split("_")[0],
                time_zone=time_zone,
                account=account,
            )
        except ValueError:
            continue
        return DemoUser(email, name, title, role, password, ident, team or "")
    return None


def _password(settings: dict) -> str:
    length = max(16, int(settings.get("password_min_length") or 0))
    return secrets.token_urlsafe(length)[:length]
