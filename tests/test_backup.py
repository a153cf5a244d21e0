"""Backups and restores (storage/backup.py, ``xrm backup`` / ``xrm restore``): a round
trip gives back the same records, users, files and customizations, on SQLite and on
PostgreSQL; a restore checks the archive's manifest, refuses a target holding data without
--force, and is all or nothing."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import CORE_VERSION, PG_URL, SOLUTIONS

import xrm
from xrm.cli import main
from xrm.storage import backup as B
from xrm.storage.files import get_file, put_file


@pytest.fixture
def instance(database):
    """A store with records, a user with a password, a file on a note and a field added
    by an administrator."""
    store = database.open()
    store.install([SOLUTIONS / "core"])
    admin = store.add_user("ada@x.test", "Ada", password="correct horse battery")
    store.customize("extend", {"extend": "account", "fields": {"loyalty": {"type": "integer"}}})
    accounts = store.records("account", admin)
    acme = accounts.create({"name": "Acme Corporation", "loyalty": 3})
    accounts.create({"name": "Globex"})
    store.records("contact", admin).create({"last_name": "Doe", "account": acme["id"]})
    attached = put_file(store, b"\x00binary\xffbytes", "contract.pdf", user_id=admin)
    store.records("note", admin).create(
        {"title": "Signed", "body": "<p>signed</p>", "attachment": attached}
    )
    yield store, attached
    store.close()


def _contents(engine) -> dict:
    """Every table's rows, in order, as text (the catalog's version row aside: a restore
    moves it on so that running processes reload)."""
    out = {}
    with engine.connect() as conn:
        for name in sorted(sa.inspect(conn).get_table_names()):
            if name.endswith(("__fts", "__fts_data", "__fts_idx", "__fts_docsize", "__fts_config")):
                continue
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            columns = [c for c in table.c if not (name == "xrm_catalog" and c.name != "id")]
            rows = conn.execute(sa.select(*columns)).all()
            out[name] = sorted(tuple(repr(v) for v in row) for row in rows)
    return out


def _same_instance(original: dict, restored_store, attached: dict) -> None:
    assert _contents(restored_store.engine) == original
    catalog = restored_store.catalog
    assert "loyalty" in catalog.entity("account").fields  # the customization layer
    names = sorted(r["name"] for r in restored_store.records("account").query().rows)
    assert names == ["Acme Corporation", "Globex"]
    assert get_file(restored_store, attached["key"]).data == b"\x00binary\xffbytes"
    assert restored_store.check_password("ada@x.test", "correct horse battery") is not None
    # search indexes answer for the restored rows
    found = restored_store.records("account").query(search="acme").rows
    assert [r["name"] for r in found] == ["Acme Corporation"]


def test_manifest_describes_the_instance(instance, tmp_path):
    store, _attached = instance
    made = B.backup(store, tmp_path / "one.tar.gz")
    manifest = B.read_manifest(made.path)
    assert manifest == made.manifest
    assert manifest["format"] == "xrm-backup" and manifest["platform_version"] == xrm.__version__
    assert manifest["dialect"] == store.engine.dialect.name
    assert manifest["solutions"] == [{"name": "core", "version": CORE_VERSION}]
    assert manifest["users"] == 1 and manifest["customizations"] == 1
    assert manifest["files"] == {"count": 1, "bytes": len(b"\x00binary\xffbytes")}
    assert manifest["tables"]["account"] == 2 and manifest["tables"]["note"] == 1
    with tarfile.open(made.path) as archive:
        assert archive.getnames() == ["manifest.json", manifest["database"]["member"]]
    assert oct(os.stat(made.path).st_mode & 0o777) == "0o600"


def test_round_trip_into_an_empty_database(instance, tmp_path):
    store, attached = instance
    original = _contents(store.engine)
    archive = B.backup(store, tmp_path / "b.tar.gz").path
    with _empty_target(tmp_path) as (url, options):
        B.restore(archive, url, **options)
        with xrm.open(url, **options) as restored:
            _same_instance(original, restored, attached)
            assert restored.catalog.version > store.catalog.version


def test_restore_over_a_changed_instance_needs_force_and_puts_it_back(instance, database, tmp_path):
    store, attached = instance
    original = _contents(store.engine)
    archive = B.backup(store, tmp_path / "b.tar.gz").path
    # after the backup: a record more, one less, another customization, another user
    store.records("account").create({"name": "Initech"})
    store.records("contact").delete(1)
    store.customize("extend", {"extend": "contact", "fields": {"nickname": {"type": "text"}}})
    store.add_user("bob@x.test", "Bob")
    changed = _contents(store.engine)
    url, options = database.url, database.engine_options
    with pytest.raises(B.BackupError, match="holds data .*use --force"):
        B.restore(archive, url, **options)
    assert _contents(store.engine) == changed
    B.restore(archive, url, force=True, **options)
    # the running store sees the restored catalog on its next refresh
    assert "nickname" not in store.refresh().entity("contact").fields
    _same_instance(original, store, attached)


def _tampered(archive: Path, target: Path, change) -> Path:
    """A copy of an archive with its manifest changed by ``change(manifest)``."""
    with tarfile.open(archive) as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return target


def test_a_restore_that_fails_changes_nothing(instance, database, tmp_path):
    store, _attached = instance
    archive = B.backup(store, tmp_path / "b.tar.gz").path
    store.records("account").create({"name": "Written after the backup"})
    before = _contents(store.engine)
    url, options = database.url, database.engine_options

    def one_row_more(manifest):  # the database no longer matches what the manifest says
        manifest["tables"]["account"] += 1

    def newer(manifest):
        manifest["platform_version"] = "99.0.0"

    def other_dialect(manifest):
        manifest["dialect"] = "postgresql" if manifest["dialect"] == "sqlite" else "sqlite"

    def other_checksum(manifest):
        manifest["database"]["sha256"] = "0" * 64

    for change, message in [
        (one_row_more, "does not match its manifest|account holds 2 rows, the manifest says 3"),
        (newer, "made by xrm 99.0.0, newer than this xrm"),
        (other_dialect, "this backup is of a .* database; the target is"),
        (other_checksum, "SHA-256 differs"),
    ]:
        bad = _tampered(archive, tmp_path / f"{change.__name__}.tar.gz", change)
        with pytest.raises(B.BackupError, match=message):
            B.restore(bad, url, force=True, **options)
        assert _contents(store.engine) == before, change.__name__
    not_an_archive = tmp_path / "notes.txt"
    not_an_archive.write_text("hello")
    with pytest.raises(B.BackupError, match="not a backup archive"):
        B.restore(not_an_archive, url, force=True, **options)
    with pytest.raises(B.BackupError, match="no backup file"):
        B.restore(tmp_path / "missing.tar.gz", url, force=True, **options)
    assert _contents(store.engine) == before


def test_the_commands(instance, database, tmp_path, capsys):
    store, attached = instance
    original = _contents(store.engine)
    archive = tmp_path / "cli.tar.gz"
    url = database.url
    if PG_URL:  # the test's schema, as a URL names it
        with store.engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    args = ["--database", url]
    assert main(["backup", "--to", str(archive), *args]) == 0
    out = capsys.readouterr().out
    assert f"wrote {archive}" in out and f"solutions core {CORE_VERSION}; 1 users" in out
    store.records("account").create({"name": "Initech"})
    assert main(["restore", str(archive), *args]) == 1
    assert "holds data" in capsys.readouterr().err
    assert main(["restore", str(archive), "--force", *args]) == 0
    assert _contents(store.engine) == original
    assert main(["restore", str(tmp_path / "nope.tar.gz"), *args]) == 1
    assert "no backup file" in capsys.readouterr().err


def test_a_missing_postgresql_client_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("XRM_PG_BIN", str(tmp_path))
    with pytest.raises(B.BackupError, match=r"pg_dump was not found in .*XRM_PG_BIN"):
        B._pg_tool("pg_dump")


# ----------------------------------------------------------------------------- targets
class _empty_target:
    """An empty database to restore into: a new SQLite file, or a new PostgreSQL database
    (its public schema) on the test server, dropped afterwards."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.name = None

    def __enter__(self):
        if not PG_URL:
            return f"sqlite:///{self.tmp_path / 'restored' / 'xrm.db'}", {}
        from sqlalchemy.engine import make_url

        from xrm.storage.database import normalize_url

        self.name = f"xrm_restore_{uuid.uuid4().hex[:10]}"
        self.server = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
        with self.server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        url = make_url(PG_URL).set(database=self.name).render_as_string(hide_password=False)
        return url, {}

    def __exit__(self, *exc):
        if self.name:
            with self.server.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.server.dispose()


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL schemas")
def test_postgresql_refuses_a_schema_in_use_elsewhere(instance, tmp_path):
    store, _attached = instance
    archive = B.backup(store, tmp_path / "b.tar.gz").path
    other = f"t_{uuid.uuid4().hex[:12]}"
    from xrm.storage.database import normalize_url

    admin = sa.create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{other}"'))
    try:
        options = {"connect_args": {"options": f"-csearch_path={other}"}}
        with pytest.raises(B.BackupError, match="is in use in the target database"):
            B.restore(archive, PG_URL, **options)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{other}" CASCADE'))
        admin.dispose()


def test_a_backup_taken_during_a_write_holds_what_was_committed(instance, tmp_path):
    """The application keeps running: a write transaction open meanwhile neither blocks
    the backup nor appears in it half done."""
    store, _attached = instance
    from xrm.storage.database import WRITE

    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(sa.text("UPDATE account SET name = 'Not yet' WHERE name = 'Globex'"))
        conn.execute(sa.text("DELETE FROM contact"))
        archive = B.backup(store, tmp_path / "during.tar.gz").path
        conn.rollback()
    with _empty_target(tmp_path) as (url, options):
        B.restore(archive, url, **options)
        with xrm.open(url, **options) as restored:
            names = sorted(r["name"] for r in restored.records("account").query().rows)
            assert names == ["Acme Corporation", "Globex"]
            assert restored.records("contact").count().value == 1
