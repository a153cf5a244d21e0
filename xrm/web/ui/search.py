"""Global search in the UI: the box in the top bar and the results page.

The box (``ui/_search_box.html``, in every page's top bar; "/" or Ctrl+K focuses it)
asks ``/search/suggest`` as the user types and shows the best few hits of each entity in
a dropdown, or the user's recent records while it is empty; Enter opens ``/search``, the
full page, with more hits per entity and a choice of one entity.  Both read through
``xrm.storage.global_search`` as the request's user, so they show what that user's lists
would.  Opening a record's page notes it among the user's recent records
(``note_view``).
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for

from ...storage import global_search as GS
from . import context as C
from .guards import guard
from .layouts import main_view

bp = guard(Blueprint("ui_search", __name__))

SUGGEST_LIMIT = 5  # hits per entity in the dropdown
PAGE_LIMIT = 10  # hits per entity on the results page
ENTITY_LIMIT = GS.MAX_LIMIT  # hits on the results page of one entity


def note_view(entity_name: str, record_id: int) -> None:
    """Note that the request's user opened a record (their recent records)."""
    GS.remember(C.store(), C.principal().user_id, entity_name, record_id)


def _group_view(group: GS.Group, text: str) -> dict:
    entity = C.catalog().entity(group.entity)
    return {
        "entity": entity,
        "label": C.plural(entity),
        "icon": entity.icon or "circle",
        "hits": [_hit_view(h) for h in group.hits],
        "more": group.more,
        # the entity's main list searched for the same words: every match, in pages
        "list_url": url_for("ui_lists.view", view_name=main_view(C.catalog(), entity).name, q=text),
        "only_url": url_for("ui_search.page", q=text, entity=entity.name),
    }


def _hit_view(hit: GS.Hit) -> dict:
    entity = C.catalog().entity(hit.entity)
    snippet = None
    if hit.snippet is not None:
        snippet = {
            "label": C.label(entity.fields[hit.snippet.field]),
            "parts": hit.snippet.parts(),
        }
    return {
        "id": hit.id,
        "entity": hit.entity,
        "entity_label": C.label(entity),
        "icon": entity.icon or "circle",
        "title_parts": hit.title_parts(),
        "url": C.record_url(hit.entity, hit.id),
        "snippet": snippet,
    }


def _recent() -> list[dict]:
    hits = GS.recent(C.catalog(), C.records, C.store(), C.principal().user_id)
    return [_hit_view(h) for h in hits]


def _text() -> str:
    return request.args.get("q", "").strip()[: GS.MAX_TEXT]


@bp.get("/search/suggest")
def suggest():
    """The dropdown under the box: a few hits per entity, or the recent records."""
    text = _text()
    results = GS.search(C.catalog(), C.records, text, limit=SUGGEST_LIMIT)
    return render_template(
        "ui/_search_suggest.html",
        text=text,
        words=results.words,
        groups=[_group_view(g, text) for g in results.groups],
        recent=_recent() if not results.words else [],
    )


@bp.get("/search")
def page():
    """The results page: every entity's best hits, or more of one entity's."""
    text = _text()
    catalog = C.catalog()
    searchable = GS.searchable_entities(catalog, C.records)
    chosen = request.args.get("entity") or None
    if chosen is not None and chosen not in {e.name for e in searchable}:
        chosen = None  # an entity the user may not search is the same as none chosen
    results = GS.search(
        catalog,
        C.records,
        text,
        entities=[chosen] if chosen else None,
        limit=ENTITY_LIMIT if chosen else PAGE_LIMIT,
    )
    return render_template(
        "ui/search.html",
        text=text,
        words=results.words,
        groups=[_group_view(g, text) for g in results.groups],
        count=results.count,
        chosen=chosen,
        entities=[(e.name, C.plural(e)) for e in searchable],
        recent=_recent() if not results.words else [],
    )
