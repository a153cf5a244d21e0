"""Reading YAML definitions with safe-load semantics while keeping every node's position.

Errors in definitions must point at ``file:line:column``.  PyYAML's safe loader forgets
positions once it builds Python objects, so mappings and sequences here are dict and list
subclasses that remember where each key and item started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

try:  # libyaml's parser is several times faster; the constructor stays ours either way
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader


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


class DuplicateKey(yaml.MarkedYAMLError):
    pass


def _check_key(node, key_node, key, data) -> None:
    """A mapping key must be a plain scalar and appear once (PyYAML keeps the last)."""
    if not isinstance(key, str | int | float | bool) and key is not None:
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping",
            node.start_mark,
            "found an unhashable key",
            key_node.start_mark,
        )
    if key in data:
        raise DuplicateKey(
            "while constructing a mapping",
            node.start_mark,
            f"found duplicate key {key!r}",
            key_node.start_mark,
        )


def _pos(loader: _Loader, mark) -> Position:
    return Position(loader.source_name, mark.line + 1, mark.column + 1)


#: Plain scalar text -> its tag (str, int, bool, null...), shared by every read.
_PLAIN_TAGS: dict[str, str] = {}


class _Loader(_BaseLoader):
    source_name = "<string>"

    def resolve(self, kind, value, implicit):
        # libyaml asks for the tag of every scalar.  A plain scalar's tag follows from its
        # text alone (this loader has no path resolvers), and packs repeat the same texts
        # (types, names, true), so the regular expressions run once per text.
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_TAGS) < 50_000:  # bounded: a process reads many packs
                    _PLAIN_TAGS[value] = tag
            return tag
        return super().resolve(kind, value, implicit)

    def construct_yaml_map(self, node):
        data = YamlMap()
        data.position = _pos(self, node.start_mark)
        data.positions = {}
        yield data
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            _check_key(node, key_node, key, data)
            data[key] = self.construct_object(value_node, deep=True)
            data.positions[key] = _pos(self, key_node.start_mark)
            data.positions[("value", key)] = _pos(self, value_node.start_mark)

    def construct_yaml_seq(self, node):
        data = YamlList()
        data.position = _pos(self, node.start_mark)
        data.positions = {}
        yield data
        for index, child in enumerate(node.value):
            data.append(self.construct_object(child, deep=True))
            data.positions[index] = _pos(self, child.start_mark)

    # The generic constructor (generators, state stacks) costs more than parsing in C; the
    # tags definitions use are built directly here, anything else goes the generic way.
    def construct_document(self, node):
        self._built: dict[int, object] = {}
        try:
            return self._build(node)
        finally:
            self._built = {}
            self.constructed_objects = {}
            self.recursive_objects = {}

    def _build(self, node):
        tag = node.tag
        if tag == _STR:
            return node.value
        built = self._built.get(id(node))  # an alias of an anchor already built
        if built is not None:
            return built
        if tag == _MAP and isinstance(node, yaml.MappingNode):
            data = YamlMap()
            self._built[id(node)] = data
            mark = node.start_mark
            data.position = Position(self.source_name, mark.line + 1, mark.column + 1)
            positions = data.positions = {}
            while True:
                for key_node, value_node in node.value:
                    key_tag = key_node.tag
                    if key_tag == _STR:
                        key = key_node.value
                    elif key_tag in _FLATTENED:
                        break  # a merge key (<<): flatten the mapping and start again
                    else:
                        key = self._build(key_node)
                    if key.__class__ is not str or key in data:
                        _check_key(node, key_node, key, data)
                    data[key] = self._build(value_node)
                    mark, value_mark = key_node.start_mark, value_node.start_mark
                    positions[key] = (
                        mark.line + 1,
                        mark.column + 1,
                        value_mark.line + 1,
                        value_mark.column + 1,
                    )
                else:
                    return data
                data.clear()
                positions.clear()
                self.flatten_mapping(node)
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            items = YamlList()
            self._built[id(node)] = items
            mark = node.start_mark
            items.position = Position(self.source_name, mark.line + 1, mark.column + 1)
            positions = items.positions = {}
            for index, child in enumerate(node.value):
                items.append(child.value if child.tag == _STR else self._build(child))
                mark = child.start_mark
                positions[index] = (mark.line + 1, mark.column + 1)
            return items
        if tag in (_MAP, _SEQ):  # e.g. `!!map [1, 2]`
            expected = "mapping" if tag == _MAP else "sequence"
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a {expected}, but found a {node.id}", node.start_mark
            )
        if isinstance(node, yaml.ScalarNode) and tag in self.yaml_constructors:
            return self.yaml_constructors[tag](self, node)  # int, float, bool, null...
        return self.construct_object(node, deep=True)  # sets, timestamps, unknown tags


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq"))
#: Key tags that SafeConstructor.flatten_mapping rewrites (merge keys, ``=``).
_FLATTENED = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")
_Loader.add_constructor(_MAP, _Loader.construct_yaml_map)
_Loader.add_constructor(_SEQ, _Loader.construct_yaml_seq)


class YamlSyntaxError(Exception):
    def __init__(self, position: Position, message: str):
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message


def load_yaml(text: str, path: str = "<string>"):
    """Parse one YAML document, returning YamlMap/YamlList trees with positions.

    Raises YamlSyntaxError with the position of the problem.
    """
    loader = _Loader(text)
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
