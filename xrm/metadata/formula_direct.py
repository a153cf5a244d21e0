"""Simple formulas evaluated directly: the same expressions and the same answers as the
Jinja sandbox, without building a template context for every record.

A formula made only of field names, constants, ``~`` (join as text), arithmetic,
comparisons, ``and``/``or``/``not``, ``a if c else b`` and filters that need no context
(``| trim``, ``| upper``...) is turned once into nested Python functions that do what
Jinja's compiled code does for those nodes: Jinja writes ``(a + b)``, ``(a or b)`` and
``str_join((a, b))`` for them and calls such a filter as a plain function; the sandbox
has nothing to guard in them (no attribute, item or call).  A formula with anything
else — an attribute, an index, a call, a test, a filter that takes a context — has no
direct form and runs in the sandbox, as does any evaluation that meets a name the values
do not carry (so the sandbox's undefined-name error stays its own).

``tests/test_formula_direct.py`` checks both ways agree on generated formulas and values.
"""

from __future__ import annotations

import decimal
import functools
import operator
from collections.abc import Callable

Direct = Callable[[dict, object, object], object]  # (values, today, now) -> value


class NotDirect(Exception):
    """This evaluation needs the sandbox (a name the values do not carry)."""


_MISSING = object()

_BINARY = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
    "FloorDiv": operator.floordiv,
    "Mod": operator.mod,
    "Pow": operator.pow,
}
_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


@functools.cache
def direct_formula(source: str) -> Direct | None:
    """The direct form of a formula, or None when it has none (or does not parse)."""
    from jinja2 import TemplateSyntaxError, nodes

    from .expressions import environment

    env = environment()
    try:
        parsed = env.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError:
        return None
    body = parsed.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    try:
        return _build(body[0].nodes[0], nodes, env)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _build(node, nodes, env) -> Direct:
    kind = type(node).__name__
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda values, today, now: value
    if isinstance(node, nodes.Name):
        if node.ctx != "load":
            raise _Unsupported
        return _name(node.name)
    if kind in _BINARY and isinstance(node, nodes.BinExpr):
        if node.operator in env.intercepted_binops:
            raise _Unsupported  # the sandbox wants to see this operator
        left, right, op = (
            _build(node.left, nodes, env),
            _build(node.right, nodes, env),
            _BINARY[kind],
        )
        return lambda values, today, now: op(left(values, today, now), right(values, today, now))
    if isinstance(node, nodes.Neg | nodes.Pos):
        if node.operator in env.intercepted_unops:
            raise _Unsupported
        inner = _build(node.node, nodes, env)
        if isinstance(node, nodes.Neg):
            return lambda values, today, now: -inner(values, today, now)
        return lambda values, today, now: +inner(values, today, now)
    if isinstance(node, nodes.Not):
        inner = _build(node.node, nodes, env)
        return lambda values, today, now: not inner(values, today, now)
    if isinstance(node, nodes.And):
        left, right = _build(node.left, nodes, env), _build(node.right, nodes, env)
        return lambda values, today, now: left(values, today, now) and right(values, today, now)
    if isinstance(node, nodes.Or):
        left, right = _build(node.left, nodes, env), _build(node.right, nodes, env)
        return lambda values, today, now: left(values, today, now) or right(values, today, now)
    if isinstance(node, nodes.Concat):
        parts = tuple(_build(n, nodes, env) for n in node.nodes)
        # Jinja's str_join: "".join(map(str, ...)) (no autoescape in formulas)
        return lambda values, today, now: "".join([str(p(values, today, now)) for p in parts])
    if isinstance(node, nodes.CondExpr):
        if node.expr2 is None:  # no else: an undefined value, the sandbox's business
            raise _Unsupported
        test = _build(node.test, nodes, env)
        yes, no = _build(node.expr1, nodes, env), _build(node.expr2, nodes, env)
        return lambda values, today, now: (
            yes(values, today, now) if test(values, today, now) else no(values, today, now)
        )
    if isinstance(node, nodes.Compare) and len(node.ops) == 1:
        op = _COMPARE.get(node.ops[0].op)
        if op is None:
            raise _Unsupported
        left, right = _build(node.expr, nodes, env), _build(node.ops[0].expr, nodes, env)
        return lambda values, today, now: op(left(values, today, now), right(values, today, now))
    if isinstance(node, nodes.Filter) and node.node is not None:
        return _filter(node, nodes, env)
    raise _Unsupported


def _name(name: str) -> Direct:
    if name == "today":
        return lambda values, today, now: today
    if name == "now":
        return lambda values, today, now: now

    def read(values, today, now, _get=dict.get, _decimal=decimal.Decimal):
        value = _get(values, name, _MISSING)
        if value is _MISSING:
            raise NotDirect(name)
        # as evaluate_formula does: decimals become floats so that 0.9 mixes with them
        return float(value) if isinstance(value, _decimal) else value

    return read


def _filter(node, nodes, env) -> Direct:
    func = env.filters.get(node.name)
    if func is None or getattr(func, "jinja_pass_arg", None) is not None:
        raise _Unsupported
    if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
        raise _Unsupported
    if not all(isinstance(a, nodes.Const) for a in node.args):
        raise _Unsupported
    args = tuple(a.value for a in node.args)
    inner = _build(node.node, nodes, env)
    return lambda values, today, now: func(inner(values, today, now), *args)
