"""Formulas and message templates: Jinja2's immutable sandbox with strict undefined names.

Definitions are checked when they load (syntax, names, arithmetic on fitting types) from
the *shape* of each formula and template: what it reads, stores, filters and walks, worked
out once per text and remembered across processes (``parse_cache.remembered``), so a start
whose answers are all remembered does not import Jinja at all.  At run time a compiled
expression is evaluated against one record's values.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from functools import cache
from typing import NamedTuple

from . import parse_cache
from .formats import filters
from .formula_direct import NotDirect, direct_formula

#: Names every formula may use besides the record's fields (see ``environment``).
FORMULA_GLOBALS = frozenset({"today", "now", "round", "abs", "min", "max", "Decimal"})


def _round(value, digits=0):
    return round(value, digits) if value is not None else None


@cache
def environment():
    """The sandboxed Jinja environment every formula, template and renderer shares."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.globals.update(
        {"round": _round, "abs": abs, "min": min, "max": max, "Decimal": decimal.Decimal}
    )
    env.filters.update(filters())  # date, datetime, time, number, money, url: per reader
    return env


class ExpressionError(ValueError):
    pass


# ------------------------------------------------------------------------ shapes
def _strings(value) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of names")
    return tuple(value)


def _chains(value) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError("not a list of chains")
    return tuple(_strings(chain) for chain in value)


class FormulaShape(NamedTuple):
    """What a formula reads: enough to check it against its entity without parsing it."""

    syntax: str | None  # the syntax error, or None
    names: tuple[str, ...]  # names read, in order
    arithmetic: tuple[str, ...]  # names used directly as operands of arithmetic
    attributes: tuple[tuple[str, str], ...]  # (name, attribute) of name.attribute, name[...]

    @classmethod
    def revive(cls, raw) -> FormulaShape:
        syntax, names, arithmetic, attributes = raw
        if syntax is not None and not isinstance(syntax, str):
            raise ValueError("not a message")
        pairs = _chains(attributes)
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("not a pair")
        return cls(syntax, _strings(names), _strings(arithmetic), pairs)


@parse_cache.remembered("formula_shape", FormulaShape.revive)
def formula_shape(source: str) -> FormulaShape:
    """The shape of a formula (see ``FormulaShape``); ``syntax`` says why it is not one."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        parsed = environment().parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        return FormulaShape(f"formula syntax: {exc.message}", (), (), ())
    output = parsed.body[0]
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1 or len(parsed.body) != 1:
        return FormulaShape("a formula is one expression", (), (), ())
    expr = output.nodes[0]

    def found(node_types):  # the root included (Jinja's find_all skips it)
        if isinstance(expr, node_types):
            yield expr
        yield from expr.find_all(node_types)

    names = tuple(dict.fromkeys(n.name for n in found(nodes.Name) if n.ctx == "load"))
    arithmetic = []
    operators = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)
    for node in found(operators):
        arithmetic += [
            side.name for side in (node.left, node.right) if isinstance(side, nodes.Name)
        ]
    arithmetic += [n.node.name for n in found(nodes.Neg) if isinstance(n.node, nodes.Name)]
    attributes = tuple(
        (node.node.name, getattr(node, "attr", "..."))
        for node in found((nodes.Getattr, nodes.Getitem))
        if isinstance(node.node, nodes.Name)
    )
    return FormulaShape(None, names, tuple(dict.fromkeys(arithmetic)), attributes)


def formula_names(source: str) -> frozenset[str]:
    """The names a formula reads (none when it does not parse: the check reports that)."""
    return frozenset(formula_shape(source).names)


class TemplateShape(NamedTuple):
    """What a template uses: enough to check it against records, inputs and names."""

    syntax: str | None  # Jinja's message, or None
    line: int  # the line of the syntax error
    free: tuple[str, ...]  # names read and not set inside, nor Jinja's or our globals; in order
    chains: tuple[tuple[str, ...], ...]  # name.attr.attr... of every attribute access, in order
    unknown_filters: tuple[str, ...]  # filters the environment does not have
    single: tuple[str, ...] | None  # the chain, when the template is one {{ name.attr... }}

    @classmethod
    def revive(cls, raw) -> TemplateShape:
        syntax, line, free, chains, unknown_filters, single = raw
        if (syntax is not None and not isinstance(syntax, str)) or not isinstance(line, int):
            raise ValueError("not a message")
        return cls(
            syntax,
            line,
            _strings(free),
            _chains(chains),
            _strings(unknown_filters),
            None if single is None else _strings(single),
        )


#: ``{{ expression }}`` and nothing else: such a template's value keeps its type.
SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)


@parse_cache.remembered("template_shape", TemplateShape.revive)
def template_shape(source: str) -> TemplateShape:
    """The shape of a template (see ``TemplateShape``)."""
    from jinja2 import TemplateSyntaxError, nodes

    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return TemplateShape(exc.message or "invalid", exc.lineno or 1, (), (), (), None)
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    known = stored | set(env.globals)
    free = tuple(
        dict.fromkeys(
            n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and n.name not in known
        )
    )
    chains = []
    for node in tree.find_all(nodes.Getattr):
        chain = _attribute_chain(node, nodes)
        if chain:
            chains.append(chain)
    unknown_filters = tuple(
        sorted({n.name for n in tree.find_all(nodes.Filter)} - set(env.filters))
    )
    single = None
    match = SINGLE_EXPRESSION.match(source)
    if match:
        try:
            body = env.parse("{{" + match["expr"] + "}}").body
        except TemplateSyntaxError:
            body = []
        if len(body) == 1 and len(getattr(body[0], "nodes", ())) == 1:
            single = _attribute_chain(body[0].nodes[0], nodes)
    return TemplateShape(None, 0, free, tuple(chains), unknown_filters, single)


def _attribute_chain(node, nodes) -> tuple[str, ...] | None:
    """``record.account.name`` as ('record', 'account', 'name'); None when it does not
    start at a name."""
    parts = []
    while isinstance(node, nodes.Getattr):
        parts.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name):
        return (node.name, *reversed(parts))
    return None


@cache
def compile_formula(source: str):
    """A callable taking the record's values as keyword arguments."""
    return environment().compile_expression(source, undefined_to_none=False)


def evaluate_formula(source: str, values: dict, now: dt.datetime | None = None):
    now = now or dt.datetime.now(dt.UTC)
    direct = direct_formula(source)
    if direct is not None:  # a simple formula: the sandbox's answer without its context
        try:
            return direct(values, now.date(), now)
        except NotDirect:
            pass  # a name the values lack: the sandbox says what that means
        except (TypeError, ArithmeticError, decimal.InvalidOperation):
            return None
    return evaluate_in_sandbox(source, values, now)


def evaluate_in_sandbox(source: str, values: dict, now: dt.datetime):
    """A formula's value computed by the sandbox itself (what ``evaluate_formula``
    answers for every formula)."""
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
    shape = template_shape(source)
    return f"template syntax: {shape.syntax} (line {shape.line})" if shape.syntax else None


class Today(dt.date):
    """A date that adds and subtracts whole days: ``today + 1`` is tomorrow."""

    def __add__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            other = dt.timedelta(days=other)
        result = dt.date.__add__(self, other)
        return (
            Today(result.year, result.month, result.day) if isinstance(result, dt.date) else result
        )

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            other = dt.timedelta(days=other)
        result = dt.date.__sub__(self, other)
        if isinstance(result, dt.date) and not isinstance(result, dt.datetime):
            return Today(result.year, result.month, result.day)
        return result

    @classmethod
    def of(cls, day: dt.date) -> Today:
        return cls(day.year, day.month, day.day)
