"""The YAML reader behind ``source.load_yaml``: libyaml's parser with a constructor that
builds ``YamlMap``/``YamlList`` trees remembering where every key and item starts.

Kept apart from ``source`` so that a process whose definitions all come from the parse
cache never imports PyYAML (its import compiles large regular expressions).
"""

from __future__ import annotations

import yaml

from .source import Position, YamlList, YamlMap

try:  # libyaml's parser is several times faster; the constructor stays ours either way
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader


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


def _pos(loader: Loader, mark) -> Position:
    return Position(loader.source_name, mark.line + 1, mark.column + 1)


#: Plain scalar text -> its tag (str, int, bool, null...), shared by every read.
_PLAIN_TAGS: dict[str, str] = {}


class Loader(_BaseLoader):
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
Loader.add_constructor(_MAP, Loader.construct_yaml_map)
Loader.add_constructor(_SEQ, Loader.construct_yaml_seq)
