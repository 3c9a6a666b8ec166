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

import click
from flask import Flask, current_app, request
from sqlalchemy import Engine, func, insert, select, update

from app.errors import Forbidden, Unauthorized
from core.schema import api_keys
from core.settings import Settings

CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    team: str | None
    is_admin: bool

    def may_act_for(self, team: str) -> bool:
        return self.is_admin or self.team == team

    def check_team(self, team: str) -> None:
        if not self.may_act_for(team):
            raise Forbidden(f"this key belongs to team {self.team!r}, not {team!r}")


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


def register_cli(app: Flask) -> None:
    @app.cli.group("keys")
    def keys() -> None:
        """Issue and revoke API keys."""

    @keys.command("create")
    @click.argument("team", required=False)
    @click.option("--admin", is_flag=True, help="a key that may act for any team")
    def create(team: str | None, admin: bool) -> None:
        """Print a new key for TEAM (shown once; only its hash is stored)."""
        from app.services import services

        settings: Settings = current_app.config["SETTINGS"]
        if admin and team:
            raise click.UsageError("an admin key belongs to no team; give --admin or a team")
        if not admin:
            if not team:
                raise click.UsageError("name a team, or pass --admin")
            if team not in settings.teams:
                raise click.UsageError(
                    f"unknown team {team!r}; TEAMS is {','.join(settings.teams)}"
                )
        key_id, key = create_key(services().engine, team=team, admin=admin)
        click.echo(key)
        who = "admin" if admin else f"team {team}"
        click.echo(f"key {key_id} for {who}: store it now, it is not shown again", err=True)

    @keys.command("revoke")
    @click.argument("key_id")
    def revoke(key_id: str) -> None:
        """Revoke the key with this id (the part after `tpk_`)."""
        from app.services import services

        with services().engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=func.now())
            ).rowcount
        if not done:
            raise click.ClickException(f"no active key with id {key_id!r}")
        click.echo(f"revoked {key_id}")
