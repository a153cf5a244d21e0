"""The ``mass_email`` step: one email to every record of an audience that consents,
through the outbox, throttled, each with its own unsubscribe link; and what following
such a link does to the outbox.

The audience is found in SQL, in one statement: the records of the step's entity whose
consent field is true and whose email is filled, narrowed by what the step names (the
records a many-to-many field of this record links, a saved filter held in a json field of
this record, a constant filter).  Each reader's message is the step's template rendered
with ``member`` (their record), ``record`` (this record) and ``unsubscribe_url``, in their
language when the step names a language field.  The emails are queued with due times one
``rate`` step apart, so the outbox (which sends what is due) is the throttle, whichever
worker sends them.  A ``log`` record (a campaign member) is created per email, in the
run's transaction; its ``unique`` fields make a reader already logged get nothing again,
so a mailing run twice mails nobody twice.

Each email is keyed by the instance, the step and the reader (``.../m<id>``), as every
effect is, so a repeated run queues nothing twice; the key's ending is also how an
unsubscribe finds that reader's mass emails still waiting (``withdraw_queued``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..metadata.filters import FilterError, parse_filter, resolve_path
from ..metadata.formats import FORMATS
from ..metadata.mass_email import rate_of
from ..storage import query as Q
from ..storage import unsubscribe
from ..storage.tables import tables_for
from . import tables as W
from .context import RecordView, render_text
from .loading import load_records
from .runner import StepError, done

if TYPE_CHECKING:  # pragma: no cover
    from ..metadata.processes import Step
    from .runner import Batch, Run

#: The key suffix of a mass email's outbox row: ``i<instance>/<step>/m<record id>``.
KEY_MARK = "/m"
#: The status of a queued mass email taken back because its reader unsubscribed.
WITHDRAWN = "withdrawn"


def _holder(batch: Batch, run: Run, dotted: str):
    """(the record holding the path's last field, that field) for a path of this record;
    StepError when a lookup on the way is empty."""
    entity = batch.catalog.entity(run.entity)
    field, lookups = resolve_path(entity, dotted, batch.catalog.entity_of)
    current, current_entity = run.record or {}, entity.name
    for lookup in lookups:
        ident = current.get(lookup.name)
        current = batch.loader.record(lookup.params["to"], ident) if ident is not None else None
        if current is None:
            raise StepError(
                f"{dotted}: {lookup.name} is empty on this record, so there is nobody to email"
            )
        current_entity = lookup.params["to"]
    return current_entity, current, field


def _saved_filter(batch: Batch, run: Run, dotted: str, audience):
    """The filter a json field holds, checked against the audience's entity; an empty or
    broken one stops the step (it never means everyone)."""
    _, holder, field = _holder(batch, run, dotted)
    raw = holder.get(field.name)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise StepError(f"saved filter {dotted} is not JSON: {exc}") from None
    if raw in (None, "", [], {}):
        raise StepError(f"saved filter {dotted} is empty: refusing to email every {audience.name}")
    try:
        return parse_filter(raw, audience, batch.catalog.entity_of)
    except FilterError as exc:
        raise StepError(f"saved filter {dotted}: {exc}") from None


def audience_ids(batch: Batch, run: Run, step: Step) -> list[tuple[int, str]]:
    """(id, email address) of every reader, in id order."""
    spec = step.spec
    catalog = batch.catalog
    audience = catalog.entity(spec["entity"])
    table = tables_for(catalog)[audience.name]
    builder = Q.builder(catalog, audience, batch.ctx, batch.conn.dialect.name)
    email = table.c[spec["email"]]
    conditions = [table.c[spec["consent"]].is_(True), email.is_not(None), email != ""]
    if spec.get("list"):
        holder_entity, holder, field = _holder(batch, run, spec["list"])
        link = tables_for(catalog).link(holder_entity, field.name)
        conditions.append(
            table.c.id.in_(sa.select(link.c.target_id).where(link.c.source_id == holder["id"]))
        )
    if spec.get("saved_filter"):
        conditions.append(
            builder.compile(_saved_filter(batch, run, spec["saved_filter"], audience))
        )
    if step.condition is not None:
        conditions.append(builder.compile(step.condition))
    statement = (
        sa.select(table.c.id, email)
        .select_from(builder.from_clause)
        .where(*conditions)
        .order_by(table.c.id)
    )
    return [(row[0], row[1]) for row in batch.conn.execute(statement)]


def _logged(batch: Batch, log: dict, rendered: dict[int, dict]) -> set[int]:
    """The readers whose log values are held by a log record already (its ``unique``)."""
    unique = list(log.get("unique") or ())
    if not unique or not rendered:
        return set()
    table = tables_for(batch.catalog)[log["entity"]]
    entity = batch.catalog.entity(log["entity"])
    keys = {}
    for member, values in rendered.items():
        key = []
        for name in unique:
            f = entity.fields[name]
            value = values.get(name)
            key.append(f.kind.coerce(f, value) if value not in (None, "") else None)
        keys[member] = tuple(key)
    wanted = [{k[i] for k in keys.values()} for i in range(len(unique))]
    statement = sa.select(*(table.c[name] for name in unique)).where(
        *(
            table.c[name].in_([v for v in values if v is not None])
            for name, values in zip(unique, wanted, strict=True)
        )
    )
    held = {tuple(row) for row in batch.conn.execute(statement)}
    return {member for member, key in keys.items() if key in held}


def step_mass_email(batch: Batch, run: Run, step: Step):
    spec = step.spec
    catalog = batch.catalog
    audience = catalog.entity(spec["entity"])
    readers = audience_ids(batch, run, step)
    records = load_records(batch.conn, catalog, audience.name, [ident for ident, _ in readers])
    views = {
        ident: RecordView(catalog, audience.name, records[ident], batch.loader)
        for ident, _ in readers
        if ident in records
    }
    log = spec.get("log")
    rendered_log: dict[int, dict] = {}
    if log is not None:
        for ident, view in views.items():
            rendered_log[ident] = {
                name: batch.value(run, value, member=view) for name, value in log["values"].items()
            }
    already = _logged(batch, log, rendered_log) if log is not None else set()
    to_mail = [
        (ident, address) for ident, address in readers if ident in views and ident not in already
    ]
    result = {"readers": len(to_mail), "logged_before": len(already)}
    if batch.dry:
        # what the step would hand on (``as``), so that later steps read it as they will
        result["emailed"] = len(to_mail)
        if spec.get("as"):
            run.vars[spec["as"]] = result
        return done({**result, "would email": [a for _, a in to_mail[:10]]})
    rate = rate_of(spec)
    gap = dt.timedelta(seconds=rate.seconds / rate.count)
    key = unsubscribe.secret(batch.conn)
    template = catalog.templates[spec["template"]]
    language = spec.get("language")
    due = batch.now
    for index, (ident, address) in enumerate(to_mail):
        view = views[ident]
        locale = str(records[ident].get(language) or "") if language else ""
        locale = locale.split("_")[0].lower() or batch.locale
        context = batch.template_context(
            run,
            None,
            member=view,
            unsubscribe_url=unsubscribe.link(
                batch.base_url, key, audience.name, ident, spec["consent"]
            ),
            **{FORMATS: batch.formats({"locale": locale, "time_zone": None})},
        )
        subject = render_text(template.subject.get(locale), context).strip()
        body = render_text(template.body.get(locale), context)
        due = batch.now + gap * index
        run.effects.email(
            run.key(step, f"{KEY_MARK}{ident}"),
            address,
            subject,
            body,
            batch.sender,
            None,
            audience.name,
            ident,
            batch.now,
            due_at=due,
        )
    if log is not None and to_mail:
        with batch.write(run):
            service = batch.records(log["entity"])
            for ident, _ in to_mail:
                service.create(rendered_log[ident])
    result["emailed"] = len(to_mail)
    if to_mail:
        result["last_due"] = due.isoformat()
    if spec.get("as"):
        run.vars[spec["as"]] = result
    return done(result)


def withdraw_queued(conn: sa.Connection, entity: str, record_id: int) -> int:
    """Take back the mass emails to this record still waiting in the outbox (a throttled
    mailing queues them ahead): someone who unsubscribed gets none of them.  Only mass
    emails are touched; a reminder or a survey about the record still goes."""
    e = W.emails
    result = conn.execute(
        e.update()
        .where(
            e.c.entity == entity,
            e.c.record_id == int(record_id),
            e.c.status == "queued",
            e.c.key.like(f"%{KEY_MARK}{int(record_id)}"),
        )
        .values(status=WITHDRAWN, last_error="the reader unsubscribed")
    )
    return result.rowcount or 0
