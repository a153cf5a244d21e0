"""Duplicate rules: their definition (``duplicates:`` on an entity), the normalizers that
turn a value into a matching key, and the cross-checks of a rule against its entity.

A rule is a list of fields, each compared after a normalizer (``email``, ``phone``,
``name``, ``domain``, ``text`` or ``exact``); a rule with a ``fuzzy`` item compares that
one field by similarity instead of equality.  Storage keeps one hidden key column per rule
(``xrm.storage.duplicates``); nothing here touches a database.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .labels import Label
from .problems import did_you_mean, one_of
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: Bumped when a normalizer changes what it returns: every key column is then named anew
#: (the fingerprint below), so the next catalog change fills fresh keys for old rows.
NORMALIZER_VERSION = 1

#: Hidden key columns start with this; field names cannot (they start with a letter).
COLUMN_PREFIX = "_dup_"

#: Characters of a fuzzy value's key that candidates must share (the SQL narrowing).
BLOCK_LENGTH = 2

#: Longest stored key; longer keys are cut (two values equal over 255 characters match).
KEY_LENGTH = 255

_SEPARATOR = "\x1f"  # between the parts of a key with several fields

# ------------------------------------------------------------------------- normalizers
_PLUS_DOMAINS_WITH_DOTS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
_E164 = re.compile(r"\+?[0-9]+")
_EXTENSION = re.compile(r"(?:ext\.?|extension|x|доб\.?|добавочный|#)\s*\d+\s*$", re.IGNORECASE)

#: Legal-form words taken out of names: a company is found whatever form its name was
#: written with.  Matched as whole words after punctuation is gone ("L.L.C." -> "l l c"
#: is handled by joining single letters first).
LEGAL_FORMS = frozenset(
    """
    inc incorporated corp corporation co company cos llc llp lp ltd limited plc pllc
    gmbh mbh ag kg ohg ug sa sas sarl srl spa bv nv oy oyj ab as asa aps pty pte sl
    ооо оао зао пао ао нао ип нко ано тоо чп одо
    """.split()
)

_PUNCTUATION = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def _fold(text: str) -> str:
    """Case folded, accents off (é -> e, ё -> е, й -> и), compatibility forms unified."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_text(value: str) -> str:
    """Trimmed, case folded, runs of whitespace made one space."""
    return _SPACES.sub(" ", str(value).casefold()).strip()


def normalize_email(value: str) -> str:
    """Lower case; a ``+tag`` after the local part dropped at every provider (plus
    addressing); dots in the local part dropped at Gmail, where they mean nothing."""
    text = str(value).strip().casefold()
    text = text.removeprefix("mailto:")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return text
    domain = domain.rstrip(".")
    local = local.split("+", 1)[0] or local
    if domain in _PLUS_DOMAINS_WITH_DOTS:
        domain = _PLUS_DOMAINS_WITH_DOTS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"


def normalize_phone(value: str) -> str:
    """The number's last ten digits: ``+7 (916) 123-45-67``, ``8 916 123 45 67`` and
    ``9161234567`` are one number, as are ``+1 212 555 0100`` and ``(212) 555-0100``.
    An extension (``ext. 12``, ``доб. 12``) is left out.  Fewer than seven digits is no
    phone number (empty key)."""
    if type(value) is str and _E164.fullmatch(value):  # as stored: nothing to take out
        digits = value.lstrip("+")
        return digits[-10:] if len(digits) >= 7 else ""
    text = _EXTENSION.sub("", str(value))
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) < 7:
        return ""
    return digits[-10:]


def normalize_name(value: str) -> str:
    """Case and accents folded, punctuation and extra spaces gone, legal forms (Inc, LLC,
    ООО, АО, ...) taken out while another word remains."""
    value = str(value)
    # names repeat (first names, companies): each is worked out once while it is common
    return _normalize_name(value) if len(value) <= 64 else _normalize_name.__wrapped__(value)


@functools.lru_cache(maxsize=8192)
def _normalize_name(value: str) -> str:
    text = _fold(value)
    text = _PUNCTUATION.sub(" ", text)
    words = text.split()
    # "l l c" and "o o o" (written with dots) are one legal form
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and word.isalpha():
            run.append(word)
            continue
        if run:
            merged = "".join(run)
            joined.extend([merged] if len(run) > 1 and merged in LEGAL_FORMS else run)
            run = []
        if word:
            joined.append(word)
    kept = [w for w in joined if w not in LEGAL_FORMS]
    return " ".join(kept or joined)


def normalize_domain(value: str) -> str:
    """The host of a web address or of an email address, lower case, without ``www.``."""
    text = str(value).strip().casefold()
    if "@" in text and "/" not in text:
        text = text.rpartition("@")[2]
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.split(r"[/?#]", text, maxsplit=1)[0]
    text = text.rpartition("@")[2].split(":", 1)[0].rstrip(".")
    return text.removeprefix("www.")


def normalize_exact(value) -> str:
    return str(value)


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "email": normalize_email,
    "phone": normalize_phone,
    "name": normalize_name,
    "domain": normalize_domain,
    "text": normalize_text,
    "exact": normalize_exact,
}

_TEXTS = ("text", "long_text", "email", "phone", "url", "autonumber")
#: The field types each normalizer fits.
FITS: dict[str, tuple[str, ...]] = {
    "email": ("text", "email"),
    "phone": ("text", "phone"),
    "name": ("text",),
    "domain": ("text", "url", "email"),
    "text": _TEXTS,
    "exact": (
        *_TEXTS,
        "integer",
        "decimal",
        "money",
        "percent",
        "rating",
        "duration",
        "boolean",
        "date",
        "time",
        "choice",
        "lookup",
        "user",
    ),
}
FUZZY_NORMALIZERS = ("name", "text")
DEFAULT_NORMALIZER = {"email": "email", "phone": "phone", "text": "text", "long_text": "text"}


def default_normalizer(field_type: str) -> str:
    return DEFAULT_NORMALIZER.get(field_type, "exact")


# ------------------------------------------------------------------------------ model
@dataclass(frozen=True, slots=True)
class DuplicateMatch:
    field: str
    normalize: str
    fuzzy: float | None = None  # similarity threshold (0..1] of a fuzzy item


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    name: str
    match: tuple[DuplicateMatch, ...]
    label: Label | None = None
    solution: str = ""
    position: Position | None = field(default=None, compare=False)

    @property
    def fuzzy(self) -> DuplicateMatch | None:
        return next((m for m in self.match if m.fuzzy is not None), None)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(m.field for m in self.match)

    @property
    def column(self) -> str:
        """The hidden key column: named by the rule and a fingerprint of its definition, so
        a changed rule (or normalizer) is a new column, filled when it is added."""
        return _column_name(self.name, self.match)

    def title(self, locale: str = "en") -> str:
        if self.label is not None:
            return self.label.get(locale)
        return self.name.replace("_", " ")


@functools.lru_cache(maxsize=1024)
def _column_name(name: str, match: tuple[DuplicateMatch, ...]) -> str:
    spec = repr(
        (NORMALIZER_VERSION, BLOCK_LENGTH, [(m.field, m.normalize, m.fuzzy) for m in match])
    )
    digest = hashlib.sha1(spec.encode()).hexdigest()[:8]
    return f"{COLUMN_PREFIX}{name}_{digest}"


def rule_key(rule: DuplicateRule, record: Mapping) -> str | None:
    """The key stored for a record: every part of an exact rule; for a fuzzy rule its exact
    parts and the first characters of the fuzzy value (the block candidates share)."""
    return key_function(rule)(record)


def _key_value(value):
    """A stored value as a key's normalizer takes it; None for a blank, which never
    matches (as Dynamics' "ignore blank values")."""
    if value is None or value == "" or value == []:
        return None
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@functools.lru_cache(maxsize=1024)
def key_function(rule: DuplicateRule) -> Callable[[Mapping], str | None]:
    """``rule_key`` for one rule, with its items and normalizers looked up once (a bulk
    write keys every record by every rule)."""
    exact = [(m.field, NORMALIZERS[m.normalize]) for m in rule.match if m.fuzzy is None]
    fuzzy = rule.fuzzy
    fuzzy_normalizer = NORMALIZERS[fuzzy.normalize] if fuzzy is not None else None

    if fuzzy is None and len(exact) == 1:  # the usual rule: one field, its key is its part
        name, normalizer = exact[0]

        def single(record: Mapping) -> str | None:
            value = _key_value(record.get(name))
            return None if value is None else normalizer(value)[:KEY_LENGTH] or None

        return single

    def key(record: Mapping) -> str | None:
        parts = []
        for name, normalizer in exact:
            value = _key_value(record.get(name))
            if value is None:
                return None
            part = normalizer(value)
            if not part:
                return None
            parts.append(part)
        if fuzzy is not None:
            value = record.get(fuzzy.field)
            value = fuzzy_normalizer(value) if value is not None and value != "" else None
            if not value:
                return None
            parts.append(value.replace(" ", "")[:BLOCK_LENGTH])
        return _SEPARATOR.join(parts)[:KEY_LENGTH]

    return key


def fuzzy_value(rule: DuplicateRule, record: Mapping) -> str | None:
    item = rule.fuzzy
    value = record.get(item.field) if item else None
    if value is None or value == "":
        return None
    return NORMALIZERS[item.normalize](value) or None


# ------------------------------------------------------------------------------ schema
def schema() -> dict:
    """The JSON Schema of an entity's (or an extension's) ``duplicates`` list."""
    from .schemas import NAME_PATTERN

    return {
        "type": "array",
        "description": "duplicate rules: records matching on these fields are likely the same",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 40},
                "label": {"$ref": "#/$defs/label"},
                "match": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 5,
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "normalize": {"enum": list(NORMALIZERS)},
                            "fuzzy": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 1,
                                "description": "similarity (0..1] above which values match",
                            },
                        },
                        "required": ["field"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["name", "match"],
            "additionalProperties": False,
        },
    }


# ------------------------------------------------------------------------ compile+check
def build_rules(
    entity_name: str,
    items: list[tuple[Mapping, str]],
    fields: Mapping,
    removed: set[str],
    add: Callable[[Position, str, str], None],
    where: Position,
) -> tuple[DuplicateRule, ...]:
    """The rules of one entity from its raw items (the entity's and its extensions'),
    each checked against the entity's fields; a problem is reported at its place and the
    rule left out.  A rule naming a removed field leaves quietly, as an index does."""
    rules: list[DuplicateRule] = []
    seen: dict[str, DuplicateRule] = {}
    for raw, solution in items:
        name = raw["name"]
        at = _vpos(raw, "name", where)
        if name in seen:
            add(at, entity_name, f"duplicate rule {name!r} is defined twice")
            continue
        match_items = raw["match"]
        if removed.intersection(m["field"] for m in match_items):
            continue
        matches = []
        ok = True
        fuzzy_count = 0
        for index, item in enumerate(match_items):
            item_at = _pos(match_items, index, at)
            fname = item["field"]
            field_at = _vpos(item, "field", item_at)
            subject = f"{entity_name}.duplicates.{name}"
            f = fields.get(fname)
            if f is None:
                add(
                    field_at,
                    subject,
                    f"unknown field {fname!r}{did_you_mean(fname, fields)}",
                )
                ok = False
                continue
            if any(m.field == fname for m in matches):
                add(field_at, subject, f"field {fname!r} is named twice in one rule")
                ok = False
                continue
            if not f.stored or f.rollup is not None or f.type == "rollup":
                add(field_at, subject, f"field {fname!r} ({f.type}) has no value a rule can match")
                ok = False
                continue
            normalize = item.get("normalize") or default_normalizer(f.type)
            fits = FITS[normalize]
            if f.type not in fits:
                add(
                    _vpos(item, "normalize", field_at) if "normalize" in item else field_at,
                    subject,
                    f"normalize: {normalize} does not fit {f.type} field {fname!r}"
                    f" (it fits {one_of(fits)})",
                )
                ok = False
                continue
            fuzzy = item.get("fuzzy")
            if fuzzy is not None:
                fuzzy_count += 1
                if normalize not in FUZZY_NORMALIZERS or f.type not in _TEXTS:
                    add(
                        _vpos(item, "fuzzy", field_at),
                        subject,
                        f"fuzzy needs a text field compared with normalize: name or text;"
                        f" {fname!r} is {f.type} with normalize: {normalize}",
                    )
                    ok = False
                    continue
                if fuzzy_count > 1:
                    add(
                        _vpos(item, "fuzzy", field_at),
                        subject,
                        "a rule compares at most one field fuzzily",
                    )
                    ok = False
                    continue
            matches.append(DuplicateMatch(fname, normalize, float(fuzzy) if fuzzy else None))
        label = Label.of(raw["label"]) if raw.get("label") else None
        rule = DuplicateRule(name, tuple(matches), label, solution, at)
        seen[name] = rule
        if ok:
            rules.append(rule)
    return tuple(rules)
