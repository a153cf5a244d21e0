"""The catalog's frozen model: what packs and customizations compile into.

Instances are immutable; a change builds a new catalog.  Mappings are read-only views and
sequences are tuples, so nothing downstream can patch a definition in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .fieldtypes import FIELD_TYPES, FieldType
from .labels import Label
from .source import Position

EMPTY: Mapping = MappingProxyType({})

#: Columns every entity table has; field names may not take them.
SYSTEM_COLUMNS = (
    "id",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "owner",
    "version",
)


def frozen_map(data: Mapping | None) -> Mapping:
    return MappingProxyType(dict(data or {}))


def freeze(value):
    """A definition's nested value made read-only (mappings and tuples), as the catalog
    holds it: a frozen report's filter, a widget's parameters."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    """A frozen definition value as plain, JSON-ready lists and dicts again."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: Label
    color: str | None = None


@dataclass(frozen=True, slots=True)
class OptionSet:
    name: str
    label: Label
    options: tuple[Option, ...]
    solution: str
    position: Position | None = field(default=None, compare=False)

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(o.value for o in self.options)


@dataclass(frozen=True, slots=True)
class Rollup:
    children: str  # name of a children field on the same entity
    aggregate: str  # sum, count, avg, min, max
    field: str | None  # field of the child entity (None for count)
    filter: Any = None  # optional filter-language tree over the child entity


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    label: Label
    entity: str
    required: bool = False
    unique: bool = False
    indexed: bool = False
    searchable: bool = False
    read_only: bool = False
    default: Any = None
    help: Label | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    formula: str | None = None
    rollup: Rollup | None = None
    choices: tuple[Option, ...] = ()
    #: the field's name in an earlier version: its column is renamed, data and all
    renamed_from: str | None = None
    solution: str = ""
    position: Position | None = field(default=None, compare=False)
    #: the options' values, computed once (coercion checks them on every save)
    choice_values: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "choice_values", tuple(o.value for o in self.choices))

    @property
    def kind(self) -> FieldType:
        return FIELD_TYPES[self.type]

    @property
    def computed(self) -> bool:
        return self.kind.computed or self.formula is not None or self.rollup is not None

    @property
    def writable(self) -> bool:
        return not (self.computed or self.read_only)

    @property
    def stored(self) -> bool:
        return self.kind.stored

    @property
    def target(self) -> str | None:
        """The entity a lookup, many-to-many or children field points at."""
        if self.type == "user":
            return "user"
        return self.params.get("to") if self.type != "children" else self.params.get("entity")

    @property
    def on_delete(self) -> str:
        return self.params.get("on_delete", "set_null" if not self.required else "restrict")

    def option(self, value: str) -> Option | None:
        for option in self.choices:
            if option.value == value:
                return option
        return None

    def coerce(self, value):
        return self.kind.coerce(self, value)

    def format(self, value, locale: str = "en", tz: str = "UTC") -> str:
        return self.kind.format(self, value, locale, tz)


@dataclass(frozen=True, slots=True)
class Validation:
    when: Any  # filter-language tree: the record is invalid when it matches
    message: Label
    fields: tuple[str, ...] = ()
    #: names the rule within its entity, so the customization layer can change it
    name: str | None = None
    #: a switched-off rule stays in the catalog (the admin area shows it) but is not checked
    enabled: bool = True
    #: the solution that defined the rule, and whether the customization layer changed it
    solution: str = ""
    customized: bool = False
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    probability: float | None = None
    closed: str | None = None  # None, "won" or "lost"
    requires: tuple[str, ...] = ()
    next: tuple[str, ...] | None = None  # allowed transitions; None means any
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StageFlow:
    field: str
    steps: Mapping[str, Stage]
    probability_field: str | None = None  # set from the stage's probability on change


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    label: Label
    plural: Label
    fields: Mapping[str, Field]
    solution: str
    title: str | None = None
    description: Label | None = None
    icon: str | None = None
    validations: tuple[Validation, ...] = ()
    stages: StageFlow | None = None
    indexes: tuple[Index, ...] = ()
    search: tuple[str, ...] = ()
    audit: bool = True
    #: False: a helper entity (lines, members) the navigation leaves out
    navigation: bool = True
    position: Position | None = field(default=None, compare=False)
    #: duplicate rules (``metadata.duplicates.DuplicateRule``), checked on create
    duplicates: tuple = ()
    #: the rules-based score (``metadata.scoring.Scoring``), kept by the records service
    scoring: Any = None

    def field(self, name: str) -> Field:
        return self.fields[name]

    @property
    def stored_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields.values() if f.stored)

    @property
    def table_name(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class View:
    name: str
    entity: str
    label: Label
    solution: str
    kind: str = "list"  # list, kanban, calendar, tree
    columns: tuple[str, ...] = ()
    filter: Any = None
    sort: tuple[tuple[str, str], ...] = ()
    quick_filters: tuple[str, ...] = ()
    group_by: str | None = None
    card: tuple[str, ...] = ()
    date_field: str | None = None
    #: calendar: where an event ends, a datetime field (its end) or a duration field
    end_field: str | None = None
    #: tree: the lookup to the entity itself that makes the hierarchy
    parent: str | None = None
    position: Position | None = field(default=None, compare=False)


# "account" (the records of the user's own account, and their own) and "team" are not
# nested; the order only names the widest of several roles' scopes, while their rows are
# the union of what each admits (``Access.scopes_of``).
SCOPE_ORDER = {"none": 0, "own": 1, "account": 2, "team": 3, "all": 4}
ACTIONS = ("create", "read", "update", "delete")
#: The entity whose records users belong to (``xrm_user.account_id``) for the "account"
#: scope: the core pack's accounts.
ACCOUNT_ENTITY = "account"
#: A path in ``account: [...]`` meaning the record itself (on the account entity only).
ACCOUNT_SELF = "id"


def default_account_paths(entity: Entity) -> tuple[str, ...]:
    """Where a record's account is found when a role names no ``account: [...]``: the
    record itself on the account entity, else its lookup named ``account`` to accounts
    (none: under the account scope such records are only the user's own)."""
    if entity.name == ACCOUNT_ENTITY:
        return (ACCOUNT_SELF,)
    f = entity.fields.get("account")
    if f is not None and f.type == "lookup" and f.params.get("to") == ACCOUNT_ENTITY:
        return ("account",)
    return ()


@dataclass(frozen=True, slots=True)
class Role:
    """Per-entity scopes for each action and field-level rules.  ``permissions`` maps an
    entity name (or ``*`` for any entity) to {action: none|own|account|team|all}; ``fields`` maps
    ``entity`` -> {field: hidden|read_only}."""

    name: str
    label: Label
    solution: str
    admin: bool = False
    permissions: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: EMPTY)
    fields: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: EMPTY)
    # entity -> the user fields that make a record "mine" for the own and team scopes
    # (``own: [owner, agent]``); the owner alone when not given.
    own_fields: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)
    # entity -> the lookup paths to the account that make a record the user's account's,
    # for the account scope (``account: [partner_account]``); the default when not given.
    account_paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)
    position: Position | None = field(default=None, compare=False)

    def scope(self, entity: str, action: str) -> str:
        if self.admin:
            return "all"
        for key in (entity, "*"):
            rules = self.permissions.get(key)
            if rules is not None and action in rules:
                return rules[action]
        return "none"


@dataclass(frozen=True, slots=True)
class FormField:
    field: str
    label: Label | None = None
    visible_if: Any = None  # typed filter tree, evaluated on the record being edited
    required_if: Any = None
    read_only: bool = False
    widget: str | None = None


@dataclass(frozen=True, slots=True)
class FormSection:
    label: Label | None
    columns: tuple[tuple[FormField, ...], ...] = ()
    related: str | None = None  # a children / many_to_many field shown as a list
    visible_if: Any = None


@dataclass(frozen=True, slots=True)
class FormTab:
    label: Label | None
    sections: tuple[FormSection, ...]


@dataclass(frozen=True, slots=True)
class Form:
    name: str
    entity: str
    label: Label
    solution: str
    tabs: tuple[FormTab, ...]
    default: bool = False
    #: the entity's short form for creating a record in a dialog (never its main form)
    quick_create: bool = False
    #: the entity's printable document (``print: true``): what the record's Print page
    #: shows, in the reader's formats; never its main form.  A print form of a child entity
    #: gives the columns of its rows' table when a parent's print form lists them.
    print_layout: bool = False
    #: the entity's fields the form does not show; the form editor writes them back as
    #: ``left_out`` so that extensions and the generated tab do not bring them back
    left_out: tuple[str, ...] = ()
    position: Position | None = field(default=None, compare=False)

    def fields(self):
        for tab in self.tabs:
            for section in tab.sections:
                for column in section.columns:
                    yield from column


@dataclass(frozen=True, slots=True)
class Solution:
    name: str
    version: str
    label: Label
    depends: Mapping[str, str]
    path: str
    description: Label | None = None
    position: Position | None = field(default=None, compare=False)
