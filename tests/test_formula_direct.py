"""Simple formulas evaluated directly give the sandbox's answers: generated formulas over
generated values, the shipped packs' formulas, and what stays in the sandbox."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import UndefinedError

from xrm.metadata.expressions import evaluate_formula, evaluate_in_sandbox
from xrm.metadata.formula_direct import direct_formula

NOW = dt.datetime(2026, 3, 4, 10, 30, tzinfo=dt.UTC)
NAMES = ("a", "b", "c")

constants = st.one_of(
    st.integers(-5, 1000).map(str),
    st.sampled_from(["0", "0.5", "2.25", "''", "' '", "'x y '", "none", "true", "false"]),
)


def formulas():
    leaves = st.one_of(st.sampled_from([*NAMES, "today", "now"]), constants)

    def grow(inner):
        binary = st.tuples(
            inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "~", "and", "or"]), inner
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        compare = st.tuples(
            inner, st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]), inner
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        unary = st.tuples(st.sampled_from(["-", "not "]), inner).map(lambda t: f"({t[0]}{t[1]})")
        condition = st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")
        filtered = st.tuples(
            inner, st.sampled_from(["trim", "upper", "lower", "round", "abs", "default"])
        ).map(lambda t: f"({t[0]}) | {t[1]}")
        return st.one_of(binary, compare, unary, condition, filtered)

    return st.recursive(leaves, grow, max_leaves=6)


field_values = st.one_of(
    st.none(),
    st.integers(-3, 50),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.decimals(min_value=-100, max_value=100, places=2, allow_nan=False),
    st.text(alphabet=" abcXY1é", max_size=5),
    st.booleans(),
    st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 1, 1)),
)


def outcome(func, source, values):
    try:
        return ("value", func(source, values, NOW))
    except Exception as exc:  # both ways must fail the same way too
        return ("error", type(exc).__name__)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formulas(), st.fixed_dictionaries({n: field_values for n in NAMES}))
def test_generated_formulas_give_the_sandboxs_answers(source, values):
    assert direct_formula(source) is not None  # the grammar only makes direct formulas
    direct, sandbox = (
        outcome(evaluate_formula, source, values),
        outcome(evaluate_in_sandbox, source, values),
    )
    if direct[0] == "value" and sandbox[0] == "value":
        d, s = direct[1], sandbox[1]
        assert type(d) is type(s)
        assert d == s or (d != d and s != s)  # NaN is NaN
    else:
        assert direct == sandbox


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        (
            "((first_name or '') ~ ' ' ~ last_name) | trim",
            {"first_name": None, "last_name": "Ross"},
            "Ross",
        ),
        (
            "((first_name or '') ~ ' ' ~ last_name) | trim",
            {"first_name": "Ann", "last_name": "Ross"},
            "Ann Ross",
        ),
        (
            "quantity * unit_price * (100 - (discount or 0)) / 100",
            {
                "quantity": decimal.Decimal("2"),
                "unit_price": decimal.Decimal("10.50"),
                "discount": None,
            },
            21.0,
        ),
        ("amount * probability / 100", {"amount": None, "probability": 10}, None),
        ("actual_cost / lead_count", {"actual_cost": decimal.Decimal("5"), "lead_count": 0}, None),
        (
            "resolved_at - received_at",
            {"resolved_at": NOW, "received_at": NOW - dt.timedelta(hours=2)},
            dt.timedelta(hours=2),
        ),
        ("today - birthday", {"birthday": dt.date(2026, 3, 1)}, dt.timedelta(days=3)),
    ],
)
def test_shipped_formulas(source, values, expected):
    assert direct_formula(source) is not None
    assert evaluate_formula(source, values, NOW) == expected
    assert evaluate_in_sandbox(source, values, NOW) == expected


@pytest.mark.parametrize(
    "source",
    [
        "name.upper()",  # a call: the sandbox judges what may be called
        "account.name",  # an attribute
        "tags[0]",  # an item
        "round(amount, 2)",  # a global function
        "amount is none",  # a test
        "amount if amount",  # no else: an undefined value
        "(1 < amount < 3)",  # a chained comparison
        "amount | money",  # a filter that reads the reader's context
    ],
)
def test_what_stays_in_the_sandbox(source):
    assert direct_formula(source) is None


def test_a_name_the_values_lack_is_the_sandboxs_error():
    with pytest.raises(UndefinedError):
        evaluate_formula("missing ~ 'x'", {"a": 1}, NOW)
    # and a name never read does not matter, as in the sandbox
    assert evaluate_formula("a or missing", {"a": 1}, NOW) == 1


def test_the_sandbox_still_refuses_unsafe_access():
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        evaluate_formula("name.__class__.__mro__", {"name": "x"}, NOW)
