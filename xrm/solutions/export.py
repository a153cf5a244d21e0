"""The customization layer exported as a pack folder, to install on another instance.

Each document the administrators made (fields added, forms, views, reports, dashboards,
processes...) is written to the folder its kind belongs in, numbered in the layer's
order, under a manifest marked ``customization: true`` that depends on every pack
installed here at its installed version or newer.  Installed elsewhere
(``xrm solution install DIR``), its documents join that instance's customization layer,
where they keep the same meaning they had here: the layer's own rule (the top definition
wins; forms and navigation merge) and not the rules between packs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..metadata.model import thaw
from ..metadata.packs import KINDS, MANIFEST
from ..metadata.schemas import NAME_PATTERN


class ExportError(ValueError):
    """An export that cannot be written; nothing was written."""


def export_customizations(store, folder: Path, name: str, version: str = "1.0.0") -> list[Path]:
    """Write the customization layer to ``folder`` (new or empty) as pack ``name``; the
    files written, manifest first."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ExportError(
            f"pack name {name!r}: expected lower-case letters, digits and _, starting with a letter"
        )
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ExportError(f"{folder} is not empty: export into a new or empty folder")
    installed = store.installed_packs()
    if name in {p.name for p in installed}:
        raise ExportError(f"{name!r} is the name of an installed pack: choose another")
    layer = store.customization_documents()
    files: dict[str, str] = {
        MANIFEST: _yaml(
            {
                "solution": name,
                "version": version,
                "label": {"en": f"Customizations ({name})"},
                "customization": True,
                "depends": {p.name: f">={p.version}" for p in installed},
            }
        )
    }
    for number, (_place, document) in enumerate(layer, start=1):
        kind = KINDS[document.kind]
        files[f"{kind.folder}/{number:04d}-{_slug(document.kind, document.data)}.yaml"] = _yaml(
            thaw(document.data)
        )
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _slug(kind: str, data: Mapping) -> str:
    value = data.get(kind)
    if isinstance(value, Mapping):
        value = "-".join(str(k) for k in value)
    return re.sub(r"[^a-z0-9_-]+", "_", f"{kind}-{value}".lower())[:80]


def _yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
