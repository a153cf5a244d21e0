"""Schema sync: packs and customizations become tables, columns and indexes, and a
change that could lose data is refused with nothing changed.

Every test gets its own database (a SQLite file, or a PostgreSQL schema when
XRM_TEST_DATABASE_URL is set), because every test changes the schema.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import SOLUTIONS, write_pack

from xrm.metadata import DefinitionError
from xrm.metadata.filters import FilterError
from xrm.storage import tables as T
from xrm.storage.database import WRITE
from xrm.storage.records import ValidationFailed
from xrm.storage.schema import SchemaChangeRefused

CORE = SOLUTIONS / "core"

WARES = {
    "entities/gadget.yaml": """
entity: gadget
title: serial
fields:
  serial: {type: text, max_length: 40, unique: true}
  color:  {type: choice, options: [red, blue]}
  weight: {type: decimal, precision: 12, scale: 4}
""",
    "entities/widget.yaml": """
entity: widget
fields:
  name:   {type: text}
  gadget: {type: lookup, to: gadget, on_delete: cascade}
  size:   {type: integer}
""",
    "views/wares.yaml": """
views:
  big_widgets:
    entity: widget
    columns: [name, size]
    filter: [size, gt, 10]
    sort: [[name, desc]]
""",
}


@pytest.fixture
def store(database):
    app = database.open()
    yield app
    app.close()


@pytest.fixture
def core(store):
    store.install([CORE])
    return store


def inspect(store):
    """A fresh inspector (they cache what they have read)."""
    return sa.inspect(store.engine)


def indexes(store, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {
        ix["name"]: (tuple(ix["column_names"]), bool(ix["unique"]))
        for ix in inspect(store).get_indexes(table)
    }


def columns(store, table: str) -> dict[str, dict]:
    return {c["name"]: c for c in inspect(store).get_columns(table)}


def raw(store, sql: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def customization_count(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(T.customizations)).scalar_one()


def snapshot(store) -> tuple:
    """What a refused or failed change must leave alone."""
    store.refresh()
    return (
        store.stored_version(),
        store.catalog.version,
        customization_count(store),
        sorted(inspect(store).get_table_names()),
        {name: sorted(columns(store, name)) for name in ("account", "contact")},
    )


# ------------------------------------------------------------------------ install
def test_install_creates_tables_indexes_and_constraints(store, tmp_path, database):
    wares = write_pack(tmp_path, "wares", WARES, depends={"core": ">=1.0"})
    catalog, plan = store.install([CORE, wares])
    assert catalog.version == store.stored_version() == 1
    tables = set(inspect(store).get_table_names())
    entities = {
        "account",
        "contact",
        "task",
        "call",
        "email_message",
        "meeting",
        "note",
        "gadget",
        "widget",
    }
    assert entities <= tables
    assert "meeting__attendees" in tables
    assert set(plan.create_tables) >= entities | {"meeting__attendees"}

    contact = indexes(store, "contact")
    assert contact["ix_contact_account"] == (("account",), False)  # lookups
    assert contact["ix_contact_reports_to"] == (("reports_to",), False)
    assert contact["ix_contact_owner"] == (("owner",), False)
    assert contact["ix_contact_email"] == (("email",), False)  # declared
    assert contact["ix_contact_last_name_id"] == (("last_name", "id"), False)  # a view sorts on it
    account = indexes(store, "account")
    assert account["ix_account_name_id"] == (("name", "id"), False)
    assert account["ix_account_account_type"] == (("account_type",), False)  # a view filters on it
    assert account["ix_account_parent"] == (("parent",), False)
    task = indexes(store, "task")
    assert task["ix_task_status"] == (("status",), False)
    assert task["ix_task_due_id"] == (("due", "id"), False)
    assert task["ix_task_regarding_entity_regarding_id"] == (
        ("regarding_entity", "regarding_id"),
        False,
    )
    assert indexes(store, "gadget")["uq_gadget_serial"] == (("serial",), True)  # unique fields
    widget = indexes(store, "widget")
    assert widget["ix_widget_gadget"] == (("gadget",), False)
    assert widget["ix_widget_size"] == (("size",), False)
    assert widget["ix_widget_name_id"] == (("name", "id"), False)
    assert indexes(store, "meeting__attendees")["ix_meeting__attendees_target"] == (
        ("target_id",),
        False,
    )

    foreign = {fk["constrained_columns"][0]: fk for fk in inspect(store).get_foreign_keys("widget")}
    assert foreign["gadget"]["referred_table"] == "gadget"
    assert foreign["gadget"]["options"].get("ondelete") == "CASCADE"
    foreign = {
        fk["constrained_columns"][0]: fk for fk in inspect(store).get_foreign_keys("contact")
    }
    assert foreign["account"]["options"].get("ondelete") == "SET NULL"

    # the search indexes
    if database.dialect == "sqlite":
        assert {"account__fts", "contact__fts"} <= tables
    else:
        names = {
            row[0]
            for row in raw(
                store, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        assert {"ix_account_search", "ix_contact_search"} <= names

    # and nothing left to do
    again = store.plan()
    assert again.empty, again.lines()
    assert again.lines() == ["nothing to change"]
    assert store.install([CORE, wares])[1].empty


def test_a_dry_run_plans_and_changes_nothing(store, tmp_path):
    wares = write_pack(tmp_path, "wares", WARES, depends={"core": ">=1.0"})
    store.install([CORE])
    before = snapshot(store)
    catalog, plan = store.install([wares], dry_run=True)
    assert "gadget" in catalog.entities
    lines = plan.lines()
    assert "+ table gadget" in lines and "+ table widget" in lines
    assert snapshot(store) == before
    assert "gadget" not in store.catalog.entities


def test_a_failed_install_leaves_no_tables_behind(core, tmp_path):
    """The install fails half-way (an index name is taken) after creating a table."""
    wares = write_pack(tmp_path, "wares", WARES, depends={"core": ">=1.0"})
    with core.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(sa.text("CREATE TABLE blocker (id INTEGER PRIMARY KEY, x INTEGER)"))
        conn.execute(sa.text("CREATE INDEX ix_widget_size ON blocker (x)"))
    before = snapshot(core)
    with pytest.raises(sa.exc.DBAPIError, match="ix_widget_size"):
        core.install([wares])
    assert snapshot(core) == before
    tables = set(inspect(core).get_table_names())
    assert not {"gadget", "widget"} & tables
    assert [row[0] for row in raw(core, "SELECT name FROM xrm_solution ORDER BY name")] == ["core"]
    assert "gadget" not in core.catalog.entities
    # the store still works, and once the obstacle is gone the same install succeeds
    core.records("account").create({"name": "Still fine"})
    with core.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(sa.text("DROP TABLE blocker"))
    catalog, _ = core.install([wares])
    assert catalog.version == before[0] + 1
    assert core.records("gadget").create({"serial": "G-1"})["serial"] == "G-1"


def test_a_pack_with_definition_errors_installs_nothing(core, tmp_path):
    broken = write_pack(
        tmp_path,
        "broken",
        {
            "entities/thing.yaml": "entity: thing\nfields:\n  owner_ref: {type: lookup, to: nowhere}\n"
        },
        depends={"core": ">=1.0"},
    )
    before = snapshot(core)
    with pytest.raises(DefinitionError, match="points at unknown entity 'nowhere'"):
        core.install([broken])
    assert snapshot(core) == before
    assert "thing" not in inspect(core).get_table_names()


# ------------------------------------------------------------------------ customizations
def test_adding_a_field_adds_a_nullable_column_and_keeps_the_rows(core):
    accounts = core.records("account")
    ids = accounts.bulk_create(
        [{"name": f"Existing {i}", "employees": i, "tags": ["old"]} for i in range(3)]
    ).ids
    version = core.stored_version()
    catalog, plan = core.customize(
        "extend",
        {
            "extend": "account",
            "fields": {
                "segment": {"type": "text", "max_length": 40},
                "score": {"type": "integer"},
                "champion": {"type": "lookup", "to": "contact"},
            },
        },
    )
    assert catalog.version == core.stored_version() == version + 1
    assert {("account", "segment"), ("account", "score"), ("account", "champion")} <= set(
        plan.add_columns
    )
    assert ("account", "ix_account_champion") in plan.add_indexes
    found = columns(core, "account")
    assert all(found[name]["nullable"] for name in ("segment", "score", "champion"))
    assert "ix_account_champion" in indexes(core, "account")
    # the rows are intact, the new fields empty
    accounts = core.records("account")
    for i, ident in enumerate(ids):
        row = accounts.get(ident)
        assert (row["name"], row["employees"], row["tags"]) == (f"Existing {i}", i, ["old"])
        assert row["segment"] is None and row["score"] is None and row["champion"] is None
    # and the fields work at once: write, filter, sort, lookup checks
    champion = core.records("contact").create({"last_name": "Champion"})["id"]
    new = accounts.create({"name": "New", "segment": "smb", "score": 7, "champion": champion})["id"]
    accounts.update(ids[0], {"segment": "enterprise", "score": 9})
    assert [r["id"] for r in accounts.query(["segment", "is_not_empty"], sort="-score").rows] == [
        ids[0],
        new,
    ]
    assert [r["id"] for r in accounts.query(["champion.last_name", "eq", "Champion"]).rows] == [new]
    with pytest.raises(ValidationFailed):
        accounts.update(new, {"champion": 987654})
    # the added lookup has its foreign key, so on_delete works (set_null by default)
    foreign = {fk["constrained_columns"][0]: fk for fk in inspect(core).get_foreign_keys("account")}
    assert foreign["champion"]["referred_table"] == "contact"
    core.records("contact").delete(champion)
    assert accounts.get(new)["champion"] is None
    assert core.plan().empty


def test_a_searchable_field_added_later_is_searchable(core):
    accounts = core.records("account")
    ident = accounts.create({"name": "Plain"})["id"]
    core.customize(
        "extend", {"extend": "account", "fields": {"motto": {"type": "text", "searchable": True}}}
    )
    accounts = core.records("account")
    accounts.update(ident, {"motto": "Дальше больше"})
    other = accounts.create({"name": "Other", "motto": "nothing to see"})["id"]
    assert [r["id"] for r in accounts.query(search="дальш").rows] == [ident]
    assert [r["id"] for r in accounts.query(search="see").rows] == [other]
    assert core.plan().empty


def test_a_removed_field_keeps_its_column_and_data(core):
    core.customize("extend", {"extend": "account", "fields": {"legacy_code": {"type": "text"}}})
    ident = core.records("account").create({"name": "Old style", "legacy_code": "L-42"})["id"]
    version = core.stored_version()
    catalog, plan = core.customize("extend", {"extend": "account", "remove": ["legacy_code"]})
    assert catalog.version == version + 1
    assert "legacy_code" not in catalog.entity("account").fields
    assert ("account", "legacy_code") in plan.kept_columns
    assert "legacy_code" in columns(core, "account")
    assert raw(core, "SELECT legacy_code FROM account WHERE id = :i", i=ident) == [("L-42",)]
    later = core.plan()
    assert ("account", "legacy_code") in later.kept_columns
    assert (
        "= kept column account.legacy_code (no longer defined; data kept until purge)"
        in later.lines()
    )
    assert later.empty  # keeping is not a change
    # the records service no longer knows the field
    accounts = core.records("account")
    assert "legacy_code" not in accounts.get(ident)
    with pytest.raises(ValidationFailed) as caught:
        accounts.create({"name": "New", "legacy_code": "L-43"})
    assert "unknown field" in caught.value.errors["legacy_code"][0]
    with pytest.raises(FilterError, match="has no field 'legacy_code'"):
        accounts.query(["legacy_code", "eq", "L-42"])
    accounts.update(ident, {"name": "Renamed"})
    # defined again with a type its data does not fit: the kept column's type is compared
    with pytest.raises(SchemaChangeRefused, match="account.legacy_code: text cannot become int"):
        core.customize(
            "extend", {"extend": "account", "fields": {"legacy_code": {"type": "integer"}}}
        )
    # defined again, the data is there
    core.customize("extend", {"extend": "account", "fields": {"legacy_code": {"type": "text"}}})
    assert core.records("account").get(ident)["legacy_code"] == "L-42"


@pytest.mark.parametrize(
    ("field", "change", "reason"),
    [
        (
            "legacy_code",
            {"type": "integer"},
            "text cannot become int without a declared conversion",
        ),
        ("billing_city", {"type": "text", "max_length": 50}, "would shorten text to 50 characters"),
        ("ratio", {"type": "decimal", "precision": 12, "scale": 2}, "would lose digits"),
        ("ratio", {"type": "decimal", "precision": 8, "scale": 4}, "would lose digits"),
        ("score", {"type": "date"}, "int cannot become date"),
    ],
)
def test_a_type_change_that_could_lose_data_is_refused(core, field, change, reason):
    core.customize(
        "extend",
        {
            "extend": "account",
            "fields": {
                "legacy_code": {"type": "text"},
                "ratio": {"type": "decimal", "precision": 12, "scale": 4},
                "score": {"type": "integer"},
            },
        },
    )
    ident = core.records("account").create(
        {
            "name": "Data",
            "legacy_code": "abc",
            "ratio": "12345678.1234",
            "score": 5,
            "billing_city": "Санкт-Петербург",
        }
    )["id"]
    before = snapshot(core)
    before_type = str(columns(core, "account")[field]["type"])
    catalog, plan = core.customize(
        "extend", {"extend": "account", "fields": {field: change}}, dry_run=True
    )
    assert [(c.table, c.column) for c in plan.refused] == [("account", field)]
    assert any(line.startswith(f"~ REFUSED account.{field}") for line in plan.lines())
    with pytest.raises(SchemaChangeRefused) as caught:
        core.customize("extend", {"extend": "account", "fields": {field: change}})
    assert f"account.{field}: {reason}" in str(caught.value)
    assert snapshot(core) == before
    assert str(columns(core, "account")[field]["type"]) == before_type
    assert core.catalog.entity("account").fields[field].type == (
        "text"
        if field in ("legacy_code", "billing_city")
        else ("decimal" if field == "ratio" else "integer")
    )
    row = core.records("account").get(ident)
    assert (row["legacy_code"], str(row["ratio"]), row["score"], row["billing_city"]) == (
        "abc",
        "12345678.1234",
        5,
        "Санкт-Петербург",
    )
    assert core.plan().empty


def test_a_widening_change_is_applied(core, database):
    core.customize("extend", {"extend": "account", "fields": {"score": {"type": "integer"}}})
    accounts = core.records("account")
    ident = accounts.create({"name": "Wide", "billing_city": "x" * 100, "score": 5})["id"]
    with pytest.raises(ValidationFailed):
        accounts.create({"name": "Too long", "billing_city": "y" * 250})
    version = core.stored_version()
    catalog, plan = core.customize(
        "extend",
        {
            "extend": "account",
            "fields": {
                "billing_city": {"type": "text", "max_length": 300},
                "score": {"type": "decimal", "precision": 18, "scale": 2},
            },
        },
    )
    assert catalog.version == version + 1
    assert catalog.entity("account").fields["billing_city"].params["max_length"] == 300
    assert plan.refused == []
    if database.dialect == "postgresql":
        assert {(c.column, c.safe) for c in plan.type_changes} == {
            ("billing_city", True),
            ("score", True),
        }
        found = columns(core, "account")
        assert found["billing_city"]["type"].length == 300
        assert isinstance(found["score"]["type"], sa.Numeric) and found["score"]["type"].scale == 2
    accounts = core.records("account")
    longer = accounts.create({"name": "Long city", "billing_city": "y" * 250, "score": "2.5"})
    assert accounts.get(longer["id"])["billing_city"] == "y" * 250
    row = accounts.get(ident)
    assert row["billing_city"] == "x" * 100 and row["score"] == 5
    assert core.plan().empty, core.plan().lines()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "extend": "account",
                "fields": {"fine": {"type": "text"}, "bad": {"type": "lookup", "to": "nowhere"}},
            },
            "points at unknown entity 'nowhere'",
        ),
        (
            {"extend": "account", "fields": {"fine": {"type": "text"}, "bad": {"type": "txet"}}},
            "unknown field type 'txet'; did you mean 'text'?",
        ),
        (
            {"extend": "account", "fields": {"fine": {"type": "text"}, "bad": {"max_length": 5}}},
            "field has no type",
        ),
        (
            {"extend": "account", "fields": {"fine": {"type": "text", "max_lenght": 5}}},
            "unknown key 'max_lenght'",
        ),
        (
            {"extend": "acount", "fields": {"fine": {"type": "text"}}},
            "extends unknown entity 'acount'; did you mean 'account'?",
        ),
        (
            {"extend": "account", "fields": {"fine": {"type": "text", "formula": "nonsense +"}}},
            "formula",
        ),
        ({"extend": "account", "fields": {"version": {"type": "integer"}}}, "system column"),
    ],
)
def test_a_definition_error_in_a_customization_changes_nothing(core, document, message):
    before = snapshot(core)
    with pytest.raises(DefinitionError) as caught:
        core.customize("extend", document)
    assert message in str(caught.value)
    assert snapshot(core) == before
    assert "fine" not in core.catalog.entity("account").fields
    assert "fine" not in columns(core, "account")


# ------------------------------------------------------------------------ many stores
def test_two_stores_on_one_database_see_each_others_changes(core, database):
    other = database.open()
    try:
        assert other.catalog.version == core.catalog.version
        core.customize("extend", {"extend": "account", "fields": {"region": {"type": "text"}}})
        # the other store's catalog is the old one until it refreshes...
        assert "region" not in other.catalog.entity("account").fields
        assert other.stored_version() == core.catalog.version
        refreshed = other.refresh()
        assert refreshed.version == core.catalog.version
        assert "region" in refreshed.entity("account").fields
        ident = other.records("account").create({"name": "From the other", "region": "EMEA"})["id"]
        assert core.records("account").get(ident)["region"] == "EMEA"
        # ...and a change through the other store keeps the first one's
        other.customize("extend", {"extend": "account", "fields": {"tier": {"type": "integer"}}})
        assert core.catalog.version == other.catalog.version - 1
        accounts = core.records("account")  # refreshes
        assert core.catalog.version == other.catalog.version
        assert {"region", "tier"} <= set(accounts.entity.fields)
        accounts.update(ident, {"tier": 2})
        assert other.records("account").get(ident)["tier"] == 2
        assert core.plan().empty and other.plan().empty
    finally:
        other.close()


def test_a_new_store_opens_the_stored_catalog(core, database):
    core.customize("extend", {"extend": "contact", "fields": {"nickname": {"type": "text"}}})
    ident = core.records("contact").create({"last_name": "Persisted", "nickname": "P"})["id"]
    reopened = database.open()
    try:
        assert reopened.catalog.version == core.catalog.version
        assert reopened.records("contact").get(ident)["nickname"] == "P"
        assert reopened.plan().empty
    finally:
        reopened.close()
