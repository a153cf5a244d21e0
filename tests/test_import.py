"""Import of CSV and XLSX files (xrm/data): reading files (encodings, delimiters, broken
rows), matching columns, lookups, locale parsing, the records service's validation,
modes, duplicates, all or nothing and partial with resume, permissions, the command
line and the browser's Import page (through the test client)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest
from conftest import write_pack

from xrm.cli import main
from xrm.data.imports import ImportCancelled, Importer, ImportRefused, write_rejects
from xrm.data.sources import SourceError, open_source

ROLES_PACK = {
    "roles/clerk.yaml": """\
roles:
  clerk:
    label: Clerk
    permissions:
      "*": {create: all, read: all, update: own}
    fields:
      contact: {job_title: read_only, notes: hidden}
""",
}


@pytest.fixture
def crm(store, tmp_path):
    """Core with a clerk role (job title read-only, notes hidden), a clerk and accounts."""
    store.install([write_pack(tmp_path / "packs", "clerks", ROLES_PACK, depends={"core": ">=1"})])
    clerk = store.add_user("clerk@example.com", "Cleo Clerk", roles=["clerk"])
    accounts = store.records("account")
    acme = accounts.create({"name": "Acme"})
    globex = accounts.create({"name": "Globex"})
    return store, clerk, acme, globex


def write(tmp_path, text: str, name: str = "in.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def contacts(store) -> list[dict]:
    page = store.records("contact").query(
        fields=["first_name", "last_name", "email", "account", "birthday", "do_not_call"],
        sort=[["id", "asc"]],
        limit=1000,
    )
    return page.rows


def run(store, path, **options):
    return Importer(store, "contact", open_source(path), **options).run()


def numbered_people(prefix: str, count: int = 25) -> str:
    """A CSV of ``count`` contacts, ``{prefix}{i}``, each with an email of their own."""
    lines = "".join(f"{prefix}{i},{prefix.lower()}{i}@example.com\n" for i in range(count))
    return "Last name,Email\n" + lines


def stopped_halfway(store, path, **options) -> Importer:
    """A partial import of ``path`` into contacts, in chunks of five, stopped once two
    chunks (ten rows) are committed; the importer, to ask where it stopped. Also the
    browser's import test's (tests/browser/test_import.py)."""

    def stop_after_two_chunks(progress):
        if progress.rows >= 10:
            raise ImportCancelled

    importer = Importer(store, "contact", open_source(path), partial=True, chunk_size=5, **options)
    with pytest.raises(ImportCancelled):
        importer.run(progress=stop_after_two_chunks)
    return importer


# ------------------------------------------------------------------------------ files
def test_encodings_and_delimiters_are_found_out(tmp_path):
    header = "Имя;Фамилия;Эл. почта\nАнна;Петрова;anna@example.com\n"
    cp1251 = open_source(write(tmp_path, header, "a.csv", "cp1251"))
    assert (cp1251.encoding, cp1251.delimiter) == ("cp1251", ";")
    assert cp1251.headers == ["Имя", "Фамилия", "Эл. почта"]
    bom = open_source(write(tmp_path, "\ufeffFirst name\tLast name\nAnn\tRoss\n", "b.csv"))
    assert (bom.encoding, bom.delimiter, bom.headers) == (
        "utf-8-sig",
        "\t",
        ["First name", "Last name"],
    )
    latin = open_source(write(tmp_path, "Last name,City\nMüller,Köln\n", "c.csv", "latin-1"))
    assert latin.encoding in ("cp1252", "latin-1", "iso8859-1")
    assert list(latin.rows()) == [(2, ["Müller", "Köln"])]


def test_file_problems_have_precise_messages(tmp_path):
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        open_source(write(tmp_path, "a,b\n1,2\n"), encoding="klingon")
    with pytest.raises(SourceError, match=r"\.xls\) cannot be read"):
        open_source(write(tmp_path, "a", "old.xls"))
    with pytest.raises(SourceError, match="the file is empty"):
        open_source(write(tmp_path, "  \n", "empty.csv"))
    with pytest.raises(SourceError, match="line 1: columns 1 and 2 are both headed 'name'"):
        open_source(write(tmp_path, "Name,name\n", "twice.csv"))
    broken = open_source(write(tmp_path, 'Last name,Notes\nRoss,fine\nLow,"never closed\nKay,x\n'))
    with pytest.raises(SourceError, match=r"^line 3: broken row"):
        list(broken.rows())
    # a UTF-8 file with one stray byte far past the sample that found its encoding
    tail = "Last name\n" + "Ross\n" * 80_000
    path = tmp_path / "stray.csv"
    path.write_bytes(tail.encode() + b"Mu\xfcller\n")
    with pytest.raises(SourceError, match=r"^line 80002: the file is not valid utf-8"):
        list(open_source(path).rows())


def test_a_broken_row_fails_the_import_and_writes_nothing(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, 'Last name,Email\nRoss,a@example.com\nLow,"b@example.com\n')
    with pytest.raises(SourceError, match="line 3"):
        run(store, path)
    assert contacts(store) == []


# ------------------------------------------------------------------------------ matching
def test_columns_match_fields_by_name_or_label_in_any_language(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path, "Фамилия,first_name,E-MAIL,Do not call*,Shoe size\nRoss,Ann,a@x.com,yes,42\n"
    )
    importer = Importer(store, "contact", open_source(path))
    assert [(c.header, c.field) for c in importer.columns] == [
        ("Фамилия", "last_name"),
        ("first_name", "first_name"),
        ("E-MAIL", "email"),
        ("Do not call*", "do_not_call"),
        ("Shoe size", None),
    ]
    assert importer.columns[4].note == "no field of this name or label"
    assert importer.problems == []


def test_a_wrong_mapping_is_caught_before_anything_is_written(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, "Surname,Full name,Mail,Email\nRoss,Ann Ross,a@x.com,b@x.com\n")
    importer = Importer(
        store,
        "contact",
        open_source(path),
        mapping={"Surname": "last_nme", "Full name": "full_name", "Mail": "email", "Nope": "x"},
        dedupe=["same_emial"],
    )
    problems = "\n".join(importer.problems)
    assert "contact has no field 'last_nme'; did you mean 'last_name'?" in problems
    assert "full_name is computed and cannot be imported" in problems
    assert "columns 'Mail' and 'Email' both fill email" in problems
    assert "--map 'Nope': no such column in the file" in problems
    assert "no such duplicate rule; did you mean 'same_email'?" in problems
    assert "required field last_name (Last name) has no column in the file" in problems
    with pytest.raises(ImportRefused):
        importer.run()
    assert contacts(store) == []


# ------------------------------------------------------------------------------ values
def test_values_are_parsed_in_the_importers_locale_and_lookups_found_by_title(crm, tmp_path):
    store, _clerk, acme, globex = crm
    path = write(
        tmp_path,
        "Имя;Фамилия;Контрагент;День рождения;Не звонить\n"
        "Анна;Петрова;Acme;02.01.1990;да\n"
        f"Иван;Сидоров;#{globex['id']};;нет\n",
    )
    result = run(store, path, locale="ru")
    assert (result.created, result.rejects, result.committed) == (2, [], True)
    rows = contacts(store)
    assert [(r["last_name"], r["account"], r["birthday"], r["do_not_call"]) for r in rows] == [
        ("Петрова", acme["id"], dt.date(1990, 1, 2), True),
        ("Сидоров", globex["id"], None, False),
    ]


def test_a_lookup_column_may_name_the_field_that_finds_the_record(crm, tmp_path):
    store, _clerk, acme, _globex = crm
    store.records("account").create({"name": "Acme"})  # a second Acme: the title is ambiguous
    path = write(tmp_path, "Last name,Account\nRoss,Acme\n")
    result = run(store, path, partial=True)
    assert result.rejects[0].message.startswith("2 account records have name 'Acme'")
    by_id = write(tmp_path, f"Last name,Account\nRoss,{acme['id']}\nLow,999999\n", "ids.csv")
    result = run(store, by_id, mapping={"Account": "account.id"}, partial=True)
    assert result.created == 1
    assert [(r.row, r.column, r.value, r.message) for r in result.rejects] == [
        (3, "Account", "999999", "no account with id '999999'")
    ]


def test_all_or_nothing_writes_nothing_and_reports_every_bad_row(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path,
        "Last name,Email,Birthday,Account\n"
        "Ross,ross@example.com,1990-01-02,Acme\n"
        ",nobody@example.com,,\n"
        "Low,not an email,31.31.2000,Umbrella\n",
    )
    result = run(store, path)
    assert result.committed is False and result.created == 2 - 1  # counted, then rolled back
    assert contacts(store) == []
    assert [(r.row, r.column, r.value) for r in result.rejects] == [
        (3, "Last name", ""),
        (4, "Account", "Umbrella"),
    ]
    assert result.rejects[0].message == "required"
    assert result.rejects[1].message == "no account with name 'Umbrella'"
    # once the lookup is right, the records service finds the other two problems
    fixed = write(tmp_path, "Last name,Email,Birthday\nLow,not an email,31.31.2000\n", "f.csv")
    result = run(store, fixed)
    assert {r.column for r in result.rejects} == {"Email", "Birthday"}
    assert any(r.message.startswith("not a valid email address") for r in result.rejects)


def test_partial_keeps_the_good_rows_and_writes_a_rejects_file(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, "Last name,Email\nRoss,ross@example.com\n,x@example.com\nLow,\n")
    result = run(store, path, partial=True)
    assert (result.created, result.rejected_rows, result.committed) == (2, 1, True)
    assert [r["last_name"] for r in contacts(store)] == ["Ross", "Low"]
    out = tmp_path / "rejects.csv"
    write_rejects(out, result.rejects)
    lines = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert lines == [["row", "column", "value", "message"], ["3", "Last name", "", "required"]]


# ------------------------------------------------------------------------------ duplicates
def test_dedupe_skips_rows_whose_duplicate_exists_or_came_earlier(crm, tmp_path):
    store = crm[0]
    old = store.records("contact").create({"last_name": "Old", "email": "ann@example.com"})
    path = write(
        tmp_path,
        "Last name,Email\n"
        "Ross,ANN+news@example.com\n"  # the same address as Old's, normalized
        "Kay,kay@example.com\n"
        "Kay again,Kay@Example.com\n",
    )
    result = run(store, path, dedupe=["same_email"])
    assert (result.created, result.skipped) == (1, 2)
    first, second = result.duplicates
    assert (first.row, first.record_id, first.title, first.rules, first.action) == (
        2,
        old["id"],
        "Old",
        ["same_email"],
        "skipped",
    )
    kay = next(r for r in contacts(store) if r["last_name"] == "Kay")
    assert (second.row, second.of_row, second.record_id) == (4, 3, kay["id"])
    assert len(contacts(store)) == 2


def test_dedupe_in_update_mode_writes_the_row_into_its_duplicate(crm, tmp_path):
    store = crm[0]
    old = store.records("contact").create({"last_name": "Old", "email": "ann@example.com"})
    path = write(
        tmp_path, "Last name,Email,Job title\nOld,ann@example.com,Buyer\nNew,new@example.com,CEO\n"
    )
    result = run(store, path, mode="upsert", dedupe=["same_email"])
    assert (result.created, result.updated) == (1, 1)
    assert store.records("contact").get(old["id"])["job_title"] == "Buyer"


# ------------------------------------------------------------------------------ modes
def test_update_and_upsert_match_by_a_key(crm, tmp_path):
    store = crm[0]
    service = store.records("contact")
    ann = service.create({"last_name": "Ross", "email": "ann@example.com", "job_title": "Clerk"})
    path = write(
        tmp_path, "Email,Job title,Last name\nann@example.com,Manager,\nbob@example.com,CEO,Bell\n"
    )
    result = run(store, path, mode="update", key="email", partial=True)
    assert (result.updated, result.created) == (1, 0)
    assert [(r.row, r.column, r.message) for r in result.rejects] == [
        (3, "Email", "no contact matches this row")
    ]
    record = service.get(ann["id"])
    assert (record["job_title"], record["last_name"]) == ("Manager", "Ross")  # empty: unchanged
    result = run(store, path, mode="upsert", key="email")
    assert (result.updated, result.created, result.committed) == (1, 1, True)
    by_id = write(tmp_path, f"ID,Job title\n{ann['id']},Director\n", "ids.csv")
    assert run(store, by_id, mode="update").updated == 1
    assert service.get(ann["id"])["job_title"] == "Director"
    with pytest.raises(ImportRefused, match="--mode update needs a way to find each record"):
        run(store, write(tmp_path, "Job title\nx\n", "k.csv"), mode="update")


def test_a_repeated_key_in_upsert_updates_the_record_the_file_created(crm, tmp_path):
    store = crm[0]
    path = write(
        tmp_path, "Email,Last name,Job title\nz@example.com,Zed,One\nz@example.com,Zed,Two\n"
    )
    result = run(store, path, mode="upsert", key="email")
    assert (result.created, result.updated) == (1, 1)
    (row,) = store.records("contact").query(fields=["job_title"]).rows
    assert row["job_title"] == "Two"


# ------------------------------------------------------------------------------ XLSX
def test_xlsx_with_typed_cells(crm, tmp_path):
    from openpyxl import Workbook

    store = crm[0]
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "People"
    sheet.append([])
    sheet.append(["Last name", "Birthday", "Phone", "Do not call"])
    sheet.append(["Ross", dt.datetime(1990, 1, 2), "+79161234567", True])
    sheet.append([None, None, None, None])
    sheet.append(["Low", "1991-03-04", None, False])
    path = tmp_path / "people.xlsx"
    workbook.save(path)
    source = open_source(path)
    assert (source.kind, source.sheet, source.header_row) == ("xlsx", "People", 2)
    result = Importer(store, "contact", source).run()
    assert (result.created, result.rejects) == (2, [])
    rows = (
        store.records("contact")
        .query(fields=["birthday", "phone", "do_not_call"], sort=[["id", "asc"]])
        .rows
    )
    assert [(r["birthday"], r["phone"], r["do_not_call"]) for r in rows] == [
        (dt.date(1990, 1, 2), "+79161234567", True),
        (dt.date(1991, 3, 4), None, False),
    ]
    with pytest.raises(SourceError, match="no sheet 'Other' in the workbook"):
        open_source(path, sheet="Other")


# ------------------------------------------------------------------------------ resume
def test_a_partial_import_stopped_halfway_resumes_where_it_stopped(crm, tmp_path):
    store = crm[0]
    lines = "".join(f"Person {i},p{i}@example.com\n" for i in range(25))
    path = write(tmp_path, "Last name,Email\n" + lines)
    importer = stopped_halfway(store, path)
    assert len(contacts(store)) == 10  # two chunks committed whole
    assert importer.resume_point() == 11  # the row of the file they end on
    again = Importer(store, "contact", open_source(path), partial=True, chunk_size=5)
    with pytest.raises(ImportRefused, match="stopped after row 11: continue it with --resume"):
        again.run()
    result = again.run(resume=True)
    assert (result.resumed_after, result.created) == (11, 15)
    assert sorted(r["last_name"] for r in contacts(store)) == sorted(
        f"Person {i}" for i in range(25)
    )
    assert again.resume_point() is None


def test_all_or_nothing_cancelled_halfway_leaves_nothing(crm, tmp_path):
    store = crm[0]
    path = write(tmp_path, "Last name\n" + "".join(f"P{i}\n" for i in range(30)))

    def cancel(progress):
        if progress.rows >= 20:
            raise ImportCancelled

    with pytest.raises(ImportCancelled):
        Importer(store, "contact", open_source(path), chunk_size=10).run(progress=cancel)
    assert contacts(store) == []


# ------------------------------------------------------------------------------ permissions
def test_a_user_imports_only_into_fields_they_may_write(crm, tmp_path):
    store, clerk, _acme, _globex = crm
    principal = store.principal(clerk)
    path = write(tmp_path, "Last name,Job title,Notes\nRoss,Buyer,secret\n")
    importer = Importer(store, "contact", open_source(path), principal=principal)
    assert [(c.field, c.note) for c in importer.columns] == [
        ("last_name", None),
        (None, "you may not write job_title"),
        (None, "you may not write notes"),
    ]
    result = importer.run()
    assert result.created == 1
    (row,) = store.records("contact").query(fields=["job_title", "notes", "owner"]).rows
    assert (row["job_title"], row["notes"], row["owner"]) == (None, None, clerk)
    explicit = Importer(
        store, "contact", open_source(path), principal=principal, mapping={"Job title": "job_title"}
    )
    assert "column 'Job title': you may not write job_title" in explicit.problems


def test_a_reader_cannot_import(store, tmp_path):
    reader = store.add_user("reader@example.com", "Rita", roles=["read_only"])
    path = write(tmp_path, "Last name\nRoss\n")
    importer = Importer(store, "contact", open_source(path), principal=store.principal(reader))
    result = importer.run()
    assert result.created == 0 and result.committed is False
    assert "you may not create contact records" in result.rejects[0].message


# ------------------------------------------------------------------------------ command
def test_the_import_command(crm, tmp_path, capsys, database):
    if database.dialect == "postgresql":
        pytest.skip(
            "the command opens its own store on the URL; the fixture's schema is a search path"
        )
    store = crm[0]
    path = write(
        tmp_path,
        "Фамилия;Эл. почта;Контрагент\nРосс;ross@example.com;Acme\nЛоу;bad;Acme\n",
        "ru.csv",
        "cp1251",
    )
    rejects = tmp_path / "rejected.csv"
    args = ["import", "contact", str(path), "--database", database.url]
    assert main([*args, "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert "dry run, nothing written" in out and "row 3, Эл. почта 'bad': not a valid email" in err
    assert "CSV, encoding cp1251, delimiter ';'" in err
    assert main([*args, "--partial", "--rejects", str(rejects), "--json"]) == 1
    out, _ = capsys.readouterr()
    assert json.loads(out)["created"] == 1
    assert rejects.read_text(encoding="utf-8-sig").splitlines()[1].startswith("3,Эл. почта,bad,")
    assert main([*args, "--encoding", "klingon"]) == 1
    assert "unknown encoding 'klingon'" in capsys.readouterr().err
    assert main([*args, "--map", "Фамилия=last_nme"]) == 1
    assert "did you mean 'last_name'?" in capsys.readouterr().err
    assert main(["import", "contcat", str(path), "--database", database.url]) == 2
    assert "unknown entity 'contcat'; did you mean 'contact'?" in capsys.readouterr().err
    assert len(contacts(store)) == 1


# ------------------------------------------------------------------------------ browser page
@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from browser.support import world

    with world(tmp_path_factory.mktemp("imports")) as built:
        yield built


@pytest.fixture(scope="module")
def web_app(web):
    from browser.support import make_app

    return make_app(web.store)


def _upload(client, data: bytes, name: str = "people.csv"):
    response = client.post(
        "/e/contact/import",
        {"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    return response.headers["Location"]


def test_the_import_page_maps_previews_and_runs(web, web_app):
    from browser.support import SELLER, Client

    seller = Client(web_app).login(SELLER)
    listing = seller.get("/e/contact", follow_redirects=True).get_data(as_text=True)
    assert 'data-testid="import-records"' in listing
    page = seller.get("/e/contact/import").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page
    csv_bytes = (
        "Surname;E-mail;Company\n"
        "Doe;JANE@acme-corp.com;Acme Corporation\n"
        "Stone;sam.stone@example.com;Acme Corporation\n"
    ).encode("cp1251")
    url = _upload(seller, csv_bytes)
    key = url.rsplit("/", 1)[1]
    page = seller.get(url).get_data(as_text=True)
    # Surname is no field's name: the page says the last name has no column
    assert "required field last_name" in page
    form = {"col-0": "last_name", "col-1": "email", "col-2": "account", "dedupe": "same_email"}
    preview = seller.post(f"/e/contact/import/{key}/preview", form, htmx=True).get_data(
        as_text=True
    )
    assert 'data-testid="import-problems"' not in preview
    assert re.search(r'<option value="last_name" selected>', preview)
    duplicate = re.search(r'data-testid="preview-row-2".*?</tr>', preview, re.S).group(0)
    assert "duplicate of" in duplicate and "Jane Doe" in duplicate
    assert "will be created" in re.search(
        r'data-testid="preview-row-3".*?</tr>', preview, re.S
    ).group(0)
    assert web.store.records("contact").count().value == 1  # the preview wrote nothing
    streamed = seller.post(
        f"/e/contact/import/{key}/run", form, headers={"Accept": "application/x-ndjson"}
    )
    lines = [json.loads(line) for line in streamed.get_data(as_text=True).splitlines()]
    assert lines[-1]["done"] is True
    assert "1 created, 0 updated, 1 skipped as duplicates, 0 rejected" in lines[-1]["html"]
    stone = web.store.records("contact").query(filter=["last_name", "eq", "Stone"]).rows
    assert stone[0]["account"] == web.acme["id"] and stone[0]["owner"] == web.seller


def test_the_import_page_offers_the_rejected_rows(web, web_app):
    from browser.support import SELLER, Client

    seller = Client(web_app).login(SELLER)
    url = _upload(seller, b"Last name,Email\nGood,good@example.com\nBad,not-an-email\n")
    key = url.rsplit("/", 1)[1]
    done = seller.post(f"/e/contact/import/{key}/run", {"col-0": "last_name", "col-1": "email"})
    page = done.get_data(as_text=True)
    assert "Nothing was written" in page
    link = re.search(r'href="(/files/[^"]+)" data-testid="import-rejects"', page).group(1)
    rejected = seller.get(link).get_data(as_text=True)
    assert "3,Email,not-an-email,not a valid email address" in rejected
    assert web.store.records("contact").count(["last_name", "eq", "Good"]).value == 0


def test_the_import_page_guards(web, web_app):
    from browser.support import READER, SELLER, Client

    seller = Client(web_app).login(SELLER)
    url = _upload(seller, b"Last name\nRoss\n")
    key = url.rsplit("/", 1)[1]
    refused = seller.post(f"/e/contact/import/{key}/run", {"col-0": "last_name"}, csrf=False)
    assert refused.status_code == 400
    reader = Client(web_app).login(READER)
    assert reader.get("/e/contact/import").status_code == 403
    assert reader.get(url).status_code in (403, 404)  # another user's upload
    listing = reader.get("/e/contact", follow_redirects=True).get_data(as_text=True)
    assert 'data-testid="import-records"' not in listing


def test_the_import_page_continues_a_stopped_partial_import(web, web_app, tmp_path):
    """As the command's --resume: a partial import of the same file and columns that
    stopped halfway is offered to continue after its last committed row (or to start
    over); run without a choice, it is refused with the row it stopped after."""
    from browser.support import SELLER, Client

    seller = Client(web_app).login(SELLER)
    data = numbered_people("Resume").encode()
    url = _upload(seller, data, "resume.csv")
    key = url.rsplit("/", 1)[1]
    path = tmp_path / "resume.csv"
    path.write_bytes(data)
    store = web.store
    stopped_halfway(store, path, principal=store.principal(web.seller))

    def resumed_count() -> int:
        return store.records("contact").count(["last_name", "starts_with", "Resume"]).value

    assert resumed_count() == 10
    form = {"col-0": "last_name", "col-1": "email", "partial": "1"}
    page = seller.post(f"/e/contact/import/{key}/preview", form, htmx=True).get_data(as_text=True)
    notice = re.search(r'data-testid="import-stopped".*?</div>\s*</div>', page, re.S).group(0)
    assert "stopped after row 11" in notice
    assert re.search(r'value="resume"[^>]*checked', notice)
    # all or nothing does not continue anything: the page says how to
    page = seller.post(f"/e/contact/import/{key}/preview", {**form, "partial": ""}, htmx=True)
    assert "To continue it, or to start it over" in page.get_data(as_text=True)

    def run(extra):
        streamed = seller.post(
            f"/e/contact/import/{key}/run",
            {**form, **extra},
            headers={"Accept": "application/x-ndjson"},
        )
        return [json.loads(line) for line in streamed.get_data(as_text=True).splitlines()][-1]

    refused = run({})
    assert refused["done"] and "stopped after row 11" in refused["error"]
    assert resumed_count() == 10
    done = run({"stopped": "resume"})
    assert 'data-testid="import-resumed"' in done["html"] and "row 11" in done["html"]
    assert "15 created" in done["html"]
    assert resumed_count() == 25
    assert sorted(
        r["last_name"]
        for r in store.records("contact")
        .query(["last_name", "starts_with", "Resume"], fields=["last_name"], limit=100)
        .rows
    ) == sorted(f"Resume{i}" for i in range(25))
    page = seller.post(f"/e/contact/import/{key}/preview", form, htmx=True).get_data(as_text=True)
    assert 'data-testid="import-stopped"' not in page  # finished: nothing to continue

    # stopped again, started over: every row once more, the page's outcome without "continued"
    stopped_halfway(store, path, principal=store.principal(web.seller))
    done = run({"stopped": "restart"})
    assert "25 created" in done["html"] and 'data-testid="import-resumed"' not in done["html"]
    assert resumed_count() == 60
