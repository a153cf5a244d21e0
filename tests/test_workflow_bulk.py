"""The timer hot path's shortcuts keep their promises: a batch's rows go through COPY (or
executemany) with every moment where it belongs, staging tables survive a rolled-back
transaction and a second use in one transaction, and messages formatted from remembered
dates read exactly as freshly formatted ones, for each reader's language and zone."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS
from workflow_pack import START, MovableClock

from xrm.metadata.formats import Formats
from xrm.storage.database import WRITE
from xrm.workflow import Worker, ensure_tables
from xrm.workflow import tables as W
from xrm.workflow.bulk import insert_new, update_by_id
from xrm.workflow.context import RememberingFormats, formats_for
from xrm.workflow.effects import new_instance

MOSCOW = ZoneInfo("Europe/Moscow")
NEW_YORK = ZoneInfo("America/New_York")


def instance_rows(store, keys) -> dict[str, dict]:
    i = W.instances
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(i).where(i.c.key.in_(keys))).mappings()
        return {row["key"]: dict(row) for row in rows}


def test_moments_of_any_zone_land_as_the_same_instant(store):
    ensure_tables(store)
    now = dt.datetime(2026, 3, 5, 9, 30, 15, 250000, tzinfo=dt.UTC)
    moscow = dt.datetime(2026, 3, 5, 12, 0, tzinfo=MOSCOW)  # 09:00 UTC
    new_york = dt.datetime(2026, 7, 1, 8, 0, tzinfo=NEW_YORK)  # 12:00 UTC (summer time)
    rows = [
        new_instance("p", None, None, now, key="utc", due_at=now),
        new_instance("p", None, None, now, key="moscow", due_at=moscow),
        new_instance("p", None, None, now, key="new-york", due_at=new_york),
    ]
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        insert_new(conn, W.instances, rows, ["key"])
        ids = dict(conn.execute(sa.select(W.instances.c.key, W.instances.c.id)).all())
        # the same staging table again in the same transaction: emptied first, so the
        # update sees only its own rows
        later = dt.datetime(2026, 3, 6, 18, 45, tzinfo=NEW_YORK)
        update_by_id(
            conn,
            W.instances,
            [
                {"id": ids["moscow"], "due_at": later, "status": "done", "finished_at": now},
                {"id": ids["utc"], "due_at": now, "status": "waiting", "finished_at": None},
            ],
        )
    found = instance_rows(store, ["utc", "moscow", "new-york"])
    assert found["utc"]["due_at"] == now and found["utc"]["status"] == "waiting"
    assert found["utc"]["created_at"] == now and found["utc"]["finished_at"] is None
    assert found["moscow"]["due_at"] == later == dt.datetime(2026, 3, 6, 23, 45, tzinfo=dt.UTC)
    assert found["moscow"]["status"] == "done" and found["moscow"]["finished_at"] == now
    assert found["new-york"]["due_at"] == dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    assert found["new-york"]["status"] == "waiting"
    # an independent read of the column as stored: naive UTC
    with store.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT due_at FROM xrm_wf_instance WHERE key = 'new-york'")
        ).scalar_one()
    if isinstance(stored, str):  # SQLite hands back its text
        stored = dt.datetime.fromisoformat(stored)
    assert stored == dt.datetime(2026, 7, 1, 12, 0)


def test_a_staging_table_made_in_a_rolled_back_transaction_is_made_again(store):
    ensure_tables(store)
    now = dt.datetime(2026, 3, 5, 9, 0, tzinfo=dt.UTC)
    with store.engine.connect().execution_options(**WRITE) as conn:
        with conn.begin() as transaction:
            insert_new(conn, W.instances, [new_instance("p", None, None, now, key="a")], ["key"])
            transaction.rollback()  # takes the staging table made in it along
        with conn.begin():
            insert_new(conn, W.instances, [new_instance("p", None, None, now, key="b")], ["key"])
    assert set(instance_rows(store, ["a", "b"])) == {"b"}


VALUES = [
    dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 5, 10, 0, tzinfo=MOSCOW),  # another instant with the same digits
    dt.datetime(2026, 12, 5, 10, 0),  # naive: read as UTC
    dt.date(2026, 3, 20),
    "2026-03-20T10:00:00Z",
    "2026-03-20",
    None,
    "not a date",
    1,
    True,  # equal to 1 as a key, but not as text
]


@pytest.mark.parametrize(
    "locale, zone", [("en", "UTC"), ("ru", "Europe/Moscow"), ("en", "America/New_York")]
)
def test_remembered_formats_read_as_fresh_ones(locale, zone):
    fresh = Formats(locale, zone, "EUR")
    remembering = RememberingFormats(locale, zone, "EUR")
    for _ in range(2):  # the second round comes from memory
        for value in VALUES:
            assert remembering.datetime(value) == fresh.datetime(value)
            assert remembering.date(value) == fresh.date(value)
            assert remembering.time(value) == fresh.time(value)
            assert remembering.datetime(value, "d.M.y HH:mm") == fresh.datetime(
                value, "d.M.y HH:mm"
            )
    assert remembering.datetime(VALUES[0]) != remembering.datetime(VALUES[1])


def test_remembered_formats_stay_bounded(monkeypatch):
    monkeypatch.setattr(RememberingFormats, "LIMIT", 5)
    fresh, remembering = Formats("en", "UTC"), RememberingFormats("en", "UTC")
    for minute in range(40):
        moment = START + dt.timedelta(minutes=minute)
        assert remembering.datetime(moment) == fresh.datetime(moment)
        assert len(remembering._memo) <= 5


def test_formats_are_kept_per_reader():
    first = formats_for("ru", "Europe/Moscow", "RUB", "https://crm.example.com")
    assert formats_for("ru", "Europe/Moscow", "RUB", "https://crm.example.com") is first
    other = formats_for("ru", "Europe/Moscow", "EUR", "https://crm.example.com")
    assert other is not first and other.currency == "EUR"


def test_reminders_in_one_batch_each_say_their_own_time_in_their_readers_zone(database):
    clock = MovableClock()
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core"])
    ann = store.add_user("ann@example.com", "Ann", roles=["user"], time_zone="America/New_York")
    boris = store.add_user(
        "boris@example.com", "Boris", roles=["user"], locale="ru", time_zone="Europe/Moscow"
    )
    dues = {}
    for owner in (ann, boris):
        tasks = store.records("task", owner)
        for n in range(6):
            # three share their due time, three have their own
            due = START + dt.timedelta(hours=1, minutes=10 * (n % 4))
            made = tasks.create({"subject": f"Call {owner}-{n}", "due": due, "reminder": "15m"})
            dues[made["id"]] = (owner, due)
    worker = Worker(store, batch_size=100)
    worker.run_once()  # scheduled
    clock.set(START + dt.timedelta(hours=2))
    assert worker.run_once()["ran"] == 12
    n = W.notifications
    with store.engine.connect() as conn:
        notes = conn.execute(sa.select(n.c.user_id, n.c.record_id, n.c.body)).all()
    assert len(notes) == 12
    readers = {
        ann: Formats("en", "America/New_York", None),
        boris: Formats("ru", "Europe/Moscow", None),
    }
    for user_id, record_id, body in notes:
        owner, due = dues[record_id]
        assert user_id == owner
        expected = readers[owner].datetime(due)
        assert expected in body, (expected, body)
        # and no other reminder's time
        others = {readers[owner].datetime(d) for o, d in dues.values() if o == owner} - {expected}
        assert not any(re.search(re.escape(text), body) for text in others)
    store.close()
