"""`/api/v1`: the parent of the API's blueprints. Its one hook authenticates every request
below it before any view runs, so a view never forgets to."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, g

from app.auth import Principal, authenticate
from app.services import services

PREFIX = "/api/v1"


def _authenticate() -> None:
    g.principal = authenticate(services().keys)


def principal() -> Principal:
    """The caller of this /api/v1 request (set by the parent's hook)."""
    found: Principal = g.principal
    return found


def api_blueprint(children: Iterable[tuple[Blueprint, str]]) -> Blueprint:
    """A fresh /api/v1 blueprint holding each child at its prefix (a blueprint can be
    nested only before it is registered, so each app gets its own parent)."""
    parent = Blueprint("api", __name__, url_prefix=PREFIX)
    parent.before_request(_authenticate)
    for child, prefix in children:
        parent.register_blueprint(child, url_prefix=prefix)
    return parent
