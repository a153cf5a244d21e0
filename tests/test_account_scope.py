"""The roles' account scope ("my account"): users linked to an account record, the scope's
rows (a record's account lookup, a configured path, the account itself, and the user's own
records), writes kept inside the account, several roles' scopes united, the checker's
refusals, the ``current_account`` default, and linking users in the store, the command
line and the administration page; on SQLite and PostgreSQL.  The scope through every read
channel (reports, dashboards, duplicates, the API) is the matrix in ``test_security``."""

from __future__ import annotations

import pytest
from browser.support import PASSWORD
from conftest import write_pack

from xrm.metadata.problems import DefinitionError
from xrm.storage.records import Forbidden, NotFound, ValidationFailed
from xrm.storage.users import UserError

ENTITIES = {
    "entities/account.yaml": """
entity: account
title: name
fields:
  name: {type: text, required: true}
  deals: {type: children, entity: deal, via: account}
  deal_count: {type: integer, rollup: {children: deals, count: true}}
""",
    "entities/deal.yaml": """
entity: deal
title: name
search: [name]
fields:
  name: {type: text, required: true}
  account: {type: lookup, to: account, default: current_account}
  lines: {type: children, entity: line, via: deal}
""",
    "entities/line.yaml": """
entity: line
title: text
fields:
  text: {type: text}
  deal: {type: lookup, to: deal, on_delete: cascade}
""",
    "entities/ticket.yaml": """
entity: ticket
title: subject
fields:
  subject: {type: text, required: true}
  customer: {type: lookup, to: account}
  partner: {type: lookup, to: account}
""",
    "roles/roles.yaml": """
roles:
  partner:
    permissions:
      account: {read: account}
      deal: {create: account, read: account, update: account, delete: account}
      line: {create: account, read: account, update: account, account: [deal.account]}
      ticket: {create: account, read: account, update: account, account: [partner]}
  red_team:
    permissions:
      deal: {read: team}
  boss:
    admin: true
""",
}


@pytest.fixture
def world(database, tmp_path):
    """Accounts North and South; a partner user of each, one of North's also in the red
    team, a partner user without an account; a deal with a line and a ticket per account."""
    store = database.open()
    store.install([write_pack(tmp_path, "acc", ENTITIES)])
    accounts = {n: store.records("account").create({"name": n})["id"] for n in ("North", "South")}
    users = {
        "north": store.add_user("n@x.test", roles=["partner"], account=accounts["North"]),
        "north2": store.add_user(
            "n2@x.test", roles=["partner", "red_team"], teams=["red"], account=accounts["North"]
        ),
        "south": store.add_user("s@x.test", roles=["partner"], account=accounts["South"]),
        "loner": store.add_user("l@x.test", roles=["partner"]),
        "red": store.add_user("r@x.test", roles=["red_team"], teams=["red"]),
        "boss": store.add_user("b@x.test", password=PASSWORD, roles=["boss"]),
    }
    for name, account in accounts.items():
        deal = store.records("deal").create({"name": f"deal {name}", "account": account})
        store.records("line").create({"text": f"line {name}", "deal": deal["id"]})
        store.records("ticket").create(
            {"subject": f"ticket {name}", "partner": account, "customer": accounts["South"]}
        )
    # A deal of no account, owned by the red team's user.
    store.records("deal").create({"name": "deal red", "owner": users["red"]})
    yield store, users, accounts
    store.close()


def _as(store, users, who, entity):
    return store.records(entity, principal=store.principal(users[who]))


def _titles(records, field="name"):
    return sorted(r[field] for r in records.query(fields=[field]).rows)


def test_a_partner_reads_their_accounts_records_only(world):
    store, users, accounts = world
    for who, mine in (("north", "North"), ("south", "South")):
        deals = _as(store, users, who, "deal")
        assert _titles(deals) == [f"deal {mine}"]
        assert deals.count().value == 1
        assert _titles(_as(store, users, who, "account")) == [mine]
        assert _titles(_as(store, users, who, "line"), "text") == [f"line {mine}"]  # deal.account
        assert _titles(_as(store, users, who, "ticket"), "subject") == [f"ticket {mine}"]
        other = accounts["South" if mine == "North" else "North"]
        with pytest.raises(NotFound):
            _as(store, users, who, "account").get(other)
        theirs = store.records("deal").query(filter=["account", "eq", other]).rows[0]["id"]
        with pytest.raises(NotFound):
            deals.get(theirs)
        assert deals.query(search="deal", fields=["name"]).rows[0]["name"] == f"deal {mine}"
        assert [g["count"] for g in deals.aggregate([], ["count"])] == [1]
    # The ticket's customer is South for both: it is the partner path that counts, and a
    # path to an account the reader may not read is empty.
    north_ticket = _as(store, users, "north", "ticket").query(
        fields=["partner.name", "customer.name"]
    )
    assert [(r["partner.name"], r["customer.name"]) for r in north_ticket.rows] == [("North", None)]
    # No account linked: only their own records.
    assert _titles(_as(store, users, "loner", "deal")) == []
    made = _as(store, users, "loner", "deal").create({"name": "loner's"})
    assert made["account"] is None
    assert _titles(_as(store, users, "loner", "deal")) == ["loner's"]


def test_rollups_on_the_account_count_what_the_partner_reads(world):
    store, users, accounts = world
    store.records("deal").create({"name": "South's second", "account": accounts["South"]})
    # An owner-only deal of North's user on South's account counts for them, not for North.
    south = _as(store, users, "south", "account").get(accounts["South"])
    assert south["deal_count"] == 2
    assert store.records("account").get(accounts["South"])["deal_count"] == 2
    north_deals = _as(store, users, "north", "deal")
    north_deals.create({"name": "North's second"})
    assert _as(store, users, "north", "account").get(accounts["North"])["deal_count"] == 2
    path = north_deals.query(fields=["name", "account.deal_count"]).rows
    assert {r["account.deal_count"] for r in path} == {2}


def test_several_roles_unite_their_scopes(world):
    """The red team's role (team) and the partner role (account) of one user: the rows of
    both, where the widest single scope would have dropped one of them."""
    store, users, _accounts = world
    assert _titles(_as(store, users, "north2", "deal")) == ["deal North", "deal red"]
    assert _titles(_as(store, users, "red", "deal")) == ["deal red"]
    # The red team's user reads North's deals made by their team mate, as their team's.
    _as(store, users, "north2", "deal").create({"name": "made by north2"})
    assert _titles(_as(store, users, "red", "deal")) == ["deal red", "made by north2"]


def test_writes_stay_inside_the_account(world):
    store, users, accounts = world
    north = _as(store, users, "north", "deal")
    before = sorted(r["name"] for r in store.records("deal").query(fields=["name"]).rows)
    # A colleague's deal in the same account is the account's: it may be changed.
    colleague = _as(store, users, "north2", "deal").create({"name": "colleague's"})
    north.update(colleague["id"], {"name": "colleague's, renamed"})
    # Another account's record reads as missing; linking to another account is refused
    # as a link to a missing record.
    south_deal = store.records("deal").query(filter=["account", "eq", accounts["South"]]).rows[0]
    with pytest.raises((NotFound, Forbidden)):
        north.update(south_deal["id"], {"name": "taken"})
    with pytest.raises((NotFound, Forbidden)):
        north.delete(south_deal["id"])
    with pytest.raises(ValidationFailed) as caught:
        north.create({"name": "for South", "account": accounts["South"]})
    assert caught.value.errors == {"account": ["the linked record does not exist"]}
    # Moving a colleague's record out of the account takes it out of reach: refused.
    with pytest.raises(Forbidden, match="another account"):
        north.update(colleague["id"], {"account": None})
    # Their own record may lose its account: it stays theirs.
    mine = north.create({"name": "mine"})
    assert mine["account"] == accounts["North"]  # default: current_account
    north.update(mine["id"], {"account": None})
    assert north.get(mine["id"])["account"] is None
    # A line reaches its account through the deal: adding one to South's deal is refused.
    lines = _as(store, users, "north", "line")
    with pytest.raises(ValidationFailed):
        lines.create({"text": "x", "deal": south_deal["id"]})
    line = lines.create({"text": "on colleague's", "deal": colleague["id"]})
    assert lines.get(line["id"])["text"] == "on colleague's"
    after = sorted(r["name"] for r in store.records("deal").query(fields=["name"]).rows)
    assert set(after) - set(before) == {"colleague's, renamed", "mine"}
    assert store.records("deal").get(south_deal["id"])["name"] == "deal South"


def test_users_belong_to_accounts(world, tmp_path):
    store, users, accounts = world
    with pytest.raises(UserError, match="no account 999999"):
        store.add_user("x@x.test", roles=["partner"], account=999_999)
    assert store.user_by_email("x@x.test") is None
    with pytest.raises(UserError, match="no account 999999"):
        store.set_account(users["loner"], 999_999)
    assert store.user(users["loner"]).account_id is None
    assert store.find_account("South") == accounts["South"]
    with pytest.raises(UserError, match="no account named 'West'"):
        store.find_account("West")
    # Linking takes effect at once (principals are cached).
    assert _titles(_as(store, users, "loner", "deal")) == []
    store.set_account(users["loner"], accounts["South"])
    assert _titles(_as(store, users, "loner", "deal")) == ["deal South"]
    assert sorted(store.users_of_account(accounts["South"])) == sorted(
        [users["south"], users["loner"]]
    )
    # An account users belong to is kept, and nothing of the delete happens.
    with pytest.raises(ValidationFailed, match="users belong to this account"):
        store.records("account").delete(accounts["North"])
    assert store.records("account").get(accounts["North"])["name"] == "North"
    store.set_account(users["loner"], None)
    assert _titles(_as(store, users, "loner", "deal")) == []


def _problems(store, tmp_path, roles: str, extra: dict | None = None) -> str:
    files = {**ENTITIES, **(extra or {}), "roles/roles.yaml": roles}
    with pytest.raises(DefinitionError) as caught:
        store.install([write_pack(tmp_path / "bad", "acc", files, version="2.0.0")])
    return str(caught.value)


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (
            "roles: {p: {permissions: {note: {read: account}}}}",
            "note has no lookup 'account' to account: name the path",
        ),
        (
            "roles: {p: {permissions: {ticket: {read: account, account: [subject]}}}}",
            "account path 'subject': ticket.subject is a text field; a path follows lookups",
        ),
        (
            "roles: {p: {permissions: {line: {read: account, account: [deal]}}}}",
            "account path 'deal': ends at deal, not at account",
        ),
        (
            "roles: {p: {permissions: {line: {read: account, account: [deal.acount]}}}}",
            "deal has no field 'acount'",
        ),
        (
            "roles: {p: {permissions: {deal: {read: account, account: [id]}}}}",
            "'id' means the record itself, on account only",
        ),
        (
            "roles: {p: {permissions: {'*': {read: account, account: [account]}}}}",
            "account paths are named per entity, not under '*'",
        ),
    ],
)
def test_the_checker_refuses_account_paths_that_lead_nowhere(world, tmp_path, roles, message):
    store, _users, _accounts = world
    extra = {"entities/note.yaml": "entity: note\nfields:\n  text: {type: text}\n"}
    text = _problems(store, tmp_path, roles, extra)
    assert message in text
    assert "roles/roles.yaml:1:" in text
    assert "note" not in store.refresh().entities  # nothing of the upgrade was applied


def test_the_account_scope_needs_an_account_entity(database, tmp_path):
    store = database.open()
    files = {
        "entities/deal.yaml": "entity: deal\nfields:\n  name: {type: text}\n",
        "roles/r.yaml": "roles: {p: {permissions: {deal: {read: account}}}}",
    }
    with pytest.raises(DefinitionError, match="the account scope needs the 'account' entity"):
        store.install([write_pack(tmp_path, "lone", files)])
    files = {
        "entities/firm.yaml": "entity: firm\nfields:\n  name: {type: text}\n",
        "entities/deal.yaml": (
            "entity: deal\nfields:\n  firm: {type: lookup, to: firm, default: current_account}\n"
        ),
    }
    with pytest.raises(DefinitionError, match="'current_account' applies to lookups to account"):
        store.install([write_pack(tmp_path / "2", "lone", files)])
    with pytest.raises(UserError, match="no account entity"):
        store.add_user("a@x.test", account=1)
    store.close()


def test_the_administrator_links_a_user_to_an_account(world):
    from browser.support import Client, make_app

    store, users, accounts = world
    admin = Client(make_app(store)).login("b@x.test")
    page = admin.get(f"/admin/users/{users['loner']}")
    assert page.status_code == 200
    assert 'data-testid="user-account"' in page.get_data(as_text=True)
    changed = admin.post(
        f"/admin/users/{users['loner']}",
        {"name": "Loner", "roles": "partner", "account": str(accounts["North"]), "active": "1"},
    )
    assert changed.status_code == 303
    assert store.user(users["loner"]).account_id == accounts["North"]
    shown = admin.get(f"/admin/users/{users['loner']}").get_data(as_text=True)
    assert f'<option value="{accounts["North"]}" selected>North</option>' in shown
    # An unknown account changes nothing, the name included.
    refused = admin.post(
        f"/admin/users/{users['loner']}",
        {"name": "Renamed", "roles": "partner", "account": "999999", "active": "1"},
    )
    assert refused.status_code == 303
    row = store.user(users["loner"])
    assert (row.account_id, row.name) == (accounts["North"], "Loner")
    # Left empty: the link is taken away.
    admin.post(
        f"/admin/users/{users['loner']}",
        {"name": "Loner", "roles": "partner", "account": "", "active": "1"},
    )
    assert store.user(users["loner"]).account_id is None


def test_the_command_line_links_a_new_user(tmp_path, capsys):
    """``xrm user add --account`` takes an id or the account's name (its own SQLite file:
    the command opens the database by its URL)."""
    import xrm
    from xrm.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = xrm.open(url)
    store.install([write_pack(tmp_path, "acc", ENTITIES)])
    south = store.records("account").create({"name": "South"})["id"]
    store.close()
    args = ["--role", "partner", "--database", url]
    assert main(["user", "add", "cli@x.test", "--account", "South", *args]) == 0
    assert main(["user", "add", "id@x.test", "--account", str(south), *args]) == 0
    assert main(["user", "add", "no@x.test", "--account", "West", *args]) != 0
    assert "no account named 'West'" in capsys.readouterr().err
    store = xrm.open(url)
    assert store.user_by_email("cli@x.test").account_id == south
    assert store.user_by_email("id@x.test").account_id == south
    assert store.user_by_email("no@x.test") is None
    store.close()
