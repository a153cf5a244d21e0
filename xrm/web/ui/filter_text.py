"""A filter of the filter language as a sentence a business user reads ("Stage is
Proposal and Amount ≥ $10,000.00"): labels instead of field names, option labels, titles
of linked records and values formatted in the user's locale, in English or Russian."""

from __future__ import annotations

from ...metadata import Entity
from ...metadata.fieldtypes import RELATIVE_DATE_OPS
from ...metadata.filters import (
    All,
    AnyOf,
    Condition,
    CurrentUser,
    FilterError,
    Not,
    parse_filter,
)
from . import context as C
from .filtering import OPERATOR_WORDS

#: Comparisons read the same in every language.
SYMBOLS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥"}


def describe(entity: Entity, raw) -> str:
    """The sentence for a raw filter tree; empty when there is no filter or it no longer
    applies to the catalog (the list reports that problem itself)."""
    try:
        tree = parse_filter(raw, entity, C.catalog().entity_of)
    except FilterError:
        return ""
    if tree is None:
        return ""
    _want_titles(tree)
    C.titles().resolve()  # one query per linked entity for the whole sentence
    return _node(entity, tree, top=True)


def _want_titles(node) -> None:
    if isinstance(node, Condition):
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        for value in values:
            if not isinstance(value, CurrentUser):
                C.titles().want_value(node.field, [value] if _many(node) else value)
    elif isinstance(node, All | AnyOf):
        for child in node.children:
            _want_titles(child)
    elif isinstance(node, Not):
        _want_titles(node.child)


def _node(entity: Entity, node, top: bool = False) -> str:
    if isinstance(node, Condition):
        return _condition(entity, node)
    if isinstance(node, Not):
        return C._("not (%(condition)s)", condition=_node(entity, node.child, top=True))
    joiner = C._(" and ") if isinstance(node, All) else C._(" or ")
    text = joiner.join(_node(entity, child) for child in node.children)
    return text if top or len(node.children) < 2 else f"({text})"


def _many(node: Condition) -> bool:
    """Values of list fields (multi-choice, tags, many-to-many) are shown as lists."""
    return node.field.kind.json_type == "array"


def _value(node: Condition, value) -> str:
    if isinstance(value, CurrentUser):
        return C._("me")
    if node.op in ("contains", "starts_with", "not_contains") and not _many(node):
        return C._("“%(words)s”", words=value)
    return C.text(node.field, [value] if _many(node) else value)


def _condition(entity: Entity, node: Condition) -> str:
    field = C.path_label(entity, node.dotted)
    op, value = node.op, node.value
    if op in SYMBOLS:
        return f"{field} {SYMBOLS[op]} {_value(node, value)}"
    if op == "between":
        low, high = (_value(node, v) for v in value)
        return C._("%(field)s is between %(low)s and %(high)s", field=field, low=low, high=high)
    if op in ("last_n_days", "next_n_days", "older_than_days"):
        templates = {
            "last_n_days": C._("%(field)s is in the last %(count)s days"),
            "next_n_days": C._("%(field)s is in the next %(count)s days"),
            "older_than_days": C._("%(field)s is older than %(count)s days"),
        }
        return templates[op] % {"field": field, "count": value}
    if op in RELATIVE_DATE_OPS:  # today, this week, last quarter ...
        return C._("%(field)s is %(value)s", field=field, value=C._(OPERATOR_WORDS[op]))
    values = ", ".join(_value(node, v) for v in value) if isinstance(value, tuple) else None
    templates = {
        "eq": C._("%(field)s is %(value)s"),
        "ne": C._("%(field)s is not %(value)s"),
        "in": C._("%(field)s is one of %(value)s"),
        "not_in": C._("%(field)s is none of %(value)s"),
        "is_empty": C._("%(field)s is empty"),
        "is_not_empty": C._("%(field)s is not empty"),
        "contains": C._("%(field)s contains %(value)s"),
        "not_contains": C._("%(field)s does not contain %(value)s"),
        "starts_with": C._("%(field)s starts with %(value)s"),
    }
    text = values if values is not None else ("" if value is None else _value(node, value))
    return templates[op] % {"field": field, "value": text}
