"""Template filters that show values the way one reader reads them: dates and times in
their time zone, numbers and money in their locale (Babel), records as absolute links.

A message goes to people in different countries, so the filters do not format for the
organization but for whoever the template is being rendered for: the renderer puts a
``Formats`` into the template's namespace under ``FORMATS`` (the recipient's locale and
zone, the organization's currency and public address), and each filter reads it from
there.  Without one (a formula, a check), the organization-neutral default applies.

    {{ record.starts_at | datetime }}     Dec 5, 2026, 10:00 AM   5 дек. 2026 г., 10:00
    {{ record.close_date | date }}        Mar 20, 2026            20 мар. 2026 г.
    {{ record.amount | money }}           $12,500.00              12 500,00 ₽
    {{ record.probability | number }}     1,234.5                 1 234,5
    {{ record | url }}, {{ link(record.account) }}
    {{ record | form_url('case_survey') }}   a public form about this record, signed
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Babel is imported where a value is formatted: loading a catalog registers these filters
# but formats nothing, and Babel with its locale data is a good part of a cold start.

#: The name a renderer gives its ``Formats`` in a template's namespace.  It starts with an
#: underscore so that no template name, field or step result can shadow it.
FORMATS = "_formats"
DEFAULT_BASE_URL = "http://127.0.0.1:5000"
#: Babel's named formats; anything else given to a filter is a Babel pattern (``d.M.y``).
NAMED = ("short", "medium", "long", "full")


@lru_cache(maxsize=256)
def _locale(name: str | None):
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse((name or "en").replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


@lru_cache(maxsize=256)
def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@lru_cache(maxsize=256)
def _moment_pattern(locale) -> str:
    """A date as ``medium`` and a time as ``short`` (seconds are noise in a message), joined
    the way the locale joins them: ``Dec 5, 2026, 10:00 AM``, ``5 дек. 2026 г., 10:00``."""
    from babel.dates import get_date_format, get_datetime_format, get_time_format

    joined = get_datetime_format("medium", locale=locale)
    date = get_date_format("medium", locale=locale).pattern
    time = get_time_format("short", locale=locale).pattern
    return joined.replace("{1}", date).replace("{0}", time)


class Formats:
    """How values look to one reader: locale, time zone, currency, the public address."""

    __slots__ = ("locale", "tz", "currency", "base_url", "key", "_locale", "_zone")

    def __init__(
        self,
        locale: str | None = "en",
        tz: str | None = "UTC",
        currency: str | None = "USD",
        base_url: str = DEFAULT_BASE_URL,
    ):
        self.locale = locale or "en"
        self.tz = tz or "UTC"
        self.currency = (currency or "USD").upper()
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._locale = _locale(self.locale)
        self._zone = _zone(self.tz)
        #: two readers with the same key see every value the same way
        self.key = (str(self._locale), self._zone.key, self.currency, self.base_url)

    # -- dates and times
    def _moment(self, value) -> dt.datetime | dt.date | None:
        if isinstance(value, str):  # step results and SLA deadlines are kept as ISO text
            text = value.strip()
            try:
                if len(text) == 10:
                    return dt.date.fromisoformat(text)
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            try:
                return value.astimezone(self._zone)
            except OverflowError:  # within a day of year 1 or 9999
                return value
        if isinstance(value, dt.date):
            return value
        return None

    def date(self, value, format: str = "medium") -> str:
        moment = self._moment(value)
        if moment is None:
            return "" if value is None else str(value)
        day = moment.date() if isinstance(moment, dt.datetime) else moment
        from babel.dates import format_date

        return format_date(day, format=format, locale=self._locale)

    def datetime(self, value, format: str | None = None) -> str:
        moment = self._moment(value)
        if moment is None:
            return "" if value is None else str(value)
        if not isinstance(moment, dt.datetime):  # a date has no time to show
            return self.date(moment, format if format in NAMED else "medium")
        from babel.dates import format_datetime

        pattern = format or _moment_pattern(self._locale)
        return format_datetime(moment, format=pattern, tzinfo=moment.tzinfo, locale=self._locale)

    def time(self, value, format: str = "short") -> str:
        moment = self._moment(value)
        if moment is None:
            return "" if value is None else str(value)
        if not isinstance(moment, dt.datetime):  # a date has no time of day
            return ""
        from babel.dates import format_time

        return format_time(moment, format=format, tzinfo=moment.tzinfo, locale=self._locale)

    # -- numbers
    @staticmethod
    def _number(value):
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float | decimal.Decimal):
            return value
        try:
            return decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            return None

    def number(self, value, digits: int | None = None) -> str:
        number = self._number(value)
        if number is None:
            return "" if value is None else str(value)
        from babel.numbers import format_decimal

        if digits is None:
            return format_decimal(number, locale=self._locale)
        pattern = "#,##0" + ("." + "0" * int(digits) if int(digits) > 0 else "")
        return format_decimal(number, format=pattern, locale=self._locale)

    def money(self, value, currency: str | None = None) -> str:
        number = self._number(value)
        if number is None:
            return "" if value is None else str(value)
        from babel.numbers import format_currency

        return format_currency(number, (currency or self.currency).upper(), locale=self._locale)

    # -- addresses
    def url(self, target=None) -> str:
        """The absolute address of a record (a record in a template, an ``{entity, id}``
        mapping such as a ``regarding`` value) or of a path of the web UI."""
        if target is None or target == "":
            return ""
        entity = getattr(target, "_entity", None)
        if entity is not None:  # a record in a template (xrm/workflow/context.py)
            return f"{self.base_url}/r/{entity.name}/{target.id}"
        if isinstance(target, Mapping) and target.get("entity") and target.get("id"):
            return f"{self.base_url}/r/{target['entity']}/{target['id']}"
        text = str(target)
        if text.startswith(("http://", "https://")):
            return text
        return f"{self.base_url}/{text.lstrip('/')}"


@lru_cache(maxsize=1)
def default() -> Formats:
    """The organization-neutral formats (made at first use: Babel's data is not needed to
    load a catalog)."""
    return Formats()


def of(context) -> Formats:
    """The reader's formats in a template's namespace (the default without one)."""
    found = context.get(FORMATS)
    return found if isinstance(found, Formats) else default()


class Link(str):
    """``link`` in a template: as text, the address of the record the process runs on;
    called, the address of another one (``link(record.account)``)."""

    __slots__ = ("formats",)

    def __new__(cls, formats: Formats, record=None):
        text = formats.url(record) if record is not None else formats.base_url
        self = super().__new__(cls, text)
        self.formats = formats
        return self

    def __call__(self, target=None) -> str:
        return self.formats.url(target) if target is not None else str(self)


# ------------------------------------------------------------------------ the filters
def _date(context, value, format="medium"):
    return of(context).date(value, format)


def _datetime(context, value, format=None):
    return of(context).datetime(value, format)


def _time(context, value, format="short"):
    return of(context).time(value, format)


def _number(context, value, digits=None):
    return of(context).number(value, digits)


def _money(context, value, currency=None):
    return of(context).money(value, currency)


def _url(context, value):
    return of(context).url(value)


#: The name a renderer gives the signer of form links (``xrm.storage.form_links``) in a
#: template's namespace; without one (a check, a formula) ``form_url`` gives no address.
FORM_LINKS = "_form_links"


def _form_url(context, value, form):
    """``{{ record | form_url('case_survey') }}``: the address of a public web form about
    this record (``record: link`` forms), signed so that it names this record only."""
    links = context.get(FORM_LINKS)
    if links is None or value is None:
        return ""
    return links.url(of(context), value, str(form))


#: Registered in the sandbox (``expressions.environment``), so ``xrm check`` knows them.
_FILTERS = {
    "form_url": _form_url,
    "date": _date,
    "datetime": _datetime,
    "time": _time,
    "number": _number,
    "money": _money,
    "url": _url,
}


def filters() -> dict:
    """The formatting filters for a Jinja environment, each handed the template's context
    (where ``of`` finds the reader's formats).  Jinja is imported here, when an environment
    is made, and not when a catalog that never renders is loaded."""
    from jinja2 import pass_context

    return {name: pass_context(function) for name, function in _FILTERS.items()}
