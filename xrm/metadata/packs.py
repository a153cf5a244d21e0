"""Solution packs: reading their files, validating each document, and finding packs.

A pack is a folder with ``solution.yaml`` and definition files in ``entities/``,
``option_sets/``, ``views/`` (later also forms, processes, reports, roles...).  A pack can be
read from a folder or from stored file texts, which is how installed packs are rebuilt from
the database in every process.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import parse_cache
from .bulk import collector_paused
from .problems import Problems, did_you_mean, yaml_text, yaml_type
from .schemas import validators
from .source import Node, Position, YamlSyntaxError, key_position_of, load_yaml, position_of

MANIFEST = "solution.yaml"


@dataclass(frozen=True)
class DefinitionKind:
    """One kind of definition document: the top-level key that names it, the pack folder
    its files go in, and what messages call it."""

    key: str
    folder: str
    noun: str


#: Every kind of definition a pack holds.  The folders a pack may have, and the folder a
#: document of each kind must be in, come from here: adding a kind adds its folder.
DEFINITION_KINDS = (
    DefinitionKind("entity", "entities", "an entity"),
    DefinitionKind("extend", "entities", "an entity extension"),
    # a change to a named validation rule; only the customization layer (and a layer
    # exported as a pack) holds one
    DefinitionKind("validation", "entities", "a validation rule change"),
    DefinitionKind("option_sets", "option_sets", "an option-set"),
    DefinitionKind("views", "views", "a view"),
    DefinitionKind("roles", "roles", "a role"),
    DefinitionKind("forms", "forms", "a form"),
    DefinitionKind("process", "processes", "a process"),
    DefinitionKind("sla", "processes", "an SLA"),
    DefinitionKind("calendars", "processes", "a calendar"),
    DefinitionKind("templates", "templates", "a template"),
    DefinitionKind("reports", "reports", "a report"),
    DefinitionKind("dashboards", "dashboards", "a dashboard"),
    DefinitionKind("data", "data", "reference data"),
    DefinitionKind("demo", "demo", "sample data"),
    DefinitionKind("tests", "tests", "a pack test"),
    DefinitionKind("wizards", "wizards", "a wizard"),
    DefinitionKind("web_forms", "web_forms", "a web form"),
)
#: Top-level key of a document -> its kind.
KINDS = {kind.key: kind for kind in DEFINITION_KINDS}
#: Folders whose YAML files hold definitions, in the order messages list them.
DEFINITION_FOLDERS = tuple(dict.fromkeys(kind.folder for kind in DEFINITION_KINDS))
ENTRY_POINT_GROUP = "xrm.solutions"


@dataclass(frozen=True)
class Document:
    kind: str
    data: Mapping
    path: str  # display path, used in messages


#: Folders whose documents a catalog build only checks (reference and sample data, pack
#: tests): the install and ``xrm solution test`` read them, the running platform does not.
CHECKED_ONLY = ("data/", "demo/", "tests/")
#: Kinds only a catalog's later sections need (``catalog.Sections``: forms, processes,
#: reports...): a build of packs that built clean before decodes them on first use.
LATER_KINDS = frozenset(
    ("forms", "process", "sla", "calendars", "templates")
    + ("reports", "dashboards", "wizards", "web_forms")
)
LATER_FOLDERS = tuple(dict.fromkeys(KINDS[k].folder + "/" for k in sorted(LATER_KINDS)))


@dataclass
class PackSource:
    """One pack's documents, read but not compiled."""

    name: str
    version: str
    manifest: Mapping
    read: list[Document] = field(default_factory=list)
    root: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    #: entities whose document was refused (already reported); references to them are
    #: not reported again as "unknown entity"
    rejected: set[str] = field(default_factory=set)
    #: files of CHECKED_ONLY folders found in the parse cache, (relative, display, text):
    #: decoded when ``documents`` is first asked for, so that a build which checked these
    #: very packs before (``compiler.build_catalog``) never decodes them
    deferred: list[tuple[str, str, str]] = field(default_factory=list)
    #: files of LATER_FOLDERS found in the parse cache, decoded when ``defined(later=True)``
    #: or ``documents`` is first asked for
    pending: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def depends(self) -> Mapping[str, str]:
        return self.manifest.get("depends") or {}

    @property
    def documents(self) -> list[Document]:
        """Every document of the pack, in file order."""
        if self.deferred or self.pending:
            self._decode("deferred")
            self._decode("pending")
        return self.read

    def defined(self, later: bool | None = None) -> list[Document]:
        """The documents the platform runs on: all but the deferred checked-only ones.
        ``later=False``: those of the kinds a catalog builds first, decoding nothing more;
        ``later=True``: those of ``LATER_KINDS``."""
        if later is None or later:
            self._decode("pending")
        if later is None:
            return self.read
        return [d for d in self.read if (d.kind in LATER_KINDS) == later]

    def _decode(self, group: str) -> None:
        files = getattr(self, group)
        if not files:
            return
        setattr(self, group, [])
        for relative, display, text in files:
            found = parse_cache.get(relative, display, text)
            if found:
                self.read.append(Document(found[0], found[1], display))
                continue
            document = _read_document(relative, display, text, Problems(), self)
            if document is not None:  # it read clean before; the cache entry went
                self.read.append(document)
        self.read.sort(key=lambda d: d.path)


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


def unknown_folders(directory: Path, root: str, subject: str, problems: Problems) -> None:
    """One problem per folder of the pack that holds YAML files no kind reads (a typo such
    as ``entites/``, or a kind this platform does not have): they would be left out
    without a word.  Hidden and Python folders (``.schemas``, ``__pycache__``) are not
    the pack's definitions and are passed over."""
    for path in sorted(directory.iterdir()):
        name = path.name
        if not path.is_dir() or name in DEFINITION_FOLDERS or name.startswith((".", "_")):
            continue
        if next(path.rglob("*.y*ml"), None) is None:
            continue
        problems.add(
            Position(_display(root, name), 1, 1),
            subject,
            f"unknown folder {name!r}: a pack's folders are {', '.join(DEFINITION_FOLDERS)}"
            f"{did_you_mean(name, DEFINITION_FOLDERS)}",
        )


@collector_paused()
def parse_pack(files: Mapping[str, str], root: str, problems: Problems) -> PackSource | None:
    """Parse and schema-check a pack's files, adding every problem found."""
    manifest = _manifest(files.get(MANIFEST), _display(root, MANIFEST), problems)
    if manifest is None:
        return None
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
        # Remembered per set of schemas: the fingerprint names the code and field types
        # that make them, without building the validators a warm start never uses.
        key = (parse_cache.code_fingerprint(), relative, display, text)
        found = _READ.get(key)
        if (
            not found
            and relative.startswith(CHECKED_ONLY + LATER_FOLDERS)
            and parse_cache.has(relative, display, text)
        ):
            group = pack.deferred if relative.startswith(CHECKED_ONLY) else pack.pending
            group.append((relative, display, text))
            continue
        found = found or (text is not None and parse_cache.get(relative, display, text))
        if found:
            pack.read.append(Document(found[0], found[1], display))
            _READ.put(key, found, len(text))
            continue
        before = len(problems)
        document = _read_document(relative, display, text, problems, pack)
        if document is not None:
            pack.read.append(document)
            if len(problems) == before:
                _READ.put(key, (document.kind, document.data), len(text))
                parse_cache.put(relative, display, text, document.kind, document.data)
    return pack


def _manifest(text: str | None, display: str, problems: Problems) -> Mapping | None:
    """The pack's ``solution.yaml`` read and schema-checked (from the parse cache when it
    was read before); None when it is not even a mapping."""
    found = text is not None and parse_cache.get(MANIFEST, display, text)
    if found:
        return found[1]
    manifest = _parse(text, display, problems)
    if manifest is None:
        return None
    if not isinstance(manifest, Mapping):
        problems.add(Position(display, 1, 1), "", "expected a mapping with solution: and version:")
        return None
    before = len(problems)
    _validate(manifest, "solution", display, problems)
    if len(problems) == before:
        parse_cache.put(MANIFEST, display, text, "solution", manifest)
    return manifest


def _read_document(
    relative: str, display: str, text: str | None, problems: Problems, pack: PackSource
) -> Document | None:
    """One definition file parsed and schema-checked: its Document if it passes."""
    data = _parse(text, display, problems)
    if data is None:
        return None
    kind = _kind_of(data, relative, display, problems)
    if kind is None:
        return None
    if not _in_its_folder(data, kind, relative, display, problems):
        if kind == "entity" and isinstance(data.get("entity"), str):
            pack.rejected.add(data["entity"])
        return None
    if kind == "process":
        from .processes import normalize_on

        normalize_on(data)
    if _validate(data, kind, display, problems):
        return Document(kind, data, display)
    if kind == "entity" and isinstance(data.get("entity"), str):
        pack.rejected.add(data["entity"])
    return None


class _DocumentMemo:
    """Definition files read and schema-checked without a problem, by everything that
    decides the outcome: the validators (a new set of schemas starts afresh), the file's
    place in its pack, its display path (positions carry it) and its text.

    Every process rebuilds its catalog from the stored packs when the version moves, and
    a pack upgrade changes a few files of many: the unchanged ones are not parsed or
    validated again.  A file with any problem is never remembered, so its messages are
    always made anew; a remembered tree is shared, and nothing writes to a read document.
    Bounded by the characters of source text it holds, least recently used first out."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[tuple, tuple[tuple[str, Mapping], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[str, Mapping] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: tuple, value: tuple[str, Mapping], size: int) -> None:
        with self._lock:
            if key in self._items or size > self.limit:
                return
            self._items[key] = (value, size)
            self.size += size
            while self.size > self.limit:
                _, (_, dropped) = self._items.popitem(last=False)
                self.size -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0


#: Characters of YAML: a pack of 500 entities of 40 fields is about 1.2 million.
_READ = _DocumentMemo(limit=3_000_000)


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


def _kind_of(data, relative: str, display: str, problems: Problems) -> str | None:
    """The document's kind: its first top-level key that names one.  Keys before that one
    must belong to the kind too; otherwise the file is of a kind this platform does not
    read (a report's ``entity:`` key does not make it an entity), and one message says so
    instead of a schema error per key."""
    first = next(iter(data), None) if isinstance(data, Mapping) else None
    if first is None:
        problems.add(
            getattr(data, "position", Position(display, 1, 1)),
            "",
            f"expected a mapping starting with one of {', '.join(f'{k}:' for k in KINDS)}",
        )
        return None
    for key in data:
        if key in KINDS:
            properties = validators().documents[key].schema.get("properties", {})
            # YAML 1.1 reads a process's ``on:`` key as true (normalize_on renames it later)
            if first == key or first in properties or (first is True and "on" in properties):
                return key
            break
    folder = relative.split("/", 1)[0] if "/" in relative else None
    keys = [kind.key for kind in DEFINITION_KINDS if kind.folder == folder]
    expected = (
        f"a file in {folder}/ starts with {' or '.join(f'{k}:' for k in keys)}"
        if keys
        else f"a definition starts with one of {', '.join(f'{k}:' for k in KINDS)}"
    )
    problems.add(
        key_position_of(data, [first], Position(display, 1, 1)),
        "",
        f"unknown kind of definition {str(first)!r}: {expected}{did_you_mean(str(first), KINDS)}",
    )
    return None


def _in_its_folder(data, kind: str, relative: str, display: str, problems: Problems) -> bool:
    """A document must be in its kind's folder, where readers of the pack look for it."""
    folder = relative.split("/", 1)[0] if "/" in relative else None
    expected = KINDS[kind].folder
    if folder is None or folder == expected:
        return True
    problems.add(
        key_position_of(data, [kind], Position(display, 1, 1)),
        _subject(kind, data, []),
        f"this is {KINDS[kind].noun} definition; put it in {expected}/",
    )
    return False


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
    elif kind in ("reports", "dashboards", "web_forms", "wizards") and len(parts) >= 2:
        name = f"{kind}.{parts[1]}"
    elif kind in ("entity", "extend") and len(parts) >= 2 and parts[0] == "fields":
        name = f"{name}.{parts[1]}"
    return name


def _report(error, doc, problems: Problems, fallback: Position, subject: str, type_name=None):
    if error.context:
        from jsonschema.exceptions import best_match  # only a failing document needs it

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
                f"unknown key {yaml_text(extra)} in {of} (expected one of {', '.join(allowed)})"
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


#: JSON Schema's names of types as a YAML author knows them.
_SCHEMA_TYPES = {"object": "mapping", "array": "list"}


def _explain(error) -> str:
    """A schema error in YAML terms (``expected true``, ``got null``), never Python's."""
    validator, expected, instance = error.validator, error.validator_value, error.instance
    if validator == "type":
        names = expected if isinstance(expected, list) else [expected]
        got = yaml_type(instance)
        shown = "" if instance is None else f" {yaml_text(instance)}"
        return f"expected {' or '.join(_SCHEMA_TYPES.get(n, n) for n in names)}, got {got}{shown}"
    if validator == "enum":
        choices = [yaml_text(v) if not isinstance(v, str) else v for v in expected]
        return (
            f"{yaml_text(instance)} is not allowed (expected one of {', '.join(choices)})"
            f"{did_you_mean(instance, map(str, expected)) if isinstance(instance, str) else ''}"
        )
    if validator == "const":
        return f"expected {yaml_text(expected)}"
    if validator == "pattern":
        if expected == "^[a-z][a-z0-9_]*$":
            return f"{yaml_text(instance)} is not a valid name (expected lower-case letters, digits and _, starting with a letter)"
        return f"{yaml_text(instance)} does not match {expected}"
    plural = "" if expected == 1 else "s"
    if validator == "minItems":
        return f"expected at least {expected} item{plural}"
    if validator == "maxItems":
        return f"expected at most {expected} item{plural}"
    if validator == "minProperties":
        return f"expected at least {expected} key{plural}"
    if validator == "maxProperties":
        return f"expected at most {expected} key{plural}"
    if validator == "minimum":
        return f"{yaml_text(instance)} is less than the minimum of {expected}"
    if validator == "maximum":
        return f"{yaml_text(instance)} is more than the maximum of {expected}"
    if validator == "exclusiveMinimum":
        return f"{yaml_text(instance)} is not more than {expected}"
    if validator == "minLength":
        return f"expected at least {expected} character{plural}"
    if validator == "maxLength":
        return f"at most {expected} character{plural} (got {len(instance)})"
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
    from importlib.metadata import entry_points  # slow to import; discovery only

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
    display = str(folder / MANIFEST)
    try:
        text = (folder / MANIFEST).read_text(encoding="utf-8")
        found = parse_cache.get(MANIFEST, display, text)
        data = found[1] if found else load_yaml(text, display)
    except (OSError, YamlSyntaxError):
        return folder.name
    return (
        str(data.get("solution"))
        if isinstance(data, Mapping) and data.get("solution")
        else folder.name
    )
