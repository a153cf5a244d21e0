"""Running a pack's ``tests/*.yaml`` scenarios (the format: ``xrm/metadata/scenarios.py``).

Each scenario runs on a throwaway SQLite database of its own, copied from one prepared
for the whole run (the packs and their reference data installed once), with a clock that
only moves when a step says ``wait``.  ``given`` steps run as the platform, ``when`` steps
as the scenario's user (their permissions hold; a record's ``action`` button and a
``wizard`` are always the user's); after every step the workflow worker does
everything due, as it would within seconds on a live instance.  Each failed expectation
is reported at its line.  Nothing here touches any database but the throwaway ones."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from ..metadata.loader import resolve_packs
from ..metadata.problems import Problems
from ..metadata.source import Position, node_position, value_position
from ..storage.store import Clock

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # a Monday morning
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FALLBACK = Position("<unknown>", 1, 1)


class ScenarioClock(Clock):
    """A clock that stands still until a scenario moves it."""

    def __init__(self, moment: dt.datetime = START):
        self.moment = moment

    def now(self) -> dt.datetime:
        return self.moment


@dataclass
class Failure:
    position: Position
    message: str

    def __str__(self) -> str:
        return f"{self.position}: {self.message}"


@dataclass
class Outcome:
    solution: str
    name: str
    position: Position
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


class _Stop(Exception):
    """A step failed; the scenario's later steps and expectations are not run."""


def run_scenarios(
    paths: Iterable[str | Path], *, only: str | None = None, solutions: Iterable[str] = ()
) -> list[Outcome]:
    """Run the scenarios of the packs at ``paths`` (of the ``solutions`` named, else of
    every pack given; ``only`` keeps the scenarios whose name contains it)."""
    import xrm

    paths = list(paths)
    problems = Problems()
    packs = resolve_packs(paths, problems)
    problems.raise_if_any()
    wanted = set(solutions) or {p.name for p in resolve_packs(paths, with_dependencies=False)}
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="xrm-scenarios-") as tmp:
        template = Path(tmp) / "template.db"
        prepared = xrm.open(f"sqlite:///{template}", clock=ScenarioClock())
        try:
            prepared.install(paths)  # fails like any install: every problem at its line
        finally:
            prepared.close()
        number = 0
        for pack in packs:
            if pack.name not in wanted:
                continue
            for document in pack.documents:
                if document.kind != "tests":
                    continue
                tests = document.data["tests"]
                for index, test in enumerate(tests):
                    if only and only not in test["name"]:
                        continue
                    number += 1
                    database = Path(tmp) / f"scenario-{number}.db"
                    shutil.copyfile(template, database)
                    outcome = Outcome(
                        pack.name, test["name"], node_position(tests, index, _FALLBACK)
                    )
                    _run(f"sqlite:///{database}", test, outcome)
                    outcomes.append(outcome)
                    database.unlink(missing_ok=True)
    return outcomes


def _run(url: str, test: Mapping, outcome: Outcome) -> None:
    import xrm

    from ..workflow.worker import Worker

    clock = ScenarioClock(_moment(test.get("at")))
    store = xrm.open(url, clock=clock)
    try:
        scenario = _Scenario(store, clock, Worker(store, smtp=""), test, outcome)
        try:
            for part, as_user in (("given", False), ("when", True)):
                steps = test.get(part) or []
                for index, step in enumerate(steps):
                    scenario.step(step, node_position(steps, index, outcome.position), as_user)
                if part == "given":
                    scenario.join_account((test.get("user") or {}).get("account"))
        except _Stop:
            return
        checks = test["expect"]
        for index, check in enumerate(checks):
            scenario.expect(check, node_position(checks, index, outcome.position))
    finally:
        store.close()


def _moment(text) -> dt.datetime:
    if not text:
        return START
    moment = text if isinstance(text, dt.datetime) else dt.datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class _Scenario:
    def __init__(self, store, clock: ScenarioClock, worker, test: Mapping, outcome: Outcome):
        self.store, self.clock, self.worker, self.outcome = store, clock, worker, outcome
        self.names: dict[str, tuple[str, int]] = {}  # record name -> (entity, id)
        catalog = store.refresh()
        user = test.get("user") or {}
        roles = user.get("roles") or [r.name for r in catalog.roles.values() if r.admin][:1]
        self.email = "tester@scenario.test"
        self.user_id = store.add_user(
            self.email,
            "Scenario tester",
            password=secrets.token_urlsafe(24),
            roles=roles,
            teams=user.get("teams") or (),
        )
        self.principal = store.principal(self.user_id)
        self.worker.run_once()

    def join_account(self, name: str | None) -> None:
        """``user: {account: NAME}``: once ``given`` made it, the user belongs to that
        account (their roles' account scope reads it) for the ``when`` steps."""
        if name is None:
            return
        self.store.set_account(self.user_id, self.names[name][1])
        self.principal = self.store.principal(self.user_id)

    # ------------------------------------------------------------ steps
    def step(self, step: Mapping, at: Position, as_user: bool) -> None:
        from ..storage.records import RecordError

        # ``given`` writes with full access but in the user's name, so what it makes is
        # theirs (owned by them) as the data a user works on would be.
        principal = self.principal if as_user else None
        try:
            if "create" in step:
                records = self.store.records(step["create"], self.user_id, principal=principal)
                record = records.create(self._values(step.get("values") or {}, at))
                if step.get("as"):
                    self.names[step["as"]] = (step["create"], record["id"])
            elif "update" in step:
                entity, ident = self._record(step["update"], at)
                self.store.records(entity, principal=principal).update(
                    ident, self._values(step.get("values") or {}, at)
                )
            elif "delete" in step:
                entity, ident = self._record(step["delete"], at)
                self.store.records(entity, principal=principal).delete(ident)
            elif "start" in step:
                from ..workflow.instances import StartRefused, start

                ident = self._record(step["for"], at)[1] if step.get("for") else None
                try:
                    start(
                        self.store, step["start"], ident, user_id=self.user_id if as_user else None
                    )
                except StartRefused as exc:
                    self._stop(at, f"start {step['start']}: {exc}")
            elif "action" in step:
                self._action(step, at)
            elif "wizard" in step:
                self._wizard(step, at)
            elif "wait" in step:
                amount, unit = re.fullmatch(r"(\d+)\s*([smhdw])", step["wait"]).groups()
                self.clock.moment += dt.timedelta(**{_UNITS[unit]: int(amount)})
        except RecordError as exc:
            self._stop(at, f"{_verb(step)}: {exc}")
        self.worker.run_once()

    def _action(self, step: Mapping, at: Position) -> None:
        """A manual process's button on a record, pressed by the scenario's user (in
        ``given`` too: a button is always pressed by someone): refused as the record page
        refuses it (disabled, another role, no right to update the record)."""
        from ..workflow.instances import StartRefused, start

        ident = self._record(step["for"], at)[1]
        try:
            start(self.store, step["action"], ident, user_id=self.user_id)
        except StartRefused as exc:
            self._stop(at, f"action {step['action']}: {exc}")

    def _wizard(self, step: Mapping, at: Position) -> None:
        """A wizard run to its finish as the scenario's user: opened from the record named
        (the wizard's condition on it checked, inputs filled from it), each visible step
        gets the inputs given (as a person types them: text, in English), the others keep
        what they hold (their defaults); a refusal at any step, or by the finish, stops the
        scenario with the reason.  The records its actions made are named by their aliases
        (or by ``names``)."""
        from ..forms.wizard import WizardFailed, WizardRefused, WizardRun
        from ..storage.records import NotFound

        name = step["wizard"]
        wizard = self.store.refresh().wizards[name]
        origin = self._record(step["from"], at) if step.get("from") else None
        given = {k: self._values(v, at) for k, v in (step.get("inputs") or {}).items()}
        try:
            run = WizardRun.start(wizard, self.store, self.principal, origin=origin)
            for _guard in range(len(wizard.steps) + 1):
                current = run.step()
                typed = {  # a list stays one: the choices of a multiple choice
                    item.name: [_typed_text(v) for v in given[item.name]]
                    if isinstance(given[item.name], list | tuple)
                    else _typed_text(given[item.name])
                    for item in current.inputs
                    if item.name in given
                }
                errors = run.accept(typed, store=self.store, principal=self.principal)
                if errors:
                    found = "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items())
                    self._stop(at, f"wizard {name}: step {current.name}: {found}")
                if run.current == current.name:  # stayed: the last visible step is done
                    break
            outcome = run.finish(self.store, self.principal)
        except (WizardRefused, WizardFailed, NotFound) as exc:
            self._stop(at, f"wizard {name}: {exc}")
        names = step.get("names")
        for alias, record in outcome.records.items():
            if names is None:
                self.names[alias] = record
            elif alias in names:
                self.names[names[alias]] = record

    def _stop(self, at: Position, message: str):
        self.outcome.failures.append(Failure(at, message))
        raise _Stop

    def _record(self, name: str, at: Position) -> tuple[str, int]:
        if name not in self.names:
            self._stop(at, f"no record named {name!r}")
        return self.names[name]

    def _values(self, values, at: Position):
        """Values with ``{ref: name}`` replaced by the named record's id (also in lists)."""
        if isinstance(values, Mapping):
            if set(values) == {"ref"}:
                return self._record(values["ref"], at)[1]
            return {k: self._values(v, at) for k, v in values.items()}
        if isinstance(values, list):
            return [self._values(v, at) for v in values]
        return values

    # ------------------------------------------------------------ expectations
    def expect(self, check: Mapping, at: Position) -> None:
        if "record" in check:
            entity, ident = self._record_or_fail(check["record"], at)
            if entity is None:
                return
            record = self.store.records(entity).get(ident)
            for name, wanted in (check.get("values") or {}).items():
                wanted = self._values(wanted, at)
                field = self.store.refresh().entity(entity).fields.get(name)
                if field is not None and wanted is not None:
                    wanted = field.kind.coerce(field, wanted)
                if record.get(name) != wanted:
                    self._fail(
                        node_position(check["values"], name, at),
                        f"{check['record']}.{name} is {record.get(name)!r}, expected {wanted!r}",
                    )
        elif "created" in check:
            records = self.store.records(check["created"])
            where = self._values(check.get("where"), at) if check.get("where") else None
            count = records.count(where).value
            wanted = check.get("count")
            if (wanted is None and count < 1) or (wanted is not None and count != wanted):
                self._fail(
                    value_position(check, "created", at),
                    f"{count} {check['created']} record{'s' if count != 1 else ''} "
                    f"match{'es' if count == 1 else ''}, expected "
                    f"{'at least 1' if wanted is None else wanted}",
                )
        elif "sees" in check:
            self._sees(check, at)
        elif "notification" in check:
            self._message(check["notification"], at, notification=True)
        elif "email" in check:
            self._message(check["email"], at, notification=False)
        elif "waiting" in check:
            self._waiting(check, at)

    def _sees(self, check: Mapping, at: Position) -> None:
        """What the scenario's user reads of an entity, through their permissions: a
        count, and with ``records`` exactly those named records."""
        from ..metadata.filters import FilterError
        from ..storage.records import RecordError

        entity = check["sees"]
        records = self.store.records(entity, principal=self.store.principal(self.user_id))
        where = self._values(check.get("where"), at) if check.get("where") else None
        try:
            count = records.count(where).value
            ids = {r["id"] for r in records.query(where, fields=["id"], limit=1000).rows}
        except (RecordError, FilterError) as exc:  # e.g. the user may not read the entity
            self._fail(value_position(check, "sees", at), f"sees {entity}: {exc}")
            return
        wanted = check.get("count")
        if wanted is not None and count != wanted:
            self._fail(
                value_position(check, "sees", at),
                f"the user reads {count} {entity} record{'s' if count != 1 else ''}, "
                f"expected {wanted}",
            )
        if "records" in check:
            named = {n: i for n, (e, i) in self.names.items() if e == entity}
            shown = sorted(n for n, ident in named.items() if ident in ids)
            unnamed = len(ids - set(named.values()))
            if shown != sorted(check["records"]) or unnamed:
                extra = f" and {unnamed} unnamed" if unnamed else ""
                self._fail(
                    value_position(check, "records", at),
                    f"the user reads {entity} records {shown or 'none'}{extra}, expected "
                    f"{sorted(check['records'])}",
                )

    def _record_or_fail(self, name, at):
        if name not in self.names:
            self._fail(at, f"no record named {name!r}")
            return None, None
        return self.names[name]

    def _fail(self, at: Position, message: str) -> None:
        self.outcome.failures.append(Failure(at, message))

    def _message(self, spec: Mapping, at: Position, *, notification: bool) -> None:
        from ..workflow import tables as W

        table = W.notifications if notification else W.emails
        query = sa.select(table)
        to = spec.get("to", "user")
        if notification:
            user_id = self.user_id if to == "user" else self._user_id(to)
            query = query.where(table.c.user_id == user_id)
        else:
            query = query.where(table.c.to_address == (self.email if to == "user" else to))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        text_column = "title" if notification else "subject"
        matching = [
            row
            for row in rows
            if spec.get("contains", "") in f"{row[text_column]} {row.get('body') or ''}"
            and spec.get("subject", "") in row[text_column]
        ]
        if not matching:
            what = "notification" if notification else "email"
            seen = "; ".join(row[text_column] for row in rows) or "none"
            self._fail(at, f"no {what} to {to} matching {dict(spec)} (sent: {seen})")

    def _user_id(self, email: str) -> int | None:
        user = self.store.user_by_email(email)
        return user.id if user else None

    def _waiting(self, check: Mapping, at: Position) -> None:
        from ..workflow import tables as W

        table = W.instances
        query = sa.select(table.c.status, table.c.due_at).where(
            table.c.process == check["waiting"], table.c.status.in_(("waiting", "running"))
        )
        if check.get("for"):
            entity, ident = self._record_or_fail(check["for"], at)
            if entity is None:
                return
            query = query.where(table.c.entity == entity, table.c.record_id == ident)
        with self.store.engine.connect() as conn:
            found = conn.execute(query).all()
        if not found:
            self._fail(at, f"no instance of {check['waiting']} is waiting")


def _verb(step: Mapping) -> str:
    return next(
        (
            f"{k} {step[k]}"
            for k in ("create", "update", "delete", "start", "action", "wizard")
            if k in step
        ),
        "step",
    )


def _typed_text(value) -> str:
    """A scenario's value as a person would type it into a wizard's input."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(_typed_text(v) for v in value)
    return str(value)
