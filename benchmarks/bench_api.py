"""REST API benchmark: the platform's list endpoint under gunicorn against a hand-written
Flask app running the same query with SQLAlchemy Core, on the same database and rows.

    xrm bench api --json [--database URL] [--rows N] [--seconds S] [--concurrency C]

The database is ``--database``, else ``XRM_DATABASE_URL``, else PostgreSQL at
``postgresql://postgres@127.0.0.1:5432/test`` when it answers, else a temporary SQLite
file.  Nothing of an existing database is touched: the run works in a fresh schema
``bench_<random>`` (PostgreSQL) or a fresh file (SQLite), removed afterwards.

Both servers are gunicorn (``xrm.web.server.serve``, 2 workers, same settings, access log
off) in a spawned subprocess on a free port of 127.0.0.1.  Each is driven by the same
load loop from this process: ``C`` threads, each with its own keep-alive
``http.client.HTTPConnection``, ``S`` seconds after a 2 s warm-up, all sending

    GET /api/v1/opportunity?limit=50&sort=close_date&filter=[stage in open stages]
        &fields=name,amount,close_date,stage&count=false

Figures: ``list_rps`` / ``handwritten_rps`` (completed 200 responses per second),
``list_vs_handwritten`` (ratio, below 1 is slower), ``p99_ms`` / ``handwritten_p99_ms``
(99th percentile latency).  When the ratio is below 0.7, a short cProfile of the API
handler path (in-process, Flask's test client) is printed on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_api.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_storage import _dialect, bench_database
from benchmarks.common import clock, environment, profiled, progress, ratio, rounded, to_json

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "xrm" / "solutions" / "packs"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
ENTITY = "opportunity"
PAGE = 50
WARMUP_S = 2.0
WORKERS = 2
THREADS = 4  # gunicorn gthread threads per worker, both servers
CHUNK = 5000
HANDWRITTEN_TOKEN = "bench-handwritten-token"
OPEN_STAGES = ["prospecting", "qualification", "proposal", "negotiation"]
# qualification needs a contact; won rows fall outside the list filter
STAGES = ("prospecting", "proposal", "negotiation", "won")
COLUMNS = ["name", "amount", "close_date", "stage"]
LIST_FILTER = ["stage", "in", OPEN_STAGES]
QUERY = urllib.parse.urlencode(
    {
        "limit": PAGE,
        "sort": "close_date",
        "filter": json.dumps(LIST_FILTER),
        "fields": ",".join(COLUMNS),
        "count": "false",
    }
)
PATH = f"/api/v1/{ENTITY}?{QUERY}"


# ------------------------------------------------------------------------------ options
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xrm bench api",
        description="The REST list endpoint under gunicorn vs a hand-written Flask + "
        "SQLAlchemy Core app, same query, same rows.",
    )
    parser.add_argument(
        "--database",
        help=f"database URL (default: $XRM_DATABASE_URL, else {DEFAULT_PG} when reachable, "
        "else a temporary SQLite file)",
    )
    parser.add_argument("--rows", type=int, default=20_000, help="opportunities (default 20,000)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per server (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated data")
    parser.add_argument(
        "--profile", action="store_true", help="always print the handler-path profile"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress notes on stderr")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the CLI prints
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    if args.seconds <= 0 or args.concurrency < 1:
        parser.error("--seconds and --concurrency must be positive")
    return args


def default_url() -> str | None:
    """XRM_DATABASE_URL, else the local PostgreSQL when it answers, else None (SQLite)."""
    url = os.environ.get("XRM_DATABASE_URL")
    if url:
        return url
    from xrm.storage.database import normalize_url

    engine = sa.create_engine(
        normalize_url(DEFAULT_PG),
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return DEFAULT_PG
    except Exception:  # noqa: BLE001 - any failure means: not reachable
        return None
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ data
def fill(store, rows: int, seed: int, say) -> str:
    """Core + sales, accounts, ``rows`` opportunities, an admin; the admin's token."""
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    rnd = random.Random(seed)
    accounts = (
        store.records("account")
        .bulk_create(
            [{"name": f"Account {i} {rnd.randrange(10**6)}"} for i in range(max(100, rows // 100))]
        )
        .ids
    )
    base = dt.date(2026, 1, 1)
    opportunities = store.records(ENTITY)
    done = 0
    while done < rows:
        count = min(CHUNK, rows - done)
        batch = []
        for i in range(done, done + count):
            stage = rnd.choice(STAGES)
            batch.append(
                {
                    "name": f"Opportunity {i} {rnd.randrange(10**6)}",
                    "account": rnd.choice(accounts),
                    "amount": Decimal(rnd.randrange(10_000, 50_000_000)).scaleb(-2),
                    "close_date": base + dt.timedelta(days=rnd.randrange(-730, 730)),
                    "stage": stage,
                }
            )
        opportunities.bulk_create(batch)
        done += count
        say(f"filled {done}/{rows} opportunities")
    admin = store.add_user("bench-admin@example.com", "Bench Admin", roles=["administrator"])
    return store.create_token(admin)


# ------------------------------------------------------------------------------ servers
def _platform_factory(url: str, engine_options: dict):
    def factory():
        import xrm
        from xrm.web import create_app

        store = xrm.open(url, **engine_options)
        return create_app(store, {"RATELIMIT_ENABLED": False})

    return factory


def _handwritten_factory(url: str, engine_options: dict):
    def factory():
        from flask import Flask, Response, request

        from xrm.storage.database import create_engine

        engine = create_engine(url, **engine_options)
        table = sa.table(ENTITY, *(sa.column(c) for c in ["id", "version", *COLUMNS]))
        statement = (
            sa.select(table.c.id, table.c.version, *(table.c[c] for c in COLUMNS))
            .where(table.c.stage.in_(OPEN_STAGES))
            .order_by(table.c.close_date, table.c.id)
            .limit(PAGE)
        )
        app = Flask("handwritten")
        expected = f"Bearer {HANDWRITTEN_TOKEN}"

        @app.get(f"/api/v1/{ENTITY}")
        def opportunities():
            if request.headers.get("Authorization") != expected:
                return Response(status=401)
            with engine.connect() as conn:
                rows = conn.execute(statement).all()
            data = [
                {
                    "id": r.id,
                    "version": r.version,
                    "name": r.name,
                    "amount": None if r.amount is None else str(r.amount),
                    "close_date": None if r.close_date is None else str(r.close_date),
                    "stage": r.stage,
                }
                for r in rows
            ]
            body = json.dumps({"data": data, "next_cursor": None, "count": None})
            return Response(body, mimetype="application/json")

        return app

    return factory


def _run_server(kind: str, url: str, engine_options: dict, port: int, instance: str) -> None:
    """Subprocess entry point: serve ``kind`` with gunicorn until terminated."""
    os.environ["XRM_INSTANCE_PATH"] = instance  # the secret key file, not in the cwd
    from xrm.web.server import serve

    make = _platform_factory if kind == "platform" else _handwritten_factory
    serve(
        "127.0.0.1",
        port,
        WORKERS,
        threads=THREADS,
        app_factory=make(url, engine_options),
        accesslog=None,
        graceful_timeout=3,
        loglevel="warning",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A gunicorn server in a spawned subprocess; stopped on exit, errors included."""

    def __init__(self, kind: str, url: str, engine_options: dict, instance: str, token: str):
        self.kind, self.token = kind, token
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_run_server,
            args=(kind, url, engine_options, self.port, instance),
            name=f"bench-{kind}",
            daemon=False,
        )

    def __enter__(self) -> Server:
        self.process.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = clock() + timeout
        last = None
        while clock() < deadline:
            if not self.process.is_alive():
                raise RuntimeError(f"{self.kind} server exited ({self.process.exitcode})")
            try:
                status, body = request_once(self.port, self.token)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:300]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server not ready after {timeout} s: {last}")

    def stop(self) -> None:
        if self.process.pid is None:
            return
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def request_once(port: int, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", PATH, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------ load
def drive(port: int, token: str, seconds: float, concurrency: int) -> dict:
    """The bounded load loop: ``concurrency`` keep-alive clients, warm-up, then measure."""
    headers = {"Authorization": f"Bearer {token}"}
    started = clock()
    measure_from = started + WARMUP_S
    measure_to = measure_from + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[slot]
        try:
            while True:
                begin = clock()
                if begin >= measure_to:
                    return
                try:
                    conn.request("GET", PATH, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    ok = False
                end = clock()
                if begin >= measure_from and end <= measure_to:
                    if ok:
                        mine.append(end - begin)
                    else:
                        errors[slot] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(x for part in latencies for x in part)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))] * 1000 if every else float("nan")
    return {
        "rps": len(every) / seconds,
        "p99_ms": p99,
        "requests": len(every),
        "errors": sum(errors),
    }


# ------------------------------------------------------------------------------ profile
def profile_handler(store, token: str, requests: int = 300, top: int = 25) -> None:
    """cProfile of the API handler path in-process (Flask test client, no HTTP server)."""
    from xrm.web import create_app

    app = create_app(store, {"RATELIMIT_ENABLED": False})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(20):
        client.get(PATH, headers=headers)
    statements = [0]

    def counted(*_args) -> None:
        statements[0] += 1

    sa.event.listen(store.engine, "before_cursor_execute", counted)
    try:
        with profiled(f"{requests} x GET {PATH[:60]}... (test client)", True, top=top):
            for _ in range(requests):
                response = client.get(PATH, headers=headers)
                assert response.status_code == 200, response.status_code
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", counted)
    print(
        f"==== SQL statements per API request: {statements[0] / requests:g} "
        "(the hand-written endpoint runs 1)",
        file=sys.stderr,
    )


# ------------------------------------------------------------------------------ the run
def main(argv: list[str] | None = None) -> dict:
    import xrm

    args = parse_args(argv)
    say = (lambda message: None) if args.quiet else progress
    started = clock()
    url = args.database or default_url()
    with (
        bench_database(url, False, say) as (work_url, engine_options),
        tempfile.TemporaryDirectory(prefix="xrm-bench-api-") as instance,
    ):
        dialect = _dialect(work_url)
        store = xrm.open(work_url, **engine_options)
        try:
            say(f"{dialect}: installing core + sales, {args.rows} opportunities")
            token = fill(store, args.rows, args.seed, say)
            figures = {}
            for kind, key in (("platform", token), ("handwritten", HANDWRITTEN_TOKEN)):
                say(f"serving the {kind} app (gunicorn, {WORKERS} workers)")
                with Server(kind, work_url, engine_options, instance, key) as server:
                    say(
                        f"driving {kind}: {args.concurrency} clients, "
                        f"{WARMUP_S:g} s warm-up + {args.seconds:g} s"
                    )
                    figures[kind] = drive(server.port, key, args.seconds, args.concurrency)
            relative = ratio(figures["platform"]["rps"], figures["handwritten"]["rps"])
            if args.profile or relative < 0.7:
                profile_handler(store, token)
        finally:
            store.close()
    result = {
        "suite": "api",
        "database": dialect,
        "rows": args.rows,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "list_rps": figures["platform"]["rps"],
        "handwritten_rps": figures["handwritten"]["rps"],
        "list_vs_handwritten": relative,
        "p99_ms": figures["platform"]["p99_ms"],
        "handwritten_p99_ms": figures["handwritten"]["p99_ms"],
        "list_errors": figures["platform"]["errors"],
        "handwritten_errors": figures["handwritten"]["errors"],
        **environment(),
        "total_s": clock() - started,
    }
    return {k: (rounded(v) if isinstance(v, float) else v) for k, v in result.items()}


if __name__ == "__main__":  # pragma: no cover
    print(to_json(main(sys.argv[1:])))
