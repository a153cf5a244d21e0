"""Errors as RFC 9457 problem documents (``application/problem+json``).

Views raise :class:`Problem`; the handlers registered here also turn every HTTP error
under ``/api/`` (404 of an unknown route, 405, 413 of an oversize body, 429 of a rate
limit, a CSRF failure) into the same shape, so an API client never has to parse HTML.
An unexpected exception becomes a 500 problem that names no internals.  Outside the API,
an error is answered by the UI's page for it (:func:`html_error`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping

from flask import Flask, Response, current_app, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from .redaction import redact

MEDIA_TYPE = "application/problem+json"
API_PREFIX = "/api/"

log = logging.getLogger(__name__)

#: Problem types: a URN per kind of failure a client may want to tell apart.
VALIDATION = "urn:xrm:problem:validation-failed"
BAD_FILTER = "urn:xrm:problem:bad-filter"
BAD_CURSOR = "urn:xrm:problem:bad-cursor"
BAD_REQUEST = "urn:xrm:problem:bad-request"
STALE = "urn:xrm:problem:stale-version"
CONFLICT = "urn:xrm:problem:conflict"
FORBIDDEN = "urn:xrm:problem:forbidden"
NOT_FOUND = "urn:xrm:problem:not-found"
UNAUTHORIZED = "urn:xrm:problem:unauthorized"
RATE_LIMITED = "urn:xrm:problem:rate-limited"
CSRF = "urn:xrm:problem:csrf-failed"


class Problem(Exception):
    """An error to answer with a problem document; extra members go into the body."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        type: str = "about:blank",  # noqa: A002 - the RFC's member name
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra,
    ):
        super().__init__(detail or title or HTTP_STATUS_CODES.get(status, ""))
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict:
        doc = {
            "type": self.type,
            "title": self.title or HTTP_STATUS_CODES.get(self.status, "Error"),
            "status": self.status,
        }
        if self.detail:
            doc["detail"] = self.detail
        doc["instance"] = redact(request.path) if request else None
        doc.update(self.extra)
        return {k: v for k, v in doc.items() if v is not None}

    def response(self) -> Response:
        payload = json.dumps(self.body(), ensure_ascii=False, default=str)
        response = Response(payload, status=self.status, mimetype=MEDIA_TYPE)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def validation_failed(
    errors: Mapping[str, list[str]], detail: str | None = None, **extra
) -> Problem:
    """A 422 with field-level messages: ``errors: {field: [message, ...]}``."""
    errors = {str(k): [str(m) for m in v] for k, v in errors.items()}
    if detail is None:
        first = next(iter(errors.items()), None)
        detail = f"{first[0]}: {first[1][0]}" if first and first[1] else "the request is not valid"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
    return Problem(422, detail, type=VALIDATION, title="Validation failed", errors=errors, **extra)


def wants_problem() -> bool:
    return request.path.startswith(API_PREFIX)


def _from_http(exc: HTTPException) -> Problem:
    headers = dict(exc.get_headers()) if exc.code == 405 else {}
    headers.pop("Content-Type", None)
    type_ = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND}.get(exc.code or 500, "about:blank")
    detail = exc.description if exc.code != 404 else "no such resource"
    return Problem(exc.code or 500, detail, type=type_, headers=headers)


def rate_limited(what: str = "requests") -> Problem:
    """The 429 problem for a spent request budget, with when to come back."""
    seconds = retry_after_seconds()
    return Problem(
        429,
        f"too many {what}; retry in {seconds} s",
        type=RATE_LIMITED,
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
    )


def retry_after_seconds() -> int:
    """Seconds until the rate limit that refused this request lets it through again."""
    for limiter in current_app.extensions.get("limiter") or ():
        current = limiter.current_limit
        if current is None or not current.breached:
            continue
        try:
            return max(1, math.ceil(current.reset_at - time.time()))
        except Exception:  # storage went away: a safe guess beats a 500
            break
    return 60


#: Where the UI puts its error pages (``ui.init_app``): ``render(exc)`` answers an HTML
#: request's error, or returns ``exc`` for werkzeug's plain page.
ERROR_PAGE = "xrm_error_page"


def html_error(exc: HTTPException):
    """An error outside the API as the UI's page, else werkzeug's (no UI, or its page
    failed too: the first failure is what gets logged)."""
    render = current_app.extensions.get(ERROR_PAGE)
    if render is None:
        return exc
    try:
        return render(exc)
    except Exception:
        log.exception("the error page for a %s failed", exc.code)
        return exc


def register(app: Flask) -> None:
    """Install the handlers that answer API errors with problem documents."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem):
        return exc.response()

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 429:
            if wants_problem():
                return rate_limited().response()
            response = exc.get_response()
            response.headers["Retry-After"] = str(retry_after_seconds())
            return response
        if exc.code == 400 and isinstance(exc, CSRFError) and wants_problem():
            return Problem(400, exc.description, type=CSRF, title="CSRF check failed").response()
        if not wants_problem():
            return html_error(exc)
        return _from_http(exc).response()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):  # pragma: no cover - handled above
            return _http(exc)
        log.exception("unhandled error on %s %s", request.method, redact(request.path))
        if not wants_problem():
            return html_error(InternalServerError(original_exception=exc))
        return Problem(500, "an unexpected error occurred; it has been logged").response()
