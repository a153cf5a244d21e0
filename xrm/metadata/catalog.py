"""The catalog: one immutable, versioned snapshot of every definition in force.

Runtime artifacts (tables, schemas, compiled filters) are cached on the catalog that
produced them, keyed by name, so a new catalog version starts with a clean cache and
nothing is ever patched in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .model import Entity, Form, OptionSet, Role, Solution, View
from .problems import did_you_mean

T = TypeVar("T")


class Sections:
    """Catalog sections built together on first use: forms, reports, dashboards,
    processes, wizards and web forms of a catalog whose very inputs built clean before
    (so building them cannot find a problem). A worker that only reads records never pays
    for them; the first thread to ask builds them once, under a lock."""

    def __init__(self, build: Callable[[], Mapping[str, Mapping]]):
        self._build: Callable[[], Mapping[str, Mapping]] | None = build
        self._built: Mapping[str, Mapping] | None = None
        self._lock = threading.Lock()

    def section(self, name: str) -> Mapping:
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
                    self._build = None  # let go of the builder and its documents
                built = self._built
        return built[name]

    def mapping(self, name: str) -> Mapping:
        return _LaterSection(self, name)


class _LaterSection(Mapping):
    """One section of ``Sections``: a read-only mapping that builds them on first use."""

    __slots__ = ("_sections", "_name")

    def __init__(self, sections: Sections, name: str):
        self._sections = sections
        self._name = name

    def _real(self) -> Mapping:
        return self._sections.section(self._name)

    def __getitem__(self, key):
        return self._real()[key]

    def __iter__(self):
        return iter(self._real())

    def __len__(self) -> int:
        return len(self._real())

    def __contains__(self, key) -> bool:
        return key in self._real()

    def get(self, key, default=None):
        return self._real().get(key, default)

    def keys(self):
        return self._real().keys()

    def values(self):
        return self._real().values()

    def items(self):
        return self._real().items()

    def __repr__(self) -> str:
        return repr(self._real())


class UnknownEntity(KeyError):
    def __init__(self, name: str, known):
        self.name = name
        super().__init__(f"unknown entity {name!r}{did_you_mean(name, known)}")

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True, eq=False)
class Catalog:
    version: int
    solutions: Mapping[str, Solution]
    entities: Mapping[str, Entity]
    option_sets: Mapping[str, OptionSet]
    views: Mapping[str, View]
    roles: Mapping[str, Role] = field(default_factory=dict)
    forms: Mapping[str, Form] = field(default_factory=dict)
    processes: Mapping[str, Any] = field(default_factory=dict)  # name -> processes.Process
    templates: Mapping[str, Any] = field(default_factory=dict)  # name -> processes.Template
    calendars: Mapping[str, Any] = field(default_factory=dict)  # name -> processes.Calendar
    slas: Mapping[str, Any] = field(default_factory=dict)  # name -> processes.Sla
    reports: Mapping[str, Any] = field(default_factory=dict)  # name -> reports.Report
    dashboards: Mapping[str, Any] = field(default_factory=dict)  # name -> dashboards.Dashboard
    wizards: Mapping[str, Any] = field(default_factory=dict)  # name -> wizards.Wizard
    web_forms: Mapping[str, Any] = field(default_factory=dict)  # name -> web_forms.WebForm
    _artifacts: dict = field(default_factory=dict, repr=False)
    # Re-entrant: building one artifact may ask for another (schemas need tables).
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def entity(self, name: str) -> Entity:
        try:
            return self.entities[name]
        except KeyError:
            raise UnknownEntity(name, self.entities) from None

    def entity_of(self, name: str) -> Entity | None:
        return self.entities.get(name)

    def artifact(self, key: Any, build: Callable[[], T]) -> T:
        """The cached artifact for this catalog version, built once on first use."""
        try:
            return self._artifacts[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._artifacts:
                self._artifacts[key] = build()
            return self._artifacts[key]

    def form_for(self, entity: str) -> Form | None:
        """The entity's main form: the one marked default, else the first declared
        (a quick-create or print form is never the main one)."""
        forms = [
            f
            for f in self.forms.values()
            if f.entity == entity and not (f.quick_create or f.print_layout)
        ]
        return next((f for f in forms if f.default), forms[0] if forms else None)

    def print_form_of(self, entity: str) -> Form | None:
        """The entity's print form (``print: true``), None when its pack declares none."""
        return next((f for f in self.forms.values() if f.entity == entity and f.print_layout), None)

    def views_of(self, entity: str) -> list[View]:
        return [v for v in self.views.values() if v.entity == entity]

    def children_of(self, entity: str):
        """(child entity, lookup field) pairs whose lookup points at ``entity``."""
        for other in self.entities.values():
            for f in other.fields.values():
                if f.type == "lookup" and f.params.get("to") == entity:
                    yield other, f

    @property
    def field_count(self) -> int:
        return sum(len(e.fields) for e in self.entities.values())

    def summary(self) -> str:
        """What the catalog holds, one count per kind of definition (``xrm check`` prints it)."""
        processes = [name for name in self.processes if ":" not in name]  # not SLA steps
        counts = (
            (len(self.solutions), "solution", "solutions"),
            (len(self.entities), "entity", "entities"),
            (self.field_count, "field", "fields"),
            (len(self.option_sets), "option set", "option sets"),
            (len(self.views), "view", "views"),
            (len(self.forms), "form", "forms"),
            (len(self.roles), "role", "roles"),
            (len(processes), "process", "processes"),
            (len(self.slas), "SLA", "SLAs"),
            (len(self.calendars), "calendar", "calendars"),
            (len(self.templates), "template", "templates"),
            (len(self.reports), "report", "reports"),
            (len(self.dashboards), "dashboard", "dashboards"),
            (len(self.wizards), "wizard", "wizards"),
            (len(self.web_forms), "web form", "web forms"),
        )
        return ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts)
