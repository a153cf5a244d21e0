"""Entry points of the metadata engine: find packs, read them, build a catalog."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .bulk import collector_paused
from .catalog import Catalog
from .compiler import build_catalog
from .packs import (
    Document,
    PackSource,
    discover,
    pack_folders,
    parse_pack,
    read_pack_files,
    unknown_folders,
)
from .problems import DefinitionError, Problems
from .source import Position


def _display_root(folder: Path) -> str:
    try:
        return os.path.relpath(folder)
    except ValueError:  # another drive on Windows
        return str(folder)


def read_pack(folder: Path, problems: Problems) -> PackSource | None:
    try:
        files = read_pack_files(folder)
    except OSError as exc:
        problems.add(Position(str(folder), 1, 1), "", f"cannot read pack: {exc}")
        return None
    pack = parse_pack(files, _display_root(folder), problems)
    if pack is not None:
        unknown_folders(folder, pack.root, pack.name, problems)
    return pack


def resolve_packs(
    paths: Iterable[str | os.PathLike] = (),
    problems: Problems | None = None,
    *,
    with_dependencies: bool = True,
) -> list[PackSource]:
    """Read the packs at ``paths`` (all discovered packs when empty) and what they need."""
    problems = problems if problems is not None else Problems()
    paths = [Path(p) for p in paths]
    if paths:
        folders = []
        for path in paths:
            found = pack_folders(path)
            if not found:
                problems.add(
                    Position(str(path), 1, 1), "", "no solution.yaml here or in the folders inside"
                )
            folders.extend(found)
    else:
        folders = list(discover().values())
    packs: dict[str, PackSource] = {}
    for folder in folders:
        pack = read_pack(folder, problems)
        if pack is not None and pack.name not in packs:
            packs[pack.name] = pack
    if with_dependencies:
        available = None
        pending = list(packs.values())
        while pending:
            pack = pending.pop()
            for dep in pack.depends:
                if dep in packs:
                    continue
                available = available if available is not None else discover()
                if dep in available:
                    found = read_pack(available[dep], problems)
                    if found is not None:
                        packs[found.name] = found
                        pending.append(found)
    return list(packs.values())


@collector_paused()
def load_catalog(
    paths: Iterable[str | os.PathLike] = (), layer: Sequence[Document] = (), version: int = 0
) -> Catalog:
    """Read, validate and compile packs; raises DefinitionError with every problem."""
    problems = Problems()
    packs = resolve_packs(paths, problems)
    return build_catalog(packs, layer, version, problems)


def check(paths: Iterable[str | os.PathLike] = ()) -> tuple[Catalog | None, list]:
    """Like load_catalog, but returns the problems instead of raising."""
    try:
        return load_catalog(paths), []
    except DefinitionError as exc:
        return None, exc.problems
