"""xrm: a low-code XRM platform.  ``xrm.open(url)`` gives an application object."""

from __future__ import annotations

__version__ = "0.1.0"


def open(url: str | None = None, **options):  # noqa: A001 - the platform's entry point
    """Open (and initialize if new) the platform on a database URL.

    ``None`` means ``XRM_DATABASE_URL`` or the embedded SQLite file ``instance/xrm.db``.
    """
    from .storage.store import Store

    return Store(url, **options)
