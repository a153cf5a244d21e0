"""The history of the definitions administrators change: each change of the customization
layer writes, in the change's own transaction, one row per definition it touched (who,
when, the definition's text before and after, the plan's lines, and the layer's document
after it), so that a page can show what changed as a diff and revert to any earlier
version through the same plan and apply as any other change.

A definition is named by kind and name (``process: proposal_follow_up``, ``views:
{open_deals: ...}``); entity extensions (``extend``) are patches that compose and are
listed by the customization history instead.  Its text is the definition in effect: the
layer's top version, else the pack's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
import yaml

from ..metadata.model import thaw
from ..metadata.packs import Document, PackSource
from . import tables as T

#: (kind, name) of one definition.
Key = tuple[str, str]


def definitions(documents: Iterable[tuple[str, Document]]) -> dict[Key, tuple[str, object]]:
    """Every definition of the documents by (kind, name): ``entity: lead`` names one, a
    kind that holds several (``views: {a: ..., b: ...}``) names each; an entity extension
    is keyed by the pack that extends, as two packs may extend one entity; a named
    validation rule of an entity is ``("validation", "lead.needs_reason")`` besides.  A
    later document's definition replaces an earlier one's (the layer's top wins)."""
    found: dict[Key, tuple[str, object]] = {}
    for solution, document in documents:
        data = document.data
        if not isinstance(data, Mapping):
            continue
        value = data.get(document.kind)
        if document.kind in ("entity", "extend"):
            # a named validation rule is a definition of its own: the layer changes it
            # by name (validation: ENTITY.NAME), and an upgrade that changes it conflicts
            for rule in data.get("validations") or ():
                if isinstance(rule, Mapping) and rule.get("name"):
                    key = f"{value}.{rule['name']}"
                    body = {k: v for k, v in rule.items() if k != "name"}
                    found[("validation", key)] = (solution, {"validation": key, **body})
        if document.kind == "extend":
            found[("extend", f"{value} by {solution}")] = (solution, data)
        elif isinstance(value, str):
            found[(document.kind, value)] = (solution, data)
        elif isinstance(value, Mapping):
            for name, body in value.items():
                found[(document.kind, str(name))] = (solution, body)
    return found


def document_of(kind: str, name: str, body) -> dict:
    """The document that defines ``body`` alone, as the layer stores it."""
    body = thaw(body)
    if isinstance(body, dict) and body.get(kind) == name:
        return body
    return {kind: {name: body}}


def text_of(kind: str, name: str, body) -> str | None:
    if body is None:
        return None
    return yaml.safe_dump(
        document_of(kind, name, body), sort_keys=False, allow_unicode=True, width=100
    )


def _effective(packs: Sequence[PackSource], layer: Sequence[Document]) -> dict[Key, object]:
    found = {
        key: body
        for key, (_solution, body) in definitions(
            (pack.name, d) for pack in packs for d in pack.documents
        ).items()
    }
    for key, (_place, body) in definitions((d.path, d) for d in layer).items():
        if key[0] == "validation" and key in found:  # a change of some keys of the rule
            body = {**thaw(found[key]), **thaw(body)}
        found[key] = body
    return found


def record(
    conn: sa.Connection,
    packs: Sequence[PackSource],
    before: Sequence[Document],
    after: Sequence[Document],
    plan,
    user_id: int | None,
    note: str,
    now,
) -> list[int]:
    """Write a history row for each definition the change of the layer from ``before`` to
    ``after`` touched (documents added or taken out); returns the rows' ids."""
    kept = {id(d) for d in before} & {id(d) for d in after}
    moved = [d for d in [*before, *after] if id(d) not in kept]
    touched = [key for key in definitions((d.path, d) for d in moved) if key[0] not in ("extend",)]
    if not touched:
        return []
    old, new = _effective(packs, before), _effective(packs, after)
    on_top = definitions((d.path, d) for d in after)
    lines = [line for line in plan.lines() if line != "nothing to change"]
    ids = []
    for kind, name in dict.fromkeys(touched):
        before_text = text_of(kind, name, old.get((kind, name)))
        after_text = text_of(kind, name, new.get((kind, name)))
        if before_text == after_text:
            continue
        layered = on_top.get((kind, name))
        ids.append(
            conn.execute(
                T.definition_history.insert()
                .values(
                    kind=kind,
                    name=name,
                    at=now,
                    user_id=user_id,
                    note=note[:200],
                    before_text=before_text,
                    after_text=after_text,
                    document=document_of(kind, name, layered[1]) if layered else None,
                    plan=lines,
                )
                .returning(T.definition_history.c.id)
            ).scalar_one()
        )
    return ids


def entries(store, kind: str, name: str) -> list[dict]:
    """A definition's history, newest first."""
    h = T.definition_history
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(h).where(h.c.kind == kind, h.c.name == name).order_by(h.c.id.desc())
        ).mappings()
        return [dict(row) for row in rows]


def entry(store, ident: int) -> dict | None:
    h = T.definition_history
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(h).where(h.c.id == ident)).mappings().first()
    return dict(row) if row else None


def revert(store, ident: int, *, user_id: int | None = None, dry_run: bool = False, allow_loss=()):
    """Make a definition what it was after history row ``ident``: its layer document on
    top again, or, when that version was the pack's own, the customization taken out.
    One catalog change like any other (plan, all or nothing); returns (catalog, plan).
    Raises LookupError for an unknown row, and KeyError when there is nothing to undo."""
    row = entry(store, ident)
    if row is None:
        raise LookupError(f"no history entry {ident}")
    kind, name = row["kind"], row["name"]
    note = f"reverted to version #{ident}"
    if row["document"] is not None:
        return store.customize_all(
            [(kind, row["document"])],
            user_id=user_id,
            dry_run=dry_run,
            replacing=[(kind, name)],
            allow_loss=allow_loss,
            note=note,
        )
    return store.uncustomize(
        kind, name, user_id=user_id, dry_run=dry_run, allow_loss=allow_loss, note=note
    )
