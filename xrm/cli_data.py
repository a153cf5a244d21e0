"""``xrm import`` and ``xrm export``: records in from CSV or XLSX files and out to them.
Registered into the ``xrm`` command by ``xrm/cli.py``; the work is ``xrm/data``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import CommandError, _add_database, _store, command

#: Rejected rows printed when no --rejects file is given.
SHOWN_REJECTS = 20


def _principal(store, email: str | None):
    """The user named by --as (their roles apply), or None: the platform itself."""
    if not email:
        return None
    row = store.user_by_email(email)
    if row is None or not row.active:
        raise CommandError(f"--as {email}: no active user with this email", 2)
    return store.principal(row.id)


# ------------------------------------------------------------------------------ import
def _import(args) -> int:
    from .data.imports import Importer, ImportRefused, parse_mapping, write_rejects
    from .data.sources import SourceError, open_source

    if args.resume and args.restart:
        raise CommandError("--resume and --restart exclude each other", 2)
    if (args.resume or args.restart) and not args.partial:
        raise CommandError("--resume and --restart are for --partial imports", 2)
    with _store(args) as store:
        if store.catalog.entity_of(args.entity) is None:
            from .metadata.problems import did_you_mean

            names = sorted(store.catalog.entities)
            raise CommandError(
                f"unknown entity {args.entity!r}{did_you_mean(args.entity, names)}", 2
            )
        principal = _principal(store, args.as_user)
        try:
            source = open_source(
                args.file, encoding=args.encoding, delimiter=args.delimiter, sheet=args.sheet
            )
            importer = Importer(
                store,
                args.entity,
                source,
                principal=principal,
                mapping=parse_mapping(args.map or []),
                mode=args.mode,
                key=args.key,
                dedupe=[
                    n.strip() for item in args.dedupe or [] for n in item.split(",") if n.strip()
                ],
                partial=args.partial,
                locale=args.locale,
                tz=args.tz,
            )
            if not args.quiet:
                _describe(importer)
            if args.preview:
                return _print_preview(importer)
            importer.check()
            say = _progress(args.quiet)
            result = importer.run(
                dry_run=args.dry_run, resume=args.resume, restart=args.restart, progress=say
            )
        except ImportRefused as exc:
            for problem in exc.problems:
                print(f"xrm: {problem}", file=sys.stderr)
            raise CommandError("nothing was imported") from None
        except SourceError as exc:
            raise CommandError(f"{args.file}: {exc}") from None
        if args.rejects:
            write_rejects(args.rejects, result.rejects, append=bool(args.resume))
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False, default=str))
    else:
        _summary(result, args)
    return 1 if result.rejects else 0


def _describe(importer) -> None:
    source = importer.source
    found = f"{source.kind.upper()}"
    if source.kind == "csv":
        delimiter = {"\t": "tab"}.get(source.delimiter, source.delimiter)
        found += f", encoding {source.encoding}, delimiter {delimiter!r}"
    else:
        found += f", sheet {source.sheet!r}"
    print(f"{source.path.name}: {found}", file=sys.stderr)
    for column in importer.columns:
        target = column.target or f"(not imported: {column.note})"
        print(
            f"  {column.header or '#' + str(column.index + 1)!s:<30} -> {target}", file=sys.stderr
        )


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def say(p) -> None:
        total = f"/{p.total}" if p.total else ""
        print(
            f"\r  {p.rows}{total} rows: {p.created} created, {p.updated} updated, "
            f"{p.skipped} skipped, {p.rejected} rejected",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return say


def _print_preview(importer) -> int:
    preview = importer.preview()
    for problem in importer.problems:
        print(f"xrm: {problem}", file=sys.stderr)
    for row in preview.rows:
        duplicate = row["duplicate"]
        note = ""
        if duplicate is not None:
            of = (
                f"row {duplicate.of_row}"
                if duplicate.of_row
                else f"#{duplicate.record_id} {duplicate.title}"
            )
            note = f" (duplicate of {of} by {', '.join(duplicate.rules)})"
        print(f"row {row['row']}: {row['action']}{note}")
        for column, cell in zip(preview.columns, row["cells"]):
            if column.field and cell.raw:
                shown = cell.problem and f"! {cell.problem}" or cell.shown
                print(f"  {column.target}: {shown}")
        for reject in row["rejects"]:
            print(f"  ! {reject.column or '(row)'}: {reject.message}")
    return 1 if importer.problems else 0


def _summary(result, args) -> None:
    if sys.stderr.isatty() and not args.quiet:
        print(file=sys.stderr)
    verb = "would be" if result.dry_run else ""
    counts = (
        f"{result.rows} rows: {result.created} created, {result.updated} updated, "
        f"{result.skipped} skipped as duplicates, {result.rejected_rows} rejected"
    )
    if result.resumed_after is not None:
        counts = f"resumed after row {result.resumed_after}; " + counts
    if result.dry_run:
        print(f"dry run, nothing written: {counts.replace(' created', f' {verb} created')}")
    elif result.rejects and not result.committed:
        print(f"nothing written (all or nothing; --partial keeps the good rows): {counts}")
    else:
        print(counts)
    for duplicate in result.duplicates[:SHOWN_REJECTS]:
        of = (
            f"row {duplicate.of_row}"
            if duplicate.of_row
            else f"{duplicate.record_id} {duplicate.title}".strip()
        )
        print(
            f"  row {duplicate.row}: {duplicate.action}, a duplicate of {of} ({', '.join(duplicate.rules)})"
        )
    if args.rejects:
        if result.rejects:
            print(f"rejected rows written to {args.rejects}")
        return
    for reject in result.rejects[:SHOWN_REJECTS]:
        where = f", {reject.column}" if reject.column else ""
        value = f" {reject.value!r}" if reject.value else ""
        print(f"  row {reject.row}{where}{value}: {reject.message}", file=sys.stderr)
    if len(result.rejects) > SHOWN_REJECTS:
        print(
            f"  ... and {len(result.rejects) - SHOWN_REJECTS} more (--rejects FILE writes them all)",
            file=sys.stderr,
        )


@command("import")
def _register_import(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="import records from a CSV or XLSX file",
        description="Import the rows of a CSV or XLSX file into an entity through the records "
        "service (validation, permissions, audit and processes as for any write). Columns "
        "are matched to fields by name or label; --map changes that. All or nothing unless "
        "--partial. See docs/data.md.",
        epilog="exit codes: 0 every row imported, 1 rows rejected or the file or mapping is "
        "wrong (nothing written unless --partial), 2 usage error",
    )
    p.add_argument("entity", help="the entity to import into")
    p.add_argument("file", type=Path, help="a .csv or .xlsx file")
    p.add_argument(
        "--map",
        action="append",
        metavar="COLUMN=FIELD",
        help="fill FIELD from COLUMN (FIELD may be lookup.FIELD to find the record by that field; "
        "COLUMN= skips the column); repeat for more",
    )
    p.add_argument("--mode", choices=("create", "update", "upsert"), default="create")
    p.add_argument(
        "--key", metavar="FIELD", help="update/upsert: match records by this field (or id)"
    )
    p.add_argument(
        "--dedupe",
        action="append",
        metavar="RULE",
        help="a duplicate rule of the entity: a row with a duplicate is skipped (create) or "
        "written into it (update, upsert)",
    )
    p.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    p.add_argument("--preview", action="store_true", help="show the first rows as they would go in")
    p.add_argument("--partial", action="store_true", help="keep the good rows (commits in chunks)")
    p.add_argument("--resume", action="store_true", help="continue a --partial import that stopped")
    p.add_argument("--restart", action="store_true", help="start a stopped --partial import over")
    p.add_argument(
        "--rejects",
        metavar="FILE",
        help="write rejected rows here (CSV: row, column, value, message)",
    )
    p.add_argument("--encoding", help="the CSV file's encoding (default: found out)")
    p.add_argument("--delimiter", help="the CSV delimiter (default: found out; 'tab' for tabs)")
    p.add_argument("--sheet", help="the XLSX sheet (default: the first)")
    p.add_argument(
        "--as", dest="as_user", metavar="EMAIL", help="import as this user (their permissions)"
    )
    p.add_argument(
        "--locale", help="read numbers and dates as in this locale (default: the user's, else en)"
    )
    p.add_argument(
        "--tz", help="read times without a zone in this zone (default: the user's, else UTC)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no column list or progress on stderr")
    _add_database(p)
    p.set_defaults(handler=_import, parser=p)


# ------------------------------------------------------------------------------ export
def _export(args) -> int:
    from .data.exports import FORMATS, Export, export_to
    from .metadata.filters import FilterError
    from .metadata.problems import did_you_mean
    from .storage.records import Forbidden

    fmt = args.format or Path(args.to).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise CommandError("say --format csv or xlsx (or give --to a .csv or .xlsx name)", 2)
    with _store(args) as store:
        catalog = store.catalog
        view = catalog.views.get(args.name)
        entity = catalog.entity(view.entity) if view else catalog.entity_of(args.name)
        if entity is None:
            known = sorted([*catalog.entities, *catalog.views])
            raise CommandError(
                f"no entity or view {args.name!r}{did_you_mean(args.name, known)}", 2
            )
        principal = _principal(store, args.as_user)
        records = store.records(entity.name, principal=principal)
        if args.locale:
            records.locale = args.locale
        if args.tz:
            records.tz = args.tz
        try:
            extra = json.loads(args.filter) if args.filter else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--filter is not JSON: {exc}", 2) from None
        filters = [f for f in (view.filter if view else None, extra) if f not in (None, [], {})]
        tree = filters[0] if len(filters) == 1 else ({"all": filters} if filters else None)
        if args.columns:
            columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        elif view is not None and view.columns:
            columns = list(view.columns)
        else:
            columns = ["id"] + [
                n
                for n in records.readable_fields()
                if entity.fields[n].stored and entity.fields[n].type != "json"
            ]
        hidden = records.access.hidden(entity) if records.access else set()
        columns = [c for c in columns if c.split(".")[0] not in hidden]
        sort = [list(s) for s in view.sort] if view and view.sort else None
        if args.sort:
            field, _, direction = args.sort.partition(":")
            sort = [[field, direction or "asc"]]
        try:
            export = Export(
                records, columns, filter=tree, sort=sort, search=args.search, limit=args.limit
            )
            count = export_to(export, fmt, args.to, title=entity.name)
        except (FilterError, Forbidden) as exc:
            raise CommandError(str(exc)) from None
    print(f"{count} rows written to {args.to}", file=sys.stderr)
    return 0


@command("export")
def _register_export(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="export records of an entity or a view to CSV or XLSX",
        description="Write the records of an entity (or of a view: its columns, filter and "
        "sort) to a CSV or XLSX file, streamed a page at a time. With --as, the user's "
        "record and field security applies. See docs/data.md.",
        epilog="exit codes: 0 written, 1 a refused filter or the database, 2 usage error",
    )
    p.add_argument("name", metavar="ENTITY|VIEW", help="an entity or a view name")
    p.add_argument("--format", choices=("csv", "xlsx"), help="default: from --to's extension")
    p.add_argument("--to", required=True, metavar="FILE", help="the file to write")
    p.add_argument(
        "--filter",
        metavar="JSON",
        help="a filter in the filter language (JSON), added to the view's",
    )
    p.add_argument(
        "--columns",
        metavar="A,B",
        help="the columns (dotted paths allowed); default: the view's, else every readable field",
    )
    p.add_argument(
        "--sort", metavar="FIELD[:desc]", help="the order (default: the view's, else by id)"
    )
    p.add_argument("--search", metavar="TEXT", help="only records matching this search")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    p.add_argument(
        "--as", dest="as_user", metavar="EMAIL", help="export as this user (their permissions)"
    )
    p.add_argument(
        "--locale", help="labels and options in this locale (default: the user's, else en)"
    )
    p.add_argument("--tz", help="times in this zone (default: the user's, else UTC)")
    _add_database(p)
    p.set_defaults(handler=_export, parser=p)
