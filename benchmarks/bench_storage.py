"""Storage benchmark: the records service against hand-written SQLAlchemy Core, on the same
database, in the same run, with the same rows.

    xrm bench storage --json [--rows N] [--database URL] [--profile]

The database is ``--database``, else ``XRM_DATABASE_URL``, else a temporary SQLite file.
Nothing of an existing database is touched: on PostgreSQL the run works in a fresh schema
``bench_<random>`` (dropped afterwards), on SQLite in a fresh file next to the given one
(deleted afterwards); ``--keep`` keeps either for inspection.

Figures (``*_vs_core`` is ours divided by Core's: below 1 is slower for a rate, above 1 is
slower for a time):

- ``create_per_s`` / ``create_vs_core``: ``Records.create`` one record at a time inside
  ``store.transaction()`` batches of 500, audit on; Core: single-row INSERTs, 500 a transaction.
- ``bulk_per_s`` / ``bulk_vs_core``: ``Records.bulk_create``; Core: executemany of 500 rows.
- ``list_first_page_ms`` / ``list_first_page_vs_core``: the first 50 rows of a list view
  (filter on stage, sort by close date, the view's columns); Core: the same SELECT by hand.
- ``list_deep_page_ms`` / ``list_deep_page_vs_first``: page ``deep_page`` (5,000 when the
  table has enough rows) fetched with the keyset cursor of the page before it.
- ``count_ms``: ``Records.count()`` of the whole table (default cap, then an estimate).
- ``add_field_ms``: ``store.customize`` adding a nullable field to the full table.

The Core baseline for writes is a separate table of the entity table's shape (same column
types, foreign keys and indexes) created with Core; the list baseline reads the entity
table itself, so both sides see the same rows and indexes.  Writes are timed in turns (500
rows for create, 2,500 for bulk; the side going first alternates) so that load from other
processes on the machine falls on both sides alike; so are the reads (our first page and
Core's; the first page and the deep one), a call of each per turn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_storage.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    Stopwatch,
    clock,
    environment,
    median,
    median_ms,
    paired_median_ms,
    per_second,
    profiled,
    progress,
    ratio,
    rounded,
    to_json,
)

BATCH = 500  # records per transaction (create) and per executemany (bulk)
PAGE = 50
DEEP_PAGE = 5000
WARMUP = 50  # rows written untimed through each path first
CHUNK = 5000  # rows per bulk_create call (one transaction each) when filling
BULK_TURN = 2500  # rows per bulk_create call (and per Core transaction) when comparing

STAGES = ("prospecting", "qualification", "proposal", "negotiation", "won", "lost")
STAGE_WEIGHTS = (30, 20, 15, 15, 10, 10)
PROBABILITY = {
    "prospecting": 10,
    "qualification": 20,
    "proposal": 50,
    "negotiation": 80,
    "won": 100,
    "lost": 0,
}
OPEN_STAGES = ["prospecting", "qualification", "proposal", "negotiation"]
LIST_COLUMNS = ["name", "account", "amount", "close_date", "stage", "owner"]
LIST_FILTER = ["stage", "in", OPEN_STAGES]
LIST_SORT = [["close_date", "asc"]]
ENTITY = "opportunity"
CORE_TABLE = "bench_core_opportunity"

PACK_NAME = "storage_bench"
PACK_FILES = {
    "solution.yaml": f"""\
solution: {PACK_NAME}
version: 1.0.0
label: Storage benchmark
depends: {{core: ">=1.0,<2"}}
""",
    "entities/opportunity.yaml": """\
entity: opportunity
label: Opportunity
title: name
fields:
  name:        {type: text, required: true, max_length: 200}
  account:     {type: lookup, to: account, required: true, on_delete: restrict}
  amount:      {type: money}
  close_date:  {type: date, required: true}
  stage:       {type: choice, options: bench_stage, default: prospecting}
  probability: {type: percent}
indexes:
  - {fields: [close_date]}
""",
    "option_sets/bench.yaml": """\
option_sets:
  bench_stage:
    label: Stage
    options:
      - {value: prospecting, label: Prospecting}
      - {value: qualification, label: Qualification}
      - {value: proposal, label: Proposal}
      - {value: negotiation, label: Negotiation}
      - {value: won, label: Won}
      - {value: lost, label: Lost}
""",
    "views/opportunity.yaml": """\
views:
  bench_open_opportunities:
    entity: opportunity
    label: Open opportunities
    columns: [name, account, amount, close_date, stage, owner]
    filter: [stage, in, [prospecting, qualification, proposal, negotiation]]
    sort: [[close_date, asc]]
""",
}


# ------------------------------------------------------------------------------ options
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xrm bench storage",
        description="Records service vs SQLAlchemy Core: inserts, bulk inserts, list pages, "
        "counts and adding a field, on SQLite or PostgreSQL.",
    )
    parser.add_argument(
        "--rows",
        type=int,
        help="rows in the table for the read figures (default: 1,000,000 on PostgreSQL, 200,000 on SQLite; at least 1,000)",
    )
    parser.add_argument(
        "--database", help="database URL (default: $XRM_DATABASE_URL, else a temporary SQLite file)"
    )
    parser.add_argument(
        "--create",
        type=int,
        default=5000,
        help="records created one at a time per side (default 5,000; at most rows/4)",
    )
    parser.add_argument(
        "--bulk",
        type=int,
        default=20000,
        help="records bulk-created per side (default 20,000; at most rows/4)",
    )
    parser.add_argument(
        "--repeats", type=int, default=25, help="timed repeats of each read (default 25)"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated data")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the create loop and bulk_create (extra untimed passes) and print the top 15 by cumulative time on stderr",
    )
    parser.add_argument(
        "--profile-top",
        type=int,
        default=15,
        metavar="N",
        help="entries of each profile (default 15)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark schema or file")
    parser.add_argument("--quiet", action="store_true", help="no progress notes on stderr")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the CLI prints
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 1000:
        parser.error("--rows must be at least 1000")
    for name in ("create", "bulk", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    return args


# ------------------------------------------------------------------------------ database
def _dialect(url: str) -> str:
    return make_url(url).get_backend_name()


@contextmanager
def bench_database(url: str | None, keep: bool, say) -> Iterator[tuple[str, dict]]:
    """(url, engine options) of a fresh place to work, removed afterwards unless ``keep``."""
    from xrm.storage.database import normalize_url

    url = url or os.environ.get("XRM_DATABASE_URL")
    if not url:
        folder = Path(tempfile.mkdtemp(prefix="xrm-bench-"))
        try:
            yield f"sqlite:///{folder / 'bench.db'}", {}
        finally:
            if keep:
                say(f"kept {folder / 'bench.db'}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return
    dialect = _dialect(url)
    if dialect == "postgresql":
        schema = f"bench_{secrets.token_hex(6)}"
        admin = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        except sa.exc.DBAPIError as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise SystemExit(
                f"xrm bench storage: cannot create a schema in {shown}: {reason}"
            ) from None
        try:
            yield url, {"connect_args": {"options": f"-csearch_path={schema}"}}
        finally:
            if keep:
                say(f"kept schema {schema}")
            else:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        return
    if dialect == "sqlite":
        parsed = make_url(url)
        if parsed.database in (None, "", ":memory:"):
            yield url, {}
            return
        fresh = Path(parsed.database).resolve().parent / f"bench_{secrets.token_hex(6)}.db"
        try:
            yield parsed.set(database=str(fresh)).render_as_string(hide_password=False), {}
        finally:
            if keep:
                say(f"kept {fresh}")
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        return
    raise SystemExit(f"xrm bench storage: unsupported database {dialect!r} (SQLite or PostgreSQL)")


def write_pack(root: Path) -> Path:
    folder = root / PACK_NAME
    for relative, text in PACK_FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def plain_copy(source: sa.Table, name: str, referenced: list[sa.Table]) -> sa.Table:
    """A table of ``source``'s shape (types, foreign keys, indexes) and nothing else."""
    from xrm.storage.tables import short_name

    metadata = sa.MetaData()
    for table in referenced:
        table.to_metadata(metadata)
    columns = []
    for column in source.columns:
        foreign_keys = [
            sa.ForeignKey(fk.target_fullname, ondelete=fk.ondelete) for fk in column.foreign_keys
        ]
        columns.append(
            sa.Column(
                column.name,
                column.type,
                *foreign_keys,
                primary_key=column.primary_key,
                nullable=column.nullable,
                autoincrement=True if column.primary_key else "auto",
            )
        )
    table = sa.Table(name, metadata, *columns)
    for index in source.indexes:
        sa.Index(
            short_name(f"ix_{name}_{'_'.join(c.name for c in index.columns)}"),
            *(table.c[c.name] for c in index.columns),
            unique=index.unique,
        )
    return table


# ------------------------------------------------------------------------------ data
class RowMaker:
    """Seeded opportunity rows: Faker names combined at random, dates around a fixed day."""

    def __init__(self, seed: int, account_ids: list[int]):
        from faker import Faker

        self.rnd = random.Random(seed)
        fake = Faker()
        fake.seed_instance(seed)
        self.companies = [fake.company() for _ in range(400)]
        self.words = [fake.bs() for _ in range(400)]
        self.account_ids = account_ids
        self.base = dt.date(2026, 1, 1)

    def rows(self, count: int) -> list[dict]:
        r, out = self.rnd, []
        for _ in range(count):
            stage = r.choices(STAGES, STAGE_WEIGHTS)[0]
            out.append(
                {
                    "name": f"{r.choice(self.companies)}: {r.choice(self.words)}"[:190],
                    "account": r.choice(self.account_ids),
                    "amount": Decimal(r.randrange(10_000, 50_000_000)).scaleb(-2),
                    "close_date": self.base + dt.timedelta(days=r.randrange(-730, 730)),
                    "stage": stage,
                    "probability": Decimal(PROBABILITY[stage]),
                }
            )
        return out


# ------------------------------------------------------------------------------ the run
class StorageBench:
    def __init__(self, store, args, say):
        self.store = store
        self.engine = store.engine
        self.args = args
        self.say = say
        self.dialect = store.engine.dialect.name
        self.result: dict = {}
        self.written = 0  # rows in the entity table

    def setup(self, pack_root: Path, rows: int) -> None:
        from xrm.metadata import discover
        from xrm.storage import tables as T
        from xrm.storage.tables import tables_for

        core = discover().get("core")
        if core is None:
            raise SystemExit("xrm bench storage: the core solution was not found")
        self.store.install([core, write_pack(pack_root)])
        self.user_id = self.store.add_user("bench@example.com", "Benchmark")
        accounts = self.store.records("account", self.user_id)
        rnd = random.Random(self.args.seed)
        account_count = max(100, min(2000, rows // 100))
        account_ids = accounts.bulk_create(
            [{"name": f"Account {i} {rnd.randrange(10**6)}"} for i in range(account_count)]
        ).ids
        self.maker = RowMaker(self.args.seed, account_ids)
        self.records = self.store.records(ENTITY, self.user_id)
        tables = tables_for(self.store.catalog)
        self.table = tables[ENTITY]
        self.core = plain_copy(self.table, CORE_TABLE, [T.users, tables["account"]])
        with self.write() as conn:
            self.core.create(conn)

    def write(self):
        """A write transaction on the store's engine, the way the records service opens one."""
        from xrm.storage.database import WRITE

        @contextmanager
        def transaction():
            with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
                yield conn

        return transaction()

    def core_rows(self, rows: list[dict]) -> list[dict]:
        now = self.store.clock.now()
        uid = self.user_id
        system = {
            "created_at": now,
            "updated_at": now,
            "created_by": uid,
            "updated_by": uid,
            "owner": uid,
            "version": 1,
        }
        return [{**row, **system} for row in rows]

    # -- writes
    def core_single(self, rows: list[dict]) -> float:
        insert = self.core.insert()
        rows = self.core_rows(rows)
        with Stopwatch() as watch:
            for start in range(0, len(rows), BATCH):
                with self.write() as conn:
                    for row in rows[start : start + BATCH]:
                        conn.execute(insert, row).inserted_primary_key  # noqa: B018 - as a caller would
        return watch.seconds

    def records_single(self, rows: list[dict]) -> float:
        create, store, uid = self.records.create, self.store, self.user_id
        with Stopwatch() as watch:
            for start in range(0, len(rows), BATCH):
                with store.transaction(uid):
                    for row in rows[start : start + BATCH]:
                        create(row)
        self.written += len(rows)
        return watch.seconds

    def core_many(self, rows: list[dict]) -> float:
        insert = self.core.insert()
        rows = self.core_rows(rows)
        with Stopwatch() as watch:
            for chunk in range(0, len(rows), CHUNK):
                with self.write() as conn:
                    for start in range(chunk, min(chunk + CHUNK, len(rows)), BATCH):
                        conn.execute(insert, rows[start : start + BATCH])
        return watch.seconds

    def records_bulk(self, rows: list[dict]) -> float:
        with Stopwatch() as watch:
            for chunk in range(0, len(rows), CHUNK):
                self.records.bulk_create(rows[chunk : chunk + CHUNK], batch_size=BATCH)
        self.written += len(rows)
        return watch.seconds

    @staticmethod
    def alternate(rows: list[dict], step: int, core, ours) -> tuple[float, float]:
        """Seconds of each side over the same rows, taken in turns of ``step`` rows (the
        side going first alternates), so that a load change on the machine hits both."""
        core_s = ours_s = 0.0
        for turn, start in enumerate(range(0, len(rows), step)):
            part = rows[start : start + step]
            if turn % 2 == 0:
                core_s += core(part)
                ours_s += ours(part)
            else:
                ours_s += ours(part)
                core_s += core(part)
        return core_s, ours_s

    def measure_writes(self, create_n: int, bulk_n: int) -> None:
        r = self.result
        self.say(f"create: {create_n} records one at a time, each side")
        warm = self.maker.rows(WARMUP)
        self.core_single(warm)
        self.records_single(warm)
        rows = self.maker.rows(create_n)
        core_s, ours_s = self.alternate(rows, BATCH, self.core_single, self.records_single)
        r["create_per_s"] = per_second(create_n, ours_s)
        r["core_create_per_s"] = per_second(create_n, core_s)
        r["create_vs_core"] = ratio(r["create_per_s"], r["core_create_per_s"])

        self.say(f"bulk: {bulk_n} records, each side")
        warm = self.maker.rows(WARMUP)
        self.core_many(warm)
        self.records_bulk(warm)
        rows = self.maker.rows(bulk_n)
        core_s, ours_s = self.alternate(rows, BULK_TURN, self.core_many, self.records_bulk)
        r["bulk_per_s"] = per_second(bulk_n, ours_s)
        r["core_bulk_per_s"] = per_second(bulk_n, core_s)
        r["bulk_vs_core"] = ratio(r["bulk_per_s"], r["core_bulk_per_s"])

    def profile_writes(self) -> None:
        rows = self.maker.rows(min(2000, BATCH * 4))
        top = self.args.profile_top
        with profiled(
            f"Records.create x{len(rows)} in store.transaction() batches of {BATCH}", True, top
        ):
            self.records_single(rows)
        rows = self.maker.rows(CHUNK)
        with profiled(f"Records.bulk_create of {len(rows)} rows, batch_size {BATCH}", True, top):
            self.records_bulk(rows)

    def fill(self, target: int) -> None:
        missing = target - self.written
        if missing <= 0:
            return
        self.say(f"filling to {target} rows with bulk_create ({missing} more)")
        with Stopwatch() as watch:
            done = 0
            while done < missing:
                count = min(CHUNK * 4, missing - done)
                self.records_bulk(self.maker.rows(count))
                done += count
        self.result["fill_s"] = watch.seconds
        with self.engine.connect() as conn:  # fresh statistics, as a maintained database has
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    # -- reads
    def core_first_page(self, after: tuple | None = None) -> list:
        t = self.table
        columns = [t.c.id, t.c.version, *(t.c[name] for name in LIST_COLUMNS)]
        statement = (
            sa.select(*columns)
            .where(t.c.stage.in_(OPEN_STAGES))
            .order_by(t.c.close_date, t.c.id)
            .limit(PAGE)
        )
        with self.engine.connect() as conn:
            return conn.execute(statement).mappings().all()

    def records_page(self, after: str | None = None):
        return self.records.query(
            LIST_FILTER, sort=LIST_SORT, fields=LIST_COLUMNS, limit=PAGE, after=after
        )

    def measure_reads(self) -> None:
        from xrm.storage.query import Keyset, normalize_sort

        r, repeats = self.result, self.args.repeats
        self.say("list pages, count")
        first = self.records_page()
        core_first = self.core_first_page()
        if [row["id"] for row in first.rows] != [row["id"] for row in core_first]:
            raise AssertionError("records.query and the Core query disagree on the first page")
        r["list_first_page_ms"], r["core_list_first_page_ms"] = paired_median_ms(
            self.records_page, self.core_first_page, repeats
        )
        r["list_first_page_vs_core"] = ratio(r["list_first_page_ms"], r["core_list_first_page_ms"])

        # The cursor of page N-1 is the keyset of its last row, at offset (N-1)*PAGE - 1.
        t = self.table
        matching_query = sa.select(sa.func.count()).select_from(t).where(t.c.stage.in_(OPEN_STAGES))
        with self.engine.connect() as conn:
            matching = conn.execute(matching_query).scalar_one()
        deep = min(DEEP_PAGE, matching // PAGE)
        if deep < 2:
            raise SystemExit("xrm bench storage: too few rows for a second page; raise --rows")
        order = (t.c.close_date.asc().nulls_last(), t.c.id)
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(t.c.close_date, t.c.id)
                .where(t.c.stage.in_(OPEN_STAGES))
                .order_by(*order)
                .offset((deep - 1) * PAGE - 1)
                .limit(1)
            ).one()
            expected = (
                conn.execute(
                    sa.select(t.c.id)
                    .where(t.c.stage.in_(OPEN_STAGES))
                    .order_by(*order)
                    .offset((deep - 1) * PAGE)
                    .limit(PAGE)
                )
                .scalars()
                .all()
            )
        entity = self.store.catalog.entity(ENTITY)
        sort = normalize_sort(entity, self.store.catalog, [("close_date", "asc")])
        cursor = Keyset(sort, [last.close_date], last.id).encode([entity.fields["close_date"]])
        page = self.records_page(cursor)
        if [row["id"] for row in page.rows] != expected:
            raise AssertionError(f"the keyset page {deep} differs from OFFSET {(deep - 1) * PAGE}")
        r["deep_page"] = deep
        # against the first page timed in the same turns, not the earlier figure
        first_ms, r["list_deep_page_ms"] = paired_median_ms(
            self.records_page, lambda: self.records_page(cursor), repeats
        )
        r["list_deep_page_vs_first"] = ratio(r["list_deep_page_ms"], first_ms)

        count = self.records.count()
        r["count_ms"] = median_ms(self.records.count, max(5, repeats // 5))
        r["count_exact"] = count.exact
        r["count_value"] = count.value

    def measure_add_field(self) -> None:
        self.say("adding fields to the full table")
        times = []
        for i in range(3):
            document = {
                "extend": ENTITY,
                "fields": {f"bench_note_{i}": {"type": "text", "max_length": 100}},
            }
            with Stopwatch() as watch:
                _catalog, plan = self.store.customize("extend", document)
            if (ENTITY, f"bench_note_{i}") not in plan.add_columns:
                raise AssertionError(
                    f"customize did not add opportunity.bench_note_{i}: {plan.lines()}"
                )
            times.append(watch.ms)
        self.result["add_field_ms"] = median(times)


def main(argv: list[str] | None = None) -> dict:
    import xrm

    args = parse_args(argv)
    say = (lambda message: None) if args.quiet else progress
    started = clock()
    with (
        bench_database(args.database, args.keep, say) as (url, engine_options),
        tempfile.TemporaryDirectory(prefix="xrm-bench-pack-") as pack_root,
    ):
        dialect = _dialect(url)
        rows = args.rows or (1_000_000 if dialect == "postgresql" else 200_000)
        create_n = min(args.create, rows // 4)
        bulk_n = min(args.bulk, rows // 4)
        store = xrm.open(url, **engine_options)
        try:
            bench = StorageBench(store, args, say)
            say(f"{dialect}: {rows} rows; installing core and the benchmark pack")
            bench.setup(Path(pack_root), rows)
            bench.measure_writes(create_n, bulk_n)
            if args.profile:
                bench.profile_writes()
            bench.fill(rows)
            bench.measure_reads()
            bench.measure_add_field()
            server = None
            if dialect == "postgresql":
                with store.engine.connect() as conn:
                    server = conn.exec_driver_sql("SHOW server_version").scalar()
        finally:
            store.close()
    result = {
        "suite": "storage",
        "database": dialect,
        "rows": bench.written,
        "create_records": create_n,
        "bulk_records": bulk_n,
        **bench.result,
        **environment(),
    }
    if server:
        result["postgresql"] = server
    result["total_s"] = clock() - started
    return {k: (rounded(v) if isinstance(v, float) else v) for k, v in result.items()}


if __name__ == "__main__":  # pragma: no cover
    print(to_json(main(sys.argv[1:])))
