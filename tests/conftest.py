"""Fixtures shared by all tests: settings, the running stack, API clients and keys.

Integration tests (marked `stack`) run against the real platform that `make test`
brings up (`python -m ops up`): Kafka, Postgres, Redis, the API, the bridge, the
recorder, Celery workers and Flower.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from app.auth import create_key
from core.db import make_engine
from core.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running platform; started (idempotently) if it is not up."""
    try:
        if httpx.get(f"http://127.0.0.1:{settings.api_port}/healthz", timeout=2).status_code == 200:
            return settings
    except httpx.HTTPError:
        pass
    subprocess.run([sys.executable, "-m", "ops", "up"], cwd=REPO, check=True)
    return settings


@pytest.fixture(scope="session")
def engine(stack: Settings) -> Iterator[Engine]:
    engine = make_engine(stack, pool_size=2, application="tests")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def api_url(stack: Settings) -> str:
    return f"http://127.0.0.1:{stack.api_port}"


@pytest.fixture(scope="session")
def admin_key(engine: Engine) -> str:
    return create_key(engine, team=None, admin=True)[1]


@pytest.fixture(scope="session")
def team_key(engine: Engine) -> Callable[[str], str]:
    """A key for a team (one per team per test session)."""
    keys: dict[str, str] = {}

    def get(team: str) -> str:
        if team not in keys:
            keys[team] = create_key(engine, team=team, admin=False)[1]
        return keys[team]

    return get


@pytest.fixture()
def api(api_url: str, admin_key: str) -> Iterator[httpx.Client]:
    """An HTTP client for the API, authenticated as admin."""
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as client:
        yield client
