"""Formulas and message templates: Jinja2's immutable sandbox with strict undefined names.

Definitions are checked when they load (syntax, names, arithmetic on fitting types); at
run time a compiled expression is evaluated against one record's values.
"""

from __future__ import annotations

import datetime as dt
import decimal
from functools import cache, lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .formats import FILTERS

#: Names every formula may use besides the record's fields.
#: Names every formula may use besides the record's fields (see ``environment``).
FORMULA_GLOBALS = frozenset({"today", "now", "round", "abs", "min", "max", "Decimal"})
_ARITHMETIC = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)


def _round(value, digits=0):
    return round(value, digits) if value is not None else None


@cache
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.globals.update(
        {"round": _round, "abs": abs, "min": min, "max": max, "Decimal": decimal.Decimal}
    )
    env.filters.update(FILTERS)  # date, datetime, time, number, money, url: per reader
    return env


class ExpressionError(ValueError):
    pass


@lru_cache(maxsize=4096)
def parse_expression(source: str) -> nodes.Expr:
    """The expression's syntax tree: shared between callers (cached), so read it only."""
    env = environment()
    try:
        parsed = env.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"formula syntax: {exc.message}") from None
    output = parsed.body[0]
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1 or len(parsed.body) != 1:
        raise ExpressionError("a formula is one expression")
    return output.nodes[0]


def find_nodes(expr: nodes.Node, node_types):
    """Nodes of the given types in ``expr``, the root included (Jinja's find_all skips it)."""
    if isinstance(expr, node_types):
        yield expr
    yield from expr.find_all(node_types)


# The trees come from parse_expression's cache, so one walk per formula text serves every
# field, entity and catalog version that uses it (a big catalog repeats its formulas).
@lru_cache(maxsize=4096)
def names_in(expr: nodes.Node) -> frozenset[str]:
    return frozenset(n.name for n in find_nodes(expr, nodes.Name) if n.ctx == "load")


@lru_cache(maxsize=4096)
def arithmetic_operands(expr: nodes.Node) -> tuple[tuple[str, nodes.Node], ...]:
    """Names used directly as operands of arithmetic (checked for numeric or date types)."""
    found = []
    for node in find_nodes(expr, _ARITHMETIC):
        for side in (node.left, node.right):
            if isinstance(side, nodes.Name):
                found.append((side.name, node))
    for node in find_nodes(expr, nodes.Neg):
        if isinstance(node.node, nodes.Name):
            found.append((node.node.name, node))
    return tuple(found)


@cache
def compile_formula(source: str):
    """A callable taking the record's values as keyword arguments."""
    return environment().compile_expression(source, undefined_to_none=False)


def evaluate_formula(source: str, values: dict, now: dt.datetime | None = None):
    now = now or dt.datetime.now(dt.UTC)
    # Decimals become floats so that literals such as 0.9 mix with them; the field type
    # rounds the result back to its own precision.
    context = {k: float(v) if isinstance(v, decimal.Decimal) else v for k, v in values.items()}
    context.update(today=now.date(), now=now)
    try:
        return compile_formula(source)(**context)
    except (TypeError, ArithmeticError, decimal.InvalidOperation):
        # A formula over an empty field (None * 3) has no value rather than an error.
        return None


@cache
def compile_template(source: str):
    return environment().from_string(source)


def check_template(source: str) -> str | None:
    try:
        environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax: {exc.message} (line {exc.lineno})"
    return None
