"""Secrets that travel in URLs, masked before a path is shown or written to a log.

A ``signature: url`` webhook carries its process's secret as the last part of
``/hooks/<process>/<secret>``.  Problem documents name the path they answer (``instance``)
and access logs record every request line, so both would hand the secret to whoever
reads them; they get ``/hooks/<process>/[redacted]`` instead.
"""

from __future__ import annotations

import re

MASK = "[redacted]"

# "/hooks/<process>/" at the start of a path, after a space (a request line) or after a
# scheme and host (a Referer); everything after it up to the next space is the secret.
_HOOK_SECRET = re.compile(r"(^|\s|://[^/\s]*)(/hooks/[^/\s?#]+/)\S+")


def redact(text: str) -> str:
    """``text`` (a path, a request line, a URL) with every webhook secret masked."""
    if "/hooks/" not in text:
        return text
    return _HOOK_SECRET.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
