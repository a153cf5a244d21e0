"""Running claimed instances: one transaction per batch, one savepoint per run that writes.

A run executes steps until the process ends, waits, or reaches a step that talks to the
outside world (a webhook), which happens after the batch commits.  Everything a run does
in the database commits together with its new position, so a worker killed mid-batch
leaves the instances exactly as they were claimed, and the reaper hands them to another
worker.  A step that raises rolls back only its own run (savepoint), which then retries
with back-off and, after ``max_attempts``, is parked with its error.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import time
import traceback
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from ..metadata import Catalog
from ..metadata.filters import FilterContext
from ..metadata.formats import FORM_LINKS, FORMATS, Formats, Link
from ..metadata.processes import Process, Step
from ..storage.form_links import FormLinks
from ..storage.records import Records, ValidationFailed
from . import tables as W
from .bulk import update_by_id
from .context import (
    RecordView,
    Today,
    base_context,
    days,
    formats_for,
    render_text,
    render_value,
)
from .effects import Effects, public_base_url, sender_address
from .loading import load_records, loader, python_values, record_matches

MAX_DEPTH = 8  # processes started by processes' own changes, at most this deep
MAX_CLAIMS = 25  # claims without getting through a batch before a run is parked
MAX_STEPS = 1000  # per run and batch: a guard against a process that never waits
HISTORY_LIMIT = 200
FINISHED = ("done", "failed", "skipped", "cancelled")


class StepError(Exception):
    """A step that cannot complete; the run retries it with back-off, then parks."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # next, branch, wait, io, stop
    branch: str | None = None
    due_at: dt.datetime | None = None
    wake_on_change: bool = False
    result: Any = None


NEXT = Outcome("next")
STOP = Outcome("stop")
IO = Outcome("io")


def branch(name: str, result=None) -> Outcome:
    return Outcome("branch", branch=name, result=result)


def wait(due_at, *, wake_on_change: bool = False, result=None) -> Outcome:
    return Outcome("wait", due_at=due_at, wake_on_change=wake_on_change, result=result)


def done(result) -> Outcome:
    return Outcome("next", result=result)


# --------------------------------------------------------------------------- positions
def first(process: Process):
    return (0,) if process.steps else None


def after(process: Process, path) -> tuple | None:
    """The step that follows ``path`` once it is done (leaving branches as they end)."""
    path = tuple(path)
    while path:
        parent = path[:-1]
        siblings = (
            process.steps if not parent else process.step_at(parent[:-1]).branches[parent[-1]]
        )
        if path[-1] + 1 < len(siblings):
            return (*parent, path[-1] + 1)
        if not parent:
            return None
        path = parent[:-1]
    return None


def enter(process: Process, path, name: str) -> tuple | None:
    items = process.step_at(path).branches.get(name) or ()
    return (*tuple(path), name, 0) if items else after(process, path)


_ISO: dict = {}


def _iso(moment: dt.datetime) -> str:
    """A batch notes many entries at one moment: format it once."""
    text = _ISO.get(moment)
    if text is None:
        if len(_ISO) > 64:
            _ISO.clear()
        text = _ISO[moment] = moment.isoformat()
    return text


_PATHS: dict = {}


def path_text(path) -> str:
    """``0.yes.1`` (``start`` for none); a process's few paths are written once each."""
    if not path:
        return "start"
    key = tuple(path)
    text = _PATHS.get(key)
    if text is None:
        if len(_PATHS) > 4096:
            _PATHS.clear()
        text = _PATHS[key] = ".".join(str(p) for p in key)
    return text


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    row: dict
    process: Process
    record: dict | None = None
    effects: Effects = field(default_factory=Effects)
    io_step: Step | None = None
    io_result: Any = None
    cache: dict = field(default_factory=dict)
    savepoint: Any = None
    buffers: tuple | None = None
    blocked: Any = None  # the Blocked error that stopped it (xrm/workflow/blocked.py)

    def __post_init__(self):
        row = self.row
        self.status = "running"
        self.started = bool(row["started"])
        self.position = tuple(row["position"]) if row["position"] is not None else None
        self.context = dict(row["context"] or {})  # freshly read: no one else holds it
        self.history = list(row["history"] or [])
        self.attempts = row["attempts"]
        self.due_at = None
        self.wake_on_change = False
        self.error = row.get("error")
        self.progressed = False
        self.failed_now = False

    @property
    def id(self):
        return self.row["id"]

    @property
    def entity(self):
        return self.row["entity"]

    @property
    def record_id(self):
        return self.row["record_id"]

    @property
    def user_id(self):
        return self.row["user_id"]

    @property
    def vars(self) -> dict:
        return self.context.setdefault("vars", {})

    @property
    def depth(self) -> int:
        return int(self.context.get("depth", 0))

    def key(self, step: Step | None, suffix: str = "") -> str:
        return f"i{self.id}/{path_text(step.path) if step else 'start'}{suffix}"

    def note(
        self, now, kind: str, status: str, *, path=None, title=None, result=None, ms=None
    ) -> None:
        entry = {
            "at": _iso(now),
            "path": path_text(path) if path is not None else None,
            "kind": kind,
            "status": status,
        }
        if title:
            entry["title"] = title
        if result is not None:
            entry["result"] = result
        if ms is not None:
            entry["ms"] = round(ms, 2)
        self.history.append(entry)
        if len(self.history) > HISTORY_LIMIT:
            del self.history[: len(self.history) - HISTORY_LIMIT]

    def snapshot(self):
        # steps replace context entries, and add to vars and to an SLA timer's info
        context = {k: dict(v) if isinstance(v, dict) else v for k, v in self.context.items()}
        return (self.started, self.position, context, len(self.history), self.progressed)

    def restore(self, saved) -> None:
        self.started, self.position, self.context, length, self.progressed = saved
        del self.history[length:]


# --------------------------------------------------------------------------- a batch
class Batch:
    """The runs of one transaction, with the caches and buffers they share."""

    def __init__(
        self,
        store,
        unit,
        catalog: Catalog,
        now: dt.datetime,
        *,
        settings: dict,
        dry: bool = False,
        retry_base: float = 10.0,
    ):
        self.store = store
        self.unit = unit
        self.conn = unit.connection
        self.catalog = catalog
        self.now = now
        self.dry = dry
        self.retry_base = retry_base
        self.settings = settings
        self.tz = settings.get("time_zone") or "UTC"
        self.locale = (settings.get("locale") or "en").split("_")[0]
        self.sender = sender_address(settings)
        self.base_url = public_base_url(settings)
        self._formats: dict = {}
        self.ctx = FilterContext(tz=self.tz, now=now)
        self.loader = loader(self.conn, catalog)
        self.effects = Effects()
        self.cache: dict = {}
        self.globals = base_context()
        self._records: dict[str, Records] = {}

    # -- helpers for steps
    def today(self) -> Today:
        today = self.cache.get("today")
        if today is None:  # one moment per batch: one day too
            today = self.cache["today"] = Today.of(self.now.astimezone(ZoneInfo(self.tz)).date())
        return today

    def records(self, entity: str) -> Records:
        if entity not in self._records:
            self._records[entity] = Records(
                self.store,
                self.catalog,
                self.catalog.entity(entity),
                None,
                tz=self.tz,
                locale=self.locale,
            )
        return self._records[entity]

    def template_context(self, run: Run, needs=None, /, **extra) -> dict:
        """What a template of ``run`` sees; ``needs``, when known, names what it reads (a
        message naming no ``link`` spares working out the record's address)."""
        cached = run.cache.get("template")
        if cached is None or cached[0] is not run.record:
            cached = (run.record, self._template_context(run))
            run.cache["template"] = cached
        context = cached[1]
        if "link" not in context and (needs is None or "link" in needs):
            context["link"] = self.link(run)
        return {**context, **extra} if extra else context

    def _template_context(self, run: Run) -> dict:
        record = old = None
        if run.entity is not None and run.record is not None:
            record = old = RecordView(self.catalog, run.entity, run.record, self.loader)
            if run.context.get("old"):  # the values before the change that started it
                old_values = {
                    **run.record,
                    **python_values(self.catalog, run.entity, run.context["old"]),
                }
                old = RecordView(self.catalog, run.entity, old_values, self.loader)
        shared = self.cache.get("template-base")
        if shared is None:  # what every run of the batch sees alike
            shared = self.cache["template-base"] = self.globals | {
                "today": self.today(),
                "now": self.now,
                "days": days,
                "user": None,
                FORMATS: self.formats(),
                FORM_LINKS: FormLinks(self.conn, self.now),
            }
        context = shared | {
            "record": record,
            "old": old,
            "vars": run.vars,
            "trigger": run.context.get("trigger") or {},
            "payload": run.context.get("payload") or {},
            "instance": {"id": run.id, "process": run.process.name},
            "sla": run.context.get("sla") or {},
            "approval": run.vars.get("approval") or {},
        }
        return context

    def formats(self, user: dict | None = None) -> Formats:
        """How values look to a message's reader: their locale and time zone, else the
        organization's (an email address with no user behind it, a field's value)."""
        key = (user.get("locale"), user.get("time_zone")) if user else (None, None)
        found = self._formats.get(key)
        if found is None:
            found = self._formats[key] = formats_for(
                key[0] or self.settings.get("locale") or "en",
                key[1] or self.tz,
                self.settings.get("currency"),
                self.base_url,
            )
        return found

    def link(self, run: Run) -> Link:
        """The address of the record's form in the web UI (the public address alone for a
        process without a record); called in a template, another record's."""
        target = (
            {"entity": run.entity, "id": run.record_id} if run.entity and run.record_id else None
        )
        return Link(self.formats(), target)

    def value(self, run: Run, raw, **extra):
        return render_value(raw, self.template_context(run, **extra))

    def text(self, run: Run, raw: str, **extra) -> str:
        return render_text(raw, self.template_context(run, **extra))

    def matches(self, tree, record: dict | None) -> bool:
        return record_matches(tree, record or {}, self.loader, self.ctx)

    def write(self, run: Run):
        """Open the run's savepoint before its first write through the records service."""
        if run.savepoint is None:
            unit = self.unit
            unit.write_pending()  # earlier runs' deferred inserts are not this run's to undo
            run.buffers = (
                len(unit.audit_rows),
                len(unit.outbox_rows),
                len(unit.events),
                copy.deepcopy(unit.rollup_deltas),
                len(unit.pending),
            )
            run.savepoint = self.conn.begin_nested()
        return _Tagging(self, run)

    # -- executing
    def execute(self, run: Run) -> None:
        if run.status == "failed":  # its process is gone
            run.failed_now = True
            return
        if run.attempts > MAX_CLAIMS:
            run.failed_now = True
            run.status = "failed"
            run.error = (
                f"claimed {run.attempts} times without finishing (does its worker crash on it?)"
            )
            run.note(self.now, "park", "failed", result=run.error)
            return
        saved = run.snapshot()
        try:
            if not run.started and not self._start(run):
                self._close_savepoint(run, ok=True)
                self.effects.merge(run.effects)
                return
            self._advance(run)
            if run.savepoint is not None:
                # the records service defers inserts: write this run's inside its savepoint,
                # so that a row the database refuses fails this run, not the whole batch
                self.unit.write_pending()
            self._close_savepoint(run, ok=True)
            self.effects.merge(run.effects)
        except Exception as exc:  # a failing step parks or retries its own run only
            failed_at = run.position if run.started else None  # before restore moves it back
            self._close_savepoint(run, ok=False)
            run.effects = Effects()
            run.io_step = None
            if not self.dry:  # a dry run reports how far it got
                run.restore(saved)
            self._failed(run, exc, failed_at)

    def _close_savepoint(self, run: Run, *, ok: bool) -> None:
        if run.savepoint is None:
            return
        if ok:
            run.savepoint.commit()
        else:
            unit = self.unit
            audit, outbox, events, deltas, pending = run.buffers
            del unit.pending[pending:]  # deferred inserts of the failed run: never written
            run.savepoint.rollback()
            del unit.audit_rows[audit:]
            del unit.outbox_rows[outbox:]
            del unit.events[events:]
            unit.rollup_deltas = deltas
            unit.cache.clear()  # it may remember rows the rollback took back
        run.savepoint = None
        run.buffers = None

    def _start(self, run: Run) -> bool:
        process = run.process
        trigger = (run.context.get("trigger") or {}).get("event")
        if process.entity is not None and run.record_id is not None:
            if run.record is None and trigger == "deleted":
                run.record = run.context.get("snapshot") or {"id": run.record_id}
            if run.record is None:
                run.status = "cancelled"
                run.note(self.now, "start", "cancelled", result="the record no longer exists")
                return False
        if run.context.get("tick"):
            from .schedule import tick

            if not tick(self, run):
                return False
        elif run.context.get("sla") and not self.dry:
            from .sla import fire

            if not fire(self, run):
                run.status = "skipped"
                run.note(
                    self.now, "sla", "skipped", result="the deadline moved, or the clock stopped"
                )
                return False
        if (
            process.condition is not None
            and not run.context.get("checked")
            and not self.matches(process.condition, run.record)
        ):
            run.status = "skipped"
            run.note(self.now, "condition", "skipped", result="the condition does not hold")
            return False
        run.started = True
        run.progressed = True
        run.position = first(process)
        run.note(self.now, "start", "ok", result=run.context.get("trigger"))
        return True

    def _advance(self, run: Run) -> None:
        handlers = _handlers()
        process = run.process
        count = 0
        while run.position is not None:
            count += 1
            if count > MAX_STEPS:
                raise StepError(f"more than {MAX_STEPS} steps without waiting")
            step = process.step_at(run.position)
            started = time.perf_counter()
            outcome = handlers[step.kind](self, run, step)
            ms = (time.perf_counter() - started) * 1000
            if outcome.kind == "io":
                run.io_step = step
                run.note(self.now, step.kind, "calling", path=step.path, title=step.title, ms=ms)
                return
            status = _STATUS[outcome.kind]
            result = outcome.result
            if outcome.kind == "branch":
                result = (
                    {"branch": outcome.branch, **(result or {})}
                    if isinstance(result, dict) or result is None
                    else result
                )
            run.note(
                self.now, step.kind, status, path=step.path, title=step.title, result=result, ms=ms
            )
            if outcome.kind == "wait":
                run.status = "waiting"
                run.due_at = outcome.due_at
                run.wake_on_change = outcome.wake_on_change
                return
            run.progressed = True
            run.context.pop("wait", None)
            if outcome.kind == "stop":
                run.position = None
            elif outcome.kind == "branch":
                run.position = enter(process, step.path, outcome.branch)
            else:
                run.position = after(process, step.path)
        run.status = "done"
        run.note(self.now, "end", "done")
        if run.row.get("parent_id"):
            run.effects.wake.add(run.row["parent_id"])

    def _failed(self, run: Run, exc: Exception, failed_at=None) -> None:
        from .blocked import Blocked, tell

        run.failed_now = True
        run.blocked = exc if isinstance(exc, Blocked) else None
        run.context.pop("blocked", None)  # an earlier stop's reason, fixed since
        if isinstance(exc, ValidationFailed | StepError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        run.error = message[:2000]
        position = failed_at if failed_at is not None else run.position
        step = run.process.step_at(position) if position is not None else None
        run.note(
            self.now,
            step.kind if step else "start",
            "error",
            path=step.path if step else None,
            result=message[:500],
        )
        if self.dry:
            run.status = "failed"
            run.context["traceback"] = traceback.format_exc(limit=5)
            return
        limit = run.process.max_attempts
        if step is not None and step.kind == "webhook":
            limit = int(step.spec.get("retries", 5)) + 1
        if run.blocked is not None:
            # retrying cannot help until people fix something: park now and tell them
            run.status = "failed"
            run.context["blocked"] = run.blocked.reason
            run.note(self.now, "park", "failed", result="parked until someone fixes it")
            tell(self, run, step, run.blocked)
        elif run.attempts >= limit:
            run.status = "failed"
            run.note(self.now, "park", "failed", result=f"parked after {run.attempts} attempts")
        else:
            run.status = "waiting"
            run.due_at = self.now + dt.timedelta(seconds=backoff(run.attempts, self.retry_base))

    # -- persisting
    def persist(self, runs: list[Run]) -> None:
        if self.dry:
            return
        self.effects.flush(self.conn, self.now)
        update_by_id(self.conn, W.instances, [self._row(run) for run in runs])

    def _row(self, run: Run) -> dict:
        running = run.io_step is not None
        status = "running" if running else run.status
        finished = status in ("done", "skipped", "cancelled")
        # attempts count claims since the run last got through a batch; errors stay
        # visible while a retry is pending and once parked
        troubled = status == "failed" or run.failed_now
        return {
            "id": run.id,
            "status": status,
            "started": run.started,
            "position": list(run.position) if run.position is not None else None,
            "due_at": run.due_at
            if status == "waiting"
            else run.row["due_at"],  # kept: when it was due
            "wake_on_change": run.wake_on_change and status == "waiting",
            "lease_owner": run.row["lease_owner"] if running else None,
            "lease_until": run.row["lease_until"] if running else None,
            "attempts": run.attempts if troubled or running else 0,
            "error": run.error if troubled else None,
            "context": run.context,
            "history": run.history,
            "updated_at": self.now,
            "finished_at": self.now if finished else None,
        }


_STATUS = {"wait": "waiting", "branch": "ok", "next": "ok", "stop": "stopped"}


@functools.cache
def _handlers() -> dict:
    """The step handlers (``steps`` imports this module, so it is imported at first use)."""
    from .steps import HANDLERS

    return HANDLERS


def backoff(attempts: int, base: float) -> float:
    """Seconds before retry number ``attempts``: base, 2x, 4x ... capped at an hour."""
    return min(base * 2 ** max(attempts - 1, 0), 3600.0)


class _Tagging:
    """Marks outbox rows written by a run with their origin, so that processes they trigger
    know how deep the chain is (and a process that re-triggers itself stops)."""

    def __init__(self, batch: Batch, run: Run):
        self.batch, self.run = batch, run

    def __enter__(self):
        self.start = len(self.batch.unit.outbox_rows)
        return self

    def __exit__(self, *exc):
        origin = {"instance": self.run.id, "depth": self.run.depth + 1}
        for row in self.batch.unit.outbox_rows[self.start :]:
            row["changes"] = {**(row["changes"] or {}), "_origin": origin}
        return False


def load_runs(batch: Batch, rows: list[dict]) -> list[Run]:
    """Runs for claimed rows, with their records read in one query per entity."""
    runs, wanted = [], {}
    for row in rows:
        process = batch.catalog.processes.get(row["process"])
        if process is None:
            run = Run(row, _missing(row["process"]))
            run.status = "failed"
            run.error = f"process {row['process']!r} is no longer defined"
            runs.append(run)
            continue
        run = Run(row, process)
        runs.append(run)
        if run.entity is not None and run.record_id is not None:
            wanted.setdefault(run.entity, set()).add(run.record_id)
    loaded = {}
    for entity, ids in wanted.items():
        if entity in batch.catalog.entities:
            loaded[entity] = load_records(batch.conn, batch.catalog, entity, ids)
    for run in runs:
        if run.entity in loaded:
            run.record = loaded[run.entity].get(run.record_id)
            if run.record is not None:
                batch.loader.records[(run.entity, run.record_id)] = run.record
    return runs


def _missing(name: str) -> Process:
    from ..metadata.labels import Label

    return Process(name=name, entity=None, label=Label.of(name), solution="", triggers=(), steps=())
