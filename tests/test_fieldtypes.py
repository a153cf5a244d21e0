"""The field-type registry: every registered type, value by value.

Each type has one ``Case`` below (good and bad inputs, display in ``en`` and ``ru``,
JSON, the text round trip, its strict marshmallow field).  A type registered without a
case fails ``test_every_registered_type_has_a_case``, so a new type cannot ship untested.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from faker import Faker
from marshmallow import Schema, ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from xrm.metadata import FIELD_TYPES, CoercionError
from xrm.metadata.fieldtypes import ALL_OPS, AutonumberType, format_duration, parse_duration
from xrm.metadata.labels import Label
from xrm.metadata.model import Field, Option

UTC = dt.UTC
STAGES = (
    Option("new", Label.of({"en": "New", "ru": "Новый"})),
    Option("won", Label.of({"en": "Won", "ru": "Выиграна"}), color="green"),
)
#: Types whose sample is None: relations, computed values and uploads are filled by the
#: platform (or by sample data that knows other records), not invented per field.
NO_SAMPLE = {
    "any_lookup",
    "autonumber",
    "children",
    "file",
    "formula",
    "json",
    "lookup",
    "many_to_many",
    "rollup",
    "user",
}


def make(type_name: str, choices: tuple = (), **params) -> Field:
    return Field(
        name="f",
        type=type_name,
        label=Label.of({"en": "F", "ru": "Ф"}),
        entity="thing",
        params=params,
        choices=choices,
    )


def spaces(text: str) -> str:
    """CLDR uses no-break and narrow no-break spaces; compare them as plain spaces."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


@dataclass
class Case:
    params: dict = field(default_factory=dict)
    choices: tuple = ()
    good: list[tuple[Any, Any]] = field(default_factory=list)  # input -> stored value
    bad: list[tuple[Any, str]] = field(default_factory=list)  # input -> message fragment
    none: Any = None  # what coerce(None) gives
    formats: list[tuple[Any, str, str]] = field(default_factory=list)  # value, en, ru
    json: list[tuple[Any, Any]] = field(default_factory=list)  # value -> to_json
    texts: list[Any] = field(default_factory=list)  # values that survive to_text/parse_text
    mm_good: list[tuple[Any, Any]] = field(default_factory=list)  # JSON in -> loaded
    mm_bad: list[Any] = field(default_factory=list)

    def field(self, type_name: str) -> Field:
        return make(type_name, self.choices, **self.params)


D = Decimal
MARCH_1 = dt.date(2026, 3, 1)
NOON_30 = dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)

CASES: dict[str, Case] = {
    "text": Case(
        params={"max_length": 10},
        good=[("  Acme ", "Acme"), (42, "42"), ("", None), ("   ", None), ("x" * 10, "x" * 10)],
        bad=[
            ("x" * 11, "at most 10 characters (got 11)"),
            (True, "expected text"),
            ({"a": 1}, "expected text"),
            ([1], "expected text"),
        ],
        formats=[("Acme", "Acme", "Acme")],
        json=[("Acme", "Acme")],
        texts=["Acme", "Ёлка"],
        mm_good=[("Acme", "Acme"), (None, None)],
        mm_bad=[5, ["a"]],
    ),
    "long_text": Case(
        params={"max_length": 20},
        good=[("\n line one\nline two \n", "line one\nline two"), ("\n\n", None)],
        bad=[(5, "expected text"), ("y" * 21, "at most 20 characters")],
        formats=[("a\nb", "a\nb", "a\nb")],
        json=[("a\nb", "a\nb")],
        texts=["line one\nline two"],
        mm_good=[("text", "text")],
        mm_bad=[1.5],
    ),
    "rich_text": Case(
        good=[
            ("<p>hi<script>alert(1)</script></p>", "<p>hi</p>"),
            ('<p onclick="x()">a <b>b</b></p>', "<p>a <b>b</b></p>"),
            ("  ", None),
        ],
        bad=[(5, "expected text")],
        formats=[
            (
                "<p>Fish &amp; chips</p><p>second<br>line</p>",
                "Fish & chips second line",
                "Fish & chips second line",
            )
        ],
        texts=["<p>a <b>b</b></p>"],
        mm_good=[("<p>x</p>", "<p>x</p>")],
        mm_bad=[{"p": 1}],
    ),
    "email": Case(
        good=[(" John.Doe@Example.COM ", "John.Doe@example.com"), ("", None)],
        bad=[
            ("not-an-email", "not a valid email address"),
            ("a@b", "not a valid email address"),
            (True, "expected text"),
        ],
        formats=[("ann@example.com", "ann@example.com", "ann@example.com")],
        texts=["ann@example.com"],
        mm_good=[("ann@example.com", "ann@example.com")],
        mm_bad=[7],
    ),
    "phone": Case(
        good=[
            ("(202) 555-0143", "+12025550143"),
            ("+7 912 345-67-89", "+79123456789"),
            (" ", None),
        ],
        bad=[("call me", "not a phone number"), ("12", "not a possible phone number")],
        formats=[
            ("+12025550143", "+1 202-555-0143", "+1 202-555-0143"),
            ("+79123456789", "+7 912 345-67-89", "+7 912 345-67-89"),
        ],
        texts=["+12025550143"],
        mm_good=[("+12025550143", "+12025550143")],
        mm_bad=[12025550143],
    ),
    "url": Case(
        good=[
            ("example.com/path", "https://example.com/path"),
            ("http://x.org/a?b=1", "http://x.org/a?b=1"),
            ("", None),
        ],
        bad=[
            ("ftp://x.org", "expected an http(s) address"),
            ("http://exa mple.com", "expected an http(s) address"),
            ("https://", "expected an http(s) address"),
        ],
        formats=[("https://x.org", "https://x.org", "https://x.org")],
        texts=["https://example.com/path"],
        mm_good=[("https://x.org", "https://x.org")],
        mm_bad=[1],
    ),
    "integer": Case(
        params={"min": -5, "max": 10**12},
        good=[
            (42, 42),
            ("1 234", 1234),
            ("1\u00a0234", 1234),
            (3.0, 3),
            (D("7"), 7),
            (" -5 ", -5),
            ("", None),
        ],
        bad=[
            ("abc", "expected a whole number"),
            (1.5, "expected a whole number"),
            (True, "expected a whole number"),
            (float("nan"), "expected a whole number"),
            (float("inf"), "expected a whole number"),
            (D("NaN"), "expected a whole number"),
            ([1], "expected a whole number"),
            (-6, "must be at least -5"),
            (10**12 + 1, "must be at most 1000000000000"),
        ],
        formats=[(1234567, "1,234,567", "1 234 567"), (0, "0", "0")],
        json=[(5, 5)],
        texts=[1234567, -5],
        # numbers and text pass the API's schema; the records service reads the text
        mm_good=[(5, 5), ("1 234", "1 234"), (None, None)],
    ),
    "decimal": Case(
        good=[
            ("1234.5", D("1234.5000")),
            (1.1, D("1.1000")),
            ("1,234.5", D("1234.5000")),
            (" 1 234.5 ", D("1234.5000")),
            (7, D("7.0000")),
            (D("2.00015"), D("2.0002")),  # banker's rounding: half to even
            (D("2.00025"), D("2.0002")),
            ("", None),
        ],
        bad=[
            ("abc", "expected a number"),
            (True, "expected a number"),
            ("NaN", "expected a finite number"),
            (float("inf"), "expected a finite number"),
            ("1e20", "number is too large"),
            ([1], "expected a number"),
            ("1,5", "digits are grouped wrongly"),  # English groups by comma: not 15, not 1.5
        ],
        formats=[(D("1234.5"), "1,234.5", "1 234,5"), (D("-0.25"), "-0.25", "-0,25")],
        json=[(D("1234.5000"), "1234.5000"), (D("1E+2"), "100")],
        texts=[D("1234.5000"), D("-0.0001")],
        mm_good=[("1.25", "1.25"), (D("1.25"), D("1.25")), (2, 2)],
    ),
    "money": Case(
        params={"currency": "EUR", "min": 0},
        good=[
            ("1 234.56", D("1234.56")),
            (10, D("10.00")),
            (0.1 + 0.2, D("0.30")),
            ("0.005", D("0.00")),
            ("0.015", D("0.02")),
        ],
        bad=[
            ("ten", "expected a number"),
            ("1e17", "number is too large"),
            (-1, "must be at least 0"),
        ],
        formats=[(D("1234.5"), "€1,234.50", "1 234,50 €"), (D("0"), "€0.00", "0,00 €")],
        json=[(D("1234.50"), "1234.50")],
        texts=[D("1234.50")],
        mm_good=[("19.99", "19.99")],
    ),
    "percent": Case(
        good=[("12.5%", D("12.50")), (" 50 % ", D("50.00")), (50, D("50.00")), ("%", None)],
        bad=[("half", "expected a number"), ("1e10", "number is too large")],
        formats=[(D("12.5"), "12.5%", "12,5 %"), (D("100"), "100%", "100 %")],
        json=[(D("12.50"), "12.50")],
        texts=[D("12.50")],
        mm_good=[("12.5%", "12.5%")],
    ),
    "rating": Case(
        good=[(3, 3), ("4", 4), (0, 0), ("", None)],
        bad=[
            (6, "rating from 0 to 5"),
            (-1, "rating from 0 to 5"),
            ("x", "expected a whole number"),
        ],
        formats=[(3, "★★★☆☆", "★★★☆☆"), (0, "☆☆☆☆☆", "☆☆☆☆☆")],
        json=[(3, 3)],
        texts=[3, 5],
        mm_good=[(4, 4), ("4", "4")],
    ),
    "boolean": Case(
        good=[
            (True, True),
            (False, False),
            ("yes", True),
            (" Да ", True),
            ("нет", False),
            ("off", False),
            (1, True),
            (0, False),
            ("", None),
        ],
        bad=[
            ("maybe", "expected yes or no"),
            (2, "expected yes or no"),
            (1.0, "expected yes or no"),
            ([True], "expected yes or no"),
        ],
        formats=[(True, "Yes", "Да"), (False, "No", "Нет")],
        json=[(True, True)],
        texts=[True, False],
        mm_good=[(True, True), (False, False)],
        mm_bad=["true", "yes"],
    ),
    "date": Case(
        good=[
            ("2026-03-01", MARCH_1),
            (" 01.03.2026 ", MARCH_1),
            ("03/01/2026", MARCH_1),
            (MARCH_1, MARCH_1),
            ("", None),
        ],
        bad=[
            ("tomorrow", "expected a date (YYYY-MM-DD)"),
            ("31.02.2026", "expected a date"),
            (NOON_30, "expected a date without time"),
            (20260301, "expected a date"),
        ],
        formats=[(MARCH_1, "Mar 1, 2026", "1 мар. 2026 г.")],
        json=[(MARCH_1, "2026-03-01")],
        texts=[MARCH_1, dt.date(1999, 12, 31)],
        mm_good=[("2026-03-01", MARCH_1)],
        mm_bad=["01.03.2026", "yesterday"],
    ),
    "datetime": Case(
        good=[
            ("2026-03-01T12:30:00Z", NOON_30),
            ("2026-03-01T15:30:00+03:00", NOON_30),
            ("2026-03-01 12:30", NOON_30),  # naive input is read as UTC
            (dt.datetime(2026, 3, 1, 12, 30), NOON_30),
            ("", None),
        ],
        bad=[
            ("soon", "expected a date and time (ISO 8601)"),
            (MARCH_1, "expected a date and time"),
            (5, "expected a date and time"),
        ],
        formats=[(NOON_30, "Mar 1, 2026, 12:30:00 PM", "1 мар. 2026 г., 12:30:00")],
        json=[(NOON_30, "2026-03-01T12:30:00Z")],
        texts=[NOON_30],
        mm_good=[("2026-03-01T12:30:00Z", NOON_30), ("2026-03-01T12:30:00", NOON_30)],
        mm_bad=["noon", 1],
    ),
    "time": Case(
        good=[
            ("14:05", dt.time(14, 5)),
            (" 09:30:15 ", dt.time(9, 30, 15)),
            (dt.time(8, 0), dt.time(8, 0)),
            ("", None),
        ],
        bad=[
            ("25:00", "expected a time (HH:MM)"),
            ("noon", "expected a time"),
            (5, "expected a time"),
        ],
        formats=[(dt.time(14, 5), "2:05 PM", "14:05")],
        json=[(dt.time(14, 5), "14:05")],
        texts=[dt.time(14, 5)],
        mm_good=[("14:05", dt.time(14, 5))],
        mm_bad=["2pm"],
    ),
    "duration": Case(
        good=[
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("90m", 5400),
            ("1:30", 5400),
            ("PT1H30M", 5400),
            ("2d", 172800),
            ("90", 5400),  # a bare number typed by a person means minutes
            (dt.timedelta(minutes=5), 300),
            (600, 600),
            ("  ", None),
        ],
        bad=[
            ("soon", "expected a duration such as 1h30m"),
            ("1h30x", "expected a duration"),
            ("PT", "expected a duration"),
            (1.5, "expected a whole number"),
        ],
        formats=[
            (5400, "1h 30m", "1h 30m"),
            (0, "0m", "0m"),
            (90061, "1d 1h 1m 1s", "1d 1h 1m 1s"),
        ],
        json=[(5400, 5400)],
        texts=[5400, 90061, 60],
        mm_good=[(5400, 5400)],
        mm_bad=["1h"],
    ),
    "choice": Case(
        choices=STAGES,
        good=[("won", "won"), (" new ", "new"), ("Won", "won"), ("выиграна", "won"), ("", None)],
        bad=[
            ("lost", "'lost' is not an option (expected one of new, won)"),
            ("wn", "did you mean 'won'?"),
            (5, "expected one of the options"),
        ],
        formats=[("won", "Won", "Выиграна"), ("legacy", "legacy", "legacy")],
        json=[("won", "won")],
        texts=["new", "won"],
        mm_good=[("won", "won")],
        mm_bad=["lost", 1],
    ),
    "multi_choice": Case(
        choices=STAGES,
        good=[
            ("won, new", ["new", "won"]),  # stored in option order
            (["won", "won"], ["won"]),
            (["Новый"], ["new"]),
            ([], None),
            ("", None),
        ],
        bad=[
            ("won, lost", "'lost' is not an option"),
            (5, "expected a list of options"),
            ([5], "expected one of the options"),
        ],
        formats=[(["new", "won"], "New, Won", "Новый, Выиграна")],
        json=[(["new", "won"], ["new", "won"])],
        texts=[["new", "won"], ["won"]],
        mm_good=[(["won"], ["won"])],
        mm_bad=[["lost"], "won"],
    ),
    "tags": Case(
        good=[
            ("Red, blue ,red", ["blue", "red"]),
            (["VIP"], ["vip"]),
            ((" a ", "b"), ["a", "b"]),
            ([], None),
            (",", None),
        ],
        bad=[
            ([1], "tags are text"),
            (["x" * 65], "a tag has at most 64 characters"),
            (5, "expected a list of tags"),
        ],
        formats=[(["a", "b"], "a, b", "a, b")],
        json=[(["a", "b"], ["a", "b"])],
        texts=[["blue", "red"]],
        mm_good=[(["a"], ["a"])],
        mm_bad=["a"],
    ),
    "lookup": Case(
        params={"to": "account"},
        good=[(5, 5), (" 12 ", 12), ({"id": 7, "name": "Acme"}, 7), ("", None), ("  ", None)],
        bad=[
            (0, "expected a record id"),
            (-3, "expected a record id"),
            ("abc", "expected a record id"),
            (True, "expected a record id"),
            (1.5, "expected a record id"),
        ],
        formats=[(5, "5", "5")],
        json=[(5, 5)],
        texts=[5],
        mm_good=[(5, 5)],
        mm_bad=["5", 5.5],
    ),
    "user": Case(
        good=[(3, 3), ("4", 4), ({"id": 2}, 2), ("", None)],
        bad=[(0, "expected a record id"), ("me", "expected a record id")],
        formats=[(3, "3", "3")],
        json=[(3, 3)],
        texts=[3],
        mm_good=[(3, 3)],
        mm_bad=["3"],
    ),
    "any_lookup": Case(
        params={"to": ["account", "contact"]},
        good=[
            ("account:5", {"entity": "account", "id": 5}),
            ({"entity": "contact", "id": "7"}, {"entity": "contact", "id": 7}),
            ("", None),
        ],
        bad=[
            ("deal:5", "expected a record of account, contact"),
            ("account:x", "expected a record id"),
            (5, 'expected {"entity": name, "id": number}'),
            ({"entity": "account"}, 'expected {"entity": name, "id": number}'),
        ],
        json=[({"entity": "account", "id": 5}, {"entity": "account", "id": 5})],
        texts=[{"entity": "account", "id": 5}],
        mm_good=[({"entity": "account", "id": 5}, {"entity": "account", "id": 5})],
        mm_bad=["account:5"],
    ),
    "children": Case(
        params={"entity": "line", "via": "order_ref"},
        good=[([1, 2], [1, 2])],
        formats=[(None, "", "")],
    ),
    "many_to_many": Case(
        params={"to": "contact"},
        good=[([3, 1, 3], [1, 3]), ("3, 1", [1, 3]), ({"2", 1}, [1, 2]), ("", [])],
        bad=[
            (5, "expected a list of record ids"),
            ([0], "expected a record id"),
            (["x"], "expected a record id"),
        ],
        none=[],
        texts=[[1, 3]],
        mm_good=[([1, 2], [1, 2])],
        mm_bad=[["a"], 1],
    ),
    "autonumber": Case(
        params={"pattern": "INV-{YYYY}-{####}"},
        good=[("INV-2026-0042", "INV-2026-0042")],
        formats=[("INV-2026-0042", "INV-2026-0042", "INV-2026-0042")],
        texts=["INV-2026-0042"],
    ),
    "formula": Case(
        params={"expression": "amount * 2", "result": "money"},
        good=[("12.345", D("12.34")), (3, D("3.00")), ("", None)],
        bad=[("lots", "expected a number")],
        formats=[(D("1234.5"), "$1,234.50", "1 234,50 $")],
        json=[(D("12.30"), "12.30")],
        texts=[D("12.30")],
    ),
    "rollup": Case(
        params={"result": "integer"},
        good=[("5", 5), (7, 7)],
        bad=[("many", "expected a whole number")],
        formats=[(1500, "1,500", "1 500")],
        json=[(5, 5)],
        texts=[1500],
    ),
    "file": Case(
        params={"max_size_mb": 1, "accept": [".pdf"]},
        good=[
            (
                {"key": "k1", "name": "Report.PDF", "size": 100},
                {
                    "key": "k1",
                    "name": "Report.PDF",
                    "size": 100,
                    "content_type": "application/octet-stream",
                },
            ),
            ("", None),
        ],
        bad=[
            ("report.pdf", "expected an uploaded file"),
            ({"name": "a.pdf"}, "expected an uploaded file"),
            ({"key": "k", "name": "a.exe"}, "expected a file of type .pdf"),
            ({"key": "k", "name": "a.pdf", "size": 2 * 1024 * 1024}, "file is larger than 1 MB"),
        ],
        formats=[({"key": "k1", "name": "Report.pdf", "size": 1}, "Report.pdf", "Report.pdf")],
        mm_good=[({"key": "k1"}, {"key": "k1"})],
    ),
    "json": Case(
        good=[
            ('{"a": [1, 2]}', {"a": [1, 2]}),
            ({"a": 1}, {"a": 1}),
            ([1, "x"], [1, "x"]),
            ("  ", None),
        ],
        bad=[
            ("{oops", "expected JSON"),
            ({"a": object()}, "expected JSON"),
            ({"n": float("nan")}, "expected JSON"),
            ('{"n": NaN}', "expected JSON"),
        ],
        formats=[({"a": "é"}, '{"a": "é"}', '{"a": "é"}')],
        json=[({"a": 1}, {"a": 1})],
        texts=[{"a": [1, 2], "b": "ё"}, [1, 2]],
        mm_good=[({"a": 1}, {"a": 1})],
    ),
}


def test_every_registered_type_has_a_case():
    assert set(CASES) == set(FIELD_TYPES)


def _good():
    for name, case in CASES.items():
        for index, (raw, expected) in enumerate(case.good):
            yield pytest.param(name, raw, expected, id=f"{name}-{index}")


def _bad():
    for name, case in CASES.items():
        for index, (raw, message) in enumerate(case.bad):
            yield pytest.param(name, raw, message, id=f"{name}-{index}")


def _formats():
    for name, case in CASES.items():
        for index, (value, en, ru) in enumerate(case.formats):
            yield pytest.param(name, value, en, ru, id=f"{name}-{index}")


def _texts():
    for name, case in CASES.items():
        for index, value in enumerate(case.texts):
            yield pytest.param(name, value, id=f"{name}-{index}")


def _json():
    for name, case in CASES.items():
        for index, (value, expected) in enumerate(case.json):
            yield pytest.param(name, value, expected, id=f"{name}-{index}")


def _mm(which: str):
    for name, case in CASES.items():
        for index, item in enumerate(getattr(case, which)):
            yield pytest.param(name, item, id=f"{name}-{index}")


@pytest.mark.parametrize("name, raw, expected", list(_good()))
def test_coerce_good_values(name, raw, expected):
    f = CASES[name].field(name)
    value = f.coerce(raw)
    assert value == expected
    assert type(value) is type(expected)
    # coercion is idempotent: a stored value coerces to itself
    assert f.coerce(value) == value


@pytest.mark.parametrize("name, raw, message", list(_bad()))
def test_coerce_bad_values(name, raw, message):
    f = CASES[name].field(name)
    with pytest.raises(CoercionError) as caught:
        f.coerce(raw)
    assert message in caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_none_and_blank(name):
    case = CASES[name]
    f = case.field(name)
    assert f.coerce(None) == case.none
    # an empty CSV cell or form field is always "no value"
    assert f.kind.parse_text(f, "") is None
    assert f.kind.parse_text(f, "  \t ") is None
    assert f.kind.to_text(f, None) == ""
    assert f.format(None) == ""
    assert f.format(None, "ru") == ""
    if f.stored and not f.kind.computed:
        assert f.coerce("   ") in (None, [])


@pytest.mark.parametrize("name, value, en, ru", list(_formats()))
def test_format_en_and_ru(name, value, en, ru):
    f = CASES[name].field(name)
    assert spaces(f.format(value, "en")) == en
    assert spaces(f.format(value, "ru")) == ru


@pytest.mark.parametrize("name, value", list(_texts()))
def test_text_round_trip(name, value):
    f = CASES[name].field(name)
    text = f.kind.to_text(f, value)
    assert isinstance(text, str) and text
    assert f.kind.parse_text(f, text) == value
    assert f.kind.parse_text(f, f"  {text}  ") == value


@pytest.mark.parametrize("name, value, expected", list(_json()))
def test_to_json(name, value, expected):
    import json

    f = CASES[name].field(name)
    out = f.kind.to_json(f, value)
    assert out == expected
    json.dumps(out)  # really JSON-serialisable
    # what the API sends comes back through coerce as the same value
    assert f.coerce(out) == value


@pytest.mark.parametrize("name, item", list(_mm("mm_good")))
def test_marshmallow_loads_good_json(name, item):
    raw, expected = item
    f = CASES[name].field(name)
    schema = Schema.from_dict({"f": f.kind.marshmallow_field(f)})()
    assert schema.load({"f": raw}) == {"f": expected}
    assert schema.load({"f": None}) == {"f": None}


@pytest.mark.parametrize("name, raw", list(_mm("mm_bad")))
def test_marshmallow_is_strict(name, raw):
    f = CASES[name].field(name)
    schema = Schema.from_dict({"f": f.kind.marshmallow_field(f)})()
    with pytest.raises(ValidationError) as caught:
        schema.load({"f": raw})
    assert "f" in caught.value.messages


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_marshmallow_field_dumps_what_it_loads(name):
    case = CASES[name]
    f = case.field(name)
    schema = Schema.from_dict({"f": f.kind.marshmallow_field(f)})()
    for _raw, loaded in case.mm_good:
        assert schema.load(schema.dump({"f": loaded})) == {"f": loaded}


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_samples_coerce_back_cleanly(name):
    case = CASES[name]
    f = case.field(name)
    fake, rnd = Faker(["en_US", "ru_RU"]), random.Random(7)
    fake.seed_instance(7)
    samples = [f.kind.sample(f, fake, rnd) for _ in range(25)]
    if name in NO_SAMPLE:
        assert samples == [None] * 25
        return
    assert None not in samples
    assert len({repr(s) for s in samples}) > 1, "samples should vary"
    for value in samples:
        assert f.coerce(value) == value
        assert f.kind.parse_text(f, f.kind.to_text(f, value)) == value
        assert isinstance(f.format(value, "ru"), str) and f.format(value, "en")


def test_sample_respects_bounds_and_options():
    fake, rnd = Faker(), random.Random(1)
    bounded = make("integer", min=10, max=12)
    assert {bounded.kind.sample(bounded, fake, rnd) for _ in range(60)} == {10, 11, 12}
    stars = make("rating", max=3)
    assert {stars.kind.sample(stars, fake, rnd) for _ in range(60)} == {1, 2, 3}
    choice = make("choice", STAGES)
    assert {choice.kind.sample(choice, fake, rnd) for _ in range(40)} == {"new", "won"}
    short = make("text", max_length=5)
    assert all(len(short.kind.sample(short, fake, rnd)) <= 5 for _ in range(20))
    assert make("choice").kind.sample(make("choice"), fake, rnd) is None  # no options, no sample


# ----------------------------------------------------------------------------- storage
@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_columns(name):
    f = CASES[name].field(name)
    columns = f.kind.columns(f)
    if not f.stored:
        assert name in ("children", "many_to_many")
        assert columns == []
        return
    assert columns, f"{name} is stored but has no column"
    for column_name, column_type in columns:
        assert column_name.startswith("f")
        assert isinstance(column_type, sa.types.TypeEngine)
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            assert column_type.compile(dialect=dialect)


def test_column_types_follow_params():
    def compiled(f, dialect):
        ((_, column_type),) = f.kind.columns(f)
        return column_type.compile(dialect=dialect)

    pg, lite = postgresql.dialect(), sqlite.dialect()
    assert compiled(make("text", max_length=80), pg) == "VARCHAR(80)"
    assert compiled(make("text"), pg) == "VARCHAR(255)"
    assert compiled(make("decimal", precision=10, scale=3), pg) == "NUMERIC(10, 3)"
    assert compiled(make("money"), pg) == "NUMERIC(18, 2)"
    assert compiled(make("integer"), pg) == "BIGINT"
    assert compiled(make("integer"), lite) == "INTEGER"  # rowid-compatible on SQLite
    assert compiled(make("tags"), pg) == "JSONB"
    assert compiled(make("tags"), lite) == "JSON"
    assert compiled(make("formula", expression="1", result="date"), pg) == "DATE"
    assert compiled(make("rollup", result="money"), pg) == "NUMERIC(18, 2)"
    assert compiled(make("rollup"), pg) == "NUMERIC(18, 4)"  # decimal by default
    any_lookup = make("any_lookup")
    assert [n for n, _ in any_lookup.kind.columns(any_lookup)] == ["f_entity", "f_id"]


def test_a_table_of_every_stored_type_compiles_on_both_databases():
    metadata = sa.MetaData()
    columns = [sa.Column("id", sa.Integer, primary_key=True)]
    for name in sorted(FIELD_TYPES):
        f = CASES[name].field(name)
        for column_name, column_type in f.kind.columns(f):
            columns.append(sa.Column(f"{name}_{column_name}", column_type))
    table = sa.Table("everything", metadata, *columns)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        ddl = str(sa.schema.CreateTable(table).compile(dialect=dialect))
        assert "money_f NUMERIC(18, 2)" in ddl
        assert "any_lookup_f_entity VARCHAR(64)" in ddl


def test_utc_datetime_column_round_trips_through_sqlite():
    engine = sa.create_engine("sqlite://")
    f = make("datetime")
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(n, t) for n, t in f.kind.columns(f)),
    )
    table.create(engine)
    moscow = dt.datetime(2026, 3, 1, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=1, f=moscow))
        stored = conn.execute(sa.select(table.c.f)).scalar_one()
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            conn.execute(table.insert().values(id=2, f=dt.datetime(2026, 3, 1)))
    assert stored == NOON_30 and stored.tzinfo is UTC


# ------------------------------------------------------------------- type-specific details
def test_every_type_declares_known_operators():
    for name, kind in FIELD_TYPES.items():
        assert set(kind.operators) <= ALL_OPS, name
    assert "contains" in FIELD_TYPES["text"].operators
    assert "contains" not in FIELD_TYPES["integer"].operators
    assert "this_month" in FIELD_TYPES["date"].operators
    assert FIELD_TYPES["children"].operators == frozenset()


def test_text_pattern():
    f = make("text", pattern=r"[0-9]{10}|[0-9]{12}")
    assert f.coerce(" 7707083893 ") == "7707083893"
    with pytest.raises(CoercionError, match=r"does not match the pattern \[0-9\]\{10\}"):
        f.coerce("77070838")


def test_integer_fits_a_bigint():
    f = make("integer")
    assert f.coerce(2**63 - 1) == 2**63 - 1
    assert f.coerce(-(2**63)) == -(2**63)
    for too_big in (2**63, -(2**63) - 1, "99999999999999999999", 1e19):
        with pytest.raises(CoercionError, match="number is too large"):
            f.coerce(too_big)


def test_decimal_precision_and_scale():
    f = make("decimal", precision=6, scale=2)
    assert f.coerce("1234.567") == D("1234.57")
    with pytest.raises(CoercionError, match="number is too large"):
        f.coerce("12345.6")  # six digits of precision leave four before the point
    bounded = make("decimal", min=0.5, max=1)
    assert bounded.coerce("0.5") == D("0.5000")
    with pytest.raises(CoercionError, match="must be at least 0.5"):
        bounded.coerce("0.4")


def test_money_defaults_to_dollars_and_takes_a_currency_at_format_time():
    f = make("money")
    assert f.format(D("5"), "en") == "$5.00"
    assert spaces(f.kind.format(f, D("1234.5"), "ru", currency="RUB")) == "1 234,50 ₽"
    assert f.coerce("19.999") == D("20.00")


def test_phone_region_reads_national_numbers():
    ru = make("phone", region="RU")
    assert ru.coerce("8 (912) 345-67-89") == "+79123456789"
    us = make("phone")
    assert us.coerce("202 555 0143") == "+12025550143"
    assert us.format("not a number") == "not a number"  # legacy data is shown as is


def test_datetime_zones():
    f = make("datetime")
    # a naive time typed in a form is read in the user's zone
    assert f.kind.coerce(f, "2026-03-01 15:30", tz="Europe/Moscow") == NOON_30
    assert spaces(f.format(NOON_30, "ru", tz="Europe/Moscow")) == "1 мар. 2026 г., 15:30:00"
    assert spaces(f.format(NOON_30, "en", tz="America/New_York")) == "Mar 1, 2026, 7:30:00 AM"
    assert f.kind.python_value(f, "2026-03-01 12:30:00") == NOON_30


def test_rating_scale_from_params():
    f = make("rating", max=10)
    assert f.coerce(10) == 10
    assert f.format(7) == "★★★★★★★☆☆☆"
    with pytest.raises(CoercionError, match="must be at most 10"):
        f.coerce(11)


def test_duration_helpers():
    assert parse_duration("PT1H30M15S") == 5415
    assert parse_duration("1.5h") == 5400
    assert format_duration(-90) == "-1m 30s"
    for value in (0, 59, 60, 3600, 86399, 90061, 10 * 86400):
        assert parse_duration(format_duration(value).replace(" ", "")) == value


def test_choice_options_and_labels():
    f = make("choice", STAGES)
    assert f.choice_values == ("new", "won")
    assert f.option("won").color == "green"
    assert f.option("lost") is None
    mm = f.kind.marshmallow_field(f)
    assert list(mm.validate.choices) == ["new", "won"]


def test_lookup_target_and_on_delete():
    lookup = make("lookup", to="account")
    assert lookup.target == "account"
    assert lookup.on_delete == "set_null"
    required = Field(
        name="a",
        type="lookup",
        label=Label.of("A"),
        entity="x",
        required=True,
        params={"to": "account"},
    )
    assert required.on_delete == "restrict"
    assert make("user").target == "user"
    assert make("children", entity="line", via="order_ref").target == "line"
    assert make("many_to_many", to="contact").target == "contact"


def test_computed_flags():
    assert make("formula", expression="1").computed
    assert make("rollup").computed
    assert make("autonumber", pattern="{#}").computed
    assert make("children", entity="a", via="b").computed
    assert not make("text").computed
    with_formula = Field(name="x", type="money", label=Label.of("X"), entity="e", formula="a * 2")
    assert with_formula.computed and not with_formula.writable
    assert not Field(
        name="x", type="text", label=Label.of("X"), entity="e", read_only=True
    ).writable


def test_formula_and_rollup_take_their_result_type():
    text = make("formula", expression="a ~ b")
    assert text.coerce("  joined ") == "joined"  # text by default
    dated = make("formula", expression="d", result="date")
    assert dated.coerce("2026-03-01") == MARCH_1
    assert dated.format(MARCH_1, "en") == "Mar 1, 2026"
    assert dated.kind.to_json(dated, MARCH_1) == "2026-03-01"
    rolled = make("rollup")
    assert rolled.coerce("2.5") == D("2.5000")


def test_autonumber_rendering():
    today = dt.date(2026, 3, 1)
    assert AutonumberType.render("INV-{YYYY}-{####}", 42, today) == "INV-2026-0042"
    assert AutonumberType.render("{YY}{MM}{DD}-{#}", 123, today) == "260301-123"
    # the counter restarts when the date part of the pattern changes
    assert AutonumberType.counter_scope("INV-{YYYY}-{####}", today) == "INV-2026-"
    assert AutonumberType.counter_scope("CASE-{####}", today) == "CASE-"


def test_rich_text_is_sanitised_on_input():
    f = make("rich_text")
    cleaned = f.coerce('<p>ok</p><img src=x onerror="alert(1)"><a href="javascript:alert(1)">x</a>')
    assert "onerror" not in cleaned and "javascript:" not in cleaned
    assert cleaned.startswith("<p>ok</p>")


def test_python_values_normalise_database_round_trips():
    assert make("date").kind.python_value(make("date"), "2026-03-01") == MARCH_1
    assert make("time").kind.python_value(make("time"), "14:05") == dt.time(14, 5)
    dec = make("decimal")
    assert dec.kind.python_value(dec, 1.5) == D("1.5000")
    assert dec.kind.python_value(dec, None) is None
