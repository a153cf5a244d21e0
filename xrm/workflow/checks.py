"""Checks of process definitions against a database: the users (``user:EMAIL``) and teams
(``team:NAME``) steps name exist there.  ``xrm check`` without a database cannot know
them; with one (``xrm check --database URL``) it reports them at their step's line."""

from __future__ import annotations

import sqlalchemy as sa

from ..metadata import Catalog
from ..metadata.problems import Problem, did_you_mean
from ..metadata.processes import as_list
from ..metadata.source import Position
from ..storage import tables as T

RECIPIENT_KEYS = ("to", "approvers", "owner")


def referenced(catalog: Catalog):
    """(step, process name, kind, name) for every user: and team: reference."""
    for process in catalog.processes.values():
        for step in process.walk():
            spec = step.spec if isinstance(step.spec, dict) or hasattr(step.spec, "items") else {}
            values = [spec.get(key) for key in RECIPIENT_KEYS] + [
                rule.get("to") for rule in spec.get("rules") or ()
            ]
            for value in values:
                for item in as_list(value):
                    prefix, sep, rest = str(item).partition(":")
                    if sep and prefix in ("user", "team"):
                        yield step, process.name, prefix, rest


def database_problems(store, catalog: Catalog | None = None) -> list[Problem]:
    """Problems of ``catalog`` (default: the store's own) against the store's users and
    teams."""
    catalog = catalog or store.refresh()
    with store.engine.connect() as conn:
        emails = set(
            conn.execute(sa.select(T.users.c.email).where(T.users.c.active.is_(True))).scalars()
        )
        teams = set(conn.execute(sa.select(T.teams.c.name)).scalars())
    problems = []
    for step, process, kind, name in referenced(catalog):
        where = step.position or Position(f"processes/{process}", 1, 1)
        subject = f"processes.{process}"
        if kind == "user" and name.strip().lower() not in emails:
            problems.append(
                Problem(
                    where,
                    subject,
                    f"no active user with email {name!r} in this database{did_you_mean(name, emails)}",
                )
            )
        elif kind == "team" and name not in teams:
            problems.append(
                Problem(
                    where, subject, f"no team {name!r} in this database{did_you_mean(name, teams)}"
                )
            )
    return problems
