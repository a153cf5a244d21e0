"""JSON Schema pieces of the workflow definitions: processes (one schema per step kind,
so an unknown key is reported against its own step), SLAs, calendars and templates."""

from __future__ import annotations

STRING = {"type": "string"}
DURATION = {"type": "string", "description": "a length of time: 15m, 2h, 3d, 1w, 1h30m"}
OFFSET = {"type": "string", "description": "a signed offset: -3d, +2h, -15m"}
TEMPLATE = {"type": "string", "description": "a Jinja template over record, old, today, now, vars"}
NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
RECIPIENTS = {
    "description": "owner, initiator, a user or email field (account.owner), role:NAME, team:NAME, user:EMAIL, email:ADDRESS",
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
}
SECRET = {
    "description": "a secret: a literal string, or {env: VARIABLE}",
    "anyOf": [
        {"type": "string", "minLength": 8},
        {
            "type": "object",
            "properties": {"env": {"type": "string"}},
            "required": ["env"],
            "additionalProperties": False,
        },
    ],
}
VALUES = {"type": "object", "description": "field -> a constant or a template", "minProperties": 1}
ONE_OR_MANY = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
}
STEPS_REF = {"type": "array", "items": {"$ref": "#/$defs/step"}}

STEP_KINDS: dict[str, dict] = {
    "set": VALUES,
    "create": {
        "type": "object",
        "properties": {"entity": STRING, "values": VALUES, "as": NAME},
        "required": ["entity", "values"],
        "additionalProperties": False,
    },
    "update": {
        "type": "object",
        "properties": {"related": STRING, "values": VALUES, "if": {"$ref": "#/$defs/filter"}},
        "required": ["related", "values"],
        "additionalProperties": False,
    },
    "notify": {
        "type": "object",
        "properties": {
            "to": RECIPIENTS,
            "template": STRING,
            "channels": {"type": "array", "items": {"enum": ["app", "email"]}, "minItems": 1},
        },
        "required": ["to", "template"],
        "additionalProperties": False,
    },
    "assign": {
        "type": "object",
        "properties": {
            "to": RECIPIENTS,
            "method": {"enum": ["round_robin", "least_loaded"]},
            "field": STRING,
            "load": {"$ref": "#/$defs/filter"},
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"if": {"$ref": "#/$defs/filter"}, "to": RECIPIENTS},
                    "required": ["to"],
                    "additionalProperties": False,
                },
                "minItems": 1,
            },
        },
        "additionalProperties": False,
    },
    "activity": {
        "type": "object",
        "properties": {
            "entity": STRING,
            "subject": TEMPLATE,
            "due": {"type": "string", "description": "an offset from now (+3d), or a template"},
            "owner": {"type": "string", "description": "a recipient (default: the record's owner)"},
            "reminder": DURATION,
            "values": VALUES,
            "as": NAME,
        },
        "required": ["subject"],
        "additionalProperties": False,
    },
    "wait": {
        "type": "object",
        "properties": {
            "for": DURATION,
            "until": {"type": "string", "description": "a date or datetime field"},
            "offset": OFFSET,
            "time": {"type": "string", "description": "time of day for a date field (HH:MM)"},
            "condition": {"$ref": "#/$defs/filter"},
            "timeout": DURATION,
        },
        "minProperties": 1,
        "additionalProperties": False,
    },
    "approval": {
        "type": "object",
        "properties": {
            "approvers": RECIPIENTS,
            "require": {"enum": ["all", "any"]},
            "template": STRING,
            "timeout": DURATION,
        },
        "required": ["approvers"],
        "additionalProperties": False,
    },
    "webhook": {
        "type": "object",
        "properties": {
            "url": TEMPLATE,
            "method": {"enum": ["POST", "PUT", "PATCH", "DELETE", "GET"]},
            "secret": SECRET,
            "body": {"description": "a mapping of templates (default: the record)"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout": DURATION,
            "retries": {"type": "integer", "minimum": 0, "maximum": 20},
            "as": NAME,
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    "start": {
        "type": "object",
        "properties": {
            "process": STRING,
            "record": {
                "type": "string",
                "description": "a template giving the record id (default: this record)",
            },
            "wait": {"type": "boolean"},
        },
        "required": ["process"],
        "additionalProperties": False,
    },
    "rescore": {
        "type": "string",
        "description": "an entity with a scoring model: every record it scores is scored again (its decay)",
    },
    "send_report": {
        "type": "object",
        "description": "emails a report or a dashboard to users, each run as its reader (their scope and field rules)",
        "properties": {
            "report": {"type": "string", "description": "a report of the catalog"},
            "dashboard": {
                "type": "string",
                "description": "a dashboard of the catalog, instead of report: (exactly one of the two)",
            },
            "to": {
                **RECIPIENTS,
                "description": "users only: owner, initiator, a user field, role:NAME, team:NAME, user:EMAIL",
            },
            "parameters": {
                "type": "object",
                "description": "report parameter (a dashboard's global filter) -> value: a period (this_month), me (each reader), a team, option values",
                "additionalProperties": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    ]
                },
            },
            "formats": {
                "type": "array",
                "description": "table (an HTML table in the message), xlsx (a workbook attached); default both",
                "items": {"enum": ["table", "xlsx"]},
                "minItems": 1,
                "uniqueItems": True,
            },
            "subject": {"$ref": "#/$defs/label"},
        },
        "required": ["to"],
        "additionalProperties": False,
    },
    "mass_email": {
        "type": "object",
        "description": "emails every record of an audience that consents, throttled through the outbox, each with its own unsubscribe link ({{ unsubscribe_url }})",
        "properties": {
            "entity": {"type": "string", "description": "the audience's entity (contact)"},
            "list": {
                "type": "string",
                "description": "a many-to-many field of this record, or a path to one through lookups (segment.contacts): the records it links",
            },
            "saved_filter": {
                "type": "string",
                "description": "a json field of this record, or a path to one (segment.criteria), holding a filter over the audience's entity",
            },
            "filter": {"$ref": "#/$defs/filter"},
            "email": {"type": "string", "description": "the audience's email field"},
            "consent": {
                "type": "string",
                "description": "the audience's boolean field: only records where it is true get the email; the unsubscribe link sets it to false",
            },
            "language": {
                "type": "string",
                "description": "the audience's field holding each reader's language (en, ru); default: the organization's",
            },
            "template": {
                "type": "string",
                "description": "a message template; member is the reader's record, record this record, unsubscribe_url their link",
            },
            "rate": {
                "type": "string",
                "description": "at most this many emails per second, minute, hour or day leave the outbox (default 600/hour)",
            },
            "log": {
                "type": "object",
                "description": "a record created for each email queued (a campaign member)",
                "properties": {
                    "entity": STRING,
                    "values": VALUES,
                    "unique": {
                        "type": "array",
                        "items": STRING,
                        "minItems": 1,
                        "description": "fields whose values, when a record already holds them, mean that reader was emailed already",
                    },
                },
                "required": ["entity", "values"],
                "additionalProperties": False,
            },
            "as": NAME,
        },
        "required": ["entity", "email", "consent", "template"],
        "additionalProperties": False,
    },
    "stop": {"const": True},
    "if": {"$ref": "#/$defs/filter"},
}
#: Branches (lists of steps) each step kind may carry beside its own key.
BRANCHES = {
    "if": ("then", "else"),
    "wait": ("timed_out",),
    "approval": ("approved", "rejected", "timed_out"),
}
COMMON_STEP_KEYS = {"name": NAME, "label": {"$ref": "#/$defs/label"}}


def step_schema(kind: str) -> dict:
    properties = {kind: STEP_KINDS[kind], **COMMON_STEP_KEYS}
    for branch in BRANCHES.get(kind, ()):
        properties[branch] = STEPS_REF
    required = [kind, "then"] if kind == "if" else [kind]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def step_defs() -> dict:
    defs = {f"step_{kind}": step_schema(kind) for kind in STEP_KINDS}
    defs["step"] = {
        "type": "object",
        "description": "one step: exactly one of " + ", ".join(STEP_KINDS),
        "minProperties": 1,
        "allOf": [
            {"if": {"required": [kind]}, "then": {"$ref": f"#/$defs/step_{kind}"}}
            for kind in STEP_KINDS
        ],
    }
    return defs


TRIGGERS = {
    "type": "object",
    "description": "what starts the process (one or more)",
    "properties": {
        "created": {"const": True},
        "updated": {"anyOf": [{"const": True}, {"type": "array", "items": STRING, "minItems": 1}]},
        "deleted": {"const": True},
        "enter_stage": ONE_OR_MANY,
        "exit_stage": ONE_OR_MANY,
        "schedule": {
            "anyOf": [
                {
                    "type": "string",
                    "description": "a cron expression: minute hour day month weekday",
                },
                {
                    "type": "object",
                    "properties": {"cron": STRING, "time_zone": STRING},
                    "required": ["cron"],
                    "additionalProperties": False,
                },
            ]
        },
        "date": {
            "type": "object",
            "properties": {
                "field": {"type": "string", "description": "a date or datetime field"},
                "offset": OFFSET,
                "before": {
                    "type": "string",
                    "description": "a duration field subtracted from the date",
                },
                "time": {
                    "type": "string",
                    "description": "time of day for a date field (HH:MM, default 09:00)",
                },
            },
            "required": ["field"],
            "additionalProperties": False,
        },
        "manual": {
            "anyOf": [
                {"const": True},
                {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "roles": {"type": "array", "items": STRING},
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "webhook": {
            "anyOf": [
                {"const": True},
                {
                    "type": "object",
                    "properties": {"secret": SECRET, "signature": {"enum": ["url", "hmac"]}},
                    "additionalProperties": False,
                },
            ]
        },
    },
    "minProperties": 1,
    "additionalProperties": False,
}


def _document(title, properties, required, defs, name):
    from .schemas import _document as document

    return document(title, properties, required, defs, name)


def process_schema(defs: dict, steps: dict | None = None) -> dict:
    """The process document; ``steps`` replaces the step list's schema (the loader checks
    each step against its own kind's schema instead, for precise messages)."""
    return _document(
        "Business process (trigger -> condition -> steps)",
        {
            "process": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 64},
            "entity": STRING,
            "label": {"$ref": "#/$defs/label"},
            "description": {"$ref": "#/$defs/label"},
            "enabled": {"type": "boolean"},
            "on": TRIGGERS,
            "if": {"$ref": "#/$defs/filter"},
            "was": {"$ref": "#/$defs/filter"},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
            "steps": steps or {**STEPS_REF, "minItems": 1},
        },
        ["process", "on", "steps"],
        {**defs, **step_defs()},
        "process.schema.json",
    )


def sla_schema(defs: dict, steps: dict | None = None) -> dict:
    targets = {
        "type": "object",
        "description": "priority value (or * for any other) -> business time allowed",
        "additionalProperties": DURATION,
        "minProperties": 1,
    }
    steps = steps or STEPS_REF
    return _document(
        "Service level agreement",
        {
            "sla": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 60},
            "entity": STRING,
            "label": {"$ref": "#/$defs/label"},
            "calendar": {
                "type": "string",
                "description": "a business-hours calendar (default: around the clock)",
            },
            "if": {"$ref": "#/$defs/filter"},
            "priority_field": STRING,
            "pause": {"$ref": "#/$defs/filter"},
            "metrics": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "done": {"$ref": "#/$defs/filter"},
                        "targets": targets,
                    },
                    "required": ["done", "targets"],
                    "additionalProperties": False,
                },
                "minProperties": 1,
            },
            "warning": {
                "type": "string",
                "description": "75% of the target, or a duration before the deadline",
            },
            "on_warning": steps,
            "on_breach": steps,
            "enabled": {
                "type": "boolean",
                "description": "false switches the SLA off: no clock starts, running ones are cancelled",
            },
        },
        ["sla", "entity", "metrics"],
        {**defs, **step_defs()},
        "sla.schema.json",
    )


def calendars_schema(defs: dict) -> dict:
    from .processes import DAYS

    hours = {
        "type": "array",
        "items": {"type": "string", "pattern": "^\\d{1,2}:\\d{2}-\\d{1,2}:\\d{2}$"},
    }
    week = {
        "type": "object",
        "properties": {d: hours for d in (*DAYS, "weekdays")},
        "additionalProperties": False,
    }
    return _document(
        "Business-hours calendars",
        {
            "calendars": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "time_zone": STRING,
                        "week": week,
                        "holidays": {
                            "type": "object",
                            "properties": {"country": STRING, "subdivision": STRING},
                            "required": ["country"],
                            "additionalProperties": False,
                        },
                        "closed": {"type": "array", "items": {"type": ["string"]}},
                        "special": {"type": "object", "additionalProperties": hours},
                    },
                    "required": ["time_zone", "week"],
                    "additionalProperties": False,
                },
            }
        },
        ["calendars"],
        defs,
        "calendars.schema.json",
    )


def templates_schema(defs: dict) -> dict:
    return _document(
        "Message templates (notifications and emails)",
        {
            "templates": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "entity": {
                            "type": "string",
                            "description": "the record's entity (checks record.* names)",
                        },
                        "subject": {"$ref": "#/$defs/label"},
                        "body": {"$ref": "#/$defs/label"},
                    },
                    "required": ["subject"],
                    "additionalProperties": False,
                },
            }
        },
        ["templates"],
        defs,
        "templates.schema.json",
    )


def published(defs: dict) -> list[dict]:
    return [process_schema(defs), sla_schema(defs), calendars_schema(defs), templates_schema(defs)]


def shells(defs: dict) -> dict[str, dict]:
    """Loader validators: steps are checked one by one later, against their own kind."""
    loose = {"type": "array", "items": {"type": "object"}}
    return {
        "process": process_schema(defs, {**loose, "minItems": 1}),
        "sla": sla_schema(defs, loose),
        "calendars": calendars_schema(defs),
        "templates": templates_schema(defs),
    }
