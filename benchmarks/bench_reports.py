"""Reports benchmark: a grouping through the records service against the same grouping
hand-written in SQLAlchemy Core, the historical funnel over the stage history, and the
sales dashboard rendered server-side, on the same database in the same run.

    xrm bench reports --json [--rows N] [--database URL] [--repeats N] [--keep]

The database is ``--database``, else ``XRM_DATABASE_URL``, else a temporary SQLite file;
on PostgreSQL the run works in a fresh schema (dropped afterwards), as ``bench storage``
does.  The shipped core and sales packs are installed; ``--rows`` opportunities (default
1,000,000 on PostgreSQL, 100,000 on SQLite) are spread over 2,000 accounts and 20 sellers,
and each has the stage history of the way it came to its stage (one to five stays, the
last one open unless the deal is closed).  A sales manager (reads every record) is signed
in; the figures are his.

Figures (medians of ``--repeats`` calls after warm-up, milliseconds):

- ``group_by_stage_ms``: ``Records.aggregate(["stage"], ["count", "sum:amount"])`` over the
  open opportunities, as the manager; ``group_by_stage_core_ms`` the same ``GROUP BY``
  written in Core; ``group_by_stage_vs_core`` the first over the second (target <= 1.2),
  timed in turns.
- ``pipeline_report_ms``: the shipped ``pipeline_by_stage`` report run whole (rows, the
  weighted measure and the totals).
- ``funnel_history_ms``: the shipped ``opportunity_conversion`` report (the historical
  conversion funnel over ``xrm_stage_history``) for the last twelve months.
- ``dashboard_ms``: ``GET /dashboards/sales``, the whole page rendered server-side with
  every widget's figures, as a user reloading it sees it (widgets served from the
  dashboard cache, each saying how fresh it is); ``dashboard_cold_ms`` the same page with
  the cache emptied before each request (every widget computed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
from pathlib import Path

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_reports.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_storage import bench_database
from benchmarks.bench_ui import PASSWORD, fill, page_timer, parse_page_args, signed_in_client
from benchmarks.common import environment, median_ms, paired_median_ms, progress, ratio, rounded

SELLERS = 20
OPEN = ["prospecting", "qualification", "proposal", "negotiation"]
#: The way to each stage: the stays a deal in that stage has had (the last one is current).
PATHS = {
    "prospecting": ["prospecting"],
    "qualification": ["prospecting", "qualification"],
    "proposal": ["prospecting", "qualification", "proposal"],
    "negotiation": ["prospecting", "qualification", "proposal", "negotiation"],
    "won": ["prospecting", "qualification", "proposal", "negotiation", "won"],
    "lost": ["prospecting", "qualification", "lost"],
}
CLOSED = ("won", "lost")
HISTORY_BATCH = 50_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_page_args(
        argv,
        "xrm bench reports",
        "Report figures against hand-written Core: a grouping by stage, the historical "
        "funnel and the sales dashboard.",
        repeats=15,
        repeated="timed calls of each figure",
        default_rows="1,000,000 on PostgreSQL, 100,000 on SQLite",
    )


def fill_history(store, seed: int, say) -> int:
    """The stage history of every opportunity: the stays along its path to its stage, the
    last one ending when the deal closed (closed deals) or still open.  Written with COPY on
    PostgreSQL (millions of rows), by the batch on SQLite."""
    from xrm.storage import tables as T
    from xrm.storage.database import WRITE
    from xrm.storage.tables import tables_for

    table = tables_for(store.refresh())["opportunity"]
    rnd = random.Random(seed)
    now = store.clock.now()
    history = T.stage_history
    columns = ["entity", "record_id", "stage", "previous", "entered_at", "left_at", "user_id"]
    written = 0
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        deals = conn.execute(sa.select(table.c.id, table.c.stage, table.c.owner)).all()
        postgres = conn.dialect.name == "postgresql"
        batch: list[tuple] = []

        def flush() -> None:
            if not batch:
                return
            if postgres:
                raw = conn.connection.driver_connection
                with (
                    raw.cursor() as cursor,
                    cursor.copy(
                        f"COPY xrm_stage_history ({', '.join(columns)}) FROM STDIN"
                    ) as copy,
                ):
                    for row in batch:
                        copy.write_row(row)
            else:
                conn.execute(history.insert(), [dict(zip(columns, row)) for row in batch])
            batch.clear()

        for ident, stage, owner in deals:
            path = PATHS.get(stage or "prospecting", ["prospecting"])
            # Started up to two years ago; each stay lasts one to sixty days.
            at = now - dt.timedelta(days=rnd.randrange(30, 730), minutes=rnd.randrange(1440))
            previous = None
            for position, step in enumerate(path):
                last = position == len(path) - 1
                left = None
                if not last or step in CLOSED:
                    left = min(at + dt.timedelta(days=rnd.randrange(1, 60)), now)
                batch.append(("opportunity", ident, step, previous, at, left, owner))
                previous, at = step, (left or at)
            if len(batch) >= HISTORY_BATCH:
                written += len(batch)
                flush()
        written += len(batch)
        flush()
    say(f"{written:,} stage history rows")
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
    return written


def core_group_by_stage(store):
    """The grouping written by hand: open deals by stage, their count and amount."""
    from xrm.storage.tables import tables_for

    table = tables_for(store.refresh())["opportunity"]
    statement = (
        sa.select(table.c.stage, sa.func.count(), sa.func.sum(table.c.amount))
        .where(sa.or_(table.c.stage.is_(None), table.c.stage.not_in(["won", "lost"])))
        .group_by(table.c.stage)
    )

    def run():
        with store.engine.connect() as conn:
            return conn.execute(statement).all()

    return run


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    def say(message: str) -> None:
        progress(message, not args.quiet)

    import xrm
    from xrm.metadata import discover
    from xrm.reports import run_report
    from xrm.web import create_app

    result: dict = {"suite": "reports"}
    with bench_database(args.database, args.keep, say) as (url, options):
        dialect = "postgresql" if url.startswith("postgres") else "sqlite"
        rows = args.rows or (1_000_000 if dialect == "postgresql" else 100_000)
        store = xrm.open(url, **options)
        try:
            packs = discover()
            store.install([packs["core"], packs["sales"]])
            manager = store.add_user(
                "manager@example.com", "Bench Manager", password=PASSWORD, roles=["manager"]
            )
            sellers = [
                store.add_user(f"seller{i}@example.com", f"Seller {i}", roles=["user"])
                for i in range(SELLERS)
            ]
            say(f"filling {rows:,} opportunities on {dialect}")
            fill(store, manager, rows, args.seed, say, owners=sellers)
            history_rows = fill_history(store, args.seed, say)
            principal = store.principal(manager)
            records = store.records("opportunity", principal=principal)
            catalog = store.refresh()
            repeats, warmup = args.repeats, max(2, args.repeats // 5)
            open_deals = ["stage", "not_in", ["won", "lost"]]

            def ours():
                return records.aggregate(["stage"], ["count", "sum:amount"], open_deals)

            core = core_group_by_stage(store)
            if sorted(map(tuple, core())) != sorted(
                (r["stage"], r["count"], r["sum:amount"]) for r in ours()
            ):
                raise SystemExit("xrm bench reports: the two groupings disagree")
            say("timing the grouping by stage")
            group_ms, core_ms = paired_median_ms(ours, core, repeats, warmup)
            result.update(
                database=dialect,
                rows=rows,
                history_rows=history_rows,
                repeats=repeats,
                group_by_stage_ms=rounded(group_ms),
                group_by_stage_core_ms=rounded(core_ms),
                group_by_stage_vs_core=rounded(ratio(group_ms, core_ms)),
            )
            say("timing the pipeline report")
            pipeline = catalog.reports["pipeline_by_stage"]
            result["pipeline_report_ms"] = rounded(
                median_ms(lambda: run_report(store, pipeline, {}, principal), repeats, warmup)
            )
            funnel = catalog.reports.get("opportunity_conversion")
            if funnel is not None:
                say("timing the historical funnel")
                asked = {"period": "last_12_months"} if "period" in funnel.parameters else {}
                result["funnel_history_ms"] = rounded(
                    median_ms(lambda: run_report(store, funnel, asked, principal), repeats, warmup)
                )
            else:
                result["funnel_history_ms"] = None  # no such report in this version
            if "sales" in getattr(catalog, "dashboards", {}):
                say("timing the sales dashboard")
                app = create_app(
                    store,
                    {
                        "TESTING": True,
                        "SECRET_KEY": "bench",
                        "SESSION_COOKIE_SECURE": False,
                        "RATELIMIT_ENABLED": False,
                    },
                )
                client = signed_in_client(app, "manager@example.com")
                page = page_timer(client, "/dashboards/sales")
                result["dashboard_ms"] = rounded(median_ms(page, repeats, warmup))
                from xrm.reports import dashboards as D

                def cold():
                    D.clear_cache()
                    return page()

                result["dashboard_cold_ms"] = rounded(median_ms(cold, repeats, warmup))
            else:
                result["dashboard_ms"] = None  # no sales dashboard in this version
        finally:
            store.close()
    checks = {
        "group_by_stage_vs_core": (result.get("group_by_stage_vs_core"), 1.2),
        "dashboard_ms": (result.get("dashboard_ms"), 500),
    }
    result["targets"] = {name: limit for name, (_value, limit) in checks.items()}
    result["ok"] = all(value is not None and value <= limit for value, limit in checks.values())
    result["environment"] = environment()
    return result


if __name__ == "__main__":  # pragma: no cover
    from benchmarks.common import to_json

    print(to_json(main(sys.argv[1:])))
