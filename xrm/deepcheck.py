"""``xrm check --deep``: every process run once against sample records, in a throwaway
SQLite database, so mistakes that only show when a step runs (a created record missing a
required field, a value the target field refuses) are reported at the failing step's
line, in the process's file, before the packs are installed anywhere.

The packs are installed in a temporary folder's database; every entity gets a few sample
records from the field types' sample values (``xrm.solutions.demo``); one user holds
every role and is a member of every team the processes name, so recipients resolve; then
each process is dry-run (``xrm.workflow.dryrun``: the real step handlers in a
transaction that is rolled back) on the first sample record of its entity that meets its
condition.  A process none of whose samples meets its condition is skipped, not run
regardless: its steps may rely on the condition, and a failure there would be ours.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from .metadata.problems import Problem
from .metadata.source import Position

#: Several, so that a process's condition (``if:``) likely holds for one of them.
SAMPLES_PER_ENTITY = 5
SAMPLE_USER = "deep-check@example.com"


@dataclass
class DeepReport:
    """What a deep check found: problems at the failing steps' lines, how many processes
    ran, and the ones it could not run (no sample record of their entity, or none that
    meets their condition), which are not failures."""

    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ran: int = 0


def deep_check(paths: Iterable[str | os.PathLike] = ()) -> DeepReport:
    """Install the packs at ``paths`` (all found when empty) in a throwaway database and
    dry-run every process there on a sample record."""
    import xrm

    report = DeepReport()
    with tempfile.TemporaryDirectory(prefix="xrm-deep-") as folder:
        store = xrm.open(f"sqlite:///{os.path.join(folder, 'deep.db')}")
        try:
            catalog, _ = store.install(list(paths))
            user = _sample_people(store, catalog)
            samples = _sample_records(store, user, report)
            for process in sorted(catalog.processes.values(), key=_position_key):
                _run(store, process, samples, report, user)
        finally:
            store.close()
    report.problems.sort(key=lambda p: (p.position.path, p.position.line, p.position.column))
    return report


def _position_key(process) -> tuple:
    where = process.position or Position("", 0, 0)
    return (where.path, where.line, where.column, process.name)


def _sample_people(store, catalog) -> int:
    """One user in every role and every team that steps name (``team:support``), plus
    the users steps name by email, so that recipients and approvers resolve as they would
    in an organization that has set up its people."""
    from .workflow.checks import referenced

    teams, emails = set(), set()
    for _step, _process, kind, name in referenced(catalog):
        (teams if kind == "team" else emails).add(name.strip().lower() if kind == "user" else name)
    user = store.add_user(
        SAMPLE_USER, "Deep check", roles=sorted(catalog.roles), teams=sorted(teams)
    )
    for email in sorted(emails - {SAMPLE_USER}):
        store.add_user(email, roles=sorted(catalog.roles), teams=sorted(teams))
    return user


def _sample_records(store, user: int, report: DeepReport) -> dict[str, list[int]]:
    """Entity -> the ids of its sample records: invented samples of every entity whose
    rules accept them (``lenient``: a claim that needs an approved fund request gets none,
    and its processes are reported as not run, instead of no process running at all)."""
    import sqlalchemy as sa

    from .solutions.demo import generate
    from .storage.records import RecordError
    from .storage.tables import tables_for

    try:
        generate(store, SAMPLES_PER_ENTITY, users=[user], lenient=True)
        # and a few with no user in any user field, for conditions such as [agent, is_empty]
        generate(store, 2, users=[], seed=11, lenient=True)
    except RecordError as exc:
        # All of the sample data is one transaction: without it no process can run.
        report.skipped.append(f"no sample records could be saved ({exc}); no process was run")
        return {}
    tables = tables_for(store.catalog)
    with store.engine.connect() as conn:
        return {
            name: list(
                conn.execute(
                    # records with an owner first: a step that tells or assigns the owner
                    # is then tried on a record that has one
                    sa.select(tables[name].c.id).order_by(
                        tables[name].c.owner.is_(None), tables[name].c.id
                    )
                ).scalars()
            )
            for name in store.catalog.entities
        }


def _run(store, process, samples: dict[str, list[int]], report: DeepReport, user: int) -> None:
    from .workflow.dryrun import dry_run

    sla = process.name.split(":")[1] if process.name.startswith("sla:") else None
    subject = f"slas.{sla}" if sla else f"processes.{process.name}"
    where = process.position or Position(f"processes/{process.name}", 1, 1)
    candidates = [None] if process.entity is None else samples.get(process.entity, [])
    candidates = _in_its_stage(store, process, candidates)
    if not candidates:
        report.skipped.append(f"{subject}: no sample {process.entity} record to run it on")
        return
    result = None
    for record_id in candidates:
        try:
            result = dry_run(store, process.name, record_id, user_id=user)
        except Exception as exc:  # noqa: BLE001 - whatever stops a dry run is the finding
            report.problems.append(Problem(where, subject, f"a dry run fails: {_reason(exc)}"))
            return
        if result["condition"]:
            break
    else:
        report.skipped.append(
            f"{subject}: none of {len(candidates)} sample {process.entity} records meets its condition"
        )
        return
    if result.get("error") or result.get("status") == "failed":
        on = f" on a sample {process.entity} record" if process.entity else ""
        step = _failed_step(process, result)
        owned = record_id is None or _owner_of(store, process.entity, record_id) is not None
        if step is not None and _people_from_the_sample(step, result.get("error") or "", owned):
            # team:{{ record.queue.team }}, or the owner of a sample made without one: who
            # that is depends on the organization's people, which samples do not stand for
            report.skipped.append(
                f"{subject}: its {step.title} step's people come from the sample record "
                f"({result.get('error')})"
            )
            return  # not counted as run: what it would do is unknown
        if step is not None and step.position is not None:
            where = step.position  # the step's own line, in the process's file
        at = f" at its {step.title} step" if step is not None else ""
        report.problems.append(
            Problem(where, subject, f"a dry run{on} fails{at}: {result.get('error')}")
        )
    report.ran += 1


def _in_its_stage(store, process, candidates: list) -> list:
    """For a process that starts when a record enters a stage, the samples in that stage
    only: they hold what the stage requires (an approved registration, its customer)."""
    trigger = process.trigger("enter_stage")
    entity = store.catalog.entities.get(process.entity) if process.entity else None
    if trigger is None or entity is None or entity.stages is None or not candidates:
        return candidates
    import sqlalchemy as sa

    from .storage.tables import tables_for

    table = tables_for(store.catalog)[entity.name]
    with store.engine.connect() as conn:
        staged = set(
            conn.execute(
                sa.select(table.c.id).where(
                    table.c[entity.stages.field].in_(list(trigger.stages)),
                    table.c.id.in_(candidates),
                )
            ).scalars()
        )
    return [c for c in candidates if c in staged]


def _people_from_the_sample(step, error: str, owned: bool) -> bool:
    """A step blocked for want of people whom the record names: through a template, or
    as its owner when the sample record has none."""
    from .workflow.checks import RECIPIENT_KEYS

    spec = step.spec if hasattr(step.spec, "get") else {}
    named = [str(v) for key in RECIPIENT_KEYS for v in _as_list(spec.get(key))]
    return "nobody" in error and (
        any("{{" in value for value in named) or (not owned and "owner" in named)
    )


def _owner_of(store, entity: str, record_id: int):
    import sqlalchemy as sa

    from .storage.tables import tables_for

    table = tables_for(store.catalog)[entity]
    with store.engine.connect() as conn:
        return conn.execute(sa.select(table.c.owner).where(table.c.id == record_id)).scalar()


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _failed_step(process, result: dict):
    """The step a failed dry run stopped at, from the run's history (None: before any)."""
    from .workflow.runner import path_text

    failed = next((e for e in reversed(result.get("steps") or ()) if e["status"] == "error"), None)
    if failed is None or not failed.get("path"):
        return None
    return next((s for s in process.walk() if path_text(s.path) == failed["path"]), None)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
