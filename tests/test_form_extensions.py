"""Form extensions: a pack adds tabs to another pack's form (``extend: <form>``), joins
an existing tab by ``tab:`` or by label, and is checked at its own file and line; fields
a pack adds to another pack's entity that no form places get a tab of their own; the
administrator's customized form keeps its choices while later packs still add theirs;
and the record page shows the sales tab of core's account form."""

from __future__ import annotations

import html
import json
import re
import textwrap
from pathlib import Path

import pytest
from browser.support import ADMIN, SELLER, Client, world

from xrm.metadata import Document, build_catalog, check, load_catalog, resolve_packs
from xrm.metadata.problems import DefinitionError, Problems

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "xrm" / "solutions" / "packs" / "core"
SALES = ROOT / "xrm" / "solutions" / "packs" / "sales"

#: Pack p owns entities a and b and their forms; pack q (depends on p) adds fields to a.
BASE = {
    "p/solution.yaml": "solution: p\nversion: 1.0.0\nlabel: {en: Base, ru: База}\n",
    "p/entities/a.yaml": """\
        entity: a
        fields:
          name: {type: text}
          phone: {type: text}
          notes: {type: long_text}
        """,
    "p/entities/b.yaml": "entity: b\nfields:\n  name: {type: text}\n",
    "p/forms/a.yaml": """\
        forms:
          a_main:
            entity: a
            default: true
            tabs:
              - label: {en: General, ru: Основное}
                sections:
                  - columns: [[name, phone]]
              - label: {en: Details, ru: Подробности}
                sections:
                  - columns: [[notes]]
          b_main:
            entity: b
            tabs:
              - sections:
                  - columns: [[name]]
        """,
    "q/solution.yaml": "solution: q\nversion: 1.0.0\nlabel: {en: Deals, ru: Сделки}\ndepends: {p: '*'}\n",
    "q/entities/item.yaml": "entity: item\nfields:\n  title: {type: text}\n  a: {type: lookup, to: a}\n",
    "q/entities/a.yaml": """\
        extend: a
        fields:
          items: {type: children, entity: item, via: a, label: {en: Items, ru: Позиции}}
          budget: {type: money}
          region: {type: text}
        """,
}


@pytest.fixture
def packs(tmp_path, monkeypatch):
    """Write BASE plus the given files under tmp_path; return check()'s (catalog, problems)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XRM_SOLUTIONS_PATH", raising=False)

    def run(files: dict[str, str]):
        for relative, text in {**BASE, **files}.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        roots = sorted({relative.split("/")[0] for relative in {**BASE, **files}})
        catalog, problems = check(roots)
        return catalog, [str(p) for p in problems]

    return run


def outline(form) -> list[tuple[str, list]]:
    """A form as (tab's English label, [fields of a section, or the related list's name])."""
    return [
        (
            tab.label.get("en") if tab.label else "",
            [
                section.related
                if section.related
                else [item.field for column in section.columns for item in column]
                for section in tab.sections
            ],
        )
        for tab in form.tabs
    ]


def extension(body: str) -> dict[str, str]:
    return {"q/forms/a.yaml": "forms:\n" + textwrap.indent(textwrap.dedent(body), "  ")}


# ------------------------------------------------------------------------ the shipped packs
def test_core_and_sales_account_form_has_the_sales_tab():
    catalog = load_catalog([CORE, SALES])
    form = catalog.form_for("account")
    assert form.name == "account_main" and form.solution == "core"
    assert outline(form) == [
        (
            "General",
            [
                [
                    "name",
                    "account_type",
                    "industry",
                    "parent",
                    "rating",
                    "email",
                    "phone",
                    "website",
                    "tax_id",
                    "tags",
                ],
                [
                    "billing_street",
                    "billing_city",
                    "billing_country",
                    "employees",
                    "annual_revenue",
                ],
                "contacts",
            ],
        ),
        (
            "Sales",
            [
                ["open_pipeline", "won_revenue", "price_list", "territory"],
                "opportunities",
                "converted_leads",
                "quotes",
                "orders",
            ],
        ),
        ("Details", [["description"]]),
    ]
    sales = form.tabs[1]
    assert sales.label.get("ru") == "Продажи"
    assert [s.label.get("ru") for s in sales.sections] == [
        "Воронка",
        "Сделки",
        "Квалифицированные лиды",
        "КП",
        "Заказы",
    ]
    assert form.left_out == ()  # every field of account is on it
    # core alone: the account form is core's own
    assert [t.label.get("en") for t in load_catalog([CORE]).form_for("account").tabs] == [
        "General",
        "Details",
    ]


def test_a_field_sales_adds_to_contact_that_no_form_places_gets_the_sales_tab():
    form = load_catalog([CORE, SALES]).form_for("contact")
    assert outline(form)[-1] == ("Sales", ["opportunities"])
    assert form.tabs[-1].label.get("ru") == "Продажи"
    assert form.tabs[-1].sections[0].label.get("ru") == "Сделки"


# ------------------------------------------------------------------------ merging
def test_an_extension_adds_a_tab_after_another_and_joins_a_named_tab(packs):
    catalog, problems = packs(
        extension("""\
            a_q:
              extend: a_main
              entity: a
              tabs:
                - label: {en: Deals, ru: Сделки}
                  after: general
                  sections:
                    - related: items
                - tab: General
                  sections:
                    - label: Money
                      columns: [[budget], [region]]
            """)
    )
    assert problems == []
    form = catalog.forms["a_main"]
    assert outline(form) == [
        ("General", [["name", "phone"], ["budget", "region"]]),
        ("Deals", ["items"]),
        ("Details", [["notes"]]),
    ]
    assert form.tabs[0].label.get("ru") == "Основное"  # the joined tab keeps its label
    assert form.tabs[0].sections[1].label.get() == "Money"
    assert list(catalog.forms) == ["a_main", "b_main"]  # an extension is no form of its own


def test_a_tab_with_the_same_label_in_another_language_joins_it(packs):
    catalog, problems = packs(
        extension("""\
            a_q:
              extend: a_main
              tabs:
                - label: {ru: подробности}
                  sections:
                    - columns: [[budget, region]]
                    - related: items
            """)
    )
    assert problems == []
    assert outline(catalog.forms["a_main"]) == [
        ("General", [["name", "phone"]]),
        ("Details", [["notes"], ["budget", "region"], "items"]),
    ]


# ------------------------------------------------------------------------ problems
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "a_q:\n  extend: a_mian\n  tabs: [{sections: [{columns: [[budget]]}]}]\n",
            "q/forms/a.yaml:3:13: forms.a_q: extends unknown form 'a_mian'; did you mean 'a_main'?",
        ),
        (
            "a_q:\n  extend: b_main\n  entity: a\n  tabs: [{sections: [{columns: [[budget]]}]}]\n",
            "q/forms/a.yaml:4:13: forms.a_q: extends form 'b_main', which lays out b, not a",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - tab: Genral\n"
            "      sections: [{columns: [[budget]]}]\n",
            "q/forms/a.yaml:5:14: forms.a_q: form 'a_main' has no tab 'Genral' (tabs are named "
            "by their English label: General, Details); did you mean 'General'?",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - sections: [{columns: [[budget, phone]]}]\n",
            "q/forms/a.yaml:5:40: forms.a_q: field 'phone' is already on form 'a_main' "
            "(placed by 'a_main' at p/forms/a.yaml:8:30)",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - sections: [{columns: [[budget, budgt]]}]\n",
            "q/forms/a.yaml:5:40: forms.a_q: a has no field 'budgt'; did you mean 'budget'?",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - sections: [{columns: [[budget]]}, {related: name}]\n",
            "q/forms/a.yaml:5:53: forms.a_q: related 'name' must be a children or many_to_many "
            "field of a",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - label: X\n      after: Nowhere\n"
            "      sections: [{columns: [[budget]]}]\n",
            "q/forms/a.yaml:6:16: forms.a_q: form 'a_main' has no tab 'Nowhere' to put this "
            "tab after",
        ),
        (
            "a_q:\n  extend: a_main\n  tabs:\n    - tab: General\n      label: Main\n"
            "      sections: [{columns: [[budget]]}]\n",
            "q/forms/a.yaml:6:16: forms.a_q: a tab merged into tab 'General' keeps that tab's "
            "label; leave label out",
        ),
        (
            "a_q:\n  extend: a_main\n  label: Mine\n  tabs: [{sections: [{columns: [[budget]]}]}]\n",
            "q/forms/a.yaml:4:5: unknown key 'label' in forms.a_q (expected one of extend, "
            "entity, tabs)",
        ),
    ],
    ids=[
        "unknown-form",
        "other-entity",
        "unknown-tab",
        "placed-twice",
        "unknown-field",
        "bad-related",
        "unknown-after",
        "tab-and-label",
        "form-keys",
    ],
)
def test_extension_problems_point_at_the_extension(packs, body, expected):
    catalog, problems = packs(extension(body))
    assert catalog is None
    assert problems == [expected]


def test_fields_placed_twice_across_two_extensions(packs):
    _, problems = packs(
        extension("""\
            a_q:
              extend: a_main
              tabs: [{label: One, sections: [{columns: [[budget]]}]}]
            a_q2:
              extend: a_main
              tabs: [{label: Two, sections: [{columns: [[region, budget]]}, {related: items}, {related: items}]}]
            """)
    )
    assert problems == [
        "q/forms/a.yaml:7:56: forms.a_q2: field 'budget' is already on form 'a_main' "
        "(placed by 'a_q' at q/forms/a.yaml:4:48)",
        "q/forms/a.yaml:7:95: forms.a_q2: related list 'items' appears twice on the form",
    ]


def test_extending_an_extension_or_a_pack_not_depended_on(packs):
    _, problems = packs(
        {
            **extension("""\
                a_q:
                  extend: a_main
                  tabs: [{sections: [{columns: [[budget]]}]}]
                a_q2:
                  extend: a_q
                  tabs: [{sections: [{columns: [[region]]}]}]
                """),
            "r/solution.yaml": "solution: r\nversion: 1.0.0\n",
            "r/forms/b.yaml": "forms:\n  b_r:\n    extend: b_main\n    tabs: [{sections: [{columns: [[name]]}]}]\n",
        }
    )
    assert problems == [
        "q/forms/a.yaml:6:13: forms.a_q2: extends 'a_q', which is itself an extension; "
        "extend the form it extends, 'a_main'",
        "r/forms/b.yaml:3:13: forms.b_r: extends form 'b_main' of solution 'p', which "
        "solution 'r' does not depend on",
    ]


def test_a_form_without_entity_and_a_form_tab_with_tab_are_schema_errors(packs):
    _, problems = packs(
        {
            "q/forms/item.yaml": """\
                forms:
                  item_main:
                    tabs: [{sections: [{columns: [[title]]}]}]
                  item_other:
                    entity: item
                    tabs: [{tab: General, sections: [{columns: [[title]]}]}]
                """
        }
    )
    assert problems == [
        "q/forms/item.yaml:3:5: missing required key 'entity'",
        "q/forms/item.yaml:6:13: unknown key 'tab' in forms.item_other.tabs.0 "
        "(expected one of label, sections)",
    ]


# ------------------------------------------------------------------------ fields no form places
def test_fields_an_extension_adds_and_no_form_places_get_the_packs_tab(packs):
    catalog, problems = packs({})
    assert problems == []
    form = catalog.forms["a_main"]
    assert outline(form)[-1] == ("Deals", [["budget", "region"], "items"])
    assert form.tabs[-1].label.get("ru") == "Сделки"  # q's label
    assert form.tabs[-1].sections[1].label.get("ru") == "Позиции"  # the field's label
    assert outline(catalog.forms["b_main"]) == [("", [["name"]])]  # q adds nothing to b


def test_unplaced_fields_join_the_extensions_tab_of_the_same_label(packs):
    catalog, problems = packs(
        extension("""\
            a_q:
              extend: a_main
              tabs:
                - label: {en: Deals}
                  sections: [{label: Budget, columns: [[budget]]}]
            """)
    )
    assert problems == []
    assert outline(catalog.forms["a_main"])[-1] == ("Deals", [["budget"], ["region"], "items"])


def test_left_out_keeps_a_field_off_and_must_name_fields_in_a_pack(packs):
    files = {
        "p/forms/a.yaml": textwrap.dedent(BASE["p/forms/a.yaml"]).replace(
            "    default: true\n", "    default: true\n    left_out: [region, items]\n"
        )
    }
    catalog, problems = packs(files)
    assert problems == []
    assert outline(catalog.forms["a_main"])[-1] == ("Deals", [["budget"]])
    assert catalog.forms["a_main"].left_out == ("items", "region")
    files["p/forms/a.yaml"] = files["p/forms/a.yaml"].replace("[region, items]", "[regin]")
    _, problems = packs(files)
    assert problems == [
        "p/forms/a.yaml:5:16: forms.a_main: left_out: a has no field 'regin'; did you mean 'region'?"
    ]


# ------------------------------------------------------------------------ the customization layer
def layer_form(tabs: list, left_out: list | None = None) -> Document:
    document = {"entity": "a", "default": True, "tabs": tabs}
    if left_out is not None:
        document["left_out"] = left_out
    return Document("forms", {"forms": {"a_main": document}}, "customization#1")


def compiled(layer: list[Document]):
    problems = Problems()
    packs = resolve_packs(["p", "q"], problems)
    assert not problems
    return build_catalog(packs, layer, problems=problems)


def test_the_administrators_form_keeps_what_it_left_out(packs):
    packs(
        extension("""\
            a_q:
              extend: a_main
              tabs:
                - label: Deals
                  sections: [{columns: [[budget, region]]}, {related: items}]
            """)
    )
    # what the form editor saves: the merged form, minus budget, plus what it leaves out
    tabs = [
        {"label": {"en": "Main"}, "sections": [{"columns": [["name", "phone"]]}]},
        {"label": {"en": "Deals"}, "sections": [{"columns": [["region"]]}]},
    ]
    form = compiled([layer_form(tabs, ["notes", "budget", "items"])]).forms["a_main"]
    assert outline(form) == [("Main", [["name", "phone"]]), ("Deals", [["region"]])]
    assert form.left_out == ("notes", "items", "budget")  # in the entity's order


def test_extensions_still_add_what_an_older_customized_form_does_not_know(packs):
    """A form customized before q was installed: q's fields were not there to leave out,
    so q's extension adds them; a tab it names that the administrator renamed is added
    as a new tab; a field the administrator placed (region) is not placed again."""
    packs(
        extension("""\
            a_q:
              extend: a_main
              tabs:
                - tab: General
                  sections: [{columns: [[budget, region]]}]
            """)
    )
    tabs = [{"label": {"en": "Main"}, "sections": [{"columns": [["name", "phone", "region"]]}]}]
    form = compiled([layer_form(tabs, ["notes"])]).forms["a_main"]
    assert outline(form) == [
        ("Main", [["name", "phone", "region"]]),
        ("General", [["budget"]]),
        ("Deals", ["items"]),
    ]


def test_extension_problems_are_reported_against_the_packs_form_once(packs):
    packs(extension("a_q:\n  extend: a_main\n  tabs: [{sections: [{columns: [[phone]]}]}]\n"))
    tabs = [{"label": "Main", "sections": [{"columns": [["name"]]}]}]
    with pytest.raises(DefinitionError) as caught:
        compiled([layer_form(tabs)])
    assert [str(p) for p in caught.value.problems] == [
        "q/forms/a.yaml:4:36: forms.a_q: field 'phone' is already on form 'a_main' "
        "(placed by 'a_main' at p/forms/a.yaml:8:30)"
    ]


def test_the_customization_layer_cannot_hold_an_extension(packs):
    packs({})
    document = {"forms": {"a_more": {"extend": "a_main", "tabs": [{"sections": [{}]}]}}}
    with pytest.raises(DefinitionError) as caught:
        compiled([Document("forms", document, "customization#7")])
    assert [(p.subject, p.message) for p in caught.value.problems] == [
        (
            "forms.a_more",
            "the customization layer changes a form by writing it whole; extend belongs in a pack",
        )
    ]


# ------------------------------------------------------------------------ the record page
@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("form-extensions")) as built:
        yield built


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def tab_labels(page: str) -> list[str]:
    return re.findall(r'data-bs-toggle="tab"[^>]*>([^<]+)</button>', page)


def test_the_account_page_shows_the_sales_tab(w, app):
    seller = Client(app).login(SELLER)
    page = text(seller.get(f"/r/account/{w.acme['id']}/edit"))
    assert [label.strip() for label in tab_labels(page)] == ["General", "Sales", "Details"]
    value = re.search(r'id="f-open_pipeline">([^<]*)<', page).group(1)
    assert value == "$1,200.50"  # Acme's one open deal
    assert 'data-testid="field-won_revenue"' in page
    assert 'data-testid="lookup-price_list"' in page
    related = f"/r/account/{w.acme['id']}/related/opportunities"
    assert f'hx-get="{related}"' in page and 'data-testid="related-opportunities"' in page
    assert "Acme renewal" in text(seller.get(related))
    assert 'data-testid="related-converted_leads"' in page


def test_the_form_editor_saves_left_out_and_the_sales_tab_keeps_its_other_fields(w, app):
    admin = Client(app).login(ADMIN)
    layout = {
        "tabs": [
            {"label": "General", "sections": [{"label": "Company", "columns": [["name"]]}]},
            {
                "label": "Sales",
                "sections": [
                    {"label": "Pipeline", "columns": [["won_revenue"]]},
                    {"label": "Opportunities", "related": "opportunities"},
                ],
            },
        ]
    }
    response = admin.post("/admin/forms/account", {"layout": json.dumps(layout)})
    raw = re.search(r'name="documents" value="([^"]*)"', text(response)).group(1)
    documents = json.loads(html.unescape(raw))
    saved = documents[0][1]["forms"]["account_main"]
    assert "open_pipeline" in saved["left_out"] and "converted_leads" in saved["left_out"]
    assert "won_revenue" not in saved["left_out"]
    applied = admin.post(
        "/admin/apply", {"documents": json.dumps(documents), "back": "/admin/forms/account"}
    )
    assert applied.status_code == 303
    page = text(admin.get(f"/r/account/{w.acme['id']}"))
    assert [label.strip() for label in tab_labels(page)] == ["General", "Sales"]
    assert 'data-testid="field-won_revenue"' in page
    assert 'data-testid="field-open_pipeline"' not in page  # the administrator took it off
    assert 'data-testid="related-converted_leads"' not in page
