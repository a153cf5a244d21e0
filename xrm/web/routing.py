"""Record ids in URLs: the ``<recid:...>`` converter and the parser for ids in query strings
and forms.

Ids are positive 64-bit integers.  A path segment that is not one (zero, negative, too
large, not ASCII digits) matches no route, so every route declared with ``<recid:...>``
answers 404 for it by construction, before any view runs or the database sees the value
(it would refuse a parameter past BIGINT, and SQLite's driver raises on one).
"""

from __future__ import annotations

from flask import Blueprint
from werkzeug.routing import BaseConverter, ValidationError

from ..metadata.fieldtypes import INT64_MAX


def at_most(limit: int) -> str:
    """A regular expression for the whole numbers 1 to ``limit`` in ASCII digits, without
    leading zeros.

    The range is in the expression itself, not checked after it matched: werkzeug's matcher
    picks a route by its pattern before converting, and a value refused only then answers
    405 (another method's route had the same pattern) where it must answer 404."""
    digits = str(limit)
    shorter = f"[1-9][0-9]{{0,{len(digits) - 2}}}" if len(digits) > 1 else None
    same_length = []
    for index, digit in enumerate(digits):
        low = "1" if index == 0 else "0"
        if digit > low:
            below = f"[{low}-{int(digit) - 1}]"
            rest = len(digits) - index - 1
            same_length.append(digits[:index] + below + (f"[0-9]{{{rest}}}" if rest else ""))
    same_length.append(digits)
    return "|".join(part for part in (shorter, *same_length) if part)


class RecordIdConverter(BaseConverter):
    """``<recid:record_id>``: a positive 64-bit integer, else the route does not match."""

    regex = f"(?:{at_most(INT64_MAX)})"
    weight = 50  # as werkzeug's int converter: a literal segment still wins

    def to_python(self, value: str) -> int:
        number = parse_id(value)
        if number is None:  # not reached: the pattern admits only what parse_id takes
            raise ValidationError()
        return number

    def to_url(self, value) -> str:
        return str(int(value))


def parse_id(text: str | None) -> int | None:
    """A record id written as text (query strings, forms), or None when it is not one.

    ``str.isdigit`` alone lets through digits ``int`` refuses ("²") and numbers past the
    columns' range; both used to end in a 500."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= INT64_MAX else None


def use_record_ids(blueprint: Blueprint) -> Blueprint:
    """Make ``<recid:...>`` available to ``blueprint``'s routes.

    Called right after the blueprint is made (before its routes are declared), so the
    converter is on the application's URL map when the first of them is added; every
    blueprint that uses it says so itself instead of relying on the order of registration.
    """
    blueprint.record_once(
        lambda state: state.app.url_map.converters.setdefault("recid", RecordIdConverter)
    )
    return blueprint
