"""API keys: issued once by the CLI, stored as SHA-256 hashes, one team each (or admin).

A key looks like `tpk_<key id>_<secret>`. Keys are long random strings, so a plain
SHA-256 is enough to store them (no password-stretching needed), and lookups by hash
are one indexed query, cached for a short while in each process.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import request
from sqlalchemy import Engine, func, insert, update

from app.errors import Forbidden, TooManyRequests, Unauthorized
from core.db import once_more_if_disconnected
from core.schema import api_keys

# How long a process trusts what it read of a key (known, unknown or revoked): a
# revocation reaches every API process within this long.
CACHE_SECONDS = 5.0
CACHE_MAX_UNKNOWN = 10_000
# Failed authentications per client address (per process): a sustained rate and a burst;
# past them the address gets 429 before its keys are looked up.
FAILURES_PER_SECOND = 5.0
FAILURE_BURST = 50.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    team: str | None
    is_admin: bool

    def may_act_for(self, team: str) -> bool:
        return self.is_admin or self.team == team

    def scope(self, team: str | None) -> str | None:
        """The team a query or a submission of this key covers: for an admin, `team` as
        asked (None: every team); for a team key, its own team. Raises Forbidden when a
        team key asks for another team."""
        if self.is_admin:
            return team
        if self.team is None:  # refused by the database (a CHECK); never every team
            raise Forbidden("this key belongs to no team")
        if team is not None and team != self.team:
            raise Forbidden(f"this key belongs to team {self.team!r}, not {team!r}")
        return self.team


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(4)
    return key_id, f"tpk_{key_id}_{secrets.token_urlsafe(24)}"


def create_key(engine: Engine, *, team: str | None, admin: bool) -> tuple[str, str]:
    key_id, key = new_key()
    with engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                key_id=key_id, key_hash=hash_key(key), team=team, is_admin=admin
            )
        )
    return key_id, key


class KeyStore:
    """Looks keys up by hash, remembering each answer (a principal, or unknown) for
    CACHE_SECONDS per process; a lookup in Postgres also stamps the key's last use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._unknown = 0
        self._lock = threading.Lock()
        self.failures = FailureLimiter()

    def cached(self, key: str) -> tuple[bool, Principal | None]:
        """(fresh, principal): whether this process read the key lately, and what it
        found then, however long ago (None: unknown, revoked, or never read)."""
        with self._lock:
            hit = self._cache.get(hash_key(key))
        if hit is None:
            return False, None
        return time.monotonic() - hit[0] < CACHE_SECONDS, hit[1]

    def lookup(self, key: str, *, fresh_only: bool = False) -> Principal | None:
        """The key's principal, or None. `fresh_only`: ask Postgres whatever is cached."""
        fresh, principal = self.cached(key)
        if fresh and not fresh_only:
            return principal
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)

        def read() -> Any:
            with self.engine.begin() as conn:
                return conn.execute(
                    update(api_keys)
                    .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                    .values(last_used_at=func.now())
                    .returning(api_keys.c.key_id, api_keys.c.team, api_keys.c.is_admin)
                ).first()

        # Stamping the last use again does no harm: a lookup may be tried twice.
        row = once_more_if_disconnected(read)
        principal = (
            Principal(key_id=row.key_id, team=row.team, is_admin=row.is_admin) if row else None
        )
        with self._lock:
            if principal is None and hit is None:
                self._unknown += 1
                if self._unknown > CACHE_MAX_UNKNOWN:  # a flood of made-up keys
                    self._cache = {d: e for d, e in self._cache.items() if e[1] is not None}
                    self._unknown = 0
            self._cache[digest] = (now, principal)
        return principal


class FailureLimiter:
    """A token bucket of failed authentications per client address."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (FAILURE_BURST, now))
        return min(FAILURE_BURST, tokens + (now - at) * FAILURES_PER_SECOND)

    def blocked(self, address: str) -> bool:
        with self._lock:
            return self._tokens(address, time.monotonic()) < 1.0

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > CACHE_MAX_UNKNOWN:
                self._buckets.clear()
            self._buckets[address] = (max(0.0, self._tokens(address, now) - 1.0), now)


def presented_key() -> str:
    """The key of this request (authenticate() has checked it)."""
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


def stream_owner(principal: Principal) -> str:
    """Whose stream it is, for the per-team share of stream slots."""
    return principal.team if principal.team is not None else f"admin:{principal.key_id}"


def authenticate(store: KeyStore) -> Principal:
    """The caller's principal from `Authorization: Bearer <key>`; raises Unauthorized."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise Unauthorized(
            "missing Authorization header; send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "the Authorization header must be `Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = key.strip()
    address = request.remote_addr or "unknown"
    fresh, principal = store.cached(key)
    if not fresh:
        # Only a lookup costs Postgres a query: an address that keeps failing waits, but
        # a key this process knew is read again (clients behind one address go on).
        if principal is None and store.failures.blocked(address):
            raise TooManyRequests(
                "too many failed authentications from this address; retry later",
                headers={"Retry-After": "1"},
            )
        principal = store.lookup(key)
    if principal is None:
        store.failures.failed(address)
        raise Unauthorized(
            "unknown or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal
