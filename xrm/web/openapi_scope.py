"""The OpenAPI document as one caller may see it: the entities they cannot read at all are
left out (paths, schemas, tags), and so are the fields hidden from them (record, input and
bulk-item schemas), and the related lists they cannot follow.

The full document is built once per catalog version (``openapi.document_for``); a caller's
copy depends only on what their roles allow, so it is cached on the catalog per set of
roles: everyone with the same roles shares one, and a new catalog version starts afresh.
"""

from __future__ import annotations

import copy
import hashlib

from ..metadata import Catalog
from ..storage.security import Access
from . import openapi

#: The components an entity contributes to the document.
ENTITY_SCHEMAS = ("Record", "Input", "BulkItem", "Page", "BulkRequest")
#: The components holding one property per field.
FIELD_SCHEMAS = ("Record", "Input", "BulkItem")


def roles_key(access: Access) -> tuple:
    """What decides a caller's document: administrator or not, and the roles."""
    return (access.is_admin, tuple(sorted(access.principal.roles)))


def etag(catalog: Catalog, access: Access) -> str:
    """The document's version: the catalog's and the roles' (a user given another role
    must not be told that their cached document is still current)."""
    digest = hashlib.sha256(repr(roles_key(access)).encode()).hexdigest()[:16]
    return f"catalog-{catalog.version}-{digest}"


def document_for(catalog: Catalog, access: Access, locale: str = "en") -> dict:
    """The caller's document (administrators get the full one)."""
    full = openapi.document_for(catalog, locale)
    if access.is_admin:
        return full
    # What the roles allow, worked out before the artifact is built.
    unreadable = {n for n in catalog.entities if access.scope_of(n, "read") == "none"}
    hidden = {
        e.name: access.hidden(e) for e in catalog.entities.values() if e.name not in unreadable
    }
    key = ("openapi-for", locale, roles_key(access))
    return catalog.artifact(key, lambda: _narrowed(full, catalog, unreadable, hidden))


def _narrowed(
    full: dict, catalog: Catalog, unreadable: set[str], hidden: dict[str, set[str]]
) -> dict:
    document = copy.deepcopy(full)
    paths = document["paths"]
    for path in list(paths):
        if _drops_path(path, catalog, unreadable, hidden):
            del paths[path]
    schemas = document["components"]["schemas"]
    for name in unreadable:
        for suffix in ENTITY_SCHEMAS:
            schemas.pop(f"{name}.{suffix}", None)
    for name, fields in hidden.items():
        for suffix in FIELD_SCHEMAS:
            schema = schemas.get(f"{name}.{suffix}")
            if schema is not None and fields:
                _drop_properties(schema, fields)
    document["tags"] = [t for t in document.get("tags", ()) if t["name"] not in unreadable]
    return document


def _drops_path(
    path: str, catalog: Catalog, unreadable: set[str], hidden: dict[str, set[str]]
) -> bool:
    """Whether a records path is one the caller may not see: of an unreadable entity, or a
    related list through a hidden field or to an unreadable entity.  Other paths (meta,
    workflow, webhooks) are the same for everyone."""
    prefix = f"{openapi.API_PREFIX}/"
    if not path.startswith(prefix):
        return False
    parts = path[len(prefix) :].split("/")
    entity = catalog.entity_of(parts[0])
    if entity is None:
        return False
    if entity.name in unreadable:
        return True
    if len(parts) == 3 and parts[1] == "{id}":
        relation = entity.fields.get(parts[2])
        if relation is not None:
            return relation.name in hidden.get(entity.name, ()) or relation.target in unreadable
    return False


def _drop_properties(schema: dict, names: set[str]) -> None:
    properties = schema.get("properties", {})
    for name in names:
        properties.pop(name, None)
    if "required" in schema:
        schema["required"] = [n for n in schema["required"] if n not in names]
        if not schema["required"]:
            del schema["required"]
