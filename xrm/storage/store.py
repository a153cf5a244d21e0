"""The store: one database, its current catalog, transactions and the records services.

The installed packs' files and the customization layer live in the database, and so does
the catalog version: every process rebuilds the same catalog from the same rows, and a
change made by one process (a pack installed, a field added) is seen by the others the
next time they call ``refresh()`` (the web layer does so before each request, workers
before each job): one indexed single-row read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path

import sqlalchemy as sa

from ..metadata import Catalog, Document, build_catalog, parse_pack
from ..metadata.loader import resolve_packs
from ..metadata.model import thaw
from ..metadata.packs import PackSource, _validate
from ..metadata.problems import Problems
from . import history
from . import tables as T
from .database import WRITE, create_engine, default_url, is_postgres, lock_schema
from .schema import (
    Loss,
    LossNotNamed,
    SchemaChangeRefused,
    SchemaPlan,
    apply_schema,
    changed_tables,
    option_losses,
    plan_schema,
    purge_schema,
)
from .security import Access, Principal, load_principal
from .tables import tables_for
from .unit import UnitOfWork
from .upgrade import upgrade_platform
from .users import Users


def _layer_documents(layer, kind: str, name: str) -> list:
    """The customization layer's stored documents that define the ``kind`` named
    ``name``: by their top key (``process: weekly_report``) or, for the kinds that hold
    several definitions under it, as its only one (``reports: {mine: ...}``)."""

    def names(data) -> bool:
        value = data.get(kind)
        return value == name or (isinstance(value, dict) and list(value) == [name])

    return [
        d
        for d in layer
        if d.kind == kind
        and isinstance(d.data, dict)
        and names(d.data)
        and d.path.startswith("customization#")
    ]


def _single_name(kind: str, data) -> tuple[str, str] | None:
    """(kind, name) of a document that defines one named definition, else None."""
    value = data.get(kind) if isinstance(data, dict) else None
    if kind != "extend" and isinstance(value, str):
        return kind, value
    if isinstance(value, dict) and len(value) == 1:
        return kind, next(iter(value))
    return None


def purge_losses(conn, plan: SchemaPlan) -> list[Loss]:
    """The kept tables and columns that hold data: what a purge would lose, with rows."""
    losses = []
    for table in plan.kept_tables:
        rows = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()
        if rows:
            what = "the table is dropped with its data"
            losses.append(Loss(table, table, None, int(rows), what, "drop"))
    for table, column in plan.kept_columns:
        if table in plan.kept_tables:
            continue
        holder = sa.table(table, sa.column(column))
        rows = conn.execute(
            sa.select(sa.func.count()).select_from(holder).where(holder.c[column].isnot(None))
        ).scalar()
        if rows:
            what = "the column is dropped with its data"
            losses.append(Loss(f"{table}.{column}", table, column, int(rows), what, "drop"))
    return losses


class LifecycleRefused(ValueError):
    """A pack change that is not made: a downgrade, or an uninstall others depend on."""


def refuse_downgrade(installed: PackSource | None, incoming: PackSource) -> None:
    """An older version never replaces a newer one: its definitions may lack fields whose
    data the newer one wrote, and nothing could say what the older one expects of it."""
    if installed is None or installed.version == incoming.version:
        return
    from packaging.version import InvalidVersion, Version

    try:
        older = Version(incoming.version) < Version(installed.version)
    except InvalidVersion:
        return  # the manifest check reports a malformed version
    if older:
        raise LifecycleRefused(
            f"{incoming.name} {installed.version} is installed and {incoming.version} is older: "
            "downgrades are refused (uninstall it first, or install a version "
            f"{installed.version} or newer)"
        )


class Clock:
    """Time source; tests and the workflow engine inject their own to move time."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class Store(Users):
    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        outbox: str = "watched",
        **engine_options,
    ):
        self.url = url or default_url()
        self.engine = create_engine(self.url, **engine_options)
        self.clock = clock or Clock()
        #: "watched": outbox rows for entities a process or SLA listens to; "all": for every change
        self.outbox = outbox
        self._catalog: Catalog | None = None
        self._pack_cache: dict[tuple[str, str], PackSource] = {}
        # (version, packs, layer) of the catalog version this process last read or wrote.
        self._sources: tuple[int, list[PackSource], list[Document]] | None = None
        self._lock = threading.RLock()
        self._pinned: ContextVar[Catalog | None] = ContextVar(
            f"xrm-catalog-{id(self)}", default=None
        )
        self._principals: dict[tuple[int, int], tuple[float, Principal | None]] = {}
        self._current: ContextVar[UnitOfWork | None] = ContextVar(
            f"xrm-uow-{id(self)}", default=None
        )
        self.ensure_platform()
        self.refresh()

    # ------------------------------------------------------------------ lifecycle
    def ensure_platform(self) -> None:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            lock_schema(conn)
            T.platform.create_all(conn, checkfirst=True)
            upgrade_platform(conn)  # columns added to platform tables since it was created
            if conn.execute(sa.select(T.catalog_state.c.version)).first() is None:
                conn.execute(
                    T.catalog_state.insert().values(id=1, version=0, changed_at=self.clock.now())
                )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ catalog
    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def stored_version(self, conn: sa.Connection | None = None) -> int:
        query = sa.select(T.catalog_state.c.version).where(T.catalog_state.c.id == 1)
        if conn is not None:
            return conn.execute(query).scalar_one()
        with self.engine.connect() as own:
            return own.execute(query).scalar_one()

    def refresh(self) -> Catalog:
        """The current catalog, rebuilt if another process moved the version.

        Inside ``pinned()`` (a web request, a worker's job) the catalog checked when the
        scope began is used throughout, without asking the database again."""
        pinned = self._pinned.get()
        if pinned is not None:
            return pinned
        version = self.stored_version()
        if self._catalog is not None and self._catalog.version == version:
            return self._catalog
        with self._lock:
            if self._catalog is None or self._catalog.version != version:
                with self.engine.connect() as conn, conn.begin():
                    self._catalog = self._load_catalog(conn)
        return self._catalog

    @contextlib.contextmanager
    def pinned(self):
        """One catalog check for a whole unit of work such as a request: ``refresh()``
        once, then every call inside sees that catalog."""
        if self._pinned.get() is not None:
            yield self._pinned.get()
            return
        token = self._pinned.set(self.refresh())
        try:
            yield self._pinned.get()
        finally:
            self._pinned.reset(token)

    def pin(self):
        """``refresh()`` and pin the result until ``unpin(token)`` (for request hooks)."""
        return self._pinned.set(self.refresh())

    def unpin(self, token) -> None:
        self._pinned.reset(token)

    def _stored_packs(self, conn) -> list[PackSource]:
        rows = conn.execute(sa.select(T.solutions).order_by(T.solutions.c.position)).all()
        problems = Problems()
        packs = [self._parsed(row.files, row.root, problems) for row in rows]
        problems.raise_if_any()
        return [p for p in packs if p is not None]

    @staticmethod
    def _pack_key(files: dict, root: str) -> tuple[str, str]:
        return (root, hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest())

    def _parsed(self, files: dict, root: str, problems: Problems) -> PackSource | None:
        """Parsed packs are kept by content: a catalog change re-reads only what changed."""
        key = self._pack_key(files, root)
        found = self._pack_cache.get(key)
        if found is None:
            found = parse_pack(files, root, problems)
            if found is not None and not problems:
                self._pack_cache[key] = found
        return found

    def _stored_layer(self, conn) -> list[Document]:
        rows = conn.execute(sa.select(T.customizations).order_by(T.customizations.c.id)).all()
        return [Document(row.kind, row.document, f"customization#{row.id}") for row in rows]

    def _load_catalog(self, conn) -> Catalog:
        version = self.stored_version(conn)
        packs, layer = self._stored_sources(conn, version)
        return build_catalog(packs, layer, version)

    def _stored_sources(self, conn, version: int) -> tuple[list[PackSource], list[Document]]:
        """The packs and customizations of a stored catalog version.  Every change to them
        bumps the version in the same transaction, so the ones this process last read or
        wrote serve again while the version is the same."""
        remembered = self._sources
        if remembered is not None and remembered[0] == version:
            return remembered[1], remembered[2]
        packs, layer = self._stored_packs(conn), self._stored_layer(conn)
        self._sources = (version, packs, layer)
        return packs, layer

    def change_catalog(
        self,
        change: Callable[
            [sa.Connection, list[PackSource], list[Document]],
            tuple[list[PackSource], list[Document]],
        ],
        *,
        dry_run: bool = False,
        after: Callable[[sa.Connection, Catalog], None] | None = None,
        allow_loss: Iterable[str] = (),
        actor: int | None = None,
        note: str = "",
    ) -> tuple[Catalog, SchemaPlan]:
        """Build a catalog from the stored one plus a change, sync the schema and bump the
        version, all in one transaction under the schema lock.  ``dry_run`` plans only.

        A plan that would cut or drop data (``SchemaPlan.losses``) is applied only when
        ``allow_loss`` names each loss (``entity.field``, or a table for all of its
        columns); a name that names no loss is refused too, so a typo never passes.
        Definitions of the customization layer that the change touches are written to
        their history (``history.py``) with ``actor`` and ``note``."""
        allow_loss = tuple(allow_loss)
        for attempt in range(5):
            try:
                return self._change_catalog(change, dry_run, after, allow_loss, actor, note)
            except sa.exc.OperationalError as exc:  # lock_timeout on PostgreSQL
                if "lock" not in str(exc).lower() or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _change_catalog(self, change, dry_run, after, allow_loss=(), actor=None, note=""):
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin() as transaction:
            lock_schema(conn)
            if is_postgres(conn):
                conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            stored_version = self.stored_version(conn)
            stored_packs, stored_layer = self._stored_sources(conn, stored_version)
            packs, layer = change(conn, list(stored_packs), list(stored_layer))
            version = stored_version + 1
            catalog = build_catalog(packs, layer, version)
            entity_tables = tables_for(catalog)
            current = self._catalog
            in_sync = current is not None and current.version == version - 1
            previous = tables_for(current) if in_sync else None
            only = changed_tables(previous, entity_tables) if in_sync else None
            plan = plan_schema(conn, entity_tables, only, previous)
            before = current if in_sync else None
            if before is None and stored_version:
                before = build_catalog(stored_packs, stored_layer, stored_version)
            plan.data_losses = option_losses(conn, before, catalog)
            unknown = plan.allow(allow_loss)
            if unknown:
                raise LossNotNamed(unknown, plan.losses)
            if dry_run:
                transaction.rollback()
                return catalog, plan
            apply_schema(conn, entity_tables, plan)  # refuses a loss not allowed
            if layer is not stored_layer and [id(d) for d in layer] != [
                id(d) for d in stored_layer
            ]:
                history.record(
                    conn, stored_packs, stored_layer, layer, plan, actor, note, self.clock.now()
                )
            by_name = {p.name: p for p in packs}
            ordered = [by_name[name] for name in catalog.solutions]  # dependency order
            if [id(p) for p in ordered] != [id(p) for p in stored_packs]:
                self._save_packs(conn, ordered)
            conn.execute(
                T.catalog_state.update()
                .where(T.catalog_state.c.id == 1)
                .values(version=version, changed_at=self.clock.now())
            )
            if after is not None:
                after(conn, catalog)
        with self._lock:
            self._catalog = catalog
            self._sources = (version, ordered, layer)
        return catalog, plan

    def _save_packs(self, conn, packs: Sequence[PackSource]) -> None:
        stored = {
            row.name: row
            for row in conn.execute(
                sa.select(
                    T.solutions.c.name,
                    T.solutions.c.version,
                    T.solutions.c.files,
                    T.solutions.c.position,
                )
            )
        }
        now = self.clock.now()
        for pack in packs:  # already parsed: the next change need not parse them again
            self._pack_cache[self._pack_key(pack.files, pack.root)] = pack
        for position, pack in enumerate(packs):
            row = stored.get(pack.name)
            values = {
                "version": pack.version,
                "root": pack.root,
                "files": pack.files,
                "position": position,
            }
            if row is None:
                conn.execute(
                    T.solutions.insert().values(name=pack.name, installed_at=now, **values)
                )
            elif row.files != pack.files or row.version != pack.version or row.position != position:
                conn.execute(
                    T.solutions.update().where(T.solutions.c.name == pack.name).values(**values)
                )
        gone = set(stored) - {pack.name for pack in packs}
        if gone:  # uninstalled: the pack's definitions leave, its data stays (see purge)
            conn.execute(T.solutions.delete().where(T.solutions.c.name.in_(sorted(gone))))

    # ------------------------------------------------------------------ packs
    def install(
        self,
        paths: Iterable[str | Path],
        *,
        dry_run: bool = False,
        demo: bool = False,
        allow_loss: Iterable[str] = (),
    ) -> tuple[Catalog, SchemaPlan]:
        """Install (or update) packs and what they depend on, with their reference data
        (``data/``; ``demo/`` too when asked); all or nothing."""
        problems = Problems()
        new = resolve_packs(paths, problems)
        problems.raise_if_any()
        # An exported customization layer (``customization: true``) joins the layer here.
        exported = [p for p in new if p.manifest.get("customization") is True]
        new = [p for p in new if p.manifest.get("customization") is not True]

        def change(conn, packs, layer):
            merged = {p.name: p for p in packs}
            for pack in new:
                refuse_downgrade(merged.get(pack.name), pack)
                merged[pack.name] = pack
            for pack in exported:
                present = [thaw(d.data) for d in layer]
                # the documents as read (stored as plain JSON all the same), so that a
                # problem in one is reported at its file, line and column
                fresh = [(d.kind, d.data) for d in pack.documents if thaw(d.data) not in present]
                replacing = [key for kind, data in fresh if (key := _single_name(kind, data))]
                layer = self._layered(conn, layer, fresh, replacing, None)
            return list(merged.values()), layer

        written: list = []

        def after(conn, catalog):
            from .pack_data import load_pack_data

            written.append(load_pack_data(self, conn, catalog, new, demo=demo)[0])

        result = self.change_catalog(
            change, dry_run=dry_run, after=after, allow_loss=allow_loss, note="installed"
        )
        for unit in written:
            unit.after_commit()
        return result

    def uninstall(
        self, name: str, *, dry_run: bool = False, allow_loss: Iterable[str] = ()
    ) -> tuple[Catalog, SchemaPlan]:
        """Take an installed pack's definitions out of the catalog, all or nothing.  Its
        tables and columns stay with their data (the plan lists them as kept) until a purge;
        refused while another installed pack depends on it."""

        def change(conn, packs, layer):
            by_name = {p.name: p for p in packs}
            if name not in by_name:
                raise LifecycleRefused(
                    f"{name!r} is not installed (installed: {', '.join(by_name) or 'none'})"
                )
            needing = sorted(p.name for p in packs if name in p.depends)
            if needing:
                raise LifecycleRefused(
                    f"{name} cannot be uninstalled: {', '.join(needing)} "
                    f"depend{'s' if len(needing) == 1 else ''} on it (uninstall "
                    f"{'it' if len(needing) == 1 else 'them'} first)"
                )
            return [p for p in packs if p.name != name], layer

        return self.change_catalog(change, dry_run=dry_run, allow_loss=allow_loss)

    def installed_packs(self) -> list[PackSource]:
        """The installed packs as stored, in dependency order."""
        with self.engine.connect() as conn:
            return list(self._stored_sources(conn, self.stored_version(conn))[0])

    def customization_documents(self) -> list[tuple[str, Document]]:
        """The customization layer's documents, each with its place (``customization#N``)."""
        with self.engine.connect() as conn:
            layer = self._stored_sources(conn, self.stored_version(conn))[1]
        return [(document.path, document) for document in layer]

    def purge(
        self, *, dry_run: bool = False, allow_loss: Iterable[str] = ()
    ) -> tuple[SchemaPlan, list[str]]:
        """Drop the tables and columns no definition uses any more (left by uninstalls and
        by fields taken out of definitions), with their data, all or nothing.  The catalog
        does not change.  Returns the plan and what was (or, dry, would be) dropped.

        Each table or column that holds data is a loss (``plan.losses``, with its rows)
        that ``allow_loss`` must name (``table.column``, or the table), else nothing is
        dropped; an empty one goes without asking."""
        allow_loss = tuple(allow_loss)
        catalog = self.refresh()
        entity_tables = tables_for(catalog)
        with self.engine.connect().execution_options(**WRITE) as conn:
            sqlite = not is_postgres(conn)
            if sqlite:
                # Outside any transaction (SQLite ignores it inside one): a table rebuilt
                # to drop a column must not take its children's rows with it.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin() as transaction:
                    lock_schema(conn)
                    plan = plan_schema(conn, entity_tables)
                    plan.data_losses = purge_losses(conn, plan)
                    unknown = plan.allow(allow_loss)
                    if unknown:
                        raise LossNotNamed(unknown, plan.losses)
                    dropped = [
                        *(
                            f"- column {t}.{c} (dropped with its data)"
                            for t, c in plan.kept_columns
                            if t not in plan.kept_tables
                        ),
                        *(f"- table {t} (dropped with its data)" for t in plan.kept_tables),
                    ]
                    if dry_run or not dropped:
                        transaction.rollback()
                        return plan, dropped
                    if plan.unallowed:
                        raise SchemaChangeRefused(plan)
                    dropped = purge_schema(conn, entity_tables, plan)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise RuntimeError("purge would break a reference between tables")
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
        return plan, dropped

    def plan(self) -> SchemaPlan:
        """What a sync of the current catalog would do to the database."""
        with self.engine.connect() as conn:
            return plan_schema(conn, tables_for(self.refresh()))

    def customize(
        self,
        kind: str,
        document: dict,
        *,
        user_id: int | None = None,
        dry_run: bool = False,
        allow_loss: Iterable[str] = (),
    ):
        """Add a document to the customization layer (what administrators change)."""
        return self.customize_all(
            [(kind, document)], user_id=user_id, dry_run=dry_run, allow_loss=allow_loss
        )

    def customize_all(
        self,
        documents: Sequence[tuple[str, dict]],
        *,
        user_id: int | None = None,
        dry_run: bool = False,
        replacing: Sequence[tuple[str, str]] = (),
        allow_loss: Iterable[str] = (),
        note: str = "saved",
    ):
        """Several customization documents (kind, document) as one change: one plan, and
        all of them applied or none (a field added together with its place on a form).
        ``replacing`` names (kind, name) definitions whose earlier documents in the layer
        the new ones replace, in the same change, so saving a definition again does not
        pile documents up."""
        problems = Problems()
        for kind, document in documents:
            _validate(document, kind, "customization", problems)  # the JSON Schemas packs pass
        problems.raise_if_any()

        def change(conn, packs, layer):
            return packs, self._layered(conn, layer, documents, replacing, user_id)

        return self.change_catalog(
            change, dry_run=dry_run, allow_loss=allow_loss, actor=user_id, note=note
        )

    def _layered(self, conn, layer, documents, replacing, user_id) -> list[Document]:
        """The layer with ``documents`` stored on top and the documents of the ``replacing``
        definitions taken out.  Stored inside the change's transaction, so the documents
        carry the ids that name them in messages; a refused change rolls them back."""
        now = self.clock.now()
        added = []
        for kind, document in documents:
            ident = conn.execute(
                T.customizations.insert()
                .values(
                    kind=kind,
                    target=str(document.get("extend") or document.get("entity") or kind),
                    document=document,
                    created_by=user_id,
                    created_at=now,
                )
                .returning(T.customizations.c.id)
            ).scalar_one()
            added.append(Document(kind, document, f"customization#{ident}"))
        gone = [d for kind, name in replacing for d in _layer_documents(layer, kind, name)]
        if gone:
            ids = [int(d.path.partition("#")[2]) for d in gone]
            conn.execute(T.customizations.delete().where(T.customizations.c.id.in_(ids)))
            layer = [d for d in layer if all(d is not g for g in gone)]
        return [*layer, *added]

    def uncustomize(
        self,
        kind: str,
        name: str,
        *,
        dry_run: bool = False,
        user_id: int | None = None,
        allow_loss: Iterable[str] = (),
        note: str = "customization taken out",
    ):
        """Take the customization layer's documents of ``kind`` named ``name`` (by their top
        key: ``process: weekly_report``, or the one name under it: ``reports: {mine: ...}``)
        out again; a pack's own definition of that name, if any, applies again.  Raises
        KeyError when the layer has none."""

        def change(conn, packs, layer):
            gone = _layer_documents(layer, kind, name)
            if not gone:
                raise KeyError(f"no customized {kind} {name!r}")
            ids = [int(d.path.partition("#")[2]) for d in gone]
            conn.execute(T.customizations.delete().where(T.customizations.c.id.in_(ids)))
            return packs, [d for d in layer if all(d is not g for g in gone)]

        return self.change_catalog(
            change, dry_run=dry_run, allow_loss=allow_loss, actor=user_id, note=note
        )

    # ------------------------------------------------------------------ work
    @contextlib.contextmanager
    def transaction(self, user_id: int | None = None):
        """A unit of work: every record change inside commits together, or none does."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        catalog = self.refresh()
        with self.engine.connect().execution_options(**WRITE) as conn:
            unit = UnitOfWork(self, conn, catalog, user_id)
            token = self._current.set(unit)
            try:
                with conn.begin():
                    yield unit
                    unit.flush()
            finally:
                self._current.reset(token)
        unit.after_commit()

    def current_unit(self) -> UnitOfWork | None:
        return self._current.get()

    def records(
        self, entity: str, user_id: int | None = None, *, principal: Principal | None = None
    ):
        """The records service for one entity.  With a principal, its roles apply to every
        read and write; without one, the caller is the platform itself (full access)."""
        from .records import Records

        catalog = self.refresh()
        if principal is None:
            return Records(self, catalog, catalog.entity(entity), user_id)
        access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
        return Records(
            self,
            catalog,
            catalog.entity(entity),
            principal.user_id,
            tz=principal.tz,
            locale=principal.locale,
            access=access,
        )

    def settings(self) -> dict:
        """Organization-wide settings (name, locale, currency, time zone, setup state)."""
        with self.engine.connect() as conn:
            return {row.key: row.value for row in conn.execute(sa.select(T.settings))}

    def save_settings(self, values: dict) -> None:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            existing = set(conn.execute(sa.select(T.settings.c.key)).scalars())
            for key, value in values.items():
                if key in existing:
                    conn.execute(
                        T.settings.update().where(T.settings.c.key == key).values(value=value)
                    )
                else:
                    conn.execute(T.settings.insert().values(key=key, value=value))

    #: How long a loaded principal is reused.  Changes made through this store clear it at
    #: once; changes made by another process are seen within this many seconds.
    PRINCIPAL_TTL = 1.0

    def principal(self, user_id: int) -> Principal | None:
        """The active user's principal (roles and teams), or None."""
        catalog = self.refresh()
        key = (user_id, catalog.version)
        cached = self._principals.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.PRINCIPAL_TTL:
            return cached[1]
        with self.engine.connect() as conn:
            principal = load_principal(conn, catalog, user_id)
        if len(self._principals) > 10_000:
            self._principals.clear()
        self._principals[key] = (now, principal)
        return principal

    def forget_principals(self) -> None:
        """Called whenever users, roles or teams change through this store."""
        self._principals.clear()
