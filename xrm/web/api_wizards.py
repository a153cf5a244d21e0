"""Wizards in the REST API: ``GET /api/v1/wizards`` lists the wizards the caller may run,
``GET /api/v1/wizards/{name}?from=lead:7`` describes one (its steps and inputs, the
values they start with, and each pick input's candidates: the likely duplicates first),
and ``POST /api/v1/wizards/{name}`` runs one in a single request: ``{"from": "lead:7",
"inputs": {...}}``.  Every visible step's inputs are checked as the browser's Next
checks them, then the finish runs in one transaction as the caller (the engine is
``xrm.forms.wizard``, the same the pages use): a bad input is a 422 naming the step and
the input, a record the wizard does not apply to (a lead already converted) or one changed
meanwhile is a 409, and in every failure nothing is written.  Authentication and CSRF are
the API's (``guard_api``)."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, g, request, url_for

from ..forms.wizard import WizardFailed, WizardRefused, WizardRun, WizardUnavailable
from ..metadata.problems import did_you_mean
from ..metadata.wizards import Wizard, WizardInput
from ..storage.records import ALL_KEY
from . import current_store, openapi
from .api import guard_api, json_object, json_response, locale
from .problems import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, Problem, validation_failed
from .routing import parse_id

bp = Blueprint("api_wizards", __name__, url_prefix=openapi.API_PREFIX)

guard_api(bp)

#: Problem type of a record the wizard does not apply to (``open_from.if``).
NOT_APPLICABLE = "urn:xrm:problem:wizard-not-applicable"


def _runnable(catalog, principal) -> dict[str, Wizard]:
    return {
        n: w for n, w in catalog.wizards.items() if w.may_run(principal.roles, principal.is_admin)
    }


def _wizard_or_404(name: str) -> Wizard:
    shown = _runnable(g.catalog, g.principal)
    wizard = shown.get(name)
    if wizard is None:
        # one the caller may not run answers as one that does not exist
        raise Problem(404, f"unknown wizard {name!r}{did_you_mean(name, shown)}", type=NOT_FOUND)
    return wizard


def _origin(wizard: Wizard, text) -> tuple[str, int] | None:
    """``entity:id`` of the record the wizard is opened from (404 unless readable)."""
    if text is None or text == "":
        if wizard.open_from.records and not wizard.open_from.lists and not wizard.open_from.menu:
            raise Problem(
                400,
                f"wizard {wizard.name!r} runs on a record: give from as ENTITY:ID"
                f" ({' or '.join(wizard.open_from.records)})",
                type=BAD_REQUEST,
            )
        return None
    if not isinstance(text, str):
        raise Problem(400, "from must be text: ENTITY:ID", type=BAD_REQUEST)
    entity, _, raw = text.partition(":")
    ident = parse_id(raw)
    if ident is None:
        raise Problem(400, f"from: expected ENTITY:ID, not {text!r}", type=BAD_REQUEST)
    if entity not in wizard.open_from.records:
        allowed = ", ".join(wizard.open_from.records) or "no record"
        raise Problem(
            400,
            f"wizard {wizard.name!r} is not opened from {entity} records (it is from {allowed})",
            type=BAD_REQUEST,
        )
    return entity, ident


def _start(wizard: Wizard, origin) -> WizardRun:
    principal = g.principal
    try:
        return WizardRun.start(
            wizard,
            current_store(),
            principal,
            origin=origin,
            locale=principal.locale or "en",
            tz=principal.tz or "UTC",
        )
    except WizardUnavailable as exc:
        raise _not_applicable(exc) from None


def _not_applicable(exc: WizardUnavailable) -> Problem:
    return Problem(409, exc.label.get(locale()), type=NOT_APPLICABLE)


# ------------------------------------------------------------------------ description
def _input_json(item: WizardInput, step: str) -> dict:
    f = item.field
    out = {
        "name": item.name,
        "label": item.label.get(locale()),
        "step": step,
        "type": "pick" if item.pick else f.type,
        "required": item.required,
    }
    if item.pick:
        out["entity"] = item.pick
        out["or_create"] = item.or_create
    elif f.type in ("lookup", "user"):
        out["to"] = f.params.get("to") or "user"
    if f.choices:
        out["choices"] = [o.value for o in f.choices]
    return out


def _wizard_json(wizard: Wizard) -> dict:
    where = wizard.open_from
    return {
        "name": wizard.name,
        "label": wizard.label.get(locale()),
        "description": wizard.description.get(locale()) if wizard.description else None,
        "open_from": {"menu": where.menu, "list": list(where.lists), "record": list(where.records)},
        "steps": [
            {
                "name": s.name,
                "label": s.label.get(locale()),
                "review": s.review,
                "inputs": [_input_json(i, s.name) for i in s.inputs],
            }
            for s in wizard.steps
        ],
        "href": url_for("api_wizards.describe", name=wizard.name),
    }


def _title(entity, row: Mapping) -> str:
    f = entity.fields.get(entity.title) if entity.title else None
    value = row.get(f.name) if f is not None else None
    if value is None or value == "" or f.type in ("lookup", "user", "any_lookup"):
        return f"#{row['id']}"
    return f.format(value, locale(), g.principal.tz or "UTC")


def _candidates(run: WizardRun) -> dict[str, list[dict]]:
    out = {}
    for item in run.wizard.inputs.values():
        if not item.pick:
            continue
        entity = g.catalog.entity(item.pick)
        rows = run.candidates(item, current_store(), g.principal)
        out[item.name] = [
            {
                "id": r["id"],
                "title": _title(entity, r),
                "matched": list(r.get("_matched") or ()),
                "href": url_for("api.get_record", entity_name=item.pick, record_id=r["id"]),
            }
            for r in rows
        ]
    return out


@bp.get("/wizards")
def list_wizards():
    shown = _runnable(g.catalog, g.principal)
    return json_response({"data": [_wizard_json(w) for _, w in sorted(shown.items())]})


@bp.get("/wizards/<name>")
def describe(name: str):
    """The wizard, the values its inputs start with (``from``: the record it is opened
    from fills them) and each pick input's candidates for those values."""
    wizard = _wizard_or_404(name)
    run = _start(wizard, _origin(wizard, request.args.get("from")))
    body = _wizard_json(wizard)
    body["from"] = f"{run.origin[0]}:{run.origin[1]}" if run.origin else None
    body["values"] = dict(run.values)
    body["candidates"] = _candidates(run)
    return json_response(body)


# ------------------------------------------------------------------------ running
@bp.post("/wizards/<name>")
def run_wizard(name: str):
    wizard = _wizard_or_404(name)
    data = json_object(exact=True)
    unknown = set(data) - {"from", "inputs"}
    if unknown:
        raise Problem(
            400, f"unknown member {sorted(unknown)[0]!r} (expected from, inputs)", type=BAD_REQUEST
        )
    given = data.get("inputs", {})
    if not isinstance(given, dict):
        raise Problem(400, "inputs must be a JSON object", type=BAD_REQUEST)
    inputs = wizard.inputs
    strangers = {
        key: [f"not an input of this wizard{did_you_mean(key, inputs)}"]
        for key in given
        if key not in inputs
    }
    if strangers:
        raise validation_failed(strangers)
    run = _start(wizard, _origin(wizard, data.get("from")))
    store, principal = current_store(), g.principal
    # Each visible step in turn, as Next would take it; a later step may show or hide
    # by what an earlier one accepted.  The last visible step stays current.
    taken: set[str] = set()
    while run.current not in taken:
        step = run.step()
        taken.add(step.name)
        mine = {i.name: given[i.name] for i in step.inputs if i.name in given}
        errors = run.accept(mine, store=store, principal=principal)
        if errors:
            raise validation_failed(errors, step=step.name)
    try:
        outcome = run.finish(store, principal)
    except WizardUnavailable as exc:
        raise _not_applicable(exc) from None
    except WizardRefused as exc:
        raise Problem(403, str(exc), type=FORBIDDEN) from None
    except WizardFailed as exc:
        if exc.conflict:
            raise Problem(409, "; ".join(exc.general), type=CONFLICT) from None
        errors = {k: list(v) for k, v in exc.errors.items()}
        if exc.general:
            errors.setdefault(ALL_KEY, []).extend(exc.general)
        raise validation_failed(errors, step=exc.step) from None
    records = {
        alias: {
            "entity": entity,
            "id": ident,
            "created": alias not in outcome.linked,
            "href": url_for("api.get_record", entity_name=entity, record_id=ident),
        }
        for alias, (entity, ident) in outcome.records.items()
    }
    landing = None
    if outcome.landing is not None:
        entity, ident = outcome.landing
        landing = {
            "entity": entity,
            "id": ident,
            "href": url_for("api.get_record", entity_name=entity, record_id=ident),
        }
    return json_response({"wizard": wizard.name, "records": records, "landing": landing}, 201)


# ------------------------------------------------------------------------ OpenAPI
def document(spec, catalog) -> None:
    """Add the wizards' endpoints to the API's OpenAPI document."""
    names = sorted(catalog.wizards)
    spec.tag({"name": "wizards", "description": "guided multi-step forms, run in one request"})
    text = {"type": "string"}
    spec.components.schema(
        "wizards.Input",
        component={
            "type": "object",
            "required": ["name", "label", "step", "type", "required"],
            "properties": {
                "name": text,
                "label": text,
                "step": text,
                "type": {"type": "string", "description": "a field type, or pick"},
                "required": {"type": "boolean"},
                "entity": {"type": "string", "description": "a pick input: the entity"},
                "or_create": {"type": "boolean", "description": "a pick may be 'new'"},
                "to": {"type": "string", "description": "a lookup input: its entity"},
                "choices": {"type": "array", "items": text},
            },
        },
    )
    spec.components.schema(
        "wizards.Wizard",
        component={
            "type": "object",
            "required": ["name", "label", "open_from", "steps", "href"],
            "properties": {
                "name": text,
                "label": text,
                "description": {"type": ["string", "null"]},
                "open_from": {
                    "type": "object",
                    "properties": {
                        "menu": {"type": ["string", "null"]},
                        "list": {"type": "array", "items": text},
                        "record": {"type": "array", "items": text},
                    },
                },
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "label", "review", "inputs"],
                        "properties": {
                            "name": text,
                            "label": text,
                            "review": {"type": "boolean"},
                            "inputs": {"type": "array", "items": openapi._ref("wizards.Input")},
                        },
                    },
                },
                "href": text,
            },
        },
    )
    candidate = {
        "type": "object",
        "required": ["id", "title", "matched", "href"],
        "properties": {
            "id": {"type": "integer"},
            "title": text,
            "matched": {
                "type": "array",
                "items": text,
                "description": "the duplicate rules it matched (empty: found by candidates)",
            },
            "href": text,
        },
    }
    spec.components.schema(
        "wizards.Described",
        component={
            "allOf": [
                openapi._ref("wizards.Wizard"),
                {
                    "type": "object",
                    "required": ["values", "candidates"],
                    "properties": {
                        "from": {"type": ["string", "null"]},
                        "values": {
                            "type": "object",
                            "description": "input -> the value it starts with",
                        },
                        "candidates": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": candidate},
                            "description": "pick input -> the records it offers, duplicates first",
                        },
                    },
                },
            ]
        },
    )
    record_ref = {
        "type": "object",
        "required": ["entity", "id", "href"],
        "properties": {
            "entity": text,
            "id": {"type": "integer"},
            "created": {"type": "boolean", "description": "false: a picked record, linked"},
            "href": text,
        },
    }
    spec.components.schema(
        "wizards.Run",
        component={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "from": {
                    "type": ["string", "null"],
                    "description": "ENTITY:ID of the record the wizard is opened from",
                },
                "inputs": {
                    "type": "object",
                    "description": "input -> value (a pick: a record id, or 'new'); an input"
                    " left out keeps the value it starts with",
                },
            },
        },
    )
    spec.components.schema(
        "wizards.Outcome",
        component={
            "type": "object",
            "required": ["wizard", "records", "landing"],
            "properties": {
                "wizard": text,
                "records": {"type": "object", "additionalProperties": record_ref},
                "landing": {"oneOf": [record_ref, {"type": "null"}]},
            },
        },
    )
    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", **({"enum": names} if names else {})},
    }
    from_parameter = {
        "name": "from",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "ENTITY:ID of the record the wizard is opened from",
    }
    common = openapi._common_errors(401)  # 400, 401 and 429, as every endpoint
    spec.path(
        path=f"{openapi.API_PREFIX}/wizards",
        operations={
            "get": {
                "tags": ["wizards"],
                "operationId": "list_wizards",
                "summary": "The wizards the caller may run",
                "responses": {
                    "200": {
                        "description": "the wizards",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {
                                            "type": "array",
                                            "items": openapi._ref("wizards.Wizard"),
                                        }
                                    },
                                }
                            }
                        },
                    },
                    **common,
                },
            }
        },
    )
    spec.path(
        path=f"{openapi.API_PREFIX}/wizards/{{name}}",
        parameters=[name_parameter],
        operations={
            "get": {
                "tags": ["wizards"],
                "operationId": "describe_wizard",
                "summary": "A wizard, the values its inputs start with and its candidates",
                "parameters": [from_parameter],
                "responses": {
                    "200": {
                        "description": "the wizard",
                        "content": {
                            "application/json": {"schema": openapi._ref("wizards.Described")}
                        },
                    },
                    **common,
                    "400": openapi._problem("a bad from, or none for a wizard that needs one"),
                    "404": openapi._problem("no such wizard for the caller, or record"),
                    "409": openapi._problem("the wizard does not apply to that record"),
                },
            },
            "post": {
                "tags": ["wizards"],
                "operationId": "run_wizard",
                "summary": "Run a wizard: check every visible step's inputs, then finish",
                "description": "The finish runs in one transaction as the caller; on any "
                "error nothing is written. A 422 names the step (step) and the inputs "
                "(errors; __all__ for what no input explains).",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": openapi._ref("wizards.Run")}},
                },
                "responses": {
                    "201": {
                        "description": "finished: the records created or linked, by alias",
                        "content": {
                            "application/json": {"schema": openapi._ref("wizards.Outcome")}
                        },
                    },
                    **common,
                    "400": openapi._problem("malformed request or a bad from"),
                    "403": openapi._problem("the records service refused the caller"),
                    "404": openapi._problem("no such wizard for the caller, or record"),
                    "409": openapi._problem(
                        "the wizard does not apply to the record, or it changed meanwhile"
                    ),
                    "413": openapi._problem("request body too large"),
                    "415": openapi._problem("request body is not JSON"),
                    "422": openapi._problem("an input is not valid", validation=True),
                },
            },
        },
    )
