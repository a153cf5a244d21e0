"""Reading YAML definitions with safe-load semantics while keeping every node's position.

Errors in definitions must point at ``file:line:column``.  PyYAML's safe loader forgets
positions once it builds Python objects, so mappings and sequences here are dict and list
subclasses that remember where each key and item started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a definition file (line and column counted from 1)."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class Node:
    """Mixin for containers that know where they and their children start.

    ``positions`` maps a key (or index) and ``("value", key)`` to a Position.  The reader
    stores plain numbers instead, in the container's file: ``(line, column)`` of an item,
    ``(line, column, value line, value column)`` of a key and its value.  A big pack has
    hundreds of thousands of them and few are ever asked for, so a Position is made when
    one is."""

    __slots__ = ()
    position: Position
    positions: dict

    def at(self, key) -> Position:
        """Position of a key (mapping) or an index (sequence); the container's own if unknown."""
        found = self.positions.get(key)
        if found is None:
            return self.position
        if found.__class__ is tuple:
            return Position(self.position.path, found[0], found[1])
        return found

    def value_at(self, key) -> Position:
        found = self.positions.get(key)
        if found.__class__ is tuple and len(found) == 4:
            return Position(self.position.path, found[2], found[3])
        found = self.positions.get(("value", key))
        if found is None:
            return self.at(key)
        if found.__class__ is tuple:
            return Position(self.position.path, found[-2], found[-1])
        return found


class YamlMap(dict, Node):
    __slots__ = ("position", "positions")


class YamlList(list, Node):
    __slots__ = ("position", "positions")


class YamlSyntaxError(Exception):
    def __init__(self, position: Position, message: str):
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message


def load_yaml(text: str, path: str = "<string>"):
    """Parse one YAML document, returning YamlMap/YamlList trees with positions.

    Raises YamlSyntaxError with the position of the problem.
    """
    import yaml  # only when a file is parsed: a start from the parse cache never needs it

    from .yaml_reader import Loader

    loader = Loader(text)
    loader.source_name = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(path, mark.line + 1, mark.column + 1) if mark else Position(path, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        raise YamlSyntaxError(position, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(path, 1, 1), f"YAML syntax: {exc}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path, display: str | None = None):
    return load_yaml(path.read_text(encoding="utf-8"), display or str(path))


def node_position(node, key=None, fallback: Position | None = None) -> Position:
    """Where a key (or, without one, the node itself) stands in its file; ``fallback`` for
    values that were not read from YAML (customizations written by the platform)."""
    if isinstance(node, Node):
        return node.at(key) if key is not None else node.position
    return fallback or Position("<unknown>", 1, 1)


def value_position(node, key, fallback: Position | None = None) -> Position:
    """Where the value of a key stands in its file (see ``node_position``)."""
    if isinstance(node, Node):
        return node.value_at(key)
    return fallback or Position("<unknown>", 1, 1)


def position_of(doc, path_parts, fallback: Position) -> Position:
    """Walk a JSON-pointer-like path through a YAML tree to the deepest known position."""
    node, position = doc, getattr(doc, "position", fallback)
    for part in path_parts:
        if isinstance(node, Node):
            try:
                position = node.value_at(part) if isinstance(node, YamlMap) else node.at(part)
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            break
    return position


def key_position_of(doc, path_parts, fallback: Position) -> Position:
    """Like position_of, but for the last part gives the key's own position."""
    parts = list(path_parts)
    if not parts:
        return getattr(doc, "position", fallback)
    parent = doc
    for part in parts[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return position_of(doc, parts, fallback)
    if isinstance(parent, Node):
        return parent.at(parts[-1])
    return position_of(doc, parts, fallback)
