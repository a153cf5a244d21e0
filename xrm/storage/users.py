"""Platform users, their roles and teams, passwords and API tokens.

Passwords are hashed with werkzeug's scrypt/pbkdf2 helpers and must pass the database's
password policy (``passwords.py``); API tokens are random 256-bit strings shown once and
stored only as their SHA-256 digest (a token has enough entropy that a slow hash adds
nothing but latency on every API call).  A token may expire and can be revoked.
A user's session generation ends every browser session issued before it moved on.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from . import tables as T
from .database import WRITE
from .passwords import PasswordPolicy

#: werkzeug's scrypt at its default cost (N=32768, r=8, p=1: 32 MiB and about a tenth of a
#: second per hash).  ``XRM_PASSWORD_HASH`` names another werkzeug method for a whole
#: process, such as a cheap "scrypt:1024:8:1" for a test suite that creates users by the
#: thousand; a stored hash names its own method, so checking never depends on the setting.
DEFAULT_PASSWORD_HASH = "scrypt"

TOKEN_PREFIX = "xrm_"
#: How much of a token is kept in clear to tell tokens apart: the "xrm_" and 6 random
#: characters (36 of its 256 bits).
TOKEN_SHOWN = len(TOKEN_PREFIX) + 6
#: A token's last use is written at most this often (a write on every API call would
#: cost more than the answer is worth).
TOKEN_TOUCH = dt.timedelta(minutes=15)


class UserError(ValueError):
    pass


class PasswordRejected(UserError):
    """A new password the policy refuses; ``problems`` has one message per rule broken."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TokenCheck:
    """What a presented API token is: the user it acts for, or why it is refused."""

    user: sa.Row | None
    refusal: str | None = None  # unknown, revoked, expired, inactive


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """The stored form of a password, by the method of ``XRM_PASSWORD_HASH``."""
    method = os.environ.get("XRM_PASSWORD_HASH") or DEFAULT_PASSWORD_HASH
    return generate_password_hash(password, method=method)


@functools.cache
def dummy_password_hash() -> str:
    """A hash of the same kind as real ones, to check against when there is no user:
    an unknown or inactive email then costs exactly what a wrong password costs."""
    return hash_password(secrets.token_urlsafe(16))


class Users:
    """User administration bound to one store (mixed into Store)."""

    engine: sa.Engine

    def _write(self):
        # Any change to people may change someone's principal: drop the cached ones.
        self.forget_principals()
        return self.engine.connect().execution_options(**WRITE)

    def add_user(
        self,
        email: str,
        name: str | None = None,
        *,
        password: str | None = None,
        roles: Iterable[str] = (),
        teams: Iterable[str] = (),
        locale: str = "en",
        time_zone: str = "UTC",
        password_hash: str | None = None,
        account: int | None = None,
    ) -> int:
        """A new user; ``account`` is the id of the account record they belong to (a
        partner's user), which the roles' account scope reads."""
        email = email.strip().lower()
        if "@" not in email:
            raise UserError(f"not an email address: {email!r}")
        roles = list(roles)
        catalog = self.refresh()
        unknown = [r for r in roles if r not in catalog.roles]
        if unknown:
            raise UserError(
                f"unknown role {unknown[0]!r} (known: {', '.join(sorted(catalog.roles)) or 'none'})"
            )
        if account is not None:
            self._check_account(account)
        if password is not None:
            self.check_new_password(password, email)
            password_hash = hash_password(password)
        with self._write() as conn, conn.begin():
            if conn.execute(sa.select(T.users.c.id).where(T.users.c.email == email)).first():
                raise UserError(f"a user with email {email} exists already")
            user_id = conn.execute(
                T.users.insert()
                .values(
                    email=email,
                    name=name or email.split("@")[0],
                    locale=locale,
                    time_zone=time_zone,
                    password_hash=password_hash,
                    created_at=self.clock.now(),
                    account_id=account,
                )
                .returning(T.users.c.id)
            ).scalar_one()
            for role in roles:
                conn.execute(T.user_roles.insert().values(user_id=user_id, role=role))
            for team in teams:
                conn.execute(
                    T.team_members.insert().values(
                        team_id=self._team_id(conn, team), user_id=user_id
                    )
                )
        return user_id

    def set_account(self, user_id: int, account: int | None) -> None:
        """Link a user to the account record they belong to (None: to none)."""
        if self.user(user_id) is None:
            raise UserError(f"no user {user_id}")
        if account is not None:
            self._check_account(account)
        with self._write() as conn, conn.begin():
            conn.execute(T.users.update().where(T.users.c.id == user_id).values(account_id=account))

    def _check_account(self, account) -> None:
        from ..metadata.model import ACCOUNT_ENTITY
        from .records import NotFound

        if self.refresh().entity_of(ACCOUNT_ENTITY) is None:
            raise UserError(f"no {ACCOUNT_ENTITY} entity is installed to link users to")
        if isinstance(account, bool) or not isinstance(account, int):
            raise UserError(f"an account is given by its id, not {account!r}")
        try:
            self.records(ACCOUNT_ENTITY).get(account, fields=["id"])
        except NotFound:
            raise UserError(f"no {ACCOUNT_ENTITY} {account}") from None

    def find_account(self, text: str) -> int:
        """An account's id from its id or its exact title (for commands and forms)."""
        from ..metadata.model import ACCOUNT_ENTITY

        text = str(text).strip()
        if text.isdigit():
            account = int(text)
            self._check_account(account)
            return account
        entity = self.refresh().entity_of(ACCOUNT_ENTITY)
        if entity is None or not entity.title:
            raise UserError(f"no {ACCOUNT_ENTITY} entity is installed to link users to")
        rows = self.records(ACCOUNT_ENTITY).query(filter=[entity.title, "eq", text], limit=2).rows
        if len(rows) != 1:
            found = "no" if not rows else "more than one"
            raise UserError(f"{found} {ACCOUNT_ENTITY} named {text!r}")
        return rows[0]["id"]

    def users_of_account(self, account: int) -> list[int]:
        """The ids of the users linked to an account record."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(T.users.c.id).where(T.users.c.account_id == account)
                ).scalars()
            )

    def _team_id(self, conn, name: str) -> int:
        found = conn.execute(sa.select(T.teams.c.id).where(T.teams.c.name == name)).scalar()
        if found is not None:
            return found
        return conn.execute(T.teams.insert().values(name=name).returning(T.teams.c.id)).scalar_one()

    def set_roles(self, user_id: int, roles: Iterable[str]) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(T.user_roles.delete().where(T.user_roles.c.user_id == user_id))
            for role in roles:
                conn.execute(T.user_roles.insert().values(user_id=user_id, role=role))

    def add_to_team(self, user_id: int, team: str) -> int:
        with self._write() as conn, conn.begin():
            team_id = self._team_id(conn, team)
            exists = conn.execute(
                sa.select(T.team_members.c.user_id).where(
                    T.team_members.c.team_id == team_id, T.team_members.c.user_id == user_id
                )
            ).first()
            if not exists:
                conn.execute(T.team_members.insert().values(team_id=team_id, user_id=user_id))
            return team_id

    # -- passwords and sessions
    def password_policy(self) -> PasswordPolicy:
        return PasswordPolicy.from_settings(self.settings())

    def check_new_password(self, password: str, email: str = "") -> None:
        """Raise ``PasswordRejected`` (a ``UserError``) unless the policy accepts it."""
        problems = self.password_policy().problems(password, email)
        if problems:
            raise PasswordRejected(problems)

    def set_password(self, user_id: int, password: str) -> int:
        """Set a new password (checked against the policy) and end the user's sessions;
        returns the new session generation (to re-issue the session of whoever changed it)."""
        row = self.user(user_id)
        if row is None:
            raise UserError(f"no user {user_id}")
        self.check_new_password(password, row.email)
        password_hash = hash_password(password)
        with self._write() as conn, conn.begin():
            conn.execute(
                T.users.update().where(T.users.c.id == user_id).values(password_hash=password_hash)
            )
            return self._next_generation(conn, user_id)

    def end_sessions(self, user_id: int) -> int:
        """Invalidate every session and remember-me cookie of a user (signing out does this);
        returns the new session generation."""
        with self._write() as conn, conn.begin():
            return self._next_generation(conn, user_id)

    @staticmethod
    def _next_generation(conn, user_id: int) -> int:
        column = T.users.c.session_generation
        return conn.execute(
            T.users.update()
            .where(T.users.c.id == user_id)
            .values(session_generation=column + 1)
            .returning(column)
        ).scalar_one()

    def user(self, user_id: int):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(T.users).where(T.users.c.id == user_id)).first()

    def user_by_email(self, email: str):
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(T.users).where(T.users.c.email == email.strip().lower())
            ).first()

    def check_password(self, email: str, password: str):
        """The active user with this email and password, or None.

        Every path does the same work, one lookup and one hash check, so the time of the
        answer does not tell an unknown or inactive email from a wrong password."""
        user = self.user_by_email(email)
        usable = user is not None and user.active and bool(user.password_hash)
        matches = check_password_hash(
            user.password_hash if usable else dummy_password_hash(), password
        )
        return user if usable and matches else None

    # -- API tokens
    def create_token(
        self, user_id: int, name: str = "", *, expires_at: dt.datetime | None = None
    ) -> str:
        """A new token for a user, valid until ``expires_at`` (None: until revoked).
        The token is returned once; only its digest and first characters are kept."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as conn, conn.begin():
            conn.execute(
                T.tokens.insert().values(
                    user_id=user_id,
                    name=name,
                    token_hash=_digest(token),
                    prefix=token[:TOKEN_SHOWN],
                    created_at=self.clock.now(),
                    expires_at=expires_at,
                )
            )
        return token

    def check_token(self, token: str) -> TokenCheck:
        """The user a presented token acts for, or the reason it is refused."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return TokenCheck(None, "unknown")
        tokens = T.tokens
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(
                    tokens.c.id, tokens.c.revoked, tokens.c.expires_at, tokens.c.last_used_at
                ).where(tokens.c.token_hash == _digest(token))
            ).first()
            if found is None:
                return TokenCheck(None, "unknown")
            now = self.clock.now()
            if found.revoked:
                return TokenCheck(None, "revoked")
            if found.expires_at is not None and found.expires_at <= now:
                return TokenCheck(None, "expired")
            user = conn.execute(
                sa.select(T.users)
                .join(tokens, tokens.c.user_id == T.users.c.id)
                .where(tokens.c.id == found.id)
            ).first()
        if user is None or not user.active:
            return TokenCheck(None, "inactive")
        if found.last_used_at is None or now - found.last_used_at >= TOKEN_TOUCH:
            with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
                conn.execute(
                    tokens.update().where(tokens.c.id == found.id).values(last_used_at=now)
                )
        return TokenCheck(user)

    def user_for_token(self, token: str):
        """The active user a valid (known, unrevoked, unexpired) token acts for, or None."""
        return self.check_token(token).user

    def revoke_token(self, token: str) -> bool:
        with self._write() as conn, conn.begin():
            return (
                conn.execute(
                    T.tokens.update()
                    .where(T.tokens.c.token_hash == _digest(token))
                    .values(revoked=True)
                ).rowcount
                == 1
            )

    def revoke_token_id(self, token_id: int) -> bool:
        """Revoke a token by its id (what listings show); False if there is no such token."""
        with self._write() as conn, conn.begin():
            return (
                conn.execute(
                    T.tokens.update().where(T.tokens.c.id == token_id).values(revoked=True)
                ).rowcount
                == 1
            )

    def tokens(self, user_id: int | None = None) -> list:
        """API tokens (never their secret), newest first, with their owner's email:
        id, prefix, name, user_id, email, created_at, last_used_at, expires_at, revoked."""
        tokens = T.tokens
        query = (
            sa.select(
                tokens.c.id,
                tokens.c.prefix,
                tokens.c.name,
                tokens.c.user_id,
                T.users.c.email,
                tokens.c.created_at,
                tokens.c.last_used_at,
                tokens.c.expires_at,
                tokens.c.revoked,
            )
            .join(T.users, T.users.c.id == tokens.c.user_id)
            .order_by(tokens.c.id.desc())
        )
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def users(self) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(T.users).order_by(T.users.c.id)).all()

    def set_preferences(
        self,
        user_id: int,
        *,
        locale: str | None = None,
        time_zone: str | None = None,
        name: str | None = None,
    ) -> None:
        """A user's language, time zone and display name (what is None stays)."""
        values = {
            k: v for k, v in (("locale", locale), ("time_zone", time_zone), ("name", name)) if v
        }
        if values:
            with self._write() as conn, conn.begin():
                conn.execute(T.users.update().where(T.users.c.id == user_id).values(**values))

    def home_dashboard(self, user_id: int) -> str | None:
        """The dashboard a user chose as their home page (None: none chosen)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(T.users.c.home_dashboard).where(T.users.c.id == user_id)
            ).scalar()

    def set_home_dashboard(self, user_id: int, name: str | None) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                T.users.update().where(T.users.c.id == user_id).values(home_dashboard=name)
            )

    def set_active(self, user_id: int, active: bool) -> None:
        """Deactivate (or reactivate) a user: an inactive user cannot sign in or use tokens."""
        with self._write() as conn, conn.begin():
            conn.execute(
                T.users.update().where(T.users.c.id == user_id).values(active=bool(active))
            )

    def remove_from_team(self, user_id: int, team: str) -> None:
        with self._write() as conn, conn.begin():
            team_id = conn.execute(sa.select(T.teams.c.id).where(T.teams.c.name == team)).scalar()
            if team_id is not None:
                conn.execute(
                    T.team_members.delete().where(
                        T.team_members.c.team_id == team_id, T.team_members.c.user_id == user_id
                    )
                )

    def teams(self) -> dict[str, list[int]]:
        """Team name -> ids of its members."""
        with self.engine.connect() as conn:
            result: dict[str, list[int]] = {
                name: []
                for name in conn.execute(
                    sa.select(T.teams.c.name).order_by(T.teams.c.name)
                ).scalars()
            }
            rows = conn.execute(
                sa.select(T.teams.c.name, T.team_members.c.user_id).join(
                    T.team_members, T.team_members.c.team_id == T.teams.c.id
                )
            )
            for name, user_id in rows:
                result[name].append(user_id)
            return result

    def user_roles(self) -> dict[int, list[str]]:
        """User id -> the names of their roles."""
        with self.engine.connect() as conn:
            result: dict[int, list[str]] = {}
            for user_id, role in conn.execute(
                sa.select(T.user_roles.c.user_id, T.user_roles.c.role).order_by(T.user_roles.c.role)
            ):
                result.setdefault(user_id, []).append(role)
            return result

    # -- a user's own variants of list views
    def saved_views(self, user_id: int, view: str | None = None) -> list:
        query = sa.select(T.saved_views).where(T.saved_views.c.user_id == user_id)
        if view is not None:
            query = query.where(T.saved_views.c.view == view)
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(T.saved_views.c.name, T.saved_views.c.id)).all()

    def save_view(self, user_id: int, view: str, name: str, state: dict) -> int:
        """Save (or replace, by name) a user's variant of a view."""
        name = name.strip()[:100]
        if not name:
            raise UserError("a saved view needs a name")
        with self._write() as conn, conn.begin():
            table = T.saved_views
            found = conn.execute(
                sa.select(table.c.id).where(
                    table.c.user_id == user_id, table.c.view == view, table.c.name == name
                )
            ).scalar()
            if found is not None:
                conn.execute(table.update().where(table.c.id == found).values(state=state))
                return found
            return conn.execute(
                table.insert()
                .values(
                    user_id=user_id, view=view, name=name, state=state, created_at=self.clock.now()
                )
                .returning(table.c.id)
            ).scalar_one()

    def delete_saved_view(self, user_id: int, saved_id: int) -> bool:
        with self._write() as conn, conn.begin():
            table = T.saved_views
            return (
                conn.execute(
                    table.delete().where(table.c.id == saved_id, table.c.user_id == user_id)
                ).rowcount
                == 1
            )
