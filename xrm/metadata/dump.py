"""A catalog as plain, canonical data: every definition the compiler made, without the
positions it was read at, the place its pack was read from, or the catalog's version.
Two catalogs with the same dump behave the same; an export installed elsewhere is checked
against the catalog it came from this way."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Mapping

from .source import Position

#: Attributes that say where a definition came from, not what it is (and a solution's
#: ``path``, the folder its pack was read from).
_PLACES = frozenset({"position", "positions"})
_KINDS = (
    "solutions",
    "entities",
    "option_sets",
    "views",
    "roles",
    "forms",
    "processes",
    "templates",
    "calendars",
    "slas",
    "reports",
    "dashboards",
)


def canonical(catalog, *, solutions: bool = True) -> dict:
    """The catalog's definitions by kind and name.  ``solutions=False`` leaves out which
    packs are installed (an exported customization layer is not a pack where it lands)."""
    kinds = [k for k in _KINDS if hasattr(catalog, k) and (solutions or k != "solutions")]
    kinds += [
        f.name
        for f in dataclasses.fields(catalog)
        if f.name not in _KINDS and not f.name.startswith("_") and f.name != "version"
    ]
    return {kind: _plain(getattr(catalog, kind)) for kind in kinds}


def _plain(value):
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date | dt.time | dt.datetime | decimal.Decimal):
        return str(value)
    if isinstance(value, Position):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = _PLACES | ({"path"} if type(value).__name__ == "Solution" else set())
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in skip and not f.name.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return type(value).__name__  # markers such as the current user in a filter
