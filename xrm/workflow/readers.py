"""A message's reader: what a process may tell one user about its record.

Processes run as the platform and read every field of every record, but a notification or
an email to a user is read by that user: rendered for them, a template sees the record
through their roles (``RecordView`` with a reader).  A field hidden from them and a record
outside their read scope — the run's own or one a lookup leads to — raise ``Withheld``
when the template reads them, and the step sends its standard text instead.  A rollup
they see only in part (its stored total counts children they may not read) is read for
them through the records service, over the children they may read, as their record form
shows it.

Readability is decided on the batch's connection, so the run's own uncommitted changes
count: an ``assign`` step followed by a ``notify`` to the new owner tells them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..storage.records import RecordError
from ..storage.security import Access, load_principal
from ..storage.tables import tables_for
from .context import RecordView, Withheld
from .loading import python_values

if TYPE_CHECKING:  # pragma: no cover
    from ..metadata import Entity
    from .runner import Batch, Run

__all__ = ["Reader", "Withheld", "check_link", "reader_of", "record_readable", "views"]


class Reader:
    """One user's read access during one batch (``access`` None: an inactive user, who
    reads nothing)."""

    def __init__(self, batch: Batch, access: Access | None, user_id):
        self._batch = batch
        self.access = access
        # Who reads a message alike: readers whose roles read every entity with scope
        # ``all`` differ only by their roles' field rules; any other by who they are.
        if access is not None and all(
            "all" in access.scopes_of(name, "read") for name in batch.catalog.entities
        ):
            self.alike = ("roles", access.principal.roles)
        else:
            self.alike = ("user", user_id)
        self._withheld: dict[str, frozenset[str]] = {}
        self._readable: dict[tuple[str, object], bool] = {}
        self._shares: dict[tuple[str, object], dict] = {}

    def withheld(self, entity: Entity) -> frozenset[str]:
        """The fields of ``entity`` whose stored values this reader may not learn: those
        hidden from them, and the rollups they see computed over their share (``share``)."""
        found = self._withheld.get(entity.name)
        if found is None:
            access = self.access
            if access is None:
                found = frozenset(entity.fields)
            else:
                found = frozenset(access.hidden(entity) | access.scoped_rollups(entity))
            self._withheld[entity.name] = found
        return found

    def share(self, entity: Entity, record_id, name: str):
        """A rollup of a record as this reader reads it (over the children they may
        read), through the records service; ``Withheld`` when it is hidden from them."""
        access = self.access
        if access is None or name not in access.scoped_rollups(entity) - access.hidden(entity):
            raise Withheld(f"{entity.name}.{name}")
        key = (entity.name, record_id)
        values = self._shares.get(key)
        if values is None:
            names = sorted(access.scoped_rollups(entity) - access.hidden(entity))
            store = self._batch.store
            try:  # in the batch's unit of work: its connection, its changes
                records = store.records(entity.name, principal=access.principal)
                values = records.get(record_id, fields=names)
            except RecordError:  # not theirs to read after all
                values = {}
            self._shares[key] = values
        if name not in values:
            raise Withheld(f"{entity.name}.{name}")
        return values[name]

    def may_read(self, entity: str, record: dict) -> bool:
        """Whether the reader's read scope covers ``record`` (as it is in the batch)."""
        key = (entity, record.get("id"))
        found = self._readable.get(key)
        if found is None:
            found = self._readable[key] = self._may_read(entity, record)
        return found

    def _may_read(self, entity: str, record: dict) -> bool:
        access = self.access
        if access is None:
            return False
        scopes = access.scopes_of(entity, "read")
        if "all" in scopes:
            return True
        if scopes <= {"none"}:
            return False
        if access.is_own(entity, record):
            return True
        if scopes <= {"own", "none"}:
            return False
        # team or account: the records service's own condition, on the batch's connection
        catalog = self._batch.catalog
        table = tables_for(catalog)[entity]
        condition = access.scope_condition(table, entity, "read")
        statement = sa.select(table.c.id).where(table.c.id == record.get("id"), condition)
        return self._batch.conn.execute(statement).first() is not None


def reader_of(batch: Batch, user: dict) -> Reader | None:
    """The reader of a message to ``user``; None for an administrator, who reads it all
    (their messages are rendered like the organization's, and shared)."""
    readers = batch.cache.setdefault("readers", {})
    ident = user["id"]
    if ident not in readers:
        catalog = batch.catalog
        principal = load_principal(batch.conn, catalog, ident)
        if principal is None:
            readers[ident] = Reader(batch, None, ident)
        else:
            access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
            readers[ident] = None if access.is_admin else Reader(batch, access, ident)
    return readers[ident]


def views(batch: Batch, run: Run, reader: Reader) -> dict:
    """``record`` and ``old`` of ``run`` as ``reader`` sees them (sealed when the record is
    outside their scope), for a template's context."""
    if run.entity is None or run.record is None:
        return {}
    catalog, loader = batch.catalog, batch.loader
    sealed = not reader.may_read(run.entity, run.record)
    record = old = RecordView(catalog, run.entity, run.record, loader, reader, sealed=sealed)
    if run.context.get("old"):
        old_values = {**run.record, **python_values(catalog, run.entity, run.context["old"])}
        old = RecordView(catalog, run.entity, old_values, loader, reader, sealed=sealed, past=True)
    return {"record": record, "old": old}


def record_readable(batch: Batch, run: Run, reader: Reader | None) -> bool:
    """Whether the reader may read the run's record (True without one, or for anyone who
    reads everything): whether a message may name, number or link it."""
    if reader is None or run.entity is None or run.record is None:
        return True
    return reader.may_read(run.entity, run.record)


def check_link(batch: Batch, run: Run, reader: Reader | None, needs) -> None:
    """``link`` is the run's record's address: a template that reads it is withheld from a
    reader who may not read that record."""
    if "link" in needs and not record_readable(batch, run, reader):
        raise Withheld("link")
