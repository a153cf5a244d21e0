"""Global search in the REST API: ``GET /api/v1/search?q=...&entities=...&limit=...``.

The text is looked up in every entity the caller may read that has searchable fields
(``xrm.storage.global_search``), through the caller's records services: records and
fields they may not read are neither matched nor shown.  The answer groups the hits by
entity, best first; each hit has its title and a snippet of the field that matched with
the matched words' offsets (plain text and numbers: a client marks them up itself).
Without ``q`` the answer is the caller's recent records.
"""

from __future__ import annotations

from flask import Blueprint, g, request

from ..storage import global_search as GS
from . import current_store, openapi
from .api import guard_api, json_response, locale, records_for
from .problems import BAD_REQUEST, Problem

bp = Blueprint("api_search", __name__, url_prefix=openapi.API_PREFIX)

guard_api(bp)


def _entities_arg() -> list[str] | None:
    names = [n.strip() for raw in request.args.getlist("entities") for n in raw.split(",")]
    names = [n for n in names if n]
    return names or None


def _limit_arg() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return GS.DEFAULT_LIMIT
    try:
        return int(raw)
    except ValueError:
        raise Problem(
            400, f"limit must be a whole number from 1 to {GS.MAX_LIMIT}", type=BAD_REQUEST
        ) from None


def _snippet_json(entity, snippet: GS.Snippet | None):
    if snippet is None:
        return None
    field = entity.fields[snippet.field]
    return {
        "field": snippet.field,
        "label": field.label.get(locale()),
        "text": snippet.text,
        "highlights": [list(m) for m in snippet.marks],
    }


def _hit_json(hit: GS.Hit, searched: bool = True) -> dict:
    entity = g.catalog.entity(hit.entity)
    out = {
        "entity": hit.entity,
        "id": hit.id,
        "title": hit.title,
        "title_highlights": [list(m) for m in hit.title_marks],
        "url": f"{request.script_root}{openapi.API_PREFIX}/{hit.entity}/{hit.id}",
    }
    if searched:
        out["rank"] = hit.rank
        out["snippet"] = _snippet_json(entity, hit.snippet)
    return out


def _plural(entity) -> str:
    return (entity.plural or entity.label).get(locale())


@bp.get("/search")
def search():
    text = request.args.get("q", "")
    entities = _entities_arg()
    limit = _limit_arg()
    try:
        results = GS.search(g.catalog, records_for, text, entities=entities, limit=limit)
    except GS.SearchError as exc:
        raise Problem(400, str(exc), type=BAD_REQUEST, parameter=exc.parameter) from None
    body: dict = {
        "query": results.text,
        "words": list(results.words),
        "groups": [
            {
                "entity": group.entity,
                "label": _plural(g.catalog.entity(group.entity)),
                "hits": [_hit_json(h) for h in group.hits],
                "more": group.more,
            }
            for group in results.groups
        ],
    }
    if not results.words:
        hits = GS.recent(g.catalog, records_for, current_store(), g.principal.user_id)
        if entities:
            hits = [h for h in hits if h.entity in entities]
        body["recent"] = [_hit_json(h, searched=False) for h in hits]
    return json_response(body)


def document(spec) -> None:
    """Add the search endpoint to the API's OpenAPI document."""
    spec.tag({"name": "search", "description": "global search over every readable entity"})
    highlights = {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "description": "[start, end) character offsets of the matched words",
    }
    spec.components.schema(
        "search.Hit",
        component={
            "type": "object",
            "required": ["entity", "id", "title", "title_highlights", "url"],
            "properties": {
                "entity": {"type": "string"},
                "id": {"type": "integer"},
                "title": {"type": "string", "description": "the record's title, else #id"},
                "title_highlights": highlights,
                "url": {"type": "string", "description": "the record in this API"},
                "rank": {"type": "number", "description": "higher matches better"},
                "snippet": {
                    "type": ["object", "null"],
                    "description": "the first other searched field where a word matched",
                    "required": ["field", "label", "text", "highlights"],
                    "properties": {
                        "field": {"type": "string"},
                        "label": {"type": "string"},
                        "text": {"type": "string"},
                        "highlights": highlights,
                    },
                },
            },
        },
    )
    spec.components.schema(
        "search.Result",
        component={
            "type": "object",
            "required": ["query", "words", "groups"],
            "properties": {
                "query": {"type": "string"},
                "words": {"type": "array", "items": {"type": "string"}},
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["entity", "label", "hits", "more"],
                        "properties": {
                            "entity": {"type": "string"},
                            "label": {"type": "string"},
                            "hits": {"type": "array", "items": openapi._ref("search.Hit")},
                            "more": {"type": "boolean", "description": "more hits than limit"},
                        },
                    },
                },
                "recent": {
                    "type": "array",
                    "items": openapi._ref("search.Hit"),
                    "description": "without q: the records the caller opened lately",
                },
            },
        },
    )
    spec.path(
        path=f"{openapi.API_PREFIX}/search",
        operations={
            "get": {
                "tags": ["search"],
                "operationId": "global_search",
                "summary": "Search every entity the caller may read",
                "description": "Each word of q matches the start of a word in a searchable "
                "field the caller may read; a record matches when every word does. Hits "
                "are grouped by entity, best first (a match in the title weighs most). "
                "Without q (or with no word in it) the answer lists the caller's recent "
                "records instead.",
                "parameters": [
                    {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "entities",
                        "in": "query",
                        "required": False,
                        "description": "only these entities (names separated by commas)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "hits per entity",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": GS.MAX_LIMIT,
                            "default": GS.DEFAULT_LIMIT,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the hits, grouped by entity",
                        "content": {"application/json": {"schema": openapi._ref("search.Result")}},
                    },
                    "400": openapi._problem("an unknown entity or a limit out of range"),
                    "401": openapi._problem("no valid credentials"),
                },
            }
        },
    )
