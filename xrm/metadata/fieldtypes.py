"""The field-type registry: one class per type owns everything about that type.

A type knows its storage columns, how to coerce input (API JSON, CSV/form text), which
filter operators it allows, its strict marshmallow field, its WTForms field, how to show
a value in a user's locale and time zone, and how to invent a sample value.  Adding a type
is one class plus the ``@register`` line.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

# imports nothing of the libraries until a value is checked; at the top, because an import
# statement run for every email or phone of a big import costs as much as a cached check
from .validators import InvalidEmail, InvalidPhone, e164_phone, normalized_email

if TYPE_CHECKING:  # pragma: no cover
    import sqlalchemy as sa

    from .model import Field

UTC = dt.UTC


class CoercionError(ValueError):
    """A value that does not fit its field; the message is shown next to the field."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# ----------------------------------------------------------------------------- operators
EMPTY_OPS = frozenset({"is_empty", "is_not_empty"})
EQUALITY_OPS = frozenset({"eq", "ne", "in", "not_in"}) | EMPTY_OPS
TEXT_OPS = EQUALITY_OPS | {"contains", "starts_with"}
ORDERED_OPS = EQUALITY_OPS | {"lt", "le", "gt", "ge", "between"}
RELATIVE_DATE_OPS = frozenset(
    {
        "today",
        "yesterday",
        "tomorrow",
        "this_week",
        "last_week",
        "next_week",
        "this_month",
        "last_month",
        "next_month",
        "this_quarter",
        "last_quarter",
        "next_quarter",
        "this_year",
        "last_year",
        "next_year",
    }
)
RELATIVE_N_OPS = frozenset({"last_n_days", "next_n_days", "older_than_days"})
DATE_OPS = ORDERED_OPS | RELATIVE_DATE_OPS | RELATIVE_N_OPS
SET_OPS = frozenset({"contains", "not_contains"}) | EMPTY_OPS
ALL_OPS = TEXT_OPS | DATE_OPS | SET_OPS


# ------------------------------------------------------------------------- column types
#: Column helpers live in .columns (SQLAlchemy is imported only when tables are built);
#: they stay importable from here.
_COLUMN_HELPERS = ("UTCDateTime", "json_column", "ID_TYPE")


def __getattr__(name: str):
    if name in _COLUMN_HELPERS:
        from . import columns

        return getattr(columns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------ registry
FIELD_TYPES: dict[str, FieldType] = {}


def register(cls):
    FIELD_TYPES[cls.name] = cls()
    return cls


def field_type(name: str) -> FieldType:
    return FIELD_TYPES[name]


_LABEL_SCHEMA = {"$ref": "#/$defs/label"}

# -------------------------------------------------------------------------------- bounds
#: The dates and moments a field may hold, and the longest duration.  A bounded date plus
#: or minus a bounded duration, seen in any time zone (at most 14 hours off UTC), stays
#: well inside Python's years 1-9999, so no arithmetic the platform does on stored values
#: (reminders before a start, date triggers, calendars, report buckets) can overflow.
MIN_DATE = dt.date(1000, 1, 1)
MAX_DATE = dt.date(9899, 12, 31)
MIN_MOMENT = dt.datetime.combine(MIN_DATE, dt.time(), UTC)
MAX_MOMENT = dt.datetime.combine(MAX_DATE, dt.time.max, UTC)
MAX_DURATION = 36_500 * 86_400  # 100 years of 365 days, in seconds, either way
DATE_RANGE_TEXT = f"must be between {MIN_DATE} and {MAX_DATE}"
MOMENT_RANGE_TEXT = f"must be between {MIN_DATE} and {MAX_DATE} (UTC)"
DURATION_RANGE_TEXT = "must be at most 100 years (36500d) long"


def in_zone(moment: dt.datetime, tz: str) -> dt.datetime:
    """A moment on the wall clock of ``tz``.  One too close to year 1 or 9999 to convert
    (stored before the bounds, or written around the records service) stays in UTC, so
    showing it can never fail."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(ZoneInfo(tz))
    except OverflowError:
        return moment.astimezone(UTC)


class FieldType:
    name: ClassVar[str]
    #: JSON Schema properties of the keys only this type accepts
    params: ClassVar[dict[str, dict]] = {}
    required_params: ClassVar[tuple[str, ...]] = ()
    operators: ClassVar[frozenset[str]] = EQUALITY_OPS
    #: has a column in the entity's own table
    stored: ClassVar[bool] = True
    #: value is computed by the platform, never written by users
    computed: ClassVar[bool] = False
    numeric: ClassVar[bool] = False
    temporal: ClassVar[bool] = False
    #: a Python value type, for the evaluator's and checks' benefit
    json_type: ClassVar[str] = "string"
    #: may carry a ``formula`` or ``rollup``
    computable: ClassVar[bool] = False

    # -- storage
    def column_type(self, field: Field) -> sa.types.TypeEngine:
        raise NotImplementedError(self.name)  # every stored type overrides this

    def columns(self, field: Field) -> list[tuple[str, sa.types.TypeEngine]]:
        """The entity-table columns of this field (most types have exactly one)."""
        if not self.stored:
            return []
        return [(field.name, self.column_type(field))]

    # -- input
    def coerce(self, field: Field, value: Any) -> Any:
        """Turn API/Python input into the stored value, or raise CoercionError."""
        return value

    def parse_text(self, field: Field, text: str) -> Any:
        """Turn text from a CSV cell or an HTML form into a value (empty means None)."""
        text = text.strip()
        if text == "":
            return None
        return self.coerce(field, text)

    def coerce_input(
        self, field: Field, value: Any, *, tz: str | None = None, locale: str | None = "en"
    ) -> Any:
        """Coerce what a person or an API client sent: text in their locale (numbers,
        dates), a time without an offset in their zone.  Types that read neither ignore
        both."""
        return self.coerce(field, value)

    def to_json(self, field: Field, value: Any) -> Any:
        return value

    def to_text(self, field: Field, value: Any) -> str:
        """Value as the text an import or a form field would accept back (round trip)."""
        if value is None:
            return ""
        return str(self.to_json(field, value))

    def edit_text(self, field: Field, value: Any, locale: str = "en") -> str:
        """Value as a form's input shows it to a person in ``locale``; ``coerce_input``
        with the same locale reads it back to the same value."""
        return self.to_text(field, value)

    def format(self, field: Field, value: Any, locale: str = "en", tz: str = "UTC") -> str:
        """A value as a user reads it, in their locale and time zone."""
        if value is None:
            return ""
        return str(value)

    # -- generated artifacts
    def marshmallow_field(self, field: Field):
        from marshmallow import fields

        return fields.Raw(allow_none=True)

    def sample(self, field: Field, fake, rnd) -> Any:
        return None

    def python_value(self, field: Field, value: Any) -> Any:
        """The comparable value the filter evaluator works on (normalises DB round-trips)."""
        return value


def _check_length(field: Field, value: str) -> str:
    """Length within max_length, and text every database stores: no NUL, valid Unicode."""
    if "\x00" in value:
        raise CoercionError("text cannot contain NUL characters")
    if not value.isascii():  # ASCII always encodes; only other text can hold a lone surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CoercionError("text is not valid Unicode") from None
    limit = field.params.get("max_length")
    if limit and len(value) > limit:
        raise CoercionError(f"at most {limit} characters (got {len(value)})")
    return value


@register
class TextType(FieldType):
    name = "text"
    params = {
        "max_length": {"type": "integer", "minimum": 1, "maximum": 10000},
        "pattern": {"type": "string"},
    }
    operators = TEXT_OPS
    default_length = 255

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(field.params.get("max_length") or self.default_length)

    def coerce(self, field, value):
        if value is None:
            return None
        if not isinstance(value, str):
            if isinstance(value, bool | dict | list):
                raise CoercionError("expected text")
            value = str(value)
        value = value.strip()
        if value == "":
            return None
        pattern = field.params.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            raise CoercionError(f"does not match the pattern {pattern}")
        return _check_length(field, value)

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.String(allow_none=True)

    def sample(self, field, fake, rnd):
        if field.params.get("pattern"):
            return None  # no general way to invent text for an arbitrary pattern
        limit = field.params.get("max_length") or self.default_length
        name = field.name
        people = {
            "first_name": fake.first_name,
            "last_name": fake.last_name,
            "full_name": fake.name,
        }
        if name in people:
            return people[name]()[:limit]
        if name in ("company", "company_name") or (
            name == "name" and field.entity in ("account", "partner")
        ):
            return fake.company()[:limit]
        if "city" in name:
            return fake.city()[:limit]
        if "country" in name:
            return fake.country()[:limit]
        if "street" in name or "address" in name:
            return fake.street_address()[:limit]
        return fake.catch_phrase()[:limit].strip() or "x"


@register
class LongTextType(TextType):
    name = "long_text"
    params = {"max_length": {"type": "integer", "minimum": 1}}
    operators = TEXT_OPS - {"in", "not_in"}

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Text()

    def coerce(self, field, value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise CoercionError("expected text")
        value = value.strip("\n\r ")
        return _check_length(field, value) if value else None

    def sample(self, field, fake, rnd, room: int = 0):
        limit = field.params.get("max_length")
        text = fake.paragraph()
        return text[: limit - room].strip() or "x" if limit else text


_BLOCK_END = re.compile(r"<br\s*/?>|</(?:p|div|li|h[1-6]|tr|td|th|blockquote|pre)>", re.I)


@register
class RichTextType(LongTextType):
    name = "rich_text"

    def coerce(self, field, value):
        import nh3

        value = super().coerce(field, value)
        return nh3.clean(value) if value else value

    def format(self, field, value, locale="en", tz="UTC"):
        """The text a reader sees (tags dropped, entities decoded); templates escape it."""
        if not value:
            return ""
        import html

        import nh3

        spaced = _BLOCK_END.sub(" ", value)  # keep paragraphs apart once tags are gone
        return " ".join(html.unescape(nh3.clean(spaced, tags=set())).split())

    def sample(self, field, fake, rnd):
        return f"<p>{super().sample(field, fake, rnd, room=len('<p></p>'))}</p>"


@register
class EmailType(TextType):
    name = "email"
    params = {}
    operators = TEXT_OPS

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(254)

    def coerce(self, field, value):
        value = super().coerce(field, value)
        if value is None:
            return None
        try:
            return normalized_email(value)  # email-validator's answer, domains cached
        except InvalidEmail as exc:
            raise CoercionError(f"not a valid email address: {exc}") from None

    def sample(self, field, fake, rnd):
        return fake.unique.email() if rnd.random() < 0.5 else fake.email()


@register
class PhoneType(TextType):
    name = "phone"
    params = {"region": {"type": "string", "pattern": "^[A-Z]{2}$"}}

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(32)

    def coerce(self, field, value):
        value = super().coerce(field, value)
        if value is None:
            return None
        try:
            return e164_phone(value, field.params.get("region") or "US")
        except InvalidPhone as exc:
            raise CoercionError(str(exc)) from None

    def format(self, field, value, locale="en", tz="UTC"):
        if not value:
            return ""
        import phonenumbers

        try:
            return phonenumbers.format_number(
                phonenumbers.parse(value), phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
        except phonenumbers.NumberParseException:
            return value

    def edit_text(self, field, value, locale="en"):
        # The international format parses back to the same E.164 number in any region.
        return self.format(field, value, locale)

    def sample(self, field, fake, rnd):
        return f"+1202555{rnd.randrange(10000):04d}"


@register
class UrlType(TextType):
    name = "url"
    params = {}

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(2048)

    def coerce(self, field, value):
        value = super().coerce(field, value)
        if value is None:
            return None
        if "://" not in value:
            value = "https://" + value
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. a malformed IPv6 host
            raise CoercionError("expected an http(s) address") from None
        if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
            raise CoercionError("expected an http(s) address")
        return _check_length(field, value) if field.params.get("max_length") else value

    def sample(self, field, fake, rnd):
        return fake.url()


class _NumberType(FieldType):
    numeric = True
    computable = True
    operators = ORDERED_OPS
    json_type = "number"
    params = {"min": {"type": "number"}, "max": {"type": "number"}}

    def _bounds(self, field, value):
        low, high = field.params.get("min"), field.params.get("max")
        if low is not None and value < low:
            raise CoercionError(f"must be at least {low}")
        if high is not None and value > high:
            raise CoercionError(f"must be at most {high}")
        return value

    def coerce_input(self, field, value, *, tz=None, locale="en"):
        return self.coerce(field, value, locale=locale)

    def marshmallow_field(self, field):
        # A JSON number or text: the records service parses text in the caller's locale, so
        # the API and the Python API accept the same input and answer with one message.
        from marshmallow import fields

        return fields.Raw(allow_none=True, metadata={"type": [self.json_type, "string"]})


INT64_MAX = 2**63 - 1


def _int64(value: int) -> int:
    """Integer columns are BIGINT on PostgreSQL: refuse what would overflow there."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise CoercionError("number is too large")
    return value


def _whole(number: decimal.Decimal) -> int:
    """A finite decimal as a 64-bit integer.  The size is checked before ``int()``, which
    would otherwise spell out all billion digits of ``1e999999999``."""
    if number and number.adjusted() > 18:
        raise CoercionError("number is too large")
    if number != number.to_integral_value():
        raise CoercionError("expected a whole number")
    return _int64(int(number))


# ------------------------------------------------------------ numbers as people write them
#: Group separators in every locale: a space, a no-break space and a narrow no-break space
#: (the last two are what Babel writes for ru and fr), so "400 000" reads the same anywhere.
GROUP_SPACES = " \u00a0\u202f"
#: The machine form, accepted in every locale: "1234.5", "-0.25", "1e3".
_MACHINE_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: "1.234" where the dot groups thousands (de): the locale's 1234, as its forms show it.
_DOT_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{3})+")
_DIGITS = re.compile(r"[0-9]+")
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
#: Bidirectional marks some locales put before a minus sign (Babel's ar writes U+200E).
_BIDI_MARKS = dict.fromkeys(map(ord, "\u200e\u200f\u061c"))


def babel_locale(locale: str | None):
    """Babel's Locale for a user's locale setting (``ru``, ``ru_RU``, ``ru-RU``); one Babel
    does not know is read as English, so a stray setting never breaks a save."""
    return _babel_locale((locale or "en").replace("-", "_"))


@functools.lru_cache(maxsize=64)
def _babel_locale(identifier: str):
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(identifier)
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse("en")


class NumberFormat(NamedTuple):
    """How a locale writes numbers, from CLDR through Babel."""

    decimal: str  # the decimal symbol
    group: str  # the group symbol
    grouping: tuple[int, int]  # digits in the last group, and in each group before it
    example: str  # 1234567.89 as the locale writes it, for messages


@functools.lru_cache(maxsize=64)
def number_format(locale: str | None) -> NumberFormat:
    from babel.numbers import format_decimal, get_decimal_symbol, get_group_symbol

    loc = babel_locale(locale)
    return NumberFormat(
        get_decimal_symbol(loc),
        get_group_symbol(loc),
        loc.decimal_formats[None].grouping,
        format_decimal(decimal.Decimal("1234567.89"), locale=loc),
    )


def _grouped(groups: list[str], grouping: tuple[int, int]) -> bool:
    last, before = grouping
    *head, tail = groups
    return (
        len(tail) == last
        and all(len(g) == before for g in head[1:])
        and 1 <= len(head[0]) <= before
    )


def parse_number(
    text: str, locale: str | None = "en", *, invalid: str = "expected a number"
) -> decimal.Decimal:
    """Number text as a person or a client writes it, read by ``locale``; exact.

    Accepted: the machine form (``1234.5``, ``1e3``) in every locale; the locale's own form
    with its decimal and group symbols (``1,234.5`` in English, ``1 234,5`` in Russian);
    spaces, no-break spaces and narrow no-break spaces as group separators anywhere; and a
    dot as the decimal symbol wherever the dot does not group digits.  Groups must have the
    locale's sizes (or threes), so a misreading such as "1,5" in English (the comma groups
    thousands there) is refused instead of becoming 15.  Where the dot groups digits (de),
    text grouped that way ("1.234") is read as the locale writes it, 1234, so that what a
    form shows reads back; "1234.5" and "1.5" are still the machine form there.  Raises
    CoercionError with ``invalid`` for text that is no number at all.
    """
    t = text.translate(_BIDI_MARKS).strip().replace("\u2212", "-")
    if t.lower().lstrip("+-") in _NOT_FINITE:
        raise CoercionError("expected a finite number")
    fmt = number_format(locale)
    if _MACHINE_NUMBER.fullmatch(t) and not (fmt.group == "." and _DOT_GROUPED.fullmatch(t)):
        try:
            return decimal.Decimal(t)
        except decimal.InvalidOperation:  # an exponent past what Decimal holds
            raise CoercionError("number is too large") from None
    sign = ""
    if t[:1] in ("+", "-"):
        sign, t = t[0], t[1:]
    points = {fmt.decimal} if fmt.group == "." else {fmt.decimal, "."}
    where = [i for i, ch in enumerate(t) if ch in points]
    if len(where) > 1:
        raise CoercionError(invalid)
    whole, fraction = (t[: where[0]], t[where[0] + 1 :]) if where else (t, "")
    if (where and not _DIGITS.fullmatch(fraction)) or not (whole or fraction):
        raise CoercionError(invalid)
    separators = set(GROUP_SPACES) | {fmt.group}
    kinds = {" " if ch in GROUP_SPACES else ch for ch in whole if ch in separators}
    groups = re.split(f"[{re.escape(''.join(separators))}]", whole) if kinds else [whole]
    if whole and not all(_DIGITS.fullmatch(g) for g in groups):
        raise CoercionError(invalid)
    if len(kinds) > 1 or (kinds and not any(_grouped(groups, g) for g in {fmt.grouping, (3, 3)})):
        raise CoercionError(
            f"digits are grouped wrongly: numbers look like {fmt.example} or 1234567.89 here"
        )
    return decimal.Decimal(f"{sign}{''.join(groups) or '0'}.{fraction or '0'}")


def local_number(value: int | decimal.Decimal, locale: str | None, places: tuple[int, int]) -> str:
    """A number as ``locale`` writes it, with between ``places[0]`` and ``places[1]``
    decimals: Babel's standard pattern would round to three, losing a stored digit."""
    loc = babel_locale(locale)
    pattern = copy.copy(loc.decimal_formats[None])
    pattern.frac_prec = places
    # Babel strips a pattern's quotes after grouping, so an apostrophe group symbol (de_CH)
    # keeps only its last separator ("193128658'949"); digits left ungrouped read back.
    return pattern.apply(value, loc, group_separator=number_format(locale).group != "'")


@register
class IntegerType(_NumberType):
    name = "integer"
    json_type = "integer"

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    def coerce(self, field, value, locale="en"):
        if value is None:
            return None
        if type(value) is int:
            return self._bounds(field, _int64(value))
        if isinstance(value, bool):
            raise CoercionError("expected a whole number")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise CoercionError("expected a whole number")
            return self._bounds(field, _int64(int(value)))
        if isinstance(value, decimal.Decimal):
            if not value.is_finite():
                raise CoercionError("expected a whole number")
            return self._bounds(field, _whole(value))
        if isinstance(value, str):
            if value.strip() == "":
                return None
            number = parse_number(value, locale, invalid="expected a whole number")
            return self._bounds(field, _whole(number))
        raise CoercionError("expected a whole number")

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.numbers import format_decimal

        return format_decimal(value, locale=locale)

    def edit_text(self, field, value, locale="en"):
        return "" if value is None else local_number(value, locale, (0, 0))

    def sample(self, field, fake, rnd):
        low = int(field.params.get("min", 0))
        high = int(field.params.get("max", 1000))
        return rnd.randint(low, high)


@register
class DecimalType(_NumberType):
    name = "decimal"
    params = {
        **_NumberType.params,
        "precision": {"type": "integer", "minimum": 1, "maximum": 38},
        "scale": {"type": "integer", "minimum": 0, "maximum": 12},
    }
    default_precision, default_scale = 18, 4

    def scale(self, field) -> int:
        return field.params.get("scale", self.default_scale)

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Numeric(field.params.get("precision", self.default_precision), self.scale(field))

    def coerce(self, field, value, locale="en"):
        if value is None:
            return None
        if isinstance(value, bool):
            raise CoercionError("expected a number")
        if isinstance(value, decimal.Decimal):
            if not value.is_finite():
                raise CoercionError("expected a finite number")
            number = value
        elif isinstance(value, int):
            number = decimal.Decimal(value)
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise CoercionError("expected a finite number")
            number = decimal.Decimal(repr(value))
        elif isinstance(value, str):
            if value.strip() == "":
                return None
            number = parse_number(value, locale)
        else:
            raise CoercionError("expected a number")
        quantum = decimal.Decimal(1).scaleb(-self.scale(field))
        try:
            number = number.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN)
        except decimal.InvalidOperation:
            raise CoercionError("number is too large") from None
        digits = field.params.get("precision", self.default_precision) - self.scale(field)
        if abs(number) >= decimal.Decimal(10) ** digits:
            raise CoercionError("number is too large")
        return self._bounds(field, number)

    def python_value(self, field, value):
        if value is None or isinstance(value, decimal.Decimal):
            return value
        return self.coerce(field, value)

    def to_json(self, field, value):
        return None if value is None else format(value, "f")

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.numbers import format_decimal

        return format_decimal(value, locale=locale)

    def edit_text(self, field, value, locale="en"):
        return "" if value is None else local_number(value, locale, (0, self.scale(field)))

    def sample(self, field, fake, rnd):
        return self.coerce(field, round(rnd.uniform(0, 10000), 2))


@register
class MoneyType(DecimalType):
    name = "money"
    params = {**_NumberType.params, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}
    default_scale = 2

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Numeric(18, 2)

    def scale(self, field):
        return 2

    def format(self, field, value, locale="en", tz="UTC", currency: str | None = None):
        if value is None:
            return ""
        from babel.numbers import format_currency

        return format_currency(
            value, currency or field.params.get("currency") or "USD", locale=locale
        )

    def edit_text(self, field, value, locale="en"):
        # cents always shown: an amount reads as money (the input shows the currency)
        return "" if value is None else local_number(value, locale, (2, 2))

    def sample(self, field, fake, rnd):
        return self.coerce(field, rnd.randrange(100, 10_000_000) / 100)


@register
class PercentType(DecimalType):
    name = "percent"
    params = {**_NumberType.params}
    default_precision, default_scale = 9, 2  # coerce must refuse what the column cannot hold

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Numeric(self.default_precision, 2)

    def scale(self, field):
        return 2

    def coerce(self, field, value, locale="en"):
        if isinstance(value, str):
            value = value.strip().rstrip("%")
        return super().coerce(field, value, locale=locale)

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.numbers import format_percent

        return format_percent(value / 100, locale=locale, decimal_quantization=False)

    def sample(self, field, fake, rnd):
        return self.coerce(field, rnd.choice([0, 10, 25, 50, 75, 90, 100]))


@register
class RatingType(IntegerType):
    name = "rating"
    params = {"max": {"type": "integer", "minimum": 2, "maximum": 10}}

    def coerce(self, field, value, locale="en"):
        value = super().coerce(field, value, locale=locale)
        if value is None:
            return None
        top = field.params.get("max", 5)
        if not 0 <= value <= top:
            raise CoercionError(f"rating from 0 to {top}")
        return value

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        return "★" * value + "☆" * (field.params.get("max", 5) - value)

    def sample(self, field, fake, rnd):
        return rnd.randint(1, field.params.get("max", 5))


_TRUE = {"true", "yes", "y", "1", "on", "да", "t"}
_FALSE = {"false", "no", "n", "0", "off", "нет", "f"}


@register
class BooleanType(FieldType):
    name = "boolean"
    operators = frozenset({"eq", "ne"}) | EMPTY_OPS
    json_type = "boolean"
    computable = True

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Boolean()

    def coerce(self, field, value):
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            if text == "":
                return None
        raise CoercionError("expected yes or no")

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Boolean(
            allow_none=True, truthy={True}, falsy={False}
        )  # strict: JSON booleans only

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        yes, no = ("Да", "Нет") if locale.startswith("ru") else ("Yes", "No")
        return yes if value else no

    def sample(self, field, fake, rnd):
        return rnd.random() < 0.5


@register
class DateType(FieldType):
    name = "date"
    operators = DATE_OPS
    temporal = True
    computable = True

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Date()

    def coerce(self, field, value, locale: str | None = None):
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            raise CoercionError("expected a date without time")
        if isinstance(value, dt.date):
            return _date_within(value)
        if isinstance(value, str):
            text = value.strip()
            if text == "":
                return None
            # ISO first, then the locale's own short form (en_GB's 01/02/2026 is the 1st of
            # February), then day.month.year and month/day/year as before.
            parsers = [dt.date.fromisoformat, _parse_dmy]
            if locale:
                parsers.insert(1, functools.partial(parse_local_date, locale=locale))
            for parse in parsers:
                try:
                    parsed = parse(text)
                except ValueError:
                    continue
                return _date_within(parsed)
        raise CoercionError("expected a date (YYYY-MM-DD)")

    def coerce_input(self, field, value, *, tz=None, locale="en"):
        return self.coerce(field, value, locale=locale)

    def python_value(self, field, value):
        if isinstance(value, str):
            return dt.date.fromisoformat(value)
        return value

    def to_json(self, field, value):
        return None if value is None else value.isoformat()

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Date(allow_none=True)

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.dates import format_date

        return format_date(value, format="medium", locale=locale)

    def sample(self, field, fake, rnd):
        return dt.date.today() + dt.timedelta(days=rnd.randint(-365, 365))


def _date_within(value: dt.date) -> dt.date:
    if not MIN_DATE <= value <= MAX_DATE:
        raise CoercionError(DATE_RANGE_TEXT)
    return value


_DATE_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+")


@functools.lru_cache(maxsize=64)
def _short_date_pattern(locale: str | None) -> re.Pattern | None:
    """The locale's short date format (CLDR through Babel: ``dd.MM.y``, ``M/d/yy``) as a
    strict regular expression with a day, a month and a year; None when that format
    spells a month's name or holds anything but the three numbers."""
    from babel.dates import get_date_format

    pattern = get_date_format("short", locale=babel_locale(locale)).pattern
    parts: list[str] = []
    for match in _DATE_TOKEN.finditer(pattern):
        token, letter = match.group(0), match.group(1)
        if letter is None:
            literal = token[1:-1].replace("''", "'") if token.startswith("'") else token
            parts.append("".join(r"\s*" if ch.isspace() else re.escape(ch) for ch in literal))
        elif letter == "d" and len(token) <= 2:
            parts.append(r"(?P<day>[0-9]{1,2})")
        elif letter in "ML" and len(token) <= 2:
            parts.append(r"(?P<month>[0-9]{1,2})")
        elif letter == "y":
            parts.append(r"(?P<year>[0-9]{4}|[0-9]{2})")
        else:
            return None
    if parts and not parts[-1].startswith("(?P"):
        parts[-1] = f"(?:{parts[-1]})?"  # a closing literal (ko: "d.") may be left out
    try:
        compiled = re.compile("".join(parts))
    except re.error:  # a field twice: not a format we can read back
        return None
    return compiled if {"day", "month", "year"} <= set(compiled.groupindex) else None


def parse_local_date(text: str, locale: str | None) -> dt.date:
    """A date in ``locale``'s short numeric format (``31.12.2026`` in ru, ``12/31/26`` in
    en); a two-digit year is the one within 80 years before and 20 after today, as CLDR
    reads it.  Raises ValueError when the text is not in that format."""
    pattern = _short_date_pattern(locale)
    match = pattern.fullmatch(text.strip()) if pattern else None
    if match is None:
        raise ValueError(text)
    year = int(match["year"])
    if len(match["year"]) == 2:
        this_year = dt.date.today().year
        year += this_year // 100 * 100
        if year > this_year + 20:
            year -= 100
        elif year <= this_year - 80:
            year += 100
    return dt.date(year, int(match["month"]), int(match["day"]))


def _parse_dmy(text: str) -> dt.date:
    """31.12.2026 (ru) and 12/31/2026 (en) as people type them."""
    if "." in text:
        day, month, year = text.split(".")
        return dt.date(int(year), int(month), int(day))
    if "/" in text:
        month, day, year = text.split("/")
        return dt.date(int(year), int(month), int(day))
    raise ValueError(text)


@register
class DateTimeType(FieldType):
    name = "datetime"
    operators = DATE_OPS
    temporal = True
    computable = True

    def column_type(self, field):
        from .columns import UTCDateTime

        return UTCDateTime()

    def coerce(self, field, value, tz: str | None = None):
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text == "":
                return None
            try:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise CoercionError("expected a date and time (ISO 8601)") from None
        if not isinstance(value, dt.datetime):
            raise CoercionError("expected a date and time (ISO 8601)")
        if value.tzinfo is None:
            # A naive time is read in the user's zone (forms), else as UTC.
            value = value.replace(tzinfo=ZoneInfo(tz) if tz else UTC)
        try:
            moment = value.astimezone(UTC)
        except OverflowError:  # within a day of year 1 or 9999: far outside the bounds
            raise CoercionError(MOMENT_RANGE_TEXT) from None
        if not MIN_MOMENT <= moment <= MAX_MOMENT:
            raise CoercionError(MOMENT_RANGE_TEXT)
        return moment

    def coerce_input(self, field, value, *, tz=None, locale="en"):
        return self.coerce(field, value, tz=tz)

    def python_value(self, field, value):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def to_json(self, field, value):
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.AwareDateTime(allow_none=True, default_timezone=UTC)

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.dates import format_datetime

        local = in_zone(value, tz)
        return format_datetime(local, format="medium", tzinfo=local.tzinfo, locale=locale)

    def sample(self, field, fake, rnd):
        base = dt.datetime.now(UTC).replace(microsecond=0)
        return base + dt.timedelta(minutes=rnd.randint(-60 * 24 * 60, 60 * 24 * 60))


@register
class TimeType(FieldType):
    name = "time"
    operators = ORDERED_OPS

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.Time()

    def coerce(self, field, value):
        if value is None:
            return None
        if isinstance(value, dt.time):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text == "":
                return None
            try:
                return dt.time.fromisoformat(text)
            except ValueError:
                pass
        raise CoercionError("expected a time (HH:MM)")

    def python_value(self, field, value):
        return dt.time.fromisoformat(value) if isinstance(value, str) else value

    def to_json(self, field, value):
        return None if value is None else value.isoformat(timespec="minutes")

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Time(allow_none=True)

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        from babel.dates import format_time

        return format_time(value, format="short", locale=locale)

    def sample(self, field, fake, rnd):
        return dt.time(rnd.randint(8, 18), rnd.choice([0, 15, 30, 45]))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.I)


def parse_duration(text: str) -> int:
    """'1h30m', '90m', '2d', '1:30' (h:mm) or ISO 8601 'PT1H30M' as whole seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text) * 60  # a bare number typed by a person means minutes
    if re.fullmatch(r"\d+:\d{2}", text):
        hours, minutes = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60
    upper = text.upper()
    if upper.startswith("P"):
        match = re.fullmatch(
            r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", upper
        )
        if match and any(match.groups()):
            d, h, m, s = (float(g) if g else 0 for g in match.groups())
            return int(d * 86400 + h * 3600 + m * 60 + s)
        raise ValueError(text)
    compact = text.replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise ValueError(text)
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return int(sum(float(n) * unit[u.lower()] for n, u in parts))


def format_duration(seconds: int) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return sign + (" ".join(parts) or "0m")


@register
class DurationType(IntegerType):
    """A length of time, stored as whole seconds."""

    name = "duration"
    params = {}

    def coerce(self, field, value):
        if isinstance(value, str):
            if value.strip() == "":
                return None
            try:
                seconds = parse_duration(value)
            except (ValueError, OverflowError):
                raise CoercionError("expected a duration such as 1h30m") from None
        elif isinstance(value, dt.timedelta):
            seconds = int(value.total_seconds())
        else:
            seconds = super().coerce(field, value)
        if seconds is not None and not -MAX_DURATION <= seconds <= MAX_DURATION:
            raise CoercionError(DURATION_RANGE_TEXT)
        return seconds

    def to_text(self, field, value):
        return "" if value is None else format_duration(value)

    def format(self, field, value, locale="en", tz="UTC"):
        return "" if value is None else format_duration(value)

    # A duration is written the same in every language ("1h30m") and the API takes whole
    # seconds, so none of the integer's local-number reading and writing applies.
    coerce_input = FieldType.coerce_input
    edit_text = FieldType.edit_text

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Integer(allow_none=True, strict=True)

    def sample(self, field, fake, rnd):
        return rnd.choice([15, 30, 45, 60, 90, 120]) * 60


@register
class ChoiceType(FieldType):
    name = "choice"
    params = {
        "options": {
            "oneOf": [
                {"type": "string", "description": "name of an option set"},
                {"type": "array", "items": {"$ref": "#/$defs/option"}, "minItems": 1},
            ]
        }
    }
    required_params = ("options",)
    operators = EQUALITY_OPS

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(64)

    def coerce(self, field, value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise CoercionError("expected one of the options")
        value = value.strip()
        if value == "":
            return None
        if value not in field.choice_values:
            return self._by_label(field, value)
        return value

    def _by_label(self, field, value):
        lowered = value.casefold()
        for option in field.choices:
            if any(text.casefold() == lowered for _, text in option.label.texts):
                return option.value
        from .problems import did_you_mean, one_of

        raise CoercionError(
            f"{value!r} is not an option (expected one of {one_of(field.choice_values)})"
            f"{did_you_mean(value, field.choice_values)}"
        )

    def format(self, field, value, locale="en", tz="UTC"):
        if value is None:
            return ""
        option = field.option(value)
        return option.label.get(locale) if option else str(value)

    def marshmallow_field(self, field):
        from marshmallow import fields, validate

        return fields.String(allow_none=True, validate=validate.OneOf(field.choice_values))

    def sample(self, field, fake, rnd):
        return rnd.choice(field.choice_values) if field.choice_values else None


@register
class MultiChoiceType(ChoiceType):
    name = "multi_choice"
    operators = SET_OPS
    json_type = "array"

    def column_type(self, field):
        from .columns import json_column

        return json_column()

    def coerce(self, field, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list | tuple | set | frozenset):
            raise CoercionError("expected a list of options")
        seen: list[str] = []
        for item in value:
            item = ChoiceType.coerce(self, field, item)
            if item is not None and item not in seen:
                seen.append(item)
        order = {v: i for i, v in enumerate(field.choice_values)}
        return sorted(seen, key=order.__getitem__) or None

    def to_text(self, field, value):
        return ", ".join(value or ())

    def format(self, field, value, locale="en", tz="UTC"):
        return ", ".join(ChoiceType.format(self, field, v, locale) for v in value or ())

    def marshmallow_field(self, field):
        from marshmallow import fields, validate

        return fields.List(
            fields.String(validate=validate.OneOf(field.choice_values)), allow_none=True
        )

    def sample(self, field, fake, rnd):
        values = field.choice_values
        return sorted(rnd.sample(values, k=min(len(values), rnd.randint(1, 2)))) or None


@register
class TagsType(FieldType):
    name = "tags"
    operators = SET_OPS
    json_type = "array"

    def column_type(self, field):
        from .columns import json_column

        return json_column()

    def coerce(self, field, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple | set):
            raise CoercionError("expected a list of tags")
        tags: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise CoercionError("tags are text")
            tag = item.strip().lower()
            if len(tag) > 64:
                raise CoercionError("a tag has at most 64 characters")
            if tag and tag not in tags:
                tags.append(tag)
        return sorted(tags) or None

    def to_text(self, field, value):
        return ", ".join(value or ())

    def format(self, field, value, locale="en", tz="UTC"):
        return ", ".join(value or ())

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.List(fields.String(), allow_none=True)

    def sample(self, field, fake, rnd):
        return sorted(set(fake.words(nb=rnd.randint(1, 3))))


MAX_ID = 2**63 - 1  # BIGINT


def _record_id(value) -> int:
    if isinstance(value, bool):
        raise CoercionError("expected a record id")
    if isinstance(value, int):
        if not 0 < value <= MAX_ID:
            raise CoercionError("expected a record id")
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return _record_id(int(value.strip()))  # isdigit alone takes "²", which int refuses
    if isinstance(value, Mapping) and "id" in value:
        return _record_id(value["id"])
    raise CoercionError("expected a record id")


ON_DELETE = ("restrict", "set_null", "cascade")


@register
class LookupType(FieldType):
    name = "lookup"
    params = {
        "to": {"type": "string", "description": "the entity this field points at"},
        "on_delete": {"enum": list(ON_DELETE)},
        "hierarchy": {
            "type": "boolean",
            "description": "a lookup of the entity to itself that makes a hierarchy: a record may not become its own ancestor",
        },
    }
    required_params = ("to",)
    operators = EQUALITY_OPS
    json_type = "integer"

    def column_type(self, field):
        from .columns import ID_TYPE

        return ID_TYPE

    def coerce(self, field, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _record_id(value)

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Integer(allow_none=True, strict=True)


@register
class UserType(LookupType):
    """A lookup to a platform user; ``default: current_user`` fills it on create."""

    name = "user"
    params = {"on_delete": {"enum": ["restrict", "set_null"]}}
    required_params = ()


@register
class AnyLookupType(FieldType):
    """A polymorphic lookup: a record of any entity (or of the ones listed in ``to``)."""

    name = "any_lookup"
    params = {"to": {"type": "array", "items": {"type": "string"}, "minItems": 1}}
    operators = frozenset({"eq", "ne", "in", "is_empty", "is_not_empty"})
    json_type = "object"

    def columns(self, field):
        import sqlalchemy as sa

        from .columns import ID_TYPE

        return [(f"{field.name}_entity", sa.String(64)), (f"{field.name}_id", ID_TYPE)]

    def coerce(self, field, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str) and ":" in value:
            entity, _, ident = value.partition(":")
            value = {"entity": entity, "id": ident}
        if not isinstance(value, Mapping) or "entity" not in value or "id" not in value:
            raise CoercionError('expected {"entity": name, "id": number}')
        entity = value["entity"]
        allowed = field.params.get("to")
        if not isinstance(entity, str) or (allowed and entity not in allowed):
            raise CoercionError(
                f"expected a record of {', '.join(allowed)}"
                if allowed
                else "expected an entity name"
            )
        return {"entity": entity, "id": _record_id(value["id"])}

    def to_text(self, field, value):
        return "" if not value else f"{value['entity']}:{value['id']}"

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.Dict(allow_none=True)


@register
class ChildrenType(FieldType):
    """The 1:N inverse of a lookup on another entity (shown as a related list)."""

    name = "children"
    params = {"entity": {"type": "string"}, "via": {"type": "string"}}
    required_params = ("entity", "via")
    stored = False
    computed = True
    operators = frozenset()
    json_type = "array"


@register
class ManyToManyType(FieldType):
    """Links to many records of another entity, stored in a link table."""

    name = "many_to_many"
    params = {"to": {"type": "string"}}
    required_params = ("to",)
    stored = False
    operators = frozenset({"contains", "is_empty", "is_not_empty"})
    json_type = "array"

    def coerce(self, field, value):
        if value is None:
            return []
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list | tuple | set):
            raise CoercionError("expected a list of record ids")
        return sorted({_record_id(v) for v in value})

    def to_text(self, field, value):
        return ", ".join(str(v) for v in value or ())

    def marshmallow_field(self, field):
        from marshmallow import fields

        return fields.List(fields.Integer(strict=True), allow_none=True)


AUTONUMBER_TOKEN = re.compile(r"\{(YYYY|YY|MM|DD|#+)\}")


@register
class AutonumberType(FieldType):
    name = "autonumber"
    params = {"pattern": {"type": "string", "pattern": "\\{#+\\}"}}
    required_params = ("pattern",)
    computed = True
    operators = TEXT_OPS

    def column_type(self, field):
        import sqlalchemy as sa

        return sa.String(64)

    @staticmethod
    def render(pattern: str, number: int, today: dt.date) -> str:
        def token(match):
            name = match.group(1)
            if name.startswith("#"):
                return str(number).zfill(len(name))
            return {
                "YYYY": f"{today.year:04d}",
                "YY": f"{today.year % 100:02d}",
                "MM": f"{today.month:02d}",
                "DD": f"{today.day:02d}",
            }[name]

        return AUTONUMBER_TOKEN.sub(token, pattern)

    @staticmethod
    def counter_scope(pattern: str, today: dt.date) -> str:
        """Numbers restart when the date part of the pattern changes (per year, say)."""
        return AUTONUMBER_TOKEN.sub(
            lambda m: (
                "" if m.group(1).startswith("#") else AutonumberType.render(m.group(0), 0, today)
            ),
            pattern,
        )


@register
class FormulaType(FieldType):
    """A value computed from other fields of the record and stored for filtering."""

    name = "formula"
    params = {
        "expression": {"type": "string"},
        "result": {
            "enum": [
                "text",
                "integer",
                "decimal",
                "money",
                "percent",
                "boolean",
                "date",
                "datetime",
            ]
        },
    }
    required_params = ("expression",)
    computed = True

    def result_type(self, field) -> FieldType:
        return FIELD_TYPES[field.params.get("result", "text")]

    @property
    def operators(self):  # type: ignore[override]
        return ALL_OPS

    def columns(self, field):
        return [(field.name, self.result_type(field).column_type(field))]

    def coerce(self, field, value):
        return self.result_type(field).coerce(field, value)

    def python_value(self, field, value):
        return self.result_type(field).python_value(field, value)

    def to_json(self, field, value):
        return self.result_type(field).to_json(field, value)

    def format(self, field, value, locale="en", tz="UTC"):
        return self.result_type(field).format(field, value, locale, tz)


ROLLUP_AGGREGATES = ("sum", "count", "avg", "min", "max")


@register
class RollupType(FieldType):
    """An aggregate over a children field, kept current in the child's transaction."""

    name = "rollup"
    params = {"result": {"enum": ["integer", "decimal", "money", "percent", "date", "datetime"]}}
    computed = True
    numeric = True
    operators = ORDERED_OPS

    def result_type(self, field) -> FieldType:
        return FIELD_TYPES[field.params.get("result", "decimal")]

    def columns(self, field):
        return [(field.name, self.result_type(field).column_type(field))]

    def coerce(self, field, value):
        return self.result_type(field).coerce(field, value)

    def python_value(self, field, value):
        return self.result_type(field).python_value(field, value)

    def to_json(self, field, value):
        return self.result_type(field).to_json(field, value)

    def format(self, field, value, locale="en", tz="UTC"):
        return self.result_type(field).format(field, value, locale, tz)


@register
class FileType(FieldType):
    """An uploaded file: its metadata here, its bytes in the file store."""

    name = "file"
    params = {
        "max_size_mb": {"type": "number", "exclusiveMinimum": 0},
        "accept": {"type": "array", "items": {"type": "string"}},
    }
    operators = EMPTY_OPS
    json_type = "object"

    def column_type(self, field):
        from .columns import json_column

        return json_column()

    def coerce(self, field, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, Mapping) or not isinstance(value.get("key"), str):
            raise CoercionError("expected an uploaded file")
        size = value.get("size", 0)
        limit = field.params.get("max_size_mb")
        if limit and size > limit * 1024 * 1024:
            raise CoercionError(f"file is larger than {limit} MB")
        name = str(value.get("name") or value["key"])
        accept = field.params.get("accept")
        if accept and not any(name.lower().endswith(ext.lower()) for ext in accept):
            raise CoercionError(f"expected a file of type {', '.join(accept)}")
        return {
            "key": value["key"],
            "name": name,
            "size": int(size),
            "content_type": str(value.get("content_type") or "application/octet-stream"),
        }

    def format(self, field, value, locale="en", tz="UTC"):
        return value["name"] if value else ""

    def to_text(self, field, value):
        return value["name"] if value else ""


@register
class JsonType(FieldType):
    name = "json"
    operators = EMPTY_OPS
    json_type = "object"

    def column_type(self, field):
        from .columns import json_column

        return json_column()

    def coerce(self, field, value):
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except ValueError:
                raise CoercionError("expected JSON") from None
        try:
            json.dumps(value, allow_nan=False)  # NaN is not JSON (PostgreSQL refuses it)
        except (TypeError, ValueError):
            raise CoercionError("expected JSON") from None
        return value

    def to_text(self, field, value):
        return "" if value is None else json.dumps(value, ensure_ascii=False)

    def format(self, field, value, locale="en", tz="UTC"):
        return "" if value is None else json.dumps(value, ensure_ascii=False)
