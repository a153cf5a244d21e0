"""A role names the user fields that make a record one's own (``own: [owner, agent]``):
the own and team scopes, the write checks and the checker all follow them."""

from __future__ import annotations

import pytest
from conftest import SOLUTIONS, write_pack

from xrm.metadata import DefinitionError
from xrm.storage.records import Forbidden, NotFound

PACK = {
    "entities/viewing.yaml": """
entity: viewing
title: address
fields:
  address: {type: text, required: true}
  agent: {type: user}
  notes: {type: text}
""",
    "roles/roles.yaml": """
roles:
  agent:
    permissions:
      viewing: {create: own, read: own, update: own, delete: none, own: [owner, agent]}
  plain:
    permissions:
      viewing: {create: own, read: own, update: own}
  lead_agent:
    permissions:
      viewing: {read: team, update: team, own: [agent]}
""",
}


@pytest.fixture
def agency(database, tmp_path):
    store = database.open()
    store.install([write_pack(tmp_path, "agency", PACK)])
    users = {
        "ann": store.add_user("ann@x.test", roles=["agent"], teams=["north"]),
        "bob": store.add_user("bob@x.test", roles=["plain"], teams=["north"]),
        "cat": store.add_user("cat@x.test", roles=["lead_agent"], teams=["north"]),
        "dan": store.add_user("dan@x.test", roles=["lead_agent"], teams=["south"]),
        "boss": store.add_user("boss@x.test"),
    }
    system = store.records("viewing")
    rows = {
        "owned by boss, ann agent": system.create(
            {"address": "1 Elm", "owner": users["boss"], "agent": users["ann"]}
        ),
        "owned by ann": system.create({"address": "2 Oak", "owner": users["ann"]}),
        "owned by boss, bob agent": system.create(
            {"address": "3 Ash", "owner": users["boss"], "agent": users["bob"]}
        ),
    }
    yield store, users, rows
    store.close()


def _addresses(records):
    return sorted(r["address"] for r in records.query(fields=["address"]).rows)


def test_own_names_the_user_fields_that_count(agency):
    store, users, rows = agency
    ann = store.records("viewing", principal=store.principal(users["ann"]))
    assert _addresses(ann) == ["1 Elm", "2 Oak"]
    ann.update(rows["owned by boss, ann agent"]["id"], {"notes": "keys at the desk"})
    with pytest.raises(NotFound):
        ann.get(rows["owned by boss, bob agent"]["id"])
    # Creating a viewing for someone else is allowed when ann is its agent.
    made = ann.create({"address": "4 Fir", "owner": users["boss"], "agent": users["ann"]})
    assert made["owner"] == users["boss"]
    with pytest.raises(Forbidden):
        ann.create({"address": "5 Yew", "owner": users["boss"]})
    # Without ``own``, the owner alone counts.
    bob = store.records("viewing", principal=store.principal(users["bob"]))
    assert _addresses(bob) == []


def test_team_scope_follows_the_own_fields(agency):
    store, users, rows = agency
    # cat's team (north) holds ann and bob: with own: [agent], the viewings whose agent is
    # in the team are the team's, whoever owns them.
    cat = store.records("viewing", principal=store.principal(users["cat"]))
    assert _addresses(cat) == ["1 Elm", "3 Ash"]
    cat.update(rows["owned by boss, bob agent"]["id"], {"notes": "seen"})
    dan = store.records("viewing", principal=store.principal(users["dan"]))
    assert _addresses(dan) == []


def test_the_checker_refuses_own_fields_that_are_not_users(database, tmp_path):
    bad = dict(PACK)
    bad["roles/roles.yaml"] = """
roles:
  agent:
    permissions:
      viewing: {read: own, own: [owner, notes, agnet]}
      "*": {read: own, own: [owner]}
"""
    store = database.open()
    try:
        with pytest.raises(DefinitionError) as caught:
            store.install([write_pack(tmp_path, "agency", bad)])
        text = str(caught.value)
        assert "viewing.notes is a text field; own names user fields (or owner)" in text
        assert "viewing has no user field 'agnet'; did you mean 'agent'?" in text
        assert "own fields are named per entity, not under '*'" in text
    finally:
        store.close()


def test_shipped_read_only_role_keeps_its_own_diary(database):
    store = database.open()
    try:
        store.install([SOLUTIONS / "core"])
        reader = store.add_user("rita@x.test", roles=["read_only"])
        tasks = store.records("task", principal=store.principal(reader))
        task = tasks.create({"subject": "Call back"})
        tasks.update(task["id"], {"status": "done"})
        with pytest.raises(Forbidden):
            store.records("account", principal=store.principal(reader)).create({"name": "X"})
    finally:
        store.close()
