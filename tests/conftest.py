"""Shared fixtures: every database test runs on SQLite, and on PostgreSQL when
XRM_TEST_DATABASE_URL points at one (CI sets it and XRM_TEST_REQUIRE_DB=1, so a missing
server fails the run instead of skipping)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

import xrm

#: The shipped core pack's version, as its manifest says (tests that print it follow it).
CORE_VERSION = str(
    yaml.safe_load(
        (Path(xrm.__file__).parent / "solutions" / "packs" / "core" / "solution.yaml").read_text(
            encoding="utf-8"
        )
    )["version"]
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "xrm" / "solutions" / "packs"
PG_URL = os.environ.get("XRM_TEST_DATABASE_URL")

# The suite creates and signs in thousands of users: their passwords use a cheap scrypt
# (and so do the servers and commands the tests start, which inherit the environment).
# The platform's default, strong scrypt, has its own test (test_auth_hardening.py).
os.environ.setdefault("XRM_PASSWORD_HASH", "scrypt:1024:8:1")


class Database:
    """Where a test's store lives: a fresh SQLite file, or a fresh PostgreSQL schema."""

    def __init__(self, url: str, engine_options: dict, cleanup):
        self.url = url
        self.engine_options = engine_options
        self._cleanup = cleanup

    def open(self, **options):
        return xrm.open(self.url, **{**self.engine_options, **options})

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url.startswith("postgres") else "sqlite"


@contextlib.contextmanager
def fresh_database(tmp_path):
    """A fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards (for fixtures of
    any scope)."""
    if not PG_URL:
        yield Database(f"sqlite:///{tmp_path / 'xrm.db'}", {}, lambda: None)
        return
    from xrm.storage.database import normalize_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalize_url(PG_URL))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    try:
        yield Database(
            PG_URL,
            {"connect_args": {"options": f"-csearch_path={schema}"}, "pool_size": 5},
            lambda: None,
        )
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database(tmp_path):
    with fresh_database(tmp_path) as db:
        yield db


@pytest.fixture
def store(database):
    """A store with the core pack installed."""
    app = database.open()
    app.install([SOLUTIONS / "core"])
    yield app
    app.close()


# The UI tests' application and signed-in clients: a module that defines ``w`` (a
# browser.support World, or its like: a ``store`` and the users) gets them from here; a
# module that needs other settings defines its own ``app``.
@pytest.fixture(scope="module")
def app(w):
    from browser.support import make_app

    return make_app(w.store)


@pytest.fixture
def admin(app):
    from browser.support import ADMIN, Client

    return Client(app).login(ADMIN)


@pytest.fixture
def seller(app):
    from browser.support import SELLER, Client

    return Client(app).login(SELLER)


@pytest.fixture
def reader(app):
    from browser.support import READER, Client

    return Client(app).login(READER)


def write_pack(
    root: Path,
    name: str,
    files: dict[str, str],
    depends: dict | None = None,
    version: str = "1.0.0",
) -> Path:
    """A pack on disk from YAML strings (relative path -> text)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = f"solution: {name}\nversion: {version}\n"
    if depends:
        manifest += "depends:\n" + "".join(f"  {k}: '{v}'\n" for k, v in depends.items())
    (folder / "solution.yaml").write_text(manifest, encoding="utf-8")
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def assert_widgets_show_figures(board, where: str) -> None:
    """Every widget of a run dashboard shows something (``where`` starts each message): a
    KPI its figure, a report widget its rows, a list its records; none has an error."""
    for widget in board.widgets:
        here = f"{where} widget {widget.widget.index}"
        assert widget.error is None, f"{here}: {widget.error}"
        if widget.widget.kind == "kpi":
            assert widget.value, f"{here} has no figure"
        elif widget.widget.kind == "report":
            assert widget.result.rows, f"{here} is empty"
        else:
            assert widget.rows, f"{here} lists nothing"


def failed_instances(store) -> list:
    """(process, error) of every process instance that failed."""
    from xrm.workflow import tables as W

    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(W.instances.c.process, W.instances.c.error).where(
                W.instances.c.status == "failed"
            )
        ).all()


def one_record_of_each(store, user_id: int, ids: dict[str, int]) -> dict[str, int]:
    """``ids`` (entity -> a record id made by the test) completed with a record of every
    other entity of the catalog, made by the sample-data generator (so that a test that
    opens a record of every entity keeps up with the packs' new entities)."""
    from xrm.solutions.demo import generate

    catalog = store.refresh()
    missing = [name for name in catalog.entities if name not in ids]
    if missing:
        generate(store, 2, users=[user_id], skip=set(catalog.entities) - set(missing))
    found = dict(ids)
    for name in missing:
        rows = store.records(name).query(fields=["id"], limit=1).rows
        assert rows, f"the sample-data generator made no {name} record"
        found[name] = rows[0]["id"]
    return found
