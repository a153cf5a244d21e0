"""Rules-based scoring (``scoring:`` on an entity): points per condition of the filter
language, points that lose value with age, and a rating band read off the score.

The definition, its JSON Schema and its cross-checks live here, with the arithmetic both
back ends share: the records service scores one record in Python when it is written, and
``xrm.storage.scoring`` rescores every record with one SQL statement (the decay).  Decay
goes in whole steps (``lose`` percent every ``every`` after ``after``), so its thresholds
are moments computed once in Python and compared in SQL: the two back ends cannot round
differently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .expressions import formula_names
from .labels import Label
from .problems import did_you_mean
from .source import Position
from .source import node_position as _pos
from .source import value_position as _vpos

#: What a decay may be counted from: a datetime field, or these system columns.
ANCHOR_SYSTEM = ("created_at", "updated_at")
SCORE_TYPES = ("integer",)


@dataclass(frozen=True, slots=True)
class ScoringRule:
    when: Any  # filter-language tree
    points: int
    decays: bool = True
    label: Label | None = None
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Decay:
    since: str  # the datetime field the age is counted from
    after: int  # seconds of full value
    every: int  # seconds per step
    lose: int  # percent lost per step
    floor: int = 0  # percent kept at least

    def percent(self, anchor: dt.datetime | None, now: dt.datetime) -> int:
        """The percent the decaying points keep for a record last active at ``anchor``."""
        if anchor is None:
            return 100
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=dt.UTC)
        age = (now - anchor).total_seconds() - self.after
        steps = int(age // self.every) if age >= 0 else 0
        return max(self.floor, 100 - steps * self.lose)

    def thresholds(self, now: dt.datetime) -> list[tuple[dt.datetime, int]]:
        """(moment, percent): a record whose anchor is later than the moment keeps the
        percent; the first moment that holds wins, and an anchor before every moment keeps
        ``floor``.  The same steps as ``percent``, for SQL."""
        result, steps = [], 0
        while True:
            kept = 100 - steps * self.lose
            if kept <= self.floor:
                return result
            moment = now - dt.timedelta(seconds=self.after + (steps + 1) * self.every)
            result.append((moment, kept))
            steps += 1


@dataclass(frozen=True, slots=True)
class Scoring:
    field: str
    rules: tuple[ScoringRule, ...]
    rating_field: str | None = None
    #: (lowest score, option value), highest band first; the last may have no minimum
    bands: tuple[tuple[int | None, str], ...] = ()
    where: Any = None  # the records that are scored; the others keep their score
    decay: Decay | None = None
    position: Position | None = None

    def score(self, fixed: int, decaying: int, percent: int) -> int:
        """Fixed points plus the decaying points' kept share, truncated toward zero as SQL
        integer division does."""
        share = abs(decaying) * percent // 100
        return fixed + (share if decaying >= 0 else -share)

    def band(self, score: int | None) -> str | None:
        if score is None:
            return None
        for minimum, value in self.bands:
            if minimum is None or score >= minimum:
                return value
        return None

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,) + ((self.rating_field,) if self.rating_field else ())

    @property
    def reads(self) -> frozenset[str]:
        """The entity's own fields its rules and ``where`` read (the first name of each
        path): a change of one of them without a save of the record (a rollup moved by
        a child) must rescore it."""
        from .filters import conditions_of

        trees = [rule.when for rule in self.rules] + [self.where]
        return frozenset(c.path[0] for tree in trees for c in conditions_of(tree))


def formulas_over(entity, names) -> dict[str, tuple[str, ...]]:
    """The formula fields of ``entity`` that read one of ``names`` (its score and rating),
    directly or through other formulas, each with the chain of names that leads there
    (``("hot", "double", "score")``).  Such a formula is worked out after the score, so a
    scoring condition may not read it: the score would depend on itself."""
    formulas = {n: formula_names(f.formula) for n, f in entity.fields.items() if f.formula}
    chains: dict[str, tuple[str, ...]] = {}
    reached = {name: (name,) for name in names}
    while reached:  # one step further each round; a name once reached keeps its chain
        found = {}
        for name, reads in formulas.items():
            if name in chains or name in found:
                continue
            target = next((n for n in sorted(reads) if n in reached), None)
            if target is not None:
                found[name] = (name, *reached[target])
        chains.update(found)
        reached = found
    return chains


def schema() -> dict:
    """The JSON Schema of an entity's ``scoring`` section."""
    duration = {"type": "string", "description": "a length of time: 7d, 12h, 2w"}
    return {
        "type": "object",
        "description": "a rules-based score: points per condition, decay with age, a rating band",
        "properties": {
            "field": {
                "type": "string",
                "description": "the read-only integer field holding the score",
            },
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "if": {"$ref": "#/$defs/filter"},
                        "points": {"type": "integer", "minimum": -1000, "maximum": 1000},
                        "decays": {
                            "type": "boolean",
                            "description": "false: the points keep their value (default true)",
                        },
                        "label": {"$ref": "#/$defs/label"},
                    },
                    "required": ["if", "points"],
                    "additionalProperties": False,
                },
            },
            "rating": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "description": "a read-only choice field"},
                    "bands": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "min": {"type": "integer"},
                                "value": {"type": "string"},
                            },
                            "required": ["value"],
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["field", "bands"],
                "additionalProperties": False,
            },
            "where": {"$ref": "#/$defs/filter"},
            "decay": {
                "type": "object",
                "properties": {
                    "since": {
                        "type": "string",
                        "description": "a datetime field, created_at or updated_at (default)",
                    },
                    "after": duration,
                    "every": duration,
                    "lose": {"type": "integer", "minimum": 1, "maximum": 100},
                    "floor": {"type": "integer", "minimum": 0, "maximum": 99},
                },
                "required": ["every", "lose"],
                "additionalProperties": False,
            },
        },
        "required": ["field", "rules"],
        "additionalProperties": False,
    }


def build_scoring(
    raw: Mapping,
    entity,
    entity_of: Callable,
    add: Callable[[Position | None, str, str], None],
    follows_on: Callable = lambda exc: False,
) -> Scoring | None:
    """The entity's scoring model, or None after reporting every problem at its place."""
    from .filters import FilterError, conditions_of, parse_filter
    from .spans import parse_span

    subject = f"{entity.name}.scoring"
    where = _pos(raw)
    ok = True
    # what the model sets, and the formulas over it: its conditions may read neither
    sets = [raw["field"], *([raw["rating"]["field"]] if raw.get("rating") else [])]
    sets = [name for name in sets if name in entity.fields]
    over_score = formulas_over(entity, sets)

    def field_problem(key_raw, key, name, wanted: str) -> bool:
        f = entity.fields.get(name)
        at = _vpos(key_raw, key, where)
        if f is None:
            add(at, subject, f"unknown field {name!r}{did_you_mean(name, entity.fields)}")
            return True
        if wanted == "score" and (f.type not in SCORE_TYPES or f.computed):
            add(at, subject, f"{name!r} is a {f.type} field; the score needs an integer field")
            return True
        if wanted == "rating" and (f.type != "choice" or f.computed):
            add(at, subject, f"{name!r} is a {f.type} field; the rating needs a choice field")
            return True
        if not f.read_only:
            add(
                at,
                subject,
                f"{name!r} must be read_only: true (the platform sets it; people would "
                "see their value replaced)",
            )
            return True
        return False

    def condition(node_raw, key, at):
        try:
            tree = parse_filter(node_raw[key], entity, entity_of)
        except FilterError as exc:
            if not follows_on(exc):
                add(_vpos(node_raw, key, at), subject, str(exc))
            return None
        if any(_names_the_reader(c.value) for c in conditions_of(tree)):
            # a score is one value for every reader, kept by writes and by the nightly
            # rescore (which has no user): a rule about whoever writes would make it
            # depend on who saved the record last
            add(
                _vpos(node_raw, key, at),
                subject,
                "current_user has no meaning in a score's condition: the platform scores "
                "a record the same for every reader",
            )
            return None
        for c in conditions_of(tree):
            name = c.path[0] if not c.lookups else None
            if name in sets or name in over_score:
                add(_vpos(node_raw, key, at), subject, _reads_itself(name, sets, over_score))
                return None
        return tree

    if field_problem(raw, "field", raw["field"], "score"):
        ok = False
    rules = []
    for index, item in enumerate(raw["rules"]):
        at = _pos(raw["rules"], index, where)
        tree = condition(item, "if", at)
        if tree is None:
            ok = False
            continue
        label = Label.of(item["label"]) if item.get("label") else None
        rules.append(
            ScoringRule(tree, int(item["points"]), bool(item.get("decays", True)), label, at)
        )
    bands: list[tuple[int | None, str]] = []
    rating_field = None
    rating = raw.get("rating")
    if rating is not None:
        rating_field = rating["field"]
        if field_problem(rating, "field", rating_field, "rating"):
            ok = False
        else:
            values = list(entity.fields[rating_field].choice_values) or None
            previous = None
            for index, band in enumerate(rating["bands"]):
                at = _pos(rating["bands"], index, where)
                if values is not None and band["value"] not in values:
                    ok = False
                    add(
                        _vpos(band, "value", at),
                        subject,
                        f"rating band {band['value']!r} is no option of {rating_field}"
                        f"{did_you_mean(band['value'], values)}",
                    )
                minimum = band.get("min")
                last = index == len(rating["bands"]) - 1
                if minimum is None and not last:
                    ok = False
                    add(at, subject, "only the last rating band may leave out min:")
                if minimum is not None and previous is not None and minimum >= previous:
                    ok = False
                    add(
                        _vpos(band, "min", at),
                        subject,
                        f"rating bands go from the highest min down: {minimum} follows {previous}",
                    )
                previous = minimum if minimum is not None else previous
                bands.append((minimum, band["value"]))
    scope = None
    if raw.get("where") is not None:
        scope = condition(raw, "where", where)
        ok = ok and scope is not None
    decay = None
    if raw.get("decay") is not None:
        spec = raw["decay"]
        at = _vpos(raw, "decay", where)
        since = spec.get("since", "updated_at")
        f = entity.fields.get(since)
        if since not in ANCHOR_SYSTEM and (f is None or f.type != "datetime"):
            ok = False
            names = [*ANCHOR_SYSTEM, *(n for n, x in entity.fields.items() if x.type == "datetime")]
            add(
                _vpos(spec, "since", at),
                subject,
                f"decay since {since!r}: expected a datetime field of {entity.name} or "
                f"created_at / updated_at{did_you_mean(since, names)}",
            )
        spans = {}
        for key in ("after", "every"):
            text = spec.get(key, "0d")
            try:
                spans[key] = parse_span(text)
            except ValueError:
                ok = False
                add(
                    _vpos(spec, key, at),
                    subject,
                    f"decay {key}: {text!r} is not a length of time (7d, 12h, 2w)",
                )
        if spans.get("every") == 0:
            ok = False
            add(_vpos(spec, "every", at), subject, "decay every: must be longer than nothing")
        if ok:
            decay = Decay(
                since, spans["after"], spans["every"], int(spec["lose"]), int(spec.get("floor", 0))
            )
        if not any(r.decays for r in rules) and rules:
            ok = False
            add(at, subject, "decay: every rule says decays: false, so nothing would decay")
    if not ok:
        return None
    return Scoring(
        field=raw["field"],
        rules=tuple(rules),
        rating_field=rating_field,
        bands=tuple(bands),
        where=scope,
        decay=decay,
        position=where,
    )


def _reads_itself(name: str, sets: list[str], over_score: dict) -> str:
    """Why a scoring condition may not read ``name``: the score would depend on itself."""
    if name in sets:
        what = f"{name!r} is set by this scoring model"
    else:
        what = f"{name!r} is a formula over the score ({' -> '.join(over_score[name])})"
    return (
        f"{what}, so its conditions cannot read it (the score would depend on itself); "
        f"expected a field or formula that does not read {' or '.join(sets)}"
    )


def _names_the_reader(value) -> bool:
    from .filters import CurrentUser

    if isinstance(value, list | tuple):
        return any(isinstance(v, CurrentUser) for v in value)
    return isinstance(value, CurrentUser)
