"""The workflow engine's tables: instances (which are also its timers), effects, approvals,
in-app notifications, the email outbox, SLA clocks and dead-lettered outbox changes.

An instance row is the unit of durable work: ``status = 'waiting'`` with a ``due_at`` is a
timer, claimed by a worker once it is due; a row that waits for something outside itself
(an approval, a sub-process) has no ``due_at`` until that something wakes it.  Every row an
effect writes carries a unique idempotency ``key``, so a re-run cannot double it.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..metadata.fieldtypes import ID_TYPE, UTCDateTime
from ..storage.database import WRITE, is_postgres, lock_schema
from ..storage.tables import NAMING
from ..storage.upgrade import upgrade_tables

metadata = sa.MetaData(naming_convention=NAMING)
KEY = sa.String(250)
#: Notified (PostgreSQL) whenever work may have become due; workers LISTEN on it.
CHANNEL = "xrm_workflow"

instances = sa.Table(
    "xrm_wf_instance",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("process", sa.String(140), nullable=False),
    sa.Column("entity", sa.String(64), nullable=True),
    sa.Column("record_id", ID_TYPE, nullable=True),
    # waiting (a timer when due_at is set), running (leased), done, failed (parked), cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started", sa.Boolean, nullable=False),  # False: trigger condition not checked yet
    sa.Column("position", sa.JSON, nullable=True),  # path of the next step; None: the first
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Column("wake_on_change", sa.Boolean, nullable=False),  # re-check when the record changes
    sa.Column("lease_owner", sa.String(80), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("context", sa.JSON, nullable=False),  # trigger, old values, vars, payload, wait state
    sa.Column("history", sa.JSON, nullable=False),  # [{at, path, kind, status, result, ms}]
    sa.Column("key", KEY, nullable=True, unique=True),
    sa.Column("parent_id", ID_TYPE, nullable=True),
    sa.Column("user_id", ID_TYPE, nullable=True),  # who or what started it
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_xrm_wf_instance_due", "status", "due_at"),
    sa.Index("ix_xrm_wf_instance_record", "entity", "record_id", "status"),
)

effects = sa.Table(
    "xrm_wf_effect",
    metadata,
    sa.Column("key", KEY, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("entity", sa.String(64), nullable=True),
    sa.Column("record_id", ID_TYPE, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

approvals = sa.Table(
    "xrm_wf_approval",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("instance_id", ID_TYPE, nullable=False),
    sa.Column("path", sa.String(200), nullable=False),
    sa.Column("user_id", ID_TYPE, nullable=False),
    sa.Column(
        "decision", sa.String(16), nullable=True
    ),  # approved rejected delegated withdrawn; None: pending
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("delegated_from", ID_TYPE, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("instance_id", "path", "user_id"),
    sa.Index("ix_xrm_wf_approval_user", "user_id", "decision"),
)

notifications = sa.Table(
    "xrm_notification",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID_TYPE, nullable=False),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("entity", sa.String(64), nullable=True),
    sa.Column("record_id", ID_TYPE, nullable=True),
    sa.Column("instance_id", ID_TYPE, nullable=True),
    sa.Column("key", KEY, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("read_at", UTCDateTime(), nullable=True),
    sa.Index("ix_xrm_notification_user", "user_id", "read_at", "id"),
)

emails = sa.Table(
    "xrm_email",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("key", KEY, nullable=False, unique=True),
    sa.Column("message_id", sa.String(250), nullable=False),
    sa.Column("to_address", sa.String(254), nullable=False),
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # an HTML alternative of the body (a scheduled report's table), and files to attach:
    # [{"filename", "content_type", "data": base64}]; both empty for most messages
    sa.Column("html", sa.Text, nullable=True),
    sa.Column("attachments", sa.JSON, nullable=True),
    sa.Column("entity", sa.String(64), nullable=True),
    sa.Column("record_id", ID_TYPE, nullable=True),
    sa.Column(
        "status", sa.String(16), nullable=False, default="queued", server_default="queued"
    ),  # sending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(80), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Index("ix_xrm_email_due", "status", "due_at"),
)

# One row per running worker (``heartbeat.py``): who it is and when it last beat, so the
# web side can tell whether anyone is doing the work.  ``name`` is the worker's lease owner.
workers = sa.Table(
    "xrm_wf_worker",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("beat_at", UTCDateTime(), nullable=False),
    sa.Index("ix_xrm_wf_worker_beat", "beat_at"),
)

# The batch a worker runs in one transaction (PostgreSQL, ``claims.take``): noted before its
# steps run, deleted by its commit.  A note whose ``until`` passed names runs whose worker
# died on them; the reaper counts an attempt for each (``claims.count_dead_batches``).
inflight = sa.Table(
    "xrm_wf_inflight",
    metadata,
    sa.Column("owner", sa.String(80), primary_key=True),
    sa.Column("ids", sa.JSON, nullable=False),
    sa.Column("until", UTCDateTime(), nullable=False),
)

sla_clocks = sa.Table(
    "xrm_sla_clock",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("sla", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", ID_TYPE, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running, paused, done
    sa.Column("priority", sa.String(64), nullable=True),
    sa.Column("target_s", sa.Integer, nullable=False),  # business seconds allowed
    sa.Column("elapsed_s", sa.Integer, nullable=False),  # business seconds before resumed_at
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("resumed_at", UTCDateTime(), nullable=True),  # start of the running stretch
    sa.Column("deadline", UTCDateTime(), nullable=True),  # while running
    sa.Column("warned_at", UTCDateTime(), nullable=True),
    sa.Column("breached_at", UTCDateTime(), nullable=True),
    sa.Column("done_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("sla", "metric", "entity", "record_id"),
    sa.Index("ix_xrm_sla_clock_record", "entity", "record_id"),
)

# Outbox rows the consumer could not turn into instances, timers and clock moves (a record
# whose values make a trigger's arithmetic fail, a malformed row): a copy of the change, so
# that a retry still has it after the outbox is purged, with the error.  status: failed
# (waiting for a fix and a retry), done (a retry went through).
dead_letters = sa.Table(
    "xrm_wf_dead_letter",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", ID_TYPE, nullable=False, unique=True),
    sa.Column("entity", sa.String(64), nullable=True),
    sa.Column("record_id", ID_TYPE, nullable=True),
    sa.Column("event", sa.String(16), nullable=True),
    sa.Column("changes", sa.JSON, nullable=True),  # None: the row's own could not be read
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=True),  # when the change was made
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("failed_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Index("ix_xrm_wf_dead_letter_status", "status", "id"),
)

_NOTIFY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION xrm_workflow_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def ensure_tables(store) -> None:
    """Create the workflow tables (and, on PostgreSQL, the wake-up trigger) once per store."""
    if getattr(store, "_xrm_workflow_tables", False):
        return
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        lock_schema(conn)
        existing = set(sa.inspect(conn).get_table_names())
        metadata.create_all(conn, checkfirst=True)
        upgrade_tables(conn, metadata)  # columns added since an existing database was made
        if is_postgres(conn) and "xrm_wf_instance" not in existing:
            conn.execute(sa.text(_NOTIFY_FUNCTION))
            conn.execute(sa.text("DROP TRIGGER IF EXISTS xrm_outbox_notify ON xrm_outbox"))
            conn.execute(
                sa.text(
                    "CREATE TRIGGER xrm_outbox_notify AFTER INSERT ON xrm_outbox "
                    "FOR EACH STATEMENT EXECUTE FUNCTION xrm_workflow_notify()"
                )
            )
    store._xrm_workflow_tables = True


def notify(conn: sa.Connection) -> None:
    """Wake sleeping workers when this transaction commits (PostgreSQL; a no-op on SQLite)."""
    if is_postgres(conn):
        conn.execute(sa.text("SELECT pg_notify(:c, 'work')"), {"c": CHANNEL})


def dialect_insert(conn: sa.Connection, table: sa.Table):
    """An INSERT that supports ON CONFLICT for the connection's dialect."""
    if is_postgres(conn):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)
