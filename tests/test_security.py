"""The permission matrix at the records-service level: every scope, a hidden and a
read-only field, through every read and write channel."""

from __future__ import annotations

import pytest
from conftest import write_pack

from xrm.metadata.filters import FilterError
from xrm.storage.records import Forbidden, NotFound

ROLES = """
roles:
  none_role:
    permissions:
      deal: {create: none, read: none, update: none, delete: none}
  own_role:
    permissions:
      deal: {create: own, read: own, update: own, delete: own}
      note_line: {create: all, read: own, update: own, delete: own}
    fields:
      deal: {secret: hidden, locked: read_only}
  team_role:
    permissions:
      deal: {create: team, read: team, update: team, delete: team}
      note_line: {read: team}
    fields:
      deal: {secret: hidden, locked: read_only}
  all_role:
    permissions:
      "*": {create: all, read: all, update: all, delete: all}
    fields:
      deal: {secret: hidden, locked: read_only}
  boss:
    admin: true
"""

ENTITIES = {
    "entities/deal.yaml": """
entity: deal
title: name
search: [name, secret]
fields:
  name: {type: text, required: true}
  secret: {type: text}
  locked: {type: integer}
  lines: {type: children, entity: note_line, via: deal}
""",
    "entities/note_line.yaml": """
entity: note_line
fields:
  text: {type: text}
  deal: {type: lookup, to: deal, on_delete: cascade}
""",
    "roles/roles.yaml": ROLES,
}


def build_world(store, tmp_path):
    """The permission pack installed, seven users, and a deal with one line for each of
    three owners (shared with the HTTP permission tests)."""
    store.install([write_pack(tmp_path, "perm", ENTITIES)])
    users = {
        "none": store.add_user("none@x.test", roles=["none_role"]),
        "own": store.add_user("own@x.test", roles=["own_role"], teams=["red"]),
        "mate": store.add_user("mate@x.test", roles=["own_role"], teams=["red"]),
        "team": store.add_user("team@x.test", roles=["team_role"], teams=["red"]),
        "all": store.add_user("all@x.test", roles=["all_role"]),
        "blue": store.add_user("blue@x.test", roles=["own_role"], teams=["blue"]),
        "boss": store.add_user("boss@x.test", roles=["boss"]),
    }
    system = store.records("deal")
    deals = {}
    for who in ("own", "mate", "blue"):
        deals[who] = system.create(
            {"name": f"deal of {who}", "secret": f"s-{who}", "locked": 1, "owner": users[who]}
        )
        store.records("note_line").create(
            {"text": f"line of {who}", "deal": deals[who]["id"], "owner": users[who]}
        )
    return users, deals


@pytest.fixture
def world(database, tmp_path):
    store = database.open()
    users, deals = build_world(store, tmp_path)
    yield store, users, deals
    store.close()


def _records(store, users, who, entity="deal"):
    return store.records(entity, principal=store.principal(users[who]))


def _names(page):
    return sorted(r["name"] for r in page.rows)


VISIBLE = {
    "none": [],
    "own": ["deal of own"],
    "team": ["deal of mate", "deal of own"],
    "all": ["deal of blue", "deal of mate", "deal of own"],
    "boss": ["deal of blue", "deal of mate", "deal of own"],
}


@pytest.mark.parametrize("who", list(VISIBLE))
def test_list_count_search_get_follow_the_scope(world, who):
    store, users, deals = world
    records = _records(store, users, who)
    expected = VISIBLE[who]
    assert _names(records.query(fields=["name"])) == expected
    assert records.count().value == len(expected)
    assert _names(records.query(search="deal", fields=["name"])) == expected
    for deal in deals.values():
        if deal["name"] in expected:
            assert records.get(deal["id"])["name"] == deal["name"]
        else:
            with pytest.raises(NotFound):
                records.get(deal["id"])
            with pytest.raises(NotFound):
                records.history(deal["id"])


@pytest.mark.parametrize("who", ["own", "team", "all"])
def test_hidden_field_never_leaks(world, who):
    store, users, deals = world
    records = _records(store, users, who)
    for row in records.query().rows:
        assert "secret" not in row
    visible_id = deals["own"]["id"]
    assert "secret" not in records.get(visible_id)
    with pytest.raises(FilterError):
        records.query(filter=["secret", "eq", "s-own"])
    with pytest.raises(FilterError):
        records.query(sort=[["secret", "asc"]])
    with pytest.raises(FilterError):
        records.query(fields=["name", "secret"])
    with pytest.raises(FilterError):
        records.count(filter=["secret", "is_not_empty"])
    # Searching for the hidden value finds nothing: the hidden column is not searched.
    assert records.query(search="s-own").rows == []
    history = records.history(visible_id)
    assert all("secret" not in (entry["new"] or {}) for entry in history)
    assert "secret" not in records.readable_fields()
    assert "locked" not in records.writable_fields()


def test_admin_sees_hidden_fields(world):
    store, users, deals = world
    records = _records(store, users, "boss")
    assert records.get(deals["own"]["id"])["secret"] == "s-own"
    assert records.query(search="s-own", fields=["name"]).rows[0]["name"] == "deal of own"


@pytest.mark.parametrize("who", ["own", "team", "all"])
def test_read_only_and_hidden_fields_are_not_written(world, who):
    store, users, deals = world
    records = _records(store, users, who)
    target = deals["own"]["id"]
    for values in ({"locked": 5}, {"secret": "changed"}):
        with pytest.raises(Forbidden):
            records.update(target, values)
        with pytest.raises(Forbidden):
            records.create({"name": "new", **values})
    raw = store.records("deal").get(target)
    assert raw["locked"] == 1 and raw["secret"] == "s-own"


WRITABLE = {
    "none": set(),
    "own": {"own"},
    "team": {"own", "mate"},
    "all": {"own", "mate", "blue"},
}


@pytest.mark.parametrize("who", list(WRITABLE))
def test_update_and_delete_follow_the_scope(world, who):
    store, users, deals = world
    records = _records(store, users, who)
    system = store.records("deal")
    for owner, deal in deals.items():
        if owner in WRITABLE[who]:
            records.update(deal["id"], {"name": f"{deal['name']} by {who}"})
            assert system.get(deal["id"])["name"].endswith(f"by {who}")
        else:
            with pytest.raises((Forbidden, NotFound)):
                records.update(deal["id"], {"name": "hijacked"})
            with pytest.raises((Forbidden, NotFound)):
                records.delete(deal["id"])
            assert system.get(deal["id"])["name"] == deal["name"]
    for owner in sorted(WRITABLE[who]):
        records.delete(deals[owner]["id"])
        with pytest.raises(NotFound):
            system.get(deals[owner]["id"])


def test_create_scope(world):
    store, users, _ = world
    with pytest.raises(Forbidden):
        _records(store, users, "none").create({"name": "x"})
    mine = _records(store, users, "own").create({"name": "mine"})
    assert mine["owner"] == users["own"]
    with pytest.raises(Forbidden):
        _records(store, users, "own").create({"name": "for mate", "owner": users["mate"]})
    teammate = _records(store, users, "team").create({"name": "for mate", "owner": users["mate"]})
    assert teammate["owner"] == users["mate"]
    with pytest.raises(Forbidden):
        _records(store, users, "team").create({"name": "for blue", "owner": users["blue"]})
    with pytest.raises(Forbidden):
        _records(store, users, "own").bulk_create(
            [{"name": "a"}, {"name": "b", "owner": users["blue"]}]
        )


def test_related_list_uses_the_child_scope(world):
    store, users, deals = world
    # With own scope, the related list of the user's deal shows only the user's lines.
    lines = _records(store, users, "own", "note_line")
    got = lines.query(filter=["deal", "eq", deals["own"]["id"]], fields=["text"]).rows
    assert [r["text"] for r in got] == ["line of own"]
    assert lines.query(filter=["deal", "eq", deals["mate"]["id"]]).rows == []
    team_lines = _records(store, users, "team", "note_line")
    assert sorted(r["text"] for r in team_lines.query(fields=["text"]).rows) == [
        "line of mate",
        "line of own",
    ]
    # A dotted path into an entity the user may not read at all is refused.
    with pytest.raises(FilterError):
        store.records("note_line", principal=store.principal(users["none"])).query(
            fields=["deal.name"]
        )
