"""Fixtures shared by all tests: settings, the running stack, API clients and keys.

Integration tests (marked `stack`) run against the real platform that `make test`
brings up (`python -m ops up`): Kafka, Postgres, Redis, the API, the bridge, the
recorder, Celery workers and Flower.

The run leaves no process of its own behind: every process it starts carries
TEST_SESSION_VARIABLE in its environment, and any still alive at the end (outside the
default stack) is a leak, stopped and reported, and fails the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from app.auth import create_key
from core.db import make_engine
from core.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
TEST_SESSION_VARIABLE = "TASKPLATFORM_TEST_SESSION"


def pytest_configure(config: pytest.Config) -> None:
    # Overwritten, not inherited: a pytest run by a test has leftovers of its own.
    os.environ[TEST_SESSION_VARIABLE] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _marked_processes(token: str) -> dict[int, str]:
    """Live processes (not zombies) whose environment carries this session's token,
    except this process and the default stack's components and their children."""
    marker = f"{TEST_SESSION_VARIABLE}={token}".encode()
    default_stack = set()  # process groups: each component leads its own
    with contextlib.suppress(Exception):
        for pid_file in (load_settings().run_dir / "pids").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                default_stack.add(int(pid_file.read_text().split()[0]))
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and int(group) not in default_stack:
            found[int(entry.name)] = cmdline.strip()[:120]
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it if it is a child of ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _stop(pids: list[int], timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for pid in pids if _alive(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    token = os.environ.get(TEST_SESSION_VARIABLE)
    if not token:
        return
    deadline = time.monotonic() + 5  # processes stopped a moment ago may still be exiting
    while (leftovers := _marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not leftovers:
        return
    _stop(list(leftovers))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{pid}: {command}" for pid, command in sorted(leftovers.items())]
    if reporter is not None:
        reporter.write_sep("=", f"{len(leftovers)} processes started by the tests outlived them")
        for line in lines:
            reporter.write_line(line)
    else:
        print("processes started by the tests outlived them:", *lines, sep="\n", file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    return load_settings()  # again: a first `up` has just made the stack's passwords


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
