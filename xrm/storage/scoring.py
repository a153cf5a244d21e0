"""Keeping scores (``scoring:`` on an entity, ``xrm.metadata.scoring``): one record scored
in Python when the records service writes it, and every record rescored by one SQL
``UPDATE`` (the decay, run by the ``rescore`` process step).

Both read the same rules: the conditions through the filter language's two back ends
(which agree, and are tested to), the decay through the thresholds ``Decay`` computes once,
the sum through integer arithmetic that truncates as SQL's integer division does.

Formulas over the score or its rating are worked out again for the rows a rescore moves
(``refresh_formulas``), so they do not keep showing the score from before the decay.

A child's change moves its parents' rollups without a save of the parents: when the
parent's rules read a rollup (or a formula over one), ``after_rollups`` rescores just the
parents whose rollups moved, with the same statement, in the order a save works a record
out (the formulas the rules may read, the score, the formulas over the score).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa

from ..metadata import Catalog, Entity
from ..metadata.evaluate import matches
from ..metadata.filters import FilterContext
from ..metadata.scoring import formulas_over
from . import query as Q
from .tables import tables_for


def score_values(
    entity: Entity,
    getter: Callable,
    ctx: FilterContext,
    anchor: dt.datetime | None,
    now: dt.datetime,
) -> dict:
    """The score (and rating) of one record as it is about to be written."""
    scoring = entity.scoring
    fixed = decaying = 0
    for rule in scoring.rules:
        if matches(rule.when, getter, ctx):
            if rule.decays and scoring.decay is not None:
                decaying += rule.points
            else:
                fixed += rule.points
    percent = scoring.decay.percent(anchor, now) if scoring.decay is not None else 100
    score = scoring.score(fixed, decaying, percent)
    values = {scoring.field: score}
    if scoring.rating_field:
        values[scoring.rating_field] = scoring.band(score)
    return values


def anchor_of(entity: Entity, record: Mapping, now: dt.datetime) -> dt.datetime | None:
    """When the record was last active, for a write: this write stamps updated_at (and a
    new record's created_at) with ``now``."""
    decay = entity.scoring.decay
    if decay is None:
        return None
    if decay.since == "updated_at" or (decay.since == "created_at" and not record.get("id")):
        return now
    return record.get(decay.since)


#: Records one rescore of chosen ids names in one statement.
CHUNK = 500


def rescore(
    conn: sa.Connection,
    catalog: Catalog,
    entity: Entity,
    now: dt.datetime,
    tz: str = "UTC",
    ids: Iterable[int] | None = None,
) -> int:
    """Score again every record the model's ``where`` takes (only those of ``ids`` when
    given, a statement per ``CHUNK`` of them); only rows whose score or rating moves are
    written.  Returns how many."""
    if ids is None:
        return _rescore(conn, catalog, entity, now, tz, None)
    chosen = sorted({i for i in ids if i is not None})
    return sum(
        _rescore(conn, catalog, entity, now, tz, chosen[start : start + CHUNK])
        for start in range(0, len(chosen), CHUNK)
    )


def _rescore(conn, catalog, entity, now, tz, ids: list[int] | None) -> int:
    scoring = entity.scoring
    table = tables_for(catalog)[entity.name]
    ctx = FilterContext(user_id=None, tz=tz, now=now)
    builder = Q.builder(catalog, entity, ctx, conn.dialect.name)
    fixed, decaying = [], []
    for rule in scoring.rules:
        term = sa.case((builder.compile(rule.when), rule.points), else_=0)
        (decaying if rule.decays and scoring.decay is not None else fixed).append(term)
    scope = builder.compile(scoring.where) if scoring.where is not None else sa.true()
    if ids is not None:
        scope = sa.and_(table.c.id.in_(ids), scope)

    def total(terms):
        return sum(terms[1:], terms[0]) if terms else sa.literal(0)

    score = total(fixed)
    if decaying:
        decay = scoring.decay
        anchor = table.c[decay.since]
        percent = sa.case(
            (anchor.is_(None), 100),
            *((anchor > moment, kept) for moment, kept in decay.thresholds(now)),
            else_=decay.floor,
        )
        # integer division truncates toward zero in both databases (Scoring.score too)
        score = score + (total(decaying) * percent).op("/")(sa.literal(100, sa.Integer))
    scored = (
        sa.select(table.c.id.label("id"), sa.cast(score, sa.Integer).label("score"))
        .select_from(builder.from_clause)
        .where(scope)
        .subquery("scored")
    )
    values = {scoring.field: scored.c.score}
    moved = [table.c[scoring.field].is_distinct_from(scored.c.score)]
    if scoring.rating_field:
        band = sa.case(
            *(
                (scored.c.score >= minimum, value)
                for minimum, value in scoring.bands
                if minimum is not None
            ),
            else_=next((v for m, v in scoring.bands if m is None), None),
        )
        values[scoring.rating_field] = band
        moved.append(table.c[scoring.rating_field].is_distinct_from(band))
    statement = sa.update(table).where(table.c.id == scored.c.id, sa.or_(*moved)).values(values)
    over = formulas_over(entity, scoring.fields)
    if not over:
        return conn.execute(statement).rowcount
    # formulas over the score (a "hot" flag off the band) follow the rows that moved
    ids = list(conn.execute(statement.returning(table.c.id)).scalars())
    refresh_formulas(conn, catalog, entity, set(over), ids, now)
    return len(ids)


def refresh_formulas(
    conn: sa.Connection, catalog: Catalog, entity: Entity, names, ids, now: dt.datetime
) -> None:
    """Work out the formulas ``names`` again for these records (in dependency order, from
    the values stored), and write the values that changed."""
    from .records import plan_for
    from .records import refresh_formulas as refresh  # records scores through this module

    formulas = [f for f in plan_for(catalog, entity).formulas if f.name in names]
    refresh(conn, catalog, entity, formulas, ids, now)


def rescores_on_rollups(catalog: Catalog, entity: Entity) -> bool:
    """Whether the entity's scoring rules (or ``where``) read a rollup, directly or through
    a formula over one: then a child's change that moves the rollup moves the score."""

    def build() -> bool:
        from .records import plan_for

        if entity.scoring is None:
            return False
        moved = {n for n, f in entity.fields.items() if f.rollup}
        moved.update(f.name for f in plan_for(catalog, entity).rollup_formulas)
        return bool(entity.scoring.reads & moved)

    return catalog.artifact(("rescores-on-rollups", entity.name), build)


def after_rollups(
    conn: sa.Connection,
    catalog: Catalog,
    entity: Entity,
    ids,
    now: dt.datetime,
    tz: str = "UTC",
) -> None:
    """Work these records out again after children moved their rollups, set-based (a
    statement per chunk of records, however many children moved them): the formulas that
    read a rollup and, when the rules read a rollup, first those the rules may read, then
    the score (the rescore's own statement, which also refreshes the formulas over the
    score of the rows it moves), then the formulas over the score that read a rollup."""
    from .records import plan_for, refresh_rollup_formulas

    if not rescores_on_rollups(catalog, entity):
        refresh_rollup_formulas(conn, catalog, entity, ids, now)
        return
    over = set(formulas_over(entity, entity.scoring.fields))
    rolled = {f.name for f in plan_for(catalog, entity).rollup_formulas}
    refresh_formulas(conn, catalog, entity, rolled - over, ids, now)
    rescore(conn, catalog, entity, now, tz, ids=ids)
    refresh_formulas(conn, catalog, entity, rolled & over, ids, now)
