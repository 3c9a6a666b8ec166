"""The client's suite runs against the real platform, with the repository's fixtures
(tests/conftest.py: the running stack, its URL, keys made in its database) and its
session hooks (every process a test starts is gone at the end).

Run it from the repository root (`python -m pytest client/tests`, or `make test`, whose
testpaths include it). This folder is not a package (its name would shadow the
repository's `tests`), so its modules have names of their own: test_client_*.py.

The fixtures are imported, not named in `pytest_plugins`: a run of the whole suite loads
tests/conftest.py as a conftest too, and pytest refuses the same module twice. Imported,
they are this folder's own (a whole-suite run makes its session fixtures once for each
folder), and the hooks run once for each (harmless: one token wins, leftovers are stopped
once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from taskplatform_client import Client

import tests.conftest as repository

# The repository's fixtures and session hooks, as this folder's own.
settings = repository.settings
stack = repository.stack
engine = repository.engine
api_url = repository.api_url
admin_key = repository.admin_key
team_key = repository.team_key
pytest_configure = repository.pytest_configure
pytest_sessionfinish = repository.pytest_sessionfinish


@pytest.fixture()
def client(api_url: str, admin_key: str) -> Iterator[Client]:
    """A client with the admin key."""
    with Client(api_url, admin_key) as made:
        yield made


@pytest.fixture()
def team_client(api_url: str, team_key: Callable[[str], str]) -> Iterator[Client]:
    """A client with team alpha's key."""
    with Client(api_url, team_key("alpha")) as made:
        yield made
