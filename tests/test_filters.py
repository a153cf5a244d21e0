"""The filter language: its SQL compiler and its Python evaluator agree, and bad filters
fail with a clear FilterError before any SQL runs.

The core of this file is a hypothesis property: records over an entity with every kind
of filterable field (text, integer, decimal, money, boolean, date, datetime, choice,
multi_choice, tags, a lookup walked by dotted paths, user fields) are written through
the records service, random filter trees are drawn over them, and the ids that
``Records.query`` returns (paged through) must be exactly the ids whose record
``evaluate.matches`` accepts, for a random "now", time zone and current user.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, fresh_database, write_pack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrm.metadata.evaluate import matches, record_getter
from xrm.metadata.fieldtypes import EMPTY_OPS, RELATIVE_DATE_OPS, RELATIVE_N_OPS
from xrm.metadata.filters import FilterContext, FilterError, parse_filter, resolve_path
from xrm.storage.database import WRITE
from xrm.storage.records import Records
from xrm.storage.store import Clock

UTC = dt.UTC
BASE_NOW = dt.datetime(2024, 3, 11, 2, 30, tzinfo=UTC)  # Sunday 22:30 in New York, DST day
ZONES = ("UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati", "Pacific/Pago_Pago")
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

LAB = {
    "entities/org.yaml": """
entity: org
title: name
fields:
  name: {type: text, max_length: 100}
  industry: {type: choice, options: [retail, finance, tech]}
  size: {type: integer}
""",
    "entities/item.yaml": """
entity: item
title: title
search: [title]
fields:
  title: {type: text, max_length: 60}
  qty: {type: integer}
  price: {type: decimal, precision: 10, scale: 2}
  cost: {type: money}
  active: {type: boolean}
  due: {type: date}
  at: {type: datetime}
  status: {type: choice, options: [new, open, done]}
  colors: {type: multi_choice, options: [red, green, blue]}
  tags: {type: tags}
  org: {type: lookup, to: org, on_delete: set_null}
  assignee: {type: user}
""",
}


class MovableClock(Clock):
    def __init__(self, now: dt.datetime):
        self.at = now

    def now(self) -> dt.datetime:
        return self.at


class Lab:
    """A store with the lab pack, its users and organizations, and item services."""

    def __init__(self, store, clock: MovableClock):
        self.store = store
        self.clock = clock
        self.catalog = store.catalog
        self.item = self.catalog.entity("item")
        self.ann = store.add_user("ann@example.com")
        self.bob = store.add_user("bob@example.com")
        orgs = store.records("org")
        self.org_ids = [
            orgs.create(values)["id"]
            for values in (
                {"name": "Acme", "industry": "retail", "size": 10},
                {"name": "ёлка", "industry": "finance", "size": None},
                {"name": "Globex", "industry": None, "size": 500},
                {"name": None, "industry": "tech", "size": 10},
            )
        ]
        self.orgs = {row["id"]: row for row in orgs.query(limit=100).rows}

    def service(self, user_id, tz: str) -> Records:
        return Records(self.store, self.catalog, self.item, user_id, tz=tz)

    def load(self, rows: list[dict], one_by_one: bool = False) -> list[dict]:
        """Replace every item by ``rows`` (through the records service); the stored rows."""
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(sa.text("DELETE FROM item"))
        service = self.service(self.ann, "UTC")
        if one_by_one:
            for row in rows:
                service.create(row)
        elif rows:
            service.bulk_create(rows)
        return service.query(limit=1000).rows

    def related(self, entity: str, ident):
        assert entity == "org"
        return self.orgs.get(ident)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filters")
    pack = write_pack(tmp, "lab", LAB, depends={"core": ">=1.0"})
    clock = MovableClock(BASE_NOW)
    with fresh_database(tmp) as database:
        store = database.open(clock=clock)
        try:
            store.install([SOLUTIONS / "core", pack])
            yield Lab(store, clock)
        finally:
            store.close()


def all_ids(service: Records, raw, limit: int = 4) -> list[int]:
    """Every id the SQL side returns, paging through with the cursors."""
    ids, after = [], None
    while True:
        page = service.query(filter=raw, fields=["id"], limit=limit, after=after)
        ids.extend(row["id"] for row in page.rows)
        if page.next_cursor is None:
            return ids
        after = page.next_cursor


def python_ids(lab: Lab, records: list[dict], raw, ctx: FilterContext) -> set[int]:
    tree = parse_filter(raw, lab.item, lab.catalog.entity_of)
    return {r["id"] for r in records if matches(tree, record_getter(r, lab.related), ctx)}


# ------------------------------------------------------------------------ value pools
TEXTS = (
    "alpha",
    "Alpha",
    "ALPHA beta",
    "beta",
    "a%b",
    "a_b",
    "a\\b",
    "Ёжик",
    "ёжик",
    "Ёлка зелёная",
    "Straße",
    "x",
)
TEXT_ALPHABET = "aAbB%_\\ ёЁжЖ"
FRAGMENTS = ("ёж", "ЁЖИК", "Ёл", "лка", "alp", "ALPHA", "a%", "_b", "\\", "%", "_", "ß", " b", "x")
TAGS = ("a", "b", "ёж", "Ёж", "x y", "C")


def _local_midnights() -> list[dt.datetime]:
    """Instants around the local midnights that relative ranges start and end at."""
    instants = []
    for zone in ZONES:
        today = BASE_NOW.astimezone(ZoneInfo(zone)).date()
        for days in (-92, -31, -29, -8, -7, -1, 0, 1, 2, 8, 31):
            start = dt.datetime.combine(
                today + dt.timedelta(days=days), dt.time(), ZoneInfo(zone)
            ).astimezone(UTC)
            instants += [
                start,
                start - dt.timedelta(microseconds=1),
                start + dt.timedelta(seconds=1),
            ]
    return instants


INSTANTS = _local_midnights()
DAY0 = BASE_NOW.date()
DATES = [
    DAY0 + dt.timedelta(days=d)
    for d in (-100, -92, -40, -31, -30, -29, -8, -7, -1, 0, 1, 6, 7, 30, 95)
] + [
    dt.date(2024, 1, 1),
    dt.date(2024, 2, 1),
    dt.date(2024, 2, 29),
    dt.date(2024, 3, 1),
    dt.date(2024, 3, 4),
    dt.date(2024, 3, 31),
    dt.date(2024, 4, 1),
    dt.date(2023, 12, 31),
]

texts = st.one_of(st.sampled_from(TEXTS), st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=5))
nonblank_texts = texts.filter(lambda s: s.strip())
integers = st.one_of(st.integers(-3, 3), st.integers(-(10**9), 10**9))
decimals = st.one_of(
    st.sampled_from([Decimal("0"), Decimal("1.5"), Decimal("-2.25"), Decimal("0.10")]),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False),
)
dates = st.one_of(st.sampled_from(DATES), st.dates(dt.date(2023, 10, 1), dt.date(2024, 7, 1)))
datetimes = st.one_of(
    st.sampled_from(INSTANTS),
    st.datetimes(dt.datetime(2023, 10, 1), dt.datetime(2024, 7, 1), timezones=st.just(UTC)),
)


@st.composite
def item_values(draw, lab: Lab) -> dict:
    def maybe(strategy):
        return draw(st.one_of(st.none(), strategy))

    return {
        "title": maybe(texts),
        "qty": maybe(integers),
        "price": maybe(decimals),
        "cost": maybe(decimals),
        "active": maybe(st.booleans()),
        "due": maybe(dates),
        "at": maybe(datetimes),
        "status": maybe(st.sampled_from(["new", "open", "done"])),
        "colors": maybe(st.lists(st.sampled_from(["red", "green", "blue"]), max_size=3)),
        "tags": maybe(st.lists(st.sampled_from(TAGS), max_size=3)),
        "org": maybe(st.sampled_from(lab.org_ids)),
        "assignee": maybe(st.sampled_from([lab.ann, lab.bob])),
        "owner": maybe(st.sampled_from([lab.ann, lab.bob])),
    }


#: Paths the generated filters use, own fields and through the lookup.
PATHS = (
    "title",
    "qty",
    "price",
    "cost",
    "active",
    "due",
    "at",
    "status",
    "colors",
    "tags",
    "org",
    "assignee",
    "owner",
    "id",
    "org.industry",
    "org.size",
    "org.name",
)


def scalars(lab: Lab, field):
    """Filter values of one field, as a user would send them (some as text or labels)."""
    if field.type in ("choice", "multi_choice"):
        return st.sampled_from([*field.choice_values, field.choices[0].label.get("en")])
    return {
        "text": nonblank_texts,
        "integer": st.one_of(integers, integers.map(str)),
        "decimal": st.one_of(decimals, decimals.map(str), st.integers(-5, 5)),
        "money": st.one_of(decimals, decimals.map(str)),
        "boolean": st.one_of(st.booleans(), st.sampled_from(["yes", "no"])),
        "date": st.one_of(dates, dates.map(dt.date.isoformat)),
        "datetime": st.one_of(
            datetimes, datetimes.map(lambda d: d.isoformat().replace("+00:00", "Z"))
        ),
        "tags": st.sampled_from(TAGS),
        "lookup": st.sampled_from([*lab.org_ids, 999]),
        "user": st.sampled_from([lab.ann, lab.bob, "current_user", 999]),
    }[field.type]


@st.composite
def conditions(draw, lab: Lab):
    path = draw(st.sampled_from(PATHS))
    field, _ = resolve_path(lab.item, path, lab.catalog.entity_of)
    op = draw(st.sampled_from(sorted(field.kind.operators)))
    scalar = scalars(lab, field)
    if op in EMPTY_OPS or op in RELATIVE_DATE_OPS:
        return [path, op] if draw(st.booleans()) else [path, op, None]
    if op in RELATIVE_N_OPS:
        return [path, op, draw(st.integers(0, 40))]
    if op in ("in", "not_in"):
        return [path, op, draw(st.lists(scalar, max_size=3))]
    if op == "between":
        return [path, op, [draw(scalar), draw(scalar)]]
    if field.kind.json_type == "array":  # contains / not_contains: one value or a list
        return [path, op, draw(st.one_of(scalar, st.lists(scalar, max_size=3)))]
    if op in ("contains", "starts_with"):
        return [
            path,
            op,
            draw(
                st.one_of(
                    st.sampled_from(FRAGMENTS),
                    st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=3),
                )
            ),
        ]
    return [path, op, draw(scalar)]


def trees(lab: Lab):
    return st.recursive(
        conditions(lab),
        lambda children: st.one_of(
            st.lists(children, max_size=3).map(lambda c: {"all": c}),
            st.lists(children, max_size=3).map(lambda c: {"any": c}),
            children.map(lambda c: {"not": c}),
        ),
        max_leaves=6,
    )


def contexts(lab: Lab):
    """A "now" near the data, a time zone, and who asks (sometimes nobody)."""
    return st.tuples(
        st.integers(-24 * 35, 24 * 35).map(
            lambda hours: BASE_NOW + dt.timedelta(hours=hours, minutes=7)
        ),
        st.sampled_from(ZONES),
        st.sampled_from([None, lab.ann, lab.bob]),
    )


def assert_agree(lab: Lab, records: list[dict], raw, now, zone, user) -> None:
    lab.clock.at = now
    service = lab.service(user, zone)
    ctx = FilterContext(user_id=user, tz=zone, now=now)
    expected = python_ids(lab, records, raw, ctx)
    got = all_ids(service, raw)
    assert len(got) == len(set(got)), f"a row was returned twice for {raw!r}"
    assert set(got) == expected, (
        f"filter {raw!r} (now {now}, {zone}, user {user}): SQL {sorted(got)}, Python {sorted(expected)}"
    )
    assert service.count(raw).value == len(expected)


# ----------------------------------------------------------------------- the property
@PROPERTY
@given(data=st.data())
def test_sql_and_python_agree_on_random_records(lab, data):
    rows = data.draw(st.lists(item_values(lab), max_size=10), label="rows")
    records = lab.load(rows, one_by_one=data.draw(st.booleans(), label="one by one"))
    assert len(records) == len(rows)
    for _ in range(4):
        raw = data.draw(trees(lab), label="filter")
        now, zone, user = data.draw(contexts(lab), label="context")
        assert_agree(lab, records, raw, now, zone, user)


EDGE_ROWS = [
    {},
    {
        "title": "Ёжик",
        "tags": ["Ёж", "a"],
        "colors": ["red"],
        "qty": 0,
        "price": "0",
        "active": False,
    },
    {"title": "a%b", "tags": [], "colors": [], "qty": -1, "cost": "0.10", "active": True},
    {"title": "a_b", "qty": 3, "due": "2024-03-04", "at": "2024-03-04T05:00:00Z", "status": "open"},
    {
        "title": "ALPHA beta",
        "due": "2024-03-10",
        "at": "2024-03-11T03:59:59Z",
        "status": "done",
        "org": 0,
    },
    {
        "title": "alpha",
        "due": "2024-02-29",
        "at": "2024-03-11T04:00:00Z",
        "org": 1,
        "assignee": "ann",
    },
    {"title": "a\\b", "due": "2024-01-01", "at": "2024-02-01T05:00:00Z", "org": 2, "owner": "bob"},
    {
        "title": "Straße",
        "due": "2023-12-31",
        "at": "2024-01-01T04:59:59.999999Z",
        "org": 3,
        "owner": "ann",
    },
]


@pytest.fixture
def edge_records(lab):
    rows = []
    for row in EDGE_ROWS:
        row = dict(row)
        if "org" in row:
            row["org"] = lab.org_ids[row["org"]]
        for key in ("assignee", "owner"):
            if key in row:
                row[key] = lab.ann if row[key] == "ann" else lab.bob
        rows.append(row)
    return lab.load(rows)


@settings(
    PROPERTY,
    max_examples=400,
    suppress_health_check=[*PROPERTY.suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_sql_and_python_agree_on_edge_records(lab, edge_records, data):
    """Fixed rows with the edges (empty lists, zero, LIKE wildcards, Cyrillic, local-midnight
    instants, a lookup to every organization) against many more filters; the examples
    only read, so the rows are written once."""
    raw = data.draw(trees(lab), label="filter")
    now, zone, user = data.draw(contexts(lab), label="context")
    assert_agree(lab, edge_records, raw, now, zone, user)


def test_every_operator_of_the_lab_fields_is_generated(lab):
    """The generator draws operators from the field registry, so a new operator needs a
    value strategy here: fail loudly instead of silently never testing it."""
    for path in PATHS:
        field, _ = resolve_path(lab.item, path, lab.catalog.entity_of)
        assert field.kind.operators, path
        for op in field.kind.operators:
            known = (
                EMPTY_OPS
                | RELATIVE_DATE_OPS
                | RELATIVE_N_OPS
                | {"in", "not_in", "between", "eq", "ne", "lt", "le", "gt", "ge"}
            )
            assert op in known or op in ("contains", "not_contains", "starts_with"), (path, op)


# ------------------------------------------------------------------- specific cases
def ids_of(service: Records, raw) -> set[int]:
    return set(all_ids(service, raw))


def test_empty_lists_and_empty_nodes(lab):
    records = lab.load(
        [{"qty": 1, "tags": ["a"]}, {"qty": None, "tags": None}, {"qty": 2, "tags": []}]
    )
    everyone = {r["id"] for r in records}
    service = lab.service(lab.ann, "UTC")
    assert ids_of(service, ["qty", "in", []]) == set()
    assert ids_of(service, ["qty", "not_in", []]) == everyone
    assert ids_of(service, ["tags", "contains", []]) == set()
    assert ids_of(service, ["tags", "not_contains", []]) == everyone
    assert ids_of(service, {"all": []}) == everyone
    assert ids_of(service, {"any": []}) == set()
    assert ids_of(service, {"not": {"any": []}}) == everyone
    assert ids_of(service, None) == everyone
    assert ids_of(service, []) == everyone
    empty_tags = {r["id"] for r in records if not r["tags"]}
    assert len(empty_tags) == 2
    assert ids_of(service, ["tags", "is_empty"]) == empty_tags
    assert ids_of(service, ["tags", "is_not_empty"]) == everyone - empty_tags


def test_text_matching_ignores_case_also_in_cyrillic(lab):
    records = lab.load(
        [
            {"title": "Ёжик в тумане"},
            {"title": "ЁЛКА"},
            {"title": "Hedgehog"},
            {"title": "50% off_sale"},
        ]
    )
    by_title = {r["title"]: r["id"] for r in records}
    service = lab.service(None, "UTC")
    assert ids_of(service, ["title", "contains", "ёжик"]) == {by_title["Ёжик в тумане"]}
    assert ids_of(service, ["title", "contains", "ТУМАН"]) == {by_title["Ёжик в тумане"]}
    assert ids_of(service, ["title", "starts_with", "ёл"]) == {by_title["ЁЛКА"]}
    assert ids_of(service, ["title", "starts_with", "hedge"]) == {by_title["Hedgehog"]}
    # LIKE wildcards in the value are plain characters
    assert ids_of(service, ["title", "contains", "%"]) == {by_title["50% off_sale"]}
    assert ids_of(service, ["title", "contains", "f_s"]) == {by_title["50% off_sale"]}
    assert ids_of(service, ["title", "contains", "o_f"]) == set()
    # equality stays exact
    assert ids_of(service, ["title", "eq", "ёлка"]) == set()
    assert ids_of(service, ["title", "eq", "ЁЛКА"]) == {by_title["ЁЛКА"]}


def test_dotted_paths_walk_the_lookup(lab):
    acme, yolka, globex, nameless = lab.org_ids
    records = lab.load([{"org": acme}, {"org": yolka}, {"org": globex}, {"org": nameless}, {}])
    by_org = {r["org"]: r["id"] for r in records}
    service = lab.service(None, "UTC")
    assert ids_of(service, ["org.industry", "eq", "retail"]) == {by_org[acme]}
    assert ids_of(service, ["org.industry", "eq", "Finance"]) == {by_org[yolka]}  # by label
    assert ids_of(service, ["org.industry", "is_empty"]) == {by_org[globex], by_org[None]}
    assert ids_of(service, ["org.industry", "ne", "retail"]) == set(by_org.values()) - {
        by_org[acme]
    }
    assert ids_of(service, ["org.size", "eq", 10]) == {by_org[acme], by_org[nameless]}
    assert ids_of(service, ["org.name", "contains", "ЁЛ"]) == {by_org[yolka]}
    assert ids_of(
        service, {"all": [["org.size", "ge", 10], ["org.industry", "in", ["retail", "tech"]]]}
    ) == {
        by_org[acme],
        by_org[nameless],
    }


# ------------------------------------------------------------------- relative dates
NY = "America/New_York"
# Monday 2024-03-11 02:00 UTC is Sunday 2024-03-10 22:00 in New York, on the day clocks
# moved to summer time: local weeks, months and quarters differ from UTC ones here.
NY_NOW = dt.datetime(2024, 3, 11, 2, 0, tzinfo=UTC)


def z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


RELATIVE_INSTANTS = {
    "week_before_start": "2024-03-04T04:59:59Z",  # Sun 3 Mar 23:59:59 EST
    "week_start": "2024-03-04T05:00:00Z",  # Mon 4 Mar 00:00 EST
    "week_last": "2024-03-11T03:59:59Z",  # Sun 10 Mar 23:59:59 EDT
    "week_after": "2024-03-11T04:00:00Z",  # Mon 11 Mar 00:00 EDT (still the UTC Monday 04:00)
    "feb_first": "2024-02-01T05:00:00Z",  # 1 Feb 00:00 EST
    "jan_last": "2024-02-01T04:59:59Z",
    "mar_first": "2024-03-01T05:00:00Z",
    "feb_last": "2024-03-01T04:59:59.999999Z",
    "year_start": "2024-01-01T05:00:00Z",
    "old_year": "2024-01-01T04:59:59Z",
    "quarter_end": "2024-04-01T03:59:59Z",  # 31 Mar 23:59:59 EDT
    "next_quarter": "2024-04-01T04:00:00Z",
    "nine_days_ago": "2024-03-02T05:00:00Z",  # 2 Mar 00:00 EST
    "older_edge": "2024-02-09T04:59:59Z",  # 8 Feb 23:59:59 EST: older than 30 days
    "not_older": "2024-02-09T05:00:00Z",
}

RELATIVE_DATES = {
    "week_before_start": "2024-03-03",
    "week_start": "2024-03-04",
    "week_last": "2024-03-10",
    "week_after": "2024-03-11",
    "feb_first": "2024-02-01",
    "jan_last": "2024-01-31",
    "mar_first": "2024-03-01",
    "feb_last": "2024-02-29",
    "year_start": "2024-01-01",
    "old_year": "2023-12-31",
    "quarter_end": "2024-03-31",
    "next_quarter": "2024-04-01",
    "nine_days_ago": "2024-03-02",
    "older_edge": "2024-02-08",
    "not_older": "2024-02-09",
}

RELATIVE_EXPECTED = {
    "this_week": {"week_start", "week_last"},
    "last_week": {"week_before_start", "nine_days_ago", "mar_first", "feb_last"},
    "last_month": {"feb_first", "feb_last", "older_edge", "not_older"},
    "this_month": {
        "mar_first",
        "week_before_start",
        "week_start",
        "week_last",
        "week_after",
        "nine_days_ago",
        "quarter_end",
    },
    "this_quarter": {k for k in RELATIVE_INSTANTS if k not in ("old_year", "next_quarter")},
    "today": {"week_last"},
    "yesterday": set(),
    "tomorrow": {"week_after"},
}


@pytest.fixture
def relative_rows(lab):
    rows = [
        {"title": key, "at": RELATIVE_INSTANTS[key], "due": RELATIVE_DATES[key]}
        for key in RELATIVE_INSTANTS
    ]
    records = lab.load(rows)
    lab.clock.at = NY_NOW
    return records


@pytest.mark.parametrize("field", ["at", "due"])
@pytest.mark.parametrize(
    ("op", "value"),
    [(op, None) for op in RELATIVE_EXPECTED]
    + [("last_n_days", 7), ("older_than_days", 30), ("next_n_days", 0)],
)
def test_relative_ranges_in_the_users_time_zone(lab, relative_rows, field, op, value):
    service = lab.service(lab.ann, NY)
    raw = [field, op] if value is None else [field, op, value]
    titles = {r["id"]: r["title"] for r in relative_rows}
    if op == "last_n_days":  # 3 Mar .. 10 Mar local, today included
        expected = {"week_before_start", "week_start", "week_last"}
    elif op == "older_than_days":  # before 9 Feb local
        expected = {"feb_first", "jan_last", "year_start", "old_year", "older_edge"}
    elif op == "next_n_days":  # today only
        expected = {"week_last"}
    else:
        expected = RELATIVE_EXPECTED[op]
    got = {titles[i] for i in ids_of(service, raw)}
    assert got == expected
    ctx = FilterContext(user_id=lab.ann, tz=NY, now=NY_NOW)
    assert {titles[i] for i in python_ids(lab, relative_rows, raw, ctx)} == expected


def test_the_same_instant_is_another_day_in_utc(lab, relative_rows):
    """In UTC, 2024-03-11 02:00 is already Monday: this week is 11-17 March there."""
    titles = {r["id"]: r["title"] for r in relative_rows}
    got = {titles[i] for i in ids_of(lab.service(lab.ann, "UTC"), ["at", "this_week"])}
    assert got == {"week_last", "week_after"}  # 11 Mar 03:59:59Z and 04:00Z
    got = {titles[i] for i in ids_of(lab.service(lab.ann, "UTC"), ["due", "today"])}
    assert got == {"week_after"}


# ------------------------------------------------------------------- current user
def test_current_user_is_bound_when_the_query_runs(lab):
    records = lab.load(
        [
            {"title": "ann's", "owner": lab.ann, "assignee": lab.bob},
            {"title": "bob's", "owner": lab.bob, "assignee": lab.ann},
            {"title": "nobody's", "owner": None},
        ]
    )
    ids = {r["title"]: r["id"] for r in records}
    mine = ["owner", "eq", "current_user"]
    assert ids_of(lab.service(lab.ann, "UTC"), mine) == {ids["ann's"]}
    assert ids_of(lab.service(lab.bob, "UTC"), mine) == {ids["bob's"]}
    assert ids_of(lab.service(None, "UTC"), mine) == set()
    assert ids_of(lab.service(None, "UTC"), ["owner", "ne", "current_user"]) == set(ids.values())
    assert ids_of(lab.service(lab.ann, "UTC"), ["assignee", "in", ["current_user", lab.bob]]) == {
        ids["ann's"],
        ids["bob's"],
    }
    assert ids_of(lab.service(lab.ann, "UTC"), ["owner", "not_in", ["current_user"]]) == {
        ids["bob's"],
        ids["nobody's"],
    }
    # a platform call (no user): current_user matches no one, and nothing else is lost
    assert ids_of(lab.service(None, "UTC"), ["assignee", "in", ["current_user", lab.bob]]) == {
        ids["ann's"]
    }
    assert ids_of(lab.service(None, "UTC"), ["assignee", "not_in", ["current_user", lab.bob]]) == {
        ids["bob's"],
        ids["nobody's"],
    }
    assert ids_of(lab.service(None, "UTC"), {"not": ["assignee", "in", ["current_user"]]}) == set(
        ids.values()
    )
    # the same tree serves every user: it is parsed once, bound per query
    tree = parse_filter(mine, lab.item, lab.catalog.entity_of)
    for user, title in ((lab.ann, "ann's"), (lab.bob, "bob's")):
        ctx = FilterContext(user_id=user)
        assert [r["title"] for r in records if matches(tree, record_getter(r), ctx)] == [title]


def test_my_open_tasks_view_filters_by_the_current_user(lab):
    store = lab.store
    view = store.catalog.views["my_open_tasks"]
    tasks = store.records("task", lab.ann)
    mine = tasks.create({"subject": "Call Acme"})["id"]
    store.records("task", lab.bob).create({"subject": "Bob's task"})
    tasks.create({"subject": "Done already", "status": "done"})
    assert [r["id"] for r in tasks.query(filter=view.filter).rows] == [mine]


# ------------------------------------------------------------------- errors
@pytest.fixture
def counted(lab):
    """Statements executed while the block runs (a bad filter must run none)."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(lab.store.engine, "before_cursor_execute", count)
    yield statements
    sa.event.remove(lab.store.engine, "before_cursor_execute", count)


BAD_FILTERS = [
    (["titel", "eq", "x"], "titel", "item has no field 'titel'; did you mean 'title'?"),
    (
        ["org.industri", "eq", "x"],
        "org.industri",
        "org has no field 'industri'; did you mean 'industry'?",
    ),
    (["title.size", "eq", 1], "title.size", "'title' is not a lookup, so '.' cannot follow it"),
    (["qty", "eqq", 1], "qty", "did you mean 'eq'?"),
    (["qty", "equals", 1], "qty", "operator 'equals' does not apply to integer fields"),
    (["qty", 3, 1], "qty", "operator 3 does not apply to integer fields"),
    (["qty", "eq", "many"], "qty", "bad value for 'eq': expected a whole number"),
    (["qty", "in", [1, "two"]], "qty", "bad value for 'in': expected a whole number"),
    (["qty", "in", 1], "qty", "bad value for 'in': expected a list"),
    (["price", "lt", "cheap"], "price", "bad value for 'lt': expected a number"),
    (["due", "gt", "tomorrow-ish"], "due", "bad value for 'gt': expected a date"),
    (["at", "ge", "noonish"], "at", "bad value for 'ge': expected a date and time"),
    (["status", "eq", "closed"], "status", "'closed' is not an option"),
    (["org", "eq", "acme"], "org", "bad value for 'eq': expected a record id"),
    (["active", "eq", "perhaps"], "active", "bad value for 'eq': expected yes or no"),
    (["qty", "between", [1]], "qty", "bad value for 'between': expected [low, high]"),
    (["qty", "between", 5], "qty", "bad value for 'between': expected [low, high]"),
    (["qty", "between", [1, 2, 3]], "qty", "bad value for 'between': expected [low, high]"),
    (
        ["due", "between", ["2024-01-01", "later"]],
        "due",
        "bad value for 'between': expected a date",
    ),
    (["qty", "eq", None], "qty", "a value is required (use is_empty to match empty fields)"),
    (["title", "eq", "   "], "title", "a value is required"),
    (["qty", "eq"], "qty", "operator 'eq' needs a value"),
    (["due", "today", "2024-01-01"], "due", "operator 'today' takes no value"),
    (["due", "last_n_days", -1], "due", "expected a whole number of days"),
    (["due", "last_n_days", "7"], "due", "expected a whole number of days"),
    (["active", "gt", True], "active", "operator 'gt' does not apply to boolean fields"),
    (["title", "lt", "b"], "title", "operator 'lt' does not apply to text fields"),
    (["title", "today"], "title", "operator 'today' does not apply to text fields"),
    (["tags", "eq", "a"], "tags", "operator 'eq' does not apply to tags fields"),
    (
        ["colors", "starts_with", "r"],
        "colors",
        "operator 'starts_with' does not apply to multi_choice fields",
    ),
    (["status", "contains", "o"], "status", "operator 'contains' does not apply to choice fields"),
    (["org", "gt", 1], "org", "operator 'gt' does not apply to lookup fields"),
    (["title", "contains", ""], "title", "bad value for 'contains': expected text"),
    (["title", "contains", 5], "title", "bad value for 'contains': expected text"),
]


@pytest.mark.parametrize(
    ("raw", "path", "message"), BAD_FILTERS, ids=[repr(b[0]) for b in BAD_FILTERS]
)
def test_bad_conditions_are_filter_errors_before_any_sql(lab, counted, raw, path, message):
    service = lab.service(lab.ann, "UTC")
    counted.clear()
    for call in (service.query, service.count):
        with pytest.raises(FilterError) as caught:
            call(raw)
        assert caught.value.path == path
        assert message in str(caught.value), str(caught.value)
        assert str(caught.value).startswith(f"{path}: ")
    # nested anywhere in a tree, the same error
    with pytest.raises(FilterError, match="^" + re.escape(path) + ": "):
        service.query({"any": [["qty", "eq", 1], {"not": {"all": [raw]}}]})
    assert counted == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"all": ["qty", "eq", 1]},
            "expected a condition [field, op, value] or an all/any/not node",
        ),
        ({"all": "qty"}, "'all' takes a list of filters"),
        ({"and": [["qty", "eq", 1]]}, "unknown filter node 'and' (expected all, any or not)"),
        ({"all": [], "any": []}, "a filter node has exactly one of all, any, not"),
        (["qty"], "a condition is [field, op] or [field, op, value]"),
        (["qty", "eq", 1, 2], "a condition is [field, op] or [field, op, value]"),
        ("qty = 1", "expected a condition [field, op, value] or an all/any/not node"),
        (42, "expected a condition"),
        ([None, "eq", 1], "expected a field name"),
    ],
)
def test_malformed_trees_are_filter_errors(lab, counted, raw, message):
    counted.clear()
    with pytest.raises(FilterError) as caught:
        lab.service(None, "UTC").query(raw)
    assert message in str(caught.value)
    assert counted == []


def test_deep_nesting_is_refused(lab):
    raw = ["qty", "eq", 1]
    for _ in range(20):
        raw = {"not": raw}
    with pytest.raises(FilterError, match="nested too deeply"):
        lab.service(None, "UTC").query(raw)


def test_formula_fields_take_the_operators_of_their_result(lab):
    """contact.full_name is a text formula: text operators apply, date ones do not."""
    contacts = lab.store.records("contact")
    smith = contacts.create({"first_name": "Anna", "last_name": "Smith"})["id"]
    contacts.create({"first_name": "Boris", "last_name": "Ivanov"})
    assert [r["id"] for r in contacts.query(["full_name", "starts_with", "anna"]).rows] == [smith]
    for raw in (
        ["full_name", "today"],
        ["full_name", "not_contains", "x"],
        ["full_name", "last_n_days", 3],
    ):
        with pytest.raises(FilterError, match="does not apply to"):
            contacts.query(raw)


def test_sort_errors_are_filter_errors(lab):
    service = lab.service(None, "UTC")
    with pytest.raises(FilterError, match="has no field 'qtty'; did you mean 'qty'"):
        service.query(sort=[["qtty", "asc"]])
    with pytest.raises(FilterError, match="sort direction 'up' is not asc or desc"):
        service.query(sort=[["qty", "up"]])
    with pytest.raises(FilterError, match="cannot sort by tags field"):
        service.query(sort="tags")
