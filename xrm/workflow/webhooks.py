"""Webhooks: outbound calls (signed, with a stable Idempotency-Key) and inbound ones that
start a process (a secret in the URL, or an HMAC signature header).

Outbound: the body is signed with HMAC-SHA256 over ``timestamp.body`` in
``X-XRM-Signature: t=<unix>,v1=<hex>``; ``Idempotency-Key`` is the same on every retry of
one step of one instance, so the receiver can drop a repeat.  A 2xx answer succeeds;
anything else (or no answer) fails the step, which retries with back-off, then parks.

Inbound signatures are accepted once: an accepted signature is kept in the database
(``xrm_hook_signature``, shared by every worker) until its timestamp leaves the tolerance,
and the same signature again is refused as a replay.  Expired ones are purged as new ones
come in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

import sqlalchemy as sa

from ..storage import tables as T
from ..storage.database import WRITE, is_postgres

SIGNATURE_HEADER = "X-XRM-Signature"
USER_AGENT = "xrm-workflow/1"
#: Seconds a signature's timestamp may be away from now.
TOLERANCE = 300


class WebhookRefused(PermissionError):
    pass


def secret_value(spec) -> str | None:
    """A secret given literally or as {env: NAME}."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        value = os.environ.get(spec["env"])
        if value is None:
            raise LookupError(f"environment variable {spec['env']} (a webhook secret) is not set")
        return value
    return str(spec)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _fields(header: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in header.split(",") if "=" in p)


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> bool:
    if not header:
        return False
    parts = _fields(header)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(  # bytes: a non-ASCII header is a mismatch, not an error
        sign(secret, body, timestamp).encode(), f"t={timestamp},v1={parts.get('v1', '')}".encode()
    )


def claim_signature(store, process_name: str, header: str, *, tolerance: int = TOLERANCE):
    """Remember a verified signature until it could no longer verify; returns its key, or
    None if it was accepted before (a replay).  One insert decides, so of two workers
    receiving the same request at once exactly one gets the key."""
    parts = _fields(header)
    key = {"process": process_name, "signature": parts["v1"]}
    expires_at = dt.datetime.fromtimestamp(int(parts["t"]) + tolerance, dt.UTC)
    table = T.hook_signatures
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(
            table.delete().where(
                table.c.expires_at < dt.datetime.fromtimestamp(time.time(), dt.UTC)
            )
        )
        if is_postgres(conn):
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        inserted = conn.execute(
            insert(table)
            .values(**key, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(table.c.signature)
        ).first()
    return key if inserted is not None else None


def release_signature(store, key: dict) -> None:
    """Forget a claimed signature whose delivery could not be started, so that the sender
    may send the same request again."""
    table = T.hook_signatures
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(
            table.delete().where(
                table.c.process == key["process"], table.c.signature == key["signature"]
            )
        )


def _started(store, instance_key: str) -> int | None:
    """The instance a delivery with this idempotency key started, if any."""
    from .tables import ensure_tables, instances

    ensure_tables(store)
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(instances.c.id).where(instances.c.key == instance_key)
        ).scalar()


def call(request: dict) -> dict:
    """Perform one outbound call described by a webhook step; never raises."""
    body = request["body"].encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": request["key"],
        **request.get("headers", {}),
    }
    try:
        secret = secret_value(request.get("secret"))
    except LookupError as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
    method = request.get("method", "POST")
    data = None if method == "GET" else body
    outbound = urllib.request.Request(request["url"], data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(outbound, timeout=request.get("timeout", 10)) as response:
            text = response.read(1_000_000).decode("utf-8", "replace")
            return {
                "ok": 200 <= response.status < 300,
                "status": response.status,
                "body": _parse(text),
            }
    except urllib.error.HTTPError as exc:
        return {"ok": False, "status": exc.code, "error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"ok": False, "status": None, "error": str(getattr(exc, "reason", exc))}


def _parse(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text[:2000]


def receive(
    store, process_name: str, body: bytes, headers: Mapping[str, str], *, token: str | None = None
) -> int:
    """Start a process from an inbound webhook; returns the instance id.

    ``signature: url`` compares ``token`` (from the URL) with the secret; ``signature: hmac``
    checks the X-XRM-Signature header.  A repeated ``Idempotency-Key`` returns the instance
    the first delivery started.  The JSON body is ``payload`` in templates; a
    ``record_id`` in it selects the record of a process on an entity.
    """
    from .instances import start

    catalog = store.refresh()
    process = catalog.processes.get(process_name)
    trigger = process.trigger("webhook") if process is not None else None
    if trigger is None or not process.enabled:
        raise WebhookRefused(f"no process {process_name!r} takes webhooks")
    secret = secret_value(trigger.secret)
    if secret is None:
        raise WebhookRefused(f"process {process_name!r} has no webhook secret configured")
    lowered = {k.lower(): v for k, v in headers.items()}
    key = lowered.get("idempotency-key")
    instance_key = f"hook:{process_name}:{key}" if key else None
    claimed = None
    if trigger.signature == "hmac":
        signature = lowered.get(SIGNATURE_HEADER.lower())
        if not verify(secret, body, signature):
            raise WebhookRefused("bad or missing signature")
        claimed = claim_signature(store, process_name, signature)
        if claimed is None:
            # The same signed request again.  A retry with the Idempotency-Key of a delivery
            # that started gets that delivery's instance (nothing happens twice); anything
            # else is a replay.
            existing = _started(store, instance_key) if instance_key else None
            if existing is None:
                raise WebhookRefused("this signature was used already: sign every delivery anew")
            return existing
    elif token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise WebhookRefused("bad token")
    try:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise WebhookRefused("the body is not JSON") from None
        record_id = (
            payload.get("record_id") if isinstance(payload, dict) and process.entity else None
        )
        return start(
            store,
            process_name,
            record_id,
            payload=payload if isinstance(payload, dict) else {"body": payload},
            key=instance_key,
            trigger="webhook",
        )
    except BaseException:
        if claimed is not None:
            release_signature(store, claimed)
        raise
