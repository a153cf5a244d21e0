"""Which processes and SLAs listen to which record events, compiled once per catalog.

The outbox consumer asks this plan, per event, what to start, schedule or wake, so that the
cost of an event nobody listens to is one dictionary lookup.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..metadata import Catalog
from ..metadata.processes import Process, Sla


@dataclass
class EntityPlan:
    created: list[Process] = field(default_factory=list)
    updated: list[Process] = field(default_factory=list)
    deleted: list[Process] = field(default_factory=list)
    enter_stage: list[Process] = field(default_factory=list)
    exit_stage: list[Process] = field(default_factory=list)
    date: list[Process] = field(default_factory=list)
    slas: list[Sla] = field(default_factory=list)
    #: some process on this entity waits for a condition, so changes wake waiting instances
    waits_on_change: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.created
            or self.updated
            or self.deleted
            or self.enter_stage
            or self.exit_stage
            or self.date
            or self.slas
            or self.waits_on_change
        )


@dataclass
class WorkflowPlan:
    entities: dict[str, EntityPlan]
    schedules: list[Process]

    def of(self, entity: str) -> EntityPlan | None:
        return self.entities.get(entity)


def build_plan(catalog: Catalog) -> WorkflowPlan:
    entities: dict[str, EntityPlan] = defaultdict(EntityPlan)
    schedules = []
    for process in catalog.processes.values():
        if process.entity is not None and any(
            step.kind == "wait" and ("until" in step.spec or step.condition is not None)
            for step in process.walk()
        ):
            entities[process.entity].waits_on_change = True
        if not process.enabled:
            continue
        for trigger in process.triggers:
            if trigger.kind == "schedule":
                schedules.append(process)
            elif trigger.kind in (
                "created",
                "updated",
                "deleted",
                "enter_stage",
                "exit_stage",
                "date",
            ):
                getattr(entities[process.entity], trigger.kind).append(process)
    for sla in catalog.slas.values():
        if sla.enabled:  # a switched-off SLA starts no clock (sla.stop_disabled ends its own)
            entities[sla.entity].slas.append(sla)
    return WorkflowPlan(entities=dict(entities), schedules=schedules)


def plan_for(catalog: Catalog) -> WorkflowPlan:
    return catalog.artifact("workflow-plan", lambda: build_plan(catalog))
