"""Records a pack ships: reference data in ``data/`` (upserted by key whenever the pack is
installed or upgraded) and sample data in ``demo/`` (loaded only when asked for).

A document names one entity and the field(s) that identify a record, then lists records::

    data: industry_code            # or  demo: account
    key: code                      # or  key: [country, code]
    records:
      - {code: it, name: IT services}
      - {code: mf, name: Manufacturing, parent: {code: it}}

A lookup's value is a mapping of the target's fields that finds one record (the target's
own key, typically), so the files never carry database ids.  This module gives the JSON
Schema and the cross-checks; ``xrm/storage/pack_data.py`` writes the records."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .problems import Problems, did_you_mean
from .source import Position, node_position, value_position

#: The top keys: reference data and sample data.
KINDS = ("data", "demo")
#: Field types whose values the platform computes: a data file may not set them.
COMPUTED = frozenset({"formula", "rollup", "autonumber", "children"})
#: Sample data's history: when a record was made, and its later changes.
MOMENT_KEYS = ("_at", "_then")
#: A time relative to the install: -12d, +3h, -2w, -12d 10:30 (a day, at a time of day).
RELATIVE = re.compile(r"^\s*([+-])(\d{1,5})([mhdw])(?:\s+([01]?\d|2[0-3]):([0-5]\d))?\s*$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def pack_data_schema(defs: dict, document, kind: str) -> dict:
    names = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
    return document(
        "Reference data (data/*.yaml)" if kind == "data" else "Sample data (demo/*.yaml)",
        {
            kind: {**names, "description": "the entity the records belong to"},
            "key": {
                "oneOf": [names, {"type": "array", "items": names, "minItems": 1}],
                "description": "the field(s) that identify a record: an install updates the "
                "record with the same key instead of adding another",
            },
            "records": {
                "type": "array",
                "items": {"type": "object", "propertyNames": names}
                if kind == "data"
                else {
                    "type": "object",
                    "propertyNames": {"pattern": "^(_at|_then|[a-z][a-z0-9_]*)$"},
                    "properties": {
                        "_at": {
                            "type": "string",
                            "description": "when the record was made, relative to the "
                            "install: -12d, -3h, -12d 10:30",
                        },
                        "_then": {
                            "type": "array",
                            "description": "later changes, each at its moment (_at)",
                            "items": {
                                "type": "object",
                                "propertyNames": {"pattern": "^(_at|[a-z][a-z0-9_]*)$"},
                                "required": ["_at"],
                            },
                        },
                    },
                },
                "minItems": 1,
            },
        },
        [kind, "key", "records"],
        defs,
        f"{kind}.schema.json",
    )


def key_fields(data: Mapping) -> tuple[str, ...]:
    key = data.get("key")
    return (key,) if isinstance(key, str) else tuple(key or ())


def check_pack_data(
    problems: Problems, entities: Mapping, documents: list[tuple[str, str, Mapping]]
) -> None:
    """Every (kind, solution, document): the entity and fields exist, each record has its
    key, nothing computed is set, a lookup is found by the target's fields."""
    fallback = Position("<unknown>", 1, 1)
    for kind, _solution, data in documents:
        name = data.get(kind)
        # (a record's _at and _then are sample data's: the schema lets only demo/ have them)
        entity = entities.get(name)
        if entity is None:
            problems.add(
                value_position(data, kind, fallback),
                str(name),
                f"unknown entity {name!r}{did_you_mean(str(name), entities)}",
            )
            continue
        keys = key_fields(data)
        for field_name in keys:
            if field_name not in entity.fields:
                problems.add(
                    value_position(data, "key", fallback),
                    entity.name,
                    f"key field {field_name!r} is not a field of {entity.name}"
                    f"{did_you_mean(field_name, entity.fields)}",
                )
        records = data.get("records") or []
        for index, record in enumerate(records):
            where = node_position(records, index, fallback)
            missing = [k for k in keys if record.get(k) in (None, "")]
            if missing:
                problems.add(where, entity.name, f"record {index + 1} has no {', '.join(missing)}")
            items = list(record.items())
            for step_index, change in enumerate(record.get("_then") or ()):
                if isinstance(change, Mapping):
                    here = node_position(record["_then"], step_index, where)
                    items += [(k, v, change, here) for k, v in change.items()]
            for item in items:
                field_name, value = item[0], item[1]
                holder, near = (item[2], item[3]) if len(item) > 2 else (record, where)
                at = node_position(holder, field_name, near)
                if field_name in MOMENT_KEYS:
                    if field_name == "_at" and not RELATIVE.match(str(value)):
                        problems.add(
                            value_position(holder, field_name, near),
                            entity.name,
                            f"_at: expected a time relative to the install, such as -3h, "
                            f"-12d or -12d 10:30 (got {value!r})",
                        )
                    continue
                field = entity.fields.get(field_name)
                is_user = field_name == "owner" or (field is not None and field.type == "user")
                if is_user and kind == "demo":
                    if not (isinstance(value, Mapping) and set(value) == {"role"}):
                        problems.add(
                            at,
                            entity.name,
                            f"{field_name}: expected {{role: NAME}}, got {value!r}",
                        )
                    continue
                if field is None:
                    problems.add(
                        at,
                        entity.name,
                        f"{field_name!r} is not a field of {entity.name}"
                        f"{did_you_mean(field_name, entity.fields)}",
                    )
                elif field.type in COMPUTED:
                    problems.add(
                        at, entity.name, f"{field_name} is a {field.type} field: it is computed"
                    )
                elif field.type == "lookup":
                    _check_lookup(problems, entities, entity.name, field, value, at)


def _check_lookup(problems, entities, subject, field, value, at) -> None:
    target = entities.get(field.target)
    if not isinstance(value, Mapping) or not value:
        problems.add(
            at,
            subject,
            f"{field.name}: expected the fields that find the {field.target} record, "
            f"e.g. {{name: ...}}, got {value!r}",
        )
        return
    for name in value:
        if target is not None and name not in target.fields:
            problems.add(
                at,
                subject,
                f"{field.name}: {name!r} is not a field of {field.target}"
                f"{did_you_mean(str(name), target.fields)}",
            )
