"""Problems found in definitions, collected so that one run reports all of them."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .source import Position


@dataclass(frozen=True, slots=True)
class Problem:
    """One actionable message: ``path:line:column: subject: what is wrong``."""

    position: Position
    subject: str
    message: str

    def __str__(self) -> str:
        subject = f"{self.subject}: " if self.subject else ""
        return f"{self.position}: {subject}{self.message}"


class DefinitionError(Exception):
    """Raised when definitions contain problems; nothing from them has been loaded."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(
            problems, key=lambda p: (p.position.path, p.position.line, p.position.column)
        )
        count = len(self.problems)
        head = "\n".join(str(p) for p in self.problems[:50])
        more = f"\n... and {count - 50} more" if count > 50 else ""
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in definitions:\n{head}{more}"
        )


class Problems:
    """Collector used by the loader and the cross-checks."""

    def __init__(self):
        self.items: list[Problem] = []

    def add(self, position: Position, subject: str, message: str) -> None:
        self.items.append(Problem(position, subject, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DefinitionError(self.items)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ``; did you mean 'x'?`` suffix, or an empty string when nothing is close."""
    import difflib  # only a mistake needs it

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(choices: Iterable[str], limit: int = 12) -> str:
    items = sorted(choices)
    shown = ", ".join(items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def yaml_text(value) -> str:
    """A value spelled the way YAML (and the definitions) write it, for messages:
    ``true``, ``null``, ``'text'``, ``[1, 'a']``, ``{a: 1}`` rather than Python's
    ``True``, ``None``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{yaml_key(k)}: {yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    return str(value)


def yaml_key(key) -> str:
    """A mapping key as YAML writes it: names bare, other values as ``yaml_text``."""
    return key if isinstance(key, str) and key.isidentifier() else yaml_text(key)


def yaml_type(value) -> str:
    """What a YAML author calls the type of a value: string, integer, boolean, null,
    list, mapping (JSON Schema's names, not Python's ``str`` or ``NoneType``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    return type(value).__name__
