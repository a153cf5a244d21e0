"""Global search (storage/global_search.py, GET /api/v1/search, the /search pages): every
entity the reader may read, ranked and grouped, under the same record and field security
as a list; snippets mark the matched words; recent records come from the record pages the
user opened."""

from __future__ import annotations

import pytest
from browser.support import PASSWORD, Client, make_app
from conftest import write_pack

from xrm.storage import global_search as GS

PACK = {
    "entities/firm.yaml": """
entity: firm
title: name
search: [name, city]
fields:
  name: {type: text, required: true}
  city: {type: text}
""",
    "entities/deal.yaml": """
entity: deal
title: name
search: [name, secret, notes]
fields:
  name: {type: text, required: true}
  secret: {type: text}
  notes: {type: long_text}
  firm: {type: lookup, to: firm}
""",
    "entities/line.yaml": """
entity: line
title: firm
search: [memo]
fields:
  firm: {type: lookup, to: firm}
  memo: {type: text}
""",
    "entities/plain.yaml": """
entity: plain
title: name
fields:
  name: {type: text}
""",
    "roles/roles.yaml": """
roles:
  seller:
    permissions:
      deal: {create: own, read: own, update: own, delete: own}
      firm: {create: all, read: all, update: all}
      line: {read: all}
      plain: {read: all}
    fields:
      deal: {secret: hidden}
  no_firms:
    permissions:
      deal: {read: all}
      line: {read: all}
      firm: {read: none}
  boss:
    admin: true
""",
}


@pytest.fixture
def world(database, tmp_path):
    store = database.open()
    store.install([write_pack(tmp_path, "gs", PACK)])
    users = {
        "seller": store.add_user("seller@x.test", "Sel", password=PASSWORD, roles=["seller"]),
        "other": store.add_user("other@x.test", "Oth", password=PASSWORD, roles=["seller"]),
        "no_firms": store.add_user("nof@x.test", "Nof", password=PASSWORD, roles=["no_firms"]),
        "admin": store.add_user("adm@x.test", "Adm", password=PASSWORD, roles=["boss"]),
    }
    firms = store.records("firm")
    deals = store.records("deal")
    made = {
        "orion": firms.create({"name": "Orion Works", "city": "Oslo"}),
        "vega": firms.create({"name": "Vega Trading", "city": "Orion Bay"}),
    }
    made["mine"] = deals.create(
        {
            "name": "Orion renewal",
            "secret": "zebra code",
            "notes": "Talked about the spring budget and the Orion licence count.",
            "firm": made["orion"]["id"],
            "owner": users["seller"],
        }
    )
    made["theirs"] = deals.create(
        {"name": "Orion expansion", "secret": "zebra", "owner": users["other"]}
    )
    made["line"] = store.records("line").create({"firm": made["vega"]["id"], "memo": "orion kit"})
    yield store, users, made
    store.close()


def _search(store, user_id, text, **options):
    principal = store.principal(user_id)
    return GS.search(
        store.catalog, lambda n: store.records(n, principal=principal), text, **options
    )


def _found(results) -> dict[str, list[int]]:
    return {g.entity: [h.id for h in g.hits] for g in results.groups}


def test_grouped_by_entity_under_the_row_scope(world):
    store, users, made = world
    found = _found(_search(store, users["seller"], "orion"))
    # the other seller's deal is not theirs to read: never a hit
    assert found == {
        "firm": [made["orion"]["id"], made["vega"]["id"]],
        "deal": [made["mine"]["id"]],
        "line": [made["line"]["id"]],
    }
    assert made["theirs"]["id"] in _found(_search(store, users["admin"], "orion"))["deal"]


def test_a_hidden_field_is_neither_matched_nor_shown(world):
    store, users, made = world
    assert _search(store, users["seller"], "zebra").groups == ()
    admin = _search(store, users["admin"], "zebra")
    assert sorted(_found(admin)["deal"]) == sorted([made["mine"]["id"], made["theirs"]["id"]])
    assert {h.snippet.field for h in admin.groups[0].hits} == {"secret"}
    # a match in another field of a record with a hidden field shows no hidden snippet
    for group in _search(store, users["seller"], "orion").groups:
        for hit in group.hits:
            assert hit.snippet is None or hit.snippet.field != "secret"


def test_an_entity_the_reader_may_not_read_is_not_searched(world):
    store, users, made = world
    found = _found(_search(store, users["no_firms"], "orion"))
    assert "firm" not in found
    # the line's title is its firm's name, which this reader may not read: #id instead
    line = next(g for g in _search(store, users["no_firms"], "kit").groups if g.entity == "line")
    assert line.hits[0].title == f"#{made['line']['id']}"
    with pytest.raises(GS.SearchError, match="unknown entity 'firm'"):
        _search(store, users["no_firms"], "orion", entities=["firm"])


def test_ranked_title_first_with_marked_snippets(world):
    store, users, made = world
    firms = next(g for g in _search(store, users["seller"], "orion").groups if g.entity == "firm")
    # the firm named Orion comes before the one whose city is Orion Bay
    assert [h.id for h in firms.hits] == [made["orion"]["id"], made["vega"]["id"]]
    assert firms.hits[0].rank > firms.hits[1].rank
    orion, vega = firms.hits
    assert orion.title == "Orion Works" and orion.title_marks == ((0, 5),)
    assert orion.title_parts() == [("Orion", True), (" Works", False)]
    assert vega.snippet.field == "city"
    assert vega.snippet.parts() == [("Orion", True), (" Bay", False)]
    # prefixes match, every word must, and the longer text is cut around the match
    deal = _search(store, users["seller"], "orio lic").groups
    (hit,) = [h for g in deal if g.entity == "deal" for h in g.hits]
    assert hit.snippet.field == "notes"
    marked = [text for text, on in hit.snippet.parts() if on]
    assert marked == ["Orio", "lic"]
    assert _search(store, users["seller"], "orion nothingmatches").groups == ()


def test_groups_limit_and_entities(world):
    store, users, made = world
    results = _search(store, users["admin"], "orion", limit=1)
    by = {g.entity: g for g in results.groups}
    assert len(by["firm"].hits) == 1 and by["firm"].more
    assert len(by["line"].hits) == 1 and not by["line"].more
    only = _search(store, users["admin"], "orion", entities=["deal"])
    assert [g.entity for g in only.groups] == ["deal"]
    # an entity with no searchable fields, an unknown one and a bad limit are refused
    with pytest.raises(GS.SearchError, match="plain has no searchable fields"):
        _search(store, users["seller"], "x", entities=["plain"])
    with pytest.raises(GS.SearchError, match="did you mean 'deal'"):
        _search(store, users["seller"], "x", entities=["deals"])
    with pytest.raises(GS.SearchError, match="limit"):
        _search(store, users["seller"], "x", limit=0)
    # punctuation alone is no search at all
    assert _search(store, users["seller"], " ?! ").groups == ()


def test_recent_records_are_the_readers_own_and_still_readable(world):
    store, users, made = world
    seller = users["seller"]
    GS.remember(store, seller, "firm", made["vega"]["id"])
    GS.remember(store, seller, "deal", made["mine"]["id"])
    GS.remember(store, seller, "deal", made["theirs"]["id"])  # no longer theirs to read
    GS.remember(store, seller, "firm", made["orion"]["id"])
    GS.remember(store, users["other"], "firm", made["vega"]["id"])
    principal = store.principal(seller)
    recent = GS.recent(
        store.catalog, lambda n: store.records(n, principal=principal), store, seller
    )
    assert [(h.entity, h.id) for h in recent] == [
        ("firm", made["orion"]["id"]),
        ("deal", made["mine"]["id"]),
        ("firm", made["vega"]["id"]),
    ]
    assert recent[1].title == "Orion renewal"
    # opening a record again moves it to the top without a second row, and only the
    # newest RECENT_KEEP are kept
    GS.remember(store, seller, "firm", made["vega"]["id"])
    for ident in range(1000, 1000 + GS.RECENT_KEEP):
        GS.remember(store, seller, "deal", ident)
    import sqlalchemy as sa

    from xrm.storage import tables as T

    with store.engine.connect() as conn:
        kept = conn.execute(
            sa.select(sa.func.count()).where(T.recent_records.c.user_id == seller)
        ).scalar_one()
    assert kept <= GS.RECENT_KEEP


# ----------------------------------------------------------------------------- HTTP
@pytest.fixture
def app(world):
    store, _users, _made = world
    return make_app(store)


def _api(app, store, user_id):
    token = store.create_token(user_id, "tests")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_api_search(app, world):
    store, users, made = world
    api = _api(app, store, users["seller"])
    body = api.get("/api/v1/search?q=orion&limit=1").get_json()
    assert body["query"] == "orion" and body["words"] == ["orion"]
    groups = {g["entity"]: g for g in body["groups"]}
    assert set(groups) == {"firm", "deal", "line"}
    firm = groups["firm"]
    assert firm["more"] is True and firm["label"] == "Firm"
    (hit,) = firm["hits"]
    assert hit["id"] == made["orion"]["id"] and hit["title"] == "Orion Works"
    assert hit["title_highlights"] == [[0, 5]]
    assert hit["url"] == f"/api/v1/firm/{made['orion']['id']}"
    deal = groups["deal"]["hits"][0]
    assert deal["snippet"]["field"] == "notes" and deal["snippet"]["label"] == "Notes"
    text, (start, end) = deal["snippet"]["text"], deal["snippet"]["highlights"][0]
    assert text[start:end] == "Orion"

    assert api.get("/api/v1/search?q=zebra").get_json()["groups"] == []
    only = api.get("/api/v1/search?q=orion&entities=deal,line").get_json()
    assert [g["entity"] for g in only["groups"]] == ["deal", "line"]


def test_api_refuses_bad_arguments(app, world):
    store, users, _made = world
    api = _api(app, store, users["seller"])
    for query, parameter, message in [
        ("q=x&limit=0", "limit", "limit must be a whole number from 1 to 50"),
        ("q=x&limit=many", None, "limit must be a whole number from 1 to 50"),
        ("q=x&entities=nope", "entities", "unknown entity 'nope'"),
    ]:
        response = api.get(f"/api/v1/search?{query}")
        assert response.status_code == 400
        problem = response.get_json()
        assert message in problem["detail"]
        if parameter:
            assert problem["parameter"] == parameter
    assert app.test_client().get("/api/v1/search?q=x").status_code == 401


def test_api_without_text_answers_recent_records(app, world):
    store, users, made = world
    client = Client(app).login("seller@x.test")
    assert client.get(f"/r/firm/{made['vega']['id']}").status_code == 200
    assert client.get(f"/r/deal/{made['mine']['id']}").status_code == 200
    body = _api(app, store, users["seller"]).get("/api/v1/search").get_json()
    assert body["groups"] == []
    assert [(h["entity"], h["id"]) for h in body["recent"]] == [
        ("deal", made["mine"]["id"]),
        ("firm", made["vega"]["id"]),
    ]
    assert "snippet" not in body["recent"][0]


def test_openapi_documents_the_endpoint(app, world):
    store, users, _made = world
    document = _api(app, store, users["admin"]).get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/search"]["get"]
    assert operation["operationId"] == "global_search"
    assert {p["name"] for p in operation["parameters"]} == {"q", "entities", "limit"}
    assert "search.Result" in document["components"]["schemas"]


def test_pages_show_grouped_results_and_recent_records(app, world):
    store, users, made = world
    client = Client(app).login("seller@x.test")
    page = client.get("/search?q=orion")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-testid="search-group" data-entity="firm"' in html
    assert "<mark>Orion</mark> Works" in html
    assert "Orion expansion" not in html  # another seller's deal
    assert f'href="/r/firm/{made["orion"]["id"]}"' in html
    one = client.get("/search?q=orion&entity=firm").get_data(as_text=True)
    assert 'data-entity="deal"' not in one and 'data-entity="firm"' in one

    suggest = client.get("/search/suggest?q=orion", headers={"HX-Request": "true"})
    text = suggest.get_data(as_text=True)
    assert suggest.status_code == 200 and "<html" not in text
    assert 'data-testid="search-all"' in text and "<mark>Orion</mark>" in text
    # what a user typed comes back escaped
    odd = client.get("/search/suggest?q=<b>orion").get_data(as_text=True)
    assert "<b>" not in odd and "&lt;b&gt;orion" in odd

    assert "Records you open appear here." in client.get("/search/suggest?q=").get_data(
        as_text=True
    )
    client.get(f"/r/deal/{made['mine']['id']}")
    recent = client.get("/search/suggest?q=").get_data(as_text=True)
    assert "Orion renewal" in recent and f"/r/deal/{made['mine']['id']}" in recent


def test_the_box_is_in_every_page_and_speaks_russian(app, world):
    store, users, _made = world
    client = Client(app).login("seller@x.test")
    home = client.get("/").get_data(as_text=True)
    assert 'id="global-search"' in home and 'aria-keyshortcuts="/ Control+K"' in home
    store.set_preferences(users["seller"], locale="ru")
    page = client.get("/search?q=nothinglikethis").get_data(as_text=True)
    assert "По запросу «nothinglikethis» ничего не найдено." in page
    assert "Поиск по всему… (клавиша /)" in page


@pytest.mark.parametrize("text", ["acme", "acme-corp", "ACME corp", "acme-corp.com", "sales@acme"])
def test_punctuated_words_are_found_by_their_parts(world, text):
    """An email address, a host or a hyphenated word is words on both databases (PostgreSQL's
    parser would keep ``sales@acme-corp.com`` as one token): the global search and a list's
    search find it by any of its parts."""
    store, users, made = world
    firm = store.records("firm").create({"name": "Hyphen Trading", "city": "sales@acme-corp.com"})
    found = _found(_search(store, users["admin"], text))
    assert found.get("firm") == [firm["id"]]
    listed = store.records("firm").query(search=text, fields=["name"]).rows
    assert [r["id"] for r in listed] == [firm["id"]]
    (hit,) = next(g for g in _search(store, users["admin"], text).groups).hits
    assert hit.snippet.field == "city"
