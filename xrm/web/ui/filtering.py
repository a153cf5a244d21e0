"""What a list shows: the view's filter, quick filters, the advanced filter builder, search
and sort, read from the URL and written back into it.

The URL is the state (so a list can be bookmarked, shared and exported as it stands):
``q`` search, ``sort`` (``-amount,name``), ``qf.<path>`` quick filters, ``filter`` the
advanced filter in the filter language (JSON), ``after`` the keyset cursor, ``saved`` a
personal saved view.  The builder's rows (``fb.field``/``fb.op``/``fb.value``) are turned
into the filter language here, so the language stays the one thing lists, exports, saved
views and the API understand.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ...metadata import Entity, Field, View
from ...metadata.fieldtypes import (
    EMPTY_OPS,
    RELATIVE_DATE_OPS,
    RELATIVE_N_OPS,
    CoercionError,
    parse_number,
)
from ...metadata.filters import (
    All,
    AnyOf,
    Condition,
    CurrentUser,
    FilterError,
    Not,
    operators_of,
    resolve_path,
)
from ...metadata.model import SYSTEM_COLUMNS

#: operator -> English words (translated in templates)
OPERATOR_WORDS = {
    "eq": "equals",
    "ne": "does not equal",
    "in": "is one of",
    "not_in": "is none of",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "lt": "less than",
    "le": "at most",
    "gt": "greater than",
    "ge": "at least",
    "between": "between",
    "today": "today",
    "yesterday": "yesterday",
    "tomorrow": "tomorrow",
    "this_week": "this week",
    "last_week": "last week",
    "next_week": "next week",
    "this_month": "this month",
    "last_month": "last month",
    "next_month": "next month",
    "this_quarter": "this quarter",
    "last_quarter": "last quarter",
    "next_quarter": "next quarter",
    "this_year": "this year",
    "last_year": "last year",
    "next_year": "next year",
    "last_n_days": "in the last N days",
    "next_n_days": "in the next N days",
    "older_than_days": "older than N days",
}
OPERATOR_ORDER = list(OPERATOR_WORDS)
LIST_OPS = frozenset({"in", "not_in", "between"})
NO_VALUE_OPS = EMPTY_OPS | RELATIVE_DATE_OPS

#: Choices of a date quick filter: a relative period (or N days) per entry.
DATE_QUICK = (
    "today",
    "this_week",
    "this_month",
    "this_quarter",
    "this_year",
    "last_week",
    "last_month",
    "next_month",
    "last_n_days:7",
    "last_n_days:30",
    "next_n_days:7",
    "next_n_days:30",
)


def operators_for(field: Field) -> list[str]:
    allowed = operators_of(field)
    return [op for op in OPERATOR_ORDER if op in allowed]


# ------------------------------------------------------------------------ typed -> raw
def _raw_value(field: Field, value):
    if isinstance(value, CurrentUser):
        return "current_user"
    if isinstance(value, tuple | list):
        return [_raw_value(field, v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return value


def to_raw(node):
    """A typed filter tree (as views and forms hold them) back in the filter language."""
    if node is None:
        return None
    if isinstance(node, Condition):
        if node.op in NO_VALUE_OPS:
            return [node.dotted, node.op]
        return [node.dotted, node.op, _raw_value(node.field, node.value)]
    if isinstance(node, All):
        return {"all": [to_raw(c) for c in node.children]}
    if isinstance(node, AnyOf):
        return {"any": [to_raw(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": to_raw(node.child)}
    raise TypeError(f"not a filter node: {node!r}")


def combine(*parts):
    """All of the given raw filters (None and empty ones left out)."""
    kept = [p for p in parts if p not in (None, [], {})]
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    flat = []
    for part in kept:
        if isinstance(part, Mapping) and set(part) == {"all"}:
            flat.extend(part["all"])
        else:
            flat.append(part)
    return {"all": flat}


# ------------------------------------------------------------------------ builder rows
@dataclass
class BuilderRow:
    path: str = ""
    op: str = "eq"
    value: str = ""


def _value_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, dict):
        return f"{value.get('entity')}:{value.get('id')}"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def rows_of(raw) -> tuple[str, list[BuilderRow]] | None:
    """The builder's rows for a flat filter ({all|any: [conditions]}), else None."""
    if raw in (None, [], {}):
        return "all", []
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        raw = {"all": [raw]}
    if not isinstance(raw, Mapping) or len(raw) != 1:
        return None
    ((mode, items),) = raw.items()
    if mode not in ("all", "any") or not isinstance(items, list):
        return None
    rows = []
    for item in items:
        if not (isinstance(item, list) and len(item) in (2, 3) and isinstance(item[0], str)):
            return None
        rows.append(
            BuilderRow(item[0], str(item[1]), _value_text(item[2]) if len(item) == 3 else "")
        )
    return mode, rows


def row_condition(entity: Entity, entity_of, row: BuilderRow, locale: str = "en"):
    """One builder row as a condition of the filter language (values are typed text;
    numbers as ``locale`` writes them)."""
    field, _ = resolve_path(entity, row.path, entity_of)
    op = row.op
    if op not in operators_of(field):
        raise FilterError(f"operator {op!r} does not apply here", row.path)
    if op in NO_VALUE_OPS:
        return [row.path, op]
    text = (row.value or "").strip()
    if op in RELATIVE_N_OPS:
        if not _digits(text):
            raise FilterError("expected a whole number of days", row.path)
        return [row.path, op, int(text)]
    if text == "":
        raise FilterError("a value is required", row.path)
    if op in LIST_OPS or (op in ("contains", "not_contains") and field.kind.json_type == "array"):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if op in ("contains", "not_contains"):
            return [row.path, op, parts]
        return [row.path, op, [_typed(field, p, locale, row.path) for p in parts]]
    return [row.path, op, _typed(field, text, locale, row.path)]


def _digits(text: str) -> bool:
    """Whether ``int`` reads the text as a whole number: ASCII digits only (``isdigit``
    also accepts "²", which ``int`` refuses).  The filter language checks the range."""
    return text.isascii() and text.isdigit()


def _typed(field: Field, text: str, locale: str = "en", path: str = ""):
    """Text as the filter language expects it: JSON numbers and booleans stay typed, and
    number text typed in ``locale`` ("1 000,5") becomes the machine form the filter
    language reads in every locale."""
    if field.kind.numeric and field.type != "duration":
        try:
            number = parse_number(text, locale)
        except CoercionError as exc:
            raise FilterError(exc.message, path) from None
        whole = number == number.to_integral_value() and abs(number) < 2**63
        return int(number) if whole else str(number)
    if field.type == "boolean":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "да"):
            return True
        if lowered in ("false", "no", "0", "нет"):
            return False
    if (field.type in ("lookup", "user") or field.kind.numeric) and _digits(text.lstrip("-")):
        return int(text)
    if field.type == "user" and text in ("me", "current_user"):
        return "current_user"
    return text


def builder_filter(entity: Entity, entity_of, args, locale: str = "en") -> Any:
    """The filter the builder rows in ``args`` describe (None when there are none)."""
    paths = args.getlist("fb.field")
    ops = args.getlist("fb.op")
    values = args.getlist("fb.value")
    mode = args.get("fb.mode", "all")
    conditions = []
    for index, path in enumerate(paths):
        if not path:
            continue
        row = BuilderRow(
            path,
            ops[index] if index < len(ops) else "eq",
            values[index] if index < len(values) else "",
        )
        conditions.append(row_condition(entity, entity_of, row, locale))
    if not conditions:
        return None
    return {"any" if mode == "any" else "all": conditions}


# ------------------------------------------------------------------------ quick filters
def quick_condition(field: Field, path: str, value: str):
    """A quick filter's chosen value as a condition (None when nothing is chosen)."""
    value = (value or "").strip()
    if not value:
        return None
    if value == "__empty__":
        return [path, "is_empty"]
    if field.type in ("date", "datetime") or (
        field.type == "formula" and field.params.get("result") in ("date", "datetime")
    ):
        op, _, days = value.partition(":")
        if op in RELATIVE_N_OPS and _digits(days):
            return [path, op, int(days)]
        if op in RELATIVE_DATE_OPS:
            return [path, op]
        return [path, "eq", value]
    if field.type == "boolean":
        return [path, "eq", value == "true"]
    if field.type in ("multi_choice", "tags"):
        return [path, "contains", [value]]
    if field.type == "user":
        return [
            path,
            "eq",
            "current_user" if value == "me" else int(value) if _digits(value) else value,
        ]
    if field.type == "lookup":
        return [path, "eq", int(value) if _digits(value) else value]
    if field.type in ("text", "long_text", "email", "phone", "url", "rich_text", "autonumber"):
        return [path, "contains", value]
    return [path, "eq", value]


# ------------------------------------------------------------------------ list state
MAX_COLUMNS = 40  # columns a list may be asked to show


@dataclass
class ListState:
    """Everything that decides what a list shows, as read from (and written to) the URL."""

    view: View
    q: str = ""
    sort: str = ""
    quick: dict[str, str] = field(default_factory=dict)
    advanced: Any = None  # raw filter-language tree
    after: str | None = None
    saved: int | None = None
    columns: tuple[str, ...] = ()

    def params(self, **changes) -> dict[str, str]:
        """URL parameters for this state, with some changed (None removes)."""
        out: dict[str, str] = {}
        if self.saved:
            out["saved"] = str(self.saved)
        if self.q:
            out["q"] = self.q
        if self.sort:
            out["sort"] = self.sort
        for path, value in self.quick.items():
            if value:
                out[f"qf.{path}"] = value
        if self.advanced not in (None, [], {}):
            out["filter"] = json.dumps(self.advanced, ensure_ascii=False, separators=(",", ":"))
        if self.after:
            out["after"] = self.after
        if self.columns:
            out["cols"] = ",".join(self.columns)
        for key, value in changes.items():
            key = key.replace("__", ".")
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    def query_string(self, **changes) -> str:
        return urlencode(self.params(**changes))

    def saved_state(self) -> dict:
        return {
            "q": self.q,
            "sort": self.sort,
            "quick": dict(self.quick),
            "filter": self.advanced,
            "columns": list(self.columns),
        }

    @property
    def sort_spec(self) -> list[tuple[str, str]]:
        if self.sort:
            spec = []
            for part in self.sort.split(","):
                part = part.strip()
                if part:
                    spec.append((part[1:], "desc") if part.startswith("-") else (part, "asc"))
            return spec
        return [tuple(s) for s in self.view.sort]

    def direction_of(self, path: str) -> str | None:
        spec = self.sort_spec
        if spec and spec[0][0] == path:
            return spec[0][1]
        return None


def read_state(
    view: View,
    entity: Entity,
    entity_of,
    args,
    saved_state: Mapping | None = None,
    locale: str = "en",
) -> ListState:
    """The list state of a request: a saved view's state, overridden by the URL (the
    builder's number values read as ``locale`` writes them)."""
    state = ListState(view=view)
    if saved_state:
        state.q = saved_state.get("q") or ""
        state.sort = saved_state.get("sort") or ""
        state.quick = dict(saved_state.get("quick") or {})
        state.advanced = saved_state.get("filter")
        state.columns = tuple(
            c for c in saved_state.get("columns") or () if _resolves(entity, entity_of, c)
        )
    if "q" in args:
        state.q = args.get("q", "").strip()[:200]
    if "sort" in args:
        state.sort = args.get("sort", "").strip()
    for key in args:
        if key.startswith("qf."):
            state.quick[key[3:]] = args.get(key, "")
    raw = args.get("filter")
    if raw is not None:
        raw = raw.strip()
        if not raw:
            state.advanced = None
        else:
            try:
                state.advanced = json.loads(raw)
            except ValueError:
                raise FilterError("the filter is not valid JSON") from None
    if "fb.field" in args:
        state.advanced = builder_filter(entity, entity_of, args, locale)
    if "cols" in args or "columns_form" in args:
        # "cols": a comma list (links, the chooser with scripts); the chooser's checkboxes
        # ("col") without them.  Empty: the view's own columns again.
        if "columns_form" in args and "cols" not in args:
            chosen = args.getlist("col")
        else:
            chosen = args.get("cols", "").split(",")
        paths = [c.strip() for c in chosen if c.strip()][:MAX_COLUMNS]
        state.columns = tuple(dict.fromkeys(c for c in paths if _resolves(entity, entity_of, c)))
    state.after = args.get("after") or None
    return state


def _resolves(entity: Entity, entity_of, path: str) -> bool:
    try:
        resolve_path(entity, path, entity_of)
        return True
    except FilterError:
        return False


def effective_filter(state: ListState, entity: Entity, entity_of):
    """The view's own filter, the quick filters and the advanced filter, all at once."""
    parts = [to_raw(state.view.filter)]
    for path, value in state.quick.items():
        if (
            not value
            or path not in state.view.quick_filters
            and not _is_system_or_field(entity, path)
        ):
            continue
        try:
            target, _ = resolve_path(entity, path, entity_of)
        except FilterError:
            continue
        condition = quick_condition(target, path, value)
        if condition is not None:
            parts.append(condition)
    parts.append(state.advanced)
    return combine(*parts)


def _is_system_or_field(entity: Entity, path: str) -> bool:
    head = path.split(".")[0]
    return head in entity.fields or head in SYSTEM_COLUMNS
