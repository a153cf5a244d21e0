"""Sample data: plausible records for every entity of the installed packs.

Values come from each field type's ``sample`` method (the field registry owns what a
plausible value looks like); lookups point at records created earlier, so entities are
filled in dependency order.  Everything goes through the records service's bulk path,
so sample data obeys the same validation as real data.
"""

from __future__ import annotations

import graphlib
import random

from faker import Faker

from ..metadata import Catalog, Entity
from ..storage.records import ValidationFailed

LOCALES = {"en": "en_US", "ru": "ru_RU"}


def fill_order(catalog: Catalog) -> list[Entity]:
    """Entities so that every lookup's target comes before the entity that uses it."""
    graph = {}
    for entity in catalog.entities.values():
        graph[entity.name] = {
            f.params["to"]
            for f in entity.fields.values()
            if f.type == "lookup" and f.params["to"] != entity.name
        }
    sorter = graphlib.TopologicalSorter(graph)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        order = sorted(graph)
    return [catalog.entities[name] for name in order]


def _values(
    entity: Entity, fake: Faker, rnd: random.Random, ids: dict[str, list[int]], users: list[int]
) -> dict:
    values = {}
    for field in entity.fields.values():
        if field.computed or field.type in ("children", "file", "json", "any_lookup", "autonumber"):
            continue
        if field.type == "lookup":
            targets = ids.get(field.params["to"])
            if targets and (field.required or rnd.random() < 0.7):
                values[field.name] = rnd.choice(targets)
            continue
        if field.type == "many_to_many":
            targets = ids.get(field.params["to"])
            if targets:
                values[field.name] = rnd.sample(targets, k=min(len(targets), rnd.randint(0, 3)))
            continue
        if field.type == "user":
            if users:
                values[field.name] = rnd.choice(users)
            continue
        if not field.required and rnd.random() < 0.2:
            continue
        value = field.kind.sample(field, fake, rnd)
        if value is not None:  # None: no sample for this field; its default applies
            values[field.name] = value
    if entity.stages is not None:
        # Start in the first stage so that stage requirements and transitions hold.
        values[entity.stages.field] = next(iter(entity.stages.steps))
    if users:
        values["owner"] = rnd.choice(users)
    return values


def generate(
    store,
    per_entity: int = 25,
    *,
    locale: str = "en",
    seed: int = 7,
    users: list[int] | None = None,
) -> dict[str, int]:
    """Create ``per_entity`` sample records for each entity; returns counts per entity."""
    catalog = store.refresh()
    fake = Faker(LOCALES.get(locale, locale))
    fake.seed_instance(seed)
    rnd = random.Random(seed)
    users = users or []
    ids: dict[str, list[int]] = {}
    created: dict[str, int] = {}
    with store.transaction():  # all the sample data, or none of it
        for entity in fill_order(catalog):
            _fill(store, entity, per_entity, fake, rnd, ids, users, created)
    return created


def _fill(
    store,
    entity: Entity,
    per_entity: int,
    fake: Faker,
    rnd: random.Random,
    ids: dict,
    users: list[int],
    created: dict,
) -> None:
    """One entity's samples; rows that break a rule (a random pair already taken, say) are
    left out, but an entity none of whose rows fit is a bug in its sample values."""
    records = store.records(entity.name)
    rows = [_values(entity, fake, rnd, ids, users) for _ in range(per_entity)]
    result = records.bulk_create(rows, partial=True)
    if not result.ids and result.failures:
        first = next(iter(result.failures.values()))
        raise ValidationFailed(first)
    ids[entity.name] = result.ids
    created[entity.name] = len(result.ids)
