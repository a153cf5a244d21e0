"""Business processes, SLAs, business-hours calendars and message templates: the frozen
model they compile into, and time spans (``15m``, ``-3d``) as definitions write them.

Four document kinds: ``process:`` (a trigger, a condition and a tree of steps), ``sla:``
(targets per priority over a business-hours calendar, with warning and breach steps),
``calendars:`` and ``templates:`` (localized subject and body).  Their JSON Schema pieces
live in ``process_schemas``, their compiler and cross-checks in ``process_compiler``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .labels import Label
from .model import Entity
from .source import Node, Position
from .spans import parse_offset, parse_span

# ------------------------------------------------------------------------- time spans
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock(text) -> dt.time:
    """``09:00`` as a time of day; raises ValueError."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(text).strip())
    if (
        not match
        or int(match[1]) > 24
        or int(match[2]) > 59
        or (int(match[1]) == 24 and int(match[2]))
    ):
        raise ValueError(f"{text!r} is not a time of day (expected HH:MM)")
    hours, minutes = int(match[1]), int(match[2])
    return dt.time(23, 59, 59, 999999) if hours == 24 else dt.time(hours, minutes)


def normalize_on(data) -> None:
    """YAML 1.1 reads the key ``on`` as the boolean True; give a process its ``on:`` back
    (with its position, for messages)."""
    if isinstance(data, dict) and True in data and "on" not in data:
        data["on"] = data.pop(True)
        if isinstance(data, Node):
            data.positions["on"] = data.positions.pop(True, data.position)
            data.positions[("value", "on")] = data.positions.pop(
                ("value", True), data.positions["on"]
            )


# ------------------------------------------------------------------------- the model
@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts a process.  ``kind`` is created, updated, deleted, enter_stage,
    exit_stage, schedule, date, manual or webhook; the other attributes belong to one kind."""

    kind: str
    fields: tuple[str, ...] = ()  # updated: only when one of these changed (empty: any)
    stages: tuple[str, ...] = ()  # enter_stage / exit_stage
    cron: str | None = None  # schedule
    time_zone: str | None = None  # schedule (default: the organization's)
    date_field: str | None = None  # date: the field the time is relative to
    offset: int = 0  # date: signed seconds
    before_field: str | None = None  # date: a duration field subtracted from the date
    time: dt.time | None = None  # date: time of day for a date-only field
    label: Label | None = None  # manual
    roles: tuple[str, ...] = ()  # manual: who may start it (empty: anyone who may update)
    secret: Any = None  # webhook: a string, or {"env": NAME}
    signature: str = "url"  # webhook: url (secret in the URL) or hmac (X-XRM-Signature)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a process tree.  ``path`` addresses it: (index, branch, index, ...)."""

    kind: str
    path: tuple
    spec: Mapping[str, Any]
    name: str | None = None
    label: Label | None = None
    condition: Any = None  # if: the typed filter; wait: the condition waited for
    branches: Mapping[str, tuple[Step, ...]] = field(default_factory=lambda: MappingProxyType({}))
    position: Position | None = field(default=None, compare=False)

    @property
    def title(self) -> str:
        if self.label:
            return self.label.get()
        return self.name or self.kind


@dataclass(frozen=True, slots=True)
class Process:
    name: str
    entity: str | None
    label: Label
    solution: str
    triggers: tuple[Trigger, ...]
    steps: tuple[Step, ...]
    condition: Any = None  # filter over the record when the process starts
    was: Any = None  # filter over the values before the change (updated triggers)
    description: Label | None = None
    enabled: bool = True
    max_attempts: int = 5
    position: Position | None = field(default=None, compare=False)

    def trigger(self, kind: str) -> Trigger | None:
        return next((t for t in self.triggers if t.kind == kind), None)

    def step_at(self, path) -> Step:
        steps, step = self.steps, None
        path = tuple(path)
        index = 0
        while index < len(path):
            step = steps[path[index]]
            if index + 1 < len(path):
                steps = step.branches[path[index + 1]]
            index += 2
        if step is None:
            raise KeyError(path)
        return step

    def walk(self):
        """Every step, depth first."""

        def visit(steps):
            for step in steps:
                yield step
                for branch in step.branches.values():
                    yield from visit(branch)

        yield from visit(self.steps)


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    subject: Label
    body: Label
    solution: str
    entity: str | None = None
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working hours per weekday (0 = Monday) as (start, end) local times, holidays."""

    name: str
    label: Label
    time_zone: str
    week: tuple[tuple[tuple[dt.time, dt.time], ...], ...]  # 7 entries
    country: str | None = None
    subdivision: str | None = None
    closed: frozenset[dt.date] = frozenset()
    special: Mapping[dt.date, tuple[tuple[dt.time, dt.time], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    solution: str = ""
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SlaMetric:
    name: str
    done: Any  # filter: the metric is met when the record matches
    targets: Mapping[str, int]  # priority value -> business seconds ("*" = any other)
    label: Label | None = None  # what the record page calls it (default: from the name)


@dataclass(frozen=True, slots=True)
class Sla:
    name: str
    entity: str
    label: Label
    solution: str
    calendar: str | None  # None: around the clock
    metrics: tuple[SlaMetric, ...]
    priority_field: str | None = None
    condition: Any = None  # which records the SLA applies to
    pause: Any = None  # the clock stops while the record matches
    warning: float | int = 0.75  # a fraction of the target, or seconds before the deadline
    warning_process: str | None = None  # compiled from on_warning (name "sla:<name>:warning")
    breach_process: str | None = None
    #: false: no clock starts, and the clocks that run are cancelled (workflow/sla.py)
    enabled: bool = True
    position: Position | None = field(default=None, compare=False)

    def target(self, metric: SlaMetric, priority) -> int | None:
        if priority is not None and priority in metric.targets:
            return metric.targets[priority]
        return metric.targets.get("*")

    def warning_before(self, target: int) -> int:
        """Seconds of business time before the deadline at which to warn."""
        if isinstance(self.warning, float):
            return int(round(target * (1 - self.warning)))
        return min(int(self.warning), target)


def as_list(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def resolve_members(entity: Entity, dotted: str, entity_of):
    """A recipient that names many users: ``territory.members.user`` walks lookups
    (``territory``) to a record, then one of its children fields (``members``), and ends
    at a user field of those children (``user``).  Returns (lookups walked, the children
    field, the children's entity, the user field); raises FilterError when the path is not
    of that shape, None when it has no children field at all (an ordinary path)."""
    from .filters import FilterError, resolve_path

    parts = str(dotted).split(".")
    current, walked = entity, []
    for index, part in enumerate(parts[:-1]):
        f = current.fields.get(part)
        if f is None or f.type not in ("lookup", "children"):
            return None
        if f.type == "lookup":
            target = entity_of(f.target)
            if target is None:
                return None
            walked.append(f)
            current = target
            continue
        child = entity_of(f.params.get("entity"))
        if child is None:
            return None
        rest = ".".join(parts[index + 1 :])
        if "." in rest:
            raise FilterError(
                f"{rest!r}: after the children field {part!r} name one user field of {child.name}",
                dotted,
            )
        user, _ = resolve_path(child, rest, entity_of)
        if user.type != "user":
            raise FilterError(
                f"{child.name}.{rest} is a {user.type} field; expected a user field", dotted
            )
        return tuple(walked), f, child, user
    return None


def activity_due_field(entity: Entity) -> str | None:
    for name in ("due", "starts_at"):
        if name in entity.fields and entity.fields[name].type in ("date", "datetime"):
            return name
    return None


# The schema pieces are a module of its own, as is the compiler (``process_compiler``,
# which imports this module: the catalog compiler imports it directly).
from .process_schemas import BRANCHES, STEP_KINDS, published, shells, step_defs, step_schema  # noqa: E402

__all__ = [
    "BRANCHES",
    "STEP_KINDS",
    "Calendar",
    "Process",
    "Sla",
    "SlaMetric",
    "Step",
    "Template",
    "Trigger",
    "activity_due_field",
    "as_list",
    "normalize_on",
    "parse_clock",
    "parse_offset",
    "parse_span",
    "published",
    "shells",
    "step_defs",
    "step_schema",
]
