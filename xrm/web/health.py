"""``GET /health``: whether this server can do its work, for load balancers and monitors.

Unauthenticated, so it says only what a stranger may know: ``status`` (``ok``, or
``degraded`` when no workflow worker has beaten within ``heartbeat.STALE_AFTER``: pages
are served, but processes, reminders and email wait) and the age of the last worker
beat.  503 with ``status: unavailable`` when the database does not answer.  No host
names, pids, versions or errors.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify

from ..workflow import heartbeat
from . import current_store

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/health")
def health():
    try:
        latest = heartbeat.latest(current_store())
    except sa.exc.SQLAlchemyError as exc:  # refused, timed out, no connection left in the pool
        log.warning("health: the database does not answer: %s", getattr(exc, "orig", None) or exc)
        response = jsonify(status="unavailable")
        response.status_code = 503
    else:
        fresh = latest is not None and not latest["stale"]
        age = round(latest["age_s"], 1) if latest is not None else None
        response = jsonify(status="ok" if fresh else "degraded", worker={"last_beat_age_s": age})
    response.headers["Cache-Control"] = "no-store"
    return response
