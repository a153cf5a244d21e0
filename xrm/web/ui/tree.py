"""Hierarchies: views of kind ``tree`` (records as an expandable tree over a lookup of the
entity to itself, such as accounts by ``parent`` or contacts by ``reports_to``), and a
record's place in its hierarchies on its read view (the path of its ancestors and its
direct children).

Everything is read through the records service as the user, so the tree holds only what
they may read: a record whose parent they may not read (or which the view's filter leaves
out) shows at the top level, and a parent hidden from them is never named, counted or
linked.  Children are counted with one grouped query per page of nodes and loaded when a
node is opened (htmx), or rendered at once for the ids in ``expand=`` (links that work
without scripts, and the "show in the hierarchy" link of a record page).  With ``q=`` the
page shows the records matching a search instead, each with its path (tree_search.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flask import Blueprint, abort, render_template, request, url_for

from ...metadata import Entity, View
from ...metadata.filters import FilterError, resolve_path
from ...storage.query import BadCursor, search_fields
from ...storage.records import Forbidden, NotFound, RecordError
from ..routing import parse_id
from . import context as C
from . import filtering as F
from .guards import guard

bp = guard(Blueprint("ui_tree", __name__))

#: Nodes on a page of the top level, and children shown under an opened node.
PAGE = 50
CHILDREN = 100
#: Nodes opened at once by ``expand=`` are nested at most this deep (a stored loop, made
#: before the field was marked ``hierarchy: true``, cannot make the page endless).
MAX_DEPTH = 12
#: Ancestors walked up for a record's path.
MAX_ANCESTORS = 20
#: Direct children listed on a record's page.
RECORD_CHILDREN = 10


@dataclass
class Node:
    id: int
    title: str
    url: str
    cells: list = field(default_factory=list)
    count: int = 0
    children: list[Node] | None = None
    more: str | None = None  # the address of the rest of the children (paged)
    focus: bool = False
    # in a search (tree_search.py): a match, with its title split at the matched words,
    # or a record shown only as the path to a match
    match: bool = False
    title_parts: list | None = None
    context: bool = False


# ------------------------------------------------------------------------ filters
def _prefixed(raw, prefix: str):
    """A raw filter read on the parent: every path gets ``<parent>.`` in front."""
    if isinstance(raw, Mapping):
        return {key: _prefixed(value, prefix) for key, value in raw.items()}
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return [f"{prefix}.{raw[0]}", *raw[1:]]
    if isinstance(raw, list):
        return [_prefixed(item, prefix) for item in raw]
    return raw


def roots_filter(view: View, entity: Entity):
    """The top level: records with no parent, a parent the user may not read (a path
    through a lookup carries the target's read scope, so it is empty then), or a parent
    the view's filter leaves out."""
    base = F.to_raw(view.filter)
    parent = view.parent
    orphan = [[parent, "is_empty"], [f"{parent}.id", "is_empty"]]
    if base is not None:
        on_parent = _prefixed(base, parent)
        try:  # a filter that cannot be read through the parent keeps only the plain rules
            C.records(entity).parse_filter(on_parent)
            orphan.append({"not": on_parent})
        except FilterError:
            pass
    return F.combine(base, {"any": orphan})


def children_filter(view: View, parent_id: int):
    return F.combine(F.to_raw(view.filter), [view.parent, "eq", parent_id])


# ------------------------------------------------------------------------ nodes
def columns_of(view: View, entity: Entity) -> list[str]:
    """The view's columns the user may read, the title first."""
    readable = C.readable_names(entity)
    title = C.title_path(entity)
    out = [title] if title else []
    for path in view.columns:
        head = path.split(".")[0]
        if path == title or (head in entity.fields and head not in readable):
            continue
        try:
            f, _ = resolve_path(entity, path, C.catalog().entity_of)
        except FilterError:
            continue
        if f.stored:
            out.append(path)
    return out


def sort_of(view: View, entity: Entity) -> list[list[str]]:
    if view.sort:
        return [list(s) for s in view.sort]
    title = C.title_path(entity)
    if title and "." not in title and C.field_at(entity, title).stored:
        return [[title, "asc"]]
    return [["id", "asc"]]


def load_nodes(
    view: View, entity: Entity, tree, *, limit: int, after: str | None = None
) -> tuple[list[Node], str | None]:
    """One page of nodes (as the user reads them) with their children counted."""
    service = C.records(entity)
    columns = columns_of(view, entity)
    page = service.query(
        filter=tree, sort=sort_of(view, entity), fields=columns, limit=limit, after=after
    )
    titles = C.titles()
    titles.want_records(entity, page.rows, columns)
    titles.resolve()
    counts = {}
    ids = [row["id"] for row in page.rows]
    if ids:
        groups = service.aggregate(
            [view.parent],
            ["count"],
            F.combine(F.to_raw(view.filter), [view.parent, "in", ids]),
            limit=len(ids) + 1,
        )
        counts = {g[view.parent]: g["count"] for g in groups}
    show = C.formatter().display
    shown = [(p, C.field_at(entity, p)) for p in columns[1:]]
    nodes = [
        Node(
            id=row["id"],
            title=C.record_title(entity, row),
            url=C.record_url(entity.name, row["id"]),
            cells=[show(f, row.get(p), True) for p, f in shown],
            count=counts.get(row["id"], 0),
        )
        for row in page.rows
    ]
    return nodes, page.next_cursor


def _children_url(view: View, parent_id: int, depth: int, after: str | None = None) -> str:
    return url_for(
        "ui_tree.children", view_name=view.name, parent_id=parent_id, depth=depth, after=after
    )


def expand(
    view: View, entity: Entity, nodes: list[Node], opened: set[int], depth: int, seen: set[int]
) -> None:
    """Fill the children of the nodes the page opens (``expand=``), depth first."""
    if depth >= MAX_DEPTH:
        return
    for node in nodes:
        if node.id not in opened or not node.count or node.id in seen:
            continue
        seen.add(node.id)
        node.children, cursor = load_nodes(
            view, entity, children_filter(view, node.id), limit=CHILDREN
        )
        if cursor:
            node.more = _children_url(view, node.id, depth + 1, cursor)
        expand(view, entity, node.children, opened, depth + 1, seen)


def _ids(text: str | None) -> set[int]:
    return {i for i in (parse_id(p) for p in (text or "").split(",")) if i is not None}


def tree_page(view: View, entity: Entity):
    """``/views/<view>`` for a tree view; with ``q=`` the records matching it."""
    from .tree_search import searchable_text

    text = searchable_text(request.args.get("q"))
    if text is not None:
        return _search_page(view, entity, text)
    opened = _ids(request.args.get("expand"))
    focus = parse_id(request.args.get("focus"))
    after = request.args.get("after") or None
    try:
        nodes, cursor = load_nodes(
            view, entity, roots_filter(view, entity), limit=PAGE, after=after
        )
    except BadCursor:
        abort(400)
    except (FilterError, RecordError) as exc:
        return render_template(
            "ui/tree.html", **_context(view, entity, [], None, opened, error=str(exc))
        )
    expand(view, entity, nodes, opened, 0, set())
    if focus is not None:
        _mark(nodes, focus)
    return render_template("ui/tree.html", **_context(view, entity, nodes, cursor, opened))


def _search_page(view: View, entity: Entity, text: str):
    from .tree_search import MATCHES, search_tree

    try:
        found = search_tree(view, entity, text)
    except (FilterError, RecordError) as exc:
        return render_template(
            "ui/tree.html", **_context(view, entity, [], None, set(), error=str(exc), query=text)
        )
    return render_template(
        "ui/tree.html",
        **_context(view, entity, found.roots, None, set(), query=text),
        found=found,
        limit=MATCHES,
        list_url=url_for("ui_lists.view", view_name=_list_view(entity).name, q=text),
    )


def _mark(nodes: list[Node], focus: int) -> None:
    for node in nodes:
        node.focus = node.id == focus
        if node.children:
            _mark(node.children, focus)


def _context(view, entity, nodes, cursor, opened, error=None, query=None) -> dict:
    columns = columns_of(view, entity)
    args = {k: v for k, v in request.args.items() if k not in ("after",)}
    return {
        "view": view,
        "entity": entity,
        "views": C.catalog().views_of(entity.name),
        "nodes": nodes,
        "headers": [C.path_label(entity, p) for p in columns],
        "next_url": url_for("ui_lists.view", view_name=view.name, **args, after=cursor)
        if cursor
        else None,
        "first_url": url_for("ui_lists.view", view_name=view.name, **args)
        if request.args.get("after")
        else None,
        "opened": opened,
        # in a search a chevron without scripts opens the plain tree at the node
        "toggle": (lambda node: toggle_url(view, node, opened))
        if query is None
        else (lambda node: url_for("ui_lists.view", view_name=view.name, expand=node.id)),
        "depth": 0,
        "more": None,
        "error": error,
        "can_create": C.can(entity.name, "create"),
        "searchable": bool(search_fields(entity)),
        "query": query,
    }


def toggle_url(view: View, node: Node, opened: set[int]) -> str:
    """Without scripts a node opens and closes by the page's ``expand=`` list."""
    now = set(opened) ^ {node.id}
    args = {k: v for k, v in request.args.items() if k not in ("expand", "after")}
    if now:
        args["expand"] = ",".join(str(i) for i in sorted(now))
    return url_for("ui_lists.view", view_name=view.name, **args)


@bp.get("/views/<view_name>/tree/<recid:parent_id>")
def children(view_name: str, parent_id: int):
    """The children of one node (htmx), a page at a time."""
    from .lists import resolve_view

    view, entity = resolve_view(view_name)
    if view.kind != "tree":
        abort(404)
    C.records(entity).get(parent_id, fields=["id"])  # NotFound unless the user may read it
    depth = min(max(parse_id(request.args.get("depth")) or 1, 1), MAX_DEPTH)
    try:
        nodes, cursor = load_nodes(
            view,
            entity,
            children_filter(view, parent_id),
            limit=CHILDREN,
            after=request.args.get("after") or None,
        )
    except BadCursor:
        abort(400)
    return render_template(
        "ui/_tree_nodes.html",
        view=view,
        nodes=nodes,
        depth=depth,
        toggle=lambda node: url_for("ui_lists.view", view_name=view.name, expand=node.id),
        more=_children_url(view, parent_id, depth, cursor) if cursor else None,
    )


# ------------------------------------------------------------------------ a record's place
def hierarchy_fields(entity: Entity) -> list:
    """The entity's hierarchies: lookups to itself marked ``hierarchy: true``."""
    return [
        f
        for f in entity.fields.values()
        if f.type == "lookup" and f.params.get("hierarchy") and f.params.get("to") == entity.name
    ]


def tree_view_for(entity: Entity, field_name: str) -> View | None:
    for view in C.catalog().views_of(entity.name):
        if view.kind == "tree" and view.parent == field_name:
            return view
    return None


def ancestors(entity: Entity, field_name: str, record: Mapping) -> list[dict]:
    """The record's parent, its parent and so on, the top first, as far as the user may
    read them: the walk stops at a parent they may not read (it is not named)."""
    service = C.records(entity)
    title = C.title_path(entity)
    fields = [field_name] + ([title] if title else [])
    chain: list[dict] = []
    seen = {record["id"]}
    current = record.get(field_name)
    while current is not None and current not in seen and len(chain) < MAX_ANCESTORS:
        try:
            row = service.get(current, fields=fields)
        except (NotFound, Forbidden):
            break
        chain.append(row)
        seen.add(current)
        current = row.get(field_name)
    chain.reverse()
    C.titles().want_records(entity, chain, fields)
    C.titles().resolve()
    return [
        {
            "id": row["id"],
            "title": C.record_title(entity, row),
            "url": C.record_url(entity.name, row["id"]),
        }
        for row in chain
    ]


def hierarchy_cards(entity: Entity, record: Mapping) -> list[dict]:
    """For the read view: per hierarchy field the user may read, the record's ancestors,
    its first direct children and how many there are, and a link into the tree view."""
    readable = C.readable_names(entity)
    cards = []
    for f in hierarchy_fields(entity):
        if f.name not in readable:
            continue
        service = C.records(entity)
        title = C.title_path(entity)
        fields = [title] if title else []
        try:
            page = service.query(
                filter=[f.name, "eq", record["id"]],
                sort=[[title, "asc"]] if title and "." not in title else [["id", "asc"]],
                fields=fields,
                limit=RECORD_CHILDREN,
            )
            total = service.count([f.name, "eq", record["id"]]).value
        except (FilterError, RecordError):
            continue
        chain = ancestors(entity, f.name, record)
        if not chain and not page.rows:
            continue
        C.titles().want_records(entity, page.rows, fields)
        C.titles().resolve()
        view = tree_view_for(entity, f.name)
        tree_url = None
        if view is not None:
            opened = ",".join(str(i) for i in [*(a["id"] for a in chain), record["id"]])
            tree_url = url_for(
                "ui_lists.view", view_name=view.name, expand=opened, focus=record["id"]
            )
        cards.append(
            {
                "field": f,
                "label": C.label(f),
                "ancestors": chain,
                "children": [
                    {
                        "title": C.record_title(entity, row),
                        "url": C.record_url(entity.name, row["id"]),
                    }
                    for row in page.rows
                ],
                "total": total,
                "more": total > len(page.rows),
                "tree_url": tree_url,
                "children_url": url_for(
                    "ui_lists.view",
                    view_name=_list_view(entity).name,
                    filter=_json([f.name, "eq", record["id"]]),
                ),
            }
        )
    return cards


def _list_view(entity: Entity) -> View:
    from .layouts import main_view

    return main_view(C.catalog(), entity)


def _json(value) -> str:
    import json

    return json.dumps(value)
