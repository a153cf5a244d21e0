"""SQLAlchemy tables: the platform's own, and one real table per catalog entity.

Entity tables are built once per catalog version (``catalog.artifact``) into their own
MetaData; the platform tables never change shape at run time.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import sqlalchemy as sa

from ..metadata import Catalog, Entity, Field
from ..metadata.duplicates import COLUMN_PREFIX, KEY_LENGTH
from ..metadata.fieldtypes import ID_TYPE, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


def short_name(name: str, limit: int = 60) -> str:
    """Identifiers longer than PostgreSQL's 63 bytes keep a stable hash suffix."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}_{digest}"


# --------------------------------------------------------------------- platform tables
platform = sa.MetaData(naming_convention=NAMING)

catalog_state = sa.Table(
    "xrm_catalog",
    platform,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
)

settings = sa.Table(
    "xrm_setting",
    platform,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
)

solutions = sa.Table(
    "xrm_solution",
    platform,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("root", sa.String(500), nullable=False),
    sa.Column("files", sa.JSON, nullable=False),  # relative path -> YAML text
    sa.Column("position", sa.Integer, nullable=False),  # install order
    sa.Column("installed_at", UTCDateTime(), nullable=False),
)

customizations = sa.Table(
    "xrm_customization",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # entity, extend, option_sets, views
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", ID_TYPE, nullable=True),
)

users = sa.Table(
    "xrm_user",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("locale", sa.String(16), nullable=False, server_default="en"),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("password_hash", sa.String(300), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Sessions carry the generation they were issued in; signing out or a new password
    # moves it on, which ends every session and remember-me cookie issued before.
    sa.Column("session_generation", sa.Integer, nullable=False, server_default="0"),
    # The dashboard the user chose as their home page (None: the first one they see).
    sa.Column("home_dashboard", sa.String(64), nullable=True),
    # The account record the user belongs to (a partner's user), for the roles' account
    # scope.  No foreign key: the account table is the catalog's, not the platform's; the
    # users service checks the record exists and an account linked to users is not deleted.
    sa.Column("account_id", ID_TYPE, nullable=True),
)

user_roles = sa.Table(
    "xrm_user_role",
    platform,
    sa.Column(
        "user_id", ID_TYPE, sa.ForeignKey("xrm_user.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("role", sa.String(64), primary_key=True),
)

tokens = sa.Table(
    "xrm_token",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID_TYPE, sa.ForeignKey("xrm_user.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the token
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("expires_at", UTCDateTime(), nullable=True),  # None: until revoked
    # The first characters of the token, so that its holder can tell which one a listing
    # means (the rest of its 256 random bits stay secret).
    sa.Column("prefix", sa.String(16), nullable=True),
)

teams = sa.Table(
    "xrm_team",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
)

team_members = sa.Table(
    "xrm_team_member",
    platform,
    sa.Column(
        "team_id", ID_TYPE, sa.ForeignKey("xrm_team.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "user_id", ID_TYPE, sa.ForeignKey("xrm_user.id", ondelete="CASCADE"), primary_key=True
    ),
)

audit = sa.Table(
    "xrm_audit",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", ID_TYPE, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # create, update, delete
    sa.Column("field", sa.String(64), nullable=True),  # None for create/delete snapshots
    sa.Column("old", sa.JSON, nullable=True),
    sa.Column("new", sa.JSON, nullable=True),
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index("ix_xrm_audit_record", "entity", "record_id", "id"),
)

outbox = sa.Table(
    "xrm_outbox",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", ID_TYPE, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # created, updated, deleted
    sa.Column("changes", sa.JSON, nullable=True),  # field -> [old, new]
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("processed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_xrm_outbox_pending", "processed_at", "id"),
)

counters = sa.Table(
    "xrm_counter",
    platform,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Time in stage: one row per stay of a record in a stage of its stage flow, written in the
# transaction that changes the stage (the historical funnel and stage durations read it).
stage_history = sa.Table(
    "xrm_stage_history",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", ID_TYPE, nullable=False),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("previous", sa.String(64), nullable=True),  # the stage it came from
    sa.Column("entered_at", UTCDateTime(), nullable=False),
    sa.Column("left_at", UTCDateTime(), nullable=True),  # None while the record is in it
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Index("ix_xrm_stage_history_record", "entity", "record_id", "left_at"),
    sa.Index("ix_xrm_stage_history_stage", "entity", "stage", "entered_at"),
)

# A user's own variants of a list view (filter, sort, search, quick filters), by name.
saved_views = sa.Table(
    "xrm_saved_view",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID_TYPE, sa.ForeignKey("xrm_user.id", ondelete="CASCADE"), nullable=False),
    sa.Column("view", sa.String(64), nullable=False),  # the view it starts from
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_xrm_saved_view_user", "user_id", "view"),
)

# The file store: the bytes of uploaded files (file fields keep only key, name, size, type).
# In the database, so that every worker on every machine sees the same files.
files = sa.Table(
    "xrm_file",
    platform,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_by", ID_TYPE, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Merges of duplicate records (storage/merge.py): what each merge changed on the kept
# record, the removed record as it was stored and what was moved to the kept one, so that
# the merge can be undone from the record's history.
merges = sa.Table(
    "xrm_merge",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("master_id", ID_TYPE, nullable=False),  # the record kept
    sa.Column("merged_id", ID_TYPE, nullable=False),  # the record removed
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("record", sa.JSON, nullable=False),  # the removed record's columns and links
    sa.Column("master", sa.JSON, nullable=False),  # field -> [before, after] on the kept one
    sa.Column("moved", sa.JSON, nullable=False),  # references re-pointed to the kept one
    sa.Column("undone_at", UTCDateTime(), nullable=True),
    sa.Column("undone_by", ID_TYPE, nullable=True),
    sa.Index("ix_xrm_merge_master", "entity", "master_id"),
    sa.Index("ix_xrm_merge_merged", "entity", "merged_id"),
)

# The records a user opened lately (the global search's recent records), newest first by
# viewed_at; storage/global_search.py keeps the latest few per user.
recent_records = sa.Table(
    "xrm_recent_record",
    platform,
    sa.Column(
        "user_id", ID_TYPE, sa.ForeignKey("xrm_user.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("entity", sa.String(64), primary_key=True),
    sa.Column("record_id", ID_TYPE, primary_key=True),
    sa.Column("viewed_at", UTCDateTime(), nullable=False),
    sa.Index("ix_xrm_recent_record_user", "user_id", "viewed_at"),
)

# Failed sign-ins counted per key (an account at an address, an address), shared by every
# worker; the web layer's sign-in throttle reads and writes it (Redis instead when set up).
login_failures = sa.Table(
    "xrm_login_failure",
    platform,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
    sa.Column("wait_until", UTCDateTime(), nullable=True),  # no attempt considered before
    sa.Index("ix_xrm_login_failure_last_at", "last_at"),
)

# Each change to a definition of the customization layer (storage/history.py): the
# definition's text before and after, the layer's document after (what a revert applies
# again; null when the layer no longer defines it), the plan's lines, who and when.
definition_history = sa.Table(
    "xrm_definition_history",
    platform,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("name", sa.String(140), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("user_id", ID_TYPE, nullable=True),
    sa.Column("note", sa.String(200), nullable=False, server_default=""),
    sa.Column("before_text", sa.Text, nullable=True),
    sa.Column("after_text", sa.Text, nullable=True),
    sa.Column("document", sa.JSON, nullable=True),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Index("ix_xrm_definition_history_kind_name", "kind", "name", "id"),
)

# HMAC signatures of inbound webhooks already accepted, kept while they would still verify
# (their timestamp's tolerance), so that a captured request cannot be sent again.
hook_signatures = sa.Table(
    "xrm_hook_signature",
    platform,
    sa.Column("process", sa.String(140), primary_key=True),
    sa.Column("signature", sa.String(64), primary_key=True),  # the v1 HMAC, hex
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_xrm_hook_signature_expires_at", "expires_at"),
)


# ----------------------------------------------------------------------- entity tables
SYSTEM = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner", "version")
ON_DELETE_SQL = {"restrict": "RESTRICT", "set_null": "SET NULL", "cascade": "CASCADE"}


def link_table_name(entity: Entity, field: Field) -> str:
    return short_name(f"{entity.name}__{field.name}")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column as the catalog wants it: what a Table is built from and what schema
    changes compare (without building SQLAlchemy columns)."""

    name: str
    type: sa.types.TypeEngine
    references: str | None = None  # "table.column" of a foreign key
    on_delete: str | None = None
    constraint: str | None = None
    primary_key: bool = False
    nullable: bool = True
    server_default: str | None = None

    def column(self) -> sa.Column:
        constraints = (
            [sa.ForeignKey(self.references, ondelete=self.on_delete, name=self.constraint)]
            if self.references
            else []
        )
        return sa.Column(
            self.name,
            self.type,
            *constraints,
            primary_key=self.primary_key,
            autoincrement=True if self.primary_key else "auto",
            nullable=self.nullable,
            server_default=self.server_default,
        )


def field_specs(entity: Entity, field: Field) -> list[ColumnSpec]:
    """The columns of one field, with foreign keys for lookups."""
    specs = []
    for name, type_ in field.kind.columns(field):
        constraint = short_name(f"fk_{entity.name}_{name}")
        if field.type == "lookup":
            specs.append(
                ColumnSpec(
                    name,
                    type_,
                    f"{field.params['to']}.id",
                    ON_DELETE_SQL[field.on_delete],
                    constraint,
                )
            )
        elif field.type == "user":
            specs.append(ColumnSpec(name, type_, "xrm_user.id", "SET NULL", constraint))
        else:
            specs.append(ColumnSpec(name, type_))
    return specs


def system_specs(entity: Entity) -> list[ColumnSpec]:
    def user(column: str) -> ColumnSpec:
        return ColumnSpec(
            column,
            ID_TYPE,
            "xrm_user.id",
            "SET NULL",
            short_name(f"fk_{entity.name}_{column}"),
        )

    # created_by and updated_by hold the signed-in user, written only by the platform, and
    # users are deactivated, never deleted: a foreign key would check on every save (a
    # trigger per row on PostgreSQL, the larger part of an insert's cost there) what
    # cannot be otherwise.  The owner, which people choose, keeps its foreign key.
    return [
        ColumnSpec("id", ID_TYPE, primary_key=True, nullable=False),
        ColumnSpec("created_at", UTCDateTime(), nullable=False),
        ColumnSpec("created_by", ID_TYPE),
        ColumnSpec("updated_at", UTCDateTime(), nullable=False),
        ColumnSpec("updated_by", ID_TYPE),
        user("owner"),
        ColumnSpec("version", sa.Integer(), nullable=False, server_default="1"),
    ]


def column_specs(entity: Entity) -> list[ColumnSpec]:
    specs = system_specs(entity)
    for field in entity.fields.values():
        specs.extend(field_specs(entity, field))
    # one hidden, indexed key column per duplicate rule (storage/duplicates.py keeps it)
    specs.extend(ColumnSpec(rule.column, sa.String(KEY_LENGTH)) for rule in entity.duplicates)
    return specs


def record_columns(table: sa.Table) -> list[sa.Column]:
    """The columns a record is read from: all but the hidden duplicate keys."""
    return [c for c in table.columns if not c.name.startswith(COLUMN_PREFIX)]


def planned_indexes(catalog: Catalog, entity: Entity) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Index name -> (columns, unique): lookups, owner, declared, unique fields, and the
    fields that views filter or sort on."""
    wanted: dict[str, tuple[tuple[str, ...], bool]] = {}

    def want(columns: tuple[str, ...], unique: bool = False, name: str | None = None):
        name = short_name(name or f"ix_{entity.name}_{'_'.join(columns)}")
        if name not in wanted:
            wanted[name] = (columns, unique)

    want(("owner",))
    want(("updated_at", "id"))
    for field in entity.fields.values():
        if not field.stored:
            continue
        if field.type in ("lookup", "user"):
            want((field.name,))
        elif field.type == "any_lookup":
            want((f"{field.name}_entity", f"{field.name}_id"))
        if field.unique:
            want((field.name,), unique=True, name=f"uq_{entity.name}_{field.name}")
        elif field.indexed:
            want((field.name,))
    for index in entity.indexes:
        want(index.fields, index.unique, index.name)
    for rule in entity.duplicates:
        want((rule.column,))
    from ..metadata.filters import conditions_of

    for view in catalog.views_of(entity.name):
        for path, _direction in view.sort[:1]:
            if "." not in path and path in entity.fields:
                want((path, "id"))
        for condition in conditions_of(view.filter):
            indexable = condition.field.type not in (
                "long_text",
                "rich_text",
                "json",
                "file",
                "any_lookup",
            )
            if (
                len(condition.path) == 1
                and condition.field.stored
                and condition.field.kind.json_type != "array"
                and indexable
            ):
                want((condition.path[0],))
    return wanted


class EntityTables:
    """The tables of one catalog version: entity name -> Table, plus link tables.

    Each table is built the first time it is asked for (a schema change compares column
    specs, not tables, and a request builds only the tables it touches); ``tables`` and
    ``links`` build them all.  Building is locked: one version serves many threads.
    """

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.metadata = sa.MetaData(naming_convention=NAMING)
        # Entity tables point at users only: copying that one platform table in lets their
        # foreign keys resolve (copying them all cost a third of building a version).
        users.to_metadata(self.metadata)
        self._tables: dict[str, sa.Table] = {}
        self._links: dict[tuple[str, str], sa.Table] = {}
        self._all: tuple[dict, dict] | None = None
        self._names: dict[str, tuple[str, str | None]] | None = None
        self._lock = threading.RLock()

    def __getitem__(self, entity: str) -> sa.Table:
        table = self._tables.get(entity)
        return table if table is not None else self._build(entity)

    def link(self, entity: str, field: str) -> sa.Table:
        table = self._links.get((entity, field))
        if table is None:
            with self._lock:
                table = self._links.get((entity, field))
                if table is None:
                    source = self.catalog.entities[entity]
                    table = self._link_table(source, source.fields[field])
                    self._links[(entity, field)] = table
        return table

    @property
    def tables(self) -> dict[str, sa.Table]:
        """Every entity table, in catalog order."""
        return self._everything()[0]

    @property
    def links(self) -> dict[tuple[str, str], sa.Table]:
        return self._everything()[1]

    def link_fields(self):
        """(entity, field) of every many-to-many field, whose link tables these are."""
        for entity in self.catalog.entities.values():
            for field in entity.fields.values():
                if field.type == "many_to_many":
                    yield entity, field

    def indexes(self, entity: Entity) -> dict[str, tuple[tuple[str, ...], bool]]:
        return planned_indexes(self.catalog, entity)

    def table_names(self) -> dict[str, tuple[str, str | None]]:
        """Every table's name -> (entity, many-to-many field or None), without building."""
        names = self._names
        if names is None:
            names = {e.table_name: (e.name, None) for e in self.catalog.entities.values()}
            for entity, field in self.link_fields():
                names[link_table_name(entity, field)] = (entity.name, field.name)
            self._names = names
        return names

    def by_table_name(self, name: str) -> sa.Table:
        entity, field = self.table_names()[name]
        return self[entity] if field is None else self.link(entity, field)

    def _everything(self) -> tuple[dict, dict]:
        if self._all is None:
            with self._lock:
                if self._all is None:
                    tables = {name: self[name] for name in self.catalog.entities}
                    links = {
                        (e.name, f.name): self.link(e.name, f.name) for e, f in self.link_fields()
                    }
                    self._all = (tables, links)
        return self._all

    def _build(self, name: str) -> sa.Table:
        with self._lock:
            table = self._tables.get(name)
            if table is not None:
                return table
            entity = self.catalog.entities[name]
            columns = [spec.column() for spec in column_specs(entity)]
            # AUTOINCREMENT: SQLite would otherwise hand a deleted newest row's id to the next
            # record, which would inherit its audit trail and outbox history.
            table = sa.Table(entity.table_name, self.metadata, *columns, sqlite_autoincrement=True)
            for index, (cols, unique) in self.indexes(entity).items():
                sa.Index(index, *(table.c[c] for c in cols), unique=unique)
            self._tables[name] = table
            return table

    def _link_table(self, entity: Entity, field: Field) -> sa.Table:
        name = link_table_name(entity, field)
        target = field.params["to"]
        return sa.Table(
            name,
            self.metadata,
            sa.Column(
                "source_id",
                ID_TYPE,
                sa.ForeignKey(
                    f"{entity.name}.id", ondelete="CASCADE", name=short_name(f"fk_{name}_source")
                ),
                primary_key=True,
            ),
            sa.Column(
                "target_id",
                ID_TYPE,
                sa.ForeignKey(
                    f"{target}.id", ondelete="CASCADE", name=short_name(f"fk_{name}_target")
                ),
                primary_key=True,
            ),
            sa.Index(short_name(f"ix_{name}_target"), "target_id"),
        )


def tables_for(catalog: Catalog) -> EntityTables:
    return catalog.artifact("tables", lambda: EntityTables(catalog))
