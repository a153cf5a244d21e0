"""Building a catalog without the cyclic garbage collector's pauses.

Reading and compiling packs allocates hundreds of thousands of small objects that all
stay alive (YAML trees with their positions, then the frozen model).  Every few hundred
allocations Python's collector walks the young objects, and each time the survivors have
grown by a quarter it walks *all* of them: on a catalog of 500 entities that was more
than half of the load.  None of this work makes cycles worth collecting before the build
ends, so the collector waits until then, as bulk loaders commonly do.

When it ends, what the build made is moved to the oldest generation, where the next full
collection looks at it like at everything else.  Otherwise the first young collection
after the pause would walk all of it at once (a tenth of the load again).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # builds running in this process (threads, nested calls)
_paused = False  # whether the builds turned the collector off (and so must turn it on)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a block with the cyclic collector off, unless it was off already.  Nested and
    concurrent blocks share one pause; the last to end turns the collector back on."""
    global _depth, _paused
    with _lock:
        if _depth == 0:
            _paused = gc.isenabled()
            if _paused:
                gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _paused:
                _paused = False
                # freeze + unfreeze splices the young objects into the oldest generation
                # without looking at them; skipped if someone froze objects on purpose (a
                # server before it forks), as unfreezing would undo that
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
