"""The permission matrix at the records-service level: every scope, a hidden and a
read-only field, through every read and write channel, including the indirect ones: a
dotted path through a lookup, a formula over a hidden field, a rollup over children,
likely duplicates, the forms layer, and the web UI's inline edit, quick create and
duplicates panel; and the account scope ("my account") through the same channels, the API
and global search included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from browser.support import PASSWORD
from conftest import write_pack

from xrm.metadata.filters import FilterError
from xrm.storage.records import Forbidden, NotFound, ValidationFailed

ROLES = """
roles:
  none_role:
    permissions:
      deal: {create: none, read: none, update: none, delete: none}
  own_role:
    permissions:
      deal: {create: own, read: own, update: own, delete: own}
      note_line: {create: all, read: own, update: own, delete: own}
      firm: {create: own, read: own, update: own, delete: own}
    fields:
      deal: {secret: hidden, locked: read_only, amount: hidden}
  team_role:
    permissions:
      deal: {create: team, read: team, update: team, delete: team}
      note_line: {read: team}
      firm: {read: team}
    fields:
      deal: {secret: hidden, locked: read_only, amount: hidden}
  all_role:
    permissions:
      "*": {create: all, read: all, update: all, delete: all}
    fields:
      deal: {secret: hidden, locked: read_only, amount: hidden}
  viewer_role:
    permissions:
      deal: {create: own, read: all, update: own}
      note_line: {create: all, read: all}
      firm: {read: all}
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
  amount: {type: decimal}
  probability: {type: integer}
  expected: {type: decimal, formula: "amount * probability / 100"}
  expected_twice: {type: decimal, formula: "expected * 2"}
  locked_twice: {type: integer, formula: "locked * 2"}
  firm: {type: lookup, to: firm}
  lines: {type: children, entity: note_line, via: deal}
  line_count: {type: integer, rollup: {children: lines, count: true}}
duplicates:
  - name: same_secret
    match: [{field: secret}]
  - name: same_name
    match: [{field: name, normalize: name}]
""",
    "entities/firm.yaml": """
entity: firm
title: name
fields:
  name: {type: text, required: true}
  phone: {type: text}
  deals: {type: children, entity: deal, via: firm}
  deal_count: {type: integer, rollup: {children: deals, count: true}}
  locked_sum: {type: integer, rollup: {children: deals, sum: locked}}
  amount_sum: {type: decimal, rollup: {children: deals, sum: amount}}
duplicates:
  - name: same_phone
    match: [{field: phone, normalize: phone}]
""",
    "entities/note_line.yaml": """
entity: note_line
fields:
  text: {type: text}
  deal: {type: lookup, to: deal, on_delete: cascade}
""",
    "reports/deals.yaml": """
reports:
  deals_by_firm:
    entity: deal
    group_by: [firm.name]
    measures: {deals: count, locked: {sum: locked}}
    totals: true
  deal_amounts:
    entity: deal
    measures: {amount: {sum: amount}}
    totals: true
  expected_amounts:
    entity: deal
    measures: {expected: {sum: expected}}
    totals: true
""",
    "dashboards/deals.yaml": """
dashboards:
  deals:
    label: Deals
    widgets:
      - report: deals_by_firm
      - list: {entity: deal, columns: [name, firm]}
      - report: deal_amounts
""",
    "roles/roles.yaml": ROLES,
    "views/deals.yaml": """
views:
  all_deals:
    entity: deal
    columns: [name, firm]
""",
}


def build_world(store, tmp_path):
    """The permission pack installed, seven users, and a deal with one line for each of
    three owners (shared with the HTTP permission tests)."""
    store.install([write_pack(tmp_path, "perm", ENTITIES)])
    users = {
        "none": store.add_user("none@x.test", password=PASSWORD, roles=["none_role"]),
        "own": store.add_user("own@x.test", password=PASSWORD, roles=["own_role"], teams=["red"]),
        "mate": store.add_user("mate@x.test", password=PASSWORD, roles=["own_role"], teams=["red"]),
        "team": store.add_user(
            "team@x.test", password=PASSWORD, roles=["team_role"], teams=["red"]
        ),
        "all": store.add_user("all@x.test", password=PASSWORD, roles=["all_role"]),
        "blue": store.add_user(
            "blue@x.test", password=PASSWORD, roles=["own_role"], teams=["blue"]
        ),
        "boss": store.add_user("boss@x.test", password=PASSWORD, roles=["boss"]),
        "viewer": store.add_user("viewer@x.test", password=PASSWORD, roles=["viewer_role"]),
    }
    system = store.records("deal")
    deals = {}
    for who in ("own", "mate", "blue"):
        firm = store.records("firm").create(
            {"name": f"firm of {who}", "phone": f"+1555000{len(deals)}", "owner": users[who]}
        )
        deals[who] = system.create(
            {
                "name": f"deal of {who}",
                "secret": f"s-{who}",
                "locked": 1,
                "amount": 1000 + len(deals),
                "probability": 100,
                "firm": firm["id"],
                "owner": users[who],
            }
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


# ----------------------------------------------------------------- indirect channels
def _firms(store):
    return {r["name"]: r["id"] for r in store.records("firm").query(fields=["name"]).rows}


@pytest.fixture
def crossed(world):
    """The own user's deal pointed (by the platform) at the blue user's firm."""
    store, users, deals = world
    firms = _firms(store)
    store.records("deal").update(deals["own"]["id"], {"firm": firms["firm of blue"]})
    return store, users, deals, firms


@pytest.mark.parametrize("who", ["own", "team"])
def test_lookup_path_carries_the_target_scope(crossed, who):
    store, users, deals, firms = crossed
    records = _records(store, users, who)
    mine = deals["own"]["id"]
    row = records.query(filter=["id", "eq", mine], fields=["name", "firm.name", "firm.phone"])
    assert row.rows[0]["firm.name"] is None and row.rows[0]["firm.phone"] is None
    assert records.query(filter=["firm.name", "starts_with", "firm of b"]).rows == []
    assert records.count(filter=["firm.name", "is_not_empty"]).value == (
        0 if who == "own" else 1  # the team user reads the mate's firm through the mate's deal
    )
    ordered = records.query(sort=[["firm.name", "desc"]], fields=["name", "firm.name"]).rows
    assert "firm of blue" not in [r["firm.name"] for r in ordered]
    groups = records.aggregate(["firm.name"], ["count"])
    assert "firm of blue" not in [g["firm.name"] for g in groups]
    # Someone who may read every firm sees it through the same path.
    everyone = _records(store, users, "all")
    row = everyone.query(filter=["id", "eq", mine], fields=["firm.name"]).rows[0]
    assert row["firm.name"] == "firm of blue"


def test_a_lookup_may_only_point_at_a_readable_record(world):
    store, users, deals = world
    firms = _firms(store)
    records = _records(store, users, "own")
    failures = {}
    for label, target in (("not yours", firms["firm of blue"]), ("missing", 999_999)):
        with pytest.raises(ValidationFailed) as caught:
            records.update(deals["own"]["id"], {"firm": target})
        failures[label] = caught.value.errors
        with pytest.raises(ValidationFailed):
            records.create({"name": "new", "firm": target})
    # The same answer for a record that is not yours and one that does not exist.
    assert (
        failures["not yours"]
        == failures["missing"]
        == {"firm": ["the linked record does not exist"]}
    )
    assert store.records("deal").get(deals["own"]["id"])["firm"] == firms["firm of own"]
    records.update(deals["own"]["id"], {"firm": firms["firm of own"], "name": "kept"})
    # A value left as it was is not checked again (the platform may have set it).
    store.records("deal").update(deals["own"]["id"], {"firm": firms["firm of blue"]})
    records.update(deals["own"]["id"], {"name": "renamed"})


@pytest.mark.parametrize("who", ["own", "team", "all"])
def test_formula_over_a_hidden_field_is_hidden(world, who):
    store, users, deals = world
    records = _records(store, users, who)
    mine = deals["own"]["id"]
    record = records.get(mine)
    assert "expected" not in record and "expected_twice" not in record
    assert record["locked_twice"] == 2  # a formula over visible fields stays visible
    for path in ("expected", "expected_twice"):
        with pytest.raises(FilterError):
            records.query(filter=[path, "gt", 0])
        with pytest.raises(FilterError):
            records.query(sort=[[path, "asc"]])
        with pytest.raises(FilterError):
            records.aggregate([], [f"sum:{path}"])
        with pytest.raises(FilterError):
            records.query(fields=["name", path])
    assert {"expected", "expected_twice", "amount"}.isdisjoint(records.readable_fields())
    store.records("deal").update(mine, {"amount": 5000})
    for entry in records.history(mine):
        assert entry["field"] not in ("amount", "expected", "expected_twice")
        for key in ("old", "new"):
            if isinstance(entry[key], dict):
                assert {"amount", "expected", "expected_twice"}.isdisjoint(entry[key])
    # Through a lookup path as well.
    with pytest.raises(FilterError):
        _records(store, users, who, "note_line").query(fields=["deal.expected"])
    admin = _records(store, users, "boss").get(mine)
    assert admin["expected"] == admin["amount"] == 5000


def test_rollups_count_what_the_reader_may_read(world):
    store, users, deals = world
    firms = _firms(store)
    own_firm = firms["firm of own"]
    # A deal of the mate's on the own user's firm: the stored count is 2.
    store.records("deal").create(
        {"name": "mate's deal at own's firm", "locked": 5, "firm": own_firm, "owner": users["mate"]}
    )
    assert store.records("firm").get(own_firm)["deal_count"] == 2
    expected = {"own": (1, 1), "team": (2, 6), "all": (2, 6), "boss": (2, 6)}
    for who, (count, locked) in expected.items():
        firm_rows = _records(store, users, who, "firm")
        record = firm_rows.get(own_firm)
        assert (record["deal_count"], record["locked_sum"]) == (count, locked), who
        assert firm_rows.count(filter=["deal_count", "eq", count]).value >= 1
        assert firm_rows.aggregate([], ["sum:deal_count"])[0]["sum:deal_count"] >= count
        row = firm_rows.query(filter=["id", "eq", own_firm], fields=["deal_count"]).rows[0]
        assert row["deal_count"] == count
        # A rollup over a field hidden from the reader is hidden.
        assert ("amount_sum" in record) == (who == "boss")
    # Through a lookup path: the own user's deal reads its firm's count as theirs.
    deal_rows = _records(store, users, "own")
    path = deal_rows.query(filter=["id", "eq", deals["own"]["id"]], fields=["firm.deal_count"])
    assert path.rows[0]["firm.deal_count"] == 1


def test_children_only_on_parents_the_writer_may_update(world):
    store, users, deals = world
    viewer = _records(store, users, "viewer", "note_line")
    own_lines = _records(store, users, "own", "note_line")
    before = store.records("deal").get(deals["mate"]["id"])
    # Not readable: answered as missing.
    with pytest.raises(ValidationFailed) as caught:
        own_lines.create({"text": "x", "deal": deals["mate"]["id"]})
    assert caught.value.errors == {"deal": ["the linked record does not exist"]}
    # Readable but not updatable: the parent's rollup would change, so it is refused.
    with pytest.raises(ValidationFailed) as caught:
        viewer.create({"text": "x", "deal": deals["mate"]["id"]})
    assert caught.value.errors == {"deal": ["you may not change this deal"]}
    after = store.records("deal").get(deals["mate"]["id"])
    assert after["line_count"] == before["line_count"] and after["version"] == before["version"]
    # A line of the own user's on their own deal is fine; deleting a line under a deal
    # the user may not update is refused.
    own_lines.create({"text": "mine", "deal": deals["own"]["id"]})
    mate_line = store.records("note_line").create(
        {"text": "given", "deal": deals["mate"]["id"], "owner": users["own"]}
    )
    with pytest.raises(Forbidden):
        own_lines.delete(mate_line["id"])


def test_giving_a_record_away_obeys_the_create_scope(world):
    store, users, deals = world
    with pytest.raises(Forbidden):
        _records(store, users, "own").update(deals["own"]["id"], {"owner": users["mate"]})
    assert store.records("deal").get(deals["own"]["id"])["owner"] == users["own"]
    _records(store, users, "team").update(deals["own"]["id"], {"owner": users["mate"]})
    with pytest.raises(Forbidden):
        _records(store, users, "team").update(deals["mate"]["id"], {"owner": users["blue"]})


def test_count_estimates_with_bound_values(world):
    """Past the cap a count is estimated; the estimate must not render values into SQL."""
    store, users, deals = world
    system = store.records("deal")
    system.create({"name": "odd :x 'quoted' %s name"})
    result = system.count(filter=["name", "in", ["odd :x 'quoted' %s name", ":y"]], cap=0)
    assert not result.exact and result.value >= 1


def test_file_values_come_from_the_writers_own_uploads(database, tmp_path):
    """The records service itself (not only the web layer) refuses a file value its writer
    did not upload, with the same message for another user's file and an unknown key."""
    from xrm.storage.files import NOT_YOUR_UPLOAD, put_file

    store = database.open()
    try:
        pack = {
            "entities/doc.yaml": "entity: doc\nfields:\n  title: {type: text}\n"
            "  scan: {type: file}\n",
            "roles/roles.yaml": "roles:\n  clerk:\n    permissions:\n"
            "      doc: {create: own, read: own, update: own}\n",
        }
        store.install([write_pack(tmp_path, "docs", pack)])
        ann = store.add_user("ann@x.test", roles=["clerk"])
        bob = store.add_user("bob@x.test", roles=["clerk"])
        docs = store.records("doc", principal=store.principal(ann))
        mine = put_file(store, b"ann's", "a.pdf", "application/pdf", user_id=ann)
        theirs = put_file(store, b"bob's", "b.pdf", "application/pdf", user_id=bob)
        made = docs.create({"title": "ok", "scan": {**mine, "size": 1, "name": "forged.exe"}})
        stored = store.records("doc").get(made["id"])["scan"]
        assert (stored["name"], stored["size"]) == ("a.pdf", 5)  # from the file store
        for value in (theirs, {**mine, "key": "A" * 43}):
            with pytest.raises(ValidationFailed) as caught:
                docs.create({"title": "x", "scan": value})
            assert caught.value.errors == {"scan": [NOT_YOUR_UPLOAD]}
        # The record's own file may be kept by anyone who may update the record.
        given = store.records("doc").create({"title": "given", "scan": theirs, "owner": ann})
        docs.update(given["id"], {"title": "renamed", "scan": theirs})
        with pytest.raises(ValidationFailed):
            docs.update(made["id"], {"scan": theirs})
    finally:
        store.close()


# ------------------------------------------------------------------ reports and dashboards
@pytest.mark.parametrize("who", list(VISIBLE))
def test_reports_dashboards_and_report_emails_follow_the_scope(world, who):
    """Aggregates are a read channel of their own: a report's figures, a grouping through
    a lookup path (the firm's own scope), a dashboard's report and list widgets and the
    emailed report count exactly the deals a plain read returns; a report over a hidden
    field, or over a formula of one, is refused in each of them."""
    from xrm.metadata.formats import Formats
    from xrm.reports import ReportRefused, run_report
    from xrm.reports.dashboards import run_dashboard
    from xrm.reports.mailing import report_mail

    store, users, _deals = world
    principal = store.principal(users[who])
    catalog = store.refresh()
    readable = len(VISIBLE[who])
    firms = (
        sorted(
            r["firm.name"]
            for r in _records(store, users, who, "deal").query(fields=["firm.name"]).rows
        )
        if readable
        else []
    )
    if who == "none":
        with pytest.raises((ReportRefused, Forbidden)):
            run_report(store, catalog.reports["deals_by_firm"], {}, principal)
    else:
        result = run_report(store, catalog.reports["deals_by_firm"], {}, principal)
        assert result.totals["deals"] == readable
        assert sorted(r["firm.name"] for r in result.rows if r["firm.name"]) == sorted(
            f for f in firms if f
        )
        mail = report_mail(store, catalog.reports["deals_by_firm"], {}, principal, Formats("en"))
        total_line = next(line for line in mail.text.splitlines() if line.startswith("Total"))
        assert total_line.split()[1] == str(readable)  # the reader's count, not everyone's
    board = run_dashboard(store, catalog.dashboards["deals"], {}, principal, fresh=True)
    by_firm, listing, amounts = board.widgets
    if who == "none":
        assert by_firm.status == listing.status == amounts.status == 403
        return
    assert by_firm.result.totals["deals"] == readable
    assert sorted(r["name"] for r in listing.rows) == VISIBLE[who]
    hidden = who != "boss"
    for name in ("deal_amounts", "expected_amounts"):
        if hidden:
            with pytest.raises(ReportRefused):
                run_report(store, catalog.reports[name], {}, principal)
            with pytest.raises(ReportRefused):
                report_mail(store, catalog.reports[name], {}, principal, Formats("en"))
        else:
            assert run_report(store, catalog.reports[name], {}, principal).totals
    assert (amounts.status == 403) is hidden


# ------------------------------------------------------- duplicates, forms and the web UI
def _owner_of(name: str) -> str:
    return name.rsplit(" ", 1)[-1]


@pytest.mark.parametrize("who", list(VISIBLE))
def test_duplicate_candidates_follow_the_scope(world, who):
    """Likely duplicates are a read channel: a rule names only records the reader may
    read, and a rule over a field hidden from the reader matches nothing for them (else
    typing a guess would tell whether someone's hidden value is that guess)."""
    store, users, deals = world
    readable = {_owner_of(name) for name in VISIBLE[who]}
    firms = _records(store, users, who, "firm")
    deal_records = _records(store, users, who)
    system_firms = {
        r["name"]: r for r in store.records("firm").query(fields=["name", "phone"]).rows
    }
    for owner in ("own", "mate", "blue"):
        firm = system_firms[f"firm of {owner}"]
        try:
            found = firms.find_duplicates({"phone": firm["phone"]})
        except Forbidden:
            assert who == "none"
            continue
        assert [c.id for c in found] == ([firm["id"]] if owner in readable else [])
        by_secret = deal_records.find_duplicates({"secret": f"s-{owner}"})
        by_name = deal_records.find_duplicates({"name": f"Deal of {owner}"})
        if who == "boss":
            assert [c.id for c in by_secret] == [deals[owner]["id"]]
        else:
            assert by_secret == []  # the secret is hidden from every other role
        assert [c.id for c in by_name] == ([deals[owner]["id"]] if owner in readable else [])
        for candidate in by_name:
            assert "secret" not in candidate.values and "amount" not in candidate.values


@pytest.mark.parametrize("who", ["own", "team", "all", "boss"])
def test_record_forms_show_and_write_only_what_the_reader_may(world, who):
    """The forms layer (web forms, wizards, quick create and inline edit are built on it):
    a hidden field is not on the form and a posted value for it is ignored; a read-only
    field is shown but not written."""
    from xrm.forms.record import reader_for, record_form

    store, users, deals = world
    catalog = store.refresh()
    reader = reader_for(store, users[who])
    form = record_form(catalog, catalog.entities["deal"], reader)
    hidden = who != "boss"
    assert ("secret" in form.fields) is not hidden
    assert ("amount" in form.fields) is not hidden
    assert form.fields["locked"].read_only is hidden  # the administrator's roles limit nothing
    assert ("locked" in form.editable) is not hidden
    records = _records(store, users, who)
    posted = {"name": "made on a form", "secret": "posted", "locked": "7", "amount": "5"}
    bound = form.bind(reader, posted={"_fields": list(posted), **posted}, creating=True)
    assert bound.validate(), bound
    made = bound.save(records)
    assert made is not None, bound.errors
    stored = store.records("deal").get(made["id"])
    assert (stored["locked"] is None) is hidden
    assert (stored["secret"] is None) is hidden
    assert (stored["amount"] is None) is hidden


@pytest.fixture
def web(world):
    from browser.support import Client, make_app

    store, users, deals = world
    app = make_app(store)
    clients = {who: Client(app).login(f"{who}@x.test") for who in ("own", "team", "viewer")}
    return store, users, deals, clients


def test_inline_edit_and_quick_create_keep_to_the_scope(web):
    """The read view's one-field edit and the lookup's quick-create dialog are write
    channels of their own: a record outside the scope is missing, a hidden field is
    missing, a read-only one is refused, and nothing of it is written."""
    store, users, deals, clients = web
    own, viewer = clients["own"], clients["viewer"]
    before = _snapshot_deals(store)
    theirs, mine = deals["blue"]["id"], deals["own"]["id"]
    assert own.get(f"/r/deal/{theirs}/field/name?edit=1").status_code == 404
    assert own.post(f"/r/deal/{theirs}/field/name", {"name": "taken"}).status_code == 404
    assert own.get(f"/r/deal/{mine}/field/secret?edit=1").status_code == 404
    assert own.post(f"/r/deal/{mine}/field/secret", {"secret": "x"}).status_code == 404
    assert own.post(f"/r/deal/{mine}/field/locked", {"locked": "9"}).status_code == 403
    # the viewer reads every deal but may update only its own (it owns none)
    assert viewer.post(f"/r/deal/{mine}/field/name", {"name": "taken"}).status_code in (403, 404)
    assert _snapshot_deals(store) == before
    assert own.post(f"/r/deal/{mine}/field/name", {"name": "renamed"}).status_code in (200, 303)
    assert store.records("deal").get(mine)["name"] == "renamed"

    typed = {"name": "quick one", "secret": "posted", "locked": "3", "amount": "9"}
    made = own.post("/r/deal/quick-create", [*(("_fields", k) for k in typed), *typed.items()])
    assert made.status_code == 200, made.get_data(as_text=True)[:400]
    row = next(
        r
        for r in store.records("deal").query(fields=["name", "secret", "locked", "amount"]).rows
        if r["name"] == "quick one"
    )
    assert row["secret"] is None and row["locked"] is None and row["amount"] is None
    none = _signed_in(web[0], "none")
    assert none.post(
        "/r/deal/quick-create", {"_fields": "name", "name": "not allowed"}
    ).status_code in (403, 404)
    assert not any(
        r["name"] == "not allowed" for r in store.records("deal").query(fields=["name"]).rows
    )


def test_the_duplicates_panel_names_only_readable_records(web):
    store, users, deals, clients = web
    firms = {r["name"]: r for r in store.records("firm").query(fields=["name", "phone"]).rows}
    for who, client in clients.items():
        readable = {_owner_of(n) for n in VISIBLE.get(who, [])}
        if who == "viewer":
            readable = {"own", "mate", "blue"}
        for owner in ("own", "mate", "blue"):
            firm = firms[f"firm of {owner}"]
            page = client.post("/r/firm/duplicates", {"phone": firm["phone"]})
            text = page.get_data(as_text=True)
            assert (f"/r/firm/{firm['id']}" in text) is (owner in readable), (who, owner)
        # the secret is hidden from own and team; the viewer's role hides nothing
        secret_page = client.post("/r/deal/duplicates", {"secret": "s-blue"})
        named = f"/r/deal/{deals['blue']['id']}" in secret_page.get_data(as_text=True)
        assert named is (who == "viewer")


def _signed_in(store, who):
    from browser.support import Client, make_app

    return Client(make_app(store)).login(f"{who}@x.test")


def _snapshot_deals(store) -> list[dict]:
    rows = store.records("deal").query(fields=["name", "secret", "locked", "owner"]).rows
    return sorted((dict(row) for row in rows), key=lambda row: row["id"])


# ---------------------------------------------------------- the account scope ("my account")
# Partner users see the records of the account they belong to (xrm_user.account_id): the
# same matrix of channels for the account scope, with its own small pack.  More about the
# scope itself (writes, paths, several roles, linking users) is in test_account_scope.py.
ACCOUNT_PACK = {
    "entities/account.yaml": """
entity: account
title: name
search: [name]
fields:
  name: {type: text, required: true}
  phone: {type: text}
  deals: {type: children, entity: deal, via: account}
  pipeline: {type: decimal, rollup: {children: deals, sum: amount}}
  pipeline_k: {type: decimal, formula: "pipeline / 1000"}
duplicates:
  - name: same_phone
    match: [{field: phone, normalize: phone}]
""",
    "entities/deal.yaml": """
entity: deal
title: name
search: [name]
fields:
  name: {type: text, required: true}
  account: {type: lookup, to: account, default: current_account}
  customer: {type: lookup, to: account}
  amount: {type: decimal}
  margin: {type: decimal}
  margin_share: {type: decimal, formula: "margin / amount"}
  lines: {type: children, entity: deal_line, via: deal}
duplicates:
  - name: same_name
    match: [{field: name, normalize: name}]
""",
    "entities/deal_line.yaml": """
entity: deal_line
fields:
  text: {type: text}
  deal: {type: lookup, to: deal, on_delete: cascade}
""",
    "roles/roles.yaml": """
roles:
  partner:
    permissions:
      account: {read: account}
      deal: {create: account, read: account, update: account, delete: account}
      deal_line: {create: account, read: account, update: account, account: [deal.account]}
    fields:
      deal: {margin: hidden}
  channel:
    permissions:
      "*": {create: all, read: all, update: all, delete: all}
  boss:
    admin: true
""",
    "reports/deals.yaml": """
reports:
  deals_by_account:
    entity: deal
    group_by: [account.name]
    measures: {deals: count, amount: {sum: amount}}
    totals: true
  margins:
    entity: deal
    measures: {margin: {sum: margin}}
""",
    "dashboards/deals.yaml": """
dashboards:
  partner_deals:
    label: Deals
    widgets:
      - report: deals_by_account
      - list: {entity: deal, columns: [name, account]}
""",
}

PARTNERS = {"north": "North", "south": "South", "channel": None, "boss": None}


@pytest.fixture
def partner_world(database, tmp_path):
    """Accounts North, South and a customer, Acme; two deals with a line each per partner
    account (the customer Acme on each); a partner user of each, a channel manager (all)
    and an administrator."""
    store = database.open()
    store.install([write_pack(tmp_path, "partners", ACCOUNT_PACK)])
    accounts = {}
    for i, name in enumerate(("North", "South", "Acme")):
        accounts[name] = store.records("account").create({"name": name, "phone": f"+155501{i}"})
    deals = {}
    for name in ("North", "South"):
        for n in (1, 2):
            deal = store.records("deal").create(
                {
                    "name": f"{name} deal {n}",
                    "account": accounts[name]["id"],
                    "customer": accounts["Acme"]["id"],
                    "amount": 100 * n,
                    "margin": 10 * n,
                }
            )
            deals[deal["name"]] = deal
            store.records("deal_line").create({"text": f"{name} line {n}", "deal": deal["id"]})
    users = {
        who: store.add_user(
            f"{who}@p.test",
            password=PASSWORD,
            roles=["boss" if who == "boss" else "channel" if who == "channel" else "partner"],
            account=accounts[account]["id"] if account else None,
        )
        for who, account in PARTNERS.items()
    }
    yield store, users, accounts, deals
    store.close()


def _seen(who: str) -> list[str]:
    mine = PARTNERS[who]
    names = ["North deal 1", "North deal 2", "South deal 1", "South deal 2"]
    return [n for n in names if mine is None or n.startswith(mine)]


@pytest.mark.parametrize("who", list(PARTNERS))
def test_account_scope_through_lists_paths_formulas_and_rollups(partner_world, who):
    store, users, accounts, deals = partner_world
    deal_rows = store.records("deal", principal=store.principal(users[who]))
    expected = _seen(who)
    assert _names(deal_rows.query(fields=["name"])) == expected
    assert deal_rows.count().value == len(expected)
    assert _names(deal_rows.query(search="deal", fields=["name"])) == expected
    for name, deal in deals.items():
        if name in expected:
            assert deal_rows.get(deal["id"])["name"] == name
        else:
            with pytest.raises(NotFound):
                deal_rows.get(deal["id"])
    # A path to the customer, an account the partner may not read, is empty everywhere.
    partner = PARTNERS[who] is not None
    rows = deal_rows.query(fields=["name", "account.name", "customer.name"]).rows
    assert {r["customer.name"] for r in rows} == ({None} if partner else {"Acme"})
    assert deal_rows.count(filter=["customer.name", "eq", "Acme"]).value == (
        0 if partner else len(expected)
    )
    groups = {
        g["account.name"]: g["count"] for g in deal_rows.aggregate(["account.name"], ["count"])
    }
    assert groups == ({PARTNERS[who]: 2} if partner else {"North": 2, "South": 2})
    # Related list: the lines of a deal, through deal.account.
    line_rows = store.records("deal_line", principal=store.principal(users[who]))
    texts = sorted(r["text"] for r in line_rows.query(fields=["text"]).rows)
    assert texts == sorted(n.replace("deal", "line") for n in expected)
    other = deals["South deal 1" if PARTNERS[who] == "North" else "North deal 1"]
    others_lines = line_rows.query(filter=["deal", "eq", other["id"]]).rows
    assert bool(others_lines) is not partner
    # Formulas over a hidden field are hidden; a rollup is over the deals they may read
    # (here all of their account's) and a formula over such a rollup is hidden.
    account_rows = store.records("account", principal=store.principal(users[who]))
    if partner:
        mine = accounts[PARTNERS[who]]["id"]
        assert [r["name"] for r in account_rows.query(fields=["name"]).rows] == [PARTNERS[who]]
        record = account_rows.get(mine)
        assert record["pipeline"] == 300 and "pipeline_k" not in record
        with pytest.raises(FilterError):
            account_rows.query(fields=["pipeline_k"])
        with pytest.raises(FilterError):
            deal_rows.query(fields=["margin_share"])
        assert "margin" not in deal_rows.get(deals[expected[0]]["id"])
        # One more North deal by the platform under South's account is not North's.
        store.records("deal").create({"name": "x", "account": accounts["South"]["id"], "amount": 5})
        assert account_rows.get(mine)["pipeline"] == 300 + (5 if PARTNERS[who] == "South" else 0)
    else:
        assert account_rows.count().value == 3
        assert account_rows.get(accounts["North"]["id"])["pipeline_k"] == Decimal("0.3")


@pytest.mark.parametrize("who", list(PARTNERS))
def test_account_scope_through_reports_dashboards_duplicates_and_search(partner_world, who):
    from xrm.metadata.formats import Formats
    from xrm.reports import ReportRefused, run_report
    from xrm.reports.dashboards import run_dashboard
    from xrm.reports.mailing import report_mail
    from xrm.storage.global_search import search

    store, users, accounts, deals = partner_world
    principal = store.principal(users[who])
    catalog = store.refresh()
    expected = _seen(who)
    partner = PARTNERS[who] is not None
    result = run_report(store, catalog.reports["deals_by_account"], {}, principal)
    assert result.totals["deals"] == len(expected)
    assert result.totals["amount"] == (300 if partner else 600)
    assert {r["account.name"] for r in result.rows} == (
        {PARTNERS[who]} if partner else {"North", "South"}
    )
    mail = report_mail(store, catalog.reports["deals_by_account"], {}, principal, Formats("en"))
    assert ("South" in mail.text) is (PARTNERS[who] in (None, "South"))
    board = run_dashboard(store, catalog.dashboards["partner_deals"], {}, principal, fresh=True)
    by_account, listing = board.widgets
    assert by_account.result.totals["deals"] == len(expected)
    assert sorted(r["name"] for r in listing.rows) == expected
    if partner:  # the margin is hidden from partners: the report is refused
        with pytest.raises(ReportRefused):
            run_report(store, catalog.reports["margins"], {}, principal)
    # Two partners of different accounts, same roles: the cached figures are not shared.
    if who == "north":
        south = store.principal(users["south"])
        cached = run_dashboard(store, catalog.dashboards["partner_deals"], {}, south)
        assert sorted(r["name"] for r in cached.widgets[1].rows) == _seen("south")
    # Likely duplicates name only the records of their account.
    account_rows = store.records("account", principal=principal)
    for name, account in accounts.items():
        found = [c.id for c in account_rows.find_duplicates({"phone": account["phone"]})]
        readable = not partner or name == PARTNERS[who]
        assert found == ([account["id"]] if readable else [])
    deal_rows = store.records("deal", principal=principal)
    for name, deal in deals.items():
        found = [c.id for c in deal_rows.find_duplicates({"name": name})]
        assert found == ([deal["id"]] if name in expected else [])
    # Global search groups only what the reader may read.
    results = search(catalog, lambda e: store.records(e, principal=principal), "deal")
    hits = sorted(h.title for g in results.groups if g.entity == "deal" for h in g.hits)
    assert hits == expected


def test_account_scope_through_the_api(partner_world):
    from xrm.web import create_app

    store, users, accounts, deals = partner_world
    app = create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False})
    http = app.test_client()
    headers = {"Authorization": f"Bearer {store.create_token(users['north'])}"}

    def get(path, **params):
        return http.get(f"/api/v1{path}", query_string=params, headers=headers)

    listed = get("/deal")
    assert sorted(r["name"] for r in listed.get_json()["data"]) == _seen("north")
    assert listed.get_json()["count"]["value"] == 2
    assert sorted(r["name"] for r in get("/deal", q="deal").get_json()["data"]) == _seen("north")
    south = deals["South deal 1"]["id"]
    assert get(f"/deal/{south}").status_code == 404
    assert get(f"/deal/{south}/lines").status_code == 404
    north = deals["North deal 1"]["id"]
    lines = get(f"/deal/{north}/lines").get_json()["data"]
    assert [r["text"] for r in lines] == ["North line 1"]
    assert get(f"/account/{accounts['Acme']['id']}").status_code == 404
    searched = get("/search", q="deal").get_json()
    titles = sorted(h["title"] for g in searched["groups"] for h in g["hits"])
    assert titles == _seen("north")
    before = store.records("deal").get(south)
    patched = http.patch(f"/api/v1/deal/{south}", json={"name": "taken"}, headers=headers)
    assert patched.status_code == 404
    assert http.delete(f"/api/v1/deal/{south}", headers=headers).status_code == 404
    made = http.post(
        "/api/v1/deal",
        json={"name": "for South", "account": accounts["South"]["id"]},
        headers=headers,
    )
    assert made.status_code == 422
    assert store.records("deal").get(south) == before
    created = http.post("/api/v1/deal", json={"name": "North via API"}, headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["account"] == accounts["North"]["id"]
