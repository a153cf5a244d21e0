"""A record's service levels as its read view shows them: each SLA metric's state (running,
paused, met, breached), its deadline in the reader's zone and the business time left.

The clocks are the workflow engine's (``xrm.workflow.sla_clocks``); this only words them.
The record page asks only for entities that some SLA covers, so other pages pay nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from ... import workflow
from ...metadata import Entity
from ...metadata.filters import system_field
from . import context as C
from .admin.processes import business_span

# Deadlines are formatted like any datetime field: Babel, the reader's locale and zone.
_MOMENT = system_field("xrm_wf_instance", "created_at")
BADGES = {
    "running": "text-bg-primary",
    "paused": "text-bg-secondary",
    "met": "text-bg-success",
    "breached": "text-bg-danger",
    "stopped": "text-bg-light border",
}


def _state(clock: Mapping) -> str:
    if clock["breached"]:
        return "breached"
    return {"running": "running", "paused": "paused", "done": "met"}.get(clock["status"], "stopped")


def _words(state: str) -> str:
    return {
        "running": C._("Running"),
        "paused": C._("Paused"),
        "met": C._("Met"),
        "breached": C._("Breached"),
        "stopped": C._("Stopped"),
    }[state]


def _tells_hidden(entity: Entity, sla, metric) -> bool:
    """Whether a clock's state would tell the reader what they may not read: the platform
    runs it over the whole record, so a pause, a met condition or the SLA's own condition
    over a hidden field (or a lookup path they do not read in full), or a target chosen by
    a hidden priority, would show that field's value (as a score or a formula would)."""
    if sla.priority_field and sla.priority_field not in C.readable_names(entity):
        return True
    trees = [sla.condition, sla.pause, metric.done if metric is not None else None]
    return C.access().conditions_leak(entity, trees)


def sla_status(entity: Entity, record: Mapping) -> list[dict]:
    """One line per clock of the record: its SLA and metric, state, deadline, time left."""
    catalog = C.catalog()
    slas = {s.name: s for s in catalog.slas.values() if s.entity == entity.name}
    if not slas:
        return []
    lines = []
    for clock in workflow.sla_clocks(C.store(), entity.name, record["id"]):
        sla = slas.get(clock["sla"])
        if sla is None:  # an SLA since taken out of the catalog
            continue
        metric = next((m for m in sla.metrics if m.name == clock["metric"]), None)
        if _tells_hidden(entity, sla, metric):
            continue
        state = _state(clock)
        ticking = clock["status"] == "running"
        open_ = clock["status"] in ("running", "paused")
        left = clock["left_s"]
        lines.append(
            {
                "sla": C.label(sla),
                "metric": clock["metric"],
                "label": C.label(metric) if metric is not None else clock["metric"],
                "state": state,
                "state_text": _words(state),
                "badge": BADGES[state],
                "due": (
                    _MOMENT.format(clock["deadline"], C.locale(), C.tz())
                    if ticking and clock["deadline"] is not None
                    else ""
                ),
                "left": (
                    ""
                    if not open_
                    else C._("%(span)s left", span=business_span(left))
                    if left >= 0
                    else C._("%(span)s over", span=business_span(-left))
                ),
            }
        )
    return lines
