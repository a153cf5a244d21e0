"""The first-time setup as a wizard of the wizard engine (``xrm.forms.wizard``): the
organization (name, locale, currency, time zone), its working hours, the administrator,
the modules (what they need added and said), sample data, then a review.  The browser
walks it (``xrm/web/setup_page.py``); ``xrm setup`` asks the same answers in a terminal,
and both end in ``run_setup`` with the same checks.  No Flask here.

The administrator's password is not an input of the wizard: a run's state travels in the
page, signed but readable, so the password is asked on the page that starts the
installation and goes straight to ``run_setup``."""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import available_timezones

from babel import Locale
from babel.numbers import list_currencies

from ..forms.wizard import WizardRun
from ..metadata.labels import Label
from ..metadata.model import Option
from ..metadata.wizards import Wizard, WizardInput, WizardStep, build_wizard, plain_field
from . import setup as S

NAME = "setup"
#: The locales offered; the interface itself speaks English and Russian.
LOCALES = ("en", "en_GB", "ru", "de", "fr", "es", "it", "pt_BR", "nl", "pl", "tr", "uk", "kk")
CURRENCIES_FIRST = ("USD", "EUR", "RUB", "GBP")
DAY_LABELS = {
    "mon": ("Monday", "Понедельник"),
    "tue": ("Tuesday", "Вторник"),
    "wed": ("Wednesday", "Среда"),
    "thu": ("Thursday", "Четверг"),
    "fri": ("Friday", "Пятница"),
    "sat": ("Saturday", "Суббота"),
    "sun": ("Sunday", "Воскресенье"),
}


def _label(en: str, ru: str) -> Label:
    return Label.of({"en": en, "ru": ru})


def _option(value: str, en: str, ru: str | None = None) -> Option:
    return Option(value=value, label=_label(en, ru or en), color=None)


def _input(name, type_name, en, ru, *, required=False, default=None, help=None, **params):
    label = _label(en, ru)
    return WizardInput(
        name=name,
        field=plain_field(NAME, name, type_name, label, **params),
        label=label,
        required=required,
        default=default,
        help=_label(*help) if help else None,
    )


def _locale_options() -> list[Option]:
    out = []
    for code in LOCALES:
        locale = Locale.parse(code)
        out.append(_option(code, locale.get_display_name("en"), locale.get_display_name("ru")))
    return out


def _currency_options() -> list[Option]:
    codes = sorted(list_currencies())
    ordered = [*CURRENCIES_FIRST, *(c for c in codes if c not in CURRENCIES_FIRST)]
    en, ru = Locale.parse("en"), Locale.parse("ru")
    return [
        _option(
            code,
            f"{code} — {en.currencies.get(code, code)}",
            f"{code} — {ru.currencies.get(code, code)}",
        )
        for code in ordered
        if code in en.currencies
    ]


def setup_wizard(offered: Mapping[str, S.Module]) -> Wizard:
    """The setup wizard over the modules this server offers."""
    modules = [
        _option(name, m.text("label", "en"), m.text("label", "ru")) for name, m in offered.items()
    ]
    defaults = [m for m in S.DEFAULT_MODULES if m in offered]
    steps = [
        WizardStep(
            "organization",
            _label("Organization", "Организация"),
            inputs=(
                _input(
                    "organization",
                    "text",
                    "Organization",
                    "Организация",
                    required=True,
                    default="My company",
                    max_length=200,
                ),
                _input(
                    "locale",
                    "choice",
                    "Locale (dates, numbers)",
                    "Региональные настройки",
                    required=True,
                    default="en",
                    choices=_locale_options(),
                ),
                _input(
                    "currency",
                    "choice",
                    "Currency",
                    "Валюта",
                    required=True,
                    default="USD",
                    choices=_currency_options(),
                ),
                _input(
                    "time_zone",
                    "choice",
                    "Time zone",
                    "Часовой пояс",
                    required=True,
                    default="UTC",
                    choices=[_option(z, z) for z in sorted(available_timezones())],
                ),
            ),
        ),
        WizardStep(
            "hours",
            _label("Working hours", "Рабочее время"),
            inputs=(
                _input(
                    "work_days",
                    "multi_choice",
                    "Working days",
                    "Рабочие дни",
                    default=["mon", "tue", "wed", "thu", "fri"],
                    choices=[_option(d, *DAY_LABELS[d]) for d in S.WEEKDAYS],
                    help=(
                        "Service targets and reminders count business time on these days.",
                        "Сроки обслуживания и напоминания считают рабочее время в эти дни.",
                    ),
                ),
                _input("work_start", "time", "Opens at", "Начало дня", default="09:00"),
                _input("work_end", "time", "Closes at", "Конец дня", default="18:00"),
            ),
        ),
        WizardStep(
            "administrator",
            _label("Administrator", "Администратор"),
            inputs=(
                _input(
                    "admin_name",
                    "text",
                    "Name",
                    "Имя",
                    required=True,
                    default="Administrator",
                    max_length=200,
                ),
                _input(
                    "admin_email",
                    "email",
                    "Email (signs in with it)",
                    "Email (для входа)",
                    required=True,
                ),
            ),
        ),
        WizardStep(
            "modules",
            _label("Modules", "Модули"),
            inputs=(
                _input(
                    "modules",
                    "multi_choice",
                    "Modules",
                    "Модули",
                    required=True,
                    default=defaults,
                    choices=modules,
                ),
                _input(
                    "sample_data",
                    "boolean",
                    "Add sample data to try it out",
                    "Добавить демонстрационные данные",
                    default=False,
                ),
            ),
        ),
        WizardStep("review", _label("Review", "Проверка"), review=True),
    ]
    return build_wizard(NAME, _label("Set up", "Настройка"), steps, finish=_no_finish)


def _no_finish(context):  # pragma: no cover - setup runs through run_setup, not a unit of work
    raise RuntimeError("the setup wizard is finished by run_setup")


def submit(
    run: WizardRun, posted: Mapping, offered: Mapping[str, S.Module]
) -> dict[str, list[str]]:
    """Submit the current step, then the checks beyond each input's type (the rules of
    ``xrm setup``): hours in order, modules that exist.  On any error the run stays on
    the step, with what was typed kept."""
    step = run.current
    errors = run.submit(posted)
    if errors:
        return errors
    values = run.visible_values()
    try:
        if step == "hours" and values.get("work_days"):
            S.check_working_hours(
                values["work_days"], _hm(values["work_start"]), _hm(values["work_end"])
            )
        if step == "modules":
            S.check_modules(values.get("modules") or (), offered)
        if step == "organization":
            S.check_organization(values.get("organization") or "")
    except S.SetupError as exc:
        run.current = step
        run.completed = [s for s in run.completed if s != step]
        field = {"hours": "work_end", "modules": "modules", "organization": "organization"}[step]
        return {field: [str(exc)]}
    return {}


def _hm(value) -> str:
    return value.strftime("%H:%M") if hasattr(value, "strftime") else str(value or "")


def answers(
    run: WizardRun, offered: Mapping[str, S.Module], password: str | None
) -> S.SetupAnswers:
    """The run's values as the answers ``run_setup`` takes (modules with what they need)."""
    values = run.visible_values()
    chosen = list(values.get("modules") or ())
    modules, _added = S.with_dependencies(chosen, offered)
    return S.SetupAnswers(
        organization=S.check_organization(values.get("organization") or ""),
        locale=values.get("locale") or "en",
        currency=values.get("currency") or "USD",
        time_zone=values.get("time_zone") or "UTC",
        admin_email=S.check_email(values.get("admin_email") or ""),
        admin_name=values.get("admin_name") or "Administrator",
        admin_password=password or None,
        modules=tuple(modules),
        sample_data=bool(values.get("sample_data")),
        work_days=tuple(values.get("work_days") or ()) or None,
        work_start=_hm(values.get("work_start")) or "09:00",
        work_end=_hm(values.get("work_end")) or "18:00",
    )


def added_modules(run: WizardRun, offered: Mapping[str, S.Module]) -> dict[str, list[str]]:
    """Modules the choice needs that were not ticked, with the ones that need them."""
    chosen = list(run.visible_values().get("modules") or ())
    return S.with_dependencies(chosen, offered)[1]
