"""Merging duplicate records (xrm/storage/merge.py) and the duplicates view's groups: the
values chosen, every kind of reference moved (lookups of other entities and of the entity
itself, polymorphic lookups, many-to-many links on both sides, a restrict lookup, a
read-only field), rollups and duplicate keys kept, the audit trail, undo, permissions, a
refused merge writing nothing; the REST endpoints and the pages.  SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client
from conftest import SOLUTIONS

from xrm.storage import duplicates as D
from xrm.storage import merge as M
from xrm.storage import tables as T
from xrm.storage.records import Forbidden, NotFound, ValidationFailed
from xrm.web import create_app

LIMITED_ROLE = {
    "label": {"en": "Limited"},
    "permissions": {"*": {"create": "all", "read": "all", "update": "own", "delete": "own"}},
    "fields": {"contact": {"mobile": "read_only"}},
}


@pytest.fixture
def world(database):
    store = database.open()
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.customize("roles", {"roles": {"limited": LIMITED_ROLE}})
    users = {
        "admin": store.add_user("admin@example.com", password=PASSWORD, roles=["administrator"]),
        "ann": store.add_user("ann@example.com", password=PASSWORD, roles=["limited"]),
        "bob": store.add_user("bob@example.com", password=PASSWORD, roles=["limited"]),
        "eve": store.add_user("eve@example.com", password=PASSWORD, roles=["user"], teams=["far"]),
    }
    yield store, users
    store.close()


def _contact(store, user, **values):
    return store.records("contact", user).create({"owner": user, **values})


def _people(store, users):
    """Two contacts of Ann that are the same person, and what points at the second."""
    ann = users["ann"]
    acme = store.records("account", ann).create({"name": "Acme", "owner": ann})
    keep = _contact(
        store,
        ann,
        first_name="Jane",
        last_name="Doe",
        email="jane@acme-corp.com",
        account=acme["id"],
    )
    dupe = _contact(
        store,
        ann,
        first_name="Jane",
        last_name="Doe",
        email="Jane+crm@acme-corp.com",
        phone="+12125550100",
        job_title="CTO",
    )
    found = {"acme": acme, "keep": keep, "dupe": dupe}
    # Eve (another team, scope team) owns records Ann may read but not change
    deal = store.records("opportunity", users["eve"]).create(
        {
            "name": "Deal",
            "account": acme["id"],
            "contact": dupe["id"],
            "close_date": dt.date(2030, 1, 1),
            "owner": users["eve"],
        }
    )
    task = store.records("task", users["eve"]).create(
        {"subject": "Call Jane", "regarding": {"entity": "contact", "id": dupe["id"]}}
    )
    note = store.records("note", ann).create(
        {"body": "<p>met</p>", "regarding": {"entity": "contact", "id": dupe["id"]}}
    )
    alone = store.records("meeting", ann).create(
        {
            "subject": "Alone",
            "starts_at": dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC),
            "attendees": [dupe["id"]],
        }
    )
    both = store.records("meeting", ann).create(
        {
            "subject": "Both",
            "starts_at": dt.datetime(2030, 1, 2, 9, tzinfo=dt.UTC),
            "attendees": [keep["id"], dupe["id"]],
        }
    )
    report = _contact(store, users["eve"], last_name="Report", reports_to=dupe["id"])
    lead = store.records("lead").create(  # converted_contact is read-only for users
        {"last_name": "Doe", "company": "Acme", "converted_contact": dupe["id"]}
    )
    found.update(deal=deal, task=task, note=note, alone=alone, both=both, report=report, lead=lead)
    return found


def _get(store, entity, ident):
    return store.records(entity).get(ident)


def _count(store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# ----------------------------------------------------------------------------- merge
def test_merge_takes_chosen_values_and_moves_every_reference(world):
    store, users = world
    p = _people(store, users)
    principal = store.principal(users["ann"])
    counts = dict((ref.entity, n) for ref, n in M.related_counts(store, "contact", p["dupe"]["id"]))
    assert counts == {"opportunity": 1, "task": 1, "note": 1, "meeting": 2, "contact": 1, "lead": 1}

    result = M.merge(
        store,
        "contact",
        p["keep"]["id"],
        p["dupe"]["id"],
        take=["phone"],
        values={"job_title": "Chief Technology Officer"},
        principal=principal,
    )

    kept = _get(store, "contact", p["keep"]["id"])
    assert kept["phone"] == "+12125550100"  # taken from the other record
    assert kept["job_title"] == "Chief Technology Officer"  # given
    assert kept["email"] == "jane@acme-corp.com"  # the master's by default
    assert kept["account"] == p["acme"]["id"]
    with pytest.raises(NotFound):
        _get(store, "contact", p["dupe"]["id"])
    keep_id = p["keep"]["id"]
    assert _get(store, "opportunity", p["deal"]["id"])["contact"] == keep_id
    assert _get(store, "task", p["task"]["id"])["regarding"] == {"entity": "contact", "id": keep_id}
    assert _get(store, "note", p["note"]["id"])["regarding"] == {"entity": "contact", "id": keep_id}
    assert _get(store, "meeting", p["alone"]["id"])["attendees"] == [keep_id]
    assert _get(store, "meeting", p["both"]["id"])["attendees"] == [keep_id]
    assert _get(store, "contact", p["report"]["id"])["reports_to"] == keep_id
    assert _get(store, "lead", p["lead"]["id"])["converted_contact"] == keep_id
    assert result.moved == {
        "opportunity": 1,
        "task": 1,
        "note": 1,
        "meeting": 2,
        "contact": 1,
        "lead": 1,
    }

    # the audit trail: the merge on the master, the move on each referencing record (as Ann)
    history = store.records("contact").history(keep_id)
    merge_entry = next(e for e in history if e["action"] == "merge")
    assert merge_entry["new"] == {"merge": result.merge_id, "from": p["dupe"]["id"]}
    assert merge_entry["user_id"] == users["ann"]
    assert {(e["field"], e["old"], e["new"]) for e in history if e["action"] == "update"} == {
        ("phone", None, "+12125550100"),
        ("job_title", None, "Chief Technology Officer"),
    }
    moved = store.records("opportunity").history(p["deal"]["id"])[-1]
    assert (moved["field"], moved["old"], moved["new"], moved["user_id"]) == (
        "contact",
        p["dupe"]["id"],
        keep_id,
        users["ann"],
    )
    link = store.records("meeting").history(p["both"]["id"])[-1]
    assert (link["field"], link["old"], link["new"]) == (
        "attendees",
        sorted([keep_id, p["dupe"]["id"]]),
        [keep_id],
    )
    # the removed record's trail stays, reachable through the merge
    found = M.load(store, "contact", result.merge_id, principal=principal)
    actions = [e["action"] for e in found["history"]]
    assert actions == ["create", "delete", "merged"]
    assert found["values"]["email"] == "Jane+crm@acme-corp.com"
    assert found["changes"]["phone"] == (None, "+12125550100")
    # the merged record's duplicate warning is gone
    assert store.records("contact").find_duplicates(kept, exclude_id=keep_id) == []


def test_undo_restores_the_record_and_moves_back(world):
    store, users = world
    p = _people(store, users)
    principal = store.principal(users["ann"])
    keep_id, dupe_id = p["keep"]["id"], p["dupe"]["id"]
    before = _get(store, "contact", dupe_id)
    result = M.merge(
        store, "contact", keep_id, dupe_id, take=["phone", "job_title"], principal=principal
    )
    undone = M.undo(store, "contact", result.merge_id, principal=principal)

    assert undone.restored_id == dupe_id and undone.kept == []
    back = _get(store, "contact", dupe_id)
    for name in (
        "first_name",
        "last_name",
        "email",
        "phone",
        "job_title",
        "full_name",
        "owner",
        "created_at",
        "created_by",
    ):
        assert back[name] == before[name], name
    assert back["version"] > before["version"]
    kept = _get(store, "contact", keep_id)
    assert kept["phone"] is None and kept["job_title"] is None
    assert _get(store, "opportunity", p["deal"]["id"])["contact"] == dupe_id
    assert _get(store, "task", p["task"]["id"])["regarding"] == {"entity": "contact", "id": dupe_id}
    assert _get(store, "note", p["note"]["id"])["regarding"] == {"entity": "contact", "id": dupe_id}
    assert _get(store, "meeting", p["alone"]["id"])["attendees"] == [dupe_id]
    assert _get(store, "meeting", p["both"]["id"])["attendees"] == sorted([keep_id, dupe_id])
    assert _get(store, "contact", p["report"]["id"])["reports_to"] == dupe_id
    assert _get(store, "lead", p["lead"]["id"])["converted_contact"] == dupe_id
    assert undone.moved_back == result.moved
    # duplicate keys written again: the pair is found again
    assert [c.id for c in store.records("contact").find_duplicates(back, exclude_id=dupe_id)] == [
        keep_id
    ]
    # both histories tell it
    assert [e["action"] for e in store.records("contact").history(dupe_id)] == [
        "create",
        "delete",
        "merged",
        "restore",
    ]
    assert "unmerge" in [e["action"] for e in store.records("contact").history(keep_id)]
    with pytest.raises(M.MergeRefused, match="undone already"):
        M.undo(store, "contact", result.merge_id, principal=principal)


def test_undo_keeps_what_changed_since_the_merge(world):
    store, users = world
    p = _people(store, users)
    ann = users["ann"]
    keep_id, dupe_id = p["keep"]["id"], p["dupe"]["id"]
    result = M.merge(store, "contact", keep_id, dupe_id, take=["phone", "job_title"], user_id=ann)
    store.records("contact", ann).update(keep_id, {"job_title": "CEO"})
    store.records("opportunity").update(p["deal"]["id"], {"contact": None})  # moved away since
    later = store.records("task", ann).create(
        {"subject": "New", "regarding": {"entity": "contact", "id": keep_id}}
    )
    undone = M.undo(store, "contact", result.merge_id, user_id=ann)
    assert undone.kept == ["job_title"]
    kept = _get(store, "contact", keep_id)
    assert kept["job_title"] == "CEO" and kept["phone"] is None
    assert _get(store, "opportunity", p["deal"]["id"])["contact"] is None
    assert _get(store, "task", later["id"])["regarding"]["id"] == keep_id
    assert _get(store, "task", p["task"]["id"])["regarding"]["id"] == dupe_id


def test_self_references_and_restrict_lookups_with_rollups(world):
    store, users = world
    admin = users["admin"]
    contacts = store.records("contact", admin)
    # (reports_to is a hierarchy: the two may not report to each other, so one way only)
    boss = contacts.create({"last_name": "Boss"})
    again = contacts.create({"last_name": "Boss"})
    store.records("contact", admin).update(boss["id"], {"reports_to": again["id"]})
    merged = M.merge(store, "contact", boss["id"], again["id"], user_id=admin)
    assert _get(store, "contact", boss["id"])["reports_to"] is None  # not itself
    M.undo(store, "contact", merged.merge_id, user_id=admin)
    assert _get(store, "contact", boss["id"])["reports_to"] == again["id"]
    assert _get(store, "contact", again["id"])["reports_to"] is None

    # accounts: opportunity.account is on_delete: restrict, and feeds a rollup
    accounts = store.records("account", admin)
    big, small = accounts.create({"name": "Globex"}), accounts.create({"name": "Globex LLC"})
    deals = store.records("opportunity", admin)
    for account, amount in ((big, "100"), (small, "50"), (small, "25")):
        deals.create(
            {
                "name": "D",
                "account": account["id"],
                "amount": Decimal(amount),
                "close_date": dt.date(2030, 1, 1),
            }
        )
    person = contacts.create({"first_name": "Al", "last_name": "Lee", "account": small["id"]})
    twin = contacts.create({"first_name": "Al", "last_name": "Lee", "account": big["id"]})
    # same_name_in_account includes the account: different accounts, no match yet
    assert [c.rules for c in contacts.find_duplicates(twin, exclude_id=twin["id"])] == []
    result = M.merge(store, "account", big["id"], small["id"], user_id=admin)
    assert _get(store, "account", big["id"])["open_pipeline"] == Decimal("175")
    # the contact moved with the account, and its duplicate key with it
    assert [(c.id, c.rules) for c in contacts.find_duplicates(twin, exclude_id=twin["id"])] == [
        (person["id"], ["same_name_in_account"])
    ]
    M.undo(store, "account", result.merge_id, user_id=admin)
    assert _get(store, "account", big["id"])["open_pipeline"] == Decimal("100")
    assert _get(store, "account", small["id"])["open_pipeline"] == Decimal("75")
    assert contacts.find_duplicates(twin, exclude_id=twin["id"]) == []


# ------------------------------------------------------------------------ permissions
def test_permissions_update_the_master_delete_the_other(world):
    store, users = world
    p = _people(store, users)
    bob = store.principal(users["bob"])
    ann = store.principal(users["ann"])
    bobs = _contact(store, users["bob"], last_name="Doe", email="jane@acme-corp.com")
    audit_rows = _count(store, T.audit)
    # Bob may delete his own record but not update Ann's: refused
    with pytest.raises(Forbidden, match="update"):
        M.merge(store, "contact", p["keep"]["id"], bobs["id"], principal=bob)
    # Ann may update her record but not delete Bob's
    with pytest.raises(Forbidden, match="delete"):
        M.merge(store, "contact", p["keep"]["id"], bobs["id"], principal=ann)
    # a field read-only for her cannot be chosen
    with pytest.raises(ValidationFailed) as refused:
        M.merge(store, "contact", p["keep"]["id"], p["dupe"]["id"], take=["mobile"], principal=ann)
    assert refused.value.errors == {"mobile": ["cannot be chosen in a merge"]}
    # a record she cannot read is not there at all (Eve's team reads its own only)
    eve = store.principal(users["eve"])
    eves = _contact(store, users["eve"], last_name="Doe")
    with pytest.raises(NotFound):
        M.merge(store, "contact", eves["id"], p["dupe"]["id"], principal=eve)
    assert _count(store, T.audit) == audit_rows + 1  # Eve's contact only
    assert _count(store, T.merges) == 0
    # Eve's deal and task, which Ann may not change, move with Ann's merge (audited as Ann)
    M.merge(store, "contact", p["keep"]["id"], p["dupe"]["id"], principal=ann)
    assert _get(store, "opportunity", p["deal"]["id"])["contact"] == p["keep"]["id"]
    assert store.records("task").history(p["task"]["id"])[-1]["user_id"] == users["ann"]
    # undo needs update on the master: Bob may not
    with store.engine.connect() as conn:  # closed: an open one blocks the schema's drop
        merge_id = conn.execute(sa.select(T.merges.c.id)).scalar_one()
    with pytest.raises(Forbidden):
        M.undo(store, "contact", merge_id, principal=bob)


def test_a_refused_merge_writes_nothing(world):
    store, users = world
    p = _people(store, users)
    ann = store.principal(users["ann"])
    tables = [T.audit, T.merges, T.outbox]
    before = [_count(store, t) for t in tables]
    deal_before = _get(store, "opportunity", p["deal"]["id"])
    # the master refuses the value (last_name is required): everything moved is moved back
    with pytest.raises(ValidationFailed) as refused:
        M.merge(
            store,
            "contact",
            p["keep"]["id"],
            p["dupe"]["id"],
            values={"last_name": ""},
            principal=ann,
        )
    assert "last_name" in refused.value.errors
    with pytest.raises(M.MergeRefused, match="into itself"):
        M.merge(store, "contact", p["keep"]["id"], p["keep"]["id"], principal=ann)
    with pytest.raises(ValidationFailed) as unknown:
        M.merge(
            store, "contact", p["keep"]["id"], p["dupe"]["id"], values={"nmae": "x"}, principal=ann
        )
    assert unknown.value.errors == {"nmae": ["unknown field"]}
    with pytest.raises(ValidationFailed):
        M.merge(
            store,
            "contact",
            p["keep"]["id"],
            p["dupe"]["id"],
            values={"full_name": "x"},
            principal=ann,
        )
    assert [_count(store, t) for t in tables] == before
    assert _get(store, "contact", p["dupe"]["id"])["email"] == "Jane+crm@acme-corp.com"
    assert _get(store, "opportunity", p["deal"]["id"]) == deal_before
    assert _get(store, "meeting", p["both"]["id"])["attendees"] == sorted(
        [p["keep"]["id"], p["dupe"]["id"]]
    )


def test_undo_refused_when_the_record_cannot_come_back(world):
    store, users = world
    admin = users["admin"]
    accounts = store.records("account", admin)
    a, b = accounts.create({"name": "Initech"}), accounts.create({"name": "Initech Inc"})
    result = M.merge(store, "account", a["id"], b["id"], user_id=admin)
    accounts.delete(a["id"])
    with pytest.raises(M.MergeRefused, match="no longer exists"):
        M.undo(store, "account", result.merge_id, user_id=admin)
    with pytest.raises(NotFound):
        M.undo(store, "contact", result.merge_id, user_id=admin)  # another entity's merge


# ----------------------------------------------------------------------------- groups
def test_duplicate_groups_by_sql_and_by_similarity(world):
    store, users = world
    ann, eve = users["ann"], users["eve"]
    for index in range(5):
        _contact(store, ann, last_name=f"P{index}", email=f"p{index % 2}@example.com")
    _contact(store, eve, last_name="Eve", email="p0@example.com")
    contacts = store.records("contact", principal=store.principal(ann))
    page = D.groups(contacts, "same_email")
    assert [(g.key, g.size, [m.title for m in g.members]) for g in page.groups] == [
        ("p0@example.com", 4, ["P0", "P2", "P4", "Eve"]),
        ("p1@example.com", 2, ["P1", "P3"]),
    ]
    first = D.groups(contacts, "same_email", limit=1)
    assert [g.key for g in first.groups] == [
        "p0@example.com"
    ] and first.next_after == "p0@example.com"
    second = D.groups(contacts, "same_email", after=first.next_after, limit=1)
    assert [g.key for g in second.groups] == ["p1@example.com"] and second.next_after is None
    # Eve's team scope: she reads her own record only, so she sees no group
    assert (
        D.groups(store.records("contact", principal=store.principal(eve)), "same_email").groups
        == []
    )
    accounts = store.records("account", ann)
    for name in ("Northwind Traders", "Northwind Tradres", "Nothing Alike", "Globex"):
        accounts.create({"name": name})
    fuzzy = D.groups(accounts, "similar_name")
    assert [[m.title for m in g.members] for g in fuzzy.groups] == [
        ["Northwind Traders", "Northwind Tradres"]
    ]
    assert 0.85 <= fuzzy.groups[0].members[0].score < 1
    with pytest.raises(LookupError):
        D.groups(accounts, "no_such_rule")


# ------------------------------------------------------------------------------- HTTP
@pytest.fixture
def app(world):
    store, users = world
    return create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False, "SECRET_KEY": "t"})


def test_api_merge_and_undo(world, app):
    store, users = world
    p = _people(store, users)
    client = app.test_client()
    ann = {"Authorization": f"Bearer {store.create_token(users['ann'])}"}
    bob = {"Authorization": f"Bearer {store.create_token(users['bob'])}"}
    keep_id, dupe_id = p["keep"]["id"], p["dupe"]["id"]
    url = f"/api/v1/contact/{keep_id}/merge"
    assert client.post(url, json={"form": dupe_id}, headers=ann).status_code == 400
    assert client.post(url, json={"from": "x"}, headers=ann).status_code == 400
    assert client.post(url, json={"from": dupe_id, "take": "phone"}, headers=ann).status_code == 400
    bad = client.post(url, json={"from": dupe_id, "take": ["mobile"]}, headers=ann)
    assert bad.status_code == 422 and bad.get_json()["errors"] == {
        "mobile": ["cannot be chosen in a merge"]
    }
    assert client.post(url, json={"from": dupe_id}, headers=bob).status_code == 403
    assert client.post(url, json={"from": 999999}, headers=ann).status_code == 404
    assert client.post(url, json={"from": keep_id}, headers=ann).status_code == 409
    done = client.post(
        url, json={"from": dupe_id, "take": ["phone"], "values": {"job_title": "CTO"}}, headers=ann
    )
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert body["record"]["phone"] == "+12125550100" and body["record"]["job_title"] == "CTO"
    assert body["moved"]["meeting"] == 2
    assert client.get(f"/api/v1/contact/{dupe_id}", headers=ann).status_code == 404
    undo = f"/api/v1/contact/merges/{body['merge']}/undo"
    assert client.post(undo, headers=bob).status_code == 403
    assert client.post("/api/v1/account/merges/1/undo", headers=ann).status_code == 404
    back = client.post(undo, headers=ann)
    assert back.status_code == 200
    assert back.get_json()["restored"] == dupe_id
    assert client.get(f"/api/v1/contact/{dupe_id}", headers=ann).status_code == 200
    assert client.post(undo, headers=ann).status_code == 409
    # values are read as the caller writes them (a Russian date)
    ru = store.add_user("ru@example.com", roles=["administrator"], locale="ru")
    other = _contact(store, ru, last_name="Doe")
    merged = client.post(
        url,
        json={"from": other["id"], "values": {"birthday": "05.03.1990"}},
        headers={"Authorization": f"Bearer {store.create_token(ru)}"},
    )
    assert merged.status_code == 200 and merged.get_json()["record"]["birthday"] == "1990-03-05"
    document = client.get("/api/v1/openapi.json", headers=ann).get_json()
    assert "/api/v1/contact/{id}/merge" in document["paths"]
    assert "/api/v1/contact/merges/{merge}/undo" in document["paths"]


def test_pages_merge_and_undo(world, app):
    store, users = world
    p = _people(store, users)
    keep_id, dupe_id = p["keep"]["id"], p["dupe"]["id"]
    ui = Client(app).login("ann@example.com")
    listing = ui.get("/views/all_contacts").get_data(as_text=True)
    assert "/r/contact/duplicates" in listing
    view = ui.get("/r/contact/duplicates").get_data(as_text=True)
    assert "Jane Doe" in view and f"ids={keep_id},{dupe_id}" in view.replace("%2C", ",")
    compare = ui.get(f"/r/contact/merge?ids={keep_id},{dupe_id}")
    assert compare.status_code == 200
    text = compare.get_data(as_text=True)
    assert 'name="pick.phone" value="b"' in text and "Opportunities: 1" in text
    form = {"a": keep_id, "b": dupe_id, "master": "a", "pick.phone": "b", "pick.email": "a"}
    assert ui.post("/r/contact/merge", form, csrf=False).status_code == 400
    done = ui.post("/r/contact/merge", form)
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/r/contact/{keep_id}")
    assert _get(store, "contact", keep_id)["phone"] == "+12125550100"
    timeline = ui.get(f"/r/contact/{keep_id}/timeline").get_data(as_text=True)
    assert "merged Jane Doe into this record" in timeline
    with store.engine.connect() as conn:  # closed: an open one blocks the schema's drop
        merge_id = conn.execute(sa.select(T.merges.c.id)).scalar_one()
    details = ui.get(f"/r/contact/merges/{merge_id}").get_data(as_text=True)
    assert "Undo merge" in details and "Jane+crm@acme-corp.com" in details
    # Bob may read the merge but not undo it; Eve may not read the kept record at all
    bob = Client(app).login("bob@example.com")
    assert bob.post(f"/r/contact/merges/{merge_id}/undo").status_code == 303
    assert store.records("contact").count().value == 2  # Jane and Eve's report
    eve = Client(app).login("eve@example.com")
    assert eve.get(f"/r/contact/merges/{merge_id}").status_code == 404
    undone = ui.post(f"/r/contact/merges/{merge_id}/undo")
    assert undone.status_code == 303 and undone.headers["Location"].endswith(f"/{dupe_id}")
    assert _get(store, "contact", dupe_id)["email"] == "Jane+crm@acme-corp.com"
    # in Russian
    store.add_user("ru@example.com", password=PASSWORD, roles=["administrator"], locale="ru")
    ru = Client(app).login("ru@example.com")
    text = ru.get(f"/r/contact/merge?ids={keep_id},{dupe_id}").get_data(as_text=True)
    assert "Оставить эту запись" in text
