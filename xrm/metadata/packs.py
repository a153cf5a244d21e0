"""Solution packs: reading their files, validating each document, and finding packs.

A pack is a folder with ``solution.yaml`` and definition files in ``entities/``,
``option_sets/``, ``views/`` (later also forms, processes, reports, roles...).  A pack can be
read from a folder or from stored file texts, which is how installed packs are rebuilt from
the database in every process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from jsonschema.exceptions import best_match

from .problems import Problems, did_you_mean
from .schemas import validators
from .source import Node, Position, YamlSyntaxError, key_position_of, load_yaml, position_of

MANIFEST = "solution.yaml"
#: Top-level key of a document -> its kind.
DOCUMENT_KINDS = {
    "entity": "entity",
    "extend": "extend",
    "option_sets": "option_sets",
    "views": "views",
    "roles": "roles",
    "forms": "forms",
    "process": "process",
    "sla": "sla",
    "calendars": "calendars",
    "templates": "templates",
}
#: Folders whose YAML files hold definitions (other folders, such as data/ or demo/,
#: are read by later stages).
DEFINITION_FOLDERS = (
    "entities",
    "option_sets",
    "views",
    "roles",
    "forms",
    "processes",
    "templates",
)
ENTRY_POINT_GROUP = "xrm.solutions"


@dataclass(frozen=True)
class Document:
    kind: str
    data: Mapping
    path: str  # display path, used in messages


@dataclass
class PackSource:
    """One pack's documents, read but not compiled."""

    name: str
    version: str
    manifest: Mapping
    documents: list[Document] = field(default_factory=list)
    root: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    #: entities whose document was refused (already reported); references to them are
    #: not reported again as "unknown entity"
    rejected: set[str] = field(default_factory=set)

    @property
    def depends(self) -> Mapping[str, str]:
        return self.manifest.get("depends") or {}


def _display(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if root else relative


def read_pack_files(directory: Path) -> dict[str, str]:
    """The pack's manifest and definition files as relative path -> text."""
    files = {MANIFEST: (directory / MANIFEST).read_text(encoding="utf-8")}
    for folder in DEFINITION_FOLDERS:
        base = directory / folder
        if base.is_dir():
            for path in sorted(base.rglob("*.y*ml")):
                files[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
    return files


def parse_pack(files: Mapping[str, str], root: str, problems: Problems) -> PackSource | None:
    """Parse and schema-check a pack's files, adding every problem found."""
    manifest = _parse(files.get(MANIFEST), _display(root, MANIFEST), problems)
    if manifest is None:
        return None
    if not isinstance(manifest, Mapping):
        problems.add(
            Position(_display(root, MANIFEST), 1, 1),
            "",
            "expected a mapping with solution: and version:",
        )
        return None
    _validate(manifest, "solution", _display(root, MANIFEST), problems)
    pack = PackSource(
        name=str(manifest.get("solution", "")),
        version=str(manifest.get("version", "")),
        manifest=manifest,
        root=root,
        files=dict(files),
    )
    for relative, text in sorted(files.items()):
        if relative == MANIFEST:
            continue
        display = _display(root, relative)
        data = _parse(text, display, problems)
        if data is None:
            continue
        kind = _kind_of(data, display, problems)
        if kind is None:
            continue
        if kind == "process":
            from .processes import normalize_on

            normalize_on(data)
        if _validate(data, kind, display, problems):
            pack.documents.append(Document(kind, data, display))
        elif kind == "entity" and isinstance(data.get("entity"), str):
            pack.rejected.add(data["entity"])
    return pack


def _parse(text: str | None, display: str, problems: Problems):
    if text is None:
        problems.add(Position(display, 1, 1), "", "file is missing")
        return None
    try:
        data = load_yaml(text, display)
    except YamlSyntaxError as exc:
        problems.add(exc.position, "", exc.message)
        return None
    if data is None:
        problems.add(Position(display, 1, 1), "", "file is empty")
    return data


def _kind_of(data, display: str, problems: Problems) -> str | None:
    if isinstance(data, Mapping):
        for key in data:
            if key in DOCUMENT_KINDS:
                return DOCUMENT_KINDS[key]
    first = next(iter(data), "") if isinstance(data, Mapping) else ""
    position = getattr(data, "position", Position(display, 1, 1))
    problems.add(
        position,
        "",
        f"unknown kind of definition (expected a document starting with one of "
        f"{', '.join(DOCUMENT_KINDS)}){did_you_mean(first, DOCUMENT_KINDS)}",
    )
    return None


def _validate(data, kind: str, display: str, problems: Problems) -> bool:
    """Schema-check a document; entity fields are checked against their own type."""
    ok = True
    fallback = Position(display, 1, 1)
    for error in validators().documents[kind].iter_errors(data):
        ok = False
        _report(error, data, problems, fallback, subject=_subject(kind, data, error.absolute_path))
    if kind in ("entity", "extend") and isinstance(data.get("fields"), Mapping):
        field_validators = validators().fields
        owner = data.get("entity") or data.get("extend")
        for name, spec in data["fields"].items():
            if not isinstance(spec, Mapping):
                continue  # already reported by the document schema
            type_name = spec.get("type")
            validator = field_validators.get(type_name)
            subject = f"{owner}.{name}"
            if validator is None:
                ok = False
                where = spec.value_at("type") if isinstance(spec, Node) else fallback
                if type_name is None:
                    problems.add(getattr(spec, "position", fallback), subject, "field has no type")
                else:
                    problems.add(
                        where,
                        subject,
                        f"unknown field type {type_name!r}{did_you_mean(type_name, field_validators)}",
                    )
                continue
            for error in validator.iter_errors(spec):
                ok = False
                _report(error, spec, problems, fallback, subject=subject, type_name=type_name)
    return ok


def _subject(kind: str, data, path) -> str:
    parts = list(path)
    name = ""
    if isinstance(data, Mapping):
        name = str(data.get("entity") or data.get("extend") or data.get("solution") or "")
    if kind in ("process", "sla") and isinstance(data, Mapping):
        name = f"{'slas' if kind == 'sla' else 'processes'}.{data.get(kind, '')}"
    if kind in ("option_sets", "views", "calendars", "templates") and len(parts) >= 2:
        name = str(parts[1])
    elif kind in ("entity", "extend") and len(parts) >= 2 and parts[0] == "fields":
        name = f"{name}.{parts[1]}"
    return name


def _report(error, doc, problems: Problems, fallback: Position, subject: str, type_name=None):
    if error.context:
        error = best_match(error.context) or error
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = list((error.schema.get("properties") or {}).keys())
        extras = (
            [k for k in error.instance if k not in allowed]
            if isinstance(error.instance, Mapping)
            else []
        )
        for extra in extras:
            where = key_position_of(doc, [*path, extra], fallback)
            of = (
                f"{type_name} fields"
                if type_name and not path
                else (".".join(map(str, path)) or "this definition")
            )
            problems.add(
                where,
                subject,
                f"unknown key {extra!r} in {of} (expected one of {', '.join(allowed)})"
                f"{did_you_mean(extra, allowed)}",
            )
        return
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        where = position_of(doc, path, fallback)
        for key in missing:
            problems.add(where, subject, f"missing required key {key!r}")
        return
    where = position_of(doc, path, fallback)
    key = ".".join(str(p) for p in path) or "document"
    problems.add(where, subject, f"{key}: {_explain(error)}")


def _explain(error) -> str:
    validator, expected = error.validator, error.validator_value
    got = type(error.instance).__name__.replace("YamlMap", "mapping").replace("YamlList", "list")
    if validator == "type":
        names = expected if isinstance(expected, list) else [expected]
        return f"expected {' or '.join(names)}, got {got} {error.instance!r}"
    if validator == "enum":
        return f"{error.instance!r} is not allowed (expected one of {', '.join(map(str, expected))}){did_you_mean(error.instance, map(str, expected))}"
    if validator == "const":
        return f"expected {expected!r}"
    if validator == "pattern":
        if expected == "^[a-z][a-z0-9_]*$":
            return f"{error.instance!r} is not a valid name (expected lower-case letters, digits and _, starting with a letter)"
        return f"{error.instance!r} does not match {expected}"
    if validator in (
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "maxLength",
    ):
        return f"{error.message}"
    return error.message


# --------------------------------------------------------------------------- discovery
def shipped_solutions() -> Path:
    """The shipped packs' folder: package data of ``xrm.solutions``, so a wheel carries the
    packs as a source checkout does."""
    return Path(__file__).resolve().parents[1] / "solutions" / "packs"


def search_path(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    paths = [Path(p) for p in extra]
    env = os.environ.get("XRM_SOLUTIONS_PATH", "")
    paths += [Path(p) for p in env.split(os.pathsep) if p]
    shipped = shipped_solutions()
    if shipped.is_dir():
        paths.append(shipped)
    return paths


def _entry_point_paths() -> list[Path]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        target = ep.load()
        if callable(target):
            target = target()
        if hasattr(target, "__file__") and target.__file__:
            target = Path(target.__file__).parent
        found.append(Path(target))
    return found


def pack_folders(location: Path) -> list[Path]:
    """The pack itself, or the packs directly inside a folder of packs."""
    if (location / MANIFEST).is_file():
        return [location]
    if location.is_dir():
        return sorted(p for p in location.iterdir() if (p / MANIFEST).is_file())
    return []


def discover(extra: Iterable[str | os.PathLike] = ()) -> dict[str, Path]:
    """Pack name -> folder, earlier locations winning: explicit, XRM_SOLUTIONS_PATH,
    the shipped folder, then installed distributions (entry-point group xrm.solutions)."""
    found: dict[str, Path] = {}
    for location in [*search_path(extra), *_entry_point_paths()]:
        for folder in pack_folders(location):
            name = _manifest_name(folder)
            if name and name not in found:
                found[name] = folder
    return found


def _manifest_name(folder: Path) -> str | None:
    try:
        data = load_yaml((folder / MANIFEST).read_text(encoding="utf-8"), str(folder / MANIFEST))
    except (OSError, YamlSyntaxError):
        return folder.name
    return (
        str(data.get("solution"))
        if isinstance(data, Mapping) and data.get("solution")
        else folder.name
    )
