"""The conversion funnel (``kind: conversion_funnel``): of the records that entered each
stage of an entity's stage flow in a period, how many went on to a later stage, their
share, and the median days a stay in the stage lasted, from the stage history
(``xrm_stage_history``) joined to the records the reader may read.

Definitions (docs/definitions.md §24):

* the funnel's stages are the flow's steps in their order, less the ``closed: lost``
  ones (losing is leaving the funnel, not going down it);
* a stay *reached a later stage* when the same record later entered any stage after it
  in that order (skipping one counts; going back and coming again does not by itself);
  the last stage has no later one, so its reach and share are empty;
* a stay's days are ``left_at - entered_at``; the median is over the stays that ended
  (a stay still open has no length yet), the mean of the two middle ones on an even
  count, computed with ROW_NUMBER and COUNT over each stage, the same SQL on SQLite and
  PostgreSQL.

The records are those of the report's filter, parameters, the reader's scope and field
rules: the same conditions ``Records`` builds for any read, as a subquery of ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

import sqlalchemy as sa

from ..metadata.filters import ReadRefused
from ..metadata.reports import Report, fill_filter, history_parameters
from ..storage import tables as T
from .parameters import period_moments, resolve_parameters
from .run import ReportRefused, ReportResult


def funnel_stages(entity) -> list[str]:
    """The stages a funnel shows, in the flow's order (the lost ones left out)."""
    return [name for name, step in entity.stages.steps.items() if step.closed != "lost"]


def run_funnel(store, report: Report, params: Mapping[str, str], principal=None) -> ReportResult:
    """Run a conversion funnel as ``principal`` (None: the platform, with full access)."""
    records = store.records(report.entity, principal=principal)
    on_history = history_parameters(report)
    unknown = [n for n in params if n not in report.parameters]
    if unknown:  # resolve_parameters words it, listing every parameter of the report
        resolve_parameters(report, params, records)
    of_records = dataclasses.replace(
        report,
        parameters=MappingProxyType(
            {n: p for n, p in report.parameters.items() if n not in on_history}
        ),
    )
    conditions = resolve_parameters(
        of_records, {k: v for k, v in params.items() if k not in on_history}, records
    )
    bounds = [period_moments(report.parameters[n], params.get(n), records) for n in on_history]
    raw = fill_filter(report.filter, conditions) if report.filter is not None else None
    tree = records.parse_filter(raw) if raw is not None else None
    field = report.group_by[0]
    try:
        records._check_reads(tree, [field])
    except ReadRefused as exc:
        raise ReportRefused(f"report {report.name!r}: {exc}") from None
    builder = records.builder()
    ids = (
        sa.select(records.table.c.id)
        .select_from(builder.from_clause)
        .where(*records.conditions(builder, tree))
    )
    stages = funnel_stages(records.entity)
    counts, medians = _figures(records, ids, stages, [b for b in bounds if b is not None])
    for name, moments in zip(on_history, bounds):
        conditions[name] = None if moments is None else [m.isoformat() for m in moments]
    if not any(entered for entered, _ in counts.values()):
        return ReportResult(report, (field,), (), [], None, conditions)
    rows = []
    for index, stage in enumerate(stages):
        entered, reached = counts.get(stage, (0, 0))
        last = index == len(stages) - 1
        rows.append(
            {
                field: stage,
                "entered": entered,
                "reached_next": None if last else reached,
                "conversion": None if last or not entered else round(reached * 100 / entered, 1),
                "median_days": medians.get(stage),
            }
        )
    return ReportResult(report, (field,), (), rows, None, conditions)


def _figures(records, ids, stages: list[str], periods: list[tuple]):
    """{stage: (entered, reached a later stage)} and {stage: median days}, in two SQL
    statements over the stays that began in the periods."""
    h = T.stage_history
    name = records.entity.name
    position = {stage: i for i, stage in enumerate(stages)}

    def order(column):
        return sa.case(position, value=column, else_=None)

    # Whether a stay was followed by a later stage: the highest stage among the record's
    # stays after it, one window over the record's history in time order (a correlated
    # EXISTS per stay probed the index once per stay: seconds over a million deals).  A
    # later stay began after the stay itself, so the window needs only the history from
    # the start of the periods on.
    since = [h.c.entered_at >= low for low, _high in periods]
    walked = (
        sa.select(
            h.c.stage,
            h.c.entered_at,
            h.c.left_at,
            sa.func.max(order(h.c.stage))
            .over(
                partition_by=h.c.record_id,
                order_by=(h.c.entered_at, h.c.id),
                rows=(1, None),
            )
            .label("later"),
        )
        .where(h.c.entity == name, h.c.record_id.in_(ids), *since)
        .subquery("walked")
    )
    reached = sa.and_(walked.c.later.is_not(None), walked.c.later > order(walked.c.stage))
    stays = (
        sa.select(
            walked.c.stage.label("stage"),
            sa.case((reached, 1), else_=0).label("reached"),
            _days(walked.c.entered_at, walked.c.left_at, records.dialect).label("days"),
        )
        .where(
            walked.c.stage.in_(stages),
            *(
                sa.and_(walked.c.entered_at >= low, walked.c.entered_at < high)
                for low, high in periods
            ),
        )
        .subquery("stays")
    )
    ranked = (
        sa.select(
            stays.c.stage,
            stays.c.days,
            sa.func.row_number().over(partition_by=stays.c.stage, order_by=stays.c.days).label("n"),
            sa.func.count().over(partition_by=stays.c.stage).label("of"),
        )
        .where(stays.c.days.is_not(None))
        .subquery("ranked")
    )
    # the middle one of an odd count, the two middle ones of an even count
    middle = ranked.c.n.in_([(ranked.c.of + 1) // 2, (ranked.c.of + 2) // 2])
    with records._reading() as conn:
        if records.dialect == "postgresql" and records.store.current_unit() is None:
            # Compiling these plans (their estimates pass jit_above_cost) took longer than
            # running them.  Local to this read's own transaction, which ends with it.
            conn.execute(sa.text("SET LOCAL jit = off"))
        counts = conn.execute(
            sa.select(stays.c.stage, sa.func.count(), sa.func.sum(stays.c.reached)).group_by(
                stays.c.stage
            )
        ).all()
        medians = conn.execute(
            sa.select(ranked.c.stage, sa.func.avg(ranked.c.days))
            .where(middle)
            .group_by(ranked.c.stage)
        ).all()
    return (
        {stage: (int(n), int(r or 0)) for stage, n, r in counts},
        {stage: round(float(days), 2) for stage, days in medians if days is not None},
    )


def _days(start, end, dialect: str):
    """Days from ``start`` to ``end`` as a fraction (None while ``end`` is None)."""
    if dialect == "postgresql":
        return sa.extract("epoch", end - start) / 86400.0
    return sa.func.julianday(end) - sa.func.julianday(start)
