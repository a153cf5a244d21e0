"""Export of records (xrm/data/exports.py): every row of a query a page at a time, cells
as an import reads them back, CSV and XLSX writers, record and field security, views and
filters, and the command."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from conftest import write_pack

from xrm.cli import main
from xrm.data.exports import PAGE, Export, export_to
from xrm.data.imports import Importer
from xrm.data.sources import open_source

ROLES = {
    "roles/clerk.yaml": """\
roles:
  clerk:
    label: Clerk
    permissions:
      "*": {create: all, read: own, update: own}
    fields:
      contact: {notes: hidden}
""",
    "views/contact.yaml": """\
views:
  clerk_contacts:
    entity: contact
    label: Contacts to call
    columns: [last_name, account, birthday, do_not_call]
    filter: [do_not_call, eq, false]
    sort: [[last_name, desc]]
""",
}


@pytest.fixture
def crm(store, tmp_path):
    store.install([write_pack(tmp_path / "packs", "clerks", ROLES, depends={"core": ">=1"})])
    clerk = store.add_user("clerk@example.com", "Cleo Clerk", roles=["clerk"])
    acme = store.records("account").create({"name": "Acme"})
    return store, clerk, acme


def read_csv(path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def test_every_row_a_page_at_a_time_with_plain_cells(crm, tmp_path):
    store, clerk, acme = crm
    rows = [
        {"last_name": f"P{i:04d}", "account": acme["id"] if i % 2 else None, "owner": clerk}
        for i in range(PAGE * 2 + 17)
    ]
    store.records("contact").bulk_create(rows)
    store.records("contact").create(
        {
            "last_name": "=1+2",
            "birthday": dt.date(1990, 1, 2),
            "do_not_call": True,
            "tags": ["vip", "b2b"],
        }
    )
    records = store.records("contact")
    columns = ["last_name", "account", "birthday", "do_not_call", "tags", "owner"]
    export = Export(records, columns, sort=[["id", "asc"]])
    assert export.headers == ["Last name", "Account", "Birthday", "Do not call", "Tags", "Owner"]
    out = tmp_path / "all.csv"
    assert export_to(export, "csv", out) == PAGE * 2 + 18
    lines = read_csv(out)
    assert lines[0] == export.headers
    assert lines[1] == ["P0000", "", "", "no", "", "Cleo Clerk"]
    assert lines[2] == ["P0001", "Acme", "", "no", "", "Cleo Clerk"]
    assert lines[-1] == ["'=1+2", "", "1990-01-02", "yes", "b2b, vip", ""]
    assert len({line[0] for line in lines[1:]}) == PAGE * 2 + 18  # no row twice


def test_xlsx_cells_are_typed_and_text_is_never_a_formula(crm, tmp_path):
    from openpyxl import load_workbook

    store, _clerk, acme = crm
    store.records("contact").create(
        {"last_name": "=HYPERLINK(1)", "account": acme["id"], "birthday": dt.date(1990, 1, 2)}
    )
    out = tmp_path / "c.xlsx"
    export = Export(store.records("contact"), ["last_name", "account", "birthday", "created_at"])
    assert export_to(export, "xlsx", out, title="Contacts: all") == 1
    sheet = load_workbook(out).active
    assert sheet.title == "Contacts  all"
    header, row = list(sheet.iter_rows(values_only=True))
    assert header == ("Last name", "Account", "Birthday", "Created")
    assert row[0] == "=HYPERLINK(1)" and sheet["A2"].data_type == "s"
    assert row[1] == "Acme"
    assert row[2] == dt.datetime(1990, 1, 2) and sheet["C2"].number_format == "yyyy-mm-dd"
    assert isinstance(row[3], dt.datetime)


def test_record_and_field_security_hold(crm, tmp_path):
    store, clerk, _acme = crm
    store.records("contact").create({"last_name": "Theirs", "notes": "secret"})
    store.records("contact").create({"last_name": "Mine", "notes": "mine too", "owner": clerk})
    records = store.records("contact", principal=store.principal(clerk))
    out = tmp_path / "mine.csv"
    export_to(Export(records, ["last_name"]), "csv", out)
    assert read_csv(out) == [["Last name"], ["Mine"]]
    from xrm.metadata.filters import ReadRefused

    with pytest.raises(ReadRefused):
        export_to(Export(records, ["last_name", "notes"]), "csv", tmp_path / "no.csv")
    # a filter over a hidden field is refused before anything is written
    with pytest.raises(ReadRefused):
        Export(records, ["last_name"], filter=["notes", "contains", "sec"]).rows()


def test_an_export_imports_back(crm, tmp_path):
    store, _clerk, acme = crm
    service = store.records("contact")
    service.create(
        {"first_name": "Ann", "last_name": "Ross", "account": acme["id"], "birthday": "1990-01-02"}
    )
    columns = ["id", "first_name", "last_name", "account", "birthday", "do_not_call"]
    out = tmp_path / "round.csv"
    export_to(Export(service, columns), "csv", out)
    result = Importer(store, "contact", open_source(out), mode="update").run()
    assert (result.updated, result.created, result.rejects) == (1, 0, [])
    (again,) = service.query(fields=columns[1:]).rows
    assert (again["account"], again["birthday"]) == (acme["id"], dt.date(1990, 1, 2))


def test_the_export_command(crm, tmp_path, capsys, database):
    if database.dialect == "postgresql":
        pytest.skip(
            "the command opens its own store on the URL; the fixture's schema is a search path"
        )
    store, clerk, acme = crm
    service = store.records("contact")
    service.create({"last_name": "Able", "account": acme["id"], "owner": clerk})
    service.create({"last_name": "Baker", "do_not_call": True, "owner": clerk})
    service.create({"last_name": "Cole", "notes": "x"})
    db = ["--database", database.url]
    out = tmp_path / "view.csv"
    assert main(["export", "clerk_contacts", "--to", str(out), *db]) == 0
    assert read_csv(out) == [
        ["Last name", "Account", "Birthday", "Do not call"],
        ["Cole", "", "", "no"],
        ["Able", "Acme", "", "no"],
    ]
    assert main(["export", "contact", "--to", str(out), "--as", "clerk@example.com", *db]) == 0
    lines = read_csv(out)
    assert "Notes" not in lines[0] and sorted(
        line[lines[0].index("Last name")] for line in lines[1:]
    ) == ["Able", "Baker"]
    xlsx = tmp_path / "f.xlsx"
    filter_text = '["last_name", "starts_with", "B"]'
    assert (
        main(
            [
                "export",
                "contact",
                "--to",
                str(xlsx),
                "--filter",
                filter_text,
                "--columns",
                "last_name",
                *db,
            ]
        )
        == 0
    )
    from openpyxl import load_workbook

    assert [r[0] for r in load_workbook(xlsx).active.iter_rows(values_only=True)] == [
        "Last name",
        "Baker",
    ]
    assert main(["export", "contcat", "--to", str(out), *db]) == 2
    assert "did you mean 'contact'?" in capsys.readouterr().err
    assert main(["export", "contact", "--to", str(out), "--filter", "[nope", *db]) == 2
    assert main(["export", "contact", "--to", str(out), "--filter", '["nope", "eq", 1]', *db]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["export", "contact", "--to", str(tmp_path / "x.txt"), *db]) == 2
