"""The workflow engine in the REST API: the caller's notifications and approvals, starting
a process by hand, and process instances with their history.

A sibling of the records API under ``/api/v1``, protected the same way: every request is
authenticated by ``auth.authenticate_api`` (a bearer token, or the session cookie with the
CSRF header on writes) and rate-limited per client like it (``auth.protect_api``).

Who sees what: notifications and approvals are always the caller's own, and name the record
they are about only while the caller may read it (``inbox.about_readable``).  An instance is
visible to administrators, to the user who started it, and to users who may read its
record (the read scope of the records service for their principal).  Its ``context``
(the record's earlier values, the payload, step results) may hold fields hidden from a
user, so only administrators get it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa
from flask import Blueprint, current_app, g, request, url_for

from .. import workflow
from ..metadata.fieldtypes import INT64_MAX
from ..metadata.problems import did_you_mean
from ..storage.records import Forbidden, NotFound
from ..workflow import tables as W
from ..workflow.blocked import stop_reason
from ..workflow.inbox import ApprovalError
from ..workflow.instances import StartRefused
from . import current_store, openapi
from .api import (
    bool_arg,
    guard_api,
    int_arg,
    json_object,
    json_response,
    locale,
    records_for,
)
from .problems import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, Problem, validation_failed

bp = Blueprint("api_workflow", __name__, url_prefix=openapi.API_PREFIX)

STATUSES = ("waiting", "running", "done", "failed", "cancelled")
DECISIONS = ("approved", "rejected")
COMMENT_MAX = 2000


guard_api(bp)


def _user_id() -> int:
    return g.principal.user_id


def _optional_id(name: str) -> int | None:
    return int_arg(name, 0, 1, INT64_MAX) or None


def _page_size() -> int:
    return int_arg("limit", openapi.DEFAULT_LIMIT, 1, openapi.MAX_LIMIT)


def _body(allowed: tuple[str, ...]) -> dict:
    """The JSON object of a request, refusing members other than ``allowed``."""
    data = json_object()
    unknown = {
        str(key): [f"unknown member (expected {', '.join(allowed)})"]
        for key in data
        if key not in allowed
    }
    if unknown:
        raise validation_failed(unknown)
    return data


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT64_MAX


def _comment(data: Mapping, errors: dict) -> str | None:
    comment = data.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > COMMENT_MAX):
        errors["comment"] = [f"a text of at most {COMMENT_MAX} characters, or null"]
    return comment


# ------------------------------------------------------------------------ serialization
def _iso(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value


def _process_label(name: str) -> str | None:
    process = g.catalog.processes.get(name)
    return process.label.get(locale()) if process is not None else None


def _notification_json(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "entity": row["entity"],
        "record_id": row["record_id"],
        "instance_id": row["instance_id"],
        "created_at": _iso(row["created_at"]),
        "read_at": _iso(row["read_at"]),
    }


def _approval_json(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "instance_id": row["instance_id"],
        "process": row["process"],
        "label": _process_label(row["process"]),
        "entity": row["entity"],
        "record_id": row["record_id"],
        "step": row["path"],
        "delegated_from": row["delegated_from"],
        "created_at": _iso(row["created_at"]),
    }


def _instance_json(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "process": row["process"],
        "label": _process_label(row["process"]),
        "entity": row["entity"],
        "record_id": row["record_id"],
        "status": row["status"],
        "started_by": row["user_id"],
        "parent_id": row["parent_id"],
        "attempts": row["attempts"],
        "error": row["error"],
        "due_at": _iso(row["due_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


def _page(data: list[dict], limit: int) -> dict:
    # Newest first: the next page is everything before the last id of a full page.
    return {"data": data, "next_before": data[-1]["id"] if len(data) == limit else None}


# ------------------------------------------------------------------------ notifications
@bp.get("/notifications")
def list_notifications():
    limit = _page_size()
    rows = workflow.notifications(
        current_store(),
        _user_id(),
        unread=bool_arg("unread", False),
        limit=limit,
        before=_optional_id("before"),
    )
    rows = workflow.inbox.about_readable(current_store(), g.principal, rows)
    return json_response(_page([_notification_json(r) for r in rows], limit))


@bp.get("/notifications/unread")
def unread_notifications():
    return json_response({"unread": workflow.unread_count(current_store(), _user_id())})


@bp.post("/notifications/read")
def read_notifications():
    data = _body(("ids",))
    ids = data.get("ids")
    if ids is not None:
        most = current_app.config["XRM_BULK_MAX"]
        if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
            raise validation_failed({"ids": ["a list of notification ids, or null for all"]})
        if len(ids) > most:
            raise validation_failed({"ids": [f"at most {most} ids per request"]})
    marked = workflow.mark_read(current_store(), _user_id(), ids)
    return json_response({"marked": marked})


# ------------------------------------------------------------------------------ approvals
@bp.get("/approvals")
def list_approvals():
    rows = workflow.pending_approvals(current_store(), _user_id())
    rows = workflow.inbox.about_readable(current_store(), g.principal, rows)
    return json_response({"data": [_approval_json(r) for r in rows]})


def _open_approval(approval_id: int) -> Mapping:
    """The caller's undecided approval, or 404 (not theirs: none of their business) / 409."""
    store = current_store()
    workflow.ensure_tables(store)
    a, i = W.approvals, W.instances
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(a.c.user_id, a.c.decision, a.c.instance_id, i.c.status)
                .join(i, i.c.id == a.c.instance_id)
                .where(a.c.id == approval_id)
            )
            .mappings()
            .first()
        )
    if row is None or row["user_id"] != _user_id():
        raise Problem(404, f"no approval {approval_id} is waiting for you", type=NOT_FOUND)
    if row["decision"] is not None:
        raise Problem(409, f"approval {approval_id} is {row['decision']} already", type=CONFLICT)
    if row["status"] in ("done", "cancelled"):
        raise Problem(
            409,
            f"process instance {row['instance_id']} is {row['status']}: "
            "it no longer waits for decisions",
            type=CONFLICT,
        )
    return row


@bp.post("/approvals/<recid:approval_id>")
def decide_approval(approval_id: int):
    data = _body(("decision", "comment"))
    row = _open_approval(approval_id)
    errors: dict[str, list[str]] = {}
    decision = data.get("decision")
    if decision not in DECISIONS:
        errors["decision"] = ["approved or rejected"]
    comment = _comment(data, errors)
    if errors:
        raise validation_failed(errors)
    try:
        workflow.decide(current_store(), approval_id, _user_id(), decision, comment)
    except ApprovalError as exc:  # decided meanwhile by another request
        raise Problem(409, str(exc), type=CONFLICT) from None
    return json_response(
        {"approval": approval_id, "decision": decision, "instance": row["instance_id"]}
    )


@bp.post("/approvals/<recid:approval_id>/delegate")
def delegate_approval(approval_id: int):
    data = _body(("to", "comment"))
    row = _open_approval(approval_id)
    errors: dict[str, list[str]] = {}
    to = data.get("to")
    if not _is_id(to):
        errors["to"] = ["the id of the user to hand the approval to"]
    elif to == _user_id():
        errors["to"] = ["the approval is yours already; name someone else"]
    else:
        user = current_store().user(to)
        if user is None or not user.active:
            errors["to"] = [f"no active user {to}"]
    comment = _comment(data, errors)
    if errors:
        raise validation_failed(errors)
    try:
        ident = workflow.delegate(current_store(), approval_id, _user_id(), to, comment)
    except ApprovalError as exc:  # the delegate approves this step already, or a race
        raise Problem(409, str(exc), type=CONFLICT) from None
    return json_response({"approval": ident, "delegated_to": to, "instance": row["instance_id"]})


# ------------------------------------------------------------------------------ processes
def _process_or_404(name: str, *, enabled: bool = False):
    process = g.catalog.processes.get(name)
    if process is None or (enabled and not process.enabled):
        known = [n for n, p in g.catalog.processes.items() if p.enabled or not enabled]
        raise Problem(
            404,
            f"no {'enabled ' if enabled else ''}process {name!r}{did_you_mean(name, known)}",
            type=NOT_FOUND,
        )
    return process


@bp.post("/processes/<name>/start")
def start_process(name: str):
    process = _process_or_404(name, enabled=True)
    data = _body(("record_id", "payload"))
    record_id, payload = data.get("record_id"), data.get("payload")
    errors: dict[str, list[str]] = {}
    if process.entity is None and record_id is not None:
        errors["record_id"] = [f"process {name!r} does not run on a record; leave it out"]
    elif process.entity is not None and not _is_id(record_id):
        errors["record_id"] = [f"process {name!r} runs on {process.entity} records: give the id"]
    if payload is not None and not isinstance(payload, dict):
        errors["payload"] = ["a JSON object (payload.* in the process's templates)"]
    if errors:
        raise validation_failed(errors)
    try:
        ident = workflow.start(
            current_store(), name, record_id, user_id=_user_id(), payload=payload or {}, check=True
        )
    except StartRefused as exc:
        raise Problem(403, str(exc), type=FORBIDDEN) from None
    location = url_for(".get_instance", instance_id=ident)
    # Its first pass ran: a step that could not go on at once parked it already, and the
    # caller hears why (in their language) rather than a plain "queued".
    reason = stop_reason(current_store(), ident, locale(), g.principal)
    body = {"instance": ident, "status": "failed" if reason else "waiting"}
    if reason:
        body["reason"] = reason
    return json_response(body, 202, {"Location": location})


# ------------------------------------------------------------------------------ instances
def _visible_to_caller(entity: str | None):
    """The SQL condition on instances of ``entity`` records the caller may see; None: all."""
    principal = g.principal
    if principal.is_admin:
        return None
    i = W.instances
    started = i.c.user_id == principal.user_id
    if entity is None or g.catalog.entity_of(entity) is None:
        return started
    records = records_for(entity)
    readable = sa.select(records.table.c.id)
    if records.access is not None:
        scope = records.access.scope_condition(records.table, entity, "read")
        if scope is not None:
            readable = readable.where(scope)
    return sa.or_(started, sa.and_(i.c.entity == entity, i.c.record_id.in_(readable)))


def _may_see(row: Mapping) -> bool:
    principal = g.principal
    if principal.is_admin or row["user_id"] == principal.user_id:
        return True
    entity, record_id = row["entity"], row["record_id"]
    if entity is None or record_id is None or g.catalog.entity_of(entity) is None:
        return False
    try:
        records_for(entity).get(record_id, fields=["id"])
    except (NotFound, Forbidden):
        return False
    return True


@bp.get("/processes/<name>/instances")
def list_instances(name: str):
    process = _process_or_404(name)
    record_id = _optional_id("record_id")
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise Problem(400, f"status is one of {', '.join(STATUSES)}", type=BAD_REQUEST)
    limit = _page_size()
    before = _optional_id("before")
    store = current_store()
    workflow.ensure_tables(store)
    i = W.instances
    columns = [c for c in i.c if c.name not in ("context", "history")]
    query = sa.select(*columns).where(i.c.process == name).order_by(i.c.id.desc()).limit(limit)
    for condition in (
        i.c.record_id == record_id if record_id is not None else None,
        i.c.status == status if status is not None else None,
        i.c.id < before if before is not None else None,
        _visible_to_caller(process.entity),
    ):
        if condition is not None:
            query = query.where(condition)
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return json_response(_page([_instance_json(r) for r in rows], limit))


@bp.get("/instances/<recid:instance_id>")
def get_instance(instance_id: int):
    row = workflow.instance(current_store(), instance_id)
    if row is None or not _may_see(row):
        raise Problem(404, f"no instance {instance_id} that you may see", type=NOT_FOUND)
    body = _instance_json(row)
    body["history"] = list(row["history"] or [])
    if g.principal.is_admin:
        body["context"] = row["context"] or {}
    return json_response(body)


# ------------------------------------------------------------------------ OpenAPI document
def _nullable(type_: str, **extra) -> dict:
    return {"type": [type_, "null"], **extra}


_ID = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
_WHEN = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, dict] = {
    "workflow.Notification": {
        "type": "object",
        "required": ["id", "title", "created_at", "read_at"],
        "properties": {
            "id": {"type": "integer"},
            "title": {"type": "string"},
            "body": _nullable("string"),
            "entity": _nullable("string"),
            "record_id": _nullable("integer"),
            "instance_id": _nullable("integer"),
            "created_at": _WHEN,
            "read_at": _nullable("string", format="date-time"),
        },
    },
    "workflow.NotificationPage": {
        "type": "object",
        "required": ["data", "next_before"],
        "properties": {
            "data": {"type": "array", "items": openapi._ref("workflow.Notification")},
            "next_before": _nullable("integer", description="pass as before= for older ones"),
        },
    },
    "workflow.Unread": {
        "type": "object",
        "required": ["unread"],
        "properties": {"unread": {"type": "integer", "minimum": 0}},
    },
    "workflow.MarkRead": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ids": {
                "type": ["array", "null"],
                "items": _ID,
                "maxItems": openapi.MAX_LIMIT,
                "description": "the notifications to mark read; left out or null: all",
            }
        },
    },
    "workflow.Marked": {
        "type": "object",
        "required": ["marked"],
        "properties": {"marked": {"type": "integer", "minimum": 0}},
    },
    "workflow.Approval": {
        "type": "object",
        "required": ["id", "instance_id", "process", "step", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "instance_id": {"type": "integer"},
            "process": {"type": "string"},
            "label": _nullable("string"),
            "entity": _nullable("string"),
            "record_id": _nullable("integer"),
            "step": {"type": "string", "description": "the approval step's path in the process"},
            "delegated_from": _nullable("integer", description="the user who delegated it"),
            "created_at": _WHEN,
        },
    },
    "workflow.ApprovalList": {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": openapi._ref("workflow.Approval")}},
    },
    "workflow.Decision": {
        "type": "object",
        "required": ["decision"],
        "additionalProperties": False,
        "properties": {
            "decision": {"enum": list(DECISIONS)},
            "comment": _nullable("string", maxLength=COMMENT_MAX),
        },
    },
    "workflow.Decided": {
        "type": "object",
        "required": ["approval", "decision", "instance"],
        "properties": {
            "approval": {"type": "integer"},
            "decision": {"enum": list(DECISIONS)},
            "instance": {"type": "integer"},
        },
    },
    "workflow.Delegation": {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {
            "to": {**_ID, "description": "the user id of the new approver"},
            "comment": _nullable("string", maxLength=COMMENT_MAX),
        },
    },
    "workflow.Delegated": {
        "type": "object",
        "required": ["approval", "delegated_to", "instance"],
        "properties": {
            "approval": {"type": "integer", "description": "the delegate's approval id"},
            "delegated_to": {"type": "integer"},
            "instance": {"type": "integer"},
        },
    },
    "workflow.StartRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "record_id": {
                "anyOf": [_ID, {"type": "null"}],
                "description": "the record, for a process that runs on an entity",
            },
            "payload": {
                "type": ["object", "null"],
                "description": "payload.* in the process's templates",
            },
        },
    },
    "workflow.Started": {
        "type": "object",
        "required": ["instance", "status"],
        "properties": {
            "instance": {"type": "integer", "description": "the instance id"},
            "status": {
                "enum": ["waiting", "failed"],
                "description": "waiting: queued for a worker; failed: a step could not go on "
                "at once (nobody to approve, say), the instance is parked and the "
                "administrators were told",
            },
            "reason": {
                "type": "string",
                "description": "with failed: why, in the caller's language",
            },
        },
    },
    "workflow.Instance": {
        "type": "object",
        "required": ["id", "process", "status", "attempts", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "integer"},
            "process": {"type": "string"},
            "label": _nullable("string"),
            "entity": _nullable("string"),
            "record_id": _nullable("integer"),
            "status": {"enum": list(STATUSES)},
            "started_by": _nullable("integer", description="the user who started it"),
            "parent_id": _nullable("integer", description="the instance that started this one"),
            "attempts": {"type": "integer"},
            "error": _nullable("string"),
            "due_at": _nullable("string", format="date-time"),
            "created_at": _WHEN,
            "updated_at": _WHEN,
            "finished_at": _nullable("string", format="date-time"),
        },
    },
    "workflow.InstancePage": {
        "type": "object",
        "required": ["data", "next_before"],
        "properties": {
            "data": {"type": "array", "items": openapi._ref("workflow.Instance")},
            "next_before": _nullable("integer", description="pass as before= for older ones"),
        },
    },
    "workflow.HistoryEntry": {
        "type": "object",
        "required": ["at", "kind", "status"],
        "properties": {
            "at": {"type": "string"},
            "path": _nullable("string"),
            "kind": {"type": "string"},
            "status": {"type": "string"},
            "title": {"type": "string"},
            "result": {},
            "ms": {"type": "number"},
        },
    },
    "workflow.InstanceDetail": {
        "allOf": [
            openapi._ref("workflow.Instance"),
            {
                "type": "object",
                "required": ["history"],
                "properties": {
                    "history": {
                        "type": "array",
                        "items": openapi._ref("workflow.HistoryEntry"),
                    },
                    "context": {
                        "type": "object",
                        "description": "trigger, payload, vars: administrators only",
                    },
                },
            },
        ]
    },
}


def _ok(schema: str, description: str = "OK", status: str = "200", **extra) -> dict:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": openapi._ref(schema)}},
            **extra,
        }
    }


def _errors(**described: str) -> dict:
    """Problem responses: 400, 401 and 429 always, plus ``e404="..."`` style extras."""
    responses = {
        "400": openapi._problem("malformed request: bad JSON or query parameter"),
        "401": openapi._problem("no valid credentials"),
        "429": openapi._problem("rate limit exceeded", headers=openapi._RETRY_AFTER),
    }
    for key, description in described.items():
        code = key.removeprefix("e")
        responses[code] = openapi._problem(description, validation=code == "422")
    return dict(sorted(responses.items()))


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_LIMIT = _query(
    "limit",
    {
        "type": "integer",
        "minimum": 1,
        "maximum": openapi.MAX_LIMIT,
        "default": openapi.DEFAULT_LIMIT,
    },
    "how many, newest first",
)
_BEFORE = _query("before", _ID, "only ids below this one: next_before of the previous page")
_ID_PATH = {"name": "id", "in": "path", "required": True, "schema": _ID}
_NAME_PATH = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the process name",
}
_BODY_ERRORS = {"e413": "request body too large", "e415": "request body is not JSON"}


def _endpoint(
    spec,
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    responses: dict,
    *,
    path_parameters: list | None = None,
    description: str | None = None,
    parameters: list | None = None,
    body: dict | None = None,
) -> None:
    """One workflow operation in the document (the parts in the order the others have)."""
    operation = {"tags": ["workflow"], "operationId": operation_id, "summary": summary}
    if description is not None:
        operation["description"] = description
    if parameters is not None:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = responses
    spec.path(
        path=f"{openapi.API_PREFIX}{path}",
        parameters=path_parameters,
        operations={method: operation},
    )


def document(spec) -> None:
    """Add the workflow endpoints and their schemas to the API's OpenAPI document."""
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, component=schema)
    spec.tag({"name": "workflow", "description": "notifications, approvals, processes"})
    _endpoint(
        spec,
        "get",
        "/notifications",
        "list_notifications",
        "The caller's in-app notifications, newest first",
        {**_ok("workflow.NotificationPage"), **_errors()},
        parameters=[
            _query("unread", {"type": "boolean", "default": False}, "only unread ones"),
            _BEFORE,
            _LIMIT,
        ],
    )
    _endpoint(
        spec,
        "get",
        "/notifications/unread",
        "count_unread_notifications",
        "How many of the caller's notifications are unread",
        {**_ok("workflow.Unread"), **_errors()},
    )
    _endpoint(
        spec,
        "post",
        "/notifications/read",
        "mark_notifications_read",
        "Mark some of the caller's notifications read, or all of them",
        {
            **_ok("workflow.Marked", "how many were unread and are read now"),
            **_errors(e422="ids is not a list of notification ids", **_BODY_ERRORS),
        },
        body=openapi._json_body("workflow.MarkRead", "{} marks all"),
    )
    _endpoint(
        spec,
        "get",
        "/approvals",
        "list_approvals",
        "Approvals waiting for the caller's decision",
        {**_ok("workflow.ApprovalList"), **_errors()},
    )
    decided_errors = _errors(
        e404="no such approval waiting for the caller",
        e409="decided already, or the process no longer waits for it",
        e422="the body is not valid",
        **_BODY_ERRORS,
    )
    _endpoint(
        spec,
        "post",
        "/approvals/{id}",
        "decide_approval",
        "Approve or reject",
        {**_ok("workflow.Decided"), **decided_errors},
        path_parameters=[_ID_PATH],
        body=openapi._json_body("workflow.Decision"),
    )
    _endpoint(
        spec,
        "post",
        "/approvals/{id}/delegate",
        "delegate_approval",
        "Hand the decision to another user",
        {**_ok("workflow.Delegated"), **decided_errors},
        path_parameters=[_ID_PATH],
        body=openapi._json_body("workflow.Delegation"),
    )
    _endpoint(
        spec,
        "post",
        "/processes/{name}/start",
        "start_process",
        "Start a process with a manual trigger",
        {
            **_ok(
                "workflow.Started",
                "queued",
                "202",
                headers={"Location": {"description": "the instance", "schema": {"type": "string"}}},
            ),
            **_errors(
                e403="the caller may not start it on this record",
                e404="no such enabled process, or no such record",
                e422="the body is not valid",
                **_BODY_ERRORS,
            ),
        },
        path_parameters=[_NAME_PATH],
        description=(
            "The caller needs one of the trigger's roles (if it names any) and the "
            "right to update the record.  The instance runs on the next worker pass, "
            "unless a step cannot go on at once (nobody to approve, say): then it is "
            "parked before the answer, which says why."
        ),
        body=openapi._json_body("workflow.StartRequest"),
    )
    _endpoint(
        spec,
        "get",
        "/processes/{name}/instances",
        "list_instances",
        "Instances of a process the caller may see, newest first",
        {**_ok("workflow.InstancePage"), **_errors(e404="no such process")},
        path_parameters=[_NAME_PATH],
        parameters=[
            _query("record_id", _ID, "only those on this record"),
            _query("status", {"enum": list(STATUSES)}, "only those in this status"),
            _BEFORE,
            _LIMIT,
        ],
    )
    _endpoint(
        spec,
        "get",
        "/instances/{id}",
        "get_instance",
        "A process instance with its history",
        {
            **_ok("workflow.InstanceDetail"),
            **_errors(e404="no such instance that the caller may see"),
        },
        path_parameters=[_ID_PATH],
    )
