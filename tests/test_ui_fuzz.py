"""Property-based testing of the UI's GET routes: hypothesis drives Flask's test client over
every GET route of the UI blueprints with hostile path segments (ids past 64 bits, zero,
negative, non-ASCII digits, unknown names) and query parameters (``month``, ``next``,
``cols``, ``sort``, ``filter``, page cursors, ``q``, quick filters, the filter builder's
rows...), as an administrator and as a user with scope own and hidden fields.  Whatever
comes in, the answer is never a server error.

Derandomized with a bounded number of examples per route, so a CI run is repeatable and
takes seconds; a failure prints the request that caused it.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode

import pytest
from browser.support import ADMIN, PASSWORD, Client, world
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

#: Examples per route and user: ~40 routes for the administrator and ~25 for the limited
#: user stay within half a minute on SQLite.
EXAMPLES = 6
LIMITED = "limited@example.com"
INT64_MAX = 2**63 - 1

#: Values that broke (or could break) a parser: digits int() refuses, ids past BIGINT,
#: dates past the calendar, separators, JSON that is not a filter, NUL, paths elsewhere.
HOSTILE = [
    "",
    "0",
    "-1",
    "1",
    "2",
    str(INT64_MAX),
    str(INT64_MAX + 1),
    "9" * 40,
    "²",
    "١٢",
    "1e309",
    "NaN",
    "-",
    ",",
    ".",
    "~",
    "%",
    "\x00",
    "\ud800",
    "me",
    "__empty__",
    "true",
    "null",
    "[]",
    "{}",
    '{"all": 1}',
    '["id", "eq", 99999999999999999999999]',
    '["owner", "eq", "current_user"]',
    '["secret", "eq", "x"]',
    '["name", "between", [1]]',
    "9999-12",
    "10000-01",
    "0-1",
    "2026-13",
    "-5-1",
    "0001-01",
    "2026-02",
    "//evil.example/",
    "/\\evil.example",
    "https://evil.example",
    "name,-name,,id",
    "-" * 3,
    "account.name",
    "account.owner.name",
    "last_n_days:99999999999999999999",
    "last_n_days:²",
    "eyJ9",
    "a" * 300,
]

PARAMETERS = [
    "month",
    "mine",
    "next",
    "cols",
    "col",
    "columns_form",
    "sort",
    "filter",
    "after",
    "trail",
    "q",
    "saved",
    "before",
    "limit",
    "record_id",
    "status",
    "process",
    "entity",
    "user",
    "path",
    "op",
    "value",
    "field",
    "to",
    "fb.field",
    "fb.op",
    "fb.value",
    "fb.mode",
    "qf.owner",
    "qf.stage",
    "qf.close_date",
    "qf.account",
    "qf.amount",
    "qf.secret",
    "qf.name",
    "account",
    "regarding",
    "owner",
    "stage",
    "close_date",
    "attachment",
    "name",
]


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui-fuzz")) as built:
        store = built.store
        # scope own everywhere, and hidden fields on the entities the UI shows most
        store.customize(
            "roles",
            {
                "roles": {
                    "limited": {
                        "label": {"en": "Limited"},
                        "permissions": {
                            "*": {"create": "own", "read": "own", "update": "own", "delete": "own"}
                        },
                        "fields": {
                            "opportunity": {"amount": "hidden", "name": "read_only"},
                            "account": {"industry": "hidden"},
                        },
                    }
                }
            },
        )
        built.limited = store.add_user(LIMITED, "Lee Limited", password=PASSWORD, roles=["limited"])
        own = store.records("account").create({"name": "Own account", "owner": built.limited})
        store.records("opportunity").create(
            {
                "name": "Own deal",
                "account": own["id"],
                "close_date": "2030-01-01",
                "owner": built.limited,
            }
        )
        yield built


def _get_routes(app, *, admin: bool) -> list:
    """Every GET route of the UI blueprints (static files and the API are not the UI);
    without ``admin``, the administration's pages (which answer 403 before reading any
    parameter) are left out."""
    rules = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.partition(".")[0]
        wanted = blueprint.startswith("ui_") and (admin or blueprint != "ui_admin")
        if "GET" in rule.methods and wanted:
            rules.append(rule)
    return sorted(rules, key=lambda r: r.rule)


def _segment_values(w, catalog, name: str) -> list[str]:
    """Path segments worth trying for one argument of a route: real ones and hostile ones."""
    if name.endswith("id"):  # record_id, user_id, instance_id ...
        real = [w.acme["id"], w.deal["id"], w.initech["id"], w.seller]
        return [str(r) for r in real] + HOSTILE
    if name == "entity_name":
        return [*sorted(catalog.entities), "no_such", "ACCOUNT"] + HOSTILE[:12]
    if name in ("view_name",):
        return [*sorted(catalog.views), "no_such"] + HOSTILE[:12]
    if name == "fmt":
        return ["csv", "xlsx", "pdf", ""]
    if name in ("field_name",):
        return ["contacts", "opportunities", "lines", "name", "amount", "industry", "no_such"]
    if name == "name":  # admin pages: entities, views, option sets, roles, processes
        return [
            *sorted(catalog.entities),
            *sorted(catalog.option_sets),
            *sorted(catalog.roles),
            *sorted(catalog.processes),
            "no_such",
        ] + HOSTILE[:12]
    return ["x", "no_such"] + HOSTILE[:12]


def _value():
    """Mostly the hostile values above; otherwise random text, huge numbers, sort lists
    and random JSON."""
    other = st.one_of(
        st.text(max_size=30),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.lists(st.sampled_from(["name", "-amount", "id", "owner", "x.y", "", "stage"])).map(
            ",".join
        ),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=6,
        ).map(json.dumps),
    )
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(HOSTILE) if n < 6 else other)


def _url(rule, path_args: dict[str, str]) -> str:
    def fill(match):
        return quote(path_args[match.group(2)].encode("utf-8", "surrogatepass"), safe="")

    return re.sub(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([a-z_]+)>", fill, rule.rule)


def _run(client: Client, w, catalog, rule) -> None:
    segments = {name: st.sampled_from(_segment_values(w, catalog, name)) for name in rule.arguments}
    # each parameter present or not, independently: one request tries many at once
    params = st.fixed_dictionaries({}, optional={name: _value() for name in PARAMETERS})

    @given(path_args=st.fixed_dictionaries(segments), query=params, htmx=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def request(path_args, query, htmx):
        url = _url(rule, path_args)
        # surrogates cannot travel in a URL; a browser would have percent-encoded bytes
        pairs = [(k, v.encode("utf-8", "surrogatepass")) for k, v in query.items()]
        target = f"{url}?{urlencode(pairs)}" if pairs else url
        headers = {"HX-Request": "true", "HX-Target": "list-results"} if htmx else {}
        response = client.get(target, headers=headers)
        assert response.status_code < 500, (target, response.get_data(as_text=True)[:500])

    request()


@pytest.mark.parametrize("who", [ADMIN, LIMITED])
def test_no_ui_get_route_answers_a_server_error(w, app, who):
    client = Client(app).login(who)
    catalog = w.store.refresh()
    routes = _get_routes(app, admin=who == ADMIN)
    assert len(routes) > 15
    for rule in routes:
        _run(client, w, catalog, rule)
