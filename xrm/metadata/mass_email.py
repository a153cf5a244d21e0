"""The ``mass_email`` process step's checks: the audience (an entity's records from a
many-to-many list, a saved filter held in a json field, a constant filter), its email and
consent fields, the message template (which must offer ``{{ unsubscribe_url }}`` in every
language), the throttle and the record logged per email.  Every problem is reported at its
line; the constant filter is returned compiled, as the step's condition.

The step itself runs in ``xrm/workflow/mass_email.py``; docs/workflow.md §1.4 is the
reference for pack writers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .filters import FilterError, parse_filter, resolve_path
from .problems import did_you_mean
from .source import value_position as _vpos
from .web_forms import RateLimit

if TYPE_CHECKING:  # pragma: no cover
    from .model import Entity
    from .process_compiler import WorkflowCompiler

#: Emails a mass email queues per hour when it gives no ``rate``.
DEFAULT_RATE = "600/hour"
#: Where a template offers the reader the way out; the checker asks for it in every language.
UNSUBSCRIBE_NAME = "unsubscribe_url"
#: Field types a ``language`` field may have: its value is a locale code (en, ru).
LANGUAGE_TYPES = ("choice", "text")


def rate_of(spec: Mapping) -> RateLimit:
    """The step's throttle (its ``rate``, else the default)."""
    found = RateLimit.parse(str(spec.get("rate") or DEFAULT_RATE))
    assert found is not None, "checked when the process loaded"
    return found


def _path_field(compiler: WorkflowCompiler, entity: Entity | None, dotted, where, subject, what):
    """The field a path of this record's ends at (through lookups), or None (reported)."""
    if entity is None:
        compiler.add(
            where,
            subject,
            f"mass_email: {what}: this path starts at the record; the process needs entity:",
        )
        return None
    try:
        field, _ = resolve_path(entity, str(dotted), compiler.entity_of)
    except FilterError as exc:
        if not compiler.follows_on(entity, exc):
            compiler.add(where, subject, f"mass_email: {what}: {exc}")
        return None
    return field


def _own_field(compiler, audience: Entity, name, types, where, subject, what):
    """A field of the audience's own (no path), of one of ``types``."""
    f = audience.fields.get(name)
    if f is None:
        compiler.add(
            where,
            subject,
            f"mass_email: {what}: {audience.name} has no field {name!r}{did_you_mean(name, audience.fields)}",
        )
        return None
    if f.type not in types:
        compiler.add(
            where,
            subject,
            f"mass_email: {what}: {audience.name}.{name} is a {f.type} field (expected {' or '.join(types)})",
        )
        return None
    return f


def check_mass_email(compiler: WorkflowCompiler, spec: Mapping, at, entity: Entity | None, subject):
    """False when a problem was reported; else the constant filter's tree (or None)."""
    ok = True
    audience = compiler.entities.get(spec["entity"])
    if audience is None:
        compiler.unknown_entity(spec["entity"], _vpos(spec, "entity", at), subject, "mass_email: ")
        return False
    if not any(key in spec for key in ("list", "saved_filter", "filter")):
        compiler.add(
            at,
            subject,
            "mass_email: name who gets it: list: (a many-to-many field), saved_filter: (a json "
            "field holding a filter) or filter: (a condition); with none it would email everyone",
        )
        return False
    if "list" in spec:
        where = _vpos(spec, "list", at)
        f = _path_field(compiler, entity, spec["list"], where, subject, "list")
        if f is None:
            ok = False
        elif f.type != "many_to_many" or f.target != audience.name:
            ok = False
            compiler.add(
                where,
                subject,
                f"mass_email: list: {spec['list']} must be a many-to-many field to {audience.name} (it is a {f.type} field"
                + (f" to {f.target}" if f.type == "many_to_many" else "")
                + ")",
            )
    if "saved_filter" in spec:
        where = _vpos(spec, "saved_filter", at)
        f = _path_field(compiler, entity, spec["saved_filter"], where, subject, "saved_filter")
        if f is None:
            ok = False
        elif f.type != "json":
            ok = False
            compiler.add(
                where,
                subject,
                f"mass_email: saved_filter: {spec['saved_filter']} must be a json field holding a filter over {audience.name} (it is a {f.type} field)",
            )
    tree = None
    if spec.get("filter") is not None:
        try:
            tree = parse_filter(spec["filter"], audience, compiler.entity_of)
        except FilterError as exc:
            ok = False
            if not compiler.follows_on(audience, exc):
                compiler.add(_vpos(spec, "filter", at), subject, f"mass_email: filter: {exc}")
    if not _own_field(
        compiler, audience, spec["email"], ("email",), _vpos(spec, "email", at), subject, "email"
    ):
        ok = False
    consent = _own_field(
        compiler,
        audience,
        spec["consent"],
        ("boolean",),
        _vpos(spec, "consent", at),
        subject,
        "consent",
    )
    if consent is None:
        ok = False
    elif not consent.writable:
        ok = False
        compiler.add(
            _vpos(spec, "consent", at),
            subject,
            f"mass_email: consent: {audience.name}.{consent.name} is computed or read-only, so the unsubscribe link could not clear it",
        )
    if spec.get("language") is not None and not _own_field(
        compiler,
        audience,
        spec["language"],
        LANGUAGE_TYPES,
        _vpos(spec, "language", at),
        subject,
        "language",
    ):
        ok = False
    if spec.get("rate") is not None and RateLimit.parse(str(spec["rate"])) is None:
        ok = False
        compiler.add(
            _vpos(spec, "rate", at),
            subject,
            f"mass_email: rate: expected emails per second, minute, hour or day, such as 600/hour (got {spec['rate']!r})",
        )
    where = _vpos(spec, "template", at)
    if compiler._check_template_ref(spec["template"], entity, where, subject):
        template = compiler.templates[spec["template"]]
        for locale, text in template.body.texts if template.body else ():
            if UNSUBSCRIBE_NAME not in text:
                ok = False
                compiler.add(
                    where,
                    subject,
                    f"mass_email: template {spec['template']!r} ({locale or 'body'}) must offer the way out: put {{{{ {UNSUBSCRIBE_NAME} }}}} in its body",
                )
        if not template.body:
            ok = False
            compiler.add(
                where,
                subject,
                f"mass_email: template {spec['template']!r} has no body for {{{{ {UNSUBSCRIBE_NAME} }}}}",
            )
    else:
        ok = False
    log = spec.get("log")
    if log is not None:
        log_at = _vpos(spec, "log", at)
        target = compiler.entities.get(log["entity"])
        if target is None:
            compiler.unknown_entity(
                log["entity"], _vpos(log, "entity", log_at), subject, "mass_email: log: "
            )
            return False
        if not compiler._check_values(
            log["values"], target, _vpos(log, "values", log_at), subject, entity
        ):
            ok = False
        for name in log.get("unique") or ():
            if name not in log["values"]:
                ok = False
                compiler.add(
                    _vpos(log, "unique", log_at),
                    subject,
                    f"mass_email: log: unique: {name!r} is not among the values the log record is given",
                )
    return tree if ok else False
