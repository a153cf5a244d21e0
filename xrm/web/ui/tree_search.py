"""Search in a tree view (``/views/<view>?q=``): the records that match, each inside the
tree with the path from its top level opened, and nothing else.

The matches are found by the records service's own full-text search (what the list's
search box runs), inside the view's filter and as the user, so only records they may read
match.  From the matches the walk goes up one level at a time, reading the parents through
the same service and filter: a parent the user may not read, or which the view's filter
leaves out, is not returned, so the record under it is on the top level as it is in the
plain tree, and the hidden parent is never named, linked or counted.  Siblings that do
not match are not loaded; a match's own children still open as usual.  At most
``MATCHES`` records match; the page says how many there are in all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...metadata import Entity, View
from ...storage.global_search import find_marks, split_marks
from ...storage.query import search_words
from . import context as C
from . import filtering as F
from .tree import MAX_DEPTH, Node, load_nodes, sort_of

#: Matches shown at most; the rest are counted (and the list view shows them all).
MATCHES = 50


@dataclass
class Found:
    roots: list[Node]
    shown: int  # matches in the tree
    total: int  # matches in all (exact up to the count's cap, then an estimate)
    exact: bool


def searchable_text(text: str | None) -> str | None:
    """The search to run, or None when the text holds no word to search for."""
    return text if search_words(text) else None


def search_tree(view: View, entity: Entity, text: str) -> Found:
    """The matches of ``text`` (at most ``MATCHES``) as a forest: every match under the
    chain of its readable ancestors, each level in the view's sort order."""
    service = C.records(entity)
    base = F.to_raw(view.filter)
    parent = view.parent
    # without the parent field the user cannot be shown where a record sits
    knows_parent = parent in C.readable_names(entity)
    page = service.query(
        filter=base,
        sort=sort_of(view, entity),
        fields=[parent] if knows_parent else ["id"],
        limit=MATCHES,
        search=text,
    )
    matched = [row["id"] for row in page.rows]
    if not matched:
        return Found([], 0, 0, True)
    if page.next_cursor:
        count = service.count(base, search=text)
        total, exact = count.value, count.exact
    else:
        total, exact = len(matched), True
    parent_of = {row["id"]: row.get(parent) if knows_parent else None for row in page.rows}
    if knows_parent:
        _walk_up(service, base, parent, parent_of)
    _cut_loops(parent_of)
    ids = sorted(parent_of)
    nodes, _ = load_nodes(view, entity, F.combine(base, ["id", "in", ids]), limit=len(ids))
    words = search_words(text)
    roots = _forest(nodes, parent_of, set(matched), words)
    return Found(roots, len(matched), total, exact)


def _walk_up(service, base, parent: str, parent_of: dict[int, int | None]) -> None:
    """Add the ancestors of the records in ``parent_of`` the user may read inside the
    view's filter, one level per query; a parent left out stays out of ``parent_of``."""
    wanted = {p for p in parent_of.values() if p is not None and p not in parent_of}
    for _ in range(MAX_DEPTH):
        if not wanted:
            return
        rows = service.query(
            filter=F.combine(base, ["id", "in", sorted(wanted)]),
            fields=[parent],
            limit=len(wanted),
        ).rows
        for row in rows:
            parent_of[row["id"]] = row.get(parent)
        wanted = {row[parent] for row in rows if row.get(parent) is not None} - parent_of.keys()


def _cut_loops(parent_of: dict[int, int | None]) -> None:
    """A loop stored before the field became a hierarchy would leave its records under
    no top level: the record the walk comes back to is put on top instead."""
    for start in list(parent_of):
        seen: set[int] = set()
        node = start
        while node in parent_of and node not in seen:
            seen.add(node)
            node = parent_of[node]
        if node in seen:
            parent_of[node] = None


def _forest(
    nodes: list[Node], parent_of: dict[int, int | None], matched: set[int], words
) -> list[Node]:
    """Hang the nodes (in the view's sort order) under their parents; the nodes that are
    there only as a match's path are marked as context."""
    by_id = {node.id: node for node in nodes}
    roots: list[Node] = []
    for node in nodes:
        if node.id in matched:
            node.match = True
            node.title_parts = split_marks(node.title, find_marks(node.title, words))
        else:
            node.context = True
        above = by_id.get(parent_of.get(node.id))
        if above is None:
            roots.append(node)
        else:
            if above.children is None:
                above.children = []
            above.children.append(node)
    return roots
