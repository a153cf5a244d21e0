"""Security headers on every response: Content-Security-Policy, no sniffing, no framing,
a same-origin referrer, and no caching of what a signed-in user was shown.

Pages load scripts, styles, fonts and images from this site only (everything is vendored
under ``static/``), and no template has an inline script, style attribute or event
handler.  The one exception is Trix, which adds a ``<style>`` element for its editor
elements: it reads the per-response nonce from ``<meta name="trix-csp-nonce">`` and the
policy allows styles carrying that nonce.  htmx's own indicator styles are switched off
in the page's ``htmx-config``.  Answers that are not HTML get a policy that allows
nothing, so a JSON document or a download opened in a tab cannot run anything either.
"""

from __future__ import annotations

import secrets

from flask import Flask, g, request

#: The policy of HTML pages; {nonce} is the response's style nonce.
PAGE_POLICY = (
    "default-src 'self'; "
    "script-src 'self'; "
    "style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data: blob:; "
    "font-src 'self' data:; "
    "connect-src 'self'; "
    "object-src 'none'; "
    "base-uri 'none'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Everything else (JSON, downloads, problem documents).
DOCUMENT_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


def csp_nonce() -> str:
    """The style nonce of this response (made when a template first asks for it)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def _headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for older browsers
    if request.endpoint == "static":
        return response
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", PAGE_POLICY.format(nonce=csp_nonce()))
    else:
        headers.setdefault("Content-Security-Policy", DOCUMENT_POLICY)
    # Pages, API answers and downloads hold what one user may see: no shared cache or
    # browser history may keep them.  A view that knows better sets its own header.
    if "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
