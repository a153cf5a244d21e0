"""The lists a record belongs to, for its read view: the records of other entities whose
many-to-many field names it (a contact's contact lists and marketing segments), as the user
may read them.  Activities (entities with ``regarding``, such as a meeting's attendees)
are left to the timeline."""

from __future__ import annotations

from collections.abc import Mapping

from ...metadata import Entity
from ...metadata.filters import FilterError
from ...storage.records import RecordError
from . import context as C

#: Lists shown per entity on a record's page.
SHOWN = 10


def memberships(entity: Entity, record: Mapping) -> list[dict]:
    """One group per entity and field that lists this record: its label and the first
    records (title and link), with how many there are."""
    out = []
    for other in C.catalog().entities.values():
        if "regarding" in other.fields or not C.can(other.name, "read"):
            continue
        readable = C.readable_names(other)
        for name, f in other.fields.items():
            if (
                f.type != "many_to_many"
                or f.params.get("to") != entity.name
                or name not in readable
            ):
                continue
            title = C.title_path(other)
            where = [name, "contains", [record["id"]]]
            try:
                service = C.records(other)
                page = service.query(filter=where, fields=[title] if title else ["id"], limit=SHOWN)
                total = service.count(where).value if page.next_cursor else len(page.rows)
            except (FilterError, RecordError):
                continue
            if not page.rows:
                continue
            C.titles().want_records(other, page.rows, [title] if title else [])
            C.titles().resolve()
            out.append(
                {
                    "label": C.plural(other),
                    "total": total,
                    "records": [
                        {
                            "title": C.record_title(other, row),
                            "url": C.record_url(other.name, row["id"]),
                        }
                        for row in page.rows
                    ],
                }
            )
    return out
