"""Where a ``next`` parameter may send a browser: a path on this site, never elsewhere.

Every ``next`` (sign-in, "Save and close", preferences, the processes admin) goes through
:func:`safe_next`, because an open redirect turns a link to this site into a phishing aid.
Browsers are lenient with what they get in ``Location``: they drop tabs and newlines
anywhere and control characters and spaces at the ends, read ``\\`` as ``/``, and some
decode percent escapes before deciding what is a host.  So ``/%09/evil.example`` becomes
``//evil.example`` in the browser although it looked like a path here.  A target is
accepted only if it is a same-site path in every one of those readings.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

#: Rounds of percent-decoding looked at (``%25%32%66`` is ``%2f`` is ``/``).
DECODE_ROUNDS = 3


def _without_blanks(text: str) -> str:
    """``text`` without ASCII control characters and whitespace (what browsers skip)."""
    return "".join(ch for ch in text if ord(ch) > 0x20 and ord(ch) != 0x7F and not ch.isspace())


def _is_local_path(text: str) -> bool:
    if not text.startswith("/") or text[1:2] in ("/", "\\") or "\\" in text:
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def _readings(target: str):
    text = target
    for _ in range(DECODE_ROUNDS + 1):
        yield _without_blanks(text)
        decoded = unquote(text)
        if decoded == text:
            return
        text = decoded


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site in every way a browser may read it, else None.

    A target holding raw control characters is refused outright: pages never link like
    that, and a header must not carry them."""
    if not target or not isinstance(target, str) or len(target) > 2048:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return None
    if all(_is_local_path(reading) for reading in _readings(target)):
        return target
    return None
