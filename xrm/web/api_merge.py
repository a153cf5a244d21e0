"""Merging duplicate records in the REST API: ``POST /api/v1/<entity>/<id>/merge`` merges
the record ``from`` into record ``id`` (the one kept) with the values chosen, and ``POST
/api/v1/<entity>/merges/<merge>/undo`` undoes a merge.  Both are ``xrm.storage.merge`` as
the caller: update on the kept record and delete on the other (create to undo)."""

from __future__ import annotations

from flask import Blueprint, g

from ..metadata.problems import did_you_mean
from ..storage import merge as M
from ..storage.records import NotFound, ValidationFailed
from . import current_store, openapi
from .api import _fresh, _record_errors, entity_or_404, guard_api, json_object, json_response
from .problems import BAD_REQUEST, CONFLICT, Problem, validation_failed

bp = Blueprint("api_merge", __name__, url_prefix=openapi.API_PREFIX)

guard_api(bp)

MERGE_KEYS = ("from", "values", "take")


@bp.errorhandler(ValidationFailed)
def _invalid(exc: ValidationFailed):
    return validation_failed(_record_errors(exc.errors)).response()


@bp.errorhandler(M.MergeRefused)
def _refused(exc: M.MergeRefused):
    return Problem(409, str(exc), type=CONFLICT).response()


@bp.post("/<entity_name>/<recid:record_id>/merge")
def merge_record(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    body = json_object()
    for key in body:
        if key not in MERGE_KEYS:
            raise Problem(
                400, f"unknown key {key!r}{did_you_mean(key, MERGE_KEYS)}", type=BAD_REQUEST
            )
    other = body.get("from")
    if not isinstance(other, int) or isinstance(other, bool) or not 0 < other <= openapi.INT64_MAX:
        raise Problem(400, "from: the id of the record to merge into this one", type=BAD_REQUEST)
    values = body.get("values") or {}
    if not isinstance(values, dict):
        raise Problem(400, "values: an object of field values", type=BAD_REQUEST)
    take = body.get("take") or []
    if not isinstance(take, list) or not all(isinstance(n, str) for n in take):
        raise Problem(400, "take: a list of field names", type=BAD_REQUEST)
    result = M.merge(
        current_store(),
        entity.name,
        record_id,
        other,
        values=values,
        take=take,
        principal=g.principal,
    )
    record, tag = _fresh(entity, record_id, result.master)
    return json_response(
        {"merge": result.merge_id, "record": record, "moved": result.moved}, headers={"ETag": tag}
    )


@bp.post("/<entity_name>/merges/<recid:merge_id>/undo")
def undo_merge(entity_name: str, merge_id: int):
    entity = entity_or_404(entity_name)
    if M.load(current_store(), entity.name, merge_id, principal=g.principal) is None:
        raise NotFound(f"{entity.name} merge", merge_id)
    result = M.undo(current_store(), entity.name, merge_id, principal=g.principal)
    return json_response(
        {
            "merge": result.merge_id,
            "restored": result.restored_id,
            "kept": result.kept,
            "moved_back": result.moved_back,
        }
    )


# ------------------------------------------------------------------------ OpenAPI document
def document(spec, catalog) -> None:
    """The merge endpoints of the entities with duplicate rules (the endpoints serve every
    entity; the document names those where merging is offered)."""
    spec.components.schema(
        "MergeRequest",
        component={
            "type": "object",
            "required": ["from"],
            "additionalProperties": False,
            "properties": {
                "from": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": openapi.INT64_MAX,
                    "description": "the record merged into this one, then removed",
                },
                "values": {
                    "type": "object",
                    "description": "values for the kept record (as in a PATCH)",
                },
                "take": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "fields whose value comes from the other record",
                },
            },
        },
    )
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    spec.components.schema(
        "MergeResult",
        component={
            "type": "object",
            "required": ["merge", "record", "moved"],
            "properties": {
                "merge": {"type": "integer", "description": "the merge's id (to undo it)"},
                "record": {"type": "object", "description": "the kept record"},
                "moved": {**counts, "description": "entity -> records moved to the kept one"},
            },
        },
    )
    spec.components.schema(
        "UndoResult",
        component={
            "type": "object",
            "required": ["merge", "restored", "kept", "moved_back"],
            "properties": {
                "merge": {"type": "integer"},
                "restored": {"type": "integer", "description": "the restored record's id"},
                "kept": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "fields of the kept record changed since the merge, kept",
                },
                "moved_back": counts,
            },
        },
    )
    ident = {"type": "integer", "minimum": 1, "maximum": openapi.INT64_MAX}
    for entity in sorted(catalog.entities.values(), key=lambda e: e.name):
        if not entity.duplicates:
            continue
        base = f"{openapi.API_PREFIX}/{entity.name}"
        errors = openapi._common_errors(400, 403, 404, 413, 415)
        conflict = openapi._problem("the merge cannot be done (the reason is given)")
        spec.path(
            path=f"{base}/{{id}}/merge",
            operations={
                "post": {
                    "tags": [entity.name],
                    "operationId": f"merge_{entity.name}",
                    "summary": f"Merge another {entity.name} into this one",
                    "description": (
                        "The record `from` is merged into record `id`, which is kept: it "
                        "takes `values` and the `take` fields of the other record (its own "
                        "values otherwise); everything that points at the other record "
                        "moves to it; the other record is removed.  Needs update on the "
                        "kept record and delete on the other.  Undo with "
                        f"POST {base}/merges/{{merge}}/undo."
                    ),
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": ident}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": openapi._ref("MergeRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "merged",
                            "content": {
                                "application/json": {"schema": openapi._ref("MergeResult")}
                            },
                        },
                        **errors,
                        "409": conflict,
                        "422": openapi._problem("a value is refused", validation=True),
                    },
                }
            },
        )
        undo_errors = openapi._common_errors(400, 403, 404)
        spec.path(
            path=f"{base}/merges/{{merge}}/undo",
            operations={
                "post": {
                    "tags": [entity.name],
                    "operationId": f"undo_merge_{entity.name}",
                    "summary": f"Undo a merge of {entity.name} records",
                    "description": (
                        "The removed record comes back with its id and values; the kept "
                        "record's values the merge wrote are reverted unless changed since "
                        "(listed in `kept`); what moved and still points at the kept record "
                        "moves back.  Needs update on the kept record and create."
                    ),
                    "parameters": [
                        {"name": "merge", "in": "path", "required": True, "schema": ident}
                    ],
                    "responses": {
                        "200": {
                            "description": "undone",
                            "content": {"application/json": {"schema": openapi._ref("UndoResult")}},
                        },
                        **undo_errors,
                        "409": conflict,
                        "422": openapi._problem("a value is refused", validation=True),
                    },
                }
            },
        )
