"""The records service, the one write path: coercion, defaults, formulas, rollups,
autonumbers, optimistic concurrency, unique fields, validation and stage rules, audit,
outbox, signals, bulk writes, relations and deletes.

One store per module (core pack plus the ``shop`` test pack below); each test makes the
records it needs and asserts only about those.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import threading
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, Database, fresh_database, write_pack

import xrm
from xrm.storage import signals
from xrm.storage import tables as T
from xrm.storage.records import BulkFailed, Conflict, NotFound, Records, ValidationFailed
from xrm.storage.store import Clock

UTC = dt.UTC

SHOP = {
    "entities/invoice.yaml": """
entity: invoice
title: code
search: [code, note]
fields:
  number:     {type: autonumber, pattern: "INV-{YYYY}-{####}"}
  code:       {type: text, max_length: 20, unique: true}
  customer:   {type: lookup, to: account, on_delete: restrict}
  contact:    {type: lookup, to: contact, on_delete: set_null}
  status:     {type: choice, options: [draft, sent, paid, cancelled], default: draft}
  kind:       {type: choice, options: [standard, credit], default: standard}
  priority:   {type: integer, default: 5}
  issued_on:  {type: date, default: today}
  handler:    {type: user, default: current_user}
  counter:    {type: integer}
  note:       {type: text}
  discount:   {type: percent}
  lines:      {type: children, entity: invoice_line, via: invoice}
  total:      {type: money, rollup: {children: lines, sum: amount}}
  line_count: {type: integer, rollup: {children: lines, count: true}}
  big_total:  {type: money, rollup: {children: lines, sum: amount, filter: [amount, ge, 100]}}
  top_line:   {type: money, rollup: {children: lines, max: amount}}
  average:    {type: money, formula: "total / line_count if line_count else 0"}
  large:      {type: boolean, formula: "average > 100 or (top_line or 0) > 250"}
  opened_at:  {type: datetime, formula: "created_at"}
validations:
  - when: {all: [[kind, eq, credit], [note, is_empty]]}
    message: {en: A credit note needs a reason., ru: Укажите причину кредит-ноты.}
    fields: [note]
  - when: [discount, gt, 50]
    message: {en: Discount too high., ru: Слишком большая скидка.}
stages:
  field: status
  steps:
    draft:     {next: [sent, cancelled]}
    sent:      {requires: [customer], next: [paid, cancelled]}
    paid:      {requires: [customer, code], next: []}
    cancelled: {}
""",
    "entities/invoice_line.yaml": """
entity: invoice_line
fields:
  invoice: {type: lookup, to: invoice, required: true, on_delete: cascade}
  product: {type: lookup, to: product, on_delete: set_null}
  amount:  {type: money, required: true}
  qty:     {type: integer, default: 1}
validations:
  - when: [qty, gt, 100]
    message: {en: At most 100 per line., ru: Не больше 100 на строку.}
""",
    "entities/product.yaml": """
entity: product
title: name
fields:
  name:       {type: text, required: true}
  sold_lines: {type: children, entity: invoice_line, via: product}
  times_sold: {type: integer, rollup: {children: sold_lines, count: true}}
""",
}


class MovableClock(Clock):
    """The real time unless a test sets ``at``."""

    at: dt.datetime | None = None

    def now(self) -> dt.datetime:
        return self.at or dt.datetime.now(UTC)


class Shop:
    def __init__(self, database: Database, store, clock: MovableClock):
        self.database = database
        self.store = store
        self.clock = clock
        self.ann = store.add_user("ann@example.com")
        self.bob = store.add_user("bob@example.com")

    def records(self, entity: str, user_id: int | None = None, **options) -> Records:
        if options:
            catalog = self.store.refresh()
            return Records(self.store, catalog, catalog.entity(entity), user_id, **options)
        return self.store.records(entity, user_id)

    def scalar(self, statement):
        with self.store.engine.connect() as conn:
            return conn.execute(statement).scalar()

    def count(self, table: sa.Table, *where) -> int:
        return self.scalar(sa.select(sa.func.count()).select_from(table).where(*where))

    def outbox(self, entity: str, record_id: int) -> list[dict]:
        o = T.outbox
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(o.c.event, o.c.changes, o.c.user_id)
                .where(o.c.entity == entity, o.c.record_id == record_id)
                .order_by(o.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def account(self, name: str = "Acme") -> int:
        return self.records("account").create({"name": name})["id"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("records")
    pack = write_pack(tmp, "shop", SHOP, depends={"core": ">=1.0"})
    clock = MovableClock()
    with fresh_database(tmp) as database:
        store = database.open(clock=clock, outbox="all")
        try:
            store.install([SOLUTIONS / "core", pack])
            yield Shop(database, store, clock)
        finally:
            store.close()


@pytest.fixture
def at(shop):
    """Move the store's clock for one test."""

    def move(when: dt.datetime):
        shop.clock.at = when

    yield move
    shop.clock.at = None


def unique_code() -> str:
    return "C-" + uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------ basic CRUD
def test_create_get_update_delete(shop):
    accounts = shop.records("account", shop.ann)
    created = accounts.create(
        {
            "name": " Acme ",
            "employees": "1 200",
            "annual_revenue": "1,234.5",  # read in ann's locale, English
            "tags": ["B", "a", "b"],
            "industry": "Retail",
        }
    )
    assert created["id"] > 0 and created["version"] == 1
    assert created["owner"] == shop.ann and created["created_by"] == shop.ann
    got = accounts.get(created["id"])
    assert got["name"] == "Acme"
    assert got["employees"] == 1200
    assert got["annual_revenue"] == Decimal("1234.50")
    assert got["tags"] == ["a", "b"]
    assert got["industry"] == "retail"  # a label is accepted and stored as the value
    assert got["account_type"] == "prospect"  # the default
    assert got["created_at"].tzinfo is not None

    updated = accounts.update(created["id"], {"employees": 5, "billing_city": "Москва"})
    assert updated["version"] == 2
    got = accounts.get(created["id"])
    assert (got["employees"], got["billing_city"], got["name"], got["version"]) == (
        5,
        "Москва",
        "Acme",
        2,
    )
    assert got["updated_at"] >= got["created_at"]

    selected = accounts.get(created["id"], fields=["name", "employees"])
    assert selected == {"id": created["id"], "version": 2, "name": "Acme", "employees": 5}

    accounts.delete(created["id"])
    with pytest.raises(NotFound):
        accounts.get(created["id"])
    with pytest.raises(NotFound):
        accounts.update(created["id"], {"name": "x"})
    with pytest.raises(NotFound):
        accounts.delete(created["id"])


def test_an_update_that_changes_nothing_writes_nothing(shop):
    accounts = shop.records("account", shop.ann)
    record = accounts.create({"name": "Same", "employees": 3})
    again = accounts.update(record["id"], {"name": "Same", "employees": "3"})
    assert again["version"] == 1
    assert accounts.get(record["id"])["version"] == 1
    assert [e["event"] for e in shop.outbox("account", record["id"])] == ["created"]
    assert [h["action"] for h in accounts.history(record["id"])] == ["create"]


def test_ids_are_not_reused_after_deleting_the_newest_record(shop):
    """A new record must not inherit a deleted record's id, and with it its history."""
    accounts = shop.records("account")
    old = accounts.create({"name": "Short-lived"})["id"]
    accounts.delete(old)
    new = accounts.create({"name": "Newcomer"})["id"]
    assert new != old
    assert [h["action"] for h in accounts.history(new)] == ["create"]


def test_bulk_created_ids_are_not_reused_either(shop):
    accounts = shop.records("account")
    old = accounts.create({"name": "Short-lived"})["id"]
    accounts.delete(old)
    (new,) = accounts.bulk_create([{"name": "Bulk newcomer"}]).ids
    assert new != old
    assert [h["action"] for h in accounts.history(new)] == ["create"]


# ------------------------------------------------------------------------ coercion
def test_coercion_errors_are_per_field_and_nothing_is_written(shop):
    invoices = shop.records("invoice", shop.ann)
    before = (shop.count(invoices.table), shop.count(T.audit), shop.count(T.outbox))
    with pytest.raises(ValidationFailed) as caught:
        invoices.create(
            {
                "priority": "high",
                "issued_on": "someday",
                "status": "lost",
                "code": "ok",
                "discount": "x",
            }
        )
    errors = caught.value.errors
    assert set(errors) == {"priority", "issued_on", "status", "discount"}
    assert errors["priority"] == ["expected a whole number"]
    assert errors["issued_on"] == ["expected a date (YYYY-MM-DD)"]
    assert "'lost' is not an option" in errors["status"][0]
    assert all(isinstance(m, str) for messages in errors.values() for m in messages)
    assert (shop.count(invoices.table), shop.count(T.audit), shop.count(T.outbox)) == before


def test_unknown_computed_and_system_fields_are_field_errors(shop):
    invoices = shop.records("invoice")
    with pytest.raises(ValidationFailed) as caught:
        invoices.create(
            {"prioirty": 1, "total": 5, "number": "X", "version": 3, "created_at": "2024-01-01"}
        )
    errors = caught.value.errors
    assert errors["prioirty"] == ["unknown field; did you mean 'priority'?"]
    assert errors["total"] == ["total is computed and cannot be set"]
    assert errors["number"] == ["number is computed and cannot be set"]
    assert errors["version"] == ["version is set by the platform"]
    assert errors["created_at"] == ["created_at is set by the platform"]


def test_a_failed_update_leaves_the_record_as_it_was(shop):
    invoices = shop.records("invoice")
    record = invoices.create({"priority": 2, "note": "keep"})
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(record["id"], {"priority": "many", "note": "changed"})
    assert set(caught.value.errors) == {"priority"}
    got = invoices.get(record["id"])
    assert (got["priority"], got["note"], got["version"]) == (2, "keep", 1)
    assert [e["event"] for e in shop.outbox("invoice", record["id"])] == ["created"]


# ------------------------------------------------------------------------ required, defaults
def test_required_fields(shop):
    accounts = shop.records("account")
    for values in ({}, {"name": None}, {"name": "   "}):
        with pytest.raises(ValidationFailed) as caught:
            accounts.create(values)
        assert caught.value.errors == {"name": ["required"]}
    record = accounts.create({"name": "Needed"})
    with pytest.raises(ValidationFailed) as caught:
        accounts.update(record["id"], {"name": ""})
    assert caught.value.errors == {"name": ["required"]}
    assert accounts.get(record["id"])["name"] == "Needed"
    lines = shop.records("invoice_line")
    with pytest.raises(ValidationFailed) as caught:
        lines.create({"qty": 2})
    assert caught.value.errors == {"invoice": ["required"], "amount": ["required"]}


def test_defaults_constant_current_user_and_today(shop, at):
    # 12:00 UTC on 10 March is already 11 March at UTC+14
    at(dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC))
    invoices = shop.records("invoice", shop.ann, tz="Pacific/Kiritimati")
    record = invoices.create({})
    assert record["status"] == "draft"
    assert record["kind"] == "standard"
    assert record["priority"] == 5
    assert record["handler"] == shop.ann
    assert record["owner"] == shop.ann
    assert record["issued_on"] == dt.date(2024, 3, 11)
    stored = invoices.get(record["id"])
    assert (stored["status"], stored["priority"], stored["handler"], stored["issued_on"]) == (
        "draft",
        5,
        shop.ann,
        dt.date(2024, 3, 11),
    )
    assert shop.records("invoice", shop.bob, tz="America/New_York").create({})[
        "issued_on"
    ] == dt.date(2024, 3, 10)
    # a given value wins, even an empty one
    explicit = invoices.create(
        {"priority": 1, "handler": shop.bob, "issued_on": "2024-01-02", "status": None}
    )
    assert (explicit["priority"], explicit["handler"], explicit["issued_on"]) == (
        1,
        shop.bob,
        dt.date(2024, 1, 2),
    )
    assert invoices.get(explicit["id"])["status"] is None
    assert invoices.create({"priority": None})["priority"] is None


# ------------------------------------------------------------------------ formulas
def test_formula_values_are_stored_and_kept_current(shop):
    contacts = shop.records("contact")
    record = contacts.create({"first_name": "Anna", "last_name": "Karenina"})
    assert record["full_name"] == "Anna Karenina"
    assert contacts.get(record["id"])["full_name"] == "Anna Karenina"
    contacts.update(record["id"], {"first_name": "Анна"})
    assert contacts.get(record["id"])["full_name"] == "Анна Karenina"
    contacts.update(record["id"], {"first_name": None})
    assert contacts.get(record["id"])["full_name"] == "Karenina"
    assert contacts.create({"last_name": "Solo"})["full_name"] == "Solo"
    # stored, so it filters and sorts in SQL
    ids = [r["id"] for r in contacts.query(["full_name", "eq", "Karenina"]).rows]
    assert ids == [record["id"]]
    with pytest.raises(ValidationFailed) as caught:
        contacts.update(record["id"], {"full_name": "Someone Else"})
    assert caught.value.errors == {"full_name": ["full_name is computed and cannot be set"]}


# ------------------------------------------------------------------------ rollups
def totals(shop, invoice_id: int) -> tuple:
    record = shop.records("invoice").get(invoice_id, fields=["total", "line_count", "big_total"])
    return record["total"], record["line_count"], record["big_total"]


def test_rollups_follow_children_created_updated_moved_and_deleted(shop):
    invoices, lines = shop.records("invoice"), shop.records("invoice_line")
    a, b = invoices.create({})["id"], invoices.create({})["id"]
    assert totals(shop, a) == (Decimal("0"), 0, Decimal("0"))  # no children: sums and counts are 0
    first = lines.create({"invoice": a, "amount": "50"})["id"]
    second = lines.create({"invoice": a, "amount": "150.25"})["id"]
    assert totals(shop, a) == (Decimal("200.25"), 2, Decimal("150.25"))
    lines.update(first, {"amount": 120})
    assert totals(shop, a) == (Decimal("270.25"), 2, Decimal("270.25"))
    lines.update(second, {"invoice": b})  # moved: both parents change
    assert totals(shop, a) == (Decimal("120.00"), 1, Decimal("120.00"))
    assert totals(shop, b) == (Decimal("150.25"), 1, Decimal("150.25"))
    lines.delete(first)
    assert totals(shop, a) == (Decimal("0"), 0, Decimal("0"))
    lines.bulk_create(
        [{"invoice": a, "amount": 1}, {"invoice": b, "amount": 2}, {"invoice": a, "amount": 300}]
    )
    assert totals(shop, a) == (Decimal("301.00"), 2, Decimal("300.00"))
    assert totals(shop, b) == (Decimal("152.25"), 2, Decimal("150.25"))


def test_formulas_over_rollups_follow_the_children(shop):
    """A formula that reads a rollup (or a formula over one) is computed again when a
    child moves the rollup, though the parent itself is not saved."""
    invoices, lines = shop.records("invoice"), shop.records("invoice_line")

    def figures(ident):
        record = invoices.get(ident, fields=["average", "large"])
        return record["average"], record["large"]

    a, b = invoices.create({})["id"], invoices.create({})["id"]
    assert figures(a) == (Decimal("0"), False)
    first = lines.create({"invoice": a, "amount": "50"})["id"]
    second = lines.create({"invoice": a, "amount": "250"})["id"]
    assert figures(a) == (Decimal("150.00"), True)
    lines.update(second, {"amount": 90})
    assert figures(a) == (Decimal("70.00"), False)
    lines.update(second, {"invoice": b})  # moved: both parents computed again
    assert figures(a) == (Decimal("50.00"), False)
    assert figures(b) == (Decimal("90.00"), False)
    lines.delete(first)
    assert figures(a) == (Decimal("0"), False)
    lines.bulk_create([{"invoice": a, "amount": 260}, {"invoice": b, "amount": 130}])
    assert figures(a) == (Decimal("260.00"), True)  # through the max rollup, then the formula
    assert figures(b) == (Decimal("110.00"), True)
    with pytest.raises(RuntimeError), shop.store.transaction():
        lines.create({"invoice": b, "amount": 1000})
        raise RuntimeError("roll back")
    assert figures(b) == (Decimal("110.00"), True)


def test_formulas_read_the_system_columns_from_the_first_save(shop):
    invoices = shop.records("invoice")
    made = invoices.create({})
    assert made["opened_at"] == made["created_at"]
    invoices.update(made["id"], {"note": "changed"})
    assert invoices.get(made["id"])["opened_at"] == made["created_at"]
    invoices.bulk_create([{"note": "in bulk"}])
    bulk = next(
        r
        for r in invoices.query(fields=["note", "opened_at", "created_at"]).rows
        if r["note"] == "in bulk"
    )
    assert bulk["opened_at"] == bulk["created_at"]


def test_rollups_change_in_the_childs_transaction(shop):
    invoices, lines = shop.records("invoice"), shop.records("invoice_line")
    parent, other = invoices.create({})["id"], invoices.create({})["id"]
    first = lines.create({"invoice": parent, "amount": 10})["id"]
    with pytest.raises(RuntimeError), shop.store.transaction():
        lines.create({"invoice": parent, "amount": 5})
        lines.update(first, {"invoice": other})
        raise RuntimeError("roll back")
    assert totals(shop, parent)[:2] == (Decimal("10.00"), 1)  # rolled back with the children
    assert totals(shop, other)[:2] == (Decimal("0"), 0)
    with shop.store.transaction():
        lines.create({"invoice": parent, "amount": 5})
        lines.update(first, {"invoice": other})
        lines.create({"invoice": other, "amount": "0.5"})
    assert totals(shop, parent)[:2] == (Decimal("5.00"), 1)  # committed with them
    assert totals(shop, other)[:2] == (Decimal("10.50"), 2)


def test_a_unit_of_work_reads_its_own_writes(shop):
    accounts = shop.records("account")
    with shop.store.transaction():
        record = accounts.create({"name": "Read your writes"})
        assert accounts.get(record["id"])["name"] == "Read your writes"


def test_cascaded_children_leave_no_stale_rollups(shop):
    product = shop.records("product").create({"name": "Widget"})["id"]
    invoice = shop.records("invoice").create({})["id"]
    shop.records("invoice_line").create({"invoice": invoice, "product": product, "amount": 5})
    assert shop.records("product").get(product)["times_sold"] == 1
    shop.records("invoice").delete(invoice)
    assert shop.records("product").get(product)["times_sold"] == 0


# ------------------------------------------------------------------------ autonumbers
def number_of(text: str) -> int:
    return int(text.rsplit("-", 1)[1])


def test_autonumbers_follow_the_pattern_and_restart_each_year(shop, at):
    invoices = shop.records("invoice")
    at(dt.datetime(2030, 12, 31, 23, 59, tzinfo=UTC))
    assert [invoices.create({})["number"] for _ in range(2)] == ["INV-2030-0001", "INV-2030-0002"]
    at(dt.datetime(2031, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert invoices.create({})["number"] == "INV-2031-0001"
    at(dt.datetime(2030, 6, 1, tzinfo=UTC))
    assert invoices.create({})["number"] == "INV-2030-0003"
    numbers = invoices.bulk_create([{}, {}]).ids
    assert [invoices.get(i)["number"] for i in numbers] == ["INV-2030-0004", "INV-2030-0005"]
    # a rolled-back create gives its number back: no gaps
    with pytest.raises(RuntimeError), shop.store.transaction():
        assert invoices.create({})["number"] == "INV-2030-0006"
        raise RuntimeError("roll back")
    with pytest.raises(ValidationFailed):
        invoices.create({"priority": "x"})
    assert invoices.create({})["number"] == "INV-2030-0006"
    with pytest.raises(ValidationFailed):
        invoices.update(numbers[0], {"number": "INV-2030-9999"})


def test_autonumbers_are_gap_free_and_unique_under_concurrent_threads(shop, at):
    at(dt.datetime(2032, 5, 5, tzinfo=UTC))
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int):
        try:
            invoices = shop.records("invoice")
            for attempt in range(6):
                if attempt % 3 == 2:  # some transactions roll back after taking a number
                    with contextlib.suppress(RuntimeError), shop.store.transaction():
                        invoices.create({})
                        raise RuntimeError("roll back")
                    continue
                number = invoices.create({"note": f"w{worker}"})["number"]
                with lock:
                    results.append(number)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 24
    assert sorted(number_of(n) for n in results) == list(range(1, 25))
    assert all(n.startswith("INV-2032-") for n in results)


def _create_invoices_in_a_process(url: str, options: dict, count: int, queue) -> None:
    store = xrm.open(url, **options)
    try:
        queue.put(
            [store.records("invoice").create({"note": "process"})["number"] for _ in range(count)]
        )
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(repr(exc))
    finally:
        store.close()


def test_autonumbers_are_gap_free_and_unique_across_processes(shop):
    """Separate processes, each with its own engine, share the counter row."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    year = dt.datetime.now(UTC).year
    first = number_of(shop.records("invoice").create({})["number"])
    workers = [
        context.Process(
            target=_create_invoices_in_a_process,
            args=(shop.database.url, shop.database.engine_options, 5, queue),
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(isinstance(r, list) for r in results), results
    numbers = [n for r in results for n in r]
    assert all(n.startswith(f"INV-{year}-") for n in numbers)
    assert sorted(number_of(n) for n in numbers) == list(range(first + 1, first + 16))


# ------------------------------------------------------------------------ concurrency
def test_a_stale_version_is_a_conflict_and_no_update_is_lost(shop):
    invoices = shop.records("invoice")
    record = invoices.create({"note": "v1"})
    seen_by_ann = invoices.get(record["id"])
    seen_by_bob = invoices.get(record["id"])
    invoices.update(record["id"], {"note": "ann's"}, version=seen_by_ann["version"])
    with pytest.raises(Conflict) as caught:
        invoices.update(record["id"], {"note": "bob's"}, version=seen_by_bob["version"])
    assert (caught.value.expected, caught.value.current) == (1, 2)
    assert "changed by someone else" in str(caught.value)
    got = invoices.get(record["id"])
    assert (got["note"], got["version"]) == ("ann's", 2)
    with pytest.raises(Conflict):
        invoices.delete(record["id"], version=1)
    assert invoices.get(record["id"])["note"] == "ann's"
    invoices.delete(record["id"], version=2)
    with pytest.raises(NotFound):
        invoices.get(record["id"])


def test_read_modify_write_with_versions_loses_no_increment(shop):
    invoices = shop.records("invoice")
    ident = invoices.create({"counter": 0})["id"]
    conflicts = []

    def work():
        for _ in range(10):
            while True:
                current = invoices.get(ident, fields=["counter"])
                try:
                    invoices.update(
                        ident, {"counter": current["counter"] + 1}, version=current["version"]
                    )
                    break
                except Conflict:
                    conflicts.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = invoices.get(ident)
    assert got["counter"] == 40
    assert got["version"] == 41


# ------------------------------------------------------------------------ unique fields
def test_unique_fields_on_create_and_update(shop):
    invoices = shop.records("invoice")
    code = unique_code()
    first = invoices.create({"code": code})
    with pytest.raises(ValidationFailed) as caught:
        invoices.create({"code": code})
    assert caught.value.errors == {"code": ["another invoice already has this value"]}
    other = invoices.create({"code": unique_code()})
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(other["id"], {"code": code})
    assert caught.value.errors == {"code": ["another invoice already has this value"]}
    invoices.update(first["id"], {"code": code, "note": "same code, same record"})
    # empty values are not duplicates of each other
    blanks = [invoices.create({"code": " "})["id"] for _ in range(2)]
    assert [invoices.get(i)["code"] for i in blanks] == [None, None]


def test_unique_fields_in_bulk(shop):
    invoices = shop.records("invoice")
    taken = invoices.create({"code": unique_code()})["code"]
    fresh = unique_code()
    rows = [{"code": fresh}, {"code": unique_code()}, {"code": fresh}, {"code": taken}, {}]
    before = shop.count(invoices.table)
    with pytest.raises(BulkFailed) as caught:
        invoices.bulk_create(rows)
    assert caught.value.failures == {
        2: {"code": ["duplicates row 0"]},
        3: {"code": ["another invoice already has this value"]},
    }
    assert shop.count(invoices.table) == before
    result = invoices.bulk_create(rows, partial=True)
    assert len(result.ids) == 3
    assert set(result.failures) == {2, 3}
    assert shop.count(invoices.table, invoices.table.c.code == fresh) == 1


# ------------------------------------------------------------------------ rules
def test_validation_rules_put_their_message_on_the_field(shop):
    invoices = shop.records("invoice")
    with pytest.raises(ValidationFailed) as caught:
        invoices.create({"kind": "credit"})
    assert caught.value.errors == {"note": ["A credit note needs a reason."]}
    with pytest.raises(ValidationFailed) as caught:
        shop.records("invoice", locale="ru").create({"kind": "credit"})
    assert caught.value.errors == {"note": ["Укажите причину кредит-ноты."]}
    with pytest.raises(ValidationFailed) as caught:
        invoices.create({"discount": 60})
    assert caught.value.errors == {"discount": ["Discount too high."]}
    record = invoices.create({"kind": "credit", "note": "returned goods", "discount": 50})
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(record["id"], {"note": None, "discount": "75"})
    assert caught.value.errors == {
        "note": ["A credit note needs a reason."],
        "discount": ["Discount too high."],
    }
    with pytest.raises(ValidationFailed) as caught:
        shop.records("invoice_line").create({"invoice": record["id"], "amount": 1, "qty": 101})
    assert caught.value.errors == {"qty": ["At most 100 per line."]}


def test_stage_rules(shop):
    invoices = shop.records("invoice")
    record = invoices.create({})
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(record["id"], {"status": "paid"})
    assert caught.value.errors["status"] == ["cannot move from Draft to Paid"]
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(record["id"], {"status": "sent"})
    assert caught.value.errors == {"customer": ["required for stage Sent"]}
    customer = shop.account("Stage customer")
    invoices.update(record["id"], {"status": "sent", "customer": customer})
    with pytest.raises(ValidationFailed) as caught:
        invoices.update(record["id"], {"status": "paid"})
    assert caught.value.errors == {"code": ["required for stage Paid"]}
    invoices.update(record["id"], {"status": "paid", "code": unique_code()})
    with pytest.raises(ValidationFailed) as caught:  # paid is final (next: [])
        invoices.update(record["id"], {"status": "cancelled"})
    assert caught.value.errors == {"status": ["cannot move from Paid to Cancelled"]}
    assert invoices.get(record["id"])["status"] == "paid"
    # a stage without `next` may move anywhere; a new record is checked against `requires`
    cancelled = invoices.create({"status": "cancelled"})
    invoices.update(cancelled["id"], {"status": "draft"})
    with pytest.raises(ValidationFailed) as caught:
        invoices.create({"status": "sent"})
    assert caught.value.errors == {"customer": ["required for stage Sent"]}


# ------------------------------------------------------------------------ audit
def test_history_has_a_row_per_changed_field(shop):
    invoices = shop.records("invoice", shop.ann)
    record = invoices.create({"note": "first", "priority": 2, "discount": "12.5"})
    invoices.update(
        record["id"],
        {"note": "second", "priority": 3, "discount": "12.50", "issued_on": "2024-02-03"},
    )
    shop.records("invoice", shop.bob).update(record["id"], {"note": None})
    history = invoices.history(record["id"])
    assert [h["action"] for h in history] == ["create", "update", "update", "update", "update"]
    assert history[0]["field"] is None
    assert {h["field"] for h in history[1:4]} == {
        "issued_on",
        "note",
        "priority",
    }  # not discount: 12.5 == 12.50
    created = history[0]
    assert created["new"]["note"] == "first" and created["new"]["priority"] == 2
    assert created["new"]["discount"] == "12.50"  # JSON-safe: decimals as text
    assert created["user_id"] == shop.ann
    changes = {h["field"]: (h["old"], h["new"], h["user_id"]) for h in history[1:4]}
    assert changes == {
        "note": ("first", "second", shop.ann),
        "priority": (2, 3, shop.ann),
        "issued_on": (record["issued_on"].isoformat(), "2024-02-03", shop.ann),
    }
    assert (history[4]["field"], history[4]["old"], history[4]["new"], history[4]["user_id"]) == (
        "note",
        "second",
        None,
        shop.bob,
    )
    assert all(h["at"].tzinfo is not None for h in history)
    invoices.delete(record["id"])
    with shop.store.engine.connect() as conn:
        last = conn.execute(
            sa.select(T.audit.c.action, T.audit.c.old)
            .where(T.audit.c.entity == "invoice", T.audit.c.record_id == record["id"])
            .order_by(T.audit.c.id.desc())
        ).first()
    assert last.action == "delete" and last.old["priority"] == 3


# ------------------------------------------------------------------------ outbox, signals
def test_outbox_rows_are_written_with_the_change(shop):
    invoices = shop.records("invoice", shop.ann)
    record = invoices.create({"priority": 5})
    invoices.update(record["id"], {"priority": 7, "note": "x"})
    invoices.delete(record["id"])
    events = shop.outbox("invoice", record["id"])
    assert [e["event"] for e in events] == ["created", "updated", "deleted"]
    assert events[1]["changes"] == {"priority": [5, 7], "note": [None, "x"]}
    assert all(e["user_id"] == shop.ann for e in events)
    with shop.store.engine.connect() as conn:
        pending = conn.execute(
            sa.select(T.outbox.c.processed_at).where(
                T.outbox.c.record_id == record["id"], T.outbox.c.entity == "invoice"
            )
        )
        assert all(p is None for (p,) in pending)


def test_a_rolled_back_transaction_leaves_no_record_audit_or_outbox_row(shop):
    invoices = shop.records("invoice")
    before = (shop.count(invoices.table), shop.count(T.audit), shop.count(T.outbox))
    with pytest.raises(RuntimeError), shop.store.transaction():
        created = invoices.create({"note": "doomed"})
        shop.records("invoice_line").create({"invoice": created["id"], "amount": 3})
        # nothing is visible outside the transaction yet
        assert (
            shop.count(
                T.outbox, T.outbox.c.record_id == created["id"], T.outbox.c.entity == "invoice"
            )
            == 0
        )
        raise RuntimeError("roll back")
    assert (shop.count(invoices.table), shop.count(T.audit), shop.count(T.outbox)) == before
    with shop.store.transaction():
        first = invoices.create({"note": "kept 1"})
        second = invoices.create({"note": "kept 2"})
    assert [e["event"] for e in shop.outbox("invoice", first["id"])] == ["created"]
    assert [e["event"] for e in shop.outbox("invoice", second["id"])] == ["created"]


@pytest.fixture
def received(shop):
    """The storage signals the module's store sends, as (signal, kwargs) pairs."""
    events: list[tuple[str, dict]] = []
    receivers = {}
    for name in ("record_created", "record_updated", "record_deleted"):

        def receiver(sender, _name=name, **kwargs):
            assert sender is shop.store
            # the change is committed when the receiver runs: another connection sees it
            if _name != "record_deleted":
                table = shop.store.records(kwargs["entity"]).table
                kwargs["visible"] = shop.count(table, table.c.id == kwargs["record_id"]) == 1
            events.append((_name, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver, sender=shop.store)
    yield events
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver, sender=shop.store)


def test_signals_fire_only_after_commit(shop, received):
    invoices = shop.records("invoice", shop.ann)
    with shop.store.transaction():
        record = invoices.create({"note": "signal"})
        invoices.update(record["id"], {"note": "changed"})
        assert received == []
    assert [name for name, _ in received] == ["record_created", "record_updated"]
    created, updated = (kwargs for _, kwargs in received)
    assert (
        created["entity"] == "invoice"
        and created["record_id"] == record["id"]
        and created["user_id"] == shop.ann
    )
    assert created["visible"] and updated["visible"]
    assert updated["changes"] == {"note": ["signal", "changed"]}
    received.clear()
    with pytest.raises(RuntimeError), shop.store.transaction():
        invoices.create({"note": "never"})
        invoices.delete(record["id"])
        raise RuntimeError("roll back")
    assert received == []
    invoices.delete(record["id"])
    assert [(name, kwargs["record_id"]) for name, kwargs in received] == [
        ("record_deleted", record["id"])
    ]


def test_a_failed_write_sends_no_signal(shop, received):
    with pytest.raises(ValidationFailed):
        shop.records("invoice").create({"priority": "x"})
    with pytest.raises(BulkFailed):
        shop.records("invoice").bulk_create([{}, {"priority": "x"}])
    assert received == []


# ------------------------------------------------------------------------ bulk
def test_bulk_create_is_all_or_nothing(shop):
    lines = shop.records("invoice_line")
    invoice = shop.records("invoice").create({})["id"]
    rows = [
        {"invoice": invoice, "amount": 1},
        {"invoice": invoice},
        {"invoice": invoice, "amount": 2},
        {"invoice": invoice, "amount": "lots", "qty": 500},
        {"invoice": invoice, "amount": 4, "qty": 101},
    ]
    before = (shop.count(lines.table), shop.count(T.audit), shop.count(T.outbox))
    with pytest.raises(BulkFailed) as caught:
        lines.bulk_create(rows)
    assert caught.value.failures == {
        1: {"amount": ["required"]},
        3: {"amount": ["expected a number"]},
        4: {"qty": ["At most 100 per line."]},
    }
    assert "3 row(s) invalid, nothing written" in str(caught.value)
    assert (shop.count(lines.table), shop.count(T.audit), shop.count(T.outbox)) == before
    assert totals(shop, invoice) == (Decimal("0"), 0, Decimal("0"))


def test_bulk_create_partial_writes_the_good_rows_and_reports_the_bad(shop):
    lines = shop.records("invoice_line")
    invoice = shop.records("invoice").create({})["id"]
    rows = [
        {"invoice": invoice, "amount": 1},
        {"invoice": invoice},
        {"invoice": invoice, "amount": 2},
        {"amount": 5},
    ]
    result = lines.bulk_create(rows, partial=True)
    assert len(result.ids) == 2
    assert result.failures == {1: {"amount": ["required"]}, 3: {"invoice": ["required"]}}
    stored = [lines.get(i) for i in result.ids]
    assert [r["amount"] for r in stored] == [Decimal("1.00"), Decimal("2.00")]
    assert totals(shop, invoice)[:2] == (Decimal("3.00"), 2)
    for ident in result.ids:
        assert shop.outbox("invoice_line", ident)[-1]["event"] == "created"
        assert lines.history(ident)[-1]["action"] == "create"


def test_bulk_create_of_many_rows_in_batches(shop):
    accounts = shop.records("account")
    result = accounts.bulk_create(
        [{"name": f"Batch {i}", "employees": i} for i in range(1203)], batch_size=500
    )
    assert len(result.ids) == len(set(result.ids)) == 1203
    assert accounts.count(["name", "starts_with", "Batch "]).value == 1203
    assert accounts.get(result.ids[1000])["employees"] == 1000


@pytest.mark.parametrize("count", [1, 5, 21, 341, 999])
def test_bulk_rows_are_written_whole_whatever_the_batch_length(shop, count):
    """SQLite takes a batch as multi-row INSERTs of a few fixed sizes (256, 64, 16, 4, 1):
    every length comes out whole, in order, each row its own values, audited, and found
    by the full-text search its trigger keeps."""
    invoices = shop.records("invoice")
    tag = uuid.uuid4().hex[:8]
    rows = [
        {"code": f"{tag}-{i}", "note": f"zebra{tag} row {i}", "priority": i} for i in range(count)
    ]
    result = invoices.bulk_create(rows, batch_size=2000)
    assert len(result.ids) == count and result.ids == sorted(result.ids)
    found = invoices.query(
        ["code", "starts_with", f"{tag}-"], fields=["code", "priority"], limit=1000
    )
    assert sorted((r["code"], r["priority"]) for r in found.rows) == sorted(
        (f"{tag}-{i}", i) for i in range(count)
    )
    assert invoices.get(result.ids[-1])["code"] == f"{tag}-{count - 1}"
    assert invoices.count(search=f"zebra{tag}").value == count
    assert invoices.history(result.ids[0])[-1]["action"] == "create"


# ------------------------------------------------------------------------ relations
def test_many_to_many_links(shop):
    contacts, meetings = shop.records("contact"), shop.records("meeting")
    a, b, c = (contacts.create({"last_name": name})["id"] for name in ("Ant", "Bee", "Cat"))
    when = "2024-05-01T10:00:00Z"
    meeting = meetings.create({"subject": "Kick-off", "starts_at": when, "attendees": [b, a, a]})
    assert meeting["attendees"] == [a, b]
    assert meetings.get(meeting["id"])["attendees"] == [a, b]
    other = meetings.create({"subject": "Review", "starts_at": when, "attendees": [c]})
    empty = meetings.create({"subject": "Alone", "starts_at": when})
    assert meetings.get(empty["id"])["attendees"] == []
    mine = {meeting["id"], other["id"], empty["id"]}

    def ids(raw):
        return {r["id"] for r in meetings.query(raw, limit=1000).rows} & mine

    assert ids(["attendees", "contains", [a]]) == {meeting["id"]}
    assert ids(["attendees", "contains", [a, c]]) == {meeting["id"], other["id"]}
    assert ids(["attendees", "is_empty"]) == {empty["id"]}
    assert ids(["attendees", "is_not_empty"]) == {meeting["id"], other["id"]}
    meetings.update(meeting["id"], {"attendees": [c]})
    assert meetings.get(meeting["id"])["attendees"] == [c]
    assert ids(["attendees", "contains", [a]]) == set()
    with pytest.raises(ValidationFailed) as caught:
        meetings.update(meeting["id"], {"attendees": [c, 987654]})
    assert caught.value.errors == {"attendees": ["a linked record does not exist"]}
    assert meetings.get(meeting["id"])["attendees"] == [c]
    with pytest.raises(ValidationFailed) as caught:
        meetings.create({"subject": "Bad", "starts_at": when, "attendees": ["x"]})
    assert caught.value.errors == {"attendees": ["expected a record id"]}
    contacts.delete(c)  # its links go with it
    assert meetings.get(meeting["id"])["attendees"] == []
    assert meetings.get(other["id"])["attendees"] == []


def test_any_lookup_points_at_a_record_of_any_entity(shop):
    tasks = shop.records("task")
    account = shop.account("Regarded")
    contact = shop.records("contact").create({"last_name": "Regarded"})["id"]
    on_account = tasks.create(
        {"subject": "Call", "regarding": {"entity": "account", "id": account}}
    )
    on_contact = tasks.create({"subject": "Mail", "regarding": f"contact:{contact}"})
    loose = tasks.create({"subject": "Think"})
    assert tasks.get(on_account["id"])["regarding"] == {"entity": "account", "id": account}
    assert tasks.get(on_contact["id"])["regarding"] == {"entity": "contact", "id": contact}
    assert tasks.get(loose["id"])["regarding"] is None
    mine = {on_account["id"], on_contact["id"], loose["id"]}

    def ids(raw):
        return {r["id"] for r in tasks.query(raw, limit=1000).rows} & mine

    assert ids(["regarding", "eq", {"entity": "account", "id": account}]) == {on_account["id"]}
    assert ids(["regarding", "eq", f"contact:{contact}"]) == {on_contact["id"]}
    assert ids(["regarding", "ne", {"entity": "account", "id": account}]) == {
        on_contact["id"],
        loose["id"],
    }
    assert ids(["regarding", "is_empty"]) == {loose["id"]}
    rows = tasks.query(["id", "in", sorted(mine)], fields=["subject", "regarding"]).rows
    assert {r["subject"]: r["regarding"] for r in rows}["Mail"] == {
        "entity": "contact",
        "id": contact,
    }
    tasks.update(loose["id"], {"regarding": {"entity": "contact", "id": contact}})
    assert ids(["regarding", "eq", f"contact:{contact}"]) == {on_contact["id"], loose["id"]}
    with pytest.raises(ValidationFailed) as caught:
        tasks.create({"subject": "Bad", "regarding": {"id": 3}})
    assert caught.value.errors == {"regarding": ['expected {"entity": name, "id": number}']}


def test_any_lookup_must_point_at_an_existing_record(shop):
    tasks = shop.records("task")
    for regarding in ({"entity": "spaceship", "id": 1}, {"entity": "account", "id": 987654}):
        with pytest.raises(ValidationFailed) as caught:
            tasks.create({"subject": "Dangling", "regarding": regarding})
        assert set(caught.value.errors) == {"regarding"}


def test_a_lookup_to_a_missing_record_is_a_field_error(shop):
    invoices = shop.records("invoice")
    before = shop.count(invoices.table)
    with pytest.raises(ValidationFailed) as caught:
        invoices.create({"customer": 987654})
    assert list(caught.value.errors) == ["customer"]
    assert "does not exist" in caught.value.errors["customer"][0]
    assert shop.count(invoices.table) == before


def test_on_delete_restrict_cascade_and_set_null(shop):
    accounts, contacts = shop.records("account"), shop.records("contact")
    invoices, lines = shop.records("invoice"), shop.records("invoice_line")
    customer = shop.account("Restricted")
    person = contacts.create({"last_name": "Nulled"})["id"]
    invoice = invoices.create({"customer": customer, "contact": person})["id"]
    line_ids = lines.bulk_create(
        [{"invoice": invoice, "amount": 1}, {"invoice": invoice, "amount": 2}]
    ).ids

    # restrict: the account stays while an invoice points at it
    with pytest.raises(ValidationFailed) as caught:
        accounts.delete(customer)
    assert caught.value.errors == {"__all__": ["this account is still referenced by other records"]}
    assert accounts.get(customer)["name"] == "Restricted"
    assert [e["event"] for e in shop.outbox("account", customer)] == ["created"]

    # set_null: deleting the contact empties the invoice's lookup
    contacts.delete(person)
    assert invoices.get(invoice)["contact"] is None

    # cascade: deleting the invoice deletes its lines
    invoices.delete(invoice)
    assert shop.count(lines.table, lines.table.c.id.in_(line_ids)) == 0
    for ident in line_ids:
        with pytest.raises(NotFound):
            lines.get(ident)
    accounts.delete(customer)  # nothing refers to it any more
    with pytest.raises(NotFound):
        accounts.get(customer)
