"""JSON Schemas (draft 2020-12) for every definition kind, built from the field registry.

The same pieces serve two ends: the published files under ``xrm/metadata/schemas/`` (for
editor completion through the YAML language server) and the validators the loader runs.
The loader validates a field against its own type's schema, so an unknown key is reported
against that type ("max_lenght is not a key of text fields; did you mean max_length?").
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from .duplicates import schema as duplicates_schema
from .fieldtypes import FIELD_TYPES, ROLLUP_AGGREGATES
from .schemacheck import Compiler, SchemaValidator
from .scoring import schema as scoring_schema

SCHEMA_DIR = Path(__file__).parent / "schemas"
BASE_URL = "https://xrm.dev/schemas/"
NAME_PATTERN = "^[a-z][a-z0-9_]*$"
VERSION_PATTERN = "^\\d+\\.\\d+(\\.\\d+)?([.-]?[a-z0-9.]+)?$"

LABEL = {
    "description": "A text, or a map of locale to text",
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z]{2}(_[A-Z]{2})?$"},
            "additionalProperties": {"type": "string"},
            "minProperties": 1,
        },
    ],
}

FILTER = {
    "description": "A filter-language tree: [field, op, value] leaves and all/any/not nodes",
    "anyOf": [
        {
            "type": "array",
            "minItems": 2,
            "maxItems": 3,
            "prefixItems": [{"type": "string"}, {"type": "string"}],
        },
        {
            "type": "object",
            "properties": {"all": {"type": "array", "items": {"$ref": "#/$defs/filter"}}},
            "required": ["all"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"any": {"type": "array", "items": {"$ref": "#/$defs/filter"}}},
            "required": ["any"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"not": {"$ref": "#/$defs/filter"}},
            "required": ["not"],
            "additionalProperties": False,
        },
    ],
}

OPTION = {
    "anyOf": [
        {"type": "string", "pattern": NAME_PATTERN},
        {
            "type": "object",
            "properties": {
                "value": {"type": "string", "pattern": NAME_PATTERN},
                "label": {"$ref": "#/$defs/label"},
                "color": {"type": "string"},
            },
            "required": ["value"],
            "additionalProperties": False,
        },
    ]
}

ROLLUP = {
    "type": "object",
    "properties": {
        "children": {"type": "string"},
        **{agg: {"type": "string"} for agg in ROLLUP_AGGREGATES if agg != "count"},
        "count": {"const": True},
        "filter": {"$ref": "#/$defs/filter"},
    },
    "required": ["children"],
    "minProperties": 2,
    "maxProperties": 3,
    "additionalProperties": False,
}

COMMON_FIELD_KEYS = {
    "type": {"enum": sorted(FIELD_TYPES)},
    "label": {"$ref": "#/$defs/label"},
    "help": {"$ref": "#/$defs/label"},
    "required": {"type": "boolean"},
    "unique": {"type": "boolean"},
    "index": {"type": "boolean"},
    "searchable": {"type": "boolean", "description": "included in full-text search"},
    "read_only": {"type": "boolean"},
    "default": {"description": "a constant, or current_user / today / now"},
    "renamed_from": {
        "type": "string",
        "pattern": NAME_PATTERN,
        "description": "the field's name in an earlier version: its column is renamed, data kept",
    },
}

COMPUTED_KEYS = {
    "formula": {"type": "string", "description": "Jinja expression over the record's fields"},
    "rollup": {"$ref": "#/$defs/rollup"},
}


def field_schema(type_name: str) -> dict:
    kind = FIELD_TYPES[type_name]
    properties = dict(COMMON_FIELD_KEYS)
    properties["type"] = {"const": type_name}
    required = ["type", *kind.required_params]
    if kind.computable:
        properties.update(COMPUTED_KEYS)
    if type_name == "rollup":
        properties["rollup"] = COMPUTED_KEYS["rollup"]
        required.append("rollup")
    properties.update(kind.params)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


#: A sort order as views and reports write it: ``[[field or path, asc|desc], ...]``.
SORT = {
    "type": "array",
    "items": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"enum": ["asc", "desc"]}],
        "minItems": 2,
        "maxItems": 2,
    },
}


def _defs() -> dict:
    defs = {"label": LABEL, "filter": FILTER, "option": OPTION, "rollup": ROLLUP, "sort": SORT}
    for name in sorted(FIELD_TYPES):
        defs[f"field_{name}"] = field_schema(name)
    defs["field"] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": sorted(FIELD_TYPES)}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/field_{name}"},
            }
            for name in sorted(FIELD_TYPES)
        ],
    }
    return defs


def _fields_block(field_ref: dict) -> dict:
    return {
        "type": "object",
        "propertyNames": {"pattern": NAME_PATTERN, "maxLength": 50},
        "additionalProperties": field_ref,
    }


def _entity_properties(field_ref: dict) -> dict:
    return {
        "label": {"$ref": "#/$defs/label"},
        "plural": {"$ref": "#/$defs/label"},
        "description": {"$ref": "#/$defs/label"},
        "icon": {"type": "string"},
        "title": {"type": "string", "description": "the field that names a record"},
        "search": {"type": "array", "items": {"type": "string"}},
        "audit": {"type": "boolean"},
        "navigation": {
            "type": "boolean",
            "description": "false: a helper entity (lines, members) left out of the "
            "navigation; its records stay reachable from the parent's related lists, by "
            "their address and from the admin area",
        },
        "fields": _fields_block(field_ref),
        "validations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": NAME_PATTERN,
                        "maxLength": 60,
                        "description": "names the rule in its entity; the customization layer "
                        "changes or switches off a rule by it (validation: ENTITY.NAME)",
                    },
                    "when": {"$ref": "#/$defs/filter"},
                    "message": {"$ref": "#/$defs/label"},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "enabled": {
                        "type": "boolean",
                        "description": "false: the rule is not checked (default true)",
                    },
                },
                "required": ["when", "message"],
                "additionalProperties": False,
            },
        },
        "stages": {
            "type": "object",
            "properties": {
                "field": {"type": "string"},
                "steps": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": ["object", "null"],
                        "properties": {
                            "probability": {"type": "number", "minimum": 0, "maximum": 100},
                            "closed": {"enum": ["won", "lost"]},
                            "requires": {"type": "array", "items": {"type": "string"}},
                            "next": {"type": "array", "items": {"type": "string"}},
                            "roles": {"type": "array", "items": {"type": "string"}},
                        },
                        "additionalProperties": False,
                    },
                },
                "probability_field": {
                    "type": "string",
                    "description": "a field set to the stage's probability when the stage changes",
                },
            },
            "required": ["field", "steps"],
            "additionalProperties": False,
        },
        "indexes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": NAME_PATTERN},
                    "fields": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "unique": {"type": "boolean"},
                },
                "required": ["fields"],
                "additionalProperties": False,
            },
        },
        "duplicates": duplicates_schema(),
        "scoring": scoring_schema(),
    }


def _document(title: str, properties: dict, required: list[str], defs: dict, name: str) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE_URL + name,
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "$defs": defs,
    }


def solution_schema(defs: dict) -> dict:
    return _document(
        "Solution manifest (solution.yaml)",
        {
            "solution": {"type": "string", "pattern": NAME_PATTERN},
            "version": {"type": "string", "pattern": VERSION_PATTERN},
            "label": {"$ref": "#/$defs/label"},
            "description": {"$ref": "#/$defs/label"},
            "author": {"type": "string"},
            "license": {"type": "string"},
            "icon": {"type": "string"},
            "depends": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {"type": "string", "description": "version range"},
            },
            "customization": {
                "type": "boolean",
                "description": "an exported customization layer: installing it adds its "
                "documents to the target's customization layer instead of a pack",
            },
        },
        ["solution", "version"],
        defs,
        "solution.schema.json",
    )


def entity_schema(defs: dict, field_ref: dict) -> dict:
    properties = {"entity": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 50}}
    properties.update(_entity_properties(field_ref))
    return _document(
        "Entity definition", properties, ["entity", "fields"], defs, "entity.schema.json"
    )


def extend_schema(defs: dict, field_ref: dict) -> dict:
    properties = {"extend": {"type": "string", "pattern": NAME_PATTERN}}
    properties.update(
        {
            k: v
            for k, v in _entity_properties(field_ref).items()
            if k
            in (
                "label",
                "plural",
                "description",
                "navigation",
                "fields",
                "validations",
                "indexes",
                "search",
                "duplicates",
            )
        }
    )
    properties["remove"] = {
        "type": "array",
        "items": {"type": "string"},
        "description": "fields to hide (their columns and data are kept until purged)",
    }
    return _document(
        "Entity extension (adds fields to an entity of another solution)",
        properties,
        ["extend"],
        defs,
        "extend.schema.json",
    )


def option_sets_schema(defs: dict) -> dict:
    return _document(
        "Option sets",
        {
            "option_sets": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "options": {
                            "type": "array",
                            "items": {"$ref": "#/$defs/option"},
                            "minItems": 1,
                        },
                    },
                    "required": ["options"],
                    "additionalProperties": False,
                },
            }
        },
        ["option_sets"],
        defs,
        "option_sets.schema.json",
    )


def forms_schema(defs: dict) -> dict:
    form_field = {
        "anyOf": [
            {"type": "string", "description": "a field name"},
            {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "label": {"$ref": "#/$defs/label"},
                    "visible_if": {"$ref": "#/$defs/filter"},
                    "required_if": {"$ref": "#/$defs/filter"},
                    "read_only": {"type": "boolean"},
                    "widget": {"type": "string"},
                },
                "required": ["field"],
                "additionalProperties": False,
            },
        ]
    }
    section = {
        "type": "object",
        "properties": {
            "label": {"$ref": "#/$defs/label"},
            "columns": {
                "type": "array",
                "items": {"type": "array", "items": form_field},
                "minItems": 1,
                "maxItems": 4,
                "description": "each column is a list of fields, top to bottom",
            },
            "related": {
                "type": "string",
                "description": "a children or many_to_many field shown as a list",
            },
            "visible_if": {"$ref": "#/$defs/filter"},
        },
        "additionalProperties": False,
    }
    tab = {
        "type": "object",
        "properties": {
            "label": {"$ref": "#/$defs/label"},
            "sections": {"type": "array", "items": section, "minItems": 1},
        },
        "required": ["sections"],
        "additionalProperties": False,
    }
    added_tab = {
        "type": "object",
        "properties": {
            **tab["properties"],
            "tab": {
                "type": "string",
                "description": "add the sections to the extended form's tab with this "
                "English label (a tab whose label matches one of the form's joins it too)",
            },
            "after": {
                "type": "string",
                "description": "put this new tab after the tab with this English label "
                "(default: at the end)",
            },
        },
        "required": ["sections"],
        "additionalProperties": False,
    }
    names = {"type": "array", "items": {"type": "string"}}
    return _document(
        "Forms (tabs -> sections -> columns of fields) and extensions of other packs' forms",
        {
            "forms": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "entity": {"type": "string"},
                        "extend": {
                            "type": "string",
                            "description": "the name of a form of a pack this one depends on: "
                            "this entry adds its tabs to that form",
                        },
                        "label": {"$ref": "#/$defs/label"},
                        "default": {"type": "boolean", "description": "the entity's main form"},
                        "quick_create": {
                            "type": "boolean",
                            "description": "the entity's quick-create form: the short form "
                            "a lookup opens in a dialog to create a record (never the main form)",
                        },
                        "print": {
                            "type": "boolean",
                            "description": "the entity's printable document: what a record's "
                            "Print page shows (never the main form); a child entity's print "
                            "form gives the columns of its rows under a printed parent",
                        },
                        "left_out": {
                            **names,
                            "description": "fields kept off the form on purpose: extensions "
                            "and the generated tab do not add them (the form editor writes it)",
                        },
                        "tabs": {"type": "array", "minItems": 1},
                    },
                    "required": ["tabs"],
                    "additionalProperties": False,
                    "if": {"required": ["extend"]},
                    "then": {
                        "properties": {
                            "extend": {"type": "string"},
                            "entity": {
                                "type": "string",
                                "description": "optional; the extended form's entity",
                            },
                            "tabs": {"items": added_tab},
                        },
                        "additionalProperties": False,
                    },
                    "else": {"properties": {"tabs": {"items": tab}}, "required": ["entity"]},
                },
            }
        },
        ["forms"],
        defs,
        "forms.schema.json",
    )


def views_schema(defs: dict) -> dict:
    column_list = {"type": "array", "items": {"type": "string"}}
    return _document(
        "Views (lists, kanban boards, calendars)",
        {
            "views": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "entity": {"type": "string"},
                        "label": {"$ref": "#/$defs/label"},
                        "kind": {"enum": ["list", "kanban", "calendar", "tree"]},
                        "columns": column_list,
                        "filter": {"$ref": "#/$defs/filter"},
                        "sort": {"$ref": "#/$defs/sort"},
                        "quick_filters": column_list,
                        "group_by": {"type": "string"},
                        "card": column_list,
                        "date_field": {"type": "string"},
                        "end_field": {"type": "string"},
                        "parent": {"type": "string"},
                    },
                    "required": ["entity"],
                    "additionalProperties": False,
                },
            }
        },
        ["views"],
        defs,
        "views.schema.json",
    )


#: ``validation: opportunity.lost_needs_reason``: the entity and the rule's name.
VALIDATION_KEY_PATTERN = "^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$"


def validation_schema(defs: dict) -> dict:
    """A change to one named validation rule, made in the customization layer."""
    return _document(
        "Validation rule change (customization layer)",
        {
            "validation": {
                "type": "string",
                "pattern": VALIDATION_KEY_PATTERN,
                "maxLength": 120,
                "description": "ENTITY.NAME of the rule changed",
            },
            "when": {"$ref": "#/$defs/filter"},
            "message": {"$ref": "#/$defs/label"},
            "fields": {"type": "array", "items": {"type": "string"}},
            "enabled": {"type": "boolean", "description": "false switches the rule off"},
        },
        ["validation"],
        defs,
        "validation.schema.json",
    )


SCOPES = ["none", "own", "account", "team", "all"]


def roles_schema(defs: dict) -> dict:
    scope = {"enum": SCOPES}
    return _document(
        "Security roles",
        {
            "roles": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "label": {"$ref": "#/$defs/label"},
                        "description": {"$ref": "#/$defs/label"},
                        "admin": {"type": "boolean", "description": "full access, may customize"},
                        "permissions": {
                            "type": "object",
                            "description": "entity (or * for every entity) -> scope per action",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "create": scope,
                                    "read": scope,
                                    "update": scope,
                                    "delete": scope,
                                    "own": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "minItems": 1,
                                        "uniqueItems": True,
                                        "description": "the user fields that make a record "
                                        "the user's own (for the own and team scopes); "
                                        "default [owner]",
                                    },
                                    "account": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "minItems": 1,
                                        "uniqueItems": True,
                                        "description": "the lookup paths to the account that "
                                        "make a record the user's account's (for the account "
                                        "scope); default [account], or the record itself on "
                                        "the account entity",
                                    },
                                },
                                "additionalProperties": False,
                            },
                        },
                        "fields": {
                            "type": "object",
                            "description": "entity -> field -> hidden | read_only",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": {"enum": ["hidden", "read_only"]},
                            },
                        },
                    },
                    "additionalProperties": False,
                },
            }
        },
        ["roles"],
        defs,
        "roles.schema.json",
    )


@cache
def published_schemas() -> dict[str, dict]:
    """File name -> schema, as written to ``xrm/metadata/schemas/``."""
    defs = _defs()
    field_ref = {"$ref": "#/$defs/field"}
    schemas = [
        solution_schema(defs),
        entity_schema(defs, field_ref),
        extend_schema(defs, field_ref),
        option_sets_schema(defs),
        views_schema(defs),
        roles_schema(defs),
        forms_schema(defs),
        validation_schema(defs),
    ]
    from .processes import published as workflow_schemas

    schemas += workflow_schemas(defs)
    from .reports import reports_schema

    schemas.append(reports_schema(defs, _document))
    from .dashboards import dashboards_schema

    schemas.append(dashboards_schema(defs, _document))
    from .pack_data import pack_data_schema

    schemas += [pack_data_schema(defs, _document, kind) for kind in ("data", "demo")]
    from .scenarios import scenarios_schema

    schemas.append(scenarios_schema(defs, _document))
    from .wizards import wizards_schema

    schemas.append(wizards_schema(defs, _document))
    from .web_forms import web_forms_schema

    schemas.append(web_forms_schema(defs, _document))
    return {s["$id"].removeprefix(BASE_URL): s for s in schemas}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_published(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in published_schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


class Validators:
    """Validators the loader uses: document shells plus one per field type.  Made once per
    process; each compiles its check the first time it is used."""

    def __init__(self):
        defs = _defs()
        loose_field = {"type": "object"}
        shells = {
            "solution": solution_schema(defs),
            "entity": entity_schema(defs, loose_field),
            "extend": extend_schema(defs, loose_field),
            "option_sets": option_sets_schema(defs),
            "views": views_schema(defs),
            "roles": roles_schema(defs),
            "forms": forms_schema(defs),
            "validation": validation_schema(defs),
        }
        from .processes import shells as workflow_shells

        shells.update(workflow_shells(defs))
        from .reports import reports_schema

        shells["reports"] = reports_schema(defs, _document)
        from .dashboards import dashboards_schema

        shells["dashboards"] = dashboards_schema(defs, _document)
        from .pack_data import pack_data_schema

        shells.update({k: pack_data_schema(defs, _document, k) for k in ("data", "demo")})
        from .scenarios import scenarios_schema

        shells["tests"] = scenarios_schema(defs, _document)
        from .wizards import wizards_schema

        shells["wizards"] = wizards_schema(defs, _document)
        from .web_forms import web_forms_schema

        shells["web_forms"] = web_forms_schema(defs, _document)
        shared = Compiler(defs)  # one compiled label, filter... for every document and field
        self.documents = {k: SchemaValidator(v, shared) for k, v in shells.items()}
        self.fields = {
            name: SchemaValidator({**field_schema(name), "$defs": defs}, shared)
            for name in FIELD_TYPES
        }


@cache
def validators() -> Validators:
    return Validators()
