"""Metadata engine: YAML packs -> validated, immutable, versioned catalog.

Depends on nothing else of the platform; every other layer depends on it.
"""

from .catalog import Catalog, UnknownEntity
from .compiler import build_catalog
from .fieldtypes import FIELD_TYPES, CoercionError, FieldType, field_type
from .labels import Label
from .loader import check, load_catalog, resolve_packs
from .model import Entity, Field, OptionSet, View
from .packs import Document, PackSource, discover, parse_pack
from .problems import DefinitionError, Problem

__all__ = [
    "Catalog",
    "CoercionError",
    "DefinitionError",
    "Document",
    "Entity",
    "FIELD_TYPES",
    "Field",
    "FieldType",
    "Label",
    "OptionSet",
    "PackSource",
    "Problem",
    "UnknownEntity",
    "View",
    "build_catalog",
    "check",
    "discover",
    "field_type",
    "load_catalog",
    "parse_pack",
    "resolve_packs",
]
