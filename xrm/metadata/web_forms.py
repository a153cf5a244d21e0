"""Public web form definitions (``web_forms/*.yaml``): their JSON Schema, their
cross-checks against the entity they create records of, and the frozen ``WebForm`` the
catalog holds.

A web form is published at ``/f/<name>`` for visitors who are not signed in (web-to-lead,
web-to-case).  It offers some fields of one entity, sets fixed ``values`` on the record,
and creates it through the records service as the ``submit_as`` user, so the user's
permissions, the entity's validations and its processes apply as to any create.  The
spam protection (a signed form token, a honeypot, a rate limit, an optional captcha) lives
in the web layer (``xrm/web/public_forms.py``); this module says what a form is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .fieldtypes import CoercionError
from .labels import Label
from .model import SYSTEM_COLUMNS, freeze
from .problems import Problems, did_you_mean
from .reports import NamedCompiler
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: The field types a visitor can fill in a public form.  Lookups, users and files are
#: left out on purpose: a visitor may neither browse records nor upload into the system.
FIELD_TYPES = (
    "text",
    "long_text",
    "email",
    "phone",
    "url",
    "integer",
    "decimal",
    "money",
    "percent",
    "date",
    "boolean",
    "choice",
    "multi_choice",
    "rating",
)
#: Rate limit units and their length in seconds.
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RATE_PATTERN = r"^\s*([1-9][0-9]{0,5})\s*(?:/|per)\s*(second|minute|hour|day)\s*$"
ORIGIN_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
DEFAULT_RATE = "10/hour"
#: How long a signed link to a ``record: link`` form stays good (30 days), in seconds.
DEFAULT_LINK_AGE = 30 * 86400
LINK_AGE_PATTERN = r"^\s*([1-9][0-9]{0,3})\s*(h|d|w)\s*$"
LINK_AGE_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
NAME = "^[a-z][a-z0-9_]*$"


@dataclass(frozen=True, slots=True)
class WebFormField:
    """One field a visitor fills; ``label`` None: the entity field's label."""

    name: str
    label: Label | None = None
    required: bool = False
    placeholder: Label | None = None
    help: Label | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    seconds: int
    text: str  # as written, for messages and the admin page

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        match = re.match(RATE_PATTERN, str(text))
        if match is None:
            return None
        return cls(int(match.group(1)), UNITS[match.group(2)], f"{match[1]}/{match[2]}")


@dataclass(frozen=True, slots=True)
class WebForm:
    name: str
    entity: str
    label: Label
    title: Label
    solution: str
    fields: tuple[WebFormField, ...]
    submit_as: str  # the email of the user records are created as (checked at run time)
    values: Mapping[str, Any] = field(default_factory=dict)  # fixed values of every record
    intro: Label | None = None
    submit: Label | None = None  # the button's text (None: "Send")
    success_message: Label | None = None
    success_redirect: str | None = None
    allowed_origins: tuple[str, ...] = ()
    captcha: str | None = None
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit.parse(DEFAULT_RATE))
    enabled: bool = True
    # record: link -- the form changes the record a signed link names (a survey) instead
    # of creating one; such a link is good for ``link_max_age`` seconds
    record_link: bool = False
    link_max_age: int = DEFAULT_LINK_AGE
    position: Position | None = field(default=None, compare=False)

    def field(self, name: str) -> WebFormField | None:
        return next((f for f in self.fields if f.name == name), None)


# ------------------------------------------------------------------------- schema
def web_forms_schema(defs: dict, document) -> dict:
    """The JSON Schema of a ``web_forms:`` document (``document`` is schemas._document)."""
    label = {"$ref": "#/$defs/label"}
    form_field = {
        "anyOf": [
            {"type": "string", "pattern": NAME, "description": "an entity field's name"},
            {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "pattern": NAME},
                    "label": label,
                    "required": {
                        "type": "boolean",
                        "description": "the visitor must fill it (the entity's own "
                        "required fields always are)",
                    },
                    "placeholder": label,
                    "help": label,
                },
                "required": ["field"],
                "additionalProperties": False,
            },
        ]
    }
    success = {
        "type": "object",
        "properties": {
            "message": {**label, "description": "shown after a submission"},
            "redirect": {
                "type": "string",
                "description": "an http(s) address the visitor is sent to instead",
            },
        },
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
    }
    form = {
        "type": "object",
        "properties": {
            "entity": {"type": "string", "description": "the entity a submission creates"},
            "label": {**label, "description": "the form's name on the administration page"},
            "title": {**label, "description": "the heading of the public page"},
            "intro": {**label, "description": "a paragraph under the heading"},
            "submit": {**label, "description": "the button's text (default: Send)"},
            "fields": {"type": "array", "items": form_field, "minItems": 1},
            "values": {
                "type": "object",
                "propertyNames": {"pattern": NAME},
                "description": "fixed values set on every record (source: web_form)",
            },
            "submit_as": {
                "type": "string",
                "description": "the email of the user records are created as",
            },
            "success": success,
            "allowed_origins": {
                "type": "array",
                "items": {"type": "string"},
                "description": "sites (scheme://host[:port]) that may embed the form or "
                "post to it by script",
            },
            "captcha": {
                "type": "string",
                "pattern": NAME,
                "description": "the name of a captcha verifier registered in Python",
            },
            "rate_limit": {
                "type": "string",
                "description": f"submissions per client address (default {DEFAULT_RATE})",
            },
            "enabled": {"type": "boolean"},
            "record": {
                "enum": ["link"],
                "description": "link: the form changes the record a signed link names "
                "({{ record | form_url('NAME') }} in a message) instead of creating one",
            },
            "link_valid_for": {
                "type": "string",
                "description": "how long such a link stays good: 48h, 30d, 8w (default 30d)",
            },
        },
        "required": ["entity", "fields", "submit_as"],
        "additionalProperties": False,
    }
    return document(
        "Public web forms",
        {
            "web_forms": {
                "type": "object",
                "propertyNames": {"pattern": NAME},
                "additionalProperties": form,
            }
        },
        ["web_forms"],
        defs,
        "web_forms.schema.json",
    )


# ------------------------------------------------------------------------- checks
class WebFormCompiler(NamedCompiler):
    """Checks and compiles the web forms of one catalog build."""

    key, noun = "web_forms", "web form"

    def __init__(self, problems: Problems, entities, rejected=frozenset()):
        self.problems = problems
        self.entities = entities
        self.rejected = rejected
        self.layer = ""
        self.raw: dict[str, tuple[Mapping, str, Position]] = {}

    def build_one(self, name, raw, solution, where) -> WebForm | None:
        subject = f"web_forms.{name}"
        before = len(self.problems)

        def fail(at, message):
            self.problems.add(at, subject, message)

        origins = self.build_origins(raw, where, fail)
        success = raw.get("success") or {}
        redirect = success.get("redirect")
        if redirect is not None and not re.match(r"^https?://[^/\s]+", str(redirect)):
            fail(
                _vpos(success, "redirect", where),
                f"success.redirect: expected an http(s) address, such as"
                f" https://www.example.com/thanks (got {redirect!r})",
            )
        if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", str(raw["submit_as"]).strip()):
            fail(
                _vpos(raw, "submit_as", where),
                f"submit_as: expected the email of a user (got {raw['submit_as']!r})",
            )
        rate = RateLimit.parse(raw.get("rate_limit") or DEFAULT_RATE)
        if rate is None:
            fail(
                _vpos(raw, "rate_limit", where),
                "rate_limit: expected submissions per second, minute, hour or day, such as"
                f" 10/hour (got {raw['rate_limit']!r})",
            )
        record_link = raw.get("record") == "link"
        link_age = DEFAULT_LINK_AGE
        if raw.get("link_valid_for") is not None:
            match = re.match(LINK_AGE_PATTERN, str(raw["link_valid_for"]))
            if not record_link:
                fail(
                    _pos(raw, "link_valid_for", where),
                    "link_valid_for: only a form with record: link is opened from a link",
                )
            elif match is None:
                fail(
                    _vpos(raw, "link_valid_for", where),
                    "link_valid_for: expected hours, days or weeks, such as 30d"
                    f" (got {raw['link_valid_for']!r})",
                )
            else:
                link_age = int(match.group(1)) * LINK_AGE_UNITS[match.group(2)]
        entity = self.entities.get(raw["entity"])
        if entity is None:
            if raw["entity"] not in self.rejected:
                fail(
                    _vpos(raw, "entity", where),
                    f"unknown entity {raw['entity']!r}{did_you_mean(raw['entity'], self.entities)}",
                )
            return None
        fields = self.build_fields(entity, raw, where, fail)
        values = self.build_values(entity, raw, where, fail, {f.name for f in fields})
        offered = {f.name for f in fields} | set(values)
        missing = [
            f.name
            for f in entity.fields.values()
            if f.required
            and f.writable
            and f.default is None
            and f.name not in offered
            and not record_link  # the record exists already, with its required values
        ]
        if missing:
            fail(
                _pos(raw, "fields", where),
                f"{entity.name} requires {', '.join(missing)}: put "
                f"{'it' if len(missing) == 1 else 'them'} on the form or in values",
            )
        if len(self.problems) > before:
            return None
        return WebForm(
            name=name,
            entity=entity.name,
            label=Label.of(raw.get("label"), name.replace("_", " ").capitalize()),
            title=Label.of(raw.get("title")) if raw.get("title") else entity.label,
            solution=solution,
            fields=tuple(fields),
            submit_as=str(raw["submit_as"]).strip().lower(),
            values=MappingProxyType(values),
            intro=Label.of(raw["intro"]) if raw.get("intro") else None,
            submit=Label.of(raw["submit"]) if raw.get("submit") else None,
            success_message=Label.of(success["message"]) if success.get("message") else None,
            success_redirect=success.get("redirect"),
            allowed_origins=origins,
            captcha=raw.get("captcha"),
            rate_limit=rate,
            enabled=bool(raw.get("enabled", True)),
            record_link=record_link,
            link_max_age=link_age,
            position=where,
        )

    def build_fields(self, entity, raw, where, fail) -> list[WebFormField]:
        out: list[WebFormField] = []
        block = raw["fields"]
        for index, spec in enumerate(block):
            at = _pos(block, index, where)
            if isinstance(spec, str):
                name, spec = spec, {}
            else:
                name = spec["field"]
                at = _vpos(spec, "field", at)
            problem = self.field_problem(entity, name)
            if problem is None and any(f.name == name for f in out):
                problem = f"field {name!r} is on the form twice"
            if problem:
                fail(at, problem)
                continue
            out.append(
                WebFormField(
                    name=name,
                    label=Label.of(spec["label"]) if spec.get("label") else None,
                    # the entity's own rule stands whatever the form says
                    required=bool(spec.get("required")) or entity.fields[name].required,
                    placeholder=Label.of(spec["placeholder"]) if spec.get("placeholder") else None,
                    help=Label.of(spec["help"]) if spec.get("help") else None,
                )
            )
        return out

    @staticmethod
    def build_origins(raw, where, fail) -> tuple[str, ...]:
        block = raw.get("allowed_origins") or ()
        out = []
        for index, origin in enumerate(block):
            text = str(origin).rstrip("/")
            if not re.match(ORIGIN_PATTERN, text):
                fail(
                    _pos(block, index, where),
                    f"allowed_origins: {origin!r} is not an origin: expected scheme://host[:port]"
                    " with no path, such as https://www.example.com",
                )
                continue
            out.append(text.lower())
        return tuple(dict.fromkeys(out))

    @staticmethod
    def field_problem(entity, name: str, kinds=FIELD_TYPES) -> str | None:
        """Why a visitor may not set this field, or None."""
        if name in SYSTEM_COLUMNS or name == "owner":
            return f"{name!r} is a system field: a visitor may not set it"
        f = entity.fields.get(name)
        if f is None:
            return f"{entity.name} has no field {name!r}{did_you_mean(name, entity.fields)}"
        if f.computed:
            return f"field {name!r} is computed: nobody sets it"
        if f.read_only:
            return f"field {name!r} is read-only: a visitor may not set it"
        if f.type not in kinds:
            return (
                f"field {name!r} is a {f.type} field, which a public form cannot offer"
                f" (expected one of {', '.join(kinds)})"
            )
        return None

    def build_values(self, entity, raw, where, fail, on_form) -> dict[str, Any]:
        block = raw.get("values") or {}
        out: dict[str, Any] = {}
        for name, value in block.items():
            at = _pos(block, name, where)
            f = entity.fields.get(name)
            if name == "owner":
                # the owner is a user; a process assigns it (the record starts as submit_as's)
                problem = "owner is set by the records service or a process, not by a form"
            elif f is None:
                problem = f"{entity.name} has no field {name!r}{did_you_mean(name, entity.fields)}"
            elif f.computed:
                problem = f"field {name!r} is computed: nobody sets it"
            elif f.read_only:
                problem = f"field {name!r} is read-only: a form may not set it"
            elif name in on_form:
                problem = f"field {name!r} is on the form and in values: keep one"
            else:
                problem = None
            if problem is None:
                try:
                    out[name] = freeze(f.kind.coerce(f, value))
                except CoercionError as exc:
                    problem = f"values.{name}: {exc}"
                    at = _vpos(block, name, where)
            if problem:
                fail(at, problem)
        return out


def build_web_forms(problems, entities, documents, layer, rejected=frozenset()):
    """Compile the ``web_forms:`` documents [(solution, data)] of one catalog build."""
    compiler = WebFormCompiler(problems, entities, rejected)
    for solution, data in documents:
        compiler.collect(solution, data, layer)
    return compiler.build()


# ------------------------------------------------------------------------- captcha
class CaptchaRegistry:
    """Captcha verifiers by name, which a form's ``captcha:`` names.

    A verifier is an object with ``verify(posted, address) -> bool`` (``posted``: the
    submitted mapping of names to strings, ``address``: the client's address), and
    optionally ``widget(locale) -> str`` (trusted HTML put into the form before its button)
    and ``sources`` (origins its widget loads scripts and frames from, added to the page's
    Content-Security-Policy).  Verifiers come from ``register(name, verifier)`` or from
    the ``xrm.captcha`` entry-point group (the entry point's name is the captcha's name;
    it loads the verifier object or a class to instantiate).  The platform ships none:
    each service (hCaptcha, Turnstile, reCAPTCHA) needs its own keys and calls out.
    """

    GROUP = "xrm.captcha"

    def __init__(self):
        self._verifiers: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str, verifier) -> None:
        if not callable(getattr(verifier, "verify", None)):
            raise TypeError(f"captcha {name!r}: a verifier needs a verify(posted, address) method")
        self._verifiers[name] = verifier

    def unregister(self, name: str) -> None:
        self._verifiers.pop(name, None)

    def get(self, name: str):
        if name not in self._verifiers and not self._loaded:
            self._load_entry_points()
        return self._verifiers.get(name)

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        self._loaded = True
        for point in entry_points(group=self.GROUP):
            if point.name not in self._verifiers:
                loaded = point.load()
                self.register(point.name, loaded() if isinstance(loaded, type) else loaded)


captchas = CaptchaRegistry()


__all__ = [
    "FIELD_TYPES",
    "CaptchaRegistry",
    "RateLimit",
    "WebForm",
    "WebFormField",
    "build_web_forms",
    "captchas",
    "web_forms_schema",
]
