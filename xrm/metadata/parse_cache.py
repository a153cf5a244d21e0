"""A cache on disk of definition files already parsed and schema-checked, so that a new
process (a worker, a command, the test run) does not parse the same YAML again.

Most of a cold start's catalog load is YAML composition.  A file that was read without a
problem is written here as JSON, positions included, under a key made of its text, its
place in its pack and a fingerprint of the code and schemas that read it; the next
process that meets the same file takes the tree from here and skips both the parse and
the schema check.  JSON and not pickle: reading the cache can never run code, so a
tampered cache directory can at worst make a load fail over to the YAML.

The encoding keeps the reader's trees exactly: a mapping is ``{"m": [key, value, ...],
"p": [line, column, then key line, key column, value line, value column per key]}``, a
sequence ``{"l": [...], "p": [line, column, then line, column per item]}``, a date
``{"d": iso}`` and a date-time ``{"t": iso}``.  A tree holding anything else is not
cached.  A file holds ``[format, kind, tree]``.  The directory is ``$XRM_CACHE_DIR`` (``off`` turns the cache off), else
``$XDG_CACHE_HOME/xrm`` or ``~/.cache/xrm``; files are written whole then renamed into
place, so a reader never sees half a file, and any unreadable entry counts as a miss.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

from .source import Position, YamlList, YamlMap

#: Bump when the encoding changes.
FORMAT = 1


def directory() -> Path | None:
    """Where the cache lives, or None when it is turned off."""
    configured = os.environ.get("XRM_CACHE_DIR")
    if configured is not None:
        if configured.strip().lower() in ("", "off", "0", "no"):
            return None
        return Path(configured) / "parsed"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xrm" / "parsed"


@cache
def _fingerprint() -> str:
    """What decides how a file reads: the metadata package's code (every module's size
    and modification time), the field types registered, and the Python version."""
    from .fieldtypes import FIELD_TYPES

    parts = [str(FORMAT), sys.version]
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        parts.append(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}")
    parts.extend(sorted(FIELD_TYPES))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def code_fingerprint() -> str:
    """The fingerprint of the code and field types that read definitions (see above)."""
    return _fingerprint()


def _key(relative: str, display: str, text: str) -> str:
    digest = hashlib.sha256()
    for part in (_fingerprint(), relative, display, text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.json"


# ------------------------------------------------------------------------ reading
def get(relative: str, display: str, text: str) -> tuple[str, Mapping] | None:
    """The (kind, tree) stored for this file, or None."""
    root = directory()
    if root is None:
        return None
    try:
        raw = _path(root, _key(relative, display, text)).read_bytes()
        version, kind, data = json.loads(raw, object_hook=_decoder(display))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # missing, unreadable or not ours: read the YAML instead
    if version != FORMAT or not isinstance(kind, str) or not isinstance(data, YamlMap):
        return None
    return kind, data


def has(relative: str, display: str, text: str) -> bool:
    """Whether this file is stored (it read clean), without reading the entry."""
    root = directory()
    return root is not None and _path(root, _key(relative, display, text)).is_file()


def _decoder(display: str):
    def decode(obj: dict):
        if "m" in obj:
            items, numbers = obj["m"], obj["p"]
            data = YamlMap()
            data.position = Position(display, numbers[0], numbers[1])
            positions = data.positions = {}
            at = 2
            for index in range(0, len(items), 2):
                key = items[index]
                data[key] = items[index + 1]
                positions[key] = tuple(numbers[at : at + 4])
                at += 4
            return data
        if "l" in obj:
            items, numbers = obj["l"], obj["p"]
            data = YamlList(items)
            data.position = Position(display, numbers[0], numbers[1])
            data.positions = {
                index: (numbers[2 + 2 * index], numbers[3 + 2 * index])
                for index in range(len(items))
            }
            return data
        if "d" in obj:
            return dt.date.fromisoformat(obj["d"])
        if "t" in obj:
            return dt.datetime.fromisoformat(obj["t"])
        raise ValueError("not a cached tree")

    return decode


# ------------------------------------------------------------------------ writing
class _Unsupported(Exception):
    """The tree holds something the encoding does not keep; the file is not cached."""


def put(relative: str, display: str, text: str, kind: str, data: Mapping) -> None:
    """Remember a file read without a problem.  Failing to write is never an error."""
    root = directory()
    if root is None:
        return
    try:
        body = json.dumps([FORMAT, kind, _encode(data)], separators=(",", ":"))
    except (_Unsupported, ValueError, TypeError):
        return
    path = _path(root, _key(relative, display, text))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(body, encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        return


def _encode(value):
    if value is None or value.__class__ in (str, int, float, bool):
        return value
    if isinstance(value, YamlMap):
        items: list = []
        numbers = [value.position.line, value.position.column]
        for key, item in value.items():
            if not (key is None or key.__class__ in (str, int, float, bool)):
                raise _Unsupported
            found = value.positions.get(key)
            if found.__class__ is not tuple or len(found) != 4:
                raise _Unsupported
            items += (key, _encode(item))
            numbers += found
        return {"m": items, "p": numbers}
    if isinstance(value, YamlList):
        numbers = [value.position.line, value.position.column]
        for index in range(len(value)):
            found = value.positions.get(index)
            if found.__class__ is not tuple or len(found) != 2:
                raise _Unsupported
            numbers += found
        return {"l": [_encode(item) for item in value], "p": numbers}
    if value.__class__ is dt.datetime:
        return {"t": value.isoformat()}
    if value.__class__ is dt.date:
        return {"d": value.isoformat()}
    raise _Unsupported


# ------------------------------------------------------------------------ remembered answers
# Checking a catalog also asks pure questions of short texts again in every process: the
# shape of each template and formula (Jinja's lexer and parser), whether a cron expression
# is valid (croniter).  Their answers depend on the text and on our code only, so they are
# kept here too, one JSON table per question under the same fingerprint, read once per
# process and written back after a load that asked something new.  A start that finds every
# answer imports neither Jinja nor croniter.

#: A table that grows past this is started again (a long admin session editing templates).
MEMO_LIMIT = 20_000
_tables: dict[str, dict] = {}
_pending: dict[tuple[Path, str], dict] = {}  # (cache directory, question) -> new answers


def _memo_path(root: Path, name: str) -> Path:
    return root / "memo" / f"{name}.{_fingerprint()[:24]}.json"


def _table(name: str) -> dict:
    root = directory()
    table = _tables.get(f"{root}\0{name}")
    if table is None:
        table = {}
        if root is not None:
            try:
                found = json.loads(_memo_path(root, name).read_bytes())
                if isinstance(found, dict):
                    table = found
            except (OSError, ValueError):
                pass  # none yet, or unreadable: every answer is worked out again
        _tables[f"{root}\0{name}"] = table
    return table


def recall(name: str, key: str):
    """The answer noted for ``key`` under the question ``name`` (JSON data), or None."""
    return _table(name).get(key)


def note(name: str, key: str, value) -> None:
    """Note an answer (JSON data); written by the next ``save_remembered``."""
    _table(name)[key] = value
    root = directory()
    if root is not None:
        _pending.setdefault((root, name), {})[key] = value


def remembered(name: str, revive: Callable[[object], object]):
    """Decorate a pure function of one string whose answer is JSON data (``revive`` turns
    the stored JSON back into the answer, and raises on anything malformed).  Answers are
    kept in memory and, through ``save_remembered``, on disk."""

    def decorate(compute: Callable[[str], object]):
        memory: dict[str, object] = {}

        @functools.wraps(compute)
        def answer(text: str):
            try:
                return memory[text]
            except KeyError:
                pass
            table = _table(name)
            value = _MISSING
            if text in table:
                try:
                    value = revive(table[text])
                except (TypeError, ValueError, KeyError, IndexError):
                    value = _MISSING  # not ours: work it out
            if value is _MISSING:
                value = compute(text)
                note(name, text, value)
            if len(memory) >= 4096:
                memory.clear()
            memory[text] = value
            return value

        answer.cache_clear = memory.clear  # type: ignore[attr-defined]
        return answer

    return decorate


_MISSING = object()


def save_remembered() -> None:
    """Write the answers worked out since the last save.  Failing to write is never an
    error; two processes saving at once each keep what the other had already written."""
    if not _pending:
        return
    pending = dict(_pending)
    _pending.clear()
    for (root, name), answers in pending.items():
        path = _memo_path(root, name)
        try:
            stored = json.loads(path.read_bytes())
            if not isinstance(stored, dict) or len(stored) + len(answers) > MEMO_LIMIT:
                stored = {}
        except (OSError, ValueError):
            stored = {}
        stored.update(answers)
        try:
            body = json.dumps(stored, separators=(",", ":"))
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(body, encoding="utf-8")
            os.replace(temporary, path)
        except (OSError, TypeError, ValueError):
            continue
