"""Pack tests without code: ``tests/*.yaml`` scenarios, their JSON Schema and the checks
that their names (entities, fields, processes, roles, records) exist.  ``xrm solution
test`` runs them (``xrm/solutions/scenarios.py``).

A scenario gives records and a user, does things as that user (create, update, delete,
start a process, press a record's action button, run a wizard with its inputs, let time
pass) and expects field values, records created, notifications,
emails and processes waiting::

    tests:
      - name: a deal in proposal gets a follow-up task
        user: {roles: [sales_rep]}
        at: 2026-03-02T09:00:00          # the clock, in the organization's time zone
        given:
          - {create: account, as: acme, values: {name: Acme}}
        when:
          - {create: opportunity, as: deal, values: {name: Big, account: {ref: acme}}}
          - {update: deal, values: {stage: proposal}}
          - {action: send_quote, for: deal}
          - {wizard: new_customer, inputs: {name: Globex}, names: {account: globex}}
          - {wait: 3d}
        expect:
          - {record: deal, values: {stage: proposal}}
          - {created: task, where: [regarding_id, eq, {ref: deal}], count: 1}
          - {notification: {to: user, contains: Big}}
          - {email: {to: user, subject: Big}}
          - {waiting: proposal_follow_up, for: deal}
"""

from __future__ import annotations

from collections.abc import Mapping

from .model import ACCOUNT_ENTITY
from .problems import Problems, did_you_mean
from .source import Position, node_position, value_position

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
DURATION = {"type": "string", "pattern": r"^\d+\s*(s|m|h|d|w)$"}
#: The verbs of a step, and of an expectation: each item has exactly one.
STEP_VERBS = ("create", "update", "delete", "start", "action", "wizard", "wait")
CHECK_VERBS = ("record", "created", "sees", "notification", "email", "waiting")


def scenarios_schema(defs: dict, document) -> dict:
    values = {"type": "object", "propertyNames": NAME}
    step = {
        "type": "object",
        "properties": {
            "create": NAME,
            "update": NAME,
            "delete": NAME,
            "start": NAME,
            "action": {**NAME, "description": "a manual process's button on a record, pressed"},
            "wizard": {**NAME, "description": "a wizard run to its finish with inputs"},
            "wait": DURATION,
            "as": {**NAME, "description": "a name for the record, to refer to it later"},
            "for": {**NAME, "description": "start, action: the named record it runs on"},
            "values": values,
            "inputs": {
                "type": "object",
                "propertyNames": NAME,
                "description": "wizard: input -> the value typed ({ref: name} for a record)",
            },
            "from": {**NAME, "description": "wizard: the named record it is opened from"},
            "names": {
                "type": "object",
                "propertyNames": NAME,
                "additionalProperties": NAME,
                "description": "wizard: an action's alias -> a name for the record it made",
            },
        },
        "additionalProperties": False,
        "minProperties": 1,
    }
    message = {
        "type": "object",
        "properties": {
            "to": {"type": "string", "description": "user (the scenario's user) or an address"},
            "contains": {"type": "string"},
            "subject": {"type": "string"},
        },
        "additionalProperties": False,
    }
    check = {
        "type": "object",
        "properties": {
            "record": NAME,
            "values": values,
            "created": NAME,
            "where": {"$ref": "#/$defs/filter"},
            "count": {"type": "integer", "minimum": 0},
            "notification": message,
            "email": message,
            "sees": {
                **NAME,
                "description": "the entity whose records the scenario's user reads (their "
                "permissions): count, where, and records (exactly these named ones)",
            },
            "records": {
                "type": "array",
                "items": NAME,
                "uniqueItems": True,
                "description": "sees: the named records the user reads, and no others",
            },
            "waiting": NAME,
            "for": {**NAME, "description": "waiting: the named record the process runs on"},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }
    scenario = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "user": {
                "type": "object",
                "properties": {
                    "roles": {"type": "array", "items": NAME},
                    "teams": {"type": "array", "items": {"type": "string"}},
                    "account": {
                        **NAME,
                        "description": "an account made in given: the user belongs to it "
                        "(the roles' account scope) from the when steps on",
                    },
                },
                "additionalProperties": False,
            },
            "at": {"description": "the clock at the start: a date-time (YAML reads it as one)"},
            "given": {"type": "array", "items": step},
            "when": {"type": "array", "items": step},
            "expect": {"type": "array", "items": check, "minItems": 1},
        },
        "required": ["name", "expect"],
        "additionalProperties": False,
    }
    return document(
        "Pack tests (tests/*.yaml)",
        {"tests": {"type": "array", "items": scenario, "minItems": 1}},
        ["tests"],
        defs,
        "tests.schema.json",
    )


def check_scenarios(
    problems: Problems,
    entities: Mapping,
    processes: Mapping,
    roles: Mapping,
    documents,
    wizards: Mapping | None = None,
) -> None:
    """Names in each (solution, document) that do not exist, at their lines."""
    fallback = Position("<unknown>", 1, 1)
    for _solution, data in documents:
        tests = data.get("tests") or []
        for index, test in enumerate(tests):
            subject = str(test.get("name") or f"test {index + 1}")
            where = node_position(tests, index, fallback)
            for role in (test.get("user") or {}).get("roles") or []:
                if role not in roles:
                    problems.add(
                        where, subject, f"unknown role {role!r}{did_you_mean(role, roles)}"
                    )
            named: dict[str, str] = {}  # record name -> entity
            for part in ("given", "when"):
                steps = test.get(part) or []
                for i, step in enumerate(steps):
                    _check_step(
                        problems,
                        entities,
                        processes,
                        named,
                        subject,
                        step,
                        node_position(steps, i, where),
                        wizards or {},
                    )
                if part == "given":
                    _check_account(problems, test, named, subject, where)
            checks = test.get("expect") or []
            for i, check in enumerate(checks):
                _check_expectation(
                    problems,
                    entities,
                    processes,
                    named,
                    subject,
                    check,
                    node_position(checks, i, where),
                )


def _check_account(problems, test, named, subject, where) -> None:
    """``user: {account: NAME}`` names an account record made in ``given``."""
    user = test.get("user") or {}
    name = user.get("account")
    if name is None:
        return
    at = value_position(user, "account", where)
    if named.get(name) != ACCOUNT_ENTITY:
        found = f"a {named[name]} record" if name in named else "no record made in given"
        problems.add(at, subject, f"user account {name!r} is {found}; name an account")


def _one_verb(problems, item, verbs, subject, at) -> str | None:
    present = [v for v in verbs if v in item]
    if len(present) != 1:
        problems.add(
            at,
            subject,
            f"expected one of {', '.join(verbs)} in each item, found "
            f"{', '.join(present) if present else 'none'}",
        )
        return None
    return present[0]


def _check_step(problems, entities, processes, named, subject, step, at, wizards) -> None:
    verb = _one_verb(problems, step, STEP_VERBS, subject, at)
    if verb == "create":
        entity = _entity(
            problems, entities, step["create"], subject, value_position(step, "create", at)
        )
        if entity is not None:
            _fields(problems, entity, step.get("values") or {}, subject, at)
            if step.get("as"):
                named[step["as"]] = entity.name
    elif verb in ("update", "delete"):
        entity = _named(
            problems, entities, named, step[verb], subject, value_position(step, verb, at)
        )
        if entity is not None and verb == "update":
            _fields(problems, entity, step.get("values") or {}, subject, at)
    elif verb == "start":
        name = step["start"]
        if name not in processes:
            problems.add(
                value_position(step, "start", at),
                subject,
                f"unknown process {name!r}{did_you_mean(name, processes)}",
            )
        if step.get("for"):
            _named(problems, entities, named, step["for"], subject, value_position(step, "for", at))
    elif verb == "action":
        _check_action(problems, entities, processes, named, subject, step, at)
    elif verb == "wizard":
        _check_wizard(problems, entities, wizards, named, subject, step, at)
    if verb not in ("wizard",):
        for key in ("inputs", "from", "names"):
            if key in step:
                problems.add(
                    value_position(step, key, at), subject, f"{key}: only a wizard step takes it"
                )


def _check_action(problems, entities, processes, named, subject, step, at) -> None:
    """A record's action button: a manual process of the named record's entity."""
    name = step["action"]
    process = processes.get(name)
    if process is None:
        problems.add(
            value_position(step, "action", at),
            subject,
            f"unknown process {name!r}{did_you_mean(name, processes)}",
        )
        return
    if not any(t.kind == "manual" for t in process.triggers):
        problems.add(
            value_position(step, "action", at),
            subject,
            f"process {name!r} has no manual trigger: it is no action a user presses "
            "(on: {manual: true})",
        )
    if not step.get("for"):
        problems.add(at, subject, "an action runs on a record: give for: NAME")
        return
    entity = _named(
        problems, entities, named, step["for"], subject, value_position(step, "for", at)
    )
    if entity is not None and process.entity and process.entity != entity.name:
        problems.add(
            value_position(step, "for", at),
            subject,
            f"{step['for']!r} is a {entity.name} record; {name} runs on {process.entity} records",
        )


def _check_wizard(problems, entities, wizards, named, subject, step, at) -> None:
    name = step["wizard"]
    wizard = wizards.get(name)
    if wizard is None:
        problems.add(
            value_position(step, "wizard", at),
            subject,
            f"unknown wizard {name!r}{did_you_mean(name, wizards)}",
        )
        return
    inputs = step.get("inputs") or {}
    for input_name in inputs:
        if input_name not in wizard.inputs:
            problems.add(
                node_position(inputs, input_name, at),
                subject,
                f"wizard {name} has no input {input_name!r}"
                f"{did_you_mean(str(input_name), wizard.inputs)}",
            )
    if step.get("from"):
        where = value_position(step, "from", at)
        entity = _named(problems, entities, named, step["from"], subject, where)
        if entity is not None and entity.name not in wizard.open_from.records:
            problems.add(
                where,
                subject,
                f"wizard {name} is not opened from {entity.name} records"
                + (
                    f" (open_from: record: {', '.join(wizard.open_from.records)})"
                    if wizard.open_from.records
                    else ""
                ),
            )
    aliases = {a.alias: a for a in wizard.actions if a.alias}
    names = step.get("names") or {}
    for alias, record_name in names.items():
        action = aliases.get(alias)
        if action is None:
            problems.add(
                node_position(names, alias, at),
                subject,
                f"wizard {name} has no action named {alias!r} (as:)"
                f"{did_you_mean(str(alias), aliases)}",
            )
        elif action.entity:
            named[record_name] = action.entity
    if not names:  # every alias names the record it made
        for alias, action in aliases.items():
            if action.entity:
                named[alias] = action.entity


def _check_expectation(problems, entities, processes, named, subject, check, at) -> None:
    verb = _one_verb(problems, check, CHECK_VERBS, subject, at)
    if verb == "record":
        entity = _named(
            problems, entities, named, check["record"], subject, value_position(check, "record", at)
        )
        if entity is not None:
            _fields(problems, entity, check.get("values") or {}, subject, at)
    elif verb == "created":
        _entity(problems, entities, check["created"], subject, value_position(check, "created", at))
    elif verb == "sees":
        entity = _entity(
            problems, entities, check["sees"], subject, value_position(check, "sees", at)
        )
        for name in check.get("records") or ():
            seen = _named(
                problems, entities, named, name, subject, value_position(check, "records", at)
            )
            if entity is not None and seen is not None and seen.name != entity.name:
                problems.add(
                    value_position(check, "records", at),
                    subject,
                    f"{name!r} is a {seen.name} record, not a {entity.name}",
                )
    elif verb == "waiting":
        name = check["waiting"]
        if name not in processes:
            problems.add(
                value_position(check, "waiting", at),
                subject,
                f"unknown process {name!r}{did_you_mean(name, processes)}",
            )


def _entity(problems, entities, name, subject, at):
    entity = entities.get(name)
    if entity is None:
        problems.add(at, subject, f"unknown entity {name!r}{did_you_mean(str(name), entities)}")
    return entity


def _named(problems, entities, named, name, subject, at):
    if name not in named:
        problems.add(
            at,
            subject,
            f"no record named {name!r} was created before this "
            f"(give a create step 'as: {name}'){did_you_mean(str(name), named)}",
        )
        return None
    return entities.get(named[name])


def _fields(problems, entity, values: Mapping, subject, at) -> None:
    for name in values:
        if name not in entity.fields and name not in ("id", "owner"):
            problems.add(
                node_position(values, name, at),
                subject,
                f"{name!r} is not a field of {entity.name}{did_you_mean(str(name), entity.fields)}",
            )
