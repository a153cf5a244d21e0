"""Webhooks: outbound calls (signed, with a stable Idempotency-Key) and inbound ones that
start a process (a secret in the URL, or an HMAC signature header).

Outbound: the body is signed with HMAC-SHA256 over ``timestamp.body`` in
``X-XRM-Signature: t=<unix>,v1=<hex>``; ``Idempotency-Key`` is the same on every retry of
one step of one instance, so the receiver can drop a repeat.  A 2xx answer succeeds;
anything else (or no answer) fails the step, which retries with back-off, then parks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

SIGNATURE_HEADER = "X-XRM-Signature"
USER_AGENT = "xrm-workflow/1"


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


def verify(
    secret: str, body: bytes, header: str | None, *, tolerance: int = 300, now: float | None = None
) -> bool:
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(  # bytes: a non-ASCII header is a mismatch, not an error
        sign(secret, body, timestamp).encode(), f"t={timestamp},v1={parts.get('v1', '')}".encode()
    )


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
    if trigger.signature == "hmac":
        if not verify(secret, body, lowered.get(SIGNATURE_HEADER.lower())):
            raise WebhookRefused("bad or missing signature")
    elif token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise WebhookRefused("bad token")
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise WebhookRefused("the body is not JSON") from None
    record_id = payload.get("record_id") if isinstance(payload, dict) and process.entity else None
    key = lowered.get("idempotency-key")
    return start(
        store,
        process_name,
        record_id,
        payload=payload if isinstance(payload, dict) else {"body": payload},
        key=f"hook:{process_name}:{key}" if key else None,
        trigger="webhook",
    )
