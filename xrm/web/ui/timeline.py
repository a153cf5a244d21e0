"""A record's timeline: its audit trail read as "who changed what, when", with the notes
and activities (tasks, calls, meetings, emails) whose ``regarding`` points at it."""

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

LIMIT = 50
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


def _regarding_entries(entity: Entity, record_id: int) -> list[dict]:
    """Notes and activities about the record, newest first."""
    catalog = C.catalog()
    out = []
    target = {"entity": entity.name, "id": record_id}
    for other in catalog.entities.values():
        f = other.fields.get("regarding")
        if (
            f is None
            or f.type != "any_lookup"
            or not C.can(other.name, "read")
            or "regarding" not in C.readable_names(other)
        ):
            continue
        allowed = f.params.get("to")
        if allowed and entity.name not in allowed:
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
            )
            if n in other.fields and n in readable and other.fields[n].stored
        ]
        try:
            page = C.records(other).query(
                filter=["regarding", "eq", target],
                sort=[["created_at", "desc"]],
                fields=[*wanted, "created_at", "created_by"],
                limit=LIMIT,
            )
        except (FilterError, RecordError):
            continue
        for row in page.rows:
            C.titles().want("user", row.get("created_by"))
        C.titles().resolve()
        for row in page.rows:
            exact, ago = when(row["created_at"])
            entry = {
                "kind": "note" if other.name == "note" else "activity",
                "at": row["created_at"],
                "exact": exact,
                "ago": ago,
                "who": C.titles().title("user", row["created_by"])
                if row.get("created_by")
                else C._("System"),
                "entity": C.label(other),
                "icon": other.icon or "circle",
                "title": C.record_title(other, row),
                "url": url_for("ui_record.view", entity_name=other.name, record_id=row["id"]),
                "body": C.rich_html(row.get("body")) if other.name == "note" else None,
                "attachment": row.get("attachment"),
                "details": [],
            }
            for name in ("status", "due", "starts_at", "sent_at"):
                if name in wanted and row.get(name) is not None:
                    entry["details"].append(C.text(other.fields[name], row[name]))
            out.append(entry)
    return out


def timeline_entries(entity: Entity, record_id: int) -> list[dict]:
    entries = _audit_groups(entity, record_id) + _regarding_entries(entity, record_id)

    def moment(entry):
        at = entry["at"]
        return at if at.tzinfo else at.replace(tzinfo=dt.UTC)

    entries.sort(key=moment, reverse=True)
    return entries[: LIMIT * 2]
