"""The wizard engine: one run of a wizard (``xrm.metadata.wizards``), without a request.

A run holds what was entered by step, the current step, and which steps are visible (their
conditions over the inputs entered before them).  ``start`` opens a run on the record it
was opened from (the wizard's condition on that record checked, inputs filled from it);
``submit`` parses a step's posted text by the field-type registry in the reader's locale
(``accept``: an API's JSON values) and returns field errors; ``back`` keeps
what was entered, valid or not; ``finish`` runs the actions (or a Python wizard's
callable) in one unit of work through the records service as the user, so permissions
hold and a failure anywhere writes nothing and comes back on the step and input it
belongs to.  A run is plain JSON (``to_dict``/``from_dict``): the web UI keeps it signed
in the form, so any worker can take the next step.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, Undefined

from ..metadata.evaluate import matches, record_getter
from ..metadata.expressions import Today, environment
from ..metadata.fieldtypes import CoercionError
from ..metadata.filters import FilterContext, FilterError, parse_filter
from ..metadata.labels import Label
from ..metadata.model import thaw
from ..metadata.wizards import (
    CANDIDATE_LIMIT,
    Wizard,
    WizardAction,
    WizardInput,
    WizardStep,
    input_names_in,
    is_template,
    single_expression,
)
from ..storage.records import (
    ALL_KEY,
    Conflict,
    Forbidden,
    NotFound,
    RecordError,
    ValidationFailed,
)

#: The value a pick input posts for "create a new one".
CREATE_NEW = "new"
#: Suffix of a pick input's "or find another" search: a record that is not a candidate.
OTHER = "__other"
REQUIRED = "required"


class WizardRefused(PermissionError):
    """The user may not run this wizard, or the run's state does not fit the wizard."""


class WizardUnavailable(WizardRefused):
    """The record the wizard was opened from is not one it applies to (``open_from.if``):
    a lead already converted.  ``label`` says why in the user's language."""

    def __init__(self, wizard: Wizard, record: tuple[str, int]):
        self.label = wizard.open_from.message or Label.of(
            {
                "en": "This wizard does not apply to this record.",
                "ru": "Этот мастер не применяется к этой записи.",
            }
        )
        super().__init__(f"{record[0]} {record[1]}: {self.label.get('en')}")


class WizardFailed(Exception):
    """A finish that wrote nothing: errors on the step (and inputs) they belong to.
    ``conflict``: a record changed under the run (someone else wrote it meanwhile)."""

    def __init__(
        self,
        step: str,
        errors: dict[str, list[str]],
        general: list[str],
        conflict: bool = False,
    ):
        self.step, self.errors, self.general = step, errors, general
        self.conflict = conflict
        text = "; ".join([*general, *(f"{k}: {', '.join(v)}" for k, v in errors.items())])
        super().__init__(f"step {step}: {text}")


@dataclass
class Outcome:
    """A finished run: the records its actions made or used, by alias, and where to go;
    ``linked``: the aliases whose record was picked, not created."""

    records: dict[str, tuple[str, int]] = field(default_factory=dict)
    landing: tuple[str, int] | None = None
    linked: set[str] = field(default_factory=set)


@dataclass
class FinishContext:
    """What a Python wizard's finish gets: the inputs of visible steps, the store, who runs
    it and their unit of work (everything written through ``records`` commits together)."""

    run: WizardRun
    store: Any
    principal: Any
    unit: Any
    values: dict[str, Any]

    def records(self, entity: str):
        return self.store.records(entity, principal=self.principal)


class _Namespace:
    """A mapping read as attributes by templates (``inputs.name``, ``account.id``); unlike a
    dict it has no methods for an input called ``items`` or ``values`` to hit."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping):
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name):
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self._data[name]

    def __contains__(self, name):
        return name in self._data

    def __bool__(self):
        return bool(self._data)

    def __str__(self):
        return str(self._data.get("id", ""))


def render(value, context: Mapping):
    """An action's value: constants pass through; a one-expression template keeps its type
    (a date, a number, an id); other templates render as text (empty text: no value)."""
    if not is_template(value):
        return thaw(value)
    env = environment()
    expression = single_expression(value)
    if expression is not None:
        result = env.compile_expression(expression, undefined_to_none=False)(**context)
        if isinstance(result, Undefined):
            str(result)  # StrictUndefined: raises its error
        if isinstance(result, _Namespace):
            return result._data.get("id")
        return result
    text = env.from_string(value).render(**context)
    return text if text.strip() else None


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == ()


class WizardRun:
    """One person's way through one wizard."""

    def __init__(
        self,
        wizard: Wizard,
        *,
        origin: tuple[str, int] | None = None,
        locale: str = "en",
        tz: str = "UTC",
        run_id: str | None = None,
    ):
        self.wizard = wizard
        self.origin = origin
        self.locale, self.tz = locale, tz
        self.id = run_id or uuid.uuid4().hex
        #: input -> its value as JSON (``to_json`` of its field): what was accepted
        self.values: dict[str, Any] = {
            i.name: i.default for s in wizard.steps for i in s.inputs if i.default is not None
        }
        #: input -> the text posted and not (yet) accepted: shown again as typed
        self.texts: dict[str, Any] = {}
        self.completed: list[str] = []
        self.current = wizard.steps[0].name
        if (
            wizard.open_from.records
            and origin is not None
            and origin[0] not in (wizard.open_from.records)
        ):
            raise WizardRefused(f"wizard {wizard.name!r} is not opened from {origin[0]} records")
        self._origin_record: dict | None = None
        #: the origin's version when the finish checked it: its update must find it so
        self._origin_version: int | None = None

    @classmethod
    def start(
        cls,
        wizard: Wizard,
        store,
        principal,
        *,
        origin: tuple[str, int] | None = None,
        locale: str = "en",
        tz: str = "UTC",
    ) -> WizardRun:
        """A new run as ``principal``: the record opened from must be one they may read and
        one the wizard applies to (WizardUnavailable), and the inputs whose ``default`` is
        a template start from it."""
        run = cls(wizard, origin=origin, locale=locale, tz=tz)
        if origin is not None:
            run.origin_record(store, principal)  # NotFound unless the user may read it
            run.check_origin(store)
        run.prefill(store, principal)
        return run

    def check_origin(self, store) -> dict | None:
        """The record opened from as the platform reads it, when the wizard's ``open_from``
        condition holds for it; WizardUnavailable when not.  (A condition may read fields
        the user may not: its answer is all they learn.)"""
        if self.origin is None:
            return None
        entity, ident = self.origin
        record = store.records(entity).get(ident)
        condition = self.wizard.open_from.condition
        if condition is not None:

            def related(name, key):
                try:
                    return store.records(name).get(key)
                except NotFound:
                    return None

            if not matches(condition, record_getter(record, related), self._filter_context()):
                raise WizardUnavailable(self.wizard, self.origin)
        return record

    def prefill(self, store, principal) -> None:
        """Fill the inputs whose ``default`` is a template (``{{ record.company }}``) from
        the record opened from and the user; a value the input's field refuses, or none,
        leaves it empty."""
        context = None
        for item in self.wizard.inputs.values():
            if item.prefill is None:
                continue
            if context is None:
                context = self.template_context(store, principal)
            try:
                value = render(item.prefill, context)
                if _empty(value):
                    continue
                f = item.field
                if f.type in ("lookup", "user") and not isinstance(value, int):
                    value = int(str(value))
                self.values[item.name] = f.kind.to_json(f, f.kind.coerce(f, value))
            except (TemplateError, CoercionError, TypeError, ValueError):
                continue

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict:
        return {
            "wizard": self.wizard.name,
            "id": self.id,
            "current": self.current,
            "values": dict(self.values),
            "texts": dict(self.texts),
            "completed": list(self.completed),
            "origin": list(self.origin) if self.origin else None,
        }

    @classmethod
    def from_dict(cls, wizard: Wizard, data: Mapping, *, locale="en", tz="UTC") -> WizardRun:
        """A run from ``to_dict``; state that does not fit the wizard (a step or input it
        no longer has, a value its field refuses) is refused or dropped, never trusted."""
        if not isinstance(data, Mapping) or data.get("wizard") != wizard.name:
            raise WizardRefused("the wizard's state belongs to another wizard")
        origin = data.get("origin")
        origin = (str(origin[0]), int(origin[1])) if origin else None
        run = cls(wizard, origin=origin, locale=locale, tz=tz, run_id=str(data.get("id") or ""))
        steps = {s.name for s in wizard.steps}
        if data.get("current") not in steps:
            raise WizardRefused("the wizard changed since this run started: start again")
        run.current = data["current"]
        run.completed = [s for s in data.get("completed") or () if s in steps]
        inputs = wizard.inputs
        run.values = {}
        for name, value in (data.get("values") or {}).items():
            item = inputs.get(name)
            if item is None or value is None:
                continue
            try:
                item.field.kind.coerce(item.field, value)
            except (CoercionError, TypeError, ValueError):
                continue
            run.values[name] = value
        run.texts = {k: v for k, v in (data.get("texts") or {}).items() if k in inputs}
        return run

    # ------------------------------------------------------------------ values
    def value(self, name: str):
        """An input's accepted value as Python (None: nothing entered)."""
        item = self.wizard.inputs[name]
        raw = self.values.get(name)
        if raw is None:
            return None
        return item.field.kind.coerce(item.field, raw)

    def _filter_context(self) -> FilterContext:
        return FilterContext(tz=self.tz)

    def visible_steps(self) -> list[WizardStep]:
        """The steps shown: each one's condition reads the inputs of visible steps before it."""
        shown, known = [], {}
        for step in self.wizard.steps:
            if step.visible_if is None or matches(
                step.visible_if, record_getter(known), self._filter_context()
            ):
                shown.append(step)
                for item in step.inputs:
                    known[item.name] = self.value(item.name)
        return shown

    def visible_values(self) -> dict[str, Any]:
        """Every input by name: its value on a visible step, None on a hidden one."""
        out = {name: None for name in self.wizard.inputs}
        for step in self.visible_steps():
            for item in step.inputs:
                out[item.name] = self.value(item.name)
        return out

    def step(self) -> WizardStep:
        return self.wizard.step(self.current)

    def _move(self, offset: int) -> None:
        shown = [s.name for s in self.visible_steps()]
        if self.current not in shown:  # hidden since: go to the nearest visible one before
            order = [s.name for s in self.wizard.steps]
            before = [s for s in shown if order.index(s) < order.index(self.current)]
            self.current = before[-1] if before else shown[0]
            if offset < 0:
                return
        index = shown.index(self.current) + offset
        self.current = shown[max(0, min(index, len(shown) - 1))]

    @property
    def is_last(self) -> bool:
        return self.current == self.visible_steps()[-1].name

    @property
    def is_first(self) -> bool:
        return self.current == self.visible_steps()[0].name

    def may_go_to(self, name: str) -> bool:
        """A step the user may jump to (the review's links): a visible one already done,
        or the first one not done yet."""
        shown = [s.name for s in self.visible_steps()]
        if name not in shown:
            return False
        for step in shown:
            if step == name:
                return True
            if step not in self.completed:
                return False
        return False

    def go_to(self, name: str, posted: Mapping[str, Any] | None = None) -> None:
        """Open another step (the indicator's and the review's links), keeping what was
        typed on this one as ``back`` does."""
        if not self.may_go_to(name):
            raise WizardRefused(f"step {name!r} cannot be opened now")
        self.keep(posted)
        self.current = name

    # ------------------------------------------------------------------ input
    def submit(
        self, posted: Mapping[str, Any], *, store=None, principal=None
    ) -> dict[str, list[str]]:
        """Parse and check the current step's posted text; with no errors, keep the values
        and go on to the next visible step.  Errors are {input: [message]} (English: the
        UI translates them as it does the records service's)."""
        step = self.step()
        errors: dict[str, list[str]] = {}
        accepted: dict[str, Any] = {}
        for item in step.inputs:
            raw = posted.get(item.name)
            other = _text(posted.get(item.name + OTHER)).strip() if item.pick else ""
            if other:  # found by search: it wins over the candidates' radio buttons
                raw = other
            self.texts[item.name] = raw if raw is not None else ""
            try:
                value = self.parse(item, raw)
            except CoercionError as exc:
                errors.setdefault(item.name, []).append(exc.message)
                continue
            chose_new = item.pick is not None and item.or_create and _text(raw) == CREATE_NEW
            problem = self._problem(item, value, chose_new, store, principal)
            if problem:
                errors.setdefault(item.name, []).append(problem)
                continue
            accepted[item.name] = value
        if errors:
            return errors
        return self._keep_step(step, accepted)

    def accept(self, given: Mapping[str, Any], *, store=None, principal=None) -> dict:
        """The current step's inputs from an API's JSON: each value as the records service
        takes a field's (a JSON number or date text; text in the user's language); an input
        not given keeps what it holds (its default, or what the record opened from filled
        in).  A pick input takes a record id, or ``"new"``/null for "create a new one".
        Like ``submit``: errors, or the values kept and the next visible step opened."""
        step = self.step()
        errors: dict[str, list[str]] = {}
        accepted: dict[str, Any] = {}
        for item in step.inputs:
            f = item.field
            chose_new = False
            if item.name not in given:
                value = self.value(item.name)
            else:
                raw = given[item.name]
                chose_new = item.pick is not None and item.or_create and raw in (CREATE_NEW, None)
                try:
                    if chose_new or raw is None or raw == "":
                        value = None
                    elif f.type in ("lookup", "user"):
                        if isinstance(raw, bool) or not isinstance(raw, int | str):
                            raise CoercionError("expected a record id")
                        value = int(raw) if str(raw).isdigit() else None
                        if value is None:
                            raise CoercionError("expected a record id")
                    else:
                        value = f.kind.coerce_input(f, raw, tz=self.tz, locale=self.locale)
                except CoercionError as exc:
                    errors.setdefault(item.name, []).append(exc.message)
                    continue
                except (TypeError, ValueError) as exc:
                    errors.setdefault(item.name, []).append(str(exc))
                    continue
            chose_new = chose_new or (item.pick is not None and item.or_create and value is None)
            problem = self._problem(item, value, chose_new, store, principal)
            if problem:
                errors.setdefault(item.name, []).append(problem)
                continue
            accepted[item.name] = value
        if errors:
            return errors
        return self._keep_step(step, accepted)

    def _problem(self, item, value, chose_new, store, principal) -> str | None:
        if item.required and _empty(value) and not chose_new:
            return REQUIRED
        if value is not None and item.field.type in ("lookup", "user") and store is not None:
            return self._lookup_problem(item, value, store, principal)
        return None

    def _keep_step(self, step: WizardStep, accepted: Mapping[str, Any]) -> dict:
        for name, value in accepted.items():
            item = self.wizard.inputs[name]
            if value is None:
                self.values.pop(name, None)
            else:
                self.values[name] = item.field.kind.to_json(item.field, value)
            self.texts.pop(name, None)
        if step.name not in self.completed:
            self.completed.append(step.name)
        self._move(+1)
        return {}

    def parse(self, item: WizardInput, raw) -> Any:
        """One input's posted text as its value, read in the reader's locale and zone."""
        f = item.field
        if f.type == "boolean":
            return _text(raw).strip().lower() not in ("", "false", "0", "off", "no")
        if f.type == "multi_choice":
            chosen = [v for v in (raw if isinstance(raw, list) else [raw]) if v]
            return f.kind.coerce(f, chosen) if chosen else None
        text = _text(raw).strip()
        if text == "" or (item.pick and text == CREATE_NEW):
            return None
        if f.type in ("lookup", "user"):
            if not text.isdigit():
                raise CoercionError("expected a record")
            return int(text)
        return f.kind.coerce_input(f, text, tz=self.tz, locale=self.locale)

    def _lookup_problem(self, item, ident, store, principal) -> str | None:
        entity = item.field.target
        if entity == "user":
            return None if store.principal(ident) is not None else "no such user"
        try:
            store.records(entity, principal=principal).get(ident, fields=["id"])
        except NotFound:
            return "no such record"
        return None

    def back(self, posted: Mapping[str, Any] | None = None) -> None:
        """Go to the previous visible step, keeping what was typed on this one as it was."""
        self.keep(posted)
        self._move(-1)

    def keep(self, posted: Mapping[str, Any] | None) -> None:
        """Keep the current step's posted text, unchecked, to show again as typed."""
        if posted is None:
            return
        for item in self.step().inputs:
            if item.name in posted:
                self.texts[item.name] = posted[item.name]
            elif item.field.type in ("boolean", "multi_choice"):
                self.texts[item.name] = ""  # an unticked box, an empty multiple select

    def shown_text(self, item: WizardInput):
        """What an input shows: the text last typed if it was not accepted, else None (the
        caller shows the value in the reader's locale)."""
        return self.texts.get(item.name)

    # ------------------------------------------------------------------ context
    def origin_record(self, store, principal) -> dict | None:
        """The record the wizard was opened from, as the user may read it."""
        if self.origin is None:
            return None
        if self._origin_record is None:
            entity, ident = self.origin
            self._origin_record = store.records(entity, principal=principal).get(ident)
        return self._origin_record

    def template_context(self, store, principal, now: dt.datetime | None = None) -> dict:
        record = self.origin_record(store, principal)
        now = now or store.clock.now()
        context = {
            "inputs": _Namespace(self.visible_values()),
            "record": _Namespace(record) if record is not None else None,
            "now": now,
            "today": _local_date(now, getattr(principal, "tz", None) or self.tz),
            "user": _Namespace(
                {
                    "id": getattr(principal, "user_id", None),
                    "name": getattr(principal, "name", ""),
                    "email": getattr(principal, "email", ""),
                }
            ),
        }
        for action in self.wizard.actions:
            if action.alias:
                context[action.alias] = None  # an action skipped by its condition
        return context

    def candidates(self, item: WizardInput, store, principal) -> list[dict]:
        """The records a pick input offers, read as the user (so only records they may
        read): first the likely duplicates its ``duplicates`` values find by the picked
        entity's rules (best first; each row's ``_matched`` names the rules), then those of
        its ``candidates`` filter, filled from the inputs and the record opened from (a
        condition whose template is empty matches nothing); at most CANDIDATE_LIMIT."""
        context = self.template_context(store, principal)
        records = store.records(item.pick, principal=principal)
        found: dict[int, dict] = {}
        if item.duplicates is not None:
            values = {k: render(v, context) for k, v in thaw(item.duplicates).items()}
            values = {k: v for k, v in values.items() if not _empty(v)}
            matched = records.find_duplicates(values, limit=CANDIDATE_LIMIT) if values else []
            if matched:
                ids = [c.id for c in matched]
                rows = {r["id"]: r for r in records.query(["id", "in", ids], limit=len(ids)).rows}
                for candidate in matched:
                    row = rows.get(candidate.id)
                    if row is not None:
                        found[candidate.id] = {**row, "_matched": list(candidate.rules)}
        if item.candidates is not None and len(found) < CANDIDATE_LIMIT:
            for row in self._filtered(item, records, context, store):
                found.setdefault(row["id"], row)
        elif item.candidates is None and item.duplicates is None:
            found = {r["id"]: r for r in records.query(None, limit=CANDIDATE_LIMIT).rows}
        return list(found.values())[:CANDIDATE_LIMIT]

    def _filtered(self, item: WizardInput, records, context, store) -> list[dict]:
        entity = store.refresh().entity(item.pick)
        raw = _fill(thaw(item.candidates), context)
        if raw is _NOTHING:
            return []
        try:
            tree = parse_filter(
                None if raw is _EVERYTHING else raw, entity, store.refresh().entity_of
            )
        except FilterError:
            return []  # a value the field refuses (a malformed email): no such candidate
        return records.query(tree, limit=CANDIDATE_LIMIT).rows

    # ------------------------------------------------------------------ finish
    def finish(self, store, principal) -> Outcome:
        """Run the wizard's actions in one unit of work as ``principal``.  Raises
        WizardRefused (the user may not run it) or WizardFailed (nothing was written; the
        run's current step is set to where the error belongs)."""
        wizard = self.wizard
        if not wizard.may_run(principal.roles, principal.is_admin):
            raise WizardRefused(f"you may not run the wizard {wizard.name!r}")
        shown = self.visible_steps()
        for step in shown:
            if step.inputs and step.name not in self.completed:
                self.current = step.name
                raise WizardFailed(step.name, {}, ["complete this step first"])
        if any(a.kind == "start" for a in wizard.actions):
            from ..workflow.tables import ensure_tables

            ensure_tables(store)
        last = shown[-1].name
        action: WizardAction | None = None
        try:
            with store.transaction(principal.user_id) as unit:
                if self.origin is not None:
                    # checked again in the unit of work (it may have been converted since the
                    # run started); its update must find the version read here
                    self._origin_version = self.check_origin(store)["version"]
                if wizard.finish is not None:
                    values = self.visible_values()
                    landing = wizard.finish(FinishContext(self, store, principal, unit, values))
                    return Outcome(landing=landing)
                context = self.template_context(store, principal, unit.now)
                outcome = Outcome()
                for action in wizard.actions:
                    self._run(action, context, outcome, store, principal, unit)
                done = wizard.done
                if done == "record" and self.origin is not None:
                    outcome.landing = self.origin
                elif done is not None:
                    outcome.landing = outcome.records.get(done)
                return outcome
        except WizardUnavailable:
            raise
        except ValidationFailed as exc:
            step, errors, general = self._place(exc.errors, action, last)
        except Conflict as exc:
            self.current = last
            raise WizardFailed(last, {}, [str(exc)], conflict=True) from None
        except (Forbidden, NotFound, RecordError, WizardRefused) as exc:
            step, errors, general = last, {}, [str(exc)]
        except (TemplateError, CoercionError, TypeError, ValueError) as exc:
            what = f"{action.kind} {action.entity or action.process}: " if action else ""
            step, errors, general = last, {}, [f"{what}{exc}"]
        self.current = step
        raise WizardFailed(step, errors, general)

    def _run(self, action: WizardAction, context, outcome: Outcome, store, principal, unit):
        inputs = context["inputs"]
        if action.condition is not None and not matches(
            action.condition, record_getter(inputs._data), self._filter_context()
        ):
            return
        if action.kind == "start":
            self._start(action, context, store, principal, unit)
            return
        records = store.records(action.entity, principal=principal)
        if action.kind == "create" and action.each:
            self._create_each(action, context, records, store, principal)
            return
        if action.kind == "create":
            picked = inputs[action.use] if action.use else None
            if picked is not None:
                record = records.get(int(picked))
                if action.alias:
                    outcome.linked.add(action.alias)
            else:
                values = {k: render(v, context) for k, v in action.values.items()}
                record = records.create(values)
        else:
            ident = self._target_id(action.target, context)
            values = {k: render(v, context) for k, v in action.values.items()}
            stamp = {k: render(v, context) for k, v in action.stamp.items()}
            version = self._origin_version if action.target == "record" else None
            record = records.update(ident, values, version, stamp=stamp)
            if action.target == "record":
                self._origin_version = record["version"]
        if action.alias:
            context[action.alias] = _Namespace(record)
            outcome.records[action.alias] = (action.entity, record["id"])

    def _create_each(self, action: WizardAction, context, records, store, principal) -> None:
        """One record per child of ``record.<children>`` or ``<as>.<children>``, each
        read as the user (only the children they may read are copied), in the order
        they were made; ``item`` is the child in the values' templates."""
        root, _, name = action.each.partition(".")
        parent_entity = (
            self.wizard.open_from.records[0]
            if root == "record"
            else next(a.entity for a in self.wizard.actions if a.alias == root)
        )
        children = store.catalog.entity(parent_entity).fields[name]
        parent_id = self._target_id(root, context)
        source = store.records(children.params["entity"], principal=principal)
        after = None
        while True:
            page = source.query(
                [children.params["via"], "eq", parent_id],
                sort=[["id", "asc"]],
                limit=200,
                after=after,
            )
            for child in page.rows:
                context["item"] = _Namespace(child)
                records.create({k: render(v, context) for k, v in action.values.items()})
            after = page.next_cursor
            if not after:
                break
        context.pop("item", None)

    def _target_id(self, target: str, context) -> int:
        if target == "record":
            if self.origin is None:
                raise WizardRefused("this wizard runs on a record: open it from one")
            return self.origin[1]
        found = context.get(target)
        if found is None:
            raise WizardRefused(f"{target!r} was not created (its condition did not hold)")
        return found["id"]

    def _start(self, action: WizardAction, context, store, principal, unit) -> None:
        """Queue the process in this unit of work, with the checks a manual start makes:
        its manual trigger's roles and the right to update the record."""
        from ..workflow import tables as W
        from ..workflow.effects import new_instance

        process = store.refresh().processes.get(action.process)
        if process is None or not process.enabled:
            raise WizardRefused(f"no enabled process {action.process!r}")
        manual = process.trigger("manual")
        if manual is None:
            raise WizardRefused(f"process {action.process!r} cannot be started by hand")
        if manual.roles and not principal.is_admin and not set(manual.roles) & set(principal.roles):
            raise WizardRefused(f"only {', '.join(manual.roles)} may start {action.process!r}")
        ident = self._target_id(action.target, context)
        records = store.records(process.entity, principal=principal)
        records._check_access("update", records.get(ident, fields=["id", "owner"]))
        now = unit.now
        payload = {"wizard": self.wizard.name}
        row = new_instance(
            process.name,
            process.entity,
            ident,
            now,
            key=None,
            context={
                "trigger": {
                    "event": "manual",
                    "kind": "manual",
                    "at": now.isoformat(),
                    "user_id": principal.user_id,
                },
                "payload": payload,
                "vars": {},
            },
            user_id=principal.user_id,
        )
        unit.connection.execute(W.instances.insert().values(**row))
        W.notify(unit.connection)

    def _place(self, errors: Mapping[str, list[str]], action: WizardAction | None, last: str):
        """A record's field errors on the step and input that supplied the field's value;
        what no input supplied is a general error of the last step."""
        placed: dict[str, dict[str, list[str]]] = {}
        general: list[str] = []
        for field_name, messages in errors.items():
            source = action.values.get(field_name) if action is not None else None
            names = input_names_in(source) if is_template(source) else []
            step = self.wizard.step_of(names[0]) if names else None
            if step is not None:
                placed.setdefault(step, {}).setdefault(names[0], []).extend(messages)
            else:
                where = "" if field_name == ALL_KEY else f"{field_name}: "
                entity = f"{action.entity}: " if action is not None else ""
                general.extend(f"{entity}{where}{m}" for m in messages)
        if placed:
            order = [s.name for s in self.wizard.steps]
            step = min(placed, key=order.index)
            return step, placed[step], general
        return last, {}, general


def _local_date(now: dt.datetime, tz: str) -> dt.date:
    """Today in the zone, adding whole days as the workflow's does (``today + 30``)."""
    try:
        return Today.of(now.astimezone(ZoneInfo(tz)).date())
    except (KeyError, ValueError):
        return Today.of(now.date())


def _text(raw) -> str:
    if isinstance(raw, list):
        return raw[0] if raw else ""
    return "" if raw is None else str(raw)


# Filter templates: a leaf whose template renders empty matches nothing.
_NOTHING = object()
_EVERYTHING = object()


def _fill(raw, context):
    if isinstance(raw, dict):
        ((key, value),) = raw.items()
        if key == "not":
            inner = _fill(value, context)
            if inner is _NOTHING:
                return _EVERYTHING
            if inner is _EVERYTHING:
                return _NOTHING
            return {"not": inner}
        children = [_fill(v, context) for v in value]
        if key == "any":
            if any(c is _EVERYTHING for c in children):
                return _EVERYTHING
            kept = [c for c in children if c is not _NOTHING]
            return {"any": kept} if kept else _NOTHING
        if any(c is _NOTHING for c in children):
            return _NOTHING
        kept = [c for c in children if c is not _EVERYTHING]
        return {"all": kept} if kept else _EVERYTHING
    if isinstance(raw, list) and len(raw) == 3 and is_template(raw[2]):
        value = render(raw[2], context)
        return _NOTHING if _empty(value) else [raw[0], raw[1], value]
    return raw


__all__ = [
    "CREATE_NEW",
    "OTHER",
    "FinishContext",
    "Outcome",
    "WizardFailed",
    "WizardRefused",
    "WizardRun",
    "WizardUnavailable",
    "render",
]
