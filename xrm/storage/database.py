"""Engines for the two supported databases, configured for many threads and processes.

SQLite (the embedded default) gets WAL, a busy timeout, enforced foreign keys and
SQLAlchemy's transactional-DDL recipe: the driver's own transaction handling is switched
off and we emit BEGIN ourselves, ``BEGIN IMMEDIATE`` for connections that will write, so a
transaction that reads and then writes cannot fail at once with "database is locked".
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

DEFAULT_SQLITE_PATH = Path("instance") / "xrm.db"
WRITE = {"xrm_write": True}

# SQLite keeps NUMERIC as REAL/TEXT; money columns hold at most 18 digits, well inside what
# the conversion keeps exactly, so the generic warning is noise here.
warnings.filterwarnings("ignore", message=r"Dialect sqlite\+pysqlite does \*not\* support Decimal")


def default_url() -> str:
    url = os.environ.get("XRM_DATABASE_URL")
    if url:
        return url
    DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def normalize_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def json_text(value) -> str:
    """``json.dumps(value)`` with the default settings, text for text: one C encoder made
    once, where ``json.dumps`` makes a new one (and a dict of visited containers) for every
    value, which was most of the time of an audit row's JSON.  A value that holds itself
    gives RecursionError instead of ValueError (none of ours can)."""
    if isinstance(value, str):
        return _JSON_STRING(value)
    return "".join(_JSON_ENCODER(value, 0))


_JSON_DEFAULTS = json.JSONEncoder()
_JSON_STRING = json.encoder.encode_basestring_ascii
_JSON_ENCODER = (
    (json.encoder.c_make_encoder or json.encoder._make_iterencode)(
        None,  # no check for cycles
        _JSON_DEFAULTS.default,
        _JSON_STRING,
        None,
        _JSON_DEFAULTS.key_separator,
        _JSON_DEFAULTS.item_separator,
        False,
        False,
        True,
    )
    if json.encoder.c_make_encoder
    else None
)


def create_engine(url: str, **kwargs) -> sa.Engine:
    url = normalize_url(url)
    if _JSON_ENCODER is not None:  # without the C accelerator, json.dumps itself
        kwargs.setdefault("json_serializer", json_text)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    options = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
    options.update(kwargs)
    return sa.create_engine(url, **options)


def _sqlite_engine(url: str, **kwargs) -> sa.Engine:
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    if not memory:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    options = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        options["poolclass"] = sa.pool.StaticPool
    options.update(kwargs)
    engine = sa.create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite's own lower() folds ASCII only; filters lower both sides to ignore case
        # in every language (as PostgreSQL and the Python evaluator do).
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        # Writers take the write lock up front.  Readers run in autocommit: each statement
        # reads a consistent snapshot (WAL), and no BEGIN round trip is spent on them.
        if connection.get_execution_options().get("xrm_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def is_sqlite(engine_or_conn) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def is_postgres(engine_or_conn) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


SCHEMA_LOCK_KEY = 0x58524D  # "XRM"


def lock_schema(conn: sa.Connection) -> None:
    """Hold, until the transaction ends, the lock of whoever changes this schema's tables
    (on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers).  The key names the
    schema, so stores in other schemas of one database never wait on each other."""
    if is_postgres(conn):
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(current_schema()))"),
            {"k": SCHEMA_LOCK_KEY},
        )
