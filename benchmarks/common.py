"""Helpers shared by the benchmark suites: timing, medians, ratios, profiles, environment.

A suite is a module ``benchmarks/bench_<name>.py`` whose ``main(argv) -> dict`` returns its
figures; ``xrm bench <name> [--json] [suite options]`` prints that dict as JSON.  Figures are
plain numbers (rates per second, times in milliseconds, ratios), rounded for reading.
"""

from __future__ import annotations

import cProfile
import io
import json
import platform
import pstats
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

clock = time.perf_counter


class Stopwatch:
    """Elapsed seconds of a ``with`` block (``.seconds``, ``.ms``)."""

    def __init__(self):
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = clock()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = clock() - self.started

    @property
    def ms(self) -> float:
        return self.seconds * 1000


def timings(func: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        func()
    out = []
    for _ in range(repeats):
        started = clock()
        func()
        out.append(clock() - started)
    return out


def median_ms(func: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median milliseconds of ``repeats`` calls."""
    return statistics.median(timings(func, repeats, warmup)) * 1000


def paired_median_ms(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int, warmup: int = 1
) -> tuple[float, float]:
    """Median milliseconds of two calls timed in turns (the one going first alternates), so
    that a change of load on the machine (autovacuum after a fill, another process) falls
    on both alike."""
    for _ in range(warmup):
        first()
        second()
    a: list[float] = []
    b: list[float] = []
    for turn in range(repeats):
        for func, out in ((first, a), (second, b)) if turn % 2 == 0 else ((second, b), (first, a)):
            started = clock()
            func()
            out.append(clock() - started)
    return statistics.median(a) * 1000, statistics.median(b) * 1000


def median(values) -> float:
    return statistics.median(values)


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``: for rates below 1 means slower, for times above 1 means slower."""
    return ours / baseline if baseline else float("inf")


def rounded(value: float, digits: int = 3) -> float | int:
    """A figure with ``digits`` significant digits (large ones as integers)."""
    if value == 0 or value != value or value in (float("inf"), float("-inf")):
        return value
    if abs(value) >= 10 ** (digits - 1):
        return int(round(value))
    return float(f"{value:.{digits}g}")


def environment() -> dict[str, str]:
    """Versions that explain a figure: Python, SQLite library, SQLAlchemy, the machine."""
    import sqlalchemy

    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "machine": f"{platform.system()} {platform.machine()}",
    }


@contextmanager
def profiled(
    title: str, enabled: bool, top: int = 15, stream=None, sort: str = "cumulative"
) -> Iterator[None]:
    """Run the block under cProfile and print the ``top`` entries by ``sort`` (pstats'
    keys: cumulative, tottime...)."""
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        out = stream or sys.stderr
        buffer = io.StringIO()
        pstats.Stats(profile, stream=buffer).strip_dirs().sort_stats(sort).print_stats(top)
        print(f"==== profile: {title} (top {top} by {sort})", file=out)
        print(buffer.getvalue().strip(), file=out)


def to_json(result: dict, *, compact: bool = True) -> str:
    return json.dumps(result, indent=None if compact else 2, default=str, ensure_ascii=False)


def progress(message: str, enabled: bool = True) -> None:
    """A note on stderr, so the JSON on stdout stays clean."""
    if enabled:
        print(f"[bench] {message}", file=sys.stderr, flush=True)
