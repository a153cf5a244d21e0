"""Lists: keyset pages over many rows, cursors, dotted paths, full-text search, counts.

One store per module with 1,200 ``entry`` records whose sort columns are full of ties
and empty values; each pagination test walks every page and compares the result with
one independent, fully ordered SQL query.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, fresh_database, write_pack

from xrm.metadata.filters import FilterError
from xrm.storage.query import MAX_PAGE, BadCursor
from xrm.storage.records import Records

UTC = dt.UTC
ROWS = 1200

LEDGER = {
    "entities/entry.yaml": """
entity: entry
title: label
search: [label, memo]
fields:
  label:   {type: text, max_length: 100}
  memo:    {type: text, max_length: 300}
  grp:     {type: integer}
  amount:  {type: decimal, precision: 12, scale: 2}
  day:     {type: date}
  at:      {type: datetime}
  flag:    {type: boolean}
  kind:    {type: choice, options: [a, b, c]}
  tags:    {type: tags}
  account: {type: lookup, to: account, on_delete: set_null}
  contact: {type: lookup, to: contact, on_delete: set_null}
""",
    "entities/plain.yaml": """
entity: plain
fields:
  size: {type: integer}
""",
}


def entry_rows(account_ids: list[int], contact_ids: list[int]) -> list[dict]:
    rnd = random.Random(20240311)

    def maybe(values, empty=0.2):
        return None if rnd.random() < empty else rnd.choice(values)

    labels = ["alpha", "Alpha", "beta", "gamma", "дельта", "Ёж", "zeta", "a b", "a", ""]
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(0, 60, 7)]
    instants = [
        dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(hours=h, microseconds=m)
        for h in range(0, 48, 5)
        for m in (0, 1)
    ]
    rows = []
    for i in range(ROWS):
        rows.append(
            {
                "label": maybe(labels),
                "memo": f"entry number {i}",
                "grp": maybe(range(10), empty=0.3),
                "amount": maybe(
                    [
                        Decimal("0"),
                        Decimal("-1.5"),
                        Decimal("2.25"),
                        Decimal("1000000.01"),
                        Decimal("0.1"),
                    ]
                ),
                "day": maybe(days),
                "at": maybe(instants),
                "flag": maybe([True, False]),
                "kind": maybe(["a", "b", "c"]),
                "account": maybe(account_ids),
                "contact": maybe(contact_ids),
            }
        )
    return rows


class Ledger:
    def __init__(self, store):
        self.store = store
        accounts = store.records("account")
        industries = ["retail", "finance", None, "technology", "retail"]
        self.account_ids = accounts.bulk_create(
            [
                {"name": name, "industry": industry}
                for name, industry in zip(["Zeta", "alpha", "Beta", "Ω", "beta"], industries)
            ]
        ).ids
        contacts = store.records("contact")
        self.contact_ids = contacts.bulk_create(
            [
                {"last_name": f"Person {i}", "account": self.account_ids[i] if i < 4 else None}
                for i in range(6)
            ]
        ).ids
        self.entries = store.records("entry")
        self.entry_ids = self.entries.bulk_create(
            entry_rows(self.account_ids, self.contact_ids)
        ).ids


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query")
    pack = write_pack(tmp, "ledger", LEDGER, depends={"core": ">=1.0"})
    with fresh_database(tmp) as database:
        store = database.open()
        try:
            store.install([SOLUTIONS / "core", pack])
            yield Ledger(store)
        finally:
            store.close()


def walk(records: Records, *, limit: int, **options) -> tuple[list[int], int]:
    """Every id over all pages, and how many pages it took."""
    ids, after, pages = [], None, 0
    while True:
        page = records.query(limit=limit, after=after, fields=["id"], **options)
        pages += 1
        assert len(page.rows) <= limit
        ids.extend(row["id"] for row in page.rows)
        if page.next_cursor is None:
            return ids, pages
        assert len(page.rows) == limit
        after = page.next_cursor
        assert pages <= ROWS + 1, "paging does not end"


def expected_order(ledger: Ledger, spec: list[tuple[str, str]], where=None) -> list[int]:
    """The same order from one independent query: empty values last in both directions,
    ties broken by id in the direction of the last sort key."""
    tables = ledger.entries.tables
    entry = tables["entry"]
    account, contact, contact_account = (
        tables["account"].alias("a1"),
        tables["contact"].alias("c1"),
        tables["account"].alias("a2"),
    )
    joined = (
        entry.outerjoin(account, account.c.id == entry.c.account)
        .outerjoin(contact, contact.c.id == entry.c.contact)
        .outerjoin(contact_account, contact_account.c.id == contact.c.account)
    )
    paths = {
        "account.name": account.c.name,
        "account.industry": account.c.industry,
        "contact.last_name": contact.c.last_name,
        "contact.account.industry": contact_account.c.industry,
        "contact.account.name": contact_account.c.name,
    }
    order = []
    for path, direction in spec:
        column = paths[path] if "." in path else entry.c[path]
        order.append(
            column.asc().nulls_last() if direction == "asc" else column.desc().nulls_last()
        )
    last = spec[-1][1] if spec else "asc"
    order.append(entry.c.id.asc() if last == "asc" else entry.c.id.desc())
    statement = sa.select(entry.c.id).select_from(joined).order_by(*order)
    if where is not None:
        statement = statement.where(where(entry))
    with ledger.store.engine.connect() as conn:
        return list(conn.execute(statement).scalars())


SORTS = [
    (None, []),
    ("grp", [("grp", "asc")]),
    ("-grp", [("grp", "desc")]),
    ([["label", "asc"], ["grp", "desc"]], [("label", "asc"), ("grp", "desc")]),
    ("-label,grp", [("label", "desc"), ("grp", "asc")]),
    ([["amount", "desc"], ["day", "asc"]], [("amount", "desc"), ("day", "asc")]),
    ("amount,-day,kind", [("amount", "asc"), ("day", "desc"), ("kind", "asc")]),
    ("at", [("at", "asc")]),
    ("-at", [("at", "desc")]),
    ("flag,-kind", [("flag", "asc"), ("kind", "desc")]),
    ("-day", [("day", "desc")]),
    ("account", [("account", "asc")]),
    ("account.name", [("account.name", "asc")]),
    (
        [["contact.account.industry", "desc"], ["label", "asc"]],
        [("contact.account.industry", "desc"), ("label", "asc")],
    ),
    ("-id", [("id", "desc")]),
    ("grp,-id", [("grp", "asc"), ("id", "desc")]),
]


@pytest.mark.parametrize(("sort", "spec"), SORTS, ids=[str(s[0]) for s in SORTS])
def test_keyset_pages_return_every_row_once_in_order(ledger, sort, spec):
    ids, pages = walk(ledger.entries, limit=97, sort=sort)
    assert len(ids) == len(set(ids)) == ROWS
    assert ids == expected_order(ledger, spec)
    assert pages == math.ceil(ROWS / 97)


def test_keyset_pages_with_a_filter_and_a_small_page(ledger):
    raw = {"any": [["grp", "is_empty"], ["grp", "in", [1, 2]], ["label", "starts_with", "a"]]}
    ids, _ = walk(ledger.entries, limit=13, sort="-amount,label", filter=raw)

    def where(entry):
        return sa.or_(
            entry.c.grp.is_(None), entry.c.grp.in_([1, 2]), sa.func.lower(entry.c.label).like("a%")
        )

    expected = expected_order(ledger, [("amount", "desc"), ("label", "asc")], where)
    assert 0 < len(expected) < ROWS
    assert ids == expected


def test_a_page_as_big_as_the_table_and_the_page_size_limit(ledger):
    page = ledger.entries.query(limit=ROWS * 10, fields=["id"])
    assert len(page.rows) == MAX_PAGE
    rest = ledger.entries.query(limit=ROWS, fields=["id"], after=page.next_cursor)
    assert len(rest.rows) == ROWS - MAX_PAGE and rest.next_cursor is None
    assert (
        ledger.entries.query(limit=0, fields=["id"]).rows
        == ledger.entries.query(limit=1, fields=["id"]).rows
    )


def test_rows_added_while_paging_are_not_skipped_or_repeated(ledger):
    """Keyset pages depend on values, not positions: a row inserted behind the cursor
    does not shift later pages."""
    entries = ledger.entries
    first = entries.query(sort="grp", limit=50, fields=["id", "grp"])
    extra = entries.create({"grp": -1, "label": "inserted behind the cursor"})["id"]
    try:
        rest, _ = walk(entries, limit=50, sort="grp")
        ids = [r["id"] for r in first.rows]
        after = entries.query(sort="grp", limit=ROWS, fields=["id"], after=first.next_cursor)
        assert extra not in [r["id"] for r in after.rows]
        assert not set(ids) & {r["id"] for r in after.rows}
        assert rest[0] == extra
    finally:
        entries.delete(extra)


# ------------------------------------------------------------------------ cursors
def encode(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode(cursor: str):
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def test_bad_cursors_are_refused(ledger):
    entries = ledger.entries
    cursor = entries.query(sort="grp", limit=5).next_cursor
    signature, value, last = decode(cursor)
    bad = [
        "not a cursor!!",
        cursor[:-3],
        encode({"sort": "grp"}),
        encode([signature]),
        encode([signature, "three", last]),  # a text where the sort wants a number
        encode([signature, value, "12"]),  # the id must be a number
        encode([signature, value, last, 4]),  # too many values
        encode(["00000000", value, last]),  # another signature
        12345,
    ]
    for after in bad:
        with pytest.raises(BadCursor):
            entries.query(sort="grp", limit=5, after=after)
    assert isinstance(BadCursor("x"), ValueError)


def test_a_cursor_from_another_sort_order_is_refused(ledger):
    entries = ledger.entries
    cursor = entries.query(sort="grp", limit=5).next_cursor
    for other in ("-grp", "label", None, "grp,label"):
        with pytest.raises(BadCursor, match="another sort order"):
            entries.query(sort=other, limit=5, after=cursor)
    entries.query(sort=[["grp", "asc"]], limit=5, after=cursor)  # the same order, spelled otherwise


def test_a_cursor_from_another_entity_is_refused(ledger):
    """Both lists are sorted by id only (the default): the cursors look alike."""
    contacts_cursor = ledger.store.records("contact").query(limit=2).next_cursor
    with pytest.raises(BadCursor):
        ledger.entries.query(limit=2, after=contacts_cursor)
    accounts_cursor = ledger.store.records("account").query(sort="name", limit=2).next_cursor
    with pytest.raises(BadCursor):
        ledger.store.records("contact").query(sort="last_name", limit=2, after=accounts_cursor)


# ------------------------------------------------------------------------ dotted paths
def all_rows(records: Records, **options) -> list[dict]:
    rows, after = [], None
    while True:
        page = records.query(limit=MAX_PAGE, after=after, **options)
        rows += page.rows
        if page.next_cursor is None:
            return rows
        after = page.next_cursor


def expected_order_filtered(ledger: Ledger, ids: list[int], spec) -> list[int]:
    wanted = set(ids)
    return [i for i in expected_order(ledger, spec) if i in wanted]


def test_dotted_paths_in_fields_filters_and_sorts(ledger):
    entries = ledger.entries
    fields = [
        "label",
        "account.name",
        "account.industry",
        "contact.last_name",
        "contact.account.name",
    ]
    rows = {r["id"]: r for r in all_rows(entries, fields=fields)}
    plain = {r["id"]: r for r in all_rows(entries, fields=["account", "contact"])}
    accounts = {r["id"]: r for r in ledger.store.records("account").query(limit=MAX_PAGE).rows}
    contacts = {r["id"]: r for r in ledger.store.records("contact").query(limit=MAX_PAGE).rows}
    assert len(rows) == len(plain) >= ROWS

    def related(ident):
        account = accounts.get(plain[ident]["account"]) or {}
        contact = contacts.get(plain[ident]["contact"]) or {}
        return account, contact, accounts.get(contact.get("account")) or {}

    for ident, row in rows.items():
        account, contact, contact_account = related(ident)
        assert set(row) == {"id", "version", *fields}
        assert row["account.name"] == account.get("name")
        assert row["account.industry"] == account.get("industry")
        assert row["contact.last_name"] == contact.get("last_name")
        assert row["contact.account.name"] == contact_account.get("name")

    # a filter on one path and a sort on others: two joins of the account table
    raw = {"all": [["contact.account.industry", "eq", "retail"], ["account.name", "is_not_empty"]]}
    spec = [("account.name", "desc"), ("contact.last_name", "asc")]
    ids, _ = walk(entries, limit=11, filter=raw, sort=[list(item) for item in spec])
    expected = {i for i in plain if related(i)[2].get("industry") == "retail" and related(i)[0]}
    assert 0 < len(expected) < ROWS
    assert set(ids) == expected and len(ids) == len(expected)
    assert ids == expected_order_filtered(ledger, ids, spec)


def test_unknown_paths_in_fields_and_sorts_are_filter_errors(ledger):
    entries = ledger.entries
    with pytest.raises(FilterError, match="account has no field 'nme'; did you mean 'name'"):
        entries.query(fields=["account.nme"])
    with pytest.raises(FilterError, match="'label' is not a lookup"):
        entries.query(sort="label.x")
    with pytest.raises(FilterError, match="cannot sort by tags field"):
        entries.query(sort="tags")
    with pytest.raises(FilterError, match="cannot sort by children field"):
        ledger.store.records("account").query(sort="contacts")


# ------------------------------------------------------------------------ search
@pytest.fixture
def documents(ledger):
    texts = {
        "acme": ("Acme Corporation", "main customer"),
        "widgets": ("acme-widgets", None),
        "hedgehog": ("Ёжик в тумане", "мультфильм"),
        "city": ("Москва-Сити", "офис на 40 этаже"),
        "blackberry": ("ежевика", None),
        "mixed": ("Straße und Weg", "CAPS memo TEXT"),
    }
    entries = ledger.store.records("entry")
    ids = entries.bulk_create(
        [{"label": label, "memo": memo, "grp": 100} for label, memo in texts.values()]
    ).ids
    yield dict(zip(texts, ids))
    for ident in ids:
        entries.delete(ident)


def found(ledger, text: str, **options) -> set[int]:
    return {
        r["id"]
        for r in ledger.store.records("entry")
        .query(search=text, filter=["grp", "eq", 100], limit=100, **options)
        .rows
    }


def test_full_text_search_by_word_prefixes(ledger, documents):
    d = documents
    assert found(ledger, "acme") == {d["acme"], d["widgets"]}
    assert found(ledger, "ACM") == {d["acme"], d["widgets"]}
    assert found(ledger, "corp") == {d["acme"]}
    assert found(ledger, "acme corp") == {d["acme"]}  # every word must match
    assert found(ledger, "widg acme") == {d["widgets"]}
    assert found(ledger, "cme") == set()  # prefixes, not infixes
    assert found(ledger, "customer") == {d["acme"]}  # the memo is searchable too
    assert found(ledger, "caps text") == {d["mixed"]}
    assert found(ledger, "nothing-like-this") == set()


def test_full_text_search_in_cyrillic(ledger, documents):
    d = documents
    assert found(ledger, "ёжик") == {d["hedgehog"]}
    assert found(ledger, "ЁЖИК") == {d["hedgehog"]}
    assert found(ledger, "тума") == {d["hedgehog"]}
    assert found(ledger, "моск") == {d["city"]}
    assert found(ledger, "сити") == {d["city"]}
    assert found(ledger, "мультф") == {d["hedgehog"]}
    assert found(ledger, "Офис 40") == {d["city"]}
    assert d["blackberry"] in found(ledger, "ежев")


def test_search_follows_updates_and_deletes(ledger, documents):
    entries = ledger.store.records("entry")
    ident = entries.create({"label": "Temporary Label", "grp": 100})["id"]
    assert found(ledger, "temporary") == {ident}
    entries.update(ident, {"label": "Permanent Title"})
    assert found(ledger, "temporary") == set()
    assert found(ledger, "permanent") == {ident}
    entries.delete(ident)
    assert found(ledger, "permanent") == set()


def test_search_with_filters_sorts_pages_and_counts(ledger):
    entries = ledger.store.records("entry")
    # "entry number 1..." is the memo of every generated row whose number starts with 1
    expected = {ident for i, ident in enumerate(ledger.entry_ids) if str(i).startswith("1")}
    ids, _ = walk(entries, limit=50, search="entry 1", sort="-grp")
    assert set(ids) == expected and len(ids) == len(expected)
    assert ids == expected_order_filtered(ledger, ids, [("grp", "desc")])
    assert entries.count(search="entry 1").value == len(expected)
    with_filter = set(walk(entries, limit=MAX_PAGE, search="number", filter=["grp", "eq", 3])[0])
    assert with_filter == set(walk(entries, limit=MAX_PAGE, filter=["grp", "eq", 3])[0])
    assert 0 < len(with_filter) < ROWS
    # text without words matches everything
    assert entries.count(search="!!! ...").value == entries.count().value


def test_search_needs_searchable_fields(ledger):
    with pytest.raises(FilterError, match="plain has no searchable fields"):
        ledger.store.records("plain").query(search="anything")


# ------------------------------------------------------------------------ counts
def test_counts_are_exact_up_to_the_cap(ledger):
    entries = ledger.entries
    total = entries.count().value
    assert total >= ROWS
    assert entries.count(cap=total).value == total and entries.count(cap=total).exact
    raw = ["grp", "eq", 4]
    exact = len(walk(entries, limit=MAX_PAGE, filter=raw)[0])
    count = entries.count(raw, cap=exact)
    assert (count.value, count.exact) == (exact, True)
    assert entries.count(["grp", "eq", 4], cap=10_000).value == exact
    assert entries.count(["label", "eq", "no such label"]).value == 0


@pytest.mark.parametrize(
    "raw",
    [
        None,
        ["grp", "is_not_empty"],
        {
            "all": [
                ["day", "ge", "2024-01-01"],
                ["at", "lt", "2030-01-01T00:00:00Z"],
                ["amount", "ne", "5"],
                ["kind", "in", ["a", "b", "c"]],
            ]
        },
        {"not": ["tags", "contains", ["x"]]},
        ["account.industry", "ne", "government"],
    ],
)
def test_counts_above_the_cap_are_estimates(ledger, raw):
    entries = ledger.entries
    count = entries.count(raw, cap=50)
    assert count.exact is False
    assert count.value > 50
    searched = entries.count(raw, search="entry", cap=50)
    assert searched.exact is False and searched.value > 50
