"""A unit of work writing behind (xrm/storage/unit.py ``write_behind``): new rows go to the
database on a writer thread while the caller goes on, every read in the unit still sees
every write, a refused write surfaces and keeps nothing, and an import whose rows the
database refuses behind its back runs again writing as it goes, with the same report."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa
import test_import
from test_import import contacts, write

from xrm.data.imports import ImportCancelled, Importer
from xrm.data.sources import open_source
from xrm.storage import tables as T
from xrm.storage.unit import DeferredWriteFailed

crm = test_import.crm  # the fixture: core, a clerk role, two accounts


def people(count: int, start: int = 0) -> list[dict]:
    return [{"last_name": f"P{i}", "email": f"p{i}@example.com"} for i in range(start, count)]


def audit_count(store) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(T.audit.c.entity == "contact")
        return conn.execute(query).scalar_one()


def refuse_a_repeated_email(store) -> None:
    """A unique index the records service does not know of: only the database refuses."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE UNIQUE INDEX test_contact_email_once ON contact (email)"))


def test_reads_in_the_unit_see_every_row_sent_behind(crm):
    store = crm[0]
    service = store.records("contact")
    with store.transaction() as unit, unit.write_behind():
        first = service.bulk_create(people(1500), partial=True, batch_size=500)
        assert unit.writing_behind
        # a read in the same unit waits for the writer: all 1,500 rows are there
        assert service.count().value == 1500
        second = service.bulk_create(people(1600, 1500), partial=True)
    assert not unit.writing_behind
    assert len(first.ids) == 1500 and len(second.ids) == 100
    assert [r["last_name"] for r in contacts(store)][:3] == ["P0", "P1", "P2"]
    assert service.count().value == 1600
    assert audit_count(store) == 1600


def test_a_write_refused_behind_surfaces_and_the_transaction_keeps_nothing(crm):
    store = crm[0]
    refuse_a_repeated_email(store)
    service = store.records("contact")
    rows = people(10) + [{"last_name": "Again", "email": "p3@example.com"}]
    with (
        pytest.raises(DeferredWriteFailed) as raised,
        store.transaction() as unit,
        unit.write_behind(),
    ):
        service.bulk_create(rows, partial=True)  # accepted: the refusal comes later
    assert isinstance(raised.value.__cause__, sa.exc.IntegrityError)
    assert contacts(store) == [] and audit_count(store) == 0
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_an_import_refused_behind_runs_again_and_reports_as_one_that_never_wrote_behind(
    crm, tmp_path
):
    store = crm[0]
    refuse_a_repeated_email(store)
    path = write(
        tmp_path,
        "Last name,Email\n"
        + "".join(f"P{i},p{i}@example.com\n" for i in range(30))
        + "Again,p3@example.com\n",
    )

    def run(behind: bool):
        importer = Importer(store, "contact", open_source(path), chunk_size=8)
        importer.write_behind = behind
        return importer.run()

    behind, direct = run(True), run(False)  # the first did not raise: it ran again
    for result in (behind, direct):
        assert not result.committed and result.created == 30
        # the records service does not know the index: the database's own words, for the row
        assert [(r.row, r.column) for r in result.rejects] == [(32, "")]
        assert result.rejects[0].message.startswith("rejected by the database")
    assert behind.rejects == direct.rejects
    assert contacts(store) == [] and audit_count(store) == 0


def test_an_import_cancelled_while_rows_are_behind_leaves_nothing(crm, tmp_path):
    store = crm[0]
    lines = "".join(f"P{i},p{i}@example.com\n" for i in range(40))
    path = write(tmp_path, "Last name,Email\n" + lines)
    seen = []

    def stop_after_two_chunks(progress):
        seen.append(progress.rows)
        if len(seen) == 2:
            raise ImportCancelled

    importer = Importer(store, "contact", open_source(path), chunk_size=10)
    with pytest.raises(ImportCancelled):
        importer.run(progress=stop_after_two_chunks)
    assert seen == [10, 20]
    assert contacts(store) == [] and audit_count(store) == 0
    assert sys.getswitchinterval() == pytest.approx(0.005)
    # and the same file then imports whole
    assert Importer(store, "contact", open_source(path)).run().created == 40
    assert audit_count(store) == 40
