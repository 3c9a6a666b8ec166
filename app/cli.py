"""`flask --app app keys create|revoke`: issuing and revoking API keys.

Operators and the test harness issue keys through this command, so nothing outside app/
needs to know how keys are made or stored."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, update

from app.auth import create_key
from app.services import services
from core.schema import api_keys
from core.settings import Settings


def register_cli(app: Flask) -> None:
    app.cli.add_command(keys)


@click.group("keys", cls=AppGroup)
def keys() -> None:
    """Issue and revoke API keys."""


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
