"""What makes catalog builds fast must not change what they build or what they report.

Schemas compile into yes/no checks (jsonschema explains a failure), read documents are
remembered by content, the YAML reader keeps positions as plain numbers, and the garbage
collector waits while a catalog is built.  A catalog built from remembered documents is
the one built cold, a changed document is read and checked again, and a document with a
problem reports it every time.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import random
import textwrap
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from xrm.metadata import DefinitionError, check, load_catalog, parse_cache
from xrm.metadata import packs as packs_module
from xrm.metadata.bulk import collector_paused
from xrm.metadata.process_compiler import step_validator
from xrm.metadata.process_schemas import STEP_KINDS
from xrm.metadata.processes import normalize_on
from xrm.metadata.schemacheck import Compiler, SchemaValidator, compile_check
from xrm.metadata.schemas import validators
from xrm.metadata.source import Position, load_yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "xrm" / "solutions" / "packs"
MANIFEST = "solution: p\nversion: 1.0.0\n"


def dump(value, seen=None):
    """Everything a catalog holds, positions included (they do not take part in ==)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple(
                (f.name, dump(getattr(value, f.name)))
                for f in dataclasses.fields(value)
                if not f.name.startswith("_")
            ),
        )
    if isinstance(value, Mapping):  # a dict, a mapping proxy, a section built on first use
        return ("map", tuple((repr(k), dump(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | frozenset | set):
        items = [dump(v) for v in value]
        return (
            "seq",
            tuple(sorted(items, key=repr) if isinstance(value, set | frozenset) else items),
        )
    if isinstance(value, Position):
        return ("at", str(value))
    if isinstance(value, Enum):
        return ("enum", value.name)
    return ("value", type(value).__name__, repr(value))


def catalog_dump(catalog) -> tuple:
    return dump(
        {
            f.name: getattr(catalog, f.name)
            for f in dataclasses.fields(catalog)
            if not f.name.startswith("_")
        }
    )


@pytest.fixture
def pack(tmp_path, monkeypatch):
    """Write files of pack ``p`` under tmp_path (the working directory); returns the
    writer, which takes relative path -> text."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XRM_SOLUTIONS_PATH", raising=False)

    def write(files: dict[str, str]) -> Path:
        for relative, text in files.items():
            path = tmp_path / "p" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return tmp_path / "p"

    return write


# ------------------------------------------------------------------- remembered documents
def test_shipped_catalog_is_the_same_cold_and_from_memory():
    packs_module._READ.clear()
    cold = load_catalog([SHIPPED])
    assert packs_module._READ.size > 0, "valid documents are remembered"
    warm = load_catalog([SHIPPED])
    assert catalog_dump(warm) == catalog_dump(cold)
    assert warm.entities == cold.entities and warm.processes == cold.processes


def test_generated_catalog_is_the_same_cold_and_from_memory(tmp_path):
    from benchmarks.bench_metadata import generate_pack

    folder = tmp_path / "bench"
    generate_pack(folder, entities=30, fields=25)
    packs_module._READ.clear()
    cold = load_catalog([folder])
    warm = load_catalog([folder])
    assert catalog_dump(warm) == catalog_dump(cold)
    assert len(warm.entities) == 30


def test_a_changed_document_is_read_and_checked_again(pack):
    entity = "entity: a\nfields:\n  name: {type: text, max_length: 20}\n"
    folder = pack({"solution.yaml": MANIFEST, "entities/a.yaml": entity})
    assert load_catalog([folder]).entities["a"].fields["name"].params["max_length"] == 20

    pack({"entities/a.yaml": entity.replace("max_length", "max_lenght")})
    with pytest.raises(DefinitionError) as raised:
        load_catalog([folder])
    assert [str(p) for p in raised.value.problems] == [
        "p/entities/a.yaml:3:22: a.name: unknown key 'max_lenght' in text fields (expected one "
        "of type, label, help, required, unique, index, searchable, read_only, default, renamed_from, "
        "max_length, pattern); did you mean 'max_length'?"
    ]

    pack({"entities/a.yaml": entity.replace("20", "30")})
    assert load_catalog([folder]).entities["a"].fields["name"].params["max_length"] == 30


def test_a_document_with_a_problem_reports_it_every_time(pack):
    folder = pack(
        {
            "solution.yaml": MANIFEST,
            "entities/a.yaml": "entity: a\nfields:\n  n: {type: integer, min: low}\n",
        }
    )
    first = [str(p) for p in check([folder])[1]]
    second = [str(p) for p in check([folder])[1]]
    assert (
        first == second == ["p/entities/a.yaml:3:27: a.n: min: expected number, got string 'low'"]
    )


def test_the_same_text_elsewhere_has_its_own_positions(pack, tmp_path):
    entity = "entity: a\nfields:\n  name: {type: text}\n  n: {type: integer}\n"
    pack({"solution.yaml": MANIFEST, "entities/a.yaml": entity})
    other = tmp_path / "q"
    (other / "entities").mkdir(parents=True)
    (other / "solution.yaml").write_text("solution: q\nversion: 1.0.0\n", encoding="utf-8")
    (other / "entities" / "b.yaml").write_text(entity.replace(": a", ": b"), encoding="utf-8")
    (other / "entities" / "a.yaml").write_text(entity, encoding="utf-8")
    first = load_catalog([tmp_path / "p"])
    assert str(first.entities["a"].fields["n"].position) == "p/entities/a.yaml:4:3"
    # q holds a.yaml with the same text: its positions name q's file, and the duplicate
    # entity is reported there
    problems = [str(p) for p in check([tmp_path / "p", other])[1]]
    assert any(p.startswith("q/entities/a.yaml:1:9: a: entity 'a'") for p in problems), problems


def test_documents_are_remembered_per_set_of_schemas(pack):
    folder = pack({"solution.yaml": MANIFEST, "entities/a.yaml": "entity: a\nfields: {}\n"})
    load_catalog([folder])
    keys = [key for key in packs_module._READ._items if key[2] == "p/entities/a.yaml"]
    assert keys and all(key[0] == parse_cache.code_fingerprint() for key in keys)


def test_the_memory_is_bounded():
    memo = packs_module._DocumentMemo(limit=10)
    memo.put(("a",), ("entity", {}), 6)
    memo.put(("b",), ("entity", {}), 6)
    assert memo.get(("a",)) is None and memo.get(("b",)) == ("entity", {})
    memo.put(("c",), ("entity", {}), 11)  # larger than the whole memory: not kept
    assert memo.get(("c",)) is None and memo.size == 6


# -------------------------------------------------------------------- compiled checks
def _documents() -> list:
    docs = []
    for path in sorted(SHIPPED.rglob("*.yaml")) + sorted(
        (ROOT / "tests" / "packs").rglob("*.yaml")
    ):
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
        normalize_on(data)
        docs.append(data)
    return docs


SAMPLES = [
    "x", "", "Abc", "a_b", 0, 1, -1, 2.5, True, False, None, [], ["a"], [1, 2], {}, {"en": "x"},
    {"x": 1}, "max_lenght", 101, "1.0.0", "a" * 60, [["a", "asc"]], ["a", "eq", 1], {"all": []},
]  # fmt: skip


def _mutate(value, rnd: random.Random):
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        value = dict(value)
        key = rnd.choice(list(value))
        roll = rnd.random()
        if roll < 0.15:
            del value[key]
        elif roll < 0.25:
            value[rnd.choice(["zzz", "label", "type", "required", "all", "not"])] = rnd.choice(
                SAMPLES
            )
        else:
            value[key] = _mutate(value[key], rnd)
        return value
    if isinstance(value, list) and value and rnd.random() < 0.8:
        value = list(value)
        index = rnd.randrange(len(value))
        roll = rnd.random()
        if roll < 0.15:
            del value[index]
        elif roll < 0.3:
            value.append(value[index] if roll < 0.2 else rnd.choice(SAMPLES))
        else:
            value[index] = _mutate(value[index], rnd)
        return value
    return copy.deepcopy(rnd.choice(SAMPLES))


def _parts(value):
    yield value
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        yield from _parts(child)


def test_compiled_checks_agree_with_jsonschema():
    """The compiled check says "valid" exactly when jsonschema finds no error, on every
    shipped document and field and on a few thousand random mutations of them."""
    pairs = [(f"document {k}", v) for k, v in validators().documents.items()]
    pairs += [(f"field {k}", v) for k, v in validators().fields.items()]
    pairs += [(f"step {k}", step_validator(k)) for k in STEP_KINDS]
    judges = {name: Draft202012Validator(v.schema) for name, v in pairs}
    fields = [(n, v) for n, v in pairs if n.startswith("field ")]
    steps = [(n, v) for n, v in pairs if n.startswith("step ")]
    rnd = random.Random(17)
    docs = _documents()
    checked = invalid = 0

    def agree(name, validator, instance):
        nonlocal checked, invalid
        expected = judges[name].is_valid(instance)
        assert validator.is_valid(instance) is expected, (name, instance)
        assert (list(validator.iter_errors(instance)) == []) is expected
        checked += 1
        invalid += not expected

    for round_ in range(600):
        doc = docs[round_ % len(docs)] if round_ < len(docs) else rnd.choice(docs)
        for _ in range(0 if round_ < len(docs) else rnd.randint(1, 3)):
            doc = _mutate(doc, rnd)
        for name, validator in pairs[: len(validators().documents)]:
            agree(name, validator, doc)
        for part in _parts(doc):
            if isinstance(part, dict) and "type" in part:
                for name, validator in rnd.sample(fields, 4):
                    agree(name, validator, part)
            if isinstance(part, dict) and any(k in STEP_KINDS for k in part):
                for name, validator in steps:
                    agree(name, validator, part)
    assert checked > 10_000 and 0 < invalid < checked


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"enum": [1, True]}, [1, True], [1.5, False, "1"]),
        ({"const": False}, [False], [0, None]),
        ({"type": "integer"}, [1, 2.0, -3], [True, "1", 1.5, float("inf")]),
        ({"type": "number", "minimum": 0}, [0, 1.5], [-1, False]),
        ({"type": "array", "uniqueItems": True}, [[1, True], [[1], [2]]], [[1, 1], [{"a": 1}, {"a": 1}]]),
        ({"prefixItems": [{"type": "string"}], "items": False}, [[], ["a"]], [["a", "b"], [1]]),
        ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, [-1, 0.5], [3]),
        ({"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}}, ["ab", 3], ["a", 1.5]),
        ({"propertyNames": {"pattern": "^a"}, "maxProperties": 1}, [{"ab": 1}, {1: 2}], [{"b": 1}, {"a": 1, "ab": 2}]),
        ({"not": {"type": "null"}}, [0, ""], [None]),
        ({"$defs": {"n": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}}, "$ref": "#/$defs/n"}, [None, [None, [None]]], [[1], [[2]], 3]),
    ],
)  # fmt: skip
def test_compiled_keywords_follow_jsonschema(schema, good, bad):
    check_ = compile_check(schema)
    judge = Draft202012Validator(schema)
    for value in good:
        assert judge.is_valid(value) and check_(value), value
    for value in bad:
        assert not judge.is_valid(value) and not check_(value), value


def test_an_unknown_keyword_leaves_the_work_to_jsonschema():
    schema = {"type": "object", "patternProperties": {"^x": {"type": "integer"}}}
    assert compile_check(schema) is None
    validator = SchemaValidator(schema)
    assert validator.is_valid({"xa": 1}) and not validator.is_valid({"xa": "no"})
    assert [e.message for e in validator.iter_errors({"xa": "no"})] == [
        "'no' is not of type 'integer'"
    ]


def test_a_shared_compiler_forgets_a_failed_attempt():
    defs = {
        "a": {"type": "string"},
        "b": {"properties": {"x": {"$ref": "#/$defs/b"}}, "format": "x"},
    }
    compiler = Compiler(defs)
    assert compile_check({"$ref": "#/$defs/b", "$defs": defs}, compiler) is None
    check_ = compile_check({"$ref": "#/$defs/a", "$defs": defs}, compiler)
    assert check_("s") and not check_(1)
    assert all(key != id(defs["b"]) for key in compiler.compiled)


# ------------------------------------------------------------------------ the collector
def test_the_collector_waits_during_a_build_and_comes_back(pack):
    assert gc.isenabled()
    seen = []
    with collector_paused():
        seen.append(gc.isenabled())
        with collector_paused():
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())
    assert seen == [False, False, False] and gc.isenabled()

    folder = pack({"solution.yaml": MANIFEST, "entities/a.yaml": "entity: a\nfields: {x: 1}\n"})
    with pytest.raises(DefinitionError):
        load_catalog([folder])
    assert gc.isenabled(), "a failed build turns the collector back on"


def test_a_collector_turned_off_elsewhere_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
