"""The REST API under ``/api/v1``: records of every entity, their related lists, and
metadata describing the catalog to clients.

Routes are generic (``/<entity>/...``) and resolve against the catalog of the request, so
an entity or field added at run time is served at once with no restart.  The API is a
thin layer: request bodies are checked by strict per-catalog marshmallow schemas
(``openapi.input_schema``), then every read and write goes through the records service
for the signed-in principal, which applies row scopes, field rules and validation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from marshmallow import ValidationError

from ..metadata import Entity, Field, UnknownEntity
from ..metadata.fieldtypes import (
    ALL_OPS,
    EMPTY_OPS,
    RELATIVE_DATE_OPS,
    RELATIVE_N_OPS,
    CoercionError,
)
from ..metadata.filters import (
    All,
    AnyOf,
    Condition,
    CurrentUser,
    FilterError,
    Not,
    resolve_path,
    system_field,
)
from ..metadata.model import SYSTEM_COLUMNS
from ..metadata.problems import did_you_mean
from ..storage.files import check_file_values
from ..storage.query import BadCursor, search_fields
from ..storage.records import (
    ALL_KEY,
    SETTABLE_SYSTEM,
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from ..storage.security import Access
from . import current_store, openapi, openapi_scope
from .auth import authenticate_api
from .problems import (
    BAD_CURSOR,
    BAD_FILTER,
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    STALE,
    Problem,
    validation_failed,
)
from .routing import use_record_ids

bp = Blueprint("api", __name__, url_prefix=openapi.API_PREFIX)
docs = Blueprint("api_docs", __name__, url_prefix="/api")

JSON = "application/json"
DUPLICATES = "urn:xrm:problem:possible-duplicates"
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ request set-up
def guard_api(blueprint: Blueprint) -> None:
    """What every API blueprint does: authenticate each request, refuse NUL characters in
    the query, and answer NotFound and Forbidden as problem documents.  Its routes may
    take record ids as ``<recid:...>`` (out-of-range ids match no route: 404)."""
    use_record_ids(blueprint)

    @blueprint.before_request
    def _authenticate():
        authenticate_api()  # g.catalog is set by the application's first before_request
        for name, value in request.args.items(multi=True):
            if "\x00" in name or "\x00" in value:
                raise Problem(
                    400, "query parameters may not contain NUL characters", type=BAD_REQUEST
                )

    @blueprint.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        return Problem(404, str(exc), type=NOT_FOUND).response()

    @blueprint.errorhandler(Forbidden)
    def _forbidden(exc: Forbidden):
        return Problem(403, str(exc), type=FORBIDDEN).response()


guard_api(bp)


def records_for(entity: Entity | str):
    """The records service of an entity as the request's principal sees it."""
    name = entity if isinstance(entity, str) else entity.name
    cache = g.setdefault("records", {})
    if name not in cache:
        cache[name] = current_store().records(name, principal=g.principal)
    return cache[name]


def entity_or_404(name: str) -> Entity:
    entity = g.catalog.entity_of(name)
    if entity is None:
        raise Problem(
            404,
            f"unknown entity {name!r}{did_you_mean(name, g.catalog.entities)}",
            type=NOT_FOUND,
        )
    return entity


def locale() -> str:
    return g.principal.locale or "en"


def _readable(records) -> set[str]:
    """Field names the principal may read (hidden fields left out)."""
    return set(records.readable_fields())


def _writable(records) -> set[str]:
    return set(records.writable_fields())


# ------------------------------------------------------------------------ serialization
def _value_json(f: Field, value):
    if value is None:
        return None
    return f.kind.to_json(f, value)


class Serializer:
    """Records as JSON objects: each value through its field type's ``to_json``."""

    def __init__(self, entity: Entity, readable: set[str], paths: list[str] | None = None):
        self.fields: dict[str, Field] = {
            name: system_field(entity.name, name) for name in SYSTEM_COLUMNS
        }
        for name, f in entity.fields.items():
            if f.type != "children" and name in readable:
                self.fields[name] = f
        for path in paths or ():
            if "." in path:
                self.fields[path] = resolve_path(entity, path, g.catalog.entity_of)[0]

    def __call__(self, record: Mapping[str, Any]) -> dict:
        fields = self.fields
        return {
            key: _value_json(fields[key], value) for key, value in record.items() if key in fields
        }


def json_response(payload, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    response = Response(body, status=status, mimetype=JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def etag(record: Mapping) -> str:
    return f'"{record["version"]}"'


# ------------------------------------------------------------------------ reading input
def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _exact_number(text: str) -> Decimal | float:
    """A JSON number with a fraction or an exponent, exactly; one whose exponent no
    Decimal holds (1e99999999999999999999) becomes the float it always was (infinity or
    zero), which the field types refuse or take as before."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return float(text)


def json_body(exact: bool = False) -> Any:
    """The request's JSON body; 415 if it is not JSON, 400 if it does not parse.  With
    ``exact``, numbers with a fraction or an exponent are Decimals, not floats (a float
    would round 12345678901234.5678 before a decimal field saw it)."""
    if not request.mimetype or not (request.mimetype == JSON or request.mimetype.endswith("+json")):
        raise Problem(415, "send the body as application/json", type=BAD_REQUEST)
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    try:
        return json.loads(
            raw, parse_constant=_reject_constant, parse_float=_exact_number if exact else None
        )
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "bad JSON"
        raise Problem(400, f"malformed JSON: {detail}", type=BAD_REQUEST) from None


def _bad_text(value) -> bool:
    """Text no database column can hold: NUL characters (PostgreSQL refuses them) or
    unpaired surrogates (not Unicode, so not encodable as UTF-8)."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problems(value, path: str = "") -> dict[str, list[str]]:
    """Every place in a parsed body holding text that cannot be stored, by dotted path."""
    found: dict[str, list[str]] = {}
    if isinstance(value, str):
        if _bad_text(value):
            found[path or "__all__"] = [
                "text may not contain NUL characters or unpaired surrogates"
            ]
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _bad_text(str(key)):
                found[path or "__all__"] = [
                    "member names may not contain NUL or unpaired surrogates"
                ]
                continue
            found.update(text_problems(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(text_problems(item, f"{path}.{index}" if path else str(index)))
    return found


def json_object(exact: bool = False) -> dict:
    data = json_body(exact)
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object", type=BAD_REQUEST)
    problems = text_problems(data)
    if problems:
        raise validation_failed(problems)
    return data


def _flatten_messages(messages) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, Mapping):
        out = []
        for key, value in messages.items():
            out.extend(f"item {key}: {m}" for m in _flatten_messages(value))
        return out
    out = []
    for item in messages:
        out.extend(_flatten_messages(item))
    return out


def _unknown_key_message(entity: Entity, key: str) -> str:
    f = entity.fields.get(key)
    if f is not None:
        return f"{key} {'is computed' if f.computed else 'is read-only'} and cannot be set"
    if key in SYSTEM_COLUMNS:
        return f"{key} is set by the platform"
    names = [n for n, f in entity.fields.items() if f.writable]
    return f"unknown field{did_you_mean(key, names)}"


def load_values(entity: Entity, data: Mapping, schema_cls, allowed_extra=()) -> tuple[dict, dict]:
    """Check a record body against the strict schema: (values, errors)."""
    schema = schema_cls()
    known = set(schema.fields)
    errors: dict[str, list[str]] = {}
    for key in data:
        if key not in known and key not in allowed_extra:
            errors.setdefault(str(key), []).append(_unknown_key_message(entity, str(key)))
    # Exact decimals are for number fields; everything else gets the floats it always did
    # (a JSON field stores them, text fields write them out).
    given = {
        k: v if k in entity.fields and entity.fields[k].kind.numeric else _floats(v)
        for k, v in data.items()
        if k in known
    }
    try:
        values = schema.load(given, partial=True)
    except ValidationError as exc:
        for key, messages in exc.normalized_messages().items():
            errors.setdefault(str(key), []).extend(_flatten_messages(messages))
        values = {}
    if errors:
        # The records service will not see this body, and the schema passes numbers on
        # for it to read: ask the same parser now, so one answer lists every problem.
        for key, value in given.items():
            f = entity.fields.get(key)
            if f is not None and f.kind.numeric and key not in errors:
                try:
                    f.kind.coerce_input(f, value, locale=locale())
                except CoercionError as exc:
                    errors[key] = [exc.message]
    return values, errors


def _floats(value):
    """A value of an exact body with its Decimals as floats again."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return value


def own_files(entity: Entity, values: dict, record_id: int | None = None) -> dict:
    """Errors for file values the caller did not upload (``files.check_file_values``); an
    update may also keep the file the record holds.  NotFound for a record they cannot see."""
    records = records_for(entity)
    names = [n for n in values if n in entity.fields and entity.fields[n].type == "file"]
    if not names:
        return {}
    # a hidden field is refused by the write itself (403), not by this read
    shown = [n for n in names if n in _readable(records)]
    current = records.get(record_id, fields=shown or ["id"]) if record_id else None
    return check_file_values(current_store(), entity, values, current, g.principal.user_id)


def _record_errors(errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {str(k): list(v) for k, v in errors.items()}


# ------------------------------------------------------------------------------ filters
def _query_value(f: Field, op: str, text: str):
    """A ``field__op=value`` query value as the filter language expects it."""
    if op in EMPTY_OPS or op in RELATIVE_DATE_OPS:
        if text.strip().lower() not in ("", "1", "true", "yes"):
            raise FilterError(f"operator {op!r} takes no value")
        return None
    if op in RELATIVE_N_OPS:
        days = text.strip()
        if not (days.isascii() and days.isdigit()):  # isdigit alone takes "²", int does not
            raise FilterError(f"operator {op!r} takes a whole number of days")
        return int(days)
    if op in ("in", "not_in", "between") or (
        op in ("contains", "not_contains") and f.kind.json_type == "array"
    ):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _split_param(name: str) -> tuple[str, str]:
    path, sep, op = name.rpartition("__")
    if sep and path and op in ALL_OPS:
        return path, op
    return name, "eq"


def query_filter(entity: Entity, reserved: tuple[str, ...] = openapi.LIST_PARAMETERS):
    """The filter of a list request: ``filter`` JSON plus ``field[__op]=value`` params
    (every parameter not ``reserved`` by the endpoint)."""
    parts = []
    raw = request.args.get("filter")
    if raw is not None and raw.strip():
        try:
            parsed = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise Problem(400, "filter is not valid JSON", type=BAD_FILTER) from None
        if not isinstance(parsed, list | dict):
            raise Problem(400, "filter must be a condition or an all/any/not node", type=BAD_FILTER)
        if parsed:
            parts.append(parsed)
    for name, values in request.args.lists():
        if name in reserved:
            continue
        path, op = _split_param(name)
        try:
            f, _ = resolve_path(entity, path, g.catalog.entity_of)
        except FilterError as exc:
            raise Problem(
                400, f"unknown query parameter {name!r}: {exc.message}", type=BAD_FILTER
            ) from None
        for text in values:
            try:
                value = _query_value(f, op, text)
            except FilterError as exc:
                raise Problem(400, f"{name}: {exc.message}", type=BAD_FILTER) from None
            parts.append([path, op] if value is None else [path, op, value])
    if not parts:
        return None
    # Fields the principal may not read are refused by the records service when it runs
    # the query (FilterError -> 400), as if they did not exist.
    return records_for(entity).parse_filter(parts[0] if len(parts) == 1 else {"all": parts})


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, f"{name} must be a whole number", type=BAD_REQUEST) from None
    if not low <= value <= high:
        raise Problem(400, f"{name} must be from {low} to {high}", type=BAD_REQUEST)
    return value


def bool_arg(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise Problem(400, f"{name} must be true or false", type=BAD_REQUEST)


def fields_arg(entity: Entity) -> list[str] | None:
    raw = request.args.get("fields")
    if raw is None or not raw.strip():
        return None
    paths = list(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    for path in paths:
        resolve_path(entity, path, g.catalog.entity_of)  # FilterError -> 400
    return paths


def list_page(entity: Entity, extra=None) -> Response:
    """One page of records: shared by the entity list and the related lists."""
    records = records_for(entity)
    tree = query_filter(entity)
    if extra is not None:
        extra_tree = records.parse_filter(extra)
        tree = extra_tree if tree is None else All((extra_tree, tree))
    sort = request.args.get("sort") or None
    paths = fields_arg(entity)
    limit = int_arg("limit", openapi.DEFAULT_LIMIT, 1, openapi.MAX_LIMIT)
    search = request.args.get("q") or None
    cursor = request.args.get("cursor") or None
    page = records.query(
        filter=tree, sort=sort, fields=paths, limit=limit, after=cursor, search=search
    )
    count = None
    if bool_arg("count", True):
        counted = records.count(tree, search=search)
        count = {"value": counted.value, "exact": counted.exact}
    serialize = Serializer(entity, _readable(records), paths)
    return json_response(
        {"data": [serialize(r) for r in page.rows], "next_cursor": page.next_cursor, "count": count}
    )


# ------------------------------------------------------------------------------- errors
@bp.errorhandler(UnknownEntity)
def _unknown_entity(exc: UnknownEntity):
    return Problem(404, str(exc), type=NOT_FOUND).response()


@bp.errorhandler(FilterError)
def _bad_filter(exc: FilterError):
    return Problem(400, str(exc), type=BAD_FILTER, field=exc.path or None).response()


@bp.errorhandler(BadCursor)
def _bad_cursor(exc: BadCursor):
    return Problem(400, str(exc), type=BAD_CURSOR).response()


@bp.errorhandler(ValidationFailed)
def _invalid(exc: ValidationFailed):
    return validation_failed(_record_errors(exc.errors)).response()


@bp.errorhandler(OverflowError)
@bp.errorhandler(sa.exc.DataError)
def _out_of_range(exc: Exception):
    # A value the records service let through but the database cannot hold (a number
    # past its column's range): the client's input, not a server fault.
    log.warning("database refused a value on %s: %s", request.path, exc)
    return Problem(
        400, "a value is out of the range the database can hold", type=BAD_REQUEST
    ).response()


@bp.errorhandler(sa.exc.IntegrityError)
def _constraint(exc: Exception):
    # The records service turns constraint failures into field errors; one that slips
    # through still conflicts with the stored data rather than being a server fault.
    log.warning("constraint failure on %s: %s", request.path, exc)
    detail = "the change conflicts with stored data (a linked record is missing or in use)"
    return Problem(409, detail, type=CONFLICT).response()


@bp.errorhandler(Conflict)
def _conflict(exc: Conflict):
    return Problem(409, str(exc), type=CONFLICT, current_version=exc.current).response()


# -------------------------------------------------------------------------------- CRUD
@bp.get("/<entity_name>")
def list_records(entity_name: str):
    return list_page(entity_or_404(entity_name))


@bp.get("/<entity_name>/aggregate")
def aggregate_records(entity_name: str):
    """Groups and measures over the records the caller may read (``Records.aggregate``)."""
    entity = entity_or_404(entity_name)
    tree = query_filter(entity, openapi.AGGREGATE_PARAMETERS)
    specs = {}
    for name, default in (("group_by", ""), ("measures", "count")):
        specs[name] = [p.strip() for p in request.args.get(name, default).split(",") if p.strip()]
        if len(specs[name]) > 10:
            raise Problem(400, f"{name}: at most 10", type=BAD_REQUEST)
    rows = records_for(entity).aggregate(
        specs["group_by"],
        specs["measures"] or ["count"],
        tree,
        search=request.args.get("q") or None,
        limit=int_arg("limit", openapi.MAX_GROUPS, 1, openapi.MAX_GROUPS),
    )
    return json_response({"data": [{k: _plain(v) for k, v in row.items()} for row in rows]})


def _plain(value):
    """An aggregate's value as JSON: dates as ISO text, decimals as exact strings."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _fresh(entity: Entity, record_id: int, fallback: Mapping) -> tuple[dict, str]:
    """The record as stored after a write (computed fields, links), as JSON."""
    records = records_for(entity)
    try:
        record = records.get(record_id)
    except NotFound:  # written, but no longer visible to the writer
        record = dict(fallback)
    return Serializer(entity, _readable(records))(record), etag(record)


@bp.post("/<entity_name>")
def create_record(entity_name: str):
    entity = entity_or_404(entity_name)
    on_duplicate = request.args.get("on_duplicate") or "warn"
    if on_duplicate not in ("warn", "refuse"):
        raise Problem(400, "on_duplicate must be warn or refuse", type=BAD_REQUEST)
    data = json_object(exact=True)
    values, errors = load_values(entity, data, openapi.input_schema(g.catalog, entity))
    errors.update(own_files(entity, values))
    if errors:
        raise validation_failed(errors)
    records = records_for(entity)
    if on_duplicate == "refuse" and entity.duplicates:
        found = records.find_duplicates(values)
        if found:
            raise Problem(
                409,
                f"{len(found)} possible duplicate(s) found; nothing was created",
                type=DUPLICATES,
                candidates=[_candidate_json(entity, c) for c in found],
            )
    created = records.create(values)
    body, tag = _fresh(entity, created["id"], created)
    if entity.duplicates:
        # Warn, as Dynamics' and Salesforce's "allow and alert" rules do: the record is
        # created and the likely duplicates come back beside it.  "_warnings" cannot be
        # a field's name (field names start with a letter).
        found = records.find_duplicates(created, exclude_id=created["id"])
        if found:
            body["_warnings"] = [
                {
                    "code": "possible_duplicates",
                    "message": f"{len(found)} possible duplicate(s) found",
                    "candidates": [_candidate_json(entity, c) for c in found],
                }
            ]
    location = url_for("api.get_record", entity_name=entity.name, record_id=created["id"])
    return json_response(body, 201, {"ETag": tag, "Location": location})


def _candidate_json(entity: Entity, candidate) -> dict:
    return {
        **candidate.as_json(),
        "href": url_for("api.get_record", entity_name=entity.name, record_id=candidate.id),
    }


@bp.get("/<entity_name>/duplicates")
def find_duplicates(entity_name: str):
    """Records the entity's duplicate rules match with the values in the query string
    (``field=value``; ``exclude`` an id, ``limit`` at most 50), as the caller may read."""
    entity = entity_or_404(entity_name)
    records = records_for(entity)
    if records.access is not None and records.access.scope_of(entity.name, "read") == "none":
        raise Forbidden(f"you may not read {entity.name} records")
    matched = {name for rule in entity.duplicates for name in rule.fields}
    values = {}
    for key in request.args:
        if key in ("exclude", "limit"):
            continue
        if key not in entity.fields:
            raise Problem(
                400,
                f"unknown field {key!r}{did_you_mean(key, entity.fields)}",
                type=BAD_REQUEST,
            )
        if key not in matched:
            raise Problem(
                400,
                f"{key!r} is in no duplicate rule of {entity.name}"
                + (f" (the rules match {', '.join(sorted(matched))})" if matched else ""),
                type=BAD_REQUEST,
            )
        values[key] = request.args[key]
    exclude = int_arg("exclude", 0, 0, openapi.INT64_MAX) or None
    limit = int_arg("limit", 10, 1, 50)
    found = records.find_duplicates(values, exclude_id=exclude, limit=limit)
    return json_response({"data": [_candidate_json(entity, c) for c in found]})


@bp.get("/<entity_name>/<recid:record_id>")
def get_record(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    records = records_for(entity)
    paths = fields_arg(entity)
    record = records.get(record_id, fields=paths)
    response = json_response(
        Serializer(entity, _readable(records), paths)(record), headers={"ETag": etag(record)}
    )
    return response.make_conditional(request)


def if_match_versions() -> set[int] | None:
    """Versions an ``If-Match`` header accepts; None without one (or with ``*``)."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    versions = set()
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return None
        tag = tag.removeprefix("W/").strip('"')
        if tag.isascii() and tag.isdigit():
            versions.add(int(tag))
    return versions


def expected_version(records, record_id: int) -> int | None:
    """Before a write: 404 for a record the principal cannot see (whether or not it
    exists is none of their business), 412 when ``If-Match`` names another version;
    the version to hand the records service, which refuses it if it moved since."""
    current = records.get(record_id, fields=["id"])["version"]
    versions = if_match_versions()
    if versions is None:
        return None
    if current not in versions:
        raise Problem(
            412,
            f"the record is at version {current}; If-Match does not match",
            type=STALE,
            current_version=current,
            headers={"ETag": f'"{current}"'},
        )
    return current


@bp.patch("/<entity_name>/<recid:record_id>")
def update_record(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    records = records_for(entity)
    data = json_object(exact=True)
    values, errors = load_values(entity, data, openapi.input_schema(g.catalog, entity))
    if errors:
        raise validation_failed(errors)
    version = expected_version(records, record_id)
    errors = own_files(entity, values, record_id)
    if errors:
        raise validation_failed(errors)
    try:
        updated = records.update(record_id, values, version=version)
    except Conflict as exc:
        if version is None:
            raise
        raise Problem(
            412,
            str(exc),
            type=STALE,
            current_version=exc.current,
            headers={"ETag": f'"{exc.current}"'},
        ) from None
    body, tag = _fresh(entity, record_id, updated)
    return json_response(body, headers={"ETag": tag})


@bp.delete("/<entity_name>/<recid:record_id>")
def delete_record(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    records = records_for(entity)
    version = expected_version(records, record_id)
    try:
        records.delete(record_id, version=version)
    except Conflict as exc:
        if version is None:
            raise
        raise Problem(412, str(exc), type=STALE, current_version=exc.current) from None
    return Response(status=204)


# -------------------------------------------------------------------------------- bulk
class _Rollback(Exception):
    """Undo a bulk request whose rows did not all pass (all-or-nothing mode)."""


def _bulk_payload(entity: Entity) -> tuple[list, bool]:
    data = json_object(exact=True)
    errors: dict[str, list[str]] = {}
    for key in data:
        if key not in ("records", "partial"):
            errors.setdefault(str(key), []).append("unknown member (expected records, partial)")
    rows = data.get("records")
    partial = data.get("partial", False)
    limit = current_app.config["XRM_BULK_MAX"]
    if not isinstance(rows, list):
        errors.setdefault("records", []).append("a list of records is required")
    elif len(rows) > limit:
        errors.setdefault("records", []).append(f"at most {limit} records per request")
    if not isinstance(partial, bool):
        errors.setdefault("partial", []).append("expected true or false")
    if errors:
        raise validation_failed(errors)
    return rows, partial


@bp.post("/<entity_name>/bulk")
def bulk(entity_name: str):
    entity = entity_or_404(entity_name)
    rows, partial = _bulk_payload(entity)
    records = records_for(entity)
    item_schema = openapi.bulk_item_schema(g.catalog, entity)
    failures: dict[int, dict[str, list[str]]] = {}
    creates: list[tuple[int, dict]] = []
    updates: list[tuple[int, int, int | None, dict]] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            failures[index] = {ALL_KEY: ["expected a JSON object"]}
            continue
        values, errors = load_values(entity, row, item_schema)
        if errors:
            failures[index] = errors
            continue
        record_id, version = values.pop("id", None), values.pop("version", None)
        try:
            errors = own_files(entity, values, record_id)
        except NotFound as exc:
            errors = _row_errors(exc)
        if errors:
            failures[index] = errors
            continue
        if record_id is None:
            if version is not None:
                failures[index] = {"version": ["only with id"]}
            else:
                creates.append((index, values))
        else:
            updates.append((index, record_id, version, values))
    created: list[int] = []
    updated: list[int] = []
    store = current_store()
    try:
        with store.transaction() as unit:
            for index, record_id, version, values in updates:
                savepoint = unit.connection.begin_nested()
                try:
                    records.get(record_id, fields=["id"])  # invisible rows are "not found"
                    records.update(record_id, values, version=version)
                except (ValidationFailed, NotFound, Conflict, Forbidden) as exc:
                    savepoint.rollback()
                    failures[index] = _row_errors(exc)
                else:
                    savepoint.commit()
                    updated.append(record_id)
            if creates:
                result = records.bulk_create([values for _, values in creates], partial=True)
                for position, errors in result.failures.items():
                    failures[creates[position][0]] = _record_errors(errors)
                created = list(result.ids)
            if failures and not partial:
                raise _Rollback()
    except _Rollback:
        raise _bulk_failed(failures) from None
    body = {
        "created": created,
        "updated": updated,
        "failures": [{"index": i, "errors": failures[i]} for i in sorted(failures)],
    }
    return json_response(body, 200 if failures else 201)


def _row_errors(exc: Exception) -> dict[str, list[str]]:
    if isinstance(exc, ValidationFailed):
        return _record_errors(exc.errors)
    if isinstance(exc, NotFound):
        return {"id": ["not found"]}
    if isinstance(exc, Conflict):
        return {"version": [f"stale: the record is at version {exc.current}"]}
    return {ALL_KEY: [str(exc)]}


def _bulk_failed(failures: Mapping[int, Mapping[str, list[str]]]) -> Problem:
    errors = {}
    for index in sorted(failures):
        for name, messages in failures[index].items():
            errors[f"records.{index}.{name}"] = list(messages)
    listed = [{"index": i, "errors": dict(failures[i])} for i in sorted(failures)]
    detail = f"{len(failures)} of the records are not valid; nothing was written"
    return validation_failed(errors, detail, failures=listed)


# ------------------------------------------------------------------------ related lists
@bp.get("/<entity_name>/<recid:record_id>/<relation>")
def related(entity_name: str, record_id: int, relation: str):
    entity = entity_or_404(entity_name)
    records = records_for(entity)
    f = entity.fields.get(relation)
    readable = _readable(records)
    if f is None or f.type not in ("children", "many_to_many") or relation not in readable:
        names = [n for n, x in entity.fields.items() if x.type in ("children", "many_to_many")]
        raise Problem(
            404,
            f"{entity.name} has no related list {relation!r}{did_you_mean(relation, names)}",
            type=NOT_FOUND,
        )
    target = entity_or_404(f.target or "")
    if f.type == "children":
        records.get(record_id, fields=["id"])  # 404 for a parent the user cannot see
        return list_page(target, [f.params["via"], "eq", record_id])
    linked = records.get(record_id).get(relation) or []
    return list_page(target, ["id", "in", list(linked)])


# ------------------------------------------------------------------------------- meta
def _option_json(option) -> dict:
    return {"value": option.value, "label": option.label.get(locale()), "color": option.color}


def _permissions(entity: Entity) -> dict[str, str] | None:
    access = records_for(entity).access
    return None if access is None else dict(access.allowed_actions(entity.name))


def _entity_summary(entity: Entity) -> dict:
    summary = {
        "name": entity.name,
        "label": entity.label.get(locale()),
        "plural": entity.plural.get(locale()),
        "description": entity.description.get(locale()) if entity.description else None,
        "icon": entity.icon,
        "title": entity.title,
        "solution": entity.solution,
    }
    permissions = _permissions(entity)
    if permissions is not None:
        summary["permissions"] = permissions
    return summary


def _visible(entity: Entity) -> bool:
    permissions = _permissions(entity)
    return permissions is None or permissions.get("read", "all") != "none"


#: Field parameters a client may want (bounds, targets, formats); the rest is internal.
PUBLIC_PARAMS = frozenset(
    {"max_length", "min", "max", "currency", "via", "to", "entity", "result", "pattern"}
    | {"accept", "max_size_mb"}
)


def _field_json(f: Field, writable: set[str], searchable: set[str], system: bool = False) -> dict:
    if system:
        read_only = f.name not in SETTABLE_SYSTEM
    else:
        read_only = not f.writable or f.name not in writable
    data = {
        "name": f.name,
        "type": f.type,
        "label": f.label.get(locale()),
        "help": f.help.get(locale()) if f.help else None,
        "required": bool(f.required),
        "read_only": bool(read_only),
        "computed": bool(f.computed),
        "system": system,
        "json_type": f.kind.json_type,
        "target": f.target
        if f.type in ("lookup", "user", "many_to_many", "children", "any_lookup")
        else None,
        "choices": [_option_json(o) for o in f.choices],
        "operators": sorted(f.kind.operators),
        "sortable": bool(f.stored and f.kind.json_type not in ("array", "object")),
        "searchable": f.name in searchable and not system,
    }
    params = {k: v for k, v in f.params.items() if k in PUBLIC_PARAMS}
    if params:
        data["params"] = params
    return data


def _tree_json(node):
    """A compiled filter tree back in the filter language's JSON form."""
    if node is None:
        return None
    if isinstance(node, Condition):
        if node.op in EMPTY_OPS or node.op in RELATIVE_DATE_OPS:
            return [node.dotted, node.op]
        return [node.dotted, node.op, _filter_value(node.field, node.value)]
    if isinstance(node, All):
        return {"all": [_tree_json(c) for c in node.children]}
    if isinstance(node, AnyOf):
        return {"any": [_tree_json(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": _tree_json(node.child)}
    return node


def _filter_value(f: Field, value):
    if isinstance(value, CurrentUser):
        return "current_user"
    if isinstance(value, tuple | list):
        return [_filter_value(f, v) for v in value]
    if isinstance(value, int | str | bool) or value is None:
        return value
    return f.kind.to_json(f, value)


def _view_json(view) -> dict:
    return {
        "name": view.name,
        "entity": view.entity,
        "label": view.label.get(locale()),
        "kind": view.kind,
        "columns": list(view.columns),
        "filter": _tree_json(view.filter),
        "sort": [list(s) for s in view.sort],
        "quick_filters": list(view.quick_filters),
        "group_by": view.group_by,
        "card": list(view.card),
        "date_field": view.date_field,
        "end_field": view.end_field,
        "parent": view.parent,
    }


def _entity_json(entity: Entity) -> dict:
    records = records_for(entity)
    readable, writable = _readable(records), _writable(records)
    searchable = {f.name for f in search_fields(entity)}
    listed = []
    for f in entity.fields.values():
        if f.name in readable:
            listed.append(_field_json(f, writable, searchable))
    for name in SYSTEM_COLUMNS:
        listed.append(
            _field_json(system_field(entity.name, name), writable, searchable, system=True)
        )
    relations = []
    for f, target in openapi.relations(g.catalog, entity):
        if f.name not in readable:
            continue
        relations.append(
            {
                "name": f.name,
                "entity": target.name,
                "via": f.params.get("via"),
                "kind": f.type,
                "label": f.label.get(locale()),
            }
        )
    return {
        **_entity_summary(entity),
        "fields": listed,
        "views": [_view_json(v) for v in g.catalog.views_of(entity.name)],
        "relations": relations,
        "search": bool(searchable),
    }


@bp.get("/meta")
def meta_index():
    user = g.user
    return json_response(
        {
            "catalog_version": g.catalog.version,
            "locale": locale(),
            "user": {
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "locale": user.locale,
                "time_zone": user.time_zone,
                "roles": list(g.principal.roles),
            },
            "entities": [_entity_summary(e) for e in _visible_entities()],
            "csrf_token": generate_csrf() if g.auth_method == "session" else None,
        }
    )


def _visible_entities() -> list[Entity]:
    return [e for e in sorted(g.catalog.entities.values(), key=lambda e: e.name) if _visible(e)]


@bp.get("/meta/entities")
def meta_entities():
    return json_response([_entity_summary(e) for e in _visible_entities()])


@bp.get("/meta/entities/<name>")
def meta_entity(name: str):
    entity = entity_or_404(name)
    if not _visible(entity):
        raise Problem(404, f"unknown entity {name!r}", type=NOT_FOUND)
    return json_response(_entity_json(entity))


def _option_set_json(option_set) -> dict:
    return {
        "name": option_set.name,
        "label": option_set.label.get(locale()),
        "options": [_option_json(o) for o in option_set.options],
    }


@bp.get("/meta/option_sets")
def meta_option_sets():
    sets = sorted(g.catalog.option_sets.values(), key=lambda s: s.name)
    return json_response([_option_set_json(s) for s in sets])


@bp.get("/meta/option_sets/<name>")
def meta_option_set(name: str):
    option_set = g.catalog.option_sets.get(name)
    if option_set is None:
        raise Problem(
            404,
            f"unknown option set {name!r}{did_you_mean(name, g.catalog.option_sets)}",
            type=NOT_FOUND,
        )
    return json_response(_option_set_json(option_set))


@bp.get("/meta/views")
def meta_views():
    visible = {e.name for e in _visible_entities()}
    views = sorted(
        (v for v in g.catalog.views.values() if v.entity in visible), key=lambda v: v.name
    )
    return json_response([_view_json(v) for v in views])


@bp.get("/meta/views/<name>")
def meta_view(name: str):
    view = g.catalog.views.get(name)
    if view is None or not _visible(g.catalog.entity(view.entity)):
        raise Problem(404, f"unknown view {name!r}", type=NOT_FOUND)
    return json_response(_view_json(view))


# ----------------------------------------------------------------------------- OpenAPI
@bp.get("/openapi.json")
def openapi_document():
    """The document as the caller may see it (``openapi_scope``): no entity they cannot
    read, no field hidden from them."""
    catalog, principal = g.catalog, g.principal
    # the compiled permissions the records service keeps for this principal and catalog
    access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
    response = json_response(openapi_scope.document_for(catalog, access))
    response.set_etag(openapi_scope.etag(catalog, access))
    response.headers["Cache-Control"] = "private, no-cache"
    return response.make_conditional(request)


@docs.get("/docs")
def api_docs():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return render_template("api/docs.html", spec_url=url_for("api.openapi_document"))
