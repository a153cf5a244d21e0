"""Inbound webhooks over HTTP: ``POST /hooks/<process>/<token>`` and ``POST /hooks/<process>``
start a process that has a ``webhook`` trigger.

Callers are other systems, not users: there is no session and no API token, so the
blueprint is exempt from CSRF and the secret of the process is the only credential (in
the URL for ``signature: url``, an ``X-XRM-Signature`` HMAC header for ``signature: hmac``,
compared in constant time).  The secret is checked before the body, so a caller without it
learns nothing about what it sent; then ``xrm.workflow.receive_webhook`` starts the
process.  Each process and caller address has its own request budget.  Every answer,
errors included, is JSON: a problem document like the API's.

Status codes: 202 ``{"instance": id}`` (a repeated ``Idempotency-Key`` answers with the
first delivery's instance); 400 a body that is not JSON or a bad ``Idempotency-Key``;
403 a wrong or missing token or signature; 404 no enabled process takes webhooks by that
route, or the ``record_id`` names no record; 413 a body past ``MAX_CONTENT_LENGTH``;
422 a body the process cannot start from (no usable ``record_id``, text that cannot be
stored); 429 the budget is spent; 503 the process's secret is not configured here.
"""

from __future__ import annotations

import hmac
import json
import logging

import sqlalchemy as sa
from flask import Blueprint, Flask, g, request
from werkzeug.exceptions import HTTPException

from ..metadata.fieldtypes import INT64_MAX
from ..storage.records import NotFound
from ..workflow import receive_webhook
from ..workflow.instances import StartRefused
from ..workflow.webhooks import SIGNATURE_HEADER, WebhookRefused, secret_value, verify
from . import current_store
from .api import json_response, text_problems
from .auth import client_address
from .problems import (
    BAD_REQUEST,
    FORBIDDEN,
    NOT_FOUND,
    Problem,
    rate_limited,
    validation_failed,
)
from .redaction import redact

PREFIX = "/hooks"
bp = Blueprint("hooks", __name__, url_prefix=PREFIX)
log = logging.getLogger(__name__)

#: The longest Idempotency-Key: ``receive_webhook`` keeps ``hook:<process>:<key>`` in a
#: column of 250 characters, and process names have at most 64.
KEY_MAX = 100


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _process_for(name: str, signed: bool):
    """The process a request addresses and its secret, or a 404 naming the route it takes."""
    process = g.catalog.processes.get(name)
    trigger = process.trigger("webhook") if process is not None else None
    if trigger is None or not process.enabled:
        raise Problem(404, f"no enabled process {name!r} takes webhooks", type=NOT_FOUND)
    if signed and trigger.signature != "hmac":
        raise Problem(
            404,
            f"process {name!r} takes its secret in the URL: POST {PREFIX}/{name}/<secret>",
            type=NOT_FOUND,
        )
    if not signed and trigger.signature == "hmac":
        raise Problem(
            404,
            f"process {name!r} takes signed calls: POST {PREFIX}/{name} with {SIGNATURE_HEADER}",
            type=NOT_FOUND,
        )
    try:
        secret = secret_value(trigger.secret)
    except LookupError as exc:
        log.error("webhook of process %r refused: %s", name, exc)
        secret = None
    if not secret:
        # Nobody can authenticate; the details (which variable) go to the log, not the caller.
        raise Problem(
            503, f"process {name!r} cannot take webhooks: its secret is not configured here"
        )
    return process, secret


def _authenticate(signed: bool, secret: str, token: str | None) -> None:
    """Refuse a caller without the secret before looking at anything else they sent.

    ``receive_webhook`` checks the same again; checking here first keeps the order of the
    answers (an unauthenticated caller learns nothing about its body) and keeps text the
    constant-time comparison cannot take (non-ASCII ``str``) away from it.
    """
    if signed:
        body = request.get_data()  # 413 past MAX_CONTENT_LENGTH
        header = request.headers.get(SIGNATURE_HEADER)
        if not header or not header.isascii() or not verify(secret, body, header):
            raise Problem(403, "bad or missing signature", type=FORBIDDEN)
    elif token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise Problem(403, "bad token", type=FORBIDDEN)


def _payload(process) -> None:
    """Refuse a body the process could not start from, before anything is written."""
    raw = request.get_data()  # 413 past MAX_CONTENT_LENGTH
    if not raw:
        payload = {}
    else:
        try:
            payload = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "bad JSON"
            raise Problem(400, f"the body is not JSON: {detail}", type=BAD_REQUEST) from None
    try:
        problems = text_problems(payload)
    except RecursionError:
        raise Problem(400, "the body is nested too deeply", type=BAD_REQUEST) from None
    if problems:
        raise validation_failed(problems)
    if process.entity is None:
        return
    record_id = payload.get("record_id") if isinstance(payload, dict) else None
    if (
        not isinstance(record_id, int)
        or isinstance(record_id, bool)
        or not 1 <= record_id <= INT64_MAX
    ):
        raise validation_failed(
            {
                "record_id": [
                    f"process {process.name!r} runs on {process.entity} records: "
                    "the body needs a record_id (a whole number)"
                ]
            }
        )


def _idempotency_key() -> None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return
    if not key or len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        raise Problem(
            400,
            f"Idempotency-Key must be 1 to {KEY_MAX} printable ASCII characters",
            type=BAD_REQUEST,
        )


def _start(name: str, token: str | None) -> int:
    body = request.get_data()
    try:
        return receive_webhook(current_store(), name, body, request.headers, token=token)
    except WebhookRefused as exc:
        raise Problem(403, str(exc), type=FORBIDDEN) from None
    except NotFound as exc:
        raise Problem(404, str(exc), type=NOT_FOUND) from None
    except StartRefused as exc:
        raise validation_failed({"__all__": [str(exc)]}, str(exc)) from None


def _receive(name: str, token: str | None):
    signed = token is None
    process, secret = _process_for(name, signed)
    _authenticate(signed, secret, token)
    _idempotency_key()
    _payload(process)
    try:
        ident = _start(name, token)
    except sa.exc.IntegrityError:
        if "Idempotency-Key" not in request.headers:
            raise
        # Two deliveries with one Idempotency-Key raced and this one lost the insert: asking
        # again finds the winner's instance.
        ident = _start(name, token)
    return json_response({"instance": ident}, 202)


@bp.post("/<process>/<token>")
def by_token(process: str, token: str):
    return _receive(process, token)


@bp.post("/<process>")
def by_signature(process: str):
    return _receive(process, None)


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@bp.route("", defaults={"rest": ""}, methods=_ANY_METHOD)
@bp.route("/", defaults={"rest": ""}, methods=_ANY_METHOD)
@bp.route("/<path:rest>", methods=_ANY_METHOD)
def elsewhere(rest: str):
    # Every other address under /hooks answers as JSON too (the application's own 404 and
    # 405 are problem documents only under /api/).
    parts = [p for p in rest.split("/") if p]
    if request.method != "POST" and 1 <= len(parts) <= 2:
        raise Problem(405, "webhooks are sent with POST", headers={"Allow": "POST"})
    raise Problem(
        404,
        f"no such webhook address; send POST {PREFIX}/<process>/<secret> or POST {PREFIX}/<process>",
        type=NOT_FOUND,
    )


@bp.errorhandler(HTTPException)
def _http_problem(exc: HTTPException):
    if exc.code == 429:
        return rate_limited("webhook calls").response()
    headers = dict(exc.get_headers()) if exc.code == 405 else {}
    headers.pop("Content-Type", None)
    return Problem(exc.code or 500, exc.description, headers=headers).response()


@bp.errorhandler(Problem)
def _problem(exc: Problem):
    # Registered here too: the blueprint's handler for Exception below would otherwise
    # be found before the application's handler for Problem.
    return exc.response()


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, redact(request.path))
    return Problem(500, "an unexpected error occurred; it has been logged").response()


def _budget_key() -> str:
    return f"hook:{(request.view_args or {}).get('process', '')}:{client_address()}"


def init_app(app: Flask) -> None:
    """Register the webhook routes: no CSRF (no cookies are involved), their own budget."""
    app.extensions["csrf"].exempt(bp)
    app.extensions["xrm_limiter"].limit(
        lambda: app.config["XRM_HOOK_RATE_LIMIT"], key_func=_budget_key, scope="hooks"
    )(bp)
    app.register_blueprint(bp)


# ------------------------------------------------------------------------ OpenAPI document
def document(spec) -> None:
    """Add the webhook routes to the OpenAPI document (they need no API token)."""
    from . import openapi

    process = {
        "name": "process",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the process with a webhook trigger",
    }
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": KEY_MAX},
        "description": "a repeat with the same key answers with the first call's instance",
    }
    body = {
        "required": False,
        "description": (
            "any JSON (payload.* in the process's templates); for a process on an entity, "
            "an object with record_id.  Read as JSON whatever the Content-Type; empty: {}"
        ),
        "content": {"application/json": {"schema": {}}},
    }
    responses = {
        "202": {
            "description": "the process is started (or was, by a call with the same key)",
            "content": {"application/json": {"schema": openapi._ref("workflow.Started")}},
        },
        "400": openapi._problem("the body is not JSON, or a bad Idempotency-Key"),
        "403": openapi._problem("wrong or missing secret or signature"),
        "404": openapi._problem("no enabled process takes webhooks here, or no such record"),
        "413": openapi._problem("request body too large"),
        "422": openapi._problem("the body has no usable record_id", validation=True),
        "429": openapi._problem("too many calls", headers=openapi._RETRY_AFTER),
        "503": openapi._problem("the process's secret is not configured on this server"),
    }
    spec.tag({"name": "hooks", "description": "inbound webhooks that start processes"})
    spec.path(
        path=f"{PREFIX}/{{process}}/{{token}}",
        parameters=[
            process,
            {
                "name": "token",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "the process's secret (signature: url)",
            },
        ],
        operations={
            "post": {
                "tags": ["hooks"],
                "operationId": "webhook_with_secret",
                "summary": "Start a process; the secret is in the URL",
                "security": [],
                "parameters": [key],
                "requestBody": body,
                "responses": responses,
            }
        },
    )
    spec.path(
        path=f"{PREFIX}/{{process}}",
        parameters=[process],
        operations={
            "post": {
                "tags": ["hooks"],
                "operationId": "webhook_signed",
                "summary": "Start a process; the body is signed (signature: hmac)",
                "security": [],
                "parameters": [
                    {
                        "name": SIGNATURE_HEADER,
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": 't=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">',
                    },
                    key,
                ],
                "requestBody": body,
                "responses": responses,
            }
        },
    )
