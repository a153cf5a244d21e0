"""The import's bulk path writes what creating the same rows one by one through the records
service writes: stored records (duplicate keys included), audit entries, outbox rows, the
search index, and which rows are skipped as duplicates or rejected (SQLite and PostgreSQL).
Also the engines' JSON text, which audit and outbox rows are stored as, is json.dumps'."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import random

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, fresh_database

from xrm.data.imports import Importer
from xrm.data.sources import open_source
from xrm.metadata.duplicates import normalize_email
from xrm.storage import tables as T
from xrm.storage.database import json_text
from xrm.storage.records import ValidationFailed
from xrm.storage.tables import tables_for

HEADERS = ["First name", "Last name", "Email", "Phone", "Mobile", "Job title", "Birthday"]
HEADERS += ["Do not call", "Account"]
FIELDS = ["first_name", "last_name", "email", "phone", "mobile", "job_title", "birthday"]
FIELDS += ["do_not_call", "account"]
ACCOUNTS = ["Acme", "Globex", "Initech", "ООО Ромашка"]
#: More rows than one multi-row INSERT takes on SQLite (1,000 contacts), fewer than a chunk.
ROWS = 1100


def cells(rnd: random.Random, i: int, clean: list[int]) -> list[str]:
    """One row: mostly good, some blank cells, awkward or wrong values, repeated emails (of
    earlier rows without a wrong value: a row repeating a row the import rejects is skipped
    by the importer, as the rejected row's is a duplicate of the file it checks first)."""
    odd = []

    def pick(good: list[str], bad: list[str], share: float = 0.03) -> str:
        if rnd.random() < share:
            odd.append(True)
            return rnd.choice(bad)
        return rnd.choice(good)

    first = rnd.choice(["Ann", "Bob", "Анна", "Пётр", "José", " Zoë ", ""])
    last = pick(["Smith", "Иванов", "O'Brien", "Lee"], ["", "x" * 101])
    email = pick([f"person{i}@example.com", f"p.{i}+tag@gmail.com", ""], [f"not an email {i}"])
    phone = pick(
        [
            f"+7 916 {rnd.randrange(10**7):07d}",
            f"+1 (212) 555-{rnd.randrange(10**4):04d}",
            f"+44 20 {rnd.randrange(10**8):08d}",
            f"+39 06 {rnd.randrange(10**8):08d}",  # Italy keeps its leading 0
            f"+7 8 916 {rnd.randrange(10**7):07d}",  # a national prefix after the code
            f"(212) 555-{rnd.randrange(10**4):04d}",
            "",
        ],
        ["+1 23", "+999 123"],
    )
    mobile = pick(["", "", f"+7 (916) {rnd.randrange(10**7):07d}"], ["8 (916) 123-45-67"])
    job = pick(["Engineer", "Инженер", ""], ["y" * 121])
    day = dt.date(1960, 1, 1) + dt.timedelta(days=rnd.randrange(15000))
    birthday = pick([day.isoformat(), ""], ["31/02"])
    flag = pick(["", "yes", "no"], ["maybe"])
    account = pick([*ACCOUNTS, ""], ["Nobody Inc"])
    if clean and rnd.random() < 0.05:
        email = f"Person{rnd.choice(clean)}@Example.com"  # an earlier row's, other case
    elif rnd.random() < 0.02:
        email = "old1@example.com"  # the contact both stores hold already
    elif not odd and email:
        clean.append(i)
    return [first, last, email, phone, mobile, job, birthday, flag, account]


def write_rows(path) -> list[list[str]]:
    rnd = random.Random(1616)
    clean: list[int] = []
    rows = [cells(rnd, i, clean) for i in range(ROWS)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return rows


def prepared_store(database):
    store = database.open()
    store.install([SOLUTIONS / "core"])
    accounts = store.records("account")
    ids = {name: accounts.create({"name": name})["id"] for name in ACCOUNTS}
    store.records("contact").create({"last_name": "Old", "email": "old1@example.com"})
    return store, ids


def one_by_one(store, account_ids: dict, rows: list[list[str]]):
    """Each row created by itself, skipped when a stored contact has its email's key (the
    importer's same_email rule: an earlier row of the file is stored by then)."""
    records = store.records("contact")
    table = tables_for(store.catalog)["contact"]
    rule = next(r for r in records.entity.duplicates if r.name == "same_email")
    skipped, rejected = [], {}
    for number, row in enumerate(rows, start=2):  # the header is line 1
        values = {}
        for name, text in zip(FIELDS, row):
            if not text.strip():
                continue
            if name == "account":
                if text.strip() not in account_ids:
                    rejected[number] = [f"no account with name {text.strip()!r}"]
                    break
                values[name] = account_ids[text.strip()]
            else:
                values[name] = text
        if number in rejected:
            continue
        if values.get("email"):
            key = normalize_email(values["email"].strip())
            with store.engine.connect() as conn:
                found = conn.execute(
                    sa.select(table.c.id).where(table.c[rule.column] == key).limit(1)
                ).first()
            if found is not None:
                skipped.append(number)
                continue
        try:
            records.create(values)
        except ValidationFailed as exc:
            rejected[number] = sorted(m for messages in exc.errors.values() for m in messages)
    return skipped, rejected


def stored(store) -> dict:
    """What the import wrote, with ids as positions and the moments left out."""
    table = tables_for(store.catalog)["contact"]
    moments = {"created_at", "updated_at"}
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]
        position = {row["id"]: index for index, row in enumerate(rows)}
        audit = [
            (position[r.record_id], r.action, r.field, r.old, r.new, r.user_id)
            for r in conn.execute(
                sa.select(T.audit).where(T.audit.c.entity == "contact").order_by(T.audit.c.id)
            )
        ]
        outbox = [
            (position[r.record_id], r.event, r.changes, r.user_id)
            for r in conn.execute(
                sa.select(T.outbox).where(T.outbox.c.entity == "contact").order_by(T.outbox.c.id)
            )
        ]
        if conn.dialect.name == "sqlite":  # the FTS5 index holds exactly the table's rows
            conn.execute(
                sa.text("INSERT INTO contact__fts(contact__fts) VALUES ('integrity-check')")
            )
    contacts = store.records("contact")
    searches = {}
    for term in ["Анна", "smith", "person1", "gmail", "916", "Пётр Иванов", "zoe"]:
        page = contacts.query(search=term, fields=["id"], sort=[["id", "asc"]], limit=500)
        searches[term] = [position[r["id"]] for r in page.rows]
    records = [{k: v for k, v in row.items() if k not in moments and k != "id"} for row in rows]
    return {"records": records, "audit": audit, "outbox": outbox, "searches": searches}


def test_bulk_import_writes_what_one_by_one_creates_write(tmp_path):
    source = tmp_path / "contacts.csv"
    rows = write_rows(source)
    (tmp_path / "bulk").mkdir()
    (tmp_path / "single").mkdir()
    with (
        fresh_database(tmp_path / "bulk") as bulk_db,
        fresh_database(tmp_path / "single") as single_db,
    ):
        bulk, bulk_accounts = prepared_store(bulk_db)
        single, single_accounts = prepared_store(single_db)
        try:
            assert bulk_accounts == single_accounts
            result = Importer(
                bulk, "contact", open_source(source), dedupe=["same_email"], partial=True
            ).run()
            skipped, rejected = one_by_one(single, single_accounts, rows)

            assert result.created == ROWS - len(skipped) - len(rejected)
            assert result.created > 600 and len(skipped) > 20 and len(rejected) > 100
            assert sorted(d.row for d in result.duplicates) == skipped
            messages: dict[int, list[str]] = {}
            for reject in result.rejects:
                messages.setdefault(reject.row, []).append(reject.message)
            assert {n: sorted(m) for n, m in messages.items()} == rejected

            ours, theirs = stored(bulk), stored(single)
            assert len(ours["records"]) == result.created + 1  # and the stored one
            for index, (a, b) in enumerate(zip(ours["records"], theirs["records"])):
                assert a == b, index
            assert ours == theirs
            assert any(r["phone"] and r["phone"].startswith("+3906") for r in ours["records"])
        finally:
            bulk.close()
            single.close()


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        -0.0,
        1.5,
        10**30,
        float("nan"),
        "",
        'Анна "x"\n\t\u2028',
        [1, "a", None, True, False],
        {"a": {"b": [1, 2.25, "é"]}, "c": None, "d": []},
        {1: "int key", False: 2, None: 3, 2.5: 4},
        {"_values": {"do_not_email": False, "email_consent": True}},
    ],
)
def test_json_text_is_json_dumps(value):
    assert json_text(value) == json.dumps(value)


@pytest.mark.parametrize("value", [dt.date(2020, 1, 1), decimal.Decimal("1.2"), {"a": {1}}])
def test_json_text_refuses_what_json_dumps_refuses(value):
    with pytest.raises(TypeError) as ours:
        json_text(value)
    with pytest.raises(TypeError) as theirs:
        json.dumps(value)
    assert str(ours.value) == str(theirs.value)
