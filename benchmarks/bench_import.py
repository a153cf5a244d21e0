"""Import and export benchmark: a generated CSV of contacts imported through the importer
(the records service's bulk path: coercion, validation, formulas, duplicate keys, audit),
with the ``same_email`` duplicate rule on, then the contacts exported to CSV and XLSX; each
against hand-written SQLAlchemy Core doing the same rows in the same run.

    xrm bench import --json [--rows N] [--export-rows N] [--profile] [--keep]

Always a fresh temporary SQLite file.  Each measured phase runs in a fresh Python process,
so that its ``rss_mb`` (peak resident memory, ``ru_maxrss``) is its own.

Figures (``*_vs_core`` is ours divided by Core's rate: below 1 is slower):

- ``import_rows_per_s``, ``import_rss_mb``, ``import_vs_core``: rows of the file per
  second through ``Importer.run`` (all or nothing, ``dedupe=same_email``; 1% of the rows
  repeat an earlier email and are skipped).  Core: the same CSV read with ``csv`` and the
  rows inserted with executemany (2,000 a statement) into a table of the contact table's
  shape, lookups resolved from a dict, nothing validated.
- ``export_rows_per_s``, ``export_rss_mb``, ``export_vs_core``: CSV export of the contacts
  (every readable column, account titles joined) through ``Export``; Core: one streamed
  SELECT of the same columns written by ``csv.writer``.  ``export_xlsx_rows_per_s`` and
  ``export_xlsx_rss_mb``: the same rows as an XLSX workbook (openpyxl write-only).
- ``--export-rows N`` first copies the contacts with Core until the table holds N rows
  (``xrm bench import --rows 20000 --export-rows 1000000`` checks memory at a million).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_import.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    Stopwatch,
    environment,
    per_second,
    profiled,
    progress,
    ratio,
    rounded,
)

ACCOUNTS = 200
DUPLICATE_SHARE = 0.01
HEADERS = ["First name", "Last name", "Email", "Phone", "Job title", "Birthday", "Account"]
TITLES = ["Engineer", "Manager", "Director", "Analyst", "Buyer", "Инженер", "Менеджер"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xrm bench import",
        description="Import of a generated contacts CSV and export of the contacts, against "
        "SQLAlchemy Core, on a temporary SQLite file.",
    )
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows of the CSV (default 100,000)"
    )
    parser.add_argument(
        "--export-rows",
        type=int,
        help="rows the contact table holds for the export (default: what the import wrote); "
        "more are copied in with Core",
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--profile", action="store_true", help="profile the import (in its process) on stderr"
    )
    parser.add_argument("--profile-top", type=int, default=25, metavar="N")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--quiet", action="store_true", help="no progress notes on stderr")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    return args


# ------------------------------------------------------------------------------ data
def account_names(count: int) -> list[str]:
    from faker import Faker

    fake = Faker(["en_US", "ru_RU"])
    fake.seed_instance(7)
    names: dict[str, None] = {}
    while len(names) < count:
        names[fake.company()] = None
    return list(names)


def write_csv(path: Path, rows: int, seed: int, accounts: list[str]) -> None:
    """Contacts from Faker's name lists combined at random, an email each (1% repeat an
    earlier one), a phone, a birthday in ISO form and an account by its name."""
    from faker import Faker

    fake = Faker(["en_US", "ru_RU"])
    fake.seed_instance(seed)
    firsts = list(dict.fromkeys(fake.first_name() for _ in range(400)))
    lasts = list(dict.fromkeys(fake.last_name() for _ in range(400)))
    rnd = random.Random(seed)
    start = dt.date(1960, 1, 1).toordinal()
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for i in range(rows):
            number = rnd.randrange(i) if i > 100 and rnd.random() < DUPLICATE_SHARE else i
            writer.writerow(
                [
                    rnd.choice(firsts),
                    rnd.choice(lasts),
                    f"person{number}@example.com",
                    f"+7 916 {rnd.randrange(10**7):07d}",
                    rnd.choice(TITLES),
                    dt.date.fromordinal(start + rnd.randrange(15000)).isoformat(),
                    rnd.choice(accounts),
                ]
            )


# ------------------------------------------------------------------------------ phases
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def import_phase(url: str, path: str, profile: bool, top: int) -> dict:
    """In its own process: the import, timed."""
    import xrm
    from xrm.data.imports import Importer
    from xrm.data.sources import open_source

    store = xrm.open(url)
    try:
        importer = Importer(store, "contact", open_source(path), dedupe=["same_email"])
        with profiled("import", profile, top=top, sort="tottime"), Stopwatch() as watch:
            result = importer.run()
        if result.rejects:
            raise SystemExit(f"the benchmark's rows were rejected: {result.rejects[:3]}")
    finally:
        store.close()
    return {
        "seconds": watch.seconds,
        "rows": result.rows,
        "created": result.created,
        "skipped": result.skipped,
        "rss_mb": _rss_mb(),
    }


def export_phase(url: str, fmt: str, path: str) -> dict:
    """In its own process: the export of every contact, timed."""
    import xrm
    from xrm.data.exports import Export, export_to

    store = xrm.open(url)
    try:
        records = store.records("contact")
        columns = [n for n in records.readable_fields() if records.entity.fields[n].stored]
        with Stopwatch() as watch:
            count = export_to(Export(records, columns), fmt, path)
    finally:
        store.close()
    return {"seconds": watch.seconds, "rows": count, "rss_mb": _rss_mb()}


def _in_process(func, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(func, args)


# ------------------------------------------------------------------------------ Core
def core_import(engine, table: sa.Table, path: Path, account_ids: dict[str, int]) -> float:
    now = dt.datetime.now(dt.UTC)
    with (
        Stopwatch() as watch,
        engine.begin() as conn,
        open(path, encoding="utf-8", newline="") as f,
    ):
        reader = csv.reader(f)
        next(reader)
        batch = []
        for first, last, email, phone, title, birthday, account in reader:
            batch.append(
                {
                    "first_name": first,
                    "last_name": last,
                    "full_name": f"{first} {last}",
                    "email": email,
                    "phone": phone,
                    "job_title": title,
                    "birthday": dt.date.fromisoformat(birthday),
                    "account": account_ids[account],
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
            )
            if len(batch) == 2000:
                conn.execute(table.insert(), batch)
                batch = []
        if batch:
            conn.execute(table.insert(), batch)
    return watch.seconds


def core_export(
    engine, table: sa.Table, account: sa.Table, columns: list[str], path: Path
) -> tuple[float, int]:
    selected = [table.c[c] for c in columns] + [account.c.name]
    statement = (
        sa.select(*selected)
        .select_from(table.outerjoin(account, table.c.account == account.c.id))
        .order_by(table.c.id)
    )
    count = 0
    with (
        Stopwatch() as watch,
        engine.connect() as conn,
        open(path, "w", encoding="utf-8", newline="") as f,
    ):
        writer = csv.writer(f)
        writer.writerow(columns)
        result = conn.execution_options(stream_results=True, yield_per=1000).execute(statement)
        for row in result:
            writer.writerow(row)
            count += 1
    return watch.seconds, count


def plain_copy(source: sa.Table, name: str) -> sa.Table:
    """A table of the entity table's shape (types, indexes) without its foreign keys."""
    from xrm.storage.tables import short_name

    metadata = sa.MetaData()
    columns = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=not c.primary_key)
        for c in source.columns
    ]
    table = sa.Table(name, metadata, *columns)
    for index in source.indexes:
        sa.Index(
            short_name(f"ix_{name}_{'_'.join(c.name for c in index.columns)}"),
            *(table.c[c.name] for c in index.columns),
            unique=index.unique,
        )
    return table


def fill_to(engine, table: sa.Table, rows: int, say) -> int:
    """Copy the table's rows into itself (new ids) until it holds ``rows``."""
    names = [c.name for c in table.columns if c.name != "id"]
    with engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        while have < rows:
            take = min(have, rows - have)
            source = sa.select(*(table.c[n] for n in names)).order_by(table.c.id).limit(take)
            conn.execute(table.insert().from_select(names, source))
            have += take
            say(f"copied to {have} rows")
    return have


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    import xrm
    from xrm.storage.tables import tables_for

    args = parse_args(argv)
    say = (lambda message: None) if args.quiet else progress
    folder = Path(tempfile.mkdtemp(prefix="xrm-bench-import-"))
    root = Path(__file__).resolve().parents[1]
    try:
        url = f"sqlite:///{folder / 'bench.db'}"
        store = xrm.open(url)
        try:
            store.install([root / "xrm" / "solutions" / "packs" / "core"])
            names = account_names(ACCOUNTS)
            store.records("account").bulk_create([{"name": n} for n in names])
            tables = tables_for(store.catalog)
            contact, account = tables["contact"], tables["account"]
            with store.engine.connect() as conn:
                account_ids = dict(conn.execute(sa.select(account.c.name, account.c.id)).all())
            core_table = plain_copy(contact, "bench_core_contact")
            core_table.metadata.create_all(store.engine)
            engine = store.engine
        finally:
            store.close()
        source = folder / "contacts.csv"
        say(f"writing {args.rows} contacts to {source.name}")
        write_csv(source, args.rows, args.seed, names)

        say("import (its own process)")
        ours = _in_process(import_phase, url, str(source), args.profile, args.profile_top)
        engine = sa.create_engine(url)
        say("import with Core")
        core_seconds = core_import(engine, core_table, source, account_ids)
        import_rate = per_second(ours["rows"], ours["seconds"])
        core_rate = per_second(args.rows, core_seconds)

        export_rows = args.export_rows or ours["created"]
        if export_rows > ours["created"]:
            say(f"filling the contact table to {export_rows} rows with Core")
            fill_to(engine, contact, export_rows, say)
        columns = [
            c.name
            for c in contact.columns
            if not c.name.startswith("_dup_")
            and c.name not in ("version", "created_by", "updated_by")
        ]
        say("export to CSV (its own process)")
        csv_out = _in_process(export_phase, url, "csv", str(folder / "out.csv"))
        say("export to XLSX (its own process)")
        xlsx_out = _in_process(export_phase, url, "xlsx", str(folder / "out.xlsx"))
        say("export with Core")
        core_export_seconds, core_rows = core_export(
            engine, contact, account, columns, folder / "core.csv"
        )
        engine.dispose()
    finally:
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    export_rate = per_second(csv_out["rows"], csv_out["seconds"])
    return {
        "suite": "import",
        "database": "sqlite",
        "rows": args.rows,
        "created": ours["created"],
        "skipped_duplicates": ours["skipped"],
        "import_rows_per_s": rounded(import_rate),
        "import_rss_mb": rounded(ours["rss_mb"]),
        "core_import_rows_per_s": rounded(core_rate),
        "import_vs_core": rounded(ratio(import_rate, core_rate)),
        "export_rows": csv_out["rows"],
        "export_rows_per_s": rounded(export_rate),
        "export_rss_mb": rounded(csv_out["rss_mb"]),
        "export_xlsx_rows_per_s": rounded(per_second(xlsx_out["rows"], xlsx_out["seconds"])),
        "export_xlsx_rss_mb": rounded(xlsx_out["rss_mb"]),
        "core_export_rows_per_s": rounded(per_second(core_rows, core_export_seconds)),
        "export_vs_core": rounded(ratio(export_rate, per_second(core_rows, core_export_seconds))),
        **environment(),
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(main(sys.argv[1:]), indent=2))
