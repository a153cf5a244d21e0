"""What process templates see: the record (lookups load lazily), old values, today, now,
step results, and how a rendered template becomes a field value.

A template that is exactly one expression (``"{{ record.owner }}"``) evaluates to the
value itself, so an empty field stays empty and a number stays a number; anything else
renders to text, which the records service then coerces like any typed input.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from typing import Any

from jinja2 import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import concat

from ..metadata import Catalog
from ..metadata.expressions import Today, environment
from ..metadata.formats import Formats

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)


class RememberingFormats(Formats):
    """A reader's formats that remember the dates and times they formatted: a worker
    formats the same moments again and again (reminders fall due on round hours, a burst
    of timers shares its due time), and Babel's formatting was a tenth of a reminder's
    cost.  Bounded: the memory is emptied when it grows past ``LIMIT`` entries."""

    __slots__ = ("_memo",)
    LIMIT = 4096

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._memo: dict = {}

    def _remembered(self, kind: str, value, format, compute) -> str:
        # only moments and their text: 1 and True are one key, and would read alike
        if type(value) not in _MOMENTS:
            return compute(value, format)
        try:
            key = (kind, value, format)
            found = self._memo.get(key)
        except TypeError:  # an unhashable format: formatted as is
            return compute(value, format)
        if found is None:
            if len(self._memo) >= self.LIMIT:
                self._memo.clear()
            found = self._memo[key] = compute(value, format)
        return found

    def date(self, value, format: str = "medium") -> str:
        return self._remembered("date", value, format, super().date)

    def datetime(self, value, format: str | None = None) -> str:
        return self._remembered("datetime", value, format, super().datetime)

    def time(self, value, format: str = "short") -> str:
        return self._remembered("time", value, format, super().time)


_MOMENTS = frozenset({dt.datetime, dt.date, Today, str})


@lru_cache(maxsize=64)
def formats_for(locale: str, tz: str, currency: str | None, base_url: str) -> Formats:
    """One reader's formats per worker (not per batch), so what they remember lasts."""
    return RememberingFormats(locale, tz, currency, base_url)


def days(n) -> dt.timedelta:
    return dt.timedelta(days=n)


class UserView:
    """A user in a template: ``user.name``, ``user.email``; as text, its id."""

    __slots__ = ("id", "name", "email", "locale", "time_zone")

    def __init__(self, row: Mapping):
        self.id = row["id"]
        self.name = row.get("name")
        self.email = row.get("email")
        self.locale = row.get("locale")
        self.time_zone = row.get("time_zone")

    def __str__(self) -> str:
        return str(self.id)

    def __int__(self) -> int:
        return int(self.id)

    def __eq__(self, other):
        return self.id == (other.id if isinstance(other, UserView) else other)

    def __hash__(self):
        return hash(self.id)


class Withheld(Exception):  # noqa: N818 - what happened, as the other refusals are named
    """A template read what its reader may not read (a hidden field, a record outside their
    scope): the whole rendering is dropped, since even a condition on the value tells it."""


class RecordView:
    """A record in a template: fields by attribute, lookups followed on demand; as text, its id.

    With a ``reader`` (xrm/workflow/readers.py: a message's recipient), the fields hidden
    from them raise ``Withheld``, and so does every use of a record they may not read
    (``sealed``), its id included; a lookup leads to a view sealed for them when they may
    not read its target; a rollup they see over their share of the children is read as
    they see it (not in a ``past`` view: the values before a change)."""

    def __init__(
        self,
        catalog: Catalog,
        entity: str,
        values: Mapping,
        loader: Loader,
        reader=None,
        *,
        sealed: bool = False,
        past: bool = False,
    ):
        self._catalog = catalog
        self._entity = model = catalog.entity(entity)
        self._values = values
        self._loader = loader
        self._reader = reader
        self._sealed = sealed
        self._past = past  # values of before a change: a reader's share is of now
        self._withheld = (
            frozenset(model.fields) if sealed else reader.withheld(model) if reader else ()
        )
        # Plain values are found by ordinary attribute lookup (templates read them a lot);
        # lookups and users, followed on demand, go through __getattr__, and so do the
        # values withheld from the reader.
        # (``id`` among them is harmless: the property wins over the instance's dict)
        attributes = self.__dict__
        attributes.update(values)
        for name in _lazy_fields(catalog, model):
            attributes.pop(name, None)
        for name in self._withheld:
            attributes.pop(name, None)

    @property
    def id(self):
        if self._sealed:
            raise Withheld(self._entity.name)
        return self._values.get("id")

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        values = self._values
        if name not in values and name not in self._entity.fields:
            raise AttributeError(name)
        if name in self._withheld:
            if self._sealed or self._past:
                raise Withheld(f"{self._entity.name}.{name}")
            return self._reader.share(self._entity, self._values.get("id"), name)
        value = values.get(name)
        if value is None:
            return None
        f = self._entity.fields.get(name)
        kind = (
            "user"
            if name in ("owner", "created_by", "updated_by")
            else (f.type if f is not None else None)
        )
        if kind == "user":
            user = self._loader.user(value)
            return UserView(user) if user else value
        if kind == "lookup":
            target = f.params.get("to")
            related = self._loader.record(target, value)
            if not related:
                return value
            reader = self._reader
            sealed = reader is not None and not reader.may_read(target, related)
            return RecordView(self._catalog, target, related, self._loader, reader, sealed=sealed)
        return value

    __getitem__ = __getattr__

    def __str__(self) -> str:
        return str(self.id)

    def __int__(self) -> int:
        return int(self.id)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __eq__(self, other):
        return self.id == (other.id if isinstance(other, RecordView) else other)

    def __hash__(self):
        return hash((self._entity.name, self.id))


_VIEWS = (RecordView, UserView)


def _lazy_fields(catalog: Catalog, entity) -> frozenset[str]:
    return catalog.artifact(
        ("template-lazy-fields", entity.name),
        lambda: frozenset(
            {"owner", "created_by", "updated_by"}
            | {n for n, f in entity.fields.items() if f.type in ("user", "lookup")}
        ),
    )


class Loader:
    """Related records and users for templates and conditions, cached for one batch."""

    def __init__(
        self,
        load_record: Callable[[str, Any], dict | None],
        load_user: Callable[[Any], dict | None],
    ):
        self._load_record = load_record
        self._load_user = load_user
        self.records: dict = {}
        self.users: dict = {}

    def record(self, entity: str, ident) -> dict | None:
        key = (entity, ident)
        if key not in self.records:
            self.records[key] = self._load_record(entity, ident)
        return self.records[key]

    def user(self, ident) -> dict | None:
        if ident not in self.users:
            self.users[ident] = self._load_user(ident)
        return self.users[ident]


class _Sandbox(ImmutableSandboxedEnvironment):
    """The definitions' sandbox (``expressions.environment``: same globals, filters and
    undefined), reading a record's or user's public attributes without the sandbox's
    checks: they are field values, which the checks would let through anyway, and the
    checks cost more than the rest of a reminder's rendering."""

    def getattr(self, obj, attribute):
        if type(obj) in _VIEWS and attribute[:1] != "_":
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass  # the sandbox's own answer: a StrictUndefined error
        return super().getattr(obj, attribute)


@cache
def sandbox() -> _Sandbox:
    base = environment()
    env = _Sandbox(undefined=base.undefined, autoescape=base.autoescape)
    env.globals = dict(base.globals)
    env.filters = dict(base.filters)
    env.tests = dict(base.tests)
    return env


@lru_cache(maxsize=4096)
def compile_template(source: str):
    return sandbox().from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str):
    match = _SINGLE.match(source)
    if not match:
        return None
    return sandbox().compile_expression(match["expr"], undefined_to_none=False)


def is_template(value) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render_text(source: str, context: Mapping) -> str:
    """Render with ``context`` as the template's whole namespace (it carries the sandbox's
    globals, see ``base_context``): Template.render would merge the globals into a new
    dict on every call, which costs more than rendering a short message."""
    if not is_template(source):
        return source
    template = compile_template(source)
    try:
        env = template.environment
        # the context is the template's whole namespace: no globals to merge or list
        return concat(
            template.root_render_func(
                env.context_class(env, context, template.name, template.blocks)
            )
        )
    except Exception:
        return template.environment.handle_exception()


def base_context() -> dict:
    """The sandbox's globals (round, min, max...), for contexts rendered shared."""
    return dict(sandbox().globals)


def plain(value):
    """A template's result as a value the records service accepts."""
    if isinstance(value, RecordView | UserView):
        return value.id
    if isinstance(value, Today):
        return dt.date(value.year, value.month, value.day)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def render_value(value, context: Mapping):
    """A step's value: constants pass through; a one-expression template keeps its type."""
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    if not is_template(value):
        return value
    expression = _expression(value)
    if expression is not None:
        result = expression(**context)
        if isinstance(result, Undefined):  # StrictUndefined: raise its error
            str(result)
        return plain(result)
    return render_text(value, context)
