"""Labels: a plain string or a map of locale to text, resolved for one user's locale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_LOCALE = "en"


@dataclass(frozen=True, slots=True)
class Label:
    texts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, value, fallback: str = "") -> Label:
        if isinstance(value, Label):
            return value
        if isinstance(value, Mapping):
            return cls(tuple((str(k), str(v)) for k, v in value.items()))
        if value is None or value == "":
            return cls(((DEFAULT_LOCALE, fallback),)) if fallback else cls(())
        return cls(((DEFAULT_LOCALE, str(value)),))

    @classmethod
    def humanize(cls, name: str) -> Label:
        return cls(((DEFAULT_LOCALE, name.replace("_", " ").capitalize()),))

    def get(self, locale: str | None = None) -> str:
        """The text for a locale: exact, then its language, then English, then any."""
        texts = dict(self.texts)
        if locale:
            if locale in texts:
                return texts[locale]
            language = locale.replace("-", "_").split("_")[0]
            if language in texts:
                return texts[language]
        if DEFAULT_LOCALE in texts:
            return texts[DEFAULT_LOCALE]
        return next(iter(texts.values()), "")

    def as_dict(self) -> dict[str, str]:
        return dict(self.texts)

    def __str__(self) -> str:
        return self.get()

    def __bool__(self) -> bool:
        return bool(self.texts)
