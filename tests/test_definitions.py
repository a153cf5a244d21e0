"""Definition errors, the catalog's guarantees, and the published JSON Schemas.

Every kind of mistake a consultant can make in a pack is reported once, at the exact
``file:line:column`` where it was made, with a message that says what to do.  Packs are
written to ``tmp_path`` from strings; the planted pack lives in ``tests/packs/planted``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from xrm.cli import main as xrm_main
from xrm.metadata import (
    Catalog,
    DefinitionError,
    Document,
    UnknownEntity,
    build_catalog,
    check,
    load_catalog,
    resolve_packs,
)
from xrm.metadata.schemas import SCHEMA_DIR, published_schemas, render
from xrm.metadata.source import YamlSyntaxError, load_yaml

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "xrm" / "solutions" / "packs" / "core"
PACKS = Path(__file__).resolve().parent / "packs"
MANIFEST = "solution: p\nversion: 1.0.0\n"


@pytest.fixture
def problems_of(tmp_path, monkeypatch):
    """Write packs (top folder = pack) and return check()'s problems as strings.

    The working directory is tmp_path, so messages name files as ``p/entities/a.yaml``.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XRM_SOLUTIONS_PATH", raising=False)

    def run(files: dict[str, str]) -> list[str]:
        for relative, text in files.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        roots = sorted({relative.split("/")[0] for relative in files})
        catalog, problems = check(roots)
        if problems:
            assert catalog is None, "a pack with errors must load nothing"
        else:
            assert isinstance(catalog, Catalog)
        return [str(p) for p in problems]

    return run


def entity(text: str) -> dict[str, str]:
    """A one-entity pack ``p`` whose entity file is ``p/entities/a.yaml``."""
    return {"p/solution.yaml": MANIFEST, "p/entities/a.yaml": text}


def only(problems: list[str]) -> str:
    assert len(problems) == 1, "\n".join(problems)
    return problems[0]


# ------------------------------------------------------------------------- YAML level
def test_yaml_syntax_error(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  name: {type: text}\n  bad: x: y\n")))
    assert problem.startswith("p/entities/a.yaml:4:9: YAML syntax: ")
    assert "mapping values are not allowed" in problem


def test_unclosed_flow_mapping(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  name: {type: text\n")))
    assert problem.startswith("p/entities/a.yaml:4:1: YAML syntax: ")
    assert "flow mapping" in problem


def test_duplicate_yaml_key(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  name: {type: text}\n  name: {type: integer}\n"))
    )
    assert problem.startswith("p/entities/a.yaml:4:3: ")
    assert "duplicate key 'name'" in problem


def test_empty_file(problems_of):
    assert only(problems_of(entity("# nothing yet\n"))) == "p/entities/a.yaml:1:1: file is empty"


def test_unknown_document_kind(problems_of):
    problem = only(problems_of(entity("entiti: a\nfields: {}\n")))
    assert problem.startswith("p/entities/a.yaml:1:1: unknown kind of definition")
    assert "did you mean 'entity'?" in problem


def test_yaml_positions_anchors_and_merge_keys():
    text = (
        "base: &b {type: text, max_length: 5}\nfields:\n  f:\n    <<: *b\n    label: F\n  g: *b\n"
    )
    doc = load_yaml(text, "x.yaml")
    assert doc["fields"]["f"] == {"type": "text", "max_length": 5, "label": "F"}
    assert doc["fields"]["g"] == {"type": "text", "max_length": 5}
    assert str(doc.position) == "x.yaml:1:1"
    assert str(doc.at("fields")) == "x.yaml:2:1"
    assert str(doc["fields"].at("f")) == "x.yaml:3:3"
    assert str(doc["fields"]["f"].value_at("label")) == "x.yaml:5:12"
    items = load_yaml("- a\n- {b: 1}\n", "y.yaml")
    assert str(items.at(1)) == "y.yaml:2:3" and str(items[1].value_at("b")) == "y.yaml:2:7"


def test_yaml_scalars_follow_safe_load():
    text = "d: 2026-03-01\nn: null\nf: 1.5\ni: 0x1F\nb: yes\nt: !!str 12\ns: !!set {a, b}\n"
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "a: !!python/object:os.system x\n",
            "x.yaml:1:4: YAML syntax: could not determine a constructor",
        ),
        ("a: !!map [1, 2]\n", "x.yaml:1:4: YAML syntax: expected a mapping, but found a sequence"),
        ("? [a]\n: b\n", "x.yaml:1:3: YAML syntax: found an unhashable key"),
        ("a: 1\na: 2\n", "x.yaml:2:1: YAML syntax: found duplicate key 'a'"),
    ],
)
def test_yaml_constructs_only_safe_plain_data(text, message):
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml(text, "x.yaml")
    assert str(caught.value).startswith(message)


# ----------------------------------------------------------------------- schema level
def test_unknown_field_key_suggests_the_right_one(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  name: {type: text, max_lenght: 5}\n")))
    assert problem.startswith(
        "p/entities/a.yaml:3:22: a.name: unknown key 'max_lenght' in text fields"
    )
    assert problem.endswith("did you mean 'max_length'?")


def test_unknown_document_key_suggests_the_right_one(problems_of):
    problem = only(problems_of(entity("entity: a\nlabell: A\nfields:\n  name: {type: text}\n")))
    assert problem.startswith("p/entities/a.yaml:2:1: a: unknown key 'labell'")
    assert problem.endswith("did you mean 'label'?")


def test_wrong_value_type(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  name: {type: text, required: maybe}\n"))
    )
    assert (
        problem == "p/entities/a.yaml:3:32: a.name: required: expected boolean, got string 'maybe'"
    )


def test_wrong_value_type_in_a_parameter(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  name: {type: text, max_length: long}\n"))
    )
    assert problem.startswith("p/entities/a.yaml:3:34: a.name: max_length: expected integer")


def test_unknown_field_type_with_suggestion(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  n: {type: integr}\n")))
    assert (
        problem
        == "p/entities/a.yaml:3:13: a.n: unknown field type 'integr'; did you mean 'integer'?"
    )


def test_field_without_type(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  n: {label: N}\n")))
    assert problem == "p/entities/a.yaml:3:6: a.n: field has no type"


def test_missing_required_key(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  other: {type: lookup}\n")))
    assert problem == "p/entities/a.yaml:3:10: a.other: missing required key 'to'"


def test_missing_fields_of_an_entity(problems_of):
    problem = only(problems_of(entity("entity: a\nlabel: A\n")))
    assert problem == "p/entities/a.yaml:1:1: a: missing required key 'fields'"


def test_invalid_name(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  FirstName: {type: text}\n")))
    assert problem.startswith("p/entities/a.yaml:3:3: a: fields: ")
    assert "'FirstName' is not a valid name" in problem


# ------------------------------------------------------------------- references
def test_lookup_to_unknown_entity(problems_of):
    problem = only(
        problems_of(
            entity("entity: a\nfields:\n  other: {type: lookup, to: b}\n  x: {type: integer}\n")
        )
    )
    assert problem == "p/entities/a.yaml:3:29: a.other: points at unknown entity 'b'"


def test_lookup_to_unknown_entity_suggests(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/account.yaml": "entity: account\nfields:\n  name: {type: text}\n",
            "p/entities/a.yaml": "entity: a\nfields:\n  acc: {type: lookup, to: acount}\n",
        }
    )
    assert only(problems) == (
        "p/entities/a.yaml:3:27: a.acc: points at unknown entity 'acount'; did you mean 'account'?"
    )


def test_unknown_option_set(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/option_sets/sets.yaml": "option_sets:\n  priority: {options: [low, high]}\n",
            "p/entities/a.yaml": "entity: a\nfields:\n  s: {type: choice, options: priorty}\n",
        }
    )
    assert only(problems) == (
        "p/entities/a.yaml:3:30: a.s: unknown option set 'priorty'; did you mean 'priority'?"
    )


def test_option_listed_twice(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  s:\n    type: choice\n    options: [x, y, x]\n"))
    )
    assert problem == "p/entities/a.yaml:5:21: a.s: option 'x' is listed twice"


def test_children_via_a_field_that_is_not_a_lookup_back(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": "entity: a\nfields:\n  lines: {type: children, entity: b, via: a}\n",
            "p/entities/b.yaml": "entity: b\nfields:\n  a: {type: integer}\n",
        }
    )
    assert only(problems) == (
        "p/entities/a.yaml:3:43: a.lines: b.a must be a lookup to a (it is a integer)"
    )


# --------------------------------------------------------------------- formulas and rollups
def test_formula_with_unknown_field(problems_of):
    problem = only(
        problems_of(
            entity(
                "entity: a\nfields:\n  x: {type: integer}\n  y: {type: integer, formula: 'x + z'}\n"
            )
        )
    )
    assert problem == "p/entities/a.yaml:4:31: a.y: formula uses unknown field 'z'"


def test_formula_that_is_a_bare_unknown_name(problems_of):
    problem = only(
        problems_of(
            entity(
                "entity: a\nfields:\n  cost: {type: money}\n  y: {type: money, formula: costs}\n"
            )
        )
    )
    assert (
        problem
        == "p/entities/a.yaml:4:29: a.y: formula uses unknown field 'costs'; did you mean 'cost'?"
    )


def test_formula_arithmetic_on_a_text_field(problems_of):
    problem = only(
        problems_of(
            entity(
                "entity: a\nfields:\n  t: {type: text}\n  y: {type: integer, formula: 't * 2'}\n"
            )
        )
    )
    assert problem == (
        "p/entities/a.yaml:4:31: a.y: formula does arithmetic on 't', which is text, not a number or date"
    )


def test_formula_syntax_error(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  y: {type: integer, formula: '1 +'}\n"))
    )
    assert problem.startswith("p/entities/a.yaml:3:31: a.y: formula syntax: ")


def test_formula_reading_through_a_lookup(problems_of):
    text = (
        "entity: a\nfields:\n  acc: {type: lookup, to: a}\n"
        "  n: {type: formula, expression: acc.name}\n"
        "  m: {type: formula, expression: 'acc.name ~ 1'}\n"
    )
    assert problems_of(entity(text)) == [
        "p/entities/a.yaml:4:34: a.n: formula reads acc.name: formulas use this record's own fields only",
        "p/entities/a.yaml:5:34: a.m: formula reads acc.name: formulas use this record's own fields only",
    ]


def test_formula_cycle(problems_of):
    problem = only(
        problems_of(
            entity(
                "entity: a\nfields:\n"
                "  x: {type: integer, formula: 'y + 1'}\n"
                "  y: {type: integer, formula: 'x + 1'}\n"
            )
        )
    )
    assert problem.startswith("p/entities/a.yaml:3:3: a.x: formulas form a cycle: ")
    assert problem.endswith("x -> y -> x") or problem.endswith("y -> x -> y")


def test_rollup_over_a_field_that_is_not_children(problems_of):
    problem = only(
        problems_of(
            entity(
                "entity: a\nfields:\n  t: {type: text}\n  s: {type: money, rollup: {children: t, sum: amount}}\n"
            )
        )
    )
    assert (
        problem
        == "p/entities/a.yaml:4:28: a.s: rollup over 't', which is not a children field of a"
    )


def test_rollup_sum_of_a_text_field(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": (
                "entity: a\nfields:\n"
                "  lines: {type: children, entity: b, via: a}\n"
                "  s: {type: money, rollup: {children: lines, sum: note}}\n"
            ),
            "p/entities/b.yaml": "entity: b\nfields:\n  a: {type: lookup, to: a}\n  note: {type: text}\n",
        }
    )
    assert (
        only(problems)
        == "p/entities/a.yaml:4:28: a.s: cannot sum b.note, which is text, not a number"
    )


# ------------------------------------------------------------------------------ stages
STAGED = "entity: a\nfields:\n  st: {type: choice, options: [one, two]}\nstages:\n  field: st\n  steps:\n"


def test_stage_requires_unknown_field(problems_of):
    problem = only(problems_of(entity(STAGED + "    one: {requires: [amount]}\n    two: {}\n")))
    assert problem == "p/entities/a.yaml:7:22: a.stages.one: requires unknown field 'amount'"


def test_stage_that_is_not_an_option(problems_of):
    problem = only(problems_of(entity(STAGED + "    one: {}\n    tow: {}\n")))
    assert (
        problem
        == "p/entities/a.yaml:8:5: a.stages: stage 'tow' is not an option of st; did you mean 'two'?"
    )


def test_stages_over_a_field_that_is_not_a_choice(problems_of):
    text = "entity: a\nfields:\n  st: {type: text}\nstages:\n  field: st\n  steps:\n    one: {}\n"
    assert (
        only(problems_of(entity(text)))
        == "p/entities/a.yaml:5:10: a: stages need a choice field; 'st' is text"
    )


# ------------------------------------------------------------------------------- names
def test_reserved_word_as_field_name(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  select: {type: text}\n")))
    assert problem == (
        "p/entities/a.yaml:3:3: a.select: field name 'select' is a reserved word of SQLite and "
        "PostgreSQL; choose another name"
    )


def test_reserved_word_as_entity_name(problems_of):
    problem = only(problems_of(entity("entity: order\nfields:\n  x: {type: text}\n")))
    assert problem == (
        "p/entities/a.yaml:1:9: order: entity name 'order' is a reserved word of SQLite and "
        "PostgreSQL; choose another name"
    )


def test_platform_names_are_kept(problems_of):
    problems = problems_of(entity("entity: xrm_log\nfields:\n  x: {type: text}\n"))
    assert only(problems).startswith(
        "p/entities/a.yaml:1:9: xrm_log: entity name 'xrm_log' is in the platform's own"
    )


def test_system_column_as_field_name(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  created_at: {type: text}\n")))
    assert problem == (
        "p/entities/a.yaml:3:3: a.created_at: 'created_at' is a system column every entity has; "
        "choose another name"
    )


# ---------------------------------------------------------------------- packs and layers
def test_duplicate_entity_across_packs_without_extend(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integer}\n",
            "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: '>=1'}\n",
            "q/entities/a.yaml": "entity: a\nfields:\n  m: {type: integer}\n",
        }
    )
    assert only(problems) == (
        "q/entities/a.yaml:1:9: a: entity 'a' is already defined by solution 'p' (use 'extend: a' to add to it)"
    )


def test_extend_of_an_entity_from_a_pack_not_depended_on(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integer}\n",
            "q/solution.yaml": "solution: q\nversion: 1.0.0\n",
            "q/entities/a.yaml": "extend: a\nfields:\n  m: {type: integer}\n",
        }
    )
    assert only(problems) == (
        "q/entities/a.yaml:1:9: a: extends 'a' of solution 'p', which solution 'q' does not depend on"
    )


def test_extend_adds_fields(problems_of):
    files = {
        "p/solution.yaml": MANIFEST,
        "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integer}\n",
        "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: '>=1,<2'}\n",
        "q/entities/a.yaml": "extend: a\nfields:\n  m: {type: integer}\n",
    }
    assert problems_of(files) == []
    catalog = load_catalog(["p", "q"])
    assert list(catalog.entity("a").fields) == ["n", "m"]
    assert catalog.entity("a").fields["m"].solution == "q"
    assert catalog.entity("a").solution == "p"


def test_field_defined_twice_by_an_extension(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integer}\n",
            "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: '*'}\n",
            "q/entities/a.yaml": "extend: a\nfields:\n  n: {type: text}\n",
        }
    )
    assert (
        only(problems) == "q/entities/a.yaml:3:3: a.n: field 'n' is already defined by solution 'p'"
    )


def test_missing_dependency(problems_of):
    problems = problems_of(
        {"p/solution.yaml": "solution: p\nversion: 1.0.0\ndepends: {nosuch: '>=1'}\n"}
    )
    assert (
        only(problems)
        == "p/solution.yaml:3:11: p: depends on solution 'nosuch', which was not found"
    )


def test_version_range_not_satisfied(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: '>=2'}\n",
        }
    )
    assert only(problems) == "q/solution.yaml:3:11: q: needs p >=2, but p is version 1.0.0"


def test_invalid_version_range(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: 'one or two'}\n",
        }
    )
    assert only(problems).startswith(
        "q/solution.yaml:3:11: q: invalid version range 'one or two' for 'p'"
    )


def test_invalid_version_is_reported_once(problems_of):
    problem = only(problems_of({"p/solution.yaml": "solution: p\nversion: one\n"}))
    assert problem.startswith("p/solution.yaml:2:10: p: version: 'one' does not match")


def test_dependency_cycle(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": "solution: p\nversion: 1.0.0\ndepends: {q: '>=1'}\n",
            "q/solution.yaml": "solution: q\nversion: 1.0.0\ndepends: {p: '>=1'}\n",
        }
    )
    problem = only(problems)
    assert problem.split(": ")[0] in ("p/solution.yaml:3:1", "q/solution.yaml:3:1")
    assert "dependency cycle: " in problem
    assert "p -> q -> p" in problem or "q -> p -> q" in problem


def test_dependency_found_on_the_search_path(problems_of, tmp_path, monkeypatch):
    """A pack's dependency need not be named: it is found where packs are discovered."""
    (tmp_path / "lib" / "base").mkdir(parents=True)
    (tmp_path / "lib" / "base" / "solution.yaml").write_text("solution: base\nversion: 1.2.0\n")
    monkeypatch.setenv("XRM_SOLUTIONS_PATH", str(tmp_path / "lib"))
    files = {"p/solution.yaml": "solution: p\nversion: 1.0.0\ndepends: {base: '>=1.2'}\n"}
    assert problems_of(files) == []
    assert set(load_catalog(["p"]).solutions) == {"p", "base"}


# ------------------------------------------------------------------------ defaults
def test_bad_default_value(problems_of):
    problem = only(problems_of(entity("entity: a\nfields:\n  n: {type: integer, default: lots}\n")))
    assert (
        problem
        == "p/entities/a.yaml:3:31: a.n: default 'lots' does not fit: expected a whole number"
    )


def test_bad_default_option(problems_of):
    problem = only(
        problems_of(
            entity("entity: a\nfields:\n  s: {type: choice, options: [low, high], default: hihg}\n")
        )
    )
    assert problem.startswith(
        "p/entities/a.yaml:3:52: a.s: default 'hihg' does not fit: 'hihg' is not an option"
    )
    assert problem.endswith("did you mean 'high'?")


def test_default_keyword_on_the_wrong_type(problems_of):
    problem = only(
        problems_of(entity("entity: a\nfields:\n  n: {type: integer, default: today}\n"))
    )
    assert (
        problem == "p/entities/a.yaml:3:31: a.n: default 'today' does not apply to integer fields"
    )


# ----------------------------------------------------------- filters in validations and views
def _validation(condition: str) -> dict[str, str]:
    return entity(
        "entity: a\nfields:\n  amount: {type: integer}\n  s: {type: choice, options: [x, y]}\n"
        f"validations:\n  - when: {condition}\n    message: Not allowed\n"
    )


def test_validation_filter_with_unknown_field(problems_of):
    problem = only(problems_of(_validation("[amout, eq, 1]")))
    assert (
        problem
        == "p/entities/a.yaml:6:11: a.validations: amout: a has no field 'amout'; did you mean 'amount'?"
    )


def test_validation_filter_with_unknown_operator(problems_of):
    problem = only(problems_of(_validation("[amount, contains, 1]")))
    assert problem.startswith(
        "p/entities/a.yaml:6:11: a.validations: amount: operator 'contains' does not apply to integer fields"
    )


def test_validation_filter_with_wrong_value_type(problems_of):
    problem = only(problems_of(_validation("{all: [[amount, gt, 1], [amount, lt, many]]}")))
    assert (
        problem
        == "p/entities/a.yaml:6:11: a.validations: amount: bad value for 'lt': expected a whole number"
    )


VIEW_ENTITY = (
    "entity: a\nfields:\n  amount: {type: integer}\n  s: {type: choice, options: [x, y]}\n"
)


def _view(body: str) -> dict[str, str]:
    return {
        "p/solution.yaml": MANIFEST,
        "p/entities/a.yaml": VIEW_ENTITY,
        "p/views/v.yaml": "views:\n" + body,
    }


def test_view_filter_with_unknown_field(problems_of):
    problem = only(problems_of(_view("  v1: {entity: a, filter: [amout, eq, 1]}\n")))
    assert (
        problem
        == "p/views/v.yaml:2:27: views.v1: filter: amout: a has no field 'amout'; did you mean 'amount'?"
    )


def test_view_filter_with_unknown_operator(problems_of):
    problem = only(problems_of(_view("  v1: {entity: a, filter: [s, starts_with, x]}\n")))
    assert problem.startswith(
        "p/views/v.yaml:2:27: views.v1: filter: s: operator 'starts_with' does not apply to choice fields"
    )


def test_view_filter_with_wrong_value_type(problems_of):
    problem = only(problems_of(_view("  v1:\n    entity: a\n    filter: [s, eq, z]\n")))
    assert problem == (
        "p/views/v.yaml:4:13: views.v1: filter: s: bad value for 'eq': 'z' is not an option (expected one of x, y)"
    )


def test_view_columns_and_sort(problems_of):
    problems = problems_of(
        _view(
            "  v1:\n    entity: a\n    columns: [amount, amounts]\n    sort: [[s, asc], [q, desc]]\n"
        )
    )
    assert problems == [
        "p/views/v.yaml:4:23: views.v1: columns: a has no field 'amounts'; did you mean 'amount'?",
        "p/views/v.yaml:5:22: views.v1: sort: a has no field 'q'",
    ]


def test_view_of_unknown_entity(problems_of):
    problem = only(problems_of(_view("  v1: {entity: b}\n")))
    assert problem == "p/views/v.yaml:2:16: views.v1: unknown entity 'b'"


def test_kanban_without_group_by(problems_of):
    problem = only(problems_of(_view("  board: {entity: a, kind: kanban}\n")))
    assert problem == "p/views/v.yaml:2:3: views.board: a kanban view needs group_by"


def test_kanban_group_by_must_be_groupable(problems_of):
    problem = only(problems_of(_view("  board: {entity: a, kind: kanban, group_by: amount}\n")))
    assert problem == (
        "p/views/v.yaml:2:46: views.board: group_by 'amount' must be a field of type choice or lookup or "
        "user or boolean (it is integer)"
    )


# ------------------------------------------------------------------ all or nothing, all at once
def test_a_pack_with_any_error_loads_nothing(problems_of, tmp_path):
    good = "".join(f"  f{i}: {{type: text}}\n" for i in range(20))
    files = {
        "p/solution.yaml": MANIFEST,
        "p/entities/a.yaml": "entity: a\nfields:\n" + good,
        "p/entities/b.yaml": "entity: b\nfields:\n" + good,
        "p/entities/c.yaml": "entity: c\nfields:\n  n: {type: integer, default: x}\n",
    }
    assert len(problems_of(files)) == 1
    with pytest.raises(DefinitionError) as caught:
        load_catalog(["p"])
    assert str(caught.value).startswith("1 problem in definitions:\np/entities/c.yaml:3:31: c.n: ")
    assert [str(p.position) for p in caught.value.problems] == ["p/entities/c.yaml:3:31"]


def test_every_problem_is_reported_in_one_run(problems_of):
    problems = problems_of(
        {
            "p/solution.yaml": "solution: p\nversion: 1.0.0\ndepends: {missing: '1'}\n",
            "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integr}\n",
            "p/entities/b.yaml": "entity: b\nfields:\n  x: {type: lookup, to: zz}\n  y: {type: integer, default: no}\n",
            "p/views/v.yaml": "views:\n  v: {entity: b, kind: kanban}\n",
            "p/option_sets/o.yaml": "option_sets:\n  s: {options: [A]}\n",
        }
    )
    assert [p.split(": ")[0] for p in problems] == [
        "p/entities/a.yaml:3:13",
        "p/entities/b.yaml:3:25",
        "p/entities/b.yaml:4:31",
        "p/option_sets/o.yaml:2:17",
        "p/solution.yaml:3:11",
        "p/views/v.yaml:2:3",
    ]


def test_a_refused_entity_is_not_reported_again_where_it_is_used(problems_of):
    """A typo inside an entity's document is one message, not one per reference to it."""
    problems = problems_of(
        {
            "p/solution.yaml": MANIFEST,
            "p/entities/a.yaml": "entity: a\nfields:\n  n: {type: integr}\n",
            "p/entities/b.yaml": "entity: b\nfields:\n  a: {type: lookup, to: a}\n",
            "p/views/v.yaml": "views:\n  v: {entity: a}\n",
        }
    )
    assert problems == [
        "p/entities/a.yaml:3:13: a.n: unknown field type 'integr'; did you mean 'integer'?"
    ]


PLANTED_MISTAKES = [
    "planted/entities/deal.yaml:9",  # lookup to an unknown entity
    "planted/entities/deal.yaml:10",  # default that is not an option
    "planted/entities/deal.yaml:11",  # unknown option set
    "planted/entities/deal.yaml:12",  # formula over an unknown field
    "planted/entities/deal.yaml:13",  # reserved word as a field name
    "planted/entities/deal.yaml:19",  # stage requires an unknown field
    "planted/entities/gadget.yaml:6",  # unknown key, did you mean
    "planted/entities/gadget.yaml:7",  # unknown field type
    "planted/option_sets/planted.yaml:7",  # option listed twice
    "planted/views/deals.yaml:5",  # filter value that is not an option
]


def test_planted_pack_reports_exactly_its_ten_mistakes(monkeypatch):
    monkeypatch.chdir(PACKS)
    catalog, problems = check(["planted"])
    assert catalog is None
    assert [f"{p.position.path}:{p.position.line}" for p in problems] == PLANTED_MISTAKES
    messages = [p.message for p in problems]
    assert "points at unknown entity 'client'" in messages[0]
    assert "is not an option" in messages[1]
    assert "unknown option set 'sizes'" in messages[2]
    assert "unknown field 'cost'" in messages[3]
    assert "reserved word" in messages[4]
    assert "requires unknown field 'reason'" in messages[5]
    assert "did you mean 'max_length'?" in messages[6]
    assert "did you mean 'integer'?" in messages[7]
    assert "listed twice" in messages[8]
    assert "'opne' is not an option" in messages[9] and "did you mean 'open'?" in messages[9]


# -------------------------------------------------------------------------------- the CLI
def test_cli_check_core_in_process(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert xrm_main(["check", "xrm/solutions/packs/core"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 1 solution, ")
    assert " entities, " in out and " checked in " in out


def test_cli_check_core_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "xrm.cli", "check", "xrm/solutions/packs/core"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 1 solution, ")


def test_cli_check_reports_problems_and_exits_1(problems_of, capsys):
    problems_of(entity("entity: a\nfields:\n  n: {type: integer, default: x}\n  t: {type: txt}\n"))
    assert xrm_main(["check", "p"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "p/entities/a.yaml:4:13: a.t: unknown field type 'txt'; did you mean 'text'?"
    ]
    assert captured.err.strip() == "1 problem found"


def test_cli_check_of_a_folder_without_packs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert xrm_main(["check", "empty"]) == 1
    assert (
        capsys.readouterr().out.strip()
        == "empty:1:1: no solution.yaml here or in the folders inside"
    )


# ------------------------------------------------------------------------ the catalog
@pytest.fixture(scope="module")
def core() -> Catalog:
    return load_catalog([CORE])


def test_core_catalog_contents(core):
    account = core.entity("account")
    assert account.fields["name"].required
    assert account.fields["account_type"].choice_values[:2] == ("customer", "prospect")
    assert account.fields["account_type"].default == "prospect"
    assert account.label.get("ru") == "Контрагент"
    assert core.entity("contact").fields["account"].target == "account"
    assert ("contact", "account") in [(e.name, f.name) for e, f in core.children_of("account")]
    assert core.views["customers"].filter is not None
    assert {v.name for v in core.views_of("account")} >= {"all_accounts", "customers"}
    with pytest.raises(UnknownEntity, match="unknown entity 'acount'; did you mean 'account'"):
        core.entity("acount")
    assert core.entity_of("nothing") is None


def test_catalog_is_immutable(core):
    account = core.entity("account")
    name = account.fields["name"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        account.label = "Company"
    with pytest.raises(dataclasses.FrozenInstanceError):
        name.required = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        core.version = 99
    with pytest.raises(TypeError):
        core.entities["hack"] = account
    with pytest.raises(TypeError):
        del core.entities["account"]
    with pytest.raises(TypeError):
        account.fields["hack"] = name
    with pytest.raises(TypeError):
        name.params["max_length"] = 1
    with pytest.raises(TypeError):
        core.option_sets["priority"] = None
    with pytest.raises(TypeError):
        core.views["customers"] = None
    assert isinstance(account.validations, tuple)
    assert isinstance(account.indexes, tuple)
    assert isinstance(core.entity("account").fields["account_type"].choices, tuple)
    assert core.entity("account").fields["name"].params["max_length"] == 200


def test_artifact_cache_builds_once_per_catalog(core):
    calls = []

    def build():
        calls.append(1)
        return object()

    first = core.artifact(("test", "thing"), build)
    assert core.artifact(("test", "thing"), build) is first
    assert len(calls) == 1
    other = core.artifact(("test", "other"), build)
    assert other is not first and len(calls) == 2

    fresh = load_catalog([CORE], version=core.version + 1)
    again = fresh.artifact(("test", "thing"), build)
    assert again is not first and len(calls) == 3
    assert core.artifact(("test", "thing"), build) is first  # the old version keeps its own


def test_artifact_cache_is_built_once_under_concurrency():
    catalog = load_catalog([CORE])
    calls, start = [], threading.Barrier(8)
    results = []

    def build():
        calls.append(1)
        return object()

    def worker():
        start.wait()
        results.append(catalog.artifact("shared", build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(r) for r in results}) == 1


def _layer(data: dict) -> list[Document]:
    return [Document("extend", data, "customization")]


def test_customization_layer_adds_a_field_and_overrides_a_label(core):
    packs = resolve_packs([CORE])
    layer = _layer(
        {
            "extend": "account",
            "label": {"en": "Company", "ru": "Компания"},
            "fields": {
                "vip": {"type": "boolean", "default": False, "label": "VIP"},
                "name": {"label": {"en": "Company name"}},
            },
        }
    )
    customized = build_catalog(packs, layer=layer, version=7)
    account = customized.entity("account")
    assert customized.version == 7
    assert account.label.get("ru") == "Компания"
    assert account.fields["vip"].type == "boolean"
    assert account.fields["vip"].solution == "customization"
    assert account.fields["vip"].default is False
    assert str(account.fields["vip"].label) == "VIP"
    # top wins, and keeps what it does not mention
    assert str(account.fields["name"].label) == "Company name"
    assert account.fields["name"].required is True
    assert account.fields["name"].params["max_length"] == 200
    assert account.fields["name"].solution == "core"
    # the catalog it was built beside is untouched
    assert "vip" not in core.entity("account").fields
    assert str(core.entity("account").fields["name"].label) == "Name"


def test_customization_layer_is_checked_like_a_pack():
    packs = resolve_packs([CORE])
    layer = _layer({"extend": "account", "fields": {"boss": {"type": "lookup", "to": "persn"}}})
    with pytest.raises(DefinitionError, match="account.boss: points at unknown entity 'persn'"):
        build_catalog(packs, layer=layer)


REMOVABLE = {
    "p/solution.yaml": MANIFEST,
    "p/entities/shop.yaml": (
        "entity: shop\ntitle: name\nsearch: [name, email, code]\nfields:\n"
        "  name: {type: text}\n  email: {type: email}\n  code: {type: text}\n"
        "  rating: {type: rating}\nindexes:\n  - {fields: [code]}\n  - {fields: [name]}\n"
    ),
    "p/views/shops.yaml": "views:\n  shops: {entity: shop, columns: [name, rating]}\n",
}


def test_customization_layer_can_remove_a_field(problems_of):
    assert problems_of(REMOVABLE) == []
    catalog = build_catalog(
        resolve_packs(["p"]), layer=_layer({"extend": "shop", "remove": ["email"]})
    )
    assert list(catalog.entity("shop").fields) == ["name", "code", "rating"]


def test_removing_a_searched_and_indexed_field_takes_it_out_of_search_and_indexes(problems_of):
    assert problems_of(REMOVABLE) == []
    layer = _layer({"extend": "shop", "remove": ["email", "code"]})
    shop = build_catalog(resolve_packs(["p"]), layer=layer).entity("shop")
    assert shop.search == ("name",)
    assert [index.fields for index in shop.indexes] == [("name",)]


def test_removing_a_field_that_is_still_used_is_refused(problems_of):
    assert problems_of(REMOVABLE) == []
    with pytest.raises(DefinitionError) as caught:
        build_catalog(
            resolve_packs(["p"]), layer=_layer({"extend": "shop", "remove": ["name", "rating"]})
        )
    # The title cannot go; the view's columns simply drop the removed fields.
    assert [str(p) for p in caught.value.problems] == [
        "p/entities/shop.yaml:2:8: shop: title names unknown field 'name'",
    ]


def test_removed_fields_drop_out_of_views(problems_of):
    assert problems_of(REMOVABLE) == []
    layer = _layer({"extend": "shop", "remove": ["rating"]})
    catalog = build_catalog(resolve_packs(["p"]), layer=layer)
    assert catalog.views["shops"].columns == ("name",)


# ------------------------------------------------------------------------- JSON Schemas
def test_published_schemas_are_up_to_date():
    """Fails when the registry changed and nobody ran ``xrm schemas``."""
    generated = published_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(generated)
    for name, schema in generated.items():
        text = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert json.loads(text) == schema, f"{name} is stale: run `xrm schemas`"
        assert text == render(schema)


@pytest.mark.parametrize("name", sorted(published_schemas()))
def test_published_schema_is_valid_draft_2020_12(name):
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _schema_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "folder, schema",
    [
        ("entities", "entity.schema.json"),
        ("option_sets", "option_sets.schema.json"),
        ("views", "views.schema.json"),
        (".", "solution.schema.json"),
    ],
)
def test_core_pack_validates_against_published_schemas(folder, schema):
    validator = _schema_validator(schema)
    files = sorted((CORE / folder).glob("*.yaml")) if folder != "." else [CORE / "solution.yaml"]
    assert files
    for path in files:
        errors = [
            e.message
            for e in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))
        ]
        assert errors == [], f"{path}: {errors}"


def test_published_entity_schema_catches_what_the_loader_catches():
    validator = _schema_validator("entity.schema.json")
    bad_key = {"entity": "a", "fields": {"n": {"type": "text", "max_lenght": 3}}}
    bad_type = {"entity": "a", "fields": {"n": {"type": "txt"}}}
    no_target = {"entity": "a", "fields": {"n": {"type": "lookup"}}}
    good = {"entity": "a", "fields": {"n": {"type": "lookup", "to": "b", "on_delete": "cascade"}}}
    for doc in (bad_key, bad_type, no_target):
        assert list(validator.iter_errors(doc)), doc
    assert list(validator.iter_errors(good)) == []


def test_benchmark_pack_generator_builds_a_valid_catalog(tmp_path):
    """The metadata benchmark's generated pack stays loadable as the engine evolves."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_metadata", ROOT / "benchmarks" / "bench_metadata.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    generated = bench.generate_pack(tmp_path / "bench", entities=12, fields=40)
    catalog = load_catalog([tmp_path / "bench"])
    assert len(catalog.entities) == 12
    assert catalog.field_count == generated["fields"] == 12 * 40
    assert len(catalog.views) == generated["views"]
    first = catalog.entity("thing_000")
    assert first.fields["subs"].type == "children"
    assert first.fields["subs_total"].rollup.field == "amount"
    assert first.fields["total"].formula == "amount * quantity"
