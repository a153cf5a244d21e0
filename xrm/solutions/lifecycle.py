"""What installing, upgrading or uninstalling a pack would do, said before it is done:
the schema plan, the definitions added, changed and removed, the data that tables and
columns no longer defined still hold, the versions moving, and the administrators'
customizations of definitions the change touches (they stay on top and win, so the
administrator should look at them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from ..metadata.loader import resolve_packs
from ..metadata.model import thaw
from ..metadata.packs import KINDS, Document, PackSource
from ..metadata.problems import Problems
from ..storage.history import definitions
from ..storage.schema import SchemaPlan

#: (kind, name) of one definition.
Key = tuple[str, str]


@dataclass(frozen=True)
class DefinitionChange:
    kind: str
    name: str
    change: str  # added, changed, removed
    solution: str


@dataclass
class LifecyclePlan:
    schema: SchemaPlan
    versions: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    definitions: list[DefinitionChange] = field(default_factory=list)
    #: (table, column or None for the whole table, rows holding data)
    kept_data: list[tuple[str, str | None, int]] = field(default_factory=list)
    #: (kind, name, customization path): an administrator's version of a changed definition
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for name, old, new in self.versions:
            if old is None:
                out.append(f"install {name} {new}")
            elif new is None:
                out.append(f"uninstall {name} {old}")
            elif old != new:
                out.append(f"upgrade {name} {old} -> {new}")
            else:
                out.append(f"reinstall {name} {new}")
        sign = {"added": "+", "changed": "~", "removed": "-"}
        out += [
            f"{sign[c.change]} {c.kind} {c.name} ({c.change}, {c.solution})"
            for c in self.definitions
        ]
        out += [line for line in self.schema.lines() if not line.startswith("= kept")]
        for table, column, rows in self.kept_data:
            what = f"column {table}.{column}" if column else f"table {table}"
            out.append(
                f"= kept {what}: no longer defined, {rows} row{'s' if rows != 1 else ''} "
                "of data kept (xrm solution purge drops it)"
            )
        out += [
            f"! {kind} {name}: customized by an administrator ({path}); the customization "
            "stays on top of the pack's new version — review it"
            for kind, name, path in self.conflicts
        ]
        return out


# ---------------------------------------------------------------- definitions
def _pack_documents(packs: Sequence[PackSource]) -> list[tuple[str, Document]]:
    return [(pack.name, document) for pack in packs for document in pack.documents]


def diff_definitions(
    before: Sequence[PackSource], after: Sequence[PackSource]
) -> list[DefinitionChange]:
    old = definitions(_pack_documents(before))
    new = definitions(_pack_documents(after))
    changes = []
    order = list(KINDS)
    for key in sorted(old.keys() | new.keys(), key=lambda k: (order.index(k[0]), k[1])):
        if key not in old:
            changes.append(DefinitionChange(*key, "added", new[key][0]))
        elif key not in new:
            changes.append(DefinitionChange(*key, "removed", old[key][0]))
        elif thaw(old[key][1]) != thaw(new[key][1]):
            changes.append(DefinitionChange(*key, "changed", new[key][0]))
    return changes


# ---------------------------------------------------------------- plans
def plan_install(store, locations: Iterable[str | Path]) -> LifecyclePlan:
    """What ``store.install(locations)`` would do; nothing is changed."""
    problems = Problems()
    incoming = resolve_packs(locations, problems)
    problems.raise_if_any()
    before = store.installed_packs()
    _catalog, schema = store.install(locations, dry_run=True)  # refuses downgrades
    by_name = {p.name: p for p in before}
    after = dict(by_name)
    for pack in incoming:
        after[pack.name] = pack
    plan = LifecyclePlan(schema=schema)
    plan.versions = [
        (p.name, by_name[p.name].version if p.name in by_name else None, p.version)
        for p in incoming
    ]
    _describe(store, plan, before, list(after.values()))
    return plan


def plan_uninstall(store, name: str) -> LifecyclePlan:
    before = store.installed_packs()
    _catalog, schema = store.uninstall(name, dry_run=True)  # refuses what others need
    plan = LifecyclePlan(schema=schema)
    plan.versions = [(p.name, p.version, None) for p in before if p.name == name]
    _describe(store, plan, before, [p for p in before if p.name != name])
    return plan


def _describe(store, plan: LifecyclePlan, before, after) -> None:
    plan.definitions = diff_definitions(before, after)
    touched = {(c.kind, c.name) for c in plan.definitions if c.change != "added"}
    layer = store.customization_documents()
    for (kind, name), (path, _data) in definitions(layer).items():
        if (kind, name) in touched:
            plan.conflicts.append((kind, name, path))
    plan.kept_data = kept_data(store, plan.schema)


def kept_data(store, schema: SchemaPlan) -> list[tuple[str, str | None, int]]:
    """Rows holding data in each table and column the catalog no longer defines."""
    found: list[tuple[str, str | None, int]] = []
    with store.engine.connect() as conn:
        for table in schema.kept_tables:
            rows = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()
            found.append((table, None, int(rows or 0)))
        for table, column in schema.kept_columns:
            if table in schema.kept_tables:
                continue
            holder = sa.table(table, sa.column(column))
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(holder).where(holder.c[column].isnot(None))
            ).scalar()
            found.append((table, column, int(rows or 0)))
    return found
