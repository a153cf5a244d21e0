"""Time spans as definitions write them (``15m``, ``2h``, ``3d``, ``1h30m``) and signed
offsets (``-3d``, ``+2h``): processes, SLAs and scoring's decay read them."""

from __future__ import annotations

import re

_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_span(text) -> int:
    """``15m``, ``2h``, ``3d``, ``1w``, ``1h30m`` as whole seconds; raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("expected a duration such as 15m, 2h or 3d")
    compact = text.replace(" ", "").lower()
    parts = _SPAN_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration (expected e.g. 15m, 2h, 3d, 1h30m)")
    return int(sum(float(n) * _UNIT[u] for n, u in parts))


def parse_offset(text) -> int:
    """``-3d``, ``+2h``, ``-15m`` (or ``3d``, meaning after) as signed seconds."""
    if not isinstance(text, str):
        raise ValueError("expected an offset such as -3d, +2h or -15m")
    stripped = text.strip()
    sign = -1 if stripped.startswith("-") else 1
    return sign * parse_span(stripped.lstrip("+-"))
