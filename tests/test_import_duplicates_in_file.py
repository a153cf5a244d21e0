"""Import with a duplicate rule or a key when a row repeats an earlier row of the same file
(xrm/data/imports.py): only a row that was (or in a dry run would be) written counts, so a
row repeating a rejected row is judged on its own, in every mode, all or nothing and
partial, within a chunk and across chunks; a true repeat is still skipped."""

from __future__ import annotations

import csv
import io

import test_import
from test_import import contacts, run, stopped_halfway, write

from xrm.data.imports import Importer, write_rejects
from xrm.data.sources import open_source

crm = test_import.crm  # the fixture: core, a clerk role, two accounts


def rejects_file(tmp_path, result) -> list[list[str]]:
    out = tmp_path / "rejects.csv"
    write_rejects(out, result.rejects)
    return list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))


def duplicates(result) -> list[tuple]:
    return [(d.row, d.of_row, d.record_id, d.action) for d in result.duplicates]


# Row 2 has no last name (required): the records service rejects it.  Rows 3 and 4 have
# the same address, written differently.
REJECTED_FIRST = (
    "Last name,Email\n,ann@example.com\nRoss,Ann@Example.com\nKay,ANN+news@example.com\n"
)


def test_a_row_repeating_a_rejected_row_of_its_chunk_is_created_partial(crm, tmp_path):
    store = crm[0]
    result = run(store, write(tmp_path, REJECTED_FIRST), partial=True, dedupe=["same_email"])
    assert (result.created, result.skipped, result.rejected_rows) == (1, 1, 1)
    ross = next(r for r in contacts(store) if r["last_name"] == "Ross")
    assert [r["last_name"] for r in contacts(store)] == ["Ross"]
    # the true repeat (row 4) is the duplicate of the row that was written, with its id
    assert duplicates(result) == [(4, 3, ross["id"], "skipped")]
    assert rejects_file(tmp_path, result) == [
        ["row", "column", "value", "message"],
        ["2", "Last name", "", "required"],
    ]


def test_all_or_nothing_reports_only_the_bad_row_and_writes_nothing(crm, tmp_path):
    store = crm[0]
    result = run(store, write(tmp_path, REJECTED_FIRST), dedupe=["same_email"])
    assert result.committed is False
    assert contacts(store) == []
    assert [(r.row, r.column, r.message) for r in result.rejects] == [(2, "Last name", "required")]
    assert (result.created, result.skipped) == (1, 1)  # counted, then rolled back
    assert [(d.row, d.of_row) for d in result.duplicates] == [(4, 3)]


def test_a_dry_run_says_the_repeating_row_would_be_created(crm, tmp_path):
    store = crm[0]
    importer = Importer(
        store,
        "contact",
        open_source(write(tmp_path, REJECTED_FIRST)),
        partial=True,
        dedupe=["same_email"],
    )
    result = importer.run(dry_run=True)
    assert result.dry_run is True and contacts(store) == []
    assert (result.created, result.skipped, result.rejected_rows) == (1, 1, 1)
    assert [r.row for r in result.rejects] == [2]
    assert [(d.row, d.of_row) for d in result.duplicates] == [(4, 3)]


def test_a_row_repeating_a_rejected_row_of_the_chunk_before_is_created(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path,
        "Last name,Email\nFirst,first@example.com\n,ann@example.com\nRoss,ann@example.com\n",
    )
    # chunks of two: the rejected row ends the first chunk, its repeat starts the second
    result = run(store, path, partial=True, dedupe=["same_email"], chunk_size=2)
    assert (result.created, result.skipped, result.rejected_rows) == (2, 0, 1)
    assert [r["last_name"] for r in contacts(store)] == ["First", "Ross"]
    assert result.duplicates == [] and [r.row for r in result.rejects] == [3]


def test_a_true_repeat_is_skipped_as_the_first_rows_duplicate_within_and_across_chunks(
    crm, tmp_path
):
    store = crm[0]
    path = write(
        tmp_path,
        "Last name,Email\nRoss,ann@example.com\nRoss again,ANN@example.com\n"
        "Ross thrice,ann+x@example.com\n",
    )
    result = run(store, path, partial=True, dedupe=["same_email"], chunk_size=2)
    assert (result.created, result.skipped, result.rejected_rows) == (1, 2, 0)
    ross = contacts(store)[0]
    assert [r["last_name"] for r in contacts(store)] == ["Ross"]
    # row 3 repeats a row of its chunk, row 4 a row of the chunk before (written by then):
    # both are the file's row 2, with the record it made
    assert duplicates(result) == [
        (3, 2, ross["id"], "skipped"),
        (4, 2, ross["id"], "skipped"),
    ]


def test_several_rejected_rows_before_the_first_good_one(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path,
        "Last name,Email,Birthday\n"
        ",ann@example.com,\n"
        "Bad date,ann@example.com,31.31.2000\n"
        "Ross,ann@example.com,\n"
        "Kay,ann@example.com,\n"
        "Lee,lee@example.com,\n",
    )
    result = run(store, path, partial=True, dedupe=["same_email"])
    assert (result.created, result.skipped) == (2, 1)
    assert sorted({r.row for r in result.rejects}) == [2, 3]
    names = {r["last_name"]: r["id"] for r in contacts(store)}
    assert sorted(names) == ["Lee", "Ross"]
    assert duplicates(result) == [(5, 4, names["Ross"], "skipped")]


def test_upsert_a_row_repeating_a_rejected_row_creates_and_the_next_updates(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path,
        "Last name,Email,Job title\n,ann@example.com,Nobody\n"
        "Ross,ann@example.com,Buyer\nRoss,ann@example.com,CEO\n",
    )
    result = run(store, path, partial=True, mode="upsert", dedupe=["same_email"])
    assert (result.created, result.updated, result.rejected_rows) == (1, 1, 1)
    assert [r.row for r in result.rejects] == [2]
    (ross,) = contacts(store)
    assert store.records("contact").get(ross["id"])["job_title"] == "CEO"
    assert duplicates(result) == [(4, 3, ross["id"], "updated")]


def test_upsert_by_key_a_row_repeating_a_rejected_row_is_created(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, "Last name,Email\n,ann@example.com\nRoss,ann@example.com\n")
    result = run(store, path, partial=True, mode="upsert", key="email")
    assert (result.created, result.updated, result.rejected_rows) == (1, 0, 1)
    assert [r.row for r in result.rejects] == [2]
    assert [r["last_name"] for r in contacts(store)] == ["Ross"]


def test_update_a_row_repeating_an_unmatched_row_is_told_it_matches_nothing(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, "Last name,Email\nZed,zed@example.com\nZed,zed@example.com\n")
    result = run(store, path, partial=True, mode="update", dedupe=["same_email"])
    assert [(r.row, r.message) for r in result.rejects] == [
        (2, "no contact matches this row"),
        (3, "no contact matches this row"),
    ]
    assert contacts(store) == []


def test_a_resumed_import_creates_the_repeat_of_a_row_rejected_before_it_stopped(crm, tmp_path):
    store = crm[0]
    # rows 2-11 are the two chunks committed before the stop; row 11 has no last name
    lines = "".join(f"Person {i},p{i}@example.com\n" for i in range(9))
    path = write(
        tmp_path,
        "Last name,Email\n" + lines + ",zed@example.com\n"
        "Zed,zed@example.com\nZed again,ZED@example.com\nLast,last@example.com\n",
    )
    importer = stopped_halfway(store, path, dedupe=["same_email"])
    assert importer.resume_point() == 11 and len(contacts(store)) == 9
    again = Importer(
        store, "contact", open_source(path), partial=True, chunk_size=5, dedupe=["same_email"]
    )
    result = again.run(resume=True)
    assert (result.created, result.skipped, result.rejected_rows) == (2, 1, 0)
    zed = next(r for r in contacts(store) if r["last_name"] == "Zed")
    assert duplicates(result) == [(13, 12, zed["id"], "skipped")]
    assert len(contacts(store)) == 11


def test_with_two_rules_the_repeat_of_a_rejected_row_comes_first_by_the_other_rule(crm, tmp_path):
    store = crm[0]
    # row 3 repeats rejected row 2 by email; row 4 repeats row 3 by phone: once row 3 is
    # judged on its own it is created, and row 4 is its duplicate (not the other way round)
    path = write(
        tmp_path,
        "Last name,Email,Phone\n"
        ",ann@example.com,+1 202 555 0100\n"
        "Ross,ann@example.com,+1 202 555 0199\n"
        "Kay,kay@example.com,+1 (202) 555-0199\n",
    )
    result = run(store, path, partial=True, dedupe=["same_email", "same_phone"])
    assert [r.row for r in result.rejects] == [2]
    (ross,) = contacts(store)
    assert (ross["last_name"], result.created, result.skipped) == ("Ross", 1, 1)
    assert duplicates(result) == [(4, 3, ross["id"], "skipped")]
    assert [d.rules for d in result.duplicates] == [["same_phone"]]
    # upsert, the same shape with other people: row 4 writes into the record row 3 made
    upsert = write(
        tmp_path,
        path.read_text()
        .replace("ann@", "bo@")
        .replace("kay@", "lu@")
        .replace("555 0199", "555 0177")
        .replace("555-0199", "555-0177")
        .replace("Ross", "Bo")
        .replace("Kay", "Lu")
        .replace("0100", "0111"),
        "u.csv",
    )
    result = run(store, upsert, partial=True, mode="upsert", dedupe=["same_email", "same_phone"])
    assert [r.row for r in result.rejects] == [2]
    assert (result.created, result.updated) == (1, 1)
    assert [r["last_name"] for r in contacts(store)] == ["Ross", "Lu"]


def accounts(store) -> list[str]:
    page = store.records("account").query(fields=["name"], sort=[["id", "asc"]], limit=100)
    return [r["name"] for r in page.rows]


def test_a_fuzzy_rule_finds_an_earlier_row_by_similarity_not_by_its_block(crm, tmp_path):
    store = crm[0]  # Acme and Globex are stored
    path = write(
        tmp_path,
        "Name\nAcorn Industries\nAcme Inc\nAcorn Industres\nAcorp\nGlobex LLC\n",
        name="accounts.csv",
    )
    for chunk_size in (100, 2):  # within a chunk and across chunks
        result = Importer(
            store,
            "account",
            open_source(path),
            dedupe=["similar_name"],
            chunk_size=chunk_size,
            partial=True,
        ).run(dry_run=True)
        # "Acorp" begins like "Acorn Industries" (one block) but is another company
        assert (result.created, result.skipped) == (2, 3), chunk_size
        found = [(d.row, d.of_row, d.title or None) for d in result.duplicates]
        assert found == [(3, None, "Acme"), (4, 2, None), (6, None, "Globex")]
    result = Importer(store, "account", open_source(path), dedupe=["similar_name"]).run()
    assert accounts(store) == ["Acme", "Globex", "Acorn Industries", "Acorp"]
    assert (
        result.duplicates[1].record_id
        == store.records("account")
        .query(filter=["name", "eq", "Acorn Industries"], fields=["id"])
        .rows[0]["id"]
    )


def test_a_fuzzy_repeat_of_a_rejected_row_is_judged_on_its_own(crm, tmp_path):
    store = crm[0]
    # row 2's name is too long for the field: rejected; row 3 is like it, and is created
    path = write(tmp_path, f"Name\nZephyr {'x' * 300}\nZephyr {'x' * 40}\n", name="accounts.csv")
    result = Importer(
        store, "account", open_source(path), dedupe=["similar_name"], partial=True
    ).run()
    assert (result.created, result.skipped, result.rejected_rows) == (1, 0, 1)
    assert result.duplicates == []
