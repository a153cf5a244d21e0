"""Compiled yes/no checks for our JSON Schemas; jsonschema explains only what fails.

Loading a catalog checks every document and every field against a schema.  jsonschema
builds a validator and an error generator at each step of the walk, which made schema
checks about half of a big catalog's load.  Here a schema is compiled once into plain
Python closures that answer one question, "is this instance valid?", with the keyword
semantics of jsonschema's Draft 2020-12 validator (the same type checks, the same
``equal`` that keeps ``true`` apart from ``1``, ``re.search`` for patterns).  A document
that fails is handed to jsonschema, whose errors make the messages, so the messages are
the same as ever; a document that passes costs a walk without allocations.

A schema using a keyword this module does not know compiles to ``None``, and the
caller asks jsonschema for everything: the fast path can only be missing, never wrong.
"""

from __future__ import annotations

import itertools
import numbers
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], bool]

#: Keywords that only annotate (no effect on validity), as in jsonschema's 2020-12 dialect.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
    | {"deprecated", "readOnly", "writeOnly"}
)
_OBJECT_KEYWORDS = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    }
)
_ARRAY_KEYWORDS = frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})


class Unsupported(Exception):
    """The schema uses something the compiled check does not implement."""


def compile_check(schema, compiler: Compiler | None = None) -> Check | None:
    """A function telling whether an instance is valid under ``schema``; ``None`` when the
    schema needs something only jsonschema does (the caller then uses jsonschema).

    Schemas that share their ``$defs`` may share a ``Compiler``, which compiles each
    subschema (a label, a filter) once for all of them."""
    defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}
    if compiler is None or (defs and defs is not compiler.defs):
        compiler = Compiler(defs)
    return compiler.check(schema)


# ----------------------------------------------------------------- jsonschema's semantics
def _is_array(x) -> bool:
    return isinstance(x, list)


def _is_boolean(x) -> bool:
    return isinstance(x, bool)


def _is_integer(x) -> bool:
    # as jsonschema's draft 4+ checker: 2.0 is an integer too
    if isinstance(x, float):
        return x.is_integer()
    return isinstance(x, int) and not isinstance(x, bool)


def _is_null(x) -> bool:
    return x is None


def _is_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def _is_object(x) -> bool:
    return isinstance(x, dict)


def _is_string(x) -> bool:
    return isinstance(x, str)


_TYPES = {
    "array": _is_array,
    "boolean": _is_boolean,
    "integer": _is_integer,
    "null": _is_null,
    "number": _is_number,
    "object": _is_object,
    "string": _is_string,
}
_TRUE, _FALSE = object(), object()


def _unbool(x):
    # jsonschema._utils.unbool: true and 1 (false and 0) are different values
    if x is True:
        return _TRUE
    if x is False:
        return _FALSE
    return x


def equal(one, two) -> bool:
    """jsonschema._utils.equal: equality that keeps booleans apart from numbers."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(i, j) for i, j in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k]) for k, v in one.items())
    return _unbool(one) == _unbool(two)


def _unique(container) -> bool:
    """jsonschema._utils.uniq."""
    try:
        ordered = sorted(_unbool(i) for i in container)
        for i, j in zip(ordered, itertools.islice(ordered, 1, None), strict=False):
            if equal(i, j):
                return False
    except (NotImplementedError, TypeError):
        seen: list = []
        for e in container:
            e = _unbool(e)
            if any(equal(i, e) for i in seen):
                return False
            seen.append(e)
    return True


def _always(_x) -> bool:
    return True


def _never(_x) -> bool:
    return False


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    checks = tuple(checks)

    def check(x):
        for c in checks:  # noqa: SIM110 - a loop costs less than all() over a generator
            if not c(x):
                return False
        return True

    return check


# ------------------------------------------------------------------------- the compiler
class Compiler:
    """Compiles schemas whose ``$ref`` all point into one ``$defs`` (``#/$defs/name``), so a
    subschema's check depends on the subschema alone and is made once."""

    def __init__(self, defs: dict):
        self.defs = defs
        self.compiled: dict[int, Check] = {}
        self.keep: list = []  # the subschemas whose ids key ``compiled``
        self._lock = threading.Lock()

    def check(self, schema) -> Check | None:
        """The compiled check of a root schema, or ``None`` if it is not supported."""
        with self._lock:  # stand-ins of a half-compiled schema must not be seen by others
            before = len(self.compiled)
            try:
                return self.compile(schema)
            except Unsupported:
                # forget what this attempt made: a check may call a stand-in never finished
                for key in list(self.compiled)[before:]:
                    del self.compiled[key]
                return None

    def compile(self, schema) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        found = self.compiled.get(id(schema))
        if found is not None:
            return found
        # A schema may reach itself through $ref (a filter holds filters): while it is
        # being compiled, references to it get a stand-in that calls the finished check.
        cell: list[Check] = []
        self.compiled[id(schema)] = lambda x: cell[0](x)
        self.keep.append(schema)
        cell.append(self._compile(schema))
        self.compiled[id(schema)] = cell[0]
        return cell[0]

    def _compile(self, schema: dict) -> Check:
        checks: list[Check] = []
        unknown = set(schema) - _ANNOTATIONS - _OBJECT_KEYWORDS - _ARRAY_KEYWORDS
        kind = schema.get("type")
        # "type: object" with object keywords is one check (likewise arrays): the type test
        # is the first thing the keywords' check does anyway
        merged = None
        if not _OBJECT_KEYWORDS.isdisjoint(schema):
            checks.append(self._object(schema, strict=kind == "object"))
            merged = "object"
        if not _ARRAY_KEYWORDS.isdisjoint(schema):
            checks.append(self._array(schema, strict=kind == "array"))
            merged = "array"
        if "type" in schema and kind != merged:
            checks.insert(0, self._type(kind))
        for keyword in sorted(unknown - {"type", "then", "else"}):
            checks.append(self._keyword(keyword, schema[keyword], schema))
        return _all_of(checks)

    def _type(self, types) -> Check:
        names = [types] if isinstance(types, str) else list(types)
        try:
            tests = tuple(_TYPES[n] for n in names)
        except (KeyError, TypeError):
            raise Unsupported(f"type {types!r}") from None
        if len(tests) == 1:
            return tests[0]
        return lambda x: any(t(x) for t in tests)

    def _keyword(self, keyword: str, value, schema: dict) -> Check:
        if keyword == "$ref":
            return self._ref(value)
        if keyword == "enum":
            choices = tuple(value)
            hashable = all(isinstance(c, str) for c in choices)
            if hashable:  # equal() on strings is ==
                allowed = frozenset(choices)
                return lambda x: isinstance(x, str) and x in allowed
            return lambda x: any(equal(c, x) for c in choices)
        if keyword == "const":
            return lambda x: equal(x, value)
        if keyword == "pattern":
            search = re.compile(value).search
            return lambda x: not isinstance(x, str) or search(x) is not None
        if keyword == "minLength":
            return lambda x: not isinstance(x, str) or len(x) >= value
        if keyword == "maxLength":
            return lambda x: not isinstance(x, str) or len(x) <= value
        if keyword == "minimum":
            return lambda x: not _is_number(x) or not x < value
        if keyword == "maximum":
            return lambda x: not _is_number(x) or not x > value
        if keyword == "exclusiveMinimum":
            return lambda x: not _is_number(x) or not x <= value
        if keyword == "exclusiveMaximum":
            return lambda x: not _is_number(x) or not x >= value
        if keyword == "allOf":
            return _all_of([self.compile(s) for s in value])
        if keyword == "anyOf":
            options = tuple(self.compile(s) for s in value)
            if len(options) == 2:  # the usual case (a name or a mapping), without a generator
                first, second = options
                return lambda x: first(x) or second(x)
            return lambda x: any(c(x) for c in options)
        if keyword == "oneOf":
            options = tuple(self.compile(s) for s in value)
            return lambda x: sum(1 for c in options if c(x)) == 1
        if keyword == "not":
            inner = self.compile(value)
            return lambda x: not inner(x)
        if keyword == "if":
            condition = self.compile(value)
            then = self.compile(schema.get("then", True))
            otherwise = self.compile(schema.get("else", True))
            return lambda x: then(x) if condition(x) else otherwise(x)
        raise Unsupported(f"keyword {keyword!r}")

    def _ref(self, ref) -> Check:
        name = ref.removeprefix("#/$defs/") if isinstance(ref, str) else ""
        if name == ref or "/" in name or "~" in name or name not in self.defs:
            raise Unsupported(f"$ref {ref!r}")
        return self.compile(self.defs[name])

    def _object(self, schema: dict, strict: bool) -> Check:
        """``properties``, ``additionalProperties``, ``propertyNames``, ``required`` and the
        sizes in one walk over the instance's keys (a field has a few keys, its schema tens
        of properties); ``strict`` also requires a mapping."""
        properties = {k: self.compile(s) for k, s in (schema.get("properties") or {}).items()}
        required = tuple(schema.get("required") or ())
        extra = schema.get("additionalProperties", True)
        extra_check = None if extra is False else self.compile(extra)
        names = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None
        least = schema.get("minProperties")
        most = schema.get("maxProperties")
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        open_extra = extra_check is _always
        lookup = properties.get

        def check(x):
            if not isinstance(x, dict):
                return not strict
            for key, value in x.items():
                sub = lookup(key)
                if sub is None:
                    if not open_extra and (extra_check is None or not extra_check(value)):
                        return False
                elif not sub(value):
                    return False
                if names is not None and not names(key):
                    return False
            for key in required:
                if key not in x:
                    return False
            if least is not None and len(x) < least:
                return False
            return most is None or len(x) <= most

        return check

    def _array(self, schema: dict, strict: bool) -> Check:
        prefix = tuple(self.compile(s) for s in schema.get("prefixItems") or ())
        rest = schema.get("items", True)
        rest_check = None if rest is False else self.compile(rest)
        open_rest = rest_check is _always
        least = schema.get("minItems")
        most = schema.get("maxItems")
        unique = bool(schema.get("uniqueItems"))
        count = len(prefix)

        def check(x):
            if not isinstance(x, list):
                return not strict
            for sub, item in zip(prefix, x, strict=False):
                if not sub(item):
                    return False
            if len(x) > count and not open_rest:
                if rest_check is None:
                    return False
                for item in itertools.islice(x, count, None):
                    if not rest_check(item):
                        return False
            if least is not None and len(x) < least:
                return False
            if most is not None and len(x) > most:
                return False
            return not unique or _unique(x)

        return check


class SchemaValidator:
    """One JSON Schema as the loader uses it: ``iter_errors`` yields nothing for a valid
    instance after the compiled check, and jsonschema's errors for an invalid one.

    Both the check and jsonschema's validator are made on first use, once per schema (the
    validators live as long as the process), and jsonschema itself is imported only when
    something fails, which keeps it out of a clean start."""

    __slots__ = ("schema", "_compiler", "_check", "_explainer")

    def __init__(self, schema: dict, compiler: Compiler | None = None):
        self.schema = schema
        self._compiler = compiler
        self._check: Check | None | bool = False  # False: not compiled yet
        self._explainer = None

    def is_valid(self, instance) -> bool:
        check = self._check
        if check is False:
            check = self._check = compile_check(self.schema, self._compiler)
        if check is not None:
            return check(instance)
        return next(iter(self._jsonschema().iter_errors(instance)), None) is None

    def iter_errors(self, instance):
        if self.is_valid(instance):
            return iter(())
        return self._jsonschema().iter_errors(instance)

    def _jsonschema(self):
        if self._explainer is None:
            from jsonschema import Draft202012Validator

            self._explainer = Draft202012Validator(self.schema)
        return self._explainer
