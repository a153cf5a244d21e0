"""The permission matrix, continued: the read channels added with core 1.1 and sales 1.1,
through which a user could learn what their scope or field rules keep from them: tree
views and a record's place in its hierarchy, the timeline (with the activities about an
account's contacts and deals), the "Member of" panel, scores computed by lead scoring
(on write and by the nightly rescore), the merge page and a merge's page, the import's
lookup resolution and the export.  The same shape as tests/test_security.py: users with
different scopes, records they may and may not read, fields hidden by their roles."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from browser.support import PASSWORD, Client, make_app
from conftest import write_pack

from xrm.metadata.filters import FilterError

PACK = {
    "entities/org.yaml": """
entity: org
title: name
search: [name]
fields:
  name: {type: text, required: true}
  tier: {type: choice, options: [gold, silver]}
  secret: {type: text}
  parent: {type: lookup, to: org, on_delete: set_null, hierarchy: true}
  people: {type: children, entity: person, via: org}
  deals: {type: children, entity: deal, via: org}
duplicates:
  - name: same_name
    match: [{field: name, normalize: name}]
""",
    "entities/person.yaml": """
entity: person
title: name
fields:
  name: {type: text, required: true}
  org: {type: lookup, to: org}
  boss: {type: lookup, to: person, on_delete: set_null, hierarchy: true}
  salary: {type: integer}
""",
    "entities/deal.yaml": """
entity: deal
title: name
fields:
  name: {type: text, required: true}
  org: {type: lookup, to: org}
""",
    "entities/task.yaml": """
entity: task
title: subject
fields:
  subject: {type: text, required: true}
  regarding: {type: any_lookup}
  due: {type: date}
  attendees: {type: many_to_many, to: person}
""",
    "entities/roster.yaml": """
entity: roster
title: name
fields:
  name: {type: text, required: true}
  members: {type: many_to_many, to: person}
  insiders: {type: many_to_many, to: person}
""",
    "entities/lead.yaml": """
entity: lead
title: name
fields:
  name: {type: text, required: true}
  budget: {type: integer}
  org: {type: lookup, to: org}
  score: {type: integer, read_only: true}
  grade: {type: choice, options: [a, b], read_only: true}
  score_twice: {type: integer, formula: "score * 2"}
scoring:
  field: score
  rating: {field: grade, bands: [{min: 20, value: a}, {value: b}]}
  rules:
    - {if: [budget, ge, 1000], points: 20}
    - {if: [org.tier, eq, gold], points: 5}
    - {if: [name, contains, vip], points: 1}
""",
    "entities/prospect.yaml": """
entity: prospect
title: name
fields:
  name: {type: text, required: true}
  score: {type: integer, read_only: true}
scoring:
  field: score
  rules:
    - {if: [name, contains, vip], points: 10}
""",
    "views/views.yaml": """
views:
  orgs:
    entity: org
    columns: [name, tier]
  org_tree:
    entity: org
    kind: tree
    parent: parent
    columns: [name, secret, tier]
    sort: [[name, asc]]
  chart:
    entity: person
    kind: tree
    parent: boss
    columns: [name, salary, org]
    sort: [[name, asc]]
""",
    "roles/roles.yaml": """
roles:
  own_role:
    permissions:
      org: {create: own, read: own, update: own, delete: own}
      person: {create: own, read: own, update: own}
      deal: {read: own}
      task: {create: own, read: own, update: own}
      roster: {read: own}
      lead: {create: own, read: own, update: own}
      prospect: {create: own, read: own, update: own}
    fields:
      org: {secret: hidden}
      person: {salary: hidden}
      roster: {insiders: hidden}
      lead: {budget: hidden}
  all_role:
    permissions:
      "*": {create: all, read: all, update: all, delete: all}
    fields:
      org: {secret: hidden}
      person: {salary: hidden}
  scout_role:
    permissions:
      org: {read: own}
      lead: {read: all}
      person: {read: all}
    fields:
      org: {name: hidden}
  boss:
    admin: true
""",
}

USERS = {"own": "own_role", "mate": "own_role", "all": "all_role", "scout": "scout_role"}


@pytest.fixture
def world(database, tmp_path):
    """Orgs in a hierarchy (Holding > Sub A > Branch A1; Holding > Sub B > Branch B1), the
    own user's and the mate's records on them, people in a reporting chain, tasks about
    the orgs, people and deals, rosters, and leads scored over a field and a path."""
    store = database.open()
    store.install([write_pack(tmp_path, "channels", PACK)])
    users = {
        who: store.add_user(f"{who}@c.test", password=PASSWORD, roles=[role])
        for who, role in USERS.items()
    }
    users["boss"] = store.add_user("boss@c.test", password=PASSWORD, roles=["boss"])
    own, mate, boss = users["own"], users["mate"], users["boss"]

    def make(entity, owner, **values):
        return store.records(entity).create({**values, "owner": owner})["id"]

    ids: dict[str, int] = {}
    ids["Holding"] = make("org", boss, name="Holding", secret="s-holding", tier="gold")
    ids["Sub A"] = make("org", own, name="Sub A", secret="s-sub-a", parent=ids["Holding"])
    ids["Branch A1"] = make("org", own, name="Branch A1", secret="s-a1", parent=ids["Sub A"])
    ids["Sub B"] = make("org", mate, name="Sub B", secret="s-sub-b", parent=ids["Holding"])
    ids["Branch B1"] = make("org", own, name="Branch B1", secret="s-b1", parent=ids["Sub B"])
    ids["Pat"] = make("person", mate, name="Pat Chief", org=ids["Sub A"], salary=90001)
    ids["Kim"] = make("person", own, name="Kim Own", org=ids["Sub A"], boss=ids["Pat"])
    ids["Lee"] = make("person", mate, name="Lee Mate", org=ids["Sub A"], boss=ids["Kim"])
    ids["deal own"] = make("deal", own, name="Deal Own", org=ids["Sub A"])
    ids["deal mate"] = make("deal", mate, name="Deal Mate", org=ids["Sub A"])
    tasks = {
        "about sub a": ("org", "Sub A", own),
        "about kim": ("person", "Kim", own),
        "about lee": ("person", "Lee", own),  # readable task, unreadable person
        "mates task on sub a": ("org", "Sub A", mate),  # unreadable task
        "about mates deal": ("deal", "deal mate", own),
        "about own deal": ("deal", "deal own", own),
    }
    for subject, (entity, target, owner) in tasks.items():
        ids[subject] = make(
            "task", owner, subject=subject, regarding={"entity": entity, "id": ids[target]}
        )
    ids["meeting"] = make(
        "task",
        own,
        subject="meeting with kim",
        regarding={"entity": "deal", "id": ids["deal mate"]},
        attendees=[ids["Kim"]],
    )
    ids["Own roster"] = make("roster", own, name="Own roster", members=[ids["Kim"]])
    ids["Mate roster"] = make("roster", mate, name="Mate roster", members=[ids["Kim"]])
    ids["Insider roster"] = make("roster", own, name="Insider roster", insiders=[ids["Kim"]])
    yield store, users, ids
    store.close()


def _client(store, who: str) -> Client:
    return Client(make_app(store)).login(f"{who}@c.test")


def _text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:600]
    return response.get_data(as_text=True)


# ------------------------------------------------------------------------------ trees
def test_tree_view_names_only_readable_nodes(world):
    """A node the reader may not read is neither named nor counted, its hidden field is not
    a column, and its children they may read come to the top level."""
    store, users, ids = world
    own = _client(store, "own")
    everything = ",".join(str(ids[n]) for n in ("Holding", "Sub A", "Sub B", "Branch A1"))
    page = _text(own.get(f"/views/org_tree?expand={everything}"))
    for name in ("Sub A", "Branch A1", "Branch B1"):
        assert name in page
    for leaked in ("Holding", "Sub B", "s-holding", "s-sub-a", "s-a1", "s-b1", "s-sub-b"):
        assert leaked not in page, leaked
    assert f"/r/org/{ids['Holding']}" not in page and f"/r/org/{ids['Sub B']}" not in page
    # the hidden parents' children are asked for one by one: refused as missing
    for hidden in ("Holding", "Sub B"):
        assert own.get(f"/views/org_tree/tree/{ids[hidden]}").status_code == 404
    children = _text(own.get(f"/views/org_tree/tree/{ids['Sub A']}"))
    assert "Branch A1" in children and "s-a1" not in children
    # someone who reads every org sees the whole tree, still without the hidden column
    everyone = _text(_client(store, "all").get(f"/views/org_tree?expand={everything}"))
    for name in ("Holding", "Sub A", "Sub B", "Branch A1", "Branch B1"):
        assert name in everyone
    assert "s-holding" not in everyone
    admin = _text(_client(store, "boss").get(f"/views/org_tree?expand={ids['Holding']}"))
    assert "s-holding" in admin


_NODE = re.compile(
    r'data-id="(\d+)"(.*?)data-testid="tree-title">[^<]*</a>\s*(?:<span[^>]*data-testid="tree-count">(\d+)</span>)?',
    re.S,
)


def _counts(page: str) -> dict[int, int]:
    """Node id -> the count of children its badge shows (0 without one)."""
    return {int(m.group(1)): int(m.group(3) or 0) for m in _NODE.finditer(page)}


def test_tree_view_counts_only_readable_children(world):
    store, users, ids = world
    own = _counts(_text(_client(store, "own").get("/views/org_tree")))
    assert own == {ids["Branch B1"]: 0, ids["Sub A"]: 1}
    everyone = _counts(_text(_client(store, "all").get("/views/org_tree")))
    assert everyone == {ids["Holding"]: 2}


def test_org_chart_and_hierarchy_card_name_only_readable_people(world):
    store, users, ids = world
    own = _client(store, "own")
    chart = _text(own.get(f"/views/chart?expand={ids['Kim']},{ids['Pat']}"))
    assert "Kim Own" in chart
    assert "Pat Chief" not in chart and "Lee Mate" not in chart and "90001" not in chart
    # a record's place in its hierarchy: the ancestor the reader may not read is not named
    page = _text(own.get(f"/r/org/{ids['Branch A1']}"))
    assert "Sub A" in page and "Holding" not in page
    assert "Holding" not in _text(own.get(f"/r/org/{ids['Sub A']}"))
    kim = _text(own.get(f"/r/person/{ids['Kim']}"))
    assert "Pat Chief" not in kim and "Lee Mate" not in kim
    assert own.get(f"/r/org/{ids['Holding']}").status_code == 404


# ------------------------------------------------------------------------------ timeline
def test_timeline_shows_only_readable_activities_about_readable_records(world):
    """An org's timeline gathers the activities about it, its people and its deals: only
    the activities the reader may read, about records they may read; an activity found
    through a readable attendee does not name the unreadable record it is about."""
    store, users, ids = world
    own = _client(store, "own")
    timeline = _text(own.get(f"/r/org/{ids['Sub A']}/timeline"))
    for shown in ("about sub a", "about kim", "about own deal", "meeting with kim"):
        assert shown in timeline, shown
    for leaked in ("about lee", "mates task on sub a", "about mates deal", "Lee Mate"):
        assert leaked not in timeline, leaked
    assert "Deal Mate" not in timeline and f"/r/deal/{ids['deal mate']}" not in timeline
    assert f"/r/task/{ids['about lee']}" not in timeline
    # the person's own timeline: the meeting they attend, not what it is about
    kim = _text(own.get(f"/r/person/{ids['Kim']}/timeline"))
    assert "meeting with kim" in kim and "Deal Mate" not in kim
    assert f"/r/deal/{ids['deal mate']}" not in kim
    # someone who reads everything sees every entry and what it is about
    admin = _text(_client(store, "boss").get(f"/r/org/{ids['Sub A']}/timeline"))
    for shown in ("about lee", "mates task on sub a", "about mates deal", "Deal Mate"):
        assert shown in admin, shown
    assert own.get(f"/r/org/{ids['Holding']}/timeline").status_code == 404


def test_timeline_hides_changes_of_hidden_fields(world):
    store, users, ids = world
    store.records("org").update(ids["Sub A"], {"secret": "s-changed", "tier": "silver"})
    own = _text(_client(store, "own").get(f"/r/org/{ids['Sub A']}/timeline"))
    assert "s-changed" not in own and "s-sub-a" not in own
    admin = _text(_client(store, "boss").get(f"/r/org/{ids['Sub A']}/timeline"))
    assert "s-changed" in admin


# ------------------------------------------------------------------------------ member of
def test_member_of_names_only_readable_lists_through_readable_fields(world):
    store, users, ids = world
    kim = _text(_client(store, "own").get(f"/r/person/{ids['Kim']}"))
    assert "Own roster" in kim
    assert "Mate roster" not in kim and "Insider roster" not in kim
    admin = _text(_client(store, "boss").get(f"/r/person/{ids['Kim']}"))
    for name in ("Own roster", "Mate roster", "Insider roster"):
        assert name in admin


# ------------------------------------------------------------------------------ scoring
def _lead(store, users, who, **values):
    return store.records("lead").create({"owner": users[who], **values})


@pytest.mark.parametrize("who", ["own", "all", "scout", "boss"])
def test_a_score_over_what_the_reader_may_not_read_is_hidden(world, who):
    """The score is computed by the platform, like a formula: a reader who may not read a
    field a rule reads (budget is hidden from own), or the records a rule's lookup path
    reaches (the scout reads only their own orgs), must not learn it from the score or the
    rating (nor from a formula over them), in any read channel."""
    store, users, ids = world
    lead = _lead(store, users, "own", name="vip lead", budget=5000, org=ids["Holding"])
    stored = store.records("lead").get(lead["id"])
    assert (stored["score"], stored["grade"]) == (26, "a")
    records = store.records("lead", principal=store.principal(users[who]))
    readable = who in ("all", "boss")  # all: no rule of theirs hides budget or an org
    record = records.get(lead["id"])
    for name in ("score", "grade", "score_twice"):
        assert (name in record) is readable, name
        assert (name in records.readable_fields()) is readable
    rows = records.query(fields=["name"]).rows
    assert all("score" not in row and "grade" not in row for row in rows) or readable
    if readable:
        assert records.count(filter=["score", "ge", 20]).value == 1
        return
    for name in ("score", "grade", "score_twice"):
        with pytest.raises(FilterError):
            records.query(filter=[name, "is_not_empty"])
        with pytest.raises(FilterError):
            records.query(sort=[[name, "desc"]])
        with pytest.raises(FilterError):
            records.aggregate([name], ["count"])
    for entry in records.history(lead["id"]):
        assert entry["field"] not in ("score", "grade", "score_twice")
        for key in ("old", "new"):
            if isinstance(entry[key], dict):
                assert {"score", "grade", "score_twice"}.isdisjoint(entry[key])


def test_a_score_over_readable_fields_stays_visible(world):
    store, users, ids = world
    records = store.records("prospect", principal=store.principal(users["own"]))
    made = records.create({"name": "a vip"})
    assert records.get(made["id"])["score"] == 10
    assert records.count(filter=["score", "eq", 10]).value == 1


def test_the_score_does_not_depend_on_who_writes(world):
    """Rules read lookup paths as the platform (the nightly rescore's SQL has no reader),
    so the score written when the own user saves the lead is the one the rescore keeps:
    a save by someone who may not read the org neither loses nor reveals its points."""
    from xrm.storage.scoring import rescore

    store, users, ids = world
    lead = _lead(store, users, "own", name="plain", org=ids["Holding"])
    mine = store.records("lead", principal=store.principal(users["own"]))
    mine.update(lead["id"], {"name": "plain again"})
    assert store.records("lead").get(lead["id"])["score"] == 5
    catalog = store.refresh()
    with store.engine.begin() as conn:
        moved = rescore(conn, catalog, catalog.entities["lead"], dt.datetime.now(dt.UTC))
    assert moved == 0
    assert store.records("lead").get(lead["id"])["score"] == 5


def test_a_hidden_score_is_not_on_the_lead_page(world):
    store, users, ids = world
    lead = _lead(store, users, "own", name="vip page lead", budget=5000, org=ids["Sub A"])
    page = _text(_client(store, "own").get(f"/r/lead/{lead['id']}"))
    assert "vip page lead" in page
    assert ">21<" not in page and "5000" not in page
    listing = _client(store, "own").get("/r/lead/export.csv")
    if listing.status_code == 200:
        assert "21" not in listing.get_data(as_text=True).replace("vip page lead", "")


# ------------------------------------------------------------------------------ merge
@pytest.fixture
def twins(world):
    """Two orgs of the own user's named alike, with people and deals of the mate's (whom
    the own user may not read) on the one to be removed."""
    store, users, ids = world
    records = store.records("org")
    keep = records.create({"name": "Twin", "owner": users["own"], "secret": "s-keep"})["id"]
    gone = records.create({"name": "Twin", "owner": users["own"], "secret": "s-gone"})["id"]
    for n in range(3):
        store.records("deal").create(
            {"name": f"mate deal {n}", "org": gone, "owner": users["mate"]}
        )
    store.records("deal").create({"name": "own deal", "org": gone, "owner": users["own"]})
    store.records("person").create({"name": "Mate person", "org": gone, "owner": users["mate"]})
    return store, users, ids, keep, gone


def test_merge_page_counts_only_what_the_reader_may_read(twins):
    store, users, ids, keep, gone = twins
    page = _text(_client(store, "own").get(f"/r/org/merge?a={keep}&b={gone}"))
    assert "Deal: 1" in page  # the own deal, not the mate's three
    assert "Deal: 4" not in page and "Person:" not in page
    assert "s-gone" not in page and "s-keep" not in page
    admin = _text(_client(store, "boss").get(f"/r/org/merge?a={keep}&b={gone}"))
    assert "Deal: 4" in admin and "Person: 1" in admin


def test_a_merges_page_shows_what_the_reader_may_read(twins):
    """After a merge, its page and the kept record's timeline show the removed record's
    values only to someone who could read it, and count only the moved records they may
    read."""
    from xrm.storage import merge as M

    store, users, ids, keep, gone = twins
    # the administrator merges one of the mate's orgs into the own user's
    theirs = store.records("org").create(
        {"name": "Twin", "owner": users["mate"], "secret": "s-theirs", "tier": "gold"}
    )["id"]
    store.records("deal").update(ids["deal mate"], {"org": theirs})
    done = M.merge(store, "org", keep, theirs, principal=store.principal(users["boss"]))
    merge_id = done.merge_id
    own = _client(store, "own")
    details = _text(own.get(f"/r/org/merges/{merge_id}"))
    assert "s-theirs" not in details and "Gold" not in details and "gold" not in details
    assert "Deal: 1" not in details  # the mate's deal moved, unseen by the own user
    timeline = _text(own.get(f"/r/org/{keep}/timeline"))
    assert "s-theirs" not in timeline
    admin = _text(_client(store, "boss").get(f"/r/org/merges/{merge_id}"))
    assert "s-theirs" in admin and "Deal: 1" in admin


# ------------------------------------------------------------------------------ import/export
def test_import_resolves_lookups_only_to_readable_records_by_readable_fields(world, tmp_path):
    from xrm.data.imports import Importer
    from xrm.data.sources import open_source

    store, users, ids = world
    principal = store.principal(users["own"])
    path = tmp_path / "people.csv"
    path.write_text("Name,Org\nOne,Sub A\nTwo,Holding\nThree,Sub B\n", encoding="utf-8")
    result = Importer(store, "person", open_source(path), principal=principal).run()
    # the own user's org resolves; the others are answered as missing, not as forbidden
    messages = sorted(r.message for r in result.rejects)
    assert messages == ["no org with name 'Holding'", "no org with name 'Sub B'"]
    assert result.committed is False
    # finding an org by a field hidden from the importer is refused at the plan: a cell
    # would otherwise tell whether an org with that hidden value exists
    path.write_text("Name,org.secret\nFour,s-sub-a\n", encoding="utf-8")
    importer = Importer(store, "person", open_source(path), principal=principal)
    (name, by_secret) = importer.columns
    assert (by_secret.field, by_secret.note) == (None, "you may not read org.secret")
    mapped = Importer(
        store,
        "person",
        open_source(path),
        principal=principal,
        mapping={"org.secret": "org.secret"},
    )
    assert mapped.problems == ["column 'org.secret': you may not read org.secret"]
    # the platform (no principal) still finds records by any field
    system = Importer(store, "person", open_source(path)).run()
    assert system.created == 1 and system.rejects == []
    assert (
        store.records("person").query(filter=["name", "eq", "Four"], fields=["org"]).rows[0]["org"]
        == ids["Sub A"]
    )


def test_export_of_lookups_reads_titles_as_the_reader(world):
    from xrm.data.exports import Export

    store, users, ids = world
    people = store.records("person", principal=store.principal(users["own"]))
    rows = list(Export(people, ["name", "org", "boss"]).rows())
    assert sorted(rows) == [["Kim Own", "Sub A", f"#{ids['Pat']}"]]
    everyone = store.records("person", principal=store.principal(users["all"]))
    assert ["Kim Own", "Sub A", "Pat Chief"] in list(
        Export(everyone, ["name", "org", "boss"]).rows()
    )
    with pytest.raises(FilterError):
        Export(people, ["name", "salary"]).rows().__next__()
    # an org's title hidden from the reader: the cell is its id, the export still runs
    scout = store.records("person", principal=store.principal(users["scout"]))
    rows = {r[0]: r[1] for r in Export(scout, ["name", "org"]).rows()}
    assert rows["Kim Own"] == f"#{ids['Sub A']}"


def test_merge_and_undo_in_the_api_count_only_readable_moves(twins):
    """The API's merge answers what moved, and its undo what moved back: everything moves
    (the merge is the platform's), but the counts name only the records the caller reads."""
    from xrm.web import create_app

    store, users, ids, keep, gone = twins
    app = create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False})
    http = app.test_client()
    headers = {"Authorization": f"Bearer {store.create_token(users['own'])}"}
    merged = http.post(f"/api/v1/org/{keep}/merge", json={"from": gone}, headers=headers)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    assert merged.get_json()["moved"] == {"deal": 1}
    deals = store.records("deal").query(filter=["org", "eq", keep], fields=["name"]).rows
    assert len(deals) == 4  # the mate's deals moved too
    merge_id = merged.get_json()["merge"]
    undone = http.post(f"/api/v1/org/merges/{merge_id}/undo", headers=headers)
    assert undone.status_code == 200, undone.get_data(as_text=True)
    assert undone.get_json()["moved_back"] == {"deal": 1}
    assert store.records("deal").count(["org", "eq", gone]).value == 4


# ------------------------------------------------------------------------------ SLA card
SLA_ROLES = {
    "roles/sla_roles.yaml": """
        roles:
          status_blind:
            permissions:
              ticket: {read: all}
            fields:
              ticket: {status: hidden}
          response_blind:
            permissions:
              ticket: {read: all}
            fields:
              ticket: {first_response_at: hidden}
          priority_blind:
            permissions:
              ticket: {read: all}
            fields:
              ticket: {priority: hidden}
    """
}


def test_the_service_level_card_tells_nothing_of_hidden_fields(database, tmp_path):
    """An SLA clock runs over the whole record: paused while the status is waiting, met
    when a field is filled, its target chosen by the priority.  A reader from whom one of
    those fields is hidden does not get the clocks that would show its value."""
    from workflow_pack import open_helpdesk

    from xrm.workflow import Worker

    store, _clock = open_helpdesk(database, tmp_path, SLA_ROLES)
    try:
        for who in ("status_blind", "response_blind", "priority_blind"):
            store.add_user(f"{who}@c.test", password=PASSWORD, roles=[who])
        ticket = store.records("ticket").create(
            {"subject": "Printer", "priority": "urgent", "status": "waiting"}
        )
        Worker(store).run_once()
        shown = {}
        app = make_app(store)
        for who in ("status_blind", "response_blind", "priority_blind"):
            client = Client(app).login(f"{who}@c.test")
            page = _text(client.get(f"/r/ticket/{ticket['id']}"))
            shown[who] = set(re.findall(r'data-testid="sla-(\w+)" data-state', page))
        # the pause reads the status: every clock would show whether it is waiting
        assert shown["status_blind"] == set()
        # first response is met when first_response_at is filled; resolution reads status
        assert shown["response_blind"] == {"resolution"}
        # each metric's target follows the priority
        assert shown["priority_blind"] == set()
        store.add_user("root@c.test", password=PASSWORD, roles=["administrator"])
        page = _text(Client(app).login("root@c.test").get(f"/r/ticket/{ticket['id']}"))
        assert set(re.findall(r'data-testid="sla-(\w+)" data-state', page)) == {
            "first_response",
            "resolution",
        }
    finally:
        store.close()


# ------------------------------------------------------------------ calendar, search, duplicates
def test_calendar_search_and_duplicate_warning_follow_the_scope(world):
    """The activities calendar (month and week), the global search page and the form's
    possible-duplicates panel name only the records the reader may read."""
    store, users, ids = world
    today = dt.date.today()
    for subject in ("about sub a", "mates task on sub a"):
        store.records("task").update(ids[subject], {"due": today.isoformat()})
    own = _client(store, "own")
    for mode in ("month", "week"):
        page = _text(own.get(f"/calendar?mine=0&mode={mode}&date={today}&month={today:%Y-%m}"))
        assert "about sub a" in page, mode
        assert "mates task on sub a" not in page, mode
    admin = _text(_client(store, "boss").get(f"/calendar?mine=0&month={today:%Y-%m}"))
    assert "mates task on sub a" in admin
    found = _text(own.get("/search?q=sub"))
    assert f"/r/org/{ids['Sub A']}" in found and f"/r/org/{ids['Sub B']}" not in found
    assert f"/r/org/{ids['Holding']}" not in _text(own.get("/search?q=holding"))
    warned = own.post("/r/org/duplicates", {"name": "Sub B"}).get_data(as_text=True)
    assert f"/r/org/{ids['Sub B']}" not in warned
    mine = own.post("/r/org/duplicates", {"name": "Sub A"}).get_data(as_text=True)
    assert f"/r/org/{ids['Sub A']}" in mine


def test_an_undone_merge_shows_the_kept_records_changes_only_to_its_readers(twins):
    """Once undone, a merge opens for a reader of either record; the values the kept
    record had before and after it are that record's, so only its readers see them."""
    from xrm.storage import merge as M

    store, users, ids, keep, gone = twins
    store.records("org").update(keep, {"tier": "silver"})
    theirs = store.records("org").create({"name": "Twin", "owner": users["mate"], "tier": "gold"})
    boss = store.principal(users["boss"])
    done = M.merge(store, "org", keep, theirs["id"], take=["tier"], principal=boss)
    mate = _client(store, "mate")
    assert mate.get(f"/r/org/merges/{done.merge_id}").status_code == 404  # neither is theirs
    M.undo(store, "org", done.merge_id, principal=boss)
    details = _text(mate.get(f"/r/org/merges/{done.merge_id}"))
    assert "silver" not in details.lower()
    assert "silver" in _text(_client(store, "own").get(f"/r/org/merges/{done.merge_id}")).lower()


def test_a_score_cannot_depend_on_who_writes(database, tmp_path):
    """The score is one value for every reader: a rule about the current user (true for
    whoever saved the record last, never for the nightly rescore) is refused when the
    pack is checked."""
    store = database.open()
    try:
        pack = {
            "entities/lead.yaml": PACK["entities/prospect.yaml"].replace(
                "[name, contains, vip]", "[owner, eq, current_user]"
            )
        }
        with pytest.raises(Exception) as refused:
            store.install([write_pack(tmp_path, "mine", pack)])
        assert "current_user has no meaning in a score's condition" in str(refused.value)
    finally:
        store.close()
