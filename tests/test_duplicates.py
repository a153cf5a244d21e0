"""Duplicate rules (docs/definitions.md §28): the normalizers, the definition checks at
their lines, detection through the records service (exact and fuzzy rules, the hidden key
kept on create, update and bulk create, filled for existing rows when a rule is added),
permissions, the REST API's warning and refusal, and the form's possible-duplicates
panel; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from browser.support import PASSWORD, Client
from conftest import SOLUTIONS, write_pack

from xrm.metadata import load_catalog
from xrm.metadata.duplicates import (
    normalize_domain,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_text,
)
from xrm.metadata.problems import DefinitionError
from xrm.web import create_app
from xrm.workflow.loading import load_records

# ------------------------------------------------------------------------- normalizers


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("  Ann.Lee@Example.COM ", "ann.lee@example.com"),
        ("ann.lee+crm@example.com", "ann.lee@example.com"),
        ("A.N.N.Lee+x@GoogleMail.com", "annlee@gmail.com"),
        ("annlee@gmail.com", "annlee@gmail.com"),
        ("mailto:Пётр@Почта.рф", "пётр@почта.рф"),
        ("not an address", "not an address"),
    ],
)
def test_email_normalizer(given, expected):
    assert normalize_email(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+7 (916) 123-45-67", "9161234567"),
        ("8 916 123 45 67", "9161234567"),
        ("+79161234567", "9161234567"),
        ("916-123-4567", "9161234567"),
        ("+1 (212) 555-0100", "2125550100"),
        ("001 212 555 0100", "2125550100"),
        ("(212) 555-0100 ext. 25", "2125550100"),
        ("+7 495 123-45-67 доб. 123", "4951234567"),
        ("555-01", ""),
        ("", ""),
    ],
)
def test_phone_normalizer(given, expected):
    assert normalize_phone(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Acme, Inc.", "acme"),
        ("ACME LLC", "acme"),
        ("Acme L.L.C.", "acme"),
        ("  The   Acme   Corporation ", "the acme"),
        ("Société Générale S.A.", "societe generale"),
        ('ООО "Ромашка"', "ромашка"),
        ("АО «Ромашка»", "ромашка"),
        ("Ёлкин", "елкин"),
        ("Inc", "inc"),  # a name that is only a legal form keeps it
        ("O'Brien-Smith", "o brien smith"),
        ("Zoë", "zoe"),
    ],
)
def test_name_normalizer(given, expected):
    assert normalize_name(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://www.Acme.com/about?x=1", "acme.com"),
        ("acme.com", "acme.com"),
        ("http://shop.acme.com:8080", "shop.acme.com"),
        ("sales@acme.com", "acme.com"),
        ("www.ромашка.рф/", "ромашка.рф"),
    ],
)
def test_domain_normalizer(given, expected):
    assert normalize_domain(given) == expected


def test_text_normalizer():
    assert normalize_text("  Big   Deal\tNOW ") == "big deal now"


# ------------------------------------------------------------------ definition problems
ENTITY = """entity: firm
title: name
fields:
  name: {type: text}
  phone: {type: phone}
  size: {type: integer}
  deals: {type: children, entity: firm, via: parent}
  parent: {type: lookup, to: firm}
duplicates:
"""


def _problems(tmp_path, rules: str) -> list[str]:
    folder = write_pack(tmp_path, "dups", {"entities/firm.yaml": ENTITY + rules})
    with pytest.raises(DefinitionError) as caught:
        load_catalog([folder])
    return [str(p).removeprefix(str(tmp_path) + "/") for p in caught.value.problems]


def test_unknown_field_is_reported_at_its_value(tmp_path):
    problems = _problems(tmp_path, "  - name: same_name\n    match: [{field: nmae}]\n")
    assert len(problems) == 1
    assert problems[0].endswith(
        "firm.yaml:11:21: firm.duplicates.same_name: unknown field 'nmae'; did you mean 'name'?"
    )


def test_normalizer_must_fit_the_field_type(tmp_path):
    problems = _problems(
        tmp_path, "  - name: by_phone\n    match: [{field: phone, normalize: email}]\n"
    )
    assert len(problems) == 1
    assert problems[0].endswith(
        "firm.yaml:11:39: firm.duplicates.by_phone: normalize: email does not fit phone "
        "field 'phone' (it fits email, text)"
    )


def test_fuzzy_needs_a_text_field(tmp_path):
    problems = _problems(tmp_path, "  - name: by_size\n    match: [{field: size, fuzzy: 0.9}]\n")
    assert len(problems) == 1
    assert problems[0].endswith(
        "firm.yaml:11:34: firm.duplicates.by_size: fuzzy needs a text field compared with "
        "normalize: name or text; 'size' is integer with normalize: exact"
    )


def test_two_fuzzy_fields_and_a_field_without_a_column(tmp_path):
    problems = _problems(
        tmp_path,
        "  - name: odd\n"
        "    match:\n"
        "      - {field: name, fuzzy: 0.8}\n"
        "      - {field: phone, normalize: text, fuzzy: 0.8}\n"
        "      - {field: deals}\n",
    )
    assert [p.split(": ", 1)[0].rsplit(":", 2)[-2:] for p in problems] == [
        ["13", "48"],
        ["14", "17"],
    ]
    assert "at most one field fuzzily" in problems[0]
    assert "field 'deals' (children) has no value a rule can match" in problems[1]


def test_duplicate_rule_names(tmp_path):
    problems = _problems(
        tmp_path,
        "  - name: same\n    match: [{field: name}]\n  - name: same\n    match: [{field: phone}]\n",
    )
    assert len(problems) == 1
    assert problems[0].endswith("firm.yaml:12:11: firm: duplicate rule 'same' is defined twice")


def test_schema_refuses_unknown_normalizer_and_bad_threshold(tmp_path):
    problems = _problems(
        tmp_path,
        "  - name: a\n    match: [{field: name, normalize: soundex}]\n"
        "  - name: b\n    match: [{field: name, fuzzy: 1.5}]\n",
    )
    assert len(problems) == 2
    assert ":11:" in problems[0] and "soundex" in problems[0]
    assert ":13:" in problems[1] and "1.5" in problems[1]


def test_an_extension_adds_rules_and_may_not_reuse_a_name(tmp_path):
    extend = (
        "extend: contact\n"
        "duplicates:\n"
        "  - name: same_job_in_account\n"
        "    match: [{field: job_title, normalize: text}, {field: account}]\n"
    )
    folder = write_pack(tmp_path, "ext", {"entities/contact.yaml": extend}, {"core": ">=1.0"})
    catalog = load_catalog([SOLUTIONS / "core", folder])
    assert catalog.entity("contact").duplicates[-1].name == "same_job_in_account"
    clash = extend + "  - name: same_email\n    match: [{field: email}]\n"
    folder = write_pack(tmp_path / "b", "ext", {"entities/contact.yaml": clash}, {"core": ">=1.0"})
    with pytest.raises(DefinitionError) as caught:
        load_catalog([SOLUTIONS / "core", folder])
    assert [str(p).split("contact.yaml:", 1)[1] for p in caught.value.problems] == [
        "5:11: contact: duplicate rule 'same_email' is defined twice"
    ]


def test_shipped_rules_compile():
    catalog = load_catalog([SOLUTIONS / "core", SOLUTIONS / "sales"])
    names = {e: [r.name for r in catalog.entity(e).duplicates] for e in ("contact", "account")}
    assert names == {
        "contact": ["same_email", "same_phone", "same_mobile", "same_name_in_account"],
        # sales adds same_email to core's account (lead conversion matches a lead's email)
        "account": ["same_name", "similar_name", "same_phone", "same_website", "same_email"],
    }
    lead = catalog.entity("lead").duplicates
    assert [r.name for r in lead] == ["same_email", "same_phone", "same_name_at_company"]


# ---------------------------------------------------------------------- detection
def _found(records, values, **kw):
    return [(c.id, sorted(c.rules)) for c in records.find_duplicates(values, **kw)]


def test_exact_rules_find_normalized_matches(store):
    accounts = store.records("account")
    acme = accounts.create(
        {"name": "Acme, Inc.", "phone": "+7 916 123-45-67", "website": "https://www.acme.com/"}
    )
    other = accounts.create({"name": "Globex"})
    assert _found(accounts, {"name": "ACME LLC"}) == [(acme["id"], ["same_name", "similar_name"])]
    assert _found(accounts, {"phone": "8 (916) 123 45 67"}) == [(acme["id"], ["same_phone"])]
    assert _found(accounts, {"website": "acme.com/contact"}) == [(acme["id"], ["same_website"])]
    assert _found(accounts, {"name": "Initech"}) == []
    assert _found(accounts, {"name": "Acme"}, exclude_id=acme["id"]) == []
    assert _found(accounts, {"name": "Globex Corp."}) == [
        (other["id"], ["same_name", "similar_name"])
    ]
    # the hidden key is not part of a record: not read, not written back, not given to
    # processes (whose webhooks send the record)
    assert not [k for k in accounts.get(acme["id"]) if k.startswith("_")]
    assert not [k for k in accounts.query().rows[0] if k.startswith("_")]
    assert not [k for k in accounts.update(acme["id"], {"rating": 3}) if k.startswith("_")]
    with store.engine.connect() as conn:
        loaded = load_records(conn, store.refresh(), "account", [acme["id"]])[acme["id"]]
    assert loaded["name"] == "Acme, Inc." and not [k for k in loaded if k.startswith("_")]

    contacts = store.records("contact")
    ivanov = contacts.create(
        {
            "first_name": "Пётр",
            "last_name": "Иванов",
            "account": acme["id"],
            "email": "P.Ivanov+news@gmail.com",
        }
    )
    assert _found(contacts, {"email": "pivanov@googlemail.com"}) == [(ivanov["id"], ["same_email"])]
    assert _found(
        contacts, {"first_name": "ПЕТР", "last_name": "иванов", "account": str(acme["id"])}
    ) == [(ivanov["id"], ["same_name_in_account"])]
    # the same name in another account, or with no account, is another person
    assert (
        _found(contacts, {"first_name": "Петр", "last_name": "Иванов", "account": other["id"]})
        == []
    )
    assert _found(contacts, {"first_name": "Петр", "last_name": "Иванов"}) == []


def test_fuzzy_rule_scores_similar_names(store):
    accounts = store.records("account")
    target = accounts.create({"name": "Northwind Traders"})
    accounts.create({"name": "Nothing Alike Ltd"})
    found = accounts.find_duplicates({"name": "Northwind Tradres LLC"})
    assert [(c.id, c.rules) for c in found] == [(target["id"], ["similar_name"])]
    assert 0.85 <= found[0].score < 1
    assert found[0].title == "Northwind Traders"
    assert accounts.find_duplicates({"name": "Northward Tools"}) == []


def test_key_is_kept_on_update_and_bulk_create(store):
    contacts = store.records("contact")
    result = contacts.bulk_create(
        [
            {"last_name": "Lee", "email": "ann@example.com"},
            {"last_name": "Kim", "email": "kim@example.com", "phone": "+12125550100"},
        ]
    )
    first, second = result.ids
    assert _found(contacts, {"email": "ANN@example.com"}) == [(first, ["same_email"])]
    assert _found(contacts, {"phone": "(212) 555-0100"}) == [(second, ["same_phone"])]
    contacts.update(first, {"email": "ann.lee@example.org"})
    assert _found(contacts, {"email": "ann@example.com"}) == []
    assert _found(contacts, {"email": "Ann.Lee@Example.org"}) == [(first, ["same_email"])]
    contacts.update(first, {"email": None})
    assert _found(contacts, {"email": "ann.lee@example.org"}) == []
    contacts.update(second, {"job_title": "CTO"})  # unrelated change keeps the keys
    assert _found(contacts, {"email": "kim@example.com"}) == [(second, ["same_email"])]


RULELESS = """entity: member
title: name
fields:
  name: {type: text}
  email: {type: email}
"""
WITH_RULES = (
    RULELESS
    + """duplicates:
  - name: same_email
    match: [{field: email}]
  - name: similar_name
    match: [{field: name, normalize: name, fuzzy: 0.8}]
"""
)


def test_keys_are_filled_when_a_rule_is_added(database, tmp_path):
    store = database.open()
    try:
        store.install([write_pack(tmp_path / "v1", "club", {"entities/member.yaml": RULELESS})])
        members = store.records("member")
        ids = members.bulk_create(
            [{"name": f"Member {n:04d}", "email": f"m{n}@club.example.com"} for n in range(1500)]
        ).ids
        assert members.find_duplicates({"email": "m7@club.example.com"}) == []
        _, plan = store.install(
            [
                write_pack(
                    tmp_path / "v2", "club", {"entities/member.yaml": WITH_RULES}, version="1.1.0"
                )
            ]
        )
        assert len(plan.fill_keys) == 2
        assert any("computed for existing rows" in line for line in plan.lines())
        members = store.records("member")
        assert _found(members, {"email": "M7@Club.example.com"}) == [(ids[7], ["same_email"])]
        assert _found(members, {"email": "m1499@club.example.com"}) == [(ids[1499], ["same_email"])]
        fuzzy = members.find_duplicates({"name": "Membr 0042"})
        assert ids[42] in [c.id for c in fuzzy]
    finally:
        store.close()


ROLES = """roles:
  own_contacts:
    permissions:
      contact: {create: own, read: own, update: own}
      account: {read: all}
  no_email:
    permissions:
      contact: {create: all, read: all}
    fields:
      contact: {email: hidden}
"""


@pytest.fixture
def people(database, tmp_path):
    store = database.open()
    store.install(
        [
            SOLUTIONS / "core",
            write_pack(tmp_path, "perm", {"roles/r.yaml": ROLES}, {"core": ">=1.0"}),
        ]
    )
    users = {
        "ann": store.add_user("ann@x.test", password=PASSWORD, roles=["own_contacts"]),
        "bob": store.add_user("bob@x.test", password=PASSWORD, roles=["own_contacts"]),
        "eve": store.add_user("eve@x.test", password=PASSWORD, roles=["no_email"]),
    }
    yield store, users
    store.close()


def test_a_record_the_user_cannot_read_is_not_a_candidate(people):
    store, users = people
    as_ann = store.records("contact", principal=store.principal(users["ann"]))
    as_bob = store.records("contact", principal=store.principal(users["bob"]))
    mine = as_ann.create({"last_name": "Ross", "email": "ross@example.com"})
    assert _found(as_ann, {"email": "ross@example.com"}) == [(mine["id"], ["same_email"])]
    assert as_bob.find_duplicates({"email": "ross@example.com"}) == []
    # a rule over a field hidden from the user is not used for them
    as_eve = store.records("contact", principal=store.principal(users["eve"]))
    assert as_eve.find_duplicates({"email": "ross@example.com"}) == []


# ----------------------------------------------------------------------------- HTTP
@pytest.fixture
def api(people):
    store, users = people
    app = create_app(store, {"TESTING": True, "RATELIMIT_ENABLED": False})
    client = app.test_client()
    headers = {
        who: {"Authorization": f"Bearer {store.create_token(uid)}"} for who, uid in users.items()
    }
    return store, client, headers


def test_api_create_warns_and_refuses_on_request(api):
    store, client, headers = api
    first = client.post(
        "/api/v1/contact",
        json={"last_name": "Ross", "email": "ross@example.com"},
        headers=headers["ann"],
    )
    assert first.status_code == 201 and "_warnings" not in first.get_json()
    second = client.post(
        "/api/v1/contact",
        json={"last_name": "Ross", "email": "Ross+2@example.com"},
        headers=headers["ann"],
    )
    assert second.status_code == 201
    warning = second.get_json()["_warnings"][0]
    assert warning["code"] == "possible_duplicates"
    assert [(c["id"], c["rules"], c["href"]) for c in warning["candidates"]] == [
        (first.get_json()["id"], ["same_email"], f"/api/v1/contact/{first.get_json()['id']}")
    ]
    # bob cannot read ann's contacts: no warning, nothing learned
    third = client.post(
        "/api/v1/contact",
        json={"last_name": "R", "email": "ross@example.com"},
        headers=headers["bob"],
    )
    assert third.status_code == 201 and "_warnings" not in third.get_json()
    count = store.records("contact").count().value
    refused = client.post(
        "/api/v1/contact?on_duplicate=refuse",
        json={"last_name": "Ross", "email": "ross@example.com"},
        headers=headers["ann"],
    )
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["type"] == "urn:xrm:problem:possible-duplicates"
    assert {c["id"] for c in body["candidates"]} == {
        first.get_json()["id"],
        second.get_json()["id"],
    }
    assert store.records("contact").count().value == count
    bad = client.post(
        "/api/v1/contact?on_duplicate=maybe", json={"last_name": "X"}, headers=headers["ann"]
    )
    assert bad.status_code == 400


def test_api_duplicates_endpoint(api):
    _, client, headers = api
    made = client.post(
        "/api/v1/contact",
        json={"last_name": "Ross", "phone": "+12125550100"},
        headers=headers["ann"],
    )
    found = client.get(
        "/api/v1/contact/duplicates", query_string={"phone": "212-555-0100"}, headers=headers["ann"]
    )
    assert found.status_code == 200
    assert [(c["id"], c["rules"], c["score"]) for c in found.get_json()["data"]] == [
        (made.get_json()["id"], ["same_phone"], 1.0)
    ]
    excluded = client.get(
        "/api/v1/contact/duplicates",
        query_string={"phone": "212-555-0100", "exclude": made.get_json()["id"]},
        headers=headers["ann"],
    )
    assert excluded.get_json()["data"] == []
    unknown = client.get(
        "/api/v1/contact/duplicates", query_string={"phnoe": "1"}, headers=headers["ann"]
    )
    assert unknown.status_code == 400 and "did you mean 'phone'" in unknown.get_json()["detail"]
    unmatched = client.get(
        "/api/v1/contact/duplicates", query_string={"job_title": "x"}, headers=headers["ann"]
    )
    assert unmatched.status_code == 400 and "in no duplicate rule" in unmatched.get_json()["detail"]
    document = client.get("/api/v1/openapi.json", headers=headers["ann"]).get_json()
    assert "/api/v1/contact/duplicates" in document["paths"]
    create = document["paths"]["/api/v1/contact"]["post"]
    assert (
        create["parameters"][0]["name"] == "on_duplicate" and "_warnings" in create["description"]
    )


def test_form_shows_possible_duplicates(api):
    store, client, _ = api
    store.add_user("root@x.test", password=PASSWORD, roles=["administrator"])
    store.records("account").create({"name": "Acme Inc."})
    ui = Client(client.application).login("root@x.test")
    page = ui.get("/r/account/new")
    assert page.status_code == 200
    assert 'data-testid="possible-duplicates"' in page.get_data(as_text=True)
    panel = ui.post("/r/account/duplicates", {"name": "ACME llc"}, htmx=True)
    assert panel.status_code == 200
    text = panel.get_data(as_text=True)
    assert "Possible duplicates" in text and "Acme Inc." in text
    assert "Same name" in text and "Similar name" in text
    empty = ui.post("/r/account/duplicates", {"name": "Zeta"}, htmx=True)
    assert empty.status_code == 200 and "Possible duplicates" not in empty.get_data(as_text=True)
    refused = ui.post("/r/account/duplicates", {"name": "Acme"}, csrf=False, htmx=True)
    assert refused.status_code in (400, 403)
    # in Russian
    store.add_user("ru@x.test", password=PASSWORD, roles=["administrator"], locale="ru")
    ru = Client(client.application).login("ru@x.test")
    text = ru.post("/r/account/duplicates", {"name": "Acme"}, htmx=True).get_data(as_text=True)
    assert "Возможные дубликаты" in text and "То же название" in text
