"""A record's timeline: its audit trail read as "who changed what, when", with the notes
and activities (tasks, calls, meetings, emails) about it: whose ``regarding`` points at it
or at a record linked to it through its ``children`` fields (an account's contacts and
opportunities), or whose many-to-many fields list it (a meeting's attendees).  Read as the
user, a page at a time (newest first, older pages by the moment they start before)."""

from __future__ import annotations

import datetime as dt

from babel.dates import format_datetime, format_timedelta
from flask import url_for

from ...metadata import Entity, Field
from ...metadata.fieldtypes import in_zone
from ...metadata.filters import FilterError, system_field
from ...metadata.model import SYSTEM_COLUMNS
from ...storage.records import RecordError
from . import context as C

#: Entries on a page of a timeline.
PAGE = 25
#: Records linked through each children field whose activities a timeline shows.
LINKED = 500
#: Audit actions of a merge (storage/merge.py): on the kept record and on the other one.
MERGE_ACTIONS = ("merge", "unmerge", "merged")


def when(at: dt.datetime) -> tuple[str, str]:
    """A moment as (the exact time in the user's zone and language, how long ago)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    now = C.store().clock.now()
    local = in_zone(at, C.tz())
    exact = format_datetime(local, format="medium", tzinfo=local.tzinfo, locale=C.locale())
    ago = format_timedelta(at - now, add_direction=True, locale=C.locale())
    return exact, ago


def _typed(f: Field, raw):
    if raw is None:
        return None
    try:
        return f.kind.coerce(f, raw)
    except Exception:  # an old audit value may no longer fit a changed field: show it raw
        return raw


def _field(entity: Entity, name: str) -> Field | None:
    if name in entity.fields:
        return entity.fields[name]
    if name in SYSTEM_COLUMNS:
        return system_field(entity.name, name)
    return None


def _audit_groups(entity: Entity, record_id: int) -> list[dict]:
    history = C.records(entity).history(record_id)
    titles = C.titles()
    for entry in history:
        f = _field(entity, entry["field"]) if entry["field"] else None
        if f is not None:
            titles.want_value(f, _typed(f, entry["old"]))
            titles.want_value(f, _typed(f, entry["new"]))
        titles.want("user", entry["user_id"])
    titles.resolve()
    groups: list[dict] = []
    for entry in history:
        key = (entry["at"], entry["user_id"], entry["action"])
        if not groups or groups[-1]["key"] != key:
            exact, ago = when(entry["at"])
            groups.append(
                {
                    "key": key,
                    "kind": "audit",
                    "at": entry["at"],
                    "exact": exact,
                    "ago": ago,
                    "who": titles.title("user", entry["user_id"])
                    if entry["user_id"]
                    else C._("System"),
                    "action": entry["action"],
                    "changes": [],
                }
            )
        if entry["action"] in MERGE_ACTIONS and isinstance(entry["new"], dict):
            groups[-1]["merge_id"] = entry["new"].get("merge")
        if entry["action"] == "update" and entry["field"]:
            f = _field(entity, entry["field"])
            if f is None:
                label, old, new = entry["field"], str(entry["old"] or ""), str(entry["new"] or "")
            else:
                label = (
                    C.label(f)
                    if entry["field"] in entity.fields
                    else C._(C.SYSTEM_LABELS.get(entry["field"], entry["field"]))
                )
                old, new = C.text(f, _typed(f, entry["old"])), C.text(f, _typed(f, entry["new"]))
            groups[-1]["changes"].append({"label": label, "old": old, "new": new})
    merges = [g["merge_id"] for g in groups if g.get("merge_id")]
    if merges:  # the other record's title and the merge's page (ui/duplicates.py)
        from .duplicates import merge_summaries

        found = merge_summaries(entity, merges)
        for group in groups:
            if group.get("merge_id") in found:
                group["merge"] = found[group["merge_id"]]
    return groups


def linked_records(entity: Entity, record_id: int) -> list[dict]:
    """The record and the records linked to it through its ``children`` fields (an
    account's contacts and opportunities, a contact's cases...), as the user may read
    them: activities about any of these belong on the record's timeline."""
    catalog = C.catalog()
    out = [{"entity": entity.name, "id": record_id}]
    for f in entity.fields.values():
        if f.type != "children":
            continue
        child = catalog.entity_of(f.params.get("entity"))
        via = f.params.get("via")
        if (
            child is None
            or child.name == entity.name  # a hierarchy: the subsidiaries have their own
            or "regarding" in child.fields  # activities are entries themselves
            or not C.can(child.name, "read")
            or via not in C.readable_names(child)
        ):
            continue
        try:
            page = C.records(child).query(
                filter=[via, "eq", record_id], sort=[["id", "desc"]], fields=["id"], limit=LINKED
            )
        except (FilterError, RecordError):
            continue
        out.extend({"entity": child.name, "id": row["id"]} for row in page.rows)
    return out


def _about(other: Entity, targets: list[dict]):
    """Which of ``other``'s records are about the targets: its ``regarding`` names one of
    them, or a many-to-many field (a meeting's attendees) lists one."""
    f = other.fields.get("regarding")
    readable = C.readable_names(other)
    parts = []
    if f is not None and f.type == "any_lookup" and "regarding" in readable:
        allowed = f.params.get("to")
        fitting = [t for t in targets if not allowed or t["entity"] in allowed]
        if fitting:
            parts.append(["regarding", "in", fitting])
    for name, field in other.fields.items():
        if field.type != "many_to_many" or name not in readable:
            continue
        ids = [t["id"] for t in targets if t["entity"] == field.params.get("to")]
        if ids:
            parts.append([name, "contains", ids])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"any": parts}


def _regarding_entries(
    entity: Entity, record_id: int, before: dt.datetime | None, limit: int
) -> list[dict]:
    """Notes and activities about the record or the records linked to it, newest first,
    created before ``before``: at most ``limit`` of each entity."""
    catalog = C.catalog()
    out = []
    targets = linked_records(entity, record_id)
    itself = {"entity": entity.name, "id": record_id}
    for other in catalog.entities.values():
        if "regarding" not in other.fields or not C.can(other.name, "read"):
            continue
        about = _about(other, targets)
        if about is None:
            continue
        readable = C.readable_names(other)
        wanted = [
            n
            for n in (
                "title",
                "subject",
                "body",
                "attachment",
                "status",
                "due",
                "starts_at",
                "sent_at",
                "direction",
                "outcome",
                "regarding",
            )
            if n in other.fields and n in readable and other.fields[n].stored
        ]
        tree = (
            about if before is None else {"all": [about, ["created_at", "lt", before.isoformat()]]}
        )
        try:
            page = C.records(other).query(
                filter=tree,
                sort=[["created_at", "desc"]],
                fields=[*wanted, "created_at", "created_by"],
                limit=limit,
            )
        except (FilterError, RecordError):
            continue
        for row in page.rows:
            C.titles().want("user", row.get("created_by"))
            regarding = row.get("regarding")
            if regarding and regarding != itself:
                C.titles().want(regarding["entity"], regarding["id"])
        C.titles().resolve()
        for row in page.rows:
            exact, ago = when(row["created_at"])
            regarding = row.get("regarding")
            about_other = None
            # An activity found through a record the user reads (a meeting's attendee) may
            # be about one they may not read: the titles were read through their records
            # service, so that one is not named, numbered or linked.
            if (
                regarding
                and regarding != itself
                and C.titles().readable(regarding["entity"], regarding["id"])
            ):
                target = catalog.entity_of(regarding["entity"])
                about_other = {
                    "title": C.titles().title(regarding["entity"], regarding["id"]),
                    "entity": C.label(target) if target else regarding["entity"],
                    "url": C.record_url(regarding["entity"], regarding["id"]),
                }
            entry = {
                "kind": "note" if other.name == "note" else "activity",
                "at": row["created_at"],
                "exact": exact,
                "ago": ago,
                "who": C.titles().title("user", row["created_by"])
                if row.get("created_by")
                else C._("System"),
                "entity": C.label(other),
                "entity_name": other.name,
                "icon": other.icon or "circle",
                "title": C.record_title(other, row),
                "url": url_for("ui_record.view", entity_name=other.name, record_id=row["id"]),
                "body": C.rich_html(row.get("body")) if other.name == "note" else None,
                "attachment": row.get("attachment"),
                "about": about_other,
                "details": [],
            }
            for name in ("direction", "outcome", "status", "due", "starts_at", "sent_at"):
                if name in wanted and row.get(name) is not None:
                    entry["details"].append(C.text(other.fields[name], row[name]))
            out.append(entry)
    return out


def _moment(entry) -> dt.datetime:
    at = entry["at"]
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def timeline_page(
    entity: Entity, record_id: int, before: dt.datetime | None = None, limit: int = PAGE
) -> tuple[list[dict], dt.datetime | None]:
    """One page of the record's timeline, newest first, and the moment the next (older)
    page starts before (None: this is the last).  Entries made at the same moment as the
    page's last one stay on this page, so a page boundary never splits or repeats them."""
    audit = [g for g in _audit_groups(entity, record_id) if before is None or _moment(g) < before]
    entries = audit + _regarding_entries(entity, record_id, before, limit + 1)
    entries.sort(key=_moment, reverse=True)
    if len(entries) <= limit:
        return entries, None
    last = _moment(entries[limit - 1])
    cut = limit
    while cut < len(entries) and _moment(entries[cut]) == last:
        cut += 1
    return entries[:cut], last if cut < len(entries) else None


def timeline_entries(entity: Entity, record_id: int) -> list[dict]:
    """The first page of the record's timeline."""
    return timeline_page(entity, record_id)[0]
