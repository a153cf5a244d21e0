"""UI benchmark: the server-side render of a list page and of a record form over a large
table, each against the bare query behind it, on the same database in the same run.

    xrm bench ui --json [--rows N] [--database URL] [--repeats N] [--keep]

The database is ``--database``, else ``XRM_DATABASE_URL``, else a temporary SQLite file;
on PostgreSQL the run works in a fresh schema (dropped afterwards), as ``bench storage``
does.  The shipped core and sales packs are installed and the ``opportunity`` table is
filled with ``--rows`` records (default 1,000,000 on PostgreSQL, 100,000 on SQLite)
spread over 2,000 accounts; a sales manager (reads every record) is signed in.

Figures (medians of ``--repeats`` requests after warm-up, in milliseconds):

- ``list_page_ms``: ``GET /views/open_opportunities``, the 50 first rows of a view with a
  filter (open stages), a sort (close date) and seven columns (two lookups resolved to
  titles, money and dates in the user's locale), rendered as a whole page: session,
  principal, catalog check, query, titles, template.  The record count is fetched by the
  page afterwards (htmx), so it is not part of the page.
- ``list_query_ms``: the bare query behind it, hand-written in SQLAlchemy Core (the same
  columns, filter, sort and limit); ``list_page_ratio`` = page / query.
  ``list_records_ms`` is the records-service call the page makes.
- ``form_page_ms``: ``GET /r/opportunity/<id>`` for a record in the middle of the table,
  the whole form (tabs, sections, stage bar, lookups' titles); its timeline and related
  lists load afterwards (htmx).  ``form_query_ms``: ``SELECT * ... WHERE id = :id`` in
  Core; ``form_page_ratio`` = page / query.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import sys
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_ui.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_storage import bench_database
from benchmarks.common import environment, median_ms, progress, ratio, rounded

VIEW = "open_opportunities"
STAGES = ("prospecting", "qualification", "proposal", "negotiation", "won", "lost")
WEIGHTS = (30, 20, 15, 15, 10, 10)
PROBABILITY = {
    "prospecting": 10,
    "qualification": 20,
    "proposal": 50,
    "negotiation": 80,
    "won": 100,
    "lost": 0,
}
ACCOUNTS = 2000
BATCH = 10_000
PASSWORD = "benchmark password"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_page_args(
        argv,
        "xrm bench ui",
        "Server-side render time of a list page and a record form, against the bare queries behind them.",
        repeats=50,
        repeated="timed requests of each page",
        default_rows="1,000,000 on PostgreSQL, 100,000 on SQLite",
    )


def parse_page_args(
    argv: list[str] | None,
    prog: str,
    description: str,
    *,
    repeats: int,
    repeated: str,
    default_rows: str,
) -> argparse.Namespace:
    """The options of the suites that fill the shipped packs' opportunities and time what
    a user meets (this one and ``bench reports``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--rows", type=int, help=f"opportunities in the table (default: {default_rows})"
    )
    parser.add_argument(
        "--database", help="database URL (default: $XRM_DATABASE_URL, else a temporary SQLite file)"
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"{repeated} (default {repeats})"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated data")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark schema or file")
    parser.add_argument("--quiet", action="store_true", help="no progress notes on stderr")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the CLI prints
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 100:
        parser.error("--rows must be at least 100")
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def fill(store, user_id: int, rows: int, seed: int, say, owners: list[int] | None = None) -> None:
    """Accounts through the records service; opportunities by the batch in Core (the
    figures are about reading, and a million records through the full write path would
    only make the set-up slower), owned by ``user_id`` or spread over ``owners``."""
    from xrm.storage.database import WRITE
    from xrm.storage.tables import tables_for

    rnd = random.Random(seed)
    account_ids = (
        store.records("account", user_id)
        .bulk_create(
            [
                {
                    "name": f"Account {i:04d} {rnd.randrange(10**6)}",
                    "industry": rnd.choice(("retail", "finance", "technology")),
                }
                for i in range(ACCOUNTS)
            ]
        )
        .ids
    )
    table = tables_for(store.refresh())["opportunity"]
    now = store.clock.now()
    base = dt.date(2026, 1, 1)
    system = {
        "created_at": now,
        "updated_at": now,
        "created_by": user_id,
        "updated_by": user_id,
        "owner": user_id,
        "version": 1,
    }
    written = 0
    while written < rows:
        batch = []
        for _ in range(min(BATCH, rows - written)):
            stage = rnd.choices(STAGES, WEIGHTS)[0]
            amount = Decimal(rnd.randrange(10_000, 50_000_000)).scaleb(-2)
            probability = Decimal(PROBABILITY[stage])
            batch.append(
                {
                    "name": f"Deal {written + len(batch):07d}",
                    "account": rnd.choice(account_ids),
                    "amount": amount,
                    "close_date": base + dt.timedelta(days=rnd.randrange(-730, 730)),
                    "stage": stage,
                    "probability": probability,
                    "expected_revenue": (amount * probability / 100).quantize(Decimal("0.01")),
                    "forecast_category": "pipeline",
                    **system,
                    "owner": rnd.choice(owners) if owners else user_id,
                }
            )
        with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(table.insert(), batch)
        written += len(batch)
        if written % 100_000 == 0 or written == rows:
            say(f"{written:,} opportunities")
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))


def core_list_query(store):
    """The list page's query written by hand: columns, filter, sort, limit."""
    from xrm.storage.tables import tables_for

    table = tables_for(store.refresh())["opportunity"]
    statement = (
        sa.select(
            table.c.id,
            table.c.version,
            table.c.name,
            table.c.account,
            table.c.amount,
            table.c.close_date,
            table.c.stage,
            table.c.probability,
            table.c.owner,
        )
        .where(
            sa.or_(table.c.stage.is_(None), table.c.stage.not_in(["won", "lost"])),
            table.c.close_date.is_not(None),
        )
        .order_by(table.c.close_date.asc(), table.c.id.asc())
        .limit(51)
    )

    def run():
        with store.engine.connect() as conn:
            return conn.execute(statement).all()

    return run


def core_form_query(store, ident: int):
    from xrm.storage.tables import tables_for

    table = tables_for(store.refresh())["opportunity"]
    statement = sa.select(table).where(table.c.id == ident)

    def run():
        with store.engine.connect() as conn:
            return conn.execute(statement).first()

    return run


def signed_in_client(app, email: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    if response.status_code != 303:
        raise SystemExit("xrm bench ui: could not sign in")
    return client


def page_timer(client, url: str):
    def run():
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"xrm bench ui: {url} answered {response.status_code}")
        return response

    return run


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    def say(message: str) -> None:
        progress(message, not args.quiet)

    import xrm
    from xrm.metadata import discover
    from xrm.web import create_app

    with bench_database(args.database, args.keep, say) as (url, options):
        dialect = "postgresql" if url.startswith("postgres") else "sqlite"
        rows = args.rows or (1_000_000 if dialect == "postgresql" else 100_000)
        store = xrm.open(url, **options)
        try:
            packs = discover()
            store.install([packs["core"], packs["sales"]])
            user_id = store.add_user(
                "manager@example.com", "Bench Manager", password=PASSWORD, roles=["manager"]
            )
            say(f"filling {rows:,} opportunities on {dialect}")
            fill(store, user_id, rows, args.seed, say)
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
            view = store.refresh().views[VIEW]
            records = store.records("opportunity", principal=store.principal(user_id))
            from xrm.web.ui.filtering import to_raw

            def records_query():
                return records.query(
                    filter=to_raw(view.filter),
                    sort=list(view.sort),
                    fields=list(view.columns),
                    limit=50,
                )

            ident = rows // 2
            repeats = args.repeats
            warmup = max(3, repeats // 10)
            say("timing the list page")
            list_query = median_ms(core_list_query(store), repeats, warmup)
            list_records = median_ms(records_query, repeats, warmup)
            list_page = median_ms(page_timer(client, f"/views/{VIEW}"), repeats, warmup)
            say("timing the form page")
            form_query = median_ms(core_form_query(store, ident), repeats, warmup)
            form_page = median_ms(page_timer(client, f"/r/opportunity/{ident}"), repeats, warmup)
        finally:
            store.close()
    return {
        "suite": "ui",
        "database": dialect,
        "rows": rows,
        "repeats": repeats,
        "list_page_ms": rounded(list_page),
        "list_query_ms": rounded(list_query),
        "list_records_ms": rounded(list_records),
        "list_page_ratio": rounded(ratio(list_page, list_query)),
        "list_page_vs_records": rounded(ratio(list_page, list_records)),
        "form_page_ms": rounded(form_page),
        "form_query_ms": rounded(form_query),
        "form_page_ratio": rounded(ratio(form_page, form_query)),
        "environment": environment(),
    }


if __name__ == "__main__":  # pragma: no cover
    from benchmarks.common import to_json

    print(to_json(main(sys.argv[1:])))
