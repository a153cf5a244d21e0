"""Command-line entry points of the workflow engine, for ``xrm/cli.py`` to register:

    xrm worker [--database URL] [--processes N] [--once [--now ISO]] [--batch N] [--lease S] [--poll S]
    xrm process list|dry-run NAME --record ID|diagram NAME [--out FILE]|instances|retry ID
    xrm process dead-letters [--all] [--json]|retry-change ID

Each ``add_*`` function takes the CLI's subparsers and a ``store`` context manager factory
(the CLI's ``_store(args)``, which turns database failures into messages) and sets
``handler``; nothing here imports the CLI module.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from ..storage.store import Clock


def add_worker(sub, store_of) -> None:
    p = sub.add_parser("worker", help="run workflow workers: processes, timers, reminders, email")
    p.add_argument("--database", metavar="URL")
    p.add_argument(
        "--processes", type=int, default=1, help="worker processes (PostgreSQL; SQLite: 1)"
    )
    p.add_argument("--once", action="store_true", help="do what is due now and exit")
    p.add_argument(
        "--now",
        metavar="ISO",
        type=_moment,
        help="with --once: do what is due at this moment instead, e.g. 2026-03-05T09:00Z "
        "(ISO 8601; UTC unless an offset is given), to see what timers will do",
    )
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=1.0)
    p.set_defaults(handler=lambda args: run_worker(args, store_of), parser=p)


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 moment: {text!r} (e.g. 2026-03-05T09:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def run_worker(args, store_of) -> int:
    from .worker import Worker, serve

    if args.now is not None and not args.once:
        args.parser.error("--now needs --once: a worker that keeps running follows the real clock")
    options = {"batch_size": args.batch, "lease": args.lease, "poll": args.poll}
    with store_of(args) as store:
        if args.once:
            if args.now is not None:
                store.clock = _ClockFrom(args.now)
            print(json.dumps(Worker(store, **options).run_once()))
            return 0
        if args.processes <= 1 or store.engine.dialect.name != "postgresql":
            worker = Worker(store, freeze_gc=True, **options)  # the process is the worker's
            print(f"xrm worker {worker.name}: working (Ctrl-C to stop)", file=sys.stderr)
            try:
                worker.run_forever()
            except KeyboardInterrupt:
                worker.stop()
            return 0
        url = store.engine.url.render_as_string(hide_password=False)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=serve, args=(url, {}), kwargs=options) for _ in range(args.processes)
    ]
    for process in processes:
        process.start()
    print(f"xrm worker: {len(processes)} processes working (Ctrl-C to stop)", file=sys.stderr)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=30)
    return 0


class _ClockFrom(Clock):
    """Time that starts at a given moment and runs on from there, so the records and
    instances one round writes keep their order."""

    def __init__(self, moment: dt.datetime):
        self.offset = moment - dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def add_process(sub, store_of) -> None:
    p = sub.add_parser(
        "process",
        help="business processes: list, dry-run, diagram, instances, retry, dead letters",
    )
    commands = p.add_subparsers(dest="process_command", required=True)
    listing = commands.add_parser("list", help="the processes of the installed packs")
    dry = commands.add_parser(
        "dry-run", help="what a process would do to a record, without writing"
    )
    dry.add_argument("name")
    dry.add_argument("--record", type=int)
    dry.add_argument("--json", action="store_true")
    picture = commands.add_parser("diagram", help="a process as SVG")
    picture.add_argument("name")
    picture.add_argument("--out", help="file (default: standard output)")
    shown = commands.add_parser("instances", help="recent instances")
    shown.add_argument("--process")
    shown.add_argument("--status")
    again = commands.add_parser("retry", help="run a parked instance again")
    again.add_argument("id", type=int)
    letters = commands.add_parser(
        "dead-letters", help="record changes the engine could not handle, with their errors"
    )
    letters.add_argument("--all", action="store_true", help="also the ones retried since")
    letters.add_argument("--json", action="store_true")
    change = commands.add_parser(
        "retry-change", help="handle a dead-lettered change again (after fixing its data)"
    )
    change.add_argument("id", type=int)
    for parser in (listing, dry, picture, shown, again, letters, change):
        parser.add_argument("--database", metavar="URL")
        parser.set_defaults(handler=lambda args: run_process(args, store_of), parser=parser)


def run_process(args, store_of) -> int:
    from . import dead_letters, diagram, dry_run, instances, retry, retry_change
    from .dryrun import describe

    with store_of(args) as store:
        catalog = store.refresh()
        command = args.process_command
        if command == "list":
            for process in sorted(catalog.processes.values(), key=lambda p: p.name):
                triggers = ", ".join(t.kind for t in process.triggers) or "-"
                print(
                    f"{process.name}\t{process.entity or '-'}\t{triggers}\t{'' if process.enabled else 'disabled'}"
                )
            return 0
        if command in ("dry-run", "diagram") and args.name not in catalog.processes:
            from ..metadata.problems import did_you_mean

            print(
                f"xrm: unknown process {args.name!r}{did_you_mean(args.name, catalog.processes)}",
                file=sys.stderr,
            )
            return 2
        if command == "dry-run":
            try:
                report = dry_run(store, args.name, args.record)
            except (LookupError, ValueError) as exc:
                print(f"xrm: {exc.args[0] if exc.args else exc}", file=sys.stderr)
                return 2
            print(json.dumps(report, default=str, indent=2) if args.json else describe(report))
            return 0 if report.get("status") != "failed" else 1
        if command == "diagram":
            svg = diagram(catalog.processes[args.name])
            if args.out:
                with open(args.out, "w", encoding="utf-8") as handle:
                    handle.write(svg)
            else:
                print(svg)
            return 0
        if command == "instances":
            for row in instances(store, process=args.process, status=args.status):
                print(
                    f"{row['id']}\t{row['process']}\t{row['entity'] or '-'}:{row['record_id'] or '-'}\t{row['status']}\t{row['due_at'] or ''}\t{row['error'] or ''}"
                )
            return 0
        if command == "retry":
            if retry(store, args.id):
                print(f"instance {args.id} will run again")
                return 0
            print(f"xrm: instance {args.id} is not parked", file=sys.stderr)
            return 1
        if command == "dead-letters":
            rows = dead_letters(store, status=None if args.all else "failed")
            if args.json:
                print(json.dumps(rows, default=str, indent=2))
                return 0
            for row in rows:
                error = " ".join((row["error"] or "").split())  # one line per change
                print(
                    f"{row['id']}\t{row['status']}\t{row['entity'] or '-'}:{row['record_id'] or '-'}\t{row['event'] or '-'}\t{row['attempts']}\t{row['failed_at'].isoformat()}\t{error}"
                )
            return 0
        if command == "retry-change":
            try:
                error = retry_change(store, args.id)
            except LookupError:
                print(f"xrm: change {args.id} is not waiting for a retry", file=sys.stderr)
                return 1
            if error:
                print(f"xrm: change {args.id} failed again: {error}", file=sys.stderr)
                return 1
            print(f"change {args.id} went through")
            return 0
    return 2
