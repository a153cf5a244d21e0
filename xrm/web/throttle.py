"""The sign-in throttle: failed sign-ins slow the next attempts down instead of locking the
account, counted in storage every worker shares.

Each failed sign-in counts against two keys: the account at this client address, and the
address whatever the account.  After ``XRM_LOGIN_FREE_FAILURES`` failures on a key (per
address: ``XRM_LOGIN_ADDRESS_FREE_FAILURES``) the next attempt on it waits 1 second, and
each further failure doubles the wait (2, 4, 8, ...), up to ``XRM_LOGIN_MAX_WAIT``.  During a
wait an attempt is answered 429 with ``Retry-After`` before the password is looked at,
and does not count.  A successful sign-in clears the account's key at that address; the
address's own key is not cleared, so signing in to one's own account does not reset a
guessing run against others.  A key nobody failed on for ``XRM_LOGIN_FORGET_AFTER``
seconds starts over.

Nothing counts per account alone: someone guessing from one address would then lock the
owner out everywhere, which is the failure this replaces.  The owner at another address
is never slowed by a guesser elsewhere.

The counters live in the database (``xrm_login_failure``), or in Redis when the
application has ``XRM_REDIS_URL``; time comes from the store's clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

import sqlalchemy as sa

from ..storage import tables as T
from ..storage.database import WRITE, is_postgres


@dataclass(frozen=True)
class Rules:
    free_failures: int
    address_free_failures: int
    max_wait: float
    forget_after: float

    @classmethod
    def from_config(cls, config) -> Rules:
        """The rules of an application's configuration (defaults in ``xrm.web.DEFAULTS``)."""
        return cls(
            int(config["XRM_LOGIN_FREE_FAILURES"]),
            int(config["XRM_LOGIN_ADDRESS_FREE_FAILURES"]),
            float(config["XRM_LOGIN_MAX_WAIT"]),
            float(config["XRM_LOGIN_FORGET_AFTER"]),
        )

    def wait_after(self, failures: int, free: int) -> float:
        """Seconds the next attempt waits after ``failures`` failures on a key: none
        before ``free`` failures, then 1, 2, 4, ... up to ``max_wait``."""
        if failures < free:
            return 0.0
        return min(self.max_wait, 2.0 ** min(failures - free, 30))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class DatabaseCounters:
    """Failure counters in ``xrm_login_failure`` (every worker on every machine sees them)."""

    def __init__(self, store):
        self.store = store

    def wait_until(self, keys: list[str]) -> dt.datetime | None:
        table = T.login_failures
        with self.store.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.max(table.c.wait_until)).where(table.c.key.in_(keys))
            ).scalar()

    def fail(self, keys: dict[str, int], rules: Rules, now: dt.datetime) -> None:
        table = T.login_failures
        forgotten = now - dt.timedelta(seconds=rules.forget_after)
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if is_postgres(conn):
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            for key, free in keys.items():
                # One statement per key, so that two workers failing at once both count.
                upsert = insert(table).values(key=key, failures=1, last_at=now)
                failures = conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[table.c.key],
                        set_={
                            "failures": sa.case(
                                (table.c.last_at < forgotten, 1), else_=table.c.failures + 1
                            ),
                            "last_at": now,
                        },
                    ).returning(table.c.failures)
                ).scalar_one()
                wait = rules.wait_after(failures, free)
                conn.execute(
                    table.update()
                    .where(table.c.key == key)
                    .values(wait_until=now + dt.timedelta(seconds=wait) if wait else None)
                )
            conn.execute(table.delete().where(table.c.last_at < forgotten))

    def clear(self, keys: list[str]) -> None:
        table = T.login_failures
        with self.store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(table.delete().where(table.c.key.in_(keys)))


class RedisCounters:
    """Failure counters in Redis hashes that expire once nobody fails on them for a while."""

    def __init__(self, url: str, prefix: str):
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = f"{prefix}:login:"

    def wait_until(self, keys: list[str]) -> dt.datetime | None:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self.prefix + key, "wait_until")
        stamps = [float(v) for v in pipe.execute() if v]
        return dt.datetime.fromtimestamp(max(stamps), dt.UTC) if stamps else None

    def fail(self, keys: dict[str, int], rules: Rules, now: dt.datetime) -> None:
        ttl = max(1, math.ceil(rules.forget_after))
        pipe = self.redis.pipeline(transaction=True)
        for key in keys:
            pipe.hincrby(self.prefix + key, "failures", 1)
            pipe.expire(self.prefix + key, ttl)
        counts = pipe.execute()[::2]
        pipe = self.redis.pipeline(transaction=True)
        for (key, free), failures in zip(keys.items(), counts):
            wait = rules.wait_after(int(failures), free)
            if wait:
                pipe.hset(self.prefix + key, "wait_until", now.timestamp() + wait)
            else:
                pipe.hdel(self.prefix + key, "wait_until")
        pipe.execute()

    def clear(self, keys: list[str]) -> None:
        self.redis.delete(*(self.prefix + key for key in keys))


class LoginThrottle:
    """The throttle of one application: ``wait`` before checking a password, then
    ``failed`` or ``succeeded``."""

    def __init__(self, store, config):
        self.store = store
        self.enabled = bool(config["XRM_LOGIN_THROTTLE"])
        self.rules = Rules.from_config(config)
        redis_url = config.get("XRM_REDIS_URL")
        self.counters = (
            RedisCounters(redis_url, config.get("XRM_REDIS_PREFIX") or "xrm")
            if redis_url
            else DatabaseCounters(store)
        )

    @staticmethod
    def _pair(email: str, address: str) -> str:
        return f"account:{_digest(email.strip().lower()[:254])}:{address}"

    @staticmethod
    def _address(address: str) -> str:
        return f"address:{address}"

    def wait(self, email: str, address: str) -> int:
        """Whole seconds before an attempt for this account from this address is
        considered; 0 when it may go ahead now."""
        if not self.enabled:
            return 0
        until = self.counters.wait_until([self._pair(email, address), self._address(address)])
        if until is None:
            return 0
        left = (until - self.store.clock.now()).total_seconds()
        return math.ceil(left) if left > 0 else 0

    def failed(self, email: str, address: str) -> None:
        if self.enabled:
            keys = {
                self._pair(email, address): self.rules.free_failures,
                self._address(address): self.rules.address_free_failures,
            }
            self.counters.fail(keys, self.rules, self.store.clock.now())

    def succeeded(self, email: str, address: str) -> None:
        if self.enabled:
            self.counters.clear([self._pair(email, address)])
