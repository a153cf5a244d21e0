"""Backups and restores of a whole instance: one ``.tar.gz`` holding the database and a
manifest.

Everything an instance holds lives in its database: records, users, teams, roles given,
tokens, the installed packs' files (``xrm_solution``), the administrators' customization
layer (``xrm_customization``), uploaded files (``xrm_file``), audit, history and workflow
state.  So a backup is a consistent copy of the database, taken while the application
runs:

* SQLite: the online backup API copies every page in one step, under one read
  transaction (WAL lets writers go on meanwhile).
* PostgreSQL: ``pg_dump -Fc`` of the store's schema, in a snapshot exported by a
  repeatable-read transaction, which also counts the rows the manifest records.

The manifest (``manifest.json``) names the platform version, the dialect, the time, the
packs and their versions, the catalog version, how many rows each table held, how many
users, customizations and files (and their bytes), and the SHA-256 of the database member.

A restore reads the manifest first and refuses what does not fit (another format, another
dialect, a newer platform, a database member that is not the one described), refuses a
target that holds data unless forced, and is all or nothing:

* SQLite: the copy is checked (``integrity_check``, the row counts, the catalog built by
  this platform) in a temporary file, then copied over the target with the backup API in
  one write transaction, so processes that have the target open see the old database or
  the new one, never a mixture (renaming a file under a database in WAL mode would pair
  the new file with the old write-ahead log).
* PostgreSQL: ``pg_restore`` writes the dump as SQL, and ``psql --single-transaction``
  runs it between dropping the target schema and checking every table's row count and
  the manifest's, so any failure rolls everything back.  A dump of schema S restores into
  the target's schema T (``ALTER SCHEMA S RENAME TO T``) when S is not in use there.

Either way the restored catalog version is moved past the target's, so running processes
rebuild their catalog on their next request.  The instance's ``secret_key`` (signing
sessions) lives outside the database and is not in the backup: a restore on a new
machine signs everyone out once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

FORMAT = "xrm-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MEMBERS = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
#: Rows that a freshly opened, empty database already holds (the catalog version row).
_EMPTY_ANYWAY = {"xrm_catalog"}


class BackupError(Exception):
    """A backup or restore that cannot be done, with the reason; nothing was changed."""


@dataclass(frozen=True)
class Made:
    path: Path
    manifest: dict


# ------------------------------------------------------------------------------ helpers
def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_name() -> str:
    return f"xrm-backup-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.tar.gz"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def _sqlite_path(url) -> Path:
    database = url.database
    if database in (None, "", ":memory:"):
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(database)


def _summary(conn, tables: list[str]) -> dict:
    """Row counts of every table, and the packs, users, customizations and files."""
    counts = {
        name: conn.execute(sa.text(f"SELECT count(*) FROM {_quote(name)}")).scalar_one()
        for name in tables
    }
    out: dict = {"tables": counts}
    if "xrm_solution" in counts:
        rows = conn.execute(
            sa.text("SELECT name, version FROM xrm_solution ORDER BY position")
        ).all()
        out["solutions"] = [{"name": r[0], "version": r[1]} for r in rows]
    if "xrm_catalog" in counts:
        out["catalog_version"] = conn.execute(
            sa.text("SELECT version FROM xrm_catalog WHERE id = 1")
        ).scalar()
    if "xrm_file" in counts:
        out["files"] = {
            "count": counts["xrm_file"],
            "bytes": int(
                conn.execute(sa.text("SELECT coalesce(sum(size), 0) FROM xrm_file")).scalar_one()
            ),
        }
    out["users"] = counts.get("xrm_user", 0)
    out["customizations"] = counts.get("xrm_customization", 0)
    return out


def _sqlite_tables(conn) -> list[str]:
    """Base tables (FTS5 indexes are rebuilt from their tables: their own tables aside)."""
    rows = conn.execute(
        sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ).all()
    virtual = [r[0] for r in rows if (r[1] or "").upper().startswith("CREATE VIRTUAL TABLE")]
    return [
        r[0]
        for r in rows
        if r[0] not in virtual and not any(r[0].startswith(f"{v}_") for v in virtual)
    ]


def _pg_tables(conn, schema: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        ),
        {"s": schema},
    ).all()
    return [r[0] for r in rows]


def _pg_tool(name: str) -> str:
    """A PostgreSQL client program: on ``$XRM_PG_BIN``, else on the PATH."""
    folder = os.environ.get("XRM_PG_BIN")
    found = shutil.which(name, path=folder) if folder else shutil.which(name)
    if found is None:
        where = f"in {folder} ($XRM_PG_BIN)" if folder else "on the PATH"
        raise BackupError(
            f"{name} was not found {where}: install the PostgreSQL client programs "
            "(Debian: apt-get install postgresql-client) or set XRM_PG_BIN to their folder"
        )
    return found


def _pg_env(url) -> dict[str, str]:
    """libpq's environment for the store's server: the password never on a command line."""
    env = dict(os.environ)
    pairs = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
        "PGSSLMODE": url.query.get("sslmode"),
    }
    env.update({k: str(v) for k, v in pairs.items() if v})
    return env


def _run(command: list[str], env: dict, what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        detail = "; ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise BackupError(f"{what} failed: {detail}")


# ------------------------------------------------------------------------------ backup
def backup(store, target: Path | str | None = None) -> Made:
    """Write a backup of ``store``'s database to ``target`` (default: a dated name in the
    current folder); the archive appears whole or not at all."""
    import xrm

    target = Path(target) if target else Path(default_name())
    if target.exists() and target.is_dir():
        target = target / default_name()
    url = store.engine.url
    dialect = store.engine.dialect.name
    with tempfile.TemporaryDirectory(prefix="xrm-backup-") as folder:
        member = Path(folder) / MEMBERS[dialect]
        if dialect == "sqlite":
            summary = _backup_sqlite(_sqlite_path(url), member)
        else:
            summary = _backup_postgres(store, member)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "platform_version": xrm.__version__,
            "dialect": dialect,
            "created_at": _now(),
            **summary,
            "database": {
                "member": member.name,
                "bytes": member.stat().st_size,
                "sha256": _sha256(member),
            },
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with tarfile.open(partial, "w:gz") as archive:
                data = json.dumps(manifest, indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(data)
                info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
                info.mode = 0o600
                archive.addfile(info, io.BytesIO(data))
                archive.add(member, arcname=member.name, recursive=False)
            os.chmod(partial, 0o600)  # passwords' hashes and tokens' digests are inside
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return Made(target, manifest)


def _backup_sqlite(path: Path, member: Path) -> dict:
    if not path.exists():
        raise BackupError(f"no database at {path}")
    source = sqlite3.connect(path, timeout=30)
    copy = sqlite3.connect(member)
    try:
        source.backup(copy)  # every page in one step: one consistent snapshot
    finally:
        source.close()
        copy.close()
    engine = sa.create_engine(f"sqlite:///{member}")
    try:
        with engine.connect() as conn:
            return _summary(conn, _sqlite_tables(conn))
    finally:
        engine.dispose()


def _backup_postgres(store, member: Path) -> dict:
    pg_dump = _pg_tool("pg_dump")
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
            if schema is None:
                raise BackupError("the database's search_path names no existing schema")
            snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            summary = _summary(conn, _pg_tables(conn, schema))
            summary["schema"] = schema
            summary["server_version"] = conn.execute(sa.text("SHOW server_version")).scalar()
            # pg_dump reads the snapshot the counts were made in; this transaction holds it
            # open until the dump is done.
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--schema={_quote(schema)}",
                    f"--file={member}",
                ],
                _pg_env(store.engine.url),
                "pg_dump",
            )
    return summary


# ------------------------------------------------------------------------------ restore
def read_manifest(archive_path: Path | str) -> dict:
    """The manifest of a backup archive, checked for its format."""
    with _opened(archive_path) as archive:
        return _manifest(archive)


@contextlib.contextmanager
def _opened(archive_path: Path | str) -> Iterator[tarfile.TarFile]:
    path = Path(archive_path)
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    try:
        archive = tarfile.open(path, "r:gz")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{path} is not a backup archive (a .tar.gz): {exc}") from None
    with archive:
        yield archive


def _manifest(archive: tarfile.TarFile) -> dict:
    try:
        member = archive.getmember(MANIFEST)
        handle = archive.extractfile(member) if member.isfile() else None
        if handle is None:
            raise KeyError(MANIFEST)
        manifest = json.loads(handle.read(1 << 20).decode("utf-8"))
    except KeyError:
        raise BackupError(f"the archive has no {MANIFEST}: not an xrm backup") from None
    except (ValueError, UnicodeDecodeError, tarfile.TarError) as exc:
        raise BackupError(f"the archive's {MANIFEST} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"the archive's {MANIFEST} is not an xrm backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {manifest.get('format_version')!r} is not one this "
            f"platform reads (it reads {FORMAT_VERSION})"
        )
    for key in ("dialect", "platform_version", "tables", "database"):
        if key not in manifest:
            raise BackupError(f"the archive's {MANIFEST} lacks {key!r}")
    return manifest


def _extract(archive: tarfile.TarFile, manifest: dict, folder: Path) -> Path:
    """The database member, written to ``folder`` and checked against the manifest."""
    described = manifest["database"]
    name = described.get("member")
    if name not in MEMBERS.values():
        raise BackupError(f"the manifest names an unexpected database member {name!r}")
    try:
        member = archive.getmember(name)
    except KeyError:
        raise BackupError(f"the archive lacks its database member {name!r}") from None
    if not member.isfile():
        raise BackupError(f"the archive's {name} is not a plain file")
    path = folder / name
    source = archive.extractfile(member)
    with path.open("wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    if _sha256(path) != described.get("sha256"):
        raise BackupError(
            f"the archive's {name} is not the one its manifest describes (SHA-256 differs): "
            "the file is damaged or was changed"
        )
    return path


def restore(archive_path: Path | str, url: str, *, force: bool = False, **engine_options) -> dict:
    """Restore a backup into the database at ``url``; returns the manifest.  A target
    holding data is refused unless ``force``.  All or nothing."""
    import xrm

    from .database import create_engine, normalize_url

    target_url = make_url(normalize_url(url))
    dialect = "sqlite" if target_url.drivername.startswith("sqlite") else "postgresql"
    with _opened(archive_path) as archive:
        manifest = _manifest(archive)
        if manifest["dialect"] != dialect:
            raise BackupError(
                f"this backup is of a {manifest['dialect']} database; the target is {dialect}"
            )
        made_by, ours = manifest["platform_version"], xrm.__version__
        if _version_tuple(str(made_by)) > _version_tuple(ours):
            raise BackupError(
                f"this backup was made by xrm {made_by}, newer than this xrm {ours}: "
                "restore it with that version or a later one"
            )
        with tempfile.TemporaryDirectory(prefix="xrm-restore-") as folder:
            member = _extract(archive, manifest, Path(folder))
            if dialect == "sqlite":
                _restore_sqlite(member, _sqlite_path(target_url), manifest, force)
            else:
                engine = create_engine(str(url), **engine_options)
                try:
                    _restore_postgres(member, engine, manifest, force)
                finally:
                    engine.dispose()
    return manifest


def _holds_data(conn, tables: list[str]) -> list[str]:
    return [
        name
        for name in tables
        if name not in _EMPTY_ANYWAY
        and conn.execute(sa.text(f"SELECT 1 FROM {_quote(name)} LIMIT 1")).first() is not None
    ]


def _refuse_data(found: list[str], where: str) -> None:
    shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
    raise BackupError(
        f"{where} holds data ({shown}): restoring would replace it; use --force to replace it"
    )


def _check_counts(conn, manifest: dict, tables: list[str]) -> None:
    expected = manifest["tables"]
    found = {
        name: conn.execute(sa.text(f"SELECT count(*) FROM {_quote(name)}")).scalar_one()
        for name in tables
    }
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or sorted(
            n for n in found if found[n] != expected[n]
        )
        raise BackupError(
            f"the restored database does not match its manifest (tables: {', '.join(wrong[:5])})"
        )


def _catalog_version(conn, tables: list[str], schema: str | None = None) -> int:
    if "xrm_catalog" not in tables:
        return 0
    name = f"{_quote(schema)}.xrm_catalog" if schema else "xrm_catalog"
    return conn.execute(sa.text(f"SELECT max(version) FROM {name}")).scalar() or 0


def _restore_sqlite(member: Path, target: Path, manifest: dict, force: bool) -> None:
    import xrm

    previous = 0
    if target.exists():
        engine = sa.create_engine(f"sqlite:///{target}")
        try:
            with engine.connect() as conn:
                tables = _sqlite_tables(conn)
                found = _holds_data(conn, tables)
                if found and not force:
                    _refuse_data(found, f"the database at {target}")
                previous = _catalog_version(conn, tables)
        except sa.exc.DatabaseError as exc:
            if not force:
                raise BackupError(f"{target} is not a readable SQLite database: {exc}") from None
        finally:
            engine.dispose()
    # Check the copy where nothing depends on it: the pages, the rows, the catalog.
    checked = sqlite3.connect(member)
    try:
        verdict = checked.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the backup's database is damaged: {exc}") from None
    finally:
        checked.close()
    if verdict != "ok":
        raise BackupError(f"the backup's database is damaged: {verdict}")
    engine = sa.create_engine(f"sqlite:///{member}")
    try:
        with engine.begin() as conn:
            _check_counts(conn, manifest, _sqlite_tables(conn))
            # running processes see a new version and rebuild their catalog
            conn.execute(
                sa.text("UPDATE xrm_catalog SET version = :v WHERE id = 1"),
                {"v": max(previous, manifest.get("catalog_version") or 0) + 1},
            )
    finally:
        engine.dispose()
    try:
        with xrm.open(f"sqlite:///{member}"):
            pass  # the packs load in this platform, and older platform tables are brought up
    except Exception as exc:  # any failure to open is the reason the restore stops
        raise BackupError(f"the backup's catalog does not load in this xrm: {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(member)
    destination = sqlite3.connect(target, timeout=30)
    try:
        # one write transaction on the target: its readers see the old pages or the new
        source.backup(destination)
    except sqlite3.Error as exc:
        raise BackupError(f"could not write {target}: {exc}") from None
    finally:
        source.close()
        destination.close()


def _restore_postgres(member: Path, engine, manifest: dict, force: bool) -> None:
    pg_restore, psql = _pg_tool("pg_restore"), _pg_tool("psql")
    source = manifest.get("schema")
    if not source:
        raise BackupError("the manifest of this PostgreSQL backup does not name its schema")
    with engine.connect() as conn:
        target = conn.execute(sa.text("SELECT current_schema()")).scalar()
        if target is None:
            raise BackupError(
                "the target's search_path names no existing schema: create the schema first"
            )
        tables = _pg_tables(conn, target)
        found = _holds_data(conn, tables)
        if found and not force:
            _refuse_data(found, f"schema {target!r}")
        previous = _catalog_version(conn, tables, target)
        in_the_way = False
        if source != target:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": source}
            ).first()
            if exists is not None:
                if (
                    _pg_tables(conn, source)
                    or conn.execute(
                        sa.text(
                            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = :s LIMIT 1"
                        ),
                        {"s": source},
                    ).first()
                ):
                    raise BackupError(
                        f"the backup's schema {source!r} is in use in the target database: "
                        f"restore into that schema, or into another database"
                    )
                in_the_way = True  # an empty schema of that name: dropped in the transaction
    url = engine.url
    env = _pg_env(url)
    folder = member.parent
    script = folder / "restore.sql"
    _run(
        [pg_restore, "--no-owner", "--no-privileges", f"--file={script}", str(member)],
        env,
        "pg_restore",
    )
    before = folder / "before.sql"
    after = folder / "after.sql"
    lines = [f"DROP SCHEMA IF EXISTS {_quote(target)} CASCADE;"]
    if in_the_way:
        lines.append(f"DROP SCHEMA {_quote(source)};")
    before.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checks = []
    if source != target:
        checks.append(f"ALTER SCHEMA {_quote(source)} RENAME TO {_quote(target)};")
    expected = manifest["tables"]
    checks.append(_count_check(target, expected))
    version = max(previous, manifest.get("catalog_version") or 0) + 1
    if "xrm_catalog" in expected:
        checks.append(
            f"UPDATE {_quote(target)}.xrm_catalog SET version = {int(version)} WHERE id = 1;"
        )
    after.write_text("\n".join(checks) + "\n", encoding="utf-8")
    _run(
        [
            psql,
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            f"--file={before}",
            f"--file={script}",
            f"--file={after}",
        ],
        env,
        "restoring with psql",
    )


def _count_check(schema: str, expected: dict[str, int]) -> str:
    """A block that fails the transaction unless the schema holds exactly the manifest's
    tables with exactly its row counts."""
    names = ", ".join("'" + n.replace("'", "''") + "'" for n in sorted(expected)) or "NULL"
    lines = [
        "DO $xrm$",
        "DECLARE found bigint;",
        "BEGIN",
        "  IF (SELECT count(*) FROM information_schema.tables WHERE table_schema = "
        f"'{schema.replace(chr(39), chr(39) * 2)}' AND table_type = 'BASE TABLE') <> {len(expected)}"
        f" OR EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = "
        f"'{schema.replace(chr(39), chr(39) * 2)}' AND table_type = 'BASE TABLE' "
        f"AND table_name NOT IN ({names})) THEN",
        "    RAISE EXCEPTION 'the restored schema does not hold the tables of the manifest';",
        "  END IF;",
    ]
    for name, rows in sorted(expected.items()):
        lines += [
            f"  SELECT count(*) INTO found FROM {_quote(schema)}.{_quote(name)};",
            f"  IF found <> {int(rows)} THEN",
            "    RAISE EXCEPTION 'table % holds % rows, the manifest says %', "
            f"'{name.replace(chr(39), chr(39) * 2)}', found, {int(rows)};",
            "  END IF;",
        ]
    lines += ["END", "$xrm$;"]
    return "\n".join(lines)
