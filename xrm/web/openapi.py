"""The API's schemas and its OpenAPI 3.1 document, generated from the catalog.

Input schemas are strict marshmallow schemas assembled from the field-type registry
(``FieldType.marshmallow_field``); the API validates request bodies with them and apispec
turns them, with the output schemas below, into the OpenAPI document.  Everything is
built once per catalog version (``catalog.artifact``): a field added at run time moves the
version, so the next request sees a new document and new schemas, and nothing is ever
patched in place.  (flask-smorest's decorator style fixes schemas at import time, which
is why the document is assembled here instead.)
"""

from __future__ import annotations

from collections.abc import Iterable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

import xrm

from ..metadata import Catalog, Entity, Field
from ..metadata.fieldtypes import (
    DATE_RANGE_TEXT,
    FIELD_TYPES,
    INT64_MAX,
    MAX_DURATION,
    MOMENT_RANGE_TEXT,
)
from ..metadata.model import SYSTEM_COLUMNS

API_PREFIX = "/api/v1"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
PROBLEM_JSON = "application/problem+json"

#: Query parameters of list endpoints; any other parameter is a ``field[__op]=value`` filter.
LIST_PARAMETERS = ("filter", "sort", "fields", "limit", "q", "cursor", "count")
AGGREGATE_PARAMETERS = ("filter", "q", "group_by", "measures", "limit")
MAX_GROUPS = 1000  # groups an aggregate answers with at most

_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
#: Record ids are positive 64-bit integers.
ID_RANGE = validate.Range(min=1, max=INT64_MAX)


#: How a number field reads its input, in the words of the field's description.
NUMBER_TEXT = (
    "a JSON number (kept exact), or text read in the caller's language: 1234.5 always, "
    "and the language's own form (1,234.5 in English, 1 234,5 in Russian)"
)


class DecimalText(fields.String):
    """A decimal number written as exact text ("1234.50"), as the API returns money."""


# ------------------------------------------------------------------------ input schemas
def _with_docs(
    field_obj: fields.Field, f: Field, locale: str = "en", note: str | None = None
) -> fields.Field:
    metadata = dict(field_obj.metadata)
    metadata["title"] = f.label.get(locale)
    texts = [f.help.get(locale)] if f.help else []
    if note:  # JSON Schema has no keyword for a range of dates: say it in words
        texts.append(note)
    if texts:
        metadata["description"] = "; ".join(texts)
    field_obj.metadata = metadata
    return field_obj


def _input_field(f: Field) -> fields.Field:
    field_obj = f.kind.marshmallow_field(f)
    params = f.params
    if f.type in ("lookup", "user"):
        field_obj.validators.append(ID_RANGE)
    elif f.type == "many_to_many" and isinstance(field_obj, fields.List):
        field_obj.inner.validators.append(ID_RANGE)
    # Bounds the records service enforces anyway; stated here so clients (and the
    # generated documentation) know them before they send anything.
    if f.type == "text":
        field_obj.validators.append(validate.Length(max=params.get("max_length") or 255))
    elif f.type in ("long_text", "rich_text") and params.get("max_length"):
        field_obj.validators.append(validate.Length(max=params["max_length"]))
    elif f.type == "duration":
        field_obj.validators.append(validate.Range(min=-MAX_DURATION, max=MAX_DURATION))
    elif f.kind.numeric:
        # Numbers take JSON numbers or text that the records service reads in the
        # caller's locale, so their bounds are documented here and checked there.
        low, high = params.get("min"), params.get("max")
        if f.type == "rating":
            low, high = 0, params.get("max", 5)
        bounds = {"minimum": low, "maximum": high}
        field_obj.metadata = {
            **field_obj.metadata,
            **{k: v for k, v in bounds.items() if v is not None},
        }
    note = {"date": DATE_RANGE_TEXT, "datetime": MOMENT_RANGE_TEXT}.get(f.type)
    if f.kind.numeric and f.type != "duration":
        note = NUMBER_TEXT
    return _with_docs(field_obj, f, note=note)


def writable_fields(entity: Entity) -> list[Field]:
    return [f for f in entity.fields.values() if f.writable]


def input_schema(catalog: Catalog, entity: Entity) -> type[Schema]:
    """The strict schema of a record body (POST and PATCH): writable fields and owner."""

    def build():
        declared = {f.name: _input_field(f) for f in writable_fields(entity)}
        declared["owner"] = fields.Integer(
            allow_none=True,
            strict=True,
            validate=ID_RANGE,
            metadata={"title": "Owner", "description": "user id"},
        )
        return Schema.from_dict(declared, name=f"{entity.name}.Input")

    return catalog.artifact(("api-input-schema", entity.name), build)


def bulk_item_schema(catalog: Catalog, entity: Entity) -> type[Schema]:
    """A bulk row: a new record, or (with ``id``) changes to an existing one."""
    base = input_schema(catalog, entity)  # outside the artifact lock, which is not reentrant

    def build():
        declared = dict(base._declared_fields)
        declared["id"] = fields.Integer(
            strict=True,
            validate=ID_RANGE,
            metadata={"description": "update this record instead of creating one"},
        )
        declared["version"] = fields.Integer(
            strict=True,
            validate=validate.Range(min=1, max=INT64_MAX),
            metadata={"description": "with id: the version the change is based on"},
        )
        return Schema.from_dict(declared, name=f"{entity.name}.BulkItem")

    return catalog.artifact(("api-bulk-item-schema", entity.name), build)


# ----------------------------------------------------------------------- output schemas
class AnyLookupSchema(Schema):
    entity = fields.String(required=True)
    id = fields.Integer(required=True)


class FileSchema(Schema):
    key = fields.String(required=True)
    name = fields.String(required=True)
    size = fields.Integer(required=True)
    content_type = fields.String(required=True)


def _by_json_type(json_type: str) -> fields.Field:
    return {
        "string": fields.String,
        "integer": fields.Integer,
        "number": fields.Float,
        "boolean": fields.Boolean,
        "array": lambda **kw: fields.List(fields.Raw(), **kw),
        "object": fields.Dict,
    }.get(json_type, fields.Raw)(allow_none=True)


def output_field(f: Field) -> fields.Field | None:
    """The field as the API returns it (``FieldType.to_json``); None if not in records."""
    type_name = f.type
    if type_name in ("formula", "rollup"):
        type_name = f.params.get("result", "text" if type_name == "formula" else "decimal")
    if type_name == "children":
        return None
    kind = FIELD_TYPES.get(type_name)
    if type_name in ("decimal", "money", "percent"):
        field_obj = DecimalText(
            allow_none=True, metadata={"format": "decimal", "pattern": _DECIMAL_PATTERN}
        )
    elif type_name == "date":
        field_obj = fields.Date(allow_none=True)
    elif type_name == "datetime":
        field_obj = fields.DateTime(allow_none=True)
    elif type_name == "time":
        field_obj = fields.String(allow_none=True, metadata={"pattern": r"^[0-9]{2}:[0-9]{2}$"})
    elif type_name in ("multi_choice", "tags"):
        field_obj = fields.List(fields.String(), allow_none=True)
    elif type_name == "many_to_many":
        field_obj = fields.List(fields.Integer(), allow_none=True)
    elif type_name == "any_lookup":
        field_obj = fields.Nested(AnyLookupSchema, allow_none=True)
    elif type_name == "file":
        field_obj = fields.Nested(FileSchema, allow_none=True)
    elif type_name == "json" or kind is None:
        field_obj = fields.Raw(allow_none=True)
    else:
        field_obj = _by_json_type(kind.json_type)
    return _with_docs(field_obj, f)


def _system_fields() -> dict[str, fields.Field]:
    return {
        "id": fields.Integer(required=True, metadata={"readOnly": True}),
        "version": fields.Integer(
            required=True, metadata={"readOnly": True, "description": "increases on every change"}
        ),
        "created_at": fields.DateTime(allow_none=True, metadata={"readOnly": True}),
        "created_by": fields.Integer(allow_none=True, metadata={"readOnly": True}),
        "updated_at": fields.DateTime(allow_none=True, metadata={"readOnly": True}),
        "updated_by": fields.Integer(allow_none=True, metadata={"readOnly": True}),
        "owner": fields.Integer(allow_none=True),
    }


def record_schema(catalog: Catalog, entity: Entity) -> type[Schema]:
    def build():
        declared = _system_fields()
        for f in entity.fields.values():
            field_obj = output_field(f)
            if field_obj is not None:
                declared[f.name] = field_obj
        assert set(SYSTEM_COLUMNS) <= set(declared)
        return Schema.from_dict(declared, name=f"{entity.name}.Record")

    return catalog.artifact(("api-record-schema", entity.name), build)


# -------------------------------------------------------------------------- the document
def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str, *, validation: bool = False, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {
            PROBLEM_JSON: {"schema": _ref("ValidationProblem" if validation else "Problem")}
        },
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}},
}
_ETAG = {"ETag": {"description": "the record's version", "schema": {"type": "string"}}}


def _common_errors(*codes: int) -> dict:
    known = {
        400: _problem("malformed request: bad JSON, filter, sort, fields or cursor"),
        401: _problem("no valid credentials"),
        403: _problem("not permitted for this user"),
        404: _problem("no such record or relation"),
        409: _problem("the record changed during the request"),
        412: _problem("If-Match does not match the record's current version"),
        413: _problem("request body too large"),
        415: _problem("request body is not JSON"),
        422: _problem("the record is not valid", validation=True),
        429: _problem("rate limit exceeded", headers=_RETRY_AFTER),
    }
    return {str(c): known[c] for c in sorted({*codes, 400, 401, 429})}


def _id_parameter() -> dict:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
        "description": "record id",
    }


def _if_match() -> dict:
    return {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "the ETag of the version the change is based on; 412 when stale",
    }


def _list_parameters() -> list[dict]:
    return [
        {
            "name": "filter",
            "in": "query",
            "schema": {"type": "string"},
            "description": (
                'a filter-language tree as JSON, e.g. ["stage","eq","won"] or '
                '{"all": [...]}.  Simple conditions may also be given as further query '
                "parameters: field=value (eq) and field__op=value (op); lists for in, "
                "not_in and between are comma-separated.  Dotted paths walk lookups."
            ),
        },
        {
            "name": "sort",
            "in": "query",
            "schema": {"type": "string"},
            "description": "comma-separated fields, '-' for descending: -amount,name",
        },
        {
            "name": "fields",
            "in": "query",
            "schema": {"type": "string"},
            "description": "comma-separated fields to return; dotted paths walk lookups",
        },
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "q",
            "in": "query",
            "schema": {"type": "string"},
            "description": "full-text search",
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "next_cursor of the previous page",
        },
        {
            "name": "count",
            "in": "query",
            "schema": {"type": "boolean", "default": True},
            "description": "false skips counting (count is then null)",
        },
    ]


def _json_body(schema_name: str, description: str = "") -> dict:
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _entity_paths(spec: APISpec, catalog: Catalog, entity: Entity, locale: str) -> None:
    name = entity.name
    label, plural = entity.label.get(locale), entity.plural.get(locale)
    tag = name
    record, page = f"{name}.Record", f"{name}.Page"
    ok_record = {
        "description": label,
        "headers": _ETAG,
        "content": {"application/json": {"schema": _ref(record)}},
    }
    ok_page = {"description": plural, "content": {"application/json": {"schema": _ref(page)}}}
    base = f"{API_PREFIX}/{name}"
    spec.path(
        path=base,
        operations={
            "get": {
                "tags": [tag],
                "operationId": f"list_{name}",
                "summary": f"List {plural}",
                "parameters": _list_parameters(),
                "responses": {"200": ok_page, **_common_errors(400, 403)},
            },
            "post": {
                "tags": [tag],
                "operationId": f"create_{name}",
                "summary": f"Create {_a(label)}",
                **_duplicate_check(entity),
                "requestBody": _json_body(f"{name}.Input"),
                "responses": {
                    "201": {
                        **ok_record,
                        "headers": {
                            **_ETAG,
                            "Location": {
                                "description": "the new record",
                                "schema": {"type": "string"},
                            },
                        },
                    },
                    **_common_errors(400, 403, 409, 413, 415, 422),
                    **_duplicate_refused(entity),
                },
            },
        },
    )
    if entity.duplicates:
        _duplicates_path(spec, entity, tag, plural)
    spec.path(
        path=f"{base}/bulk",
        operations={
            "post": {
                "tags": [tag],
                "operationId": f"bulk_{name}",
                "summary": f"Create or update many {plural}",
                "description": (
                    "Rows without id are created, rows with id are updated.  Unless "
                    "partial is true, one invalid row means nothing is written (422 with "
                    "every row's errors); with partial, valid rows are written and the bad "
                    "ones reported."
                ),
                "requestBody": _json_body(f"{name}.BulkRequest"),
                "responses": {
                    "200": {
                        "description": "some rows failed (partial)",
                        "content": {"application/json": {"schema": _ref("BulkResult")}},
                    },
                    "201": {
                        "description": "every row was written",
                        "content": {"application/json": {"schema": _ref("BulkResult")}},
                    },
                    **_common_errors(400, 403, 409, 413, 415, 422),
                },
            }
        },
    )
    spec.path(
        path=f"{base}/{{id}}",
        parameters=[_id_parameter()],
        operations={
            "get": {
                "tags": [tag],
                "operationId": f"get_{name}",
                "summary": f"Read {_a(label)}",
                "parameters": [_list_parameters()[2]],
                "responses": {"200": ok_record, **_common_errors(400, 403, 404)},
            },
            "patch": {
                "tags": [tag],
                "operationId": f"update_{name}",
                "summary": f"Change {_a(label)}",
                "parameters": [_if_match()],
                "requestBody": _json_body(f"{name}.Input", "the fields to change"),
                "responses": {
                    "200": ok_record,
                    **_common_errors(400, 403, 404, 409, 412, 413, 415, 422),
                },
            },
            "delete": {
                "tags": [tag],
                "operationId": f"delete_{name}",
                "summary": f"Delete {_a(label)}",
                "parameters": [_if_match()],
                "responses": {
                    "204": {"description": "deleted"},
                    **_common_errors(400, 403, 404, 409, 412, 422),
                },
            },
        },
    )
    spec.path(
        path=f"{base}/aggregate",
        operations={
            "get": {
                "tags": [tag],
                "operationId": f"aggregate_{name}",
                "summary": f"Group and measure {plural}",
                "description": (
                    "Groups (fields, dotted paths through lookups, dates in buckets: "
                    "close_date:month; day, week, month, quarter, year; datetimes in the "
                    "caller's time zone) and measures (count, sum:F, avg:F, min:F, max:F, "
                    "distinct:F, weighted:F*W/N: the sum of F times W divided by N) over the records the caller may read, with the list's "
                    "filter and search.  Each row maps the group and measure strings to "
                    "values: a bucket is the date it starts on, sums of decimals are strings."
                ),
                "parameters": [
                    _list_parameters()[0],
                    _list_parameters()[4],
                    {
                        "name": "group_by",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "comma-separated groups: stage,close_date:month",
                    },
                    {
                        "name": "measures",
                        "in": "query",
                        "schema": {"type": "string", "default": "count"},
                        "description": "comma-separated measures: count,sum:amount",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_GROUPS,
                            "default": MAX_GROUPS,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "one row per group, sorted by the groups",
                        "content": {"application/json": {"schema": _ref("Aggregate")}},
                    },
                    **_common_errors(400, 403),
                },
            }
        },
    )
    for relation, target in relations(catalog, entity):
        spec.path(
            path=f"{base}/{{id}}/{relation.name}",
            parameters=[_id_parameter()],
            operations={
                "get": {
                    "tags": [tag],
                    "operationId": f"related_{name}_{relation.name}",
                    "summary": f"{relation.label.get(locale)} of {_a(label)}",
                    "parameters": _list_parameters(),
                    "responses": {
                        "200": {
                            "description": target.plural.get(locale),
                            "content": {
                                "application/json": {"schema": _ref(f"{target.name}.Page")}
                            },
                        },
                        **_common_errors(400, 403, 404),
                    },
                }
            },
        )


def relations(catalog: Catalog, entity: Entity) -> Iterable[tuple[Field, Entity]]:
    """The fields of an entity that name a related list: children and many-to-many."""
    for f in entity.fields.values():
        if f.type in ("children", "many_to_many"):
            target = catalog.entity_of(f.target or "")
            if target is not None:
                yield f, target


def _duplicate_check(entity: Entity) -> dict:
    """The create operation's duplicate check, for an entity with duplicate rules."""
    if not entity.duplicates:
        return {}
    rules = ", ".join(rule.name for rule in entity.duplicates)
    return {
        "description": (
            f"Duplicate rules ({rules}) are checked.  By default the record is created and "
            "the 201 body carries `_warnings`: `[{code: possible_duplicates, message, "
            "candidates: [DuplicateCandidate]}]` when likely duplicates exist (the "
            "records the caller may read).  With `on_duplicate=refuse` nothing is "
            "created when there are candidates: 409 with `candidates`."
        ),
        "parameters": [
            {
                "name": "on_duplicate",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["warn", "refuse"], "default": "warn"},
                "description": "warn: create and list the candidates; refuse: 409 instead",
            }
        ],
    }


def _duplicate_refused(entity: Entity) -> dict:
    if not entity.duplicates:
        return {}
    return {
        "409": {
            "description": (
                "on_duplicate=refuse and likely duplicates exist (problem type "
                "urn:xrm:problem:possible-duplicates, with candidates); or the record "
                "changed during the request"
            ),
            "content": {PROBLEM_JSON: {"schema": _ref("DuplicatesProblem")}},
        }
    }


def _duplicates_path(spec: APISpec, entity: Entity, tag: str, plural: str) -> None:
    matched = sorted({name for rule in entity.duplicates for name in rule.fields})
    parameters = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "a value to match, as text",
        }
        for name in matched
    ]
    parameters += [
        {
            "name": "exclude",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
            "description": "a record id left out (the record being edited)",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        },
    ]
    spec.path(
        path=f"{API_PREFIX}/{entity.name}/duplicates",
        operations={
            "get": {
                "tags": [tag],
                "operationId": f"duplicates_{entity.name}",
                "summary": f"Find likely duplicates among {plural}",
                "description": (
                    "Records matching the given values by any duplicate rule, best first: "
                    "exact rules score 1, fuzzy rules their similarity.  Only records the "
                    "caller may read, by rules over fields they may read."
                ),
                "parameters": parameters,
                "responses": {
                    "200": {
                        "description": "the candidates",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {
                                            "type": "array",
                                            "items": _ref("DuplicateCandidate"),
                                        }
                                    },
                                }
                            }
                        },
                    },
                    **_common_errors(400, 403),
                },
            }
        },
    )


def _page_schema(entity: Entity) -> dict:
    return {
        "type": "object",
        "required": ["data", "next_cursor", "count"],
        "properties": {
            "data": {"type": "array", "items": _ref(f"{entity.name}.Record")},
            "next_cursor": {"type": ["string", "null"]},
            "count": {"anyOf": [_ref("Count"), {"type": "null"}]},
        },
    }


def _bulk_request_schema(entity: Entity) -> dict:
    return {
        "type": "object",
        "required": ["records"],
        "additionalProperties": False,
        "properties": {
            "records": {
                "type": "array",
                "maxItems": MAX_LIMIT,
                "items": _ref(f"{entity.name}.BulkItem"),
            },
            "partial": {"type": "boolean", "default": False},
        },
    }


_SHARED_SCHEMAS = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
    },
    "ValidationProblem": {
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {
                "type": "object",
                "properties": {
                    "errors": {
                        "type": "object",
                        "description": "field -> messages (__all__: the record as a whole)",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                    "failures": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/BulkFailure"},
                    },
                },
            },
        ]
    },
    "DuplicateCandidate": {
        "type": "object",
        "description": "a record that is likely the same as the one given",
        "required": ["id", "title", "score", "rules", "values", "href"],
        "properties": {
            "id": {"type": "integer"},
            "title": {"type": "string"},
            "score": {"type": "number", "description": "1 for exact rules; fuzzy similarity"},
            "rules": {"type": "array", "items": {"type": "string"}},
            "values": {"type": "object", "description": "the matched fields' values"},
            "href": {"type": "string"},
        },
    },
    "DuplicatesProblem": {
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {
                "type": "object",
                "properties": {
                    "candidates": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/DuplicateCandidate"},
                    },
                    "current_version": {"type": "integer"},
                },
            },
        ]
    },
    "Count": {
        "type": "object",
        "required": ["value", "exact"],
        "properties": {"value": {"type": "integer"}, "exact": {"type": "boolean"}},
    },
    "BulkFailure": {
        "type": "object",
        "required": ["index", "errors"],
        "properties": {
            "index": {"type": "integer"},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "Aggregate": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "group and measure strings to values",
                    "additionalProperties": {
                        "type": ["string", "integer", "number", "boolean", "null"]
                    },
                },
            }
        },
    },
    "BulkResult": {
        "type": "object",
        "required": ["created", "updated", "failures"],
        "properties": {
            "created": {"type": "array", "items": {"type": "integer"}},
            "updated": {"type": "array", "items": {"type": "integer"}},
            "failures": {"type": "array", "items": {"$ref": "#/components/schemas/BulkFailure"}},
        },
    },
}

_LABELLED = {"type": "string"}
_META_SCHEMAS = {
    "meta.Option": {
        "type": "object",
        "required": ["value", "label"],
        "properties": {
            "value": {"type": "string"},
            "label": _LABELLED,
            "color": {"type": ["string", "null"]},
        },
    },
    "meta.Field": {
        "type": "object",
        "required": ["name", "type", "label", "required", "read_only"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "label": _LABELLED,
            "help": {"type": ["string", "null"]},
            "required": {"type": "boolean"},
            "read_only": {"type": "boolean"},
            "computed": {"type": "boolean"},
            "system": {"type": "boolean"},
            "json_type": {"type": "string"},
            "target": {"type": ["string", "null"]},
            "choices": {"type": "array", "items": _ref("meta.Option")},
            "operators": {"type": "array", "items": {"type": "string"}},
            "sortable": {"type": "boolean"},
            "searchable": {"type": "boolean"},
            "params": {"type": "object"},
        },
    },
    "meta.View": {
        "type": "object",
        "required": ["name", "entity", "label", "kind"],
        "properties": {
            "name": {"type": "string"},
            "entity": {"type": "string"},
            "label": _LABELLED,
            "kind": {"type": "string"},
            "columns": {"type": "array", "items": {"type": "string"}},
            "filter": {},
            "sort": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "quick_filters": {"type": "array", "items": {"type": "string"}},
            "group_by": {"type": ["string", "null"]},
            "card": {"type": "array", "items": {"type": "string"}},
            "date_field": {"type": ["string", "null"]},
            "end_field": {"type": ["string", "null"]},
            "parent": {"type": ["string", "null"]},
        },
    },
    "meta.EntitySummary": {
        "type": "object",
        "required": ["name", "label", "plural"],
        "properties": {
            "name": {"type": "string"},
            "label": _LABELLED,
            "plural": _LABELLED,
            "description": {"type": ["string", "null"]},
            "icon": {"type": ["string", "null"]},
            "title": {"type": ["string", "null"]},
            "solution": {"type": "string"},
            "permissions": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "meta.Entity": {
        "allOf": [
            _ref("meta.EntitySummary"),
            {
                "type": "object",
                "properties": {
                    "fields": {"type": "array", "items": _ref("meta.Field")},
                    "views": {"type": "array", "items": _ref("meta.View")},
                    "relations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "entity": {"type": "string"},
                                "via": {"type": ["string", "null"]},
                                "kind": {"type": "string"},
                                "label": _LABELLED,
                            },
                        },
                    },
                    "search": {"type": "boolean"},
                },
            },
        ]
    },
    "meta.OptionSet": {
        "type": "object",
        "required": ["name", "label", "options"],
        "properties": {
            "name": {"type": "string"},
            "label": _LABELLED,
            "options": {"type": "array", "items": _ref("meta.Option")},
        },
    },
    "meta.Index": {
        "type": "object",
        "required": ["catalog_version", "locale", "entities"],
        "properties": {
            "catalog_version": {"type": "integer"},
            "locale": {"type": "string"},
            "user": {"type": ["object", "null"]},
            "entities": {"type": "array", "items": _ref("meta.EntitySummary")},
            "csrf_token": {"type": ["string", "null"]},
        },
    },
}


def _meta_paths(spec: APISpec) -> None:
    def ok(schema: dict, description: str = "OK") -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    meta = f"{API_PREFIX}/meta"
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    spec.path(
        path=meta,
        operations={
            "get": {
                "tags": ["meta"],
                "operationId": "meta",
                "summary": "The catalog version, the user and the entities they may see",
                "responses": {"200": ok(_ref("meta.Index")), **_common_errors()},
            }
        },
    )
    for kind, item, summary in (
        ("entities", "meta.Entity", "Entities with their fields, views and relations"),
        ("option_sets", "meta.OptionSet", "Option sets (choice lists)"),
        ("views", "meta.View", "List, kanban and calendar views"),
    ):
        listed = "meta.EntitySummary" if kind == "entities" else item
        spec.path(
            path=f"{meta}/{kind}",
            operations={
                "get": {
                    "tags": ["meta"],
                    "operationId": f"meta_{kind}",
                    "summary": summary,
                    "responses": {
                        "200": ok({"type": "array", "items": _ref(listed)}),
                        **_common_errors(),
                    },
                }
            },
        )
        spec.path(
            path=f"{meta}/{kind}/{{name}}",
            parameters=[name_param],
            operations={
                "get": {
                    "tags": ["meta"],
                    "operationId": f"meta_{kind}_one",
                    "summary": summary.split(" ")[0].rstrip("s"),
                    "responses": {"200": ok(_ref(item)), **_common_errors(404)},
                }
            },
        )


def build_document(catalog: Catalog, locale: str = "en") -> dict:
    """The OpenAPI 3.1 document of the API as this catalog defines it."""
    plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)
    spec = APISpec(
        title="xrm API",
        version=f"{xrm.__version__}+catalog.{catalog.version}",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": (
                "Records of every entity in the installed solution packs.  Errors are "
                "RFC 9457 problem documents; lists use keyset pagination (next_cursor); "
                "responses carry the record version as ETag, and PATCH/DELETE honour "
                "If-Match.  Number fields take JSON numbers (decimals are kept exact, "
                "never rounded through a float) or text read in the language of the "
                "token's user: the machine form 1234.5 always; in English 1,234.5; in "
                "Russian 1 234,5; spaces group digits in every language; a wrong grouping "
                "(1,5 in English) is refused, never guessed."
            )
        },
        security=[{"bearer": []}],
    )
    spec.components.security_scheme(
        "bearer",
        {"type": "http", "scheme": "bearer", "description": "an API token of a user"},
    )
    for name, schema in {**_SHARED_SCHEMAS, **_META_SCHEMAS}.items():
        spec.components.schema(name, component=schema)
    spec.components.schema("AnyLookup", schema=AnyLookupSchema)
    spec.components.schema("File", schema=FileSchema)
    entities = sorted(catalog.entities.values(), key=lambda e: e.name)
    for entity in entities:
        spec.components.schema(f"{entity.name}.Record", schema=record_schema(catalog, entity))
        spec.components.schema(f"{entity.name}.Input", schema=input_schema(catalog, entity))
        spec.components.schema(f"{entity.name}.BulkItem", schema=bulk_item_schema(catalog, entity))
        spec.components.schema(f"{entity.name}.Page", component=_page_schema(entity))
        spec.components.schema(f"{entity.name}.BulkRequest", component=_bulk_request_schema(entity))
        spec.tag({"name": entity.name, "description": entity.plural.get(locale)})
    spec.tag({"name": "meta", "description": "what the catalog defines"})
    for entity in entities:
        _entity_paths(spec, catalog, entity, locale)
    _meta_paths(spec)
    from . import (  # outside the records API
        api_dashboards,
        api_merge,
        api_reports,
        api_search,
        api_wizards,
        api_workflow,
        hooks,
    )

    api_workflow.document(spec)
    api_reports.document(spec, catalog)
    api_dashboards.document(spec, catalog)
    api_merge.document(spec, catalog)
    api_search.document(spec)
    api_wizards.document(spec, catalog)
    hooks.document(spec)
    document = spec.to_dict()
    _close_objects(document)
    return document


def _close_objects(document: dict) -> None:
    """Record bodies refuse unknown keys; records returned may carry dotted lookup paths."""
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        if name.endswith((".Input", ".BulkItem")):
            schema["additionalProperties"] = False
        elif name.endswith(".Record"):
            schema["additionalProperties"] = True


def document_for(catalog: Catalog, locale: str = "en") -> dict:
    """The document, built once per catalog version (and locale)."""
    # The schemas are cached first: a builder that asks catalog.artifact for another
    # artifact while holding its lock would wait for itself.
    for entity in catalog.entities.values():
        record_schema(catalog, entity)
        bulk_item_schema(catalog, entity)
    return catalog.artifact(("openapi", locale), lambda: build_document(catalog, locale))
