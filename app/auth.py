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

from flask import request
from sqlalchemy import Engine, insert, select

from app.errors import Forbidden, Unauthorized
from core.schema import api_keys

CACHE_SECONDS = 30.0


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
    """Looks keys up by hash, with a short per-process cache of known keys."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.key_id, api_keys.c.team, api_keys.c.is_admin).where(
                    api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        principal = Principal(key_id=row.key_id, team=row.team, is_admin=row.is_admin)
        with self._lock:
            self._cache[digest] = (now, principal)
        return principal


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
    principal = store.lookup(key.strip())
    if principal is None:
        raise Unauthorized(
            "unknown or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal
