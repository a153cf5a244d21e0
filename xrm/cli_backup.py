"""``xrm backup`` and ``xrm restore``: a whole instance to one archive and back.
Registered into the ``xrm`` command by ``xrm/cli.py``; the work is
``xrm/storage/backup.py``."""

from __future__ import annotations

import sys

from .cli import DATABASE_HELP, EXIT_CODES, CommandError, _add_database, _masked, _store, command


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def _described(manifest: dict) -> str:
    solutions = ", ".join(f"{s['name']} {s['version']}" for s in manifest.get("solutions", []))
    files = manifest.get("files", {})
    rows = sum(manifest.get("tables", {}).values())
    return (
        f"{manifest['dialect']} database of xrm {manifest['platform_version']} "
        f"made {manifest.get('created_at', '?')}: solutions {solutions or 'none'}; "
        f"{manifest.get('users', 0)} users, {manifest.get('customizations', 0)} "
        f"customizations, {files.get('count', 0)} files ({_size(files.get('bytes', 0))}), "
        f"{rows} rows in {len(manifest.get('tables', {}))} tables"
    )


def _backup(args) -> int:
    from .storage.backup import BackupError, backup

    with _store(args) as store:
        try:
            made = backup(store, args.to)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
    print(f"wrote {made.path} ({_size(made.path.stat().st_size)})")
    print(_described(made.manifest))
    return 0


def _restore(args) -> int:
    from .storage.backup import BackupError, read_manifest, restore
    from .storage.database import default_url

    url = args.database or default_url()
    try:
        manifest = read_manifest(args.file)
        print(f"restoring {_described(manifest)}", file=sys.stderr)
        restore(args.file, url, force=args.force)
    except BackupError as exc:
        raise CommandError(f"{exc}; nothing was changed") from None
    print(f"restored {args.file} into {_masked(url)}")
    return 0


@command("backup")
def _register_backup(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write a backup of the instance (database, packs, customizations, files)",
        description="Write the whole instance to one .tar.gz: a consistent copy of the "
        "database taken while the application runs (SQLite's online backup; pg_dump on "
        "PostgreSQL) and a manifest of what it holds.",
        epilog=EXIT_CODES,
    )
    p.add_argument(
        "--to", metavar="FILE", help="the archive to write (default: xrm-backup-DATE.tar.gz here)"
    )
    _add_database(p)
    p.set_defaults(handler=_backup, parser=p)


@command("restore")
def _register_restore(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="restore a backup written by xrm backup",
        description="Restore a backup into the database, all or nothing, after checking its "
        "manifest (format, database kind, platform version, the database's checksum and row "
        "counts). A database that already holds data is refused unless --force.",
        epilog=EXIT_CODES,
    )
    p.add_argument("file", metavar="FILE", help="the archive xrm backup wrote")
    p.add_argument("--force", action="store_true", help="replace a database that holds data")
    p.add_argument("--database", metavar="URL", help=DATABASE_HELP)
    p.set_defaults(handler=_restore, parser=p)
