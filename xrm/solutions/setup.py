"""First-time setup: organization, locale, currency, time zone, administrator, modules and
sample data.  The CLI (`xrm setup`) and the web wizard both call ``run_setup``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale, UnknownLocaleError
from babel.numbers import get_currency_name

from ..metadata import discover
from ..metadata.problems import did_you_mean
from ..storage.passwords import MAX_LENGTH, PasswordPolicy
from . import demo

DEFAULT_MODULES = ("core", "sales")


class SetupError(ValueError):
    """A setup answer that cannot be used; the message names the answer and the fix."""


# ------------------------------------------------------------------ one answer each
def check_organization(name: str) -> str:
    name = name.strip()
    if not name:
        raise SetupError("the organization needs a name")
    if len(name) > 200:
        raise SetupError("the organization's name is longer than 200 characters")
    return name


def check_locale(locale: str) -> str:
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError, TypeError):
        raise SetupError(f"locale {locale!r} is not known (expected e.g. en, ru, en_GB)") from None
    return locale


def check_time_zone(zone: str) -> str:
    if zone not in available_timezones():
        raise SetupError(
            f"time zone {zone!r} is not known{did_you_mean(zone, available_timezones())}"
        )
    ZoneInfo(zone)
    return zone


def check_currency(code: str) -> str:
    if len(code) != 3 or get_currency_name(code.upper(), locale="en") == code.upper():
        raise SetupError(f"currency {code!r} is not an ISO 4217 code (expected e.g. USD, EUR, RUB)")
    return code.upper()


def check_email(email: str) -> str:
    local, at, domain = email.strip().partition("@")
    if not (local and at and domain) or " " in email.strip():
        raise SetupError(f"administrator email {email!r} is not an email address")
    return email.strip()


def check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SetupError(
            f"base URL {url!r} is not an http(s) address (expected e.g. https://crm.example.com)"
        )
    return url


def check_modules(modules, available: dict) -> tuple[str, ...]:
    for module in modules:
        if module not in available:
            raise SetupError(
                f"module {module!r} was not found{did_you_mean(module, available)} "
                f"(found: {', '.join(sorted(available))})"
            )
    return tuple(modules)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The calendar setup makes from the working hours.
BUSINESS_CALENDAR = "business_hours"


def check_working_hours(days, start: str, end: str) -> None:
    unknown = [d for d in days if d not in WEEKDAYS]
    if unknown:
        raise SetupError(f"unknown days {', '.join(unknown)} (expected {', '.join(WEEKDAYS)})")
    try:
        opens, closes = (dt.time.fromisoformat(t) for t in (start, end))
    except (TypeError, ValueError):
        raise SetupError(f"working hours {start}-{end}: expected times such as 09:00") from None
    if closes <= opens:
        raise SetupError(f"working hours {start}-{end}: the end must come after the start")


# ------------------------------------------------------------------ modules
@dataclass(frozen=True)
class Module:
    """A pack offered at setup: its name, label and description by language, and the
    packs it needs."""

    name: str
    label: dict
    description: dict
    depends: tuple[str, ...]

    def text(self, what: str, language: str) -> str:
        values = getattr(self, what) or {}
        return values.get(language) or values.get("en") or self.name


def modules_offered(extra_paths=()) -> dict[str, Module]:
    """The packs that can be installed, by name, read from their manifests."""
    from ..metadata.packs import MANIFEST
    from ..metadata.source import YamlSyntaxError, load_yaml

    offered: dict[str, Module] = {}
    for name, folder in discover(extra_paths).items():
        try:
            manifest = load_yaml((folder / MANIFEST).read_text(encoding="utf-8"), str(folder))
        except (OSError, YamlSyntaxError):
            manifest = None  # installing it reports the problem at its line
        if not isinstance(manifest, dict):
            manifest = {}
        offered[name] = Module(
            name=name,
            label=dict(manifest.get("label") or {"en": name}),
            description=dict(manifest.get("description") or {}),
            depends=tuple(manifest.get("depends") or ()),
        )
    return offered


def with_dependencies(chosen, offered: dict[str, Module]) -> tuple[list[str], dict[str, list[str]]]:
    """The modules to install for a choice, each after what it needs, and for every module
    added that was not chosen, the chosen modules that need it (to explain the addition)."""
    order: list[str] = []
    needed_by: dict[str, list[str]] = {}

    def visit(name: str, because: str | None) -> None:
        if because is not None and name not in chosen:
            needed_by.setdefault(name, [])
            if because not in needed_by[name]:
                needed_by[name].append(because)
        if name in order:
            return
        module = offered.get(name)
        for dependency in module.depends if module else ():
            visit(dependency, name)
        if name not in order:
            order.append(name)

    for name in chosen:
        visit(name, None)
    return order, needed_by


@dataclass
class SetupAnswers:
    organization: str = "My company"
    locale: str = "en"
    currency: str = "USD"
    time_zone: str = "UTC"
    admin_email: str = "admin@example.com"
    admin_name: str = "Administrator"
    admin_password: str | None = None  # generated when empty
    modules: tuple[str, ...] = DEFAULT_MODULES
    sample_data: bool = False
    sample_size: int = 25
    # Where people reach the web UI, for links in notifications; None: unchanged.
    base_url: str | None = None
    extra_paths: tuple[str, ...] = field(default_factory=tuple)
    # The password policy of the organization (kept in its settings); None: unchanged.
    password_min_length: int | None = None
    password_deny: tuple[str, ...] | None = None
    # Working hours: the organization's business calendar (SLAs and business time use it);
    # None: no calendar is made.
    work_days: tuple[str, ...] | None = None  # mon ... sun
    work_start: str = "09:00"
    work_end: str = "18:00"

    def check(self, available: dict) -> None:
        """Every answer checked by its own rule (the browser wizard and the prompts of
        ``xrm setup`` ask the same rules one answer at a time)."""
        check_locale(self.locale)
        check_time_zone(self.time_zone)
        check_currency(self.currency)
        check_modules(self.modules, available)
        check_email(self.admin_email)
        if self.base_url is not None:
            check_base_url(self.base_url)
        if self.password_min_length is not None and not 1 <= self.password_min_length <= MAX_LENGTH:
            raise SetupError(f"the minimum password length must be 1 to {MAX_LENGTH}")
        if self.work_days is not None:
            check_working_hours(self.work_days, self.work_start, self.work_end)

    def calendar(self) -> dict | None:
        """The business calendar these answers make (``calendars: {business_hours: ...}``)."""
        if not self.work_days:
            return None
        hours = [f"{self.work_start}-{self.work_end}"]
        return {
            "calendars": {
                BUSINESS_CALENDAR: {
                    "label": {"en": "Business hours", "ru": "Рабочее время"},
                    "time_zone": self.time_zone,
                    "week": {day: hours for day in self.work_days},
                }
            }
        }

    def policy_settings(self) -> dict:
        """The password policy settings these answers set."""
        values: dict = {}
        if self.password_min_length is not None:
            values["password_min_length"] = self.password_min_length
        if self.password_deny is not None:
            values["password_deny"] = sorted(
                {w.strip().lower() for w in self.password_deny if w.strip()}
            )
        return values


@dataclass
class SetupResult:
    installed: list[str]
    admin_email: str
    admin_password: str | None  # only when it was generated (shown once)
    sample_counts: dict[str, int]
    already_done: bool = False
    # the demo's sales team, with passwords (only when the sample data was made)
    demo_users: list[demo.DemoUser] = field(default_factory=list)


def run_setup(store, answers: SetupAnswers, progress=None) -> SetupResult:
    """Bring a database from empty to ready.  Running it again on a set-up database only
    installs modules that are missing; it never duplicates the administrator or samples.
    ``progress`` is called with each stage's name as it starts (the browser shows them)."""
    say = progress or (lambda stage: None)
    available = discover(answers.extra_paths)
    answers.check(available)
    settings = store.settings()
    policy = PasswordPolicy.from_settings({**settings, **answers.policy_settings()})
    if answers.admin_password is not None:
        problems = policy.problems(answers.admin_password, answers.admin_email)
        if problems:
            raise SetupError("the administrator password: " + "; ".join(problems))
    if answers.policy_settings():
        store.save_settings(answers.policy_settings())  # add_user checks against them
    say("modules")
    catalog, _plan = store.install([available[m] for m in answers.modules])
    calendar = answers.calendar()
    present = catalog.calendars.get(BUSINESS_CALENDAR)
    # the answers make the calendar, over a pack's default one (the service pack's SLA
    # counts business_hours), but never over one an administrator made
    if calendar is not None and (present is None or present.solution in catalog.solutions):
        say("calendar")
        catalog, _plan = store.customize_all(
            [("calendars", calendar)], replacing=[("calendars", BUSINESS_CALENDAR)]
        )
    say("administrator")
    generated = None
    admin = store.user_by_email(answers.admin_email)
    if admin is None:
        password = answers.admin_password
        if password is None:
            password = generated = policy.generate(answers.admin_email)
        admin_role = next((r.name for r in catalog.roles.values() if r.admin), None)
        store.add_user(
            answers.admin_email,
            answers.admin_name,
            password=password,
            roles=[admin_role] if admin_role else [],
            locale=answers.locale.split("_")[0],
            time_zone=answers.time_zone,
        )
        admin = store.user_by_email(answers.admin_email)
    counts: dict[str, int] = {}
    team: list[demo.DemoUser] = []
    if answers.sample_data and not settings.get("sample_data"):
        say("sample_data")
        # Sellers and their manager own the samples, so the shipped processes that ask a
        # manager (the deal review) have someone to ask.
        team = demo.people(
            store,
            catalog,
            answers.admin_email.rpartition("@")[2],
            locale=answers.locale,
            time_zone=answers.time_zone,
        )
        # the packs' own sample data (demo/), now that the people to own it exist; the
        # entities it is for get no invented samples
        modules = [available[m] for m in answers.modules]
        catalog, _plan = store.install(modules, demo=True)
        counts = demo.generate(
            store,
            answers.sample_size,
            locale=answers.locale.split("_")[0],
            users=[admin.id, *(member.id for member in team)],
            time_zone=answers.time_zone,
            skip=demo.pack_samples(store.installed_packs(), catalog),
            leave_empty=demo.pack_fields(store.installed_packs(), catalog),
        )
        # the partner portal's users belong to sample partners (made once these exist),
        # and own none of the invented samples: they see their account's records
        team += demo.partner_people(
            store,
            catalog,
            answers.admin_email.rpartition("@")[2],
            locale=answers.locale,
            time_zone=answers.time_zone,
        )
    say("settings")
    if answers.base_url is not None:
        store.save_settings({"base_url": answers.base_url.rstrip("/")})
    store.save_settings(
        {
            "organization": answers.organization,
            "locale": answers.locale,
            "currency": answers.currency.upper(),
            "time_zone": answers.time_zone,
            "modules": sorted(set(answers.modules) | set(settings.get("modules") or ())),
            "sample_data": bool(settings.get("sample_data") or answers.sample_data),
            "setup_done": True,
        }
    )
    return SetupResult(
        installed=list(catalog.solutions),
        admin_email=answers.admin_email,
        admin_password=generated,
        sample_counts=counts,
        already_done=bool(settings.get("setup_done")),
        demo_users=team,
    )
