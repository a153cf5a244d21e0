"""Problems found in definitions, collected so that one run reports all of them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(choices: Iterable[str], limit: int = 12) -> str:
    items = sorted(choices)
    shown = ", ".join(items[:limit])
    return shown + (", ..." if len(items) > limit else "")
