"""`flask --app app keys create|list|revoke`: issuing, listing and revoking API keys.

Operators and the test harness issue keys through this command, so nothing outside app/
needs to know how keys are made or stored."""

from __future__ import annotations

from datetime import datetime

import click
import orjson
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select, update

from app.auth import create_key
from app.services import services
from core.schema import api_keys
from core.settings import Settings


def register_cli(app: Flask) -> None:
    app.cli.add_command(keys)


@click.group("keys", cls=AppGroup)
def keys() -> None:
    """Issue, list and revoke API keys."""


@keys.command("create")
@click.argument("team", required=False)
@click.option("--admin", is_flag=True, help="a key that may act for any team")
def create(team: str | None, admin: bool) -> None:
    """Print a new key for TEAM (shown once; only its hash is stored)."""
    settings: Settings = current_app.config["SETTINGS"]
    if admin and team:
        raise click.UsageError("an admin key belongs to no team; give --admin or a team")
    if not admin:
        if not team:
            raise click.UsageError("name a team, or pass --admin")
        if team not in settings.teams:
            raise click.UsageError(f"unknown team {team!r}; TEAMS is {','.join(settings.teams)}")
    key_id, key = create_key(services().engine, team=team, admin=admin)
    click.echo(key)
    who = "admin" if admin else f"team {team}"
    click.echo(f"key {key_id} for {who}: store it now, it is not shown again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per key")
def list_keys(as_json: bool) -> None:
    """Each key's id, team, creation, last use and revocation (never the key itself)."""
    with services().engine.connect() as conn:
        rows = conn.execute(
            select(
                api_keys.c.key_id,
                api_keys.c.team,
                api_keys.c.is_admin,
                api_keys.c.created_at,
                api_keys.c.last_used_at,
                api_keys.c.revoked_at,
            ).order_by(api_keys.c.created_at)
        ).all()
    for row in rows:
        entry = {
            "key_id": row.key_id,
            "team": "(admin)" if row.is_admin else row.team,
            "created": _when(row.created_at),
            "last_used": _when(row.last_used_at),
            "revoked": _when(row.revoked_at),
        }
        if as_json:
            click.echo(orjson.dumps(entry).decode())
        else:
            click.echo("  ".join(f"{name}={value}" for name, value in entry.items()))


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


@keys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke the key with this id (the part after `tpk_`)."""
    with services().engine.begin() as conn:
        done = conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        ).rowcount
    if not done:
        raise click.ClickException(f"no active key with id {key_id!r}")
    click.echo(f"revoked {key_id}")
