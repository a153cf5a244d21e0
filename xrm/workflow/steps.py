"""What each kind of step does.  A handler gets the batch, the run and the step, and says
what comes next (the next step, a branch, a wait, a call to the outside, or the end).

Handlers that wait are re-entered when their instance comes due or is woken: they keep
their state in ``run.context['wait']`` and re-check (a date that moved, a condition that
now holds, approvals that came in), so an early or repeated wake-up is harmless.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa
from jinja2 import meta
from sqlalchemy.dialects import postgresql, sqlite

from ..metadata.expressions import environment
from ..metadata.fieldtypes import CoercionError
from ..metadata.filters import parse_filter
from ..metadata.formats import FORMATS
from ..metadata.model import thaw
from ..metadata.processes import (
    activity_due_field,
    as_list,
    parse_clock,
    parse_offset,
    parse_span,
)
from ..storage import query as Q
from ..storage import tables as T
from ..storage.records import NotFound
from ..storage.tables import tables_for
from . import tables as W
from .blocked import Blocked
from .context import UserView, is_template, render_text
from .dates import moment_of
from .effects import new_instance
from .loading import load_records
from .mass_email import step_mass_email
from .readers import Withheld, check_link, reader_of, record_readable, views
from .recipients import group_key, resolve, user_ids
from .runner import FINISHED, IO, STOP, Outcome, StepError, branch, done, path_text, wait

if TYPE_CHECKING:  # pragma: no cover
    from ..metadata.processes import Step
    from .runner import Batch, Run


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_iso(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _waiting_here(run: Run, step: Step) -> dict | None:
    state = run.context.get("wait")
    return state if state is not None and state.get("path") == list(step.path) else None


def _filter(batch: Batch, run: Run, step: Step, key, raw, entity: str):
    return batch.catalog.artifact(
        ("wf-filter", run.process.name, step.path, key),
        lambda: parse_filter(raw, batch.catalog.entity(entity), batch.catalog.entity_of),
    )


def _remembered(batch: Batch, key: str) -> dict | None:
    e = W.effects
    row = (
        batch.conn.execute(sa.select(e.c.record_id, e.c.result).where(e.c.key == key))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _remember(batch: Batch, key: str, kind: str, entity, record_id, result=None) -> None:
    batch.conn.execute(
        W.effects.insert().values(
            key=key,
            kind=kind,
            entity=entity,
            record_id=record_id,
            result=result,
            created_at=batch.now,
        )
    )


def _values(batch: Batch, run: Run, raw, entity: str | None = None, **extra) -> dict:
    """A step's values rendered; a lookup of ``entity`` given as a mapping of the target's
    fields (``contact: {email: "{{ record.from_email }}"}``) is the record they find."""
    values = {name: batch.value(run, value, **extra) for name, value in (raw or {}).items()}
    if entity is not None:
        fields = batch.catalog.entity(entity).fields
        for name, value in values.items():
            f = fields.get(name)
            finder = isinstance(value, Mapping) and "id" not in value
            if f is not None and f.type == "lookup" and finder:
                values[name] = _find(batch, f.params["to"], value)
    return values


def _find(batch: Batch, entity: str, wanted: Mapping) -> int | None:
    """The one record of ``entity`` whose fields hold ``wanted`` (text compared without
    regard to case), or None when none or several do, or a value is empty: a lookup by an
    email nobody has is left empty rather than failing the step."""
    target = batch.catalog.entity(entity)
    table = tables_for(batch.catalog)[entity]
    conditions = []
    for name, value in wanted.items():
        f = target.fields[name]
        if value is None or value == "":
            return None
        try:
            value = f.kind.coerce(f, value)
        except CoercionError:
            return None
        if value is None:
            return None
        column = table.c[name]
        if isinstance(value, str):
            conditions.append(sa.func.lower(column) == value.lower())
        else:
            conditions.append(column == value)
    found = (
        batch.unit.connection.execute(sa.select(table.c.id).where(*conditions).limit(2))
        .scalars()
        .all()
    )
    return found[0] if len(found) == 1 else None


# ------------------------------------------------------------------------ record steps
def _update(batch: Batch, run: Run, entity: str, ident, values: dict) -> dict:
    """Update a record through the records service; one that is gone blocks the step."""
    try:
        return batch.records(entity).update(ident, values)
    except NotFound as exc:
        raise Blocked(
            batch.catalog, "record_missing", run.entity, entity=exc.entity, id=exc.record_id
        ) from None


def step_set(batch: Batch, run: Run, step: Step):
    values = _values(batch, run, step.spec, run.entity)
    with batch.write(run):
        run.record = _update(batch, run, run.entity, run.record_id, values)
    batch.loader.records[(run.entity, run.record_id)] = run.record
    return done({"set": sorted(values)})


def _create(batch: Batch, run: Run, step: Step, entity: str, values: dict):
    key = run.key(step)
    before = _remembered(batch, key)
    if before is not None:  # this step ran before and committed: never create twice
        return before["record_id"], True
    with batch.write(run):
        record = batch.records(entity).create(values)
        _remember(batch, key, "create", entity, record["id"])
    return record["id"], False


def step_create(batch: Batch, run: Run, step: Step):
    spec = step.spec
    values = _values(batch, run, spec["values"], spec["entity"])
    ident, repeated = _create(batch, run, step, spec["entity"], values)
    if spec.get("as"):
        run.vars[spec["as"]] = ident
    return done({"entity": spec["entity"], "id": ident, **({"repeated": True} if repeated else {})})


def step_activity(batch: Batch, run: Run, step: Step):
    spec = step.spec
    name = spec.get("entity", "task")
    target = batch.catalog.entity(name)
    values = _values(batch, run, spec.get("values"), name)
    values["subject"] = batch.text(run, spec["subject"])
    due_field = activity_due_field(target)
    if spec.get("due") is not None:
        if is_template(spec["due"]):
            values[due_field] = batch.value(run, spec["due"])
        else:
            offset = parse_offset(spec["due"])
            if target.fields[due_field].type == "date":
                values[due_field] = batch.today() + offset // 86400
            else:
                values[due_field] = batch.now + dt.timedelta(seconds=offset)
    if spec.get("reminder"):
        values["reminder"] = parse_span(spec["reminder"])
    if spec.get("owner"):
        owners = user_ids(batch, run, spec["owner"])
        values["owner"] = owners[0] if owners else None
    elif run.record is not None:
        values.setdefault("owner", run.record.get("owner"))
    regarding = target.fields.get("regarding")
    if regarding is not None and regarding.type == "any_lookup" and run.entity and run.record_id:
        allowed = regarding.params.get("to")
        if not allowed or run.entity in allowed:
            values.setdefault("regarding", {"entity": run.entity, "id": run.record_id})
    ident, repeated = _create(batch, run, step, name, values)
    if spec.get("as"):
        run.vars[spec["as"]] = ident
    return done({"entity": name, "id": ident, **({"repeated": True} if repeated else {})})


def step_update(batch: Batch, run: Run, step: Step):
    spec = step.spec
    entity = batch.catalog.entity(run.entity)
    related = entity.fields[spec["related"]]
    record = run.record or {}
    if related.type == "lookup":
        target = related.params["to"]
        ids = [record.get(related.name)]
    else:
        target, via = related.params["entity"], related.params["via"]
        table = tables_for(batch.catalog)[target]
        ids = list(
            batch.conn.execute(
                sa.select(table.c.id).where(table.c[via] == run.record_id).order_by(table.c.id)
            ).scalars()
        )
    changed = []
    for ident, values in load_records(batch.conn, batch.catalog, target, ids).items():
        if step.condition is not None and not batch.matches(step.condition, values):
            continue
        from .context import RecordView

        view = RecordView(batch.catalog, target, values, batch.loader)
        with batch.write(run):
            values = _values(batch, run, spec["values"], target, related=view)
            _update(batch, run, target, ident, values)
        changed.append(ident)
    return done({"entity": target, "updated": changed})


def _next_counter(batch: Batch, key: str) -> int:
    insert = (postgresql.insert if batch.conn.dialect.name == "postgresql" else sqlite.insert)(
        T.counters
    )
    statement = (
        insert.values(key=key[:200], value=1)
        .on_conflict_do_update(index_elements=["key"], set_={"value": T.counters.c.value + 1})
        .returning(T.counters.c.value)
    )
    return batch.conn.execute(statement).scalar_one()


def step_assign(batch: Batch, run: Run, step: Step):
    spec = step.spec
    field_name = spec.get("field", "owner")
    to = spec.get("to")
    for index, rule in enumerate(spec.get("rules") or ()):
        tree = (
            _filter(batch, run, step, ("rule", index), rule["if"], run.entity)
            if rule.get("if") is not None
            else None
        )
        if tree is None or batch.matches(tree, run.record):
            to = rule["to"]
            break
    if to is None:
        raise StepError("no assignment rule matched and there is no to:")
    candidates = user_ids(batch, run, to)
    if not candidates:
        raise Blocked(batch.catalog, "no_assignee", run.entity, who=thaw(to))
    method = spec.get("method", "round_robin")
    with batch.write(run):
        if len(candidates) == 1:
            chosen = candidates[0]
        elif method == "least_loaded":
            chosen = _least_loaded(batch, run, step, field_name, candidates)
        else:
            # One turn counter per group of candidates (a team, a territory's members):
            # a row upserted in the run's transaction, so turns survive restarts and two
            # workers assigning at once take consecutive turns.
            turn = _next_counter(batch, _turn_key(run, step, group_key(batch, run, to)))
            chosen = candidates[(turn - 1) % len(candidates)]
        run.record = _update(batch, run, run.entity, run.record_id, {field_name: chosen})
    batch.loader.records[(run.entity, run.record_id)] = run.record
    return done(
        {"field": field_name, "user": chosen, "method": method, "candidates": len(candidates)}
    )


def _turn_key(run: Run, step: Step, group: str) -> str:
    key = f"wf-assign:{run.process.name}:{path_text(step.path)}"
    if group:
        key += ":" + group
    if len(key) > 200:  # the counters' key column; a long group is kept apart by its digest
        key = key[:150] + ":" + hashlib.sha256(key.encode()).hexdigest()[:40]
    return key


def _least_loaded(
    batch: Batch, run: Run, step: Step, field_name: str, candidates: list[int]
) -> int:
    entity = batch.catalog.entity(run.entity)
    table = tables_for(batch.catalog)[entity.name]
    builder = Q.builder(batch.catalog, entity, batch.ctx, batch.conn.dialect.name)
    conditions = [table.c[field_name].in_(candidates), table.c.id != run.record_id]
    if step.spec.get("load") is not None:
        conditions.append(
            builder.compile(_filter(batch, run, step, "load", step.spec["load"], entity.name))
        )
    statement = (
        sa.select(table.c[field_name], sa.func.count())
        .select_from(builder.from_clause)
        .where(*conditions)
        .group_by(table.c[field_name])
    )
    load = dict(batch.conn.execute(statement).all())
    return min(candidates, key=lambda user: (load.get(user, 0), candidates.index(user)))


# ------------------------------------------------------------------------ messages
def message(
    batch: Batch, run: Run, template_name: str, locale: str, user: dict | None
) -> tuple[str, str]:
    """A template rendered for one reader: their language, and dates, numbers and money
    as they read them (the filters take the reader's formats from the namespace); for a
    user, the record as their roles let them read it (``Withheld`` when the template reads
    what they may not: the caller sends its standard text)."""
    template = batch.catalog.templates[template_name]
    needs = template_needs(batch, template_name)
    extra = {"user": UserView(user) if user else None, FORMATS: batch.formats(user)}
    reader = reader_of(batch, user) if user else None
    if reader is not None:  # a user reads the message as their roles let them read
        check_link(batch, run, reader, needs)
        extra.update(views(batch, run, reader))
    context = batch.template_context(run, needs, **extra)
    subject = render_text(template.subject.get(locale), context).strip()
    body = render_text(template.body.get(locale), context) if template.body else ""
    return subject, body


def template_needs(batch: Batch, template_name: str) -> frozenset[str]:
    """The names a message template reads, in any language (once per catalog version)."""

    def build() -> frozenset[str]:
        template = batch.catalog.templates[template_name]
        env = environment()
        return frozenset(
            name
            for label in (template.subject, template.body)
            if label
            for _, text in label.texts
            if is_template(text)
            for name in meta.find_undeclared_variables(env.parse(text))
        )

    return batch.catalog.artifact(("template-needs", template_name), build)


def personal(batch: Batch, template_name: str | None) -> bool:
    """Whether a message template names its reader (``user``): such a message is rendered
    for each recipient, any other once per language, locale and time zone."""
    return template_name is not None and "user" in template_needs(batch, template_name)


WITHHELD_TEXT = {
    "en": (
        "{process}",
        "{process} has a message for you that reads what your roles do not let you "
        "read, so it is not shown.\n{link}",
    ),
    "ru": (
        "{process}",
        "У процесса «{process}» есть для вас сообщение, в котором есть то, что ваши роли "
        "не позволяют читать, поэтому оно не показано.\n{link}",
    ),
}


def _link_for(batch: Batch, run: Run, user: dict | None) -> str:
    """The record's address for a reader who may read it; the inbox's for one who may not
    (a message does not number a record its reader may not read)."""
    reader = reader_of(batch, user) if user else None
    if record_readable(batch, run, reader):
        return str(batch.link(run))
    return batch.formats().url("/inbox")


def _withheld_text(batch: Batch, run: Run, locale: str, user: dict | None) -> tuple[str, str]:
    subject, body = WITHHELD_TEXT.get(locale, WITHHELD_TEXT["en"])
    label = run.process.label.get(locale) or run.process.name
    link = _link_for(batch, run, user)
    return subject.format(process=label), body.format(process=label, link=link)


def send(
    batch: Batch, run: Run, step: Step, users, addresses, channels, render, *, per_user=False
) -> dict:
    """Queue in-app notifications and emails; ``render(locale, user)`` gives subject and
    body.  Recipients who read alike (language, locale, zone, and what their roles let them
    read: ``Reader.alike``) share one rendering unless the message is ``per_user``; one
    whom the message would tell what they may not read (``Withheld``) gets the step's
    standard text instead."""
    rendered: dict = {}
    for user in users:
        locale = (user.get("locale") or batch.locale).split("_")[0]
        reader = reader_of(batch, user)
        key = (
            locale,
            batch.formats(user).key,
            user["id"] if per_user else None,
            reader.alike if reader is not None else None,
        )
        if key not in rendered:
            try:
                rendered[key] = render(locale, user)
            except Withheld:
                rendered[key] = _withheld_text(batch, run, locale, user)
        subject, body = rendered[key]
        if "app" in channels:
            run.effects.notification(
                run.key(step, f"/n{user['id']}"),
                user["id"],
                subject,
                body,
                run.entity,
                run.record_id,
                run.id,
                batch.now,
            )
        if "email" in channels and user.get("email"):
            run.effects.email(
                run.key(step, f"/e{user['id']}"),
                user["email"],
                subject,
                body,
                batch.sender,
                user["id"],
                run.entity,
                run.record_id,
                batch.now,
            )
    if "email" in channels and addresses:
        subject, body = render(batch.locale, None)  # an address reads like the organization
        for address in addresses:
            run.effects.email(
                run.key(step, f"/a{address.lower()}"),
                address,
                subject,
                body,
                batch.sender,
                None,
                run.entity,
                run.record_id,
                batch.now,
            )
    return {"users": [u["id"] for u in users], "addresses": addresses}


def step_notify(batch: Batch, run: Run, step: Step):
    spec = step.spec
    users, addresses = resolve(batch, run, spec["to"])
    channels = tuple(spec.get("channels") or ("app", "email"))
    if not users and not (addresses and "email" in channels):
        raise Blocked(batch.catalog, "no_recipients", run.entity, who=thaw(spec["to"]))
    result = send(
        batch,
        run,
        step,
        users,
        addresses,
        channels,
        lambda locale, user: message(batch, run, spec["template"], locale, user),
        per_user=personal(batch, spec["template"]),
    )
    return done(result)


# ------------------------------------------------------------------------ waiting
def _date_moment(batch: Batch, run: Run, name: str, offset: int, time_of_day) -> dt.datetime | None:
    return moment_of((run.record or {}).get(name), offset, time_of_day, batch.tz)


def step_wait(batch: Batch, run: Run, step: Step):
    spec = step.spec
    state = _waiting_here(run, step)
    now = batch.now
    if "for" in spec:
        until = (
            _parse_iso(state["until"])
            if state
            else now + dt.timedelta(seconds=parse_span(spec["for"]))
        )
    elif "until" in spec:
        time_of_day = parse_clock(spec["time"]) if spec.get("time") else None
        until = _date_moment(
            batch,
            run,
            spec["until"],
            parse_offset(spec["offset"]) if spec.get("offset") else 0,
            time_of_day,
        )
        if until is None:
            return done({"skipped": f"{spec['until']} is empty"})
    else:
        timeout = (
            _parse_iso(state.get("timeout"))
            if state
            else (
                now + dt.timedelta(seconds=parse_span(spec["timeout"]))
                if spec.get("timeout")
                else None
            )
        )
        if batch.matches(step.condition, run.record):
            return done({"condition": "met"})
        if batch.dry:
            return done({"would wait": "until the condition holds", "timeout": _iso(timeout)})
        if timeout is not None and now >= timeout:
            return branch("timed_out", {"timed_out": True})
        run.context["wait"] = {
            "path": list(step.path),
            "kind": "condition",
            "timeout": _iso(timeout),
        }
        return wait(
            timeout, wake_on_change=True, result={"until": "condition", "timeout": _iso(timeout)}
        )
    if now >= until:
        return done({"waited until": _iso(until)})
    if batch.dry:
        return done({"would wait until": _iso(until)})
    run.context["wait"] = {"path": list(step.path), "kind": "time", "until": _iso(until)}
    return wait(until, wake_on_change="until" in spec, result={"until": _iso(until)})


# ------------------------------------------------------------------------ approvals
def outcome_of(decisions: list[str | None], require: str) -> str | None:
    active = [d for d in decisions if d not in ("delegated", "withdrawn")]
    if not active:
        return None
    if require == "any":
        if "approved" in active:
            return "approved"
        return "rejected" if all(d == "rejected" for d in active) else None
    if "rejected" in active:
        return "rejected"
    return "approved" if all(d == "approved" for d in active) else None


APPROVAL_TEXT = {
    "en": ("Approval requested: {process}", "Please approve or reject: {process} ({link})"),
    "ru": ("Требуется согласование: {process}", "Согласуйте или отклоните: {process} ({link})"),
}


def _approval_text(batch: Batch, run: Run, locale: str, user: dict | None) -> tuple[str, str]:
    subject, body = APPROVAL_TEXT.get(locale, APPROVAL_TEXT["en"])
    label = run.process.label.get(locale)
    link = _link_for(batch, run, user)
    return subject.format(process=label, link=link), body.format(process=label, link=link)


def _ask_approvers(batch: Batch, run: Run, step: Step, user_ids) -> None:
    """Ask approvers in-app and by email (the step's template, or the standard text: also
    what an approver gets whom the template would tell what they may not read)."""
    spec = step.spec

    def render(locale, user):
        if spec.get("template"):
            try:
                return message(batch, run, spec["template"], locale, user)
            except Withheld:
                return _approval_text(batch, run, locale, user)
        return _approval_text(batch, run, locale, user)

    users = [u for u in (batch.loader.user(i) for i in user_ids) if u]
    send(
        batch,
        run,
        step,
        users,
        [],
        ("app", "email"),
        render,
        per_user=personal(batch, spec.get("template")),
    )


def step_approval(batch: Batch, run: Run, step: Step):
    spec = step.spec
    require = spec.get("require", "all")
    state = _waiting_here(run, step)
    now = batch.now
    if state is None:
        approvers = user_ids(batch, run, spec["approvers"])
        if not approvers:
            raise Blocked(batch.catalog, "no_approvers", run.entity, who=thaw(spec["approvers"]))
        timeout = (
            now + dt.timedelta(seconds=parse_span(spec["timeout"])) if spec.get("timeout") else None
        )
        for user in approvers:
            run.effects.approvals.append(
                {
                    "instance_id": run.id,
                    "path": path_text(step.path),
                    "user_id": user,
                    "decision": None,
                    "comment": None,
                    "delegated_from": None,
                    "created_at": now,
                    "decided_at": None,
                }
            )
        _ask_approvers(batch, run, step, approvers)
        result = {"approvers": approvers, "require": require, "timeout": _iso(timeout)}
        if batch.dry:
            return Outcome("stop", result={**result, "would wait for": "the approvers' decisions"})
        run.context["wait"] = {
            "path": list(step.path),
            "kind": "approval",
            "timeout": _iso(timeout),
        }
        return wait(timeout, result=result)
    a = W.approvals
    rows = (
        batch.conn.execute(
            sa.select(a.c.user_id, a.c.decision, a.c.comment, a.c.delegated_from)
            .where(a.c.instance_id == run.id, a.c.path == path_text(step.path))
            .order_by(a.c.id)
        )
        .mappings()
        .all()
    )
    # A delegation wakes the instance: the delegate is asked like the first approvers (the
    # messages' keys make a repeated wake send nothing twice).
    delegates = [r["user_id"] for r in rows if r["delegated_from"] and r["decision"] is None]
    if delegates:
        _ask_approvers(batch, run, step, delegates)
    outcome = outcome_of([r["decision"] for r in rows], require)
    timeout = _parse_iso(state.get("timeout"))
    if outcome is None and timeout is not None and now >= timeout:
        outcome = "timed_out"
    if outcome is None:
        return wait(timeout)
    decisions = [
        {"user": r["user_id"], "decision": r["decision"], "comment": r["comment"]} for r in rows
    ]
    if not batch.dry:
        # Approvers who had not answered are no longer asked (their inboxes drop the item).
        batch.conn.execute(
            a.update()
            .where(
                a.c.instance_id == run.id,
                a.c.path == path_text(step.path),
                a.c.decision.is_(None),
            )
            .values(decision="withdrawn", decided_at=now)
        )
    run.vars["approval"] = {"outcome": outcome, "decisions": decisions}
    return branch(outcome, {"decisions": decisions})


# ------------------------------------------------------------------------ the outside
def step_webhook(batch: Batch, run: Run, step: Step):
    spec = step.spec
    if run.io_result is None:
        url = batch.text(run, spec["url"]).strip()
        body = spec.get("body")
        if body is None:
            payload = {
                "process": run.process.name,
                "instance": run.id,
                "entity": run.entity,
                "record": _json_record(batch, run),
            }
        else:
            payload = batch.value(run, body)
        if batch.dry:
            return done({"would call": url, "method": spec.get("method", "POST")})
        run.context["io"] = {
            "url": url,
            "method": spec.get("method", "POST"),
            "body": json.dumps(payload, default=str, ensure_ascii=False),
            "headers": dict(spec.get("headers") or {}),
            "secret": thaw(spec.get("secret")),
            "timeout": parse_span(spec["timeout"]) if spec.get("timeout") else 10,
            "key": run.key(step),
        }
        return IO
    result, run.io_result = run.io_result, None
    request = run.context.pop("io", {}) or {}
    if result.get("ok"):
        if spec.get("as"):
            run.vars[spec["as"]] = {"status": result["status"], "body": result.get("body")}
        return done({"status": result["status"], "url": request.get("url")})
    raise StepError(
        f"webhook {request.get('url')} failed: {result.get('error') or result.get('status')}"
    )


def _json_record(batch: Batch, run: Run) -> dict | None:
    if run.record is None:
        return None
    entity = batch.catalog.entity(run.entity)
    out = {}
    for name, value in run.record.items():
        f = entity.fields.get(name)
        out[name] = f.kind.to_json(f, value) if f is not None and value is not None else value
    return out


def step_start(batch: Batch, run: Run, step: Step):
    spec = step.spec
    target = batch.catalog.processes[spec["process"]]
    state = _waiting_here(run, step)
    key = run.key(step)
    if state is None:
        record_id = batch.value(run, spec["record"]) if spec.get("record") else run.record_id
        record_id = int(record_id) if record_id not in (None, "", "None") else None
        if batch.dry:
            return done({"would start": target.name, "record": record_id})
        context = {
            "trigger": {"event": "subprocess", "parent": run.id},
            "depth": run.depth + 1,
            "vars": {},
        }
        run.effects.instances.append(
            new_instance(
                target.name,
                target.entity,
                record_id,
                batch.now,
                key=key,
                context=context,
                parent_id=run.id,
                user_id=run.user_id,
            )
        )
        if not spec.get("wait"):
            return done({"started": target.name, "record": record_id})
        run.context["wait"] = {"path": list(step.path), "kind": "process", "key": key}
        return wait(None, result={"started": target.name, "record": record_id})
    i = W.instances
    child = (
        batch.conn.execute(sa.select(i.c.id, i.c.status, i.c.error).where(i.c.key == key))
        .mappings()
        .first()
    )
    if child is None or child["status"] not in FINISHED:
        return wait(None)
    if child["status"] == "failed":
        raise StepError(
            f"sub-process {target.name} (instance {child['id']}) failed: {child['error']}"
        )
    return done({"sub-process": child["status"], "instance": child["id"]})


# ------------------------------------------------------------------------ scores
def step_rescore(batch: Batch, run: Run, step: Step):
    """Score again every record of an entity with a scoring model (its points fading
    with age): one UPDATE in the run's transaction, however many records."""
    from ..storage.scoring import rescore

    entity = batch.catalog.entity(step.spec)
    with batch.write(run):
        moved = rescore(batch.conn, batch.catalog, entity, batch.now, batch.tz)
    return done({"entity": entity.name, "rescored": moved})


# ------------------------------------------------------------------------ reports
def step_send_report(batch: Batch, run: Run, step: Step):
    """Email a report (or a dashboard) to each recipient as they would see it: it runs as
    their principal (scope and field rules), in their language and zone.  A recipient who
    may not run it gets nothing and is named in the step's result; the others get theirs."""
    from ..reports import ParameterError, ReportError, ReportRefused
    from ..reports.mailing import FORMATS as PARTS
    from ..reports.mailing import dashboard_mail, report_mail
    from ..storage.records import Forbidden

    spec = step.spec
    if "dashboard" in spec:
        sent_what = batch.catalog.dashboards[spec["dashboard"]]
        mail_of = dashboard_mail
    else:
        sent_what = batch.catalog.reports[spec["report"]]
        mail_of = report_mail
    users, _ = resolve(batch, run, spec["to"])  # the checker allows users only
    params = thaw(spec.get("parameters") or {})
    parts = tuple(spec.get("formats") or PARTS)
    sent, refused = [], []
    for user in users:
        if not user.get("email"):
            refused.append({"user": user["id"], "reason": "has no email address"})
            continue
        principal = batch.store.principal(user["id"])
        if principal is None:
            refused.append({"user": user["id"], "reason": "is not an active user"})
            continue
        # one reader's failure (or a statement the database refuses) rolls back only
        # their own reads, never the batch
        savepoint = batch.conn.begin_nested()
        try:
            mail = mail_of(
                batch.store,
                sent_what,
                params,
                principal,
                batch.formats(user),
                parts=parts,
                subject=step_label(spec.get("subject")),
                now=batch.now,
            )
        except KeyError:
            raise  # a defect, not a refusal
        except (ReportRefused, ParameterError, ReportError, Forbidden, LookupError) as exc:
            # LookupError: a dashboard the recipient does not see
            savepoint.rollback()
            refused.append({"user": user["id"], "reason": str(exc)[:300]})
            continue
        except sa.exc.DBAPIError as exc:
            savepoint.rollback()
            refused.append(
                {"user": user["id"], "reason": f"the database refused it: {exc.orig}"[:300]}
            )
            continue
        savepoint.commit()
        run.effects.email(
            run.key(step, f"/e{user['id']}"),
            user["email"],
            mail.subject,
            mail.text,
            batch.sender,
            user["id"],
            run.entity,
            run.record_id,
            batch.now,
            html=mail.html if "table" in parts else None,
            attachments=mail.attachments or None,
        )
        sent.append(user["id"])
    result = {"dashboard" if "dashboard" in spec else "report": sent_what.name, "sent": sent}
    if refused:
        result["refused"] = refused
    if not users:
        result["nobody"] = f"no active user among {', '.join(map(str, as_list(spec['to'])))}"
    return done(result)


def step_label(raw):
    from ..metadata.labels import Label

    return Label.of(thaw(raw)) if raw else None


def step_stop(batch: Batch, run: Run, step: Step):
    return STOP


def step_if(batch: Batch, run: Run, step: Step):
    return branch("then" if batch.matches(step.condition, run.record) else "else")


HANDLERS = {
    "set": step_set,
    "create": step_create,
    "update": step_update,
    "notify": step_notify,
    "assign": step_assign,
    "activity": step_activity,
    "wait": step_wait,
    "approval": step_approval,
    "webhook": step_webhook,
    "start": step_start,
    "send_report": step_send_report,
    "mass_email": step_mass_email,
    "rescore": step_rescore,
    "stop": step_stop,
    "if": step_if,
}
