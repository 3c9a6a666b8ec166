"""The stack runs from any checkout: a run folder whose path is far longer than a Unix
socket path may be (107 bytes) starts every component and carries a task end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth import create_key
from core import credentials
from core.db import make_engine
from core.settings import Settings
from ops import postgres_node
from tests.faults.harness import isolated_settings
from tests.helpers import wait_for
from tests.isolated import isolated_env, isolated_run_dir, ops

pytestmark = [pytest.mark.own_stack, pytest.mark.stack, pytest.mark.slow]

COMPONENTS = ["kafka", "postgres", "redis", "api", "recorder", "bridge", "worker-1"]
MIN_LENGTH = 150


@pytest.fixture()
def long_run_dir() -> Iterator[Path]:
    top = isolated_run_dir("checkout-path")
    path = top
    while len(str(path)) <= MIN_LENGTH + 10:
        path = path / "a-folder-deep-inside-someones-home-directory"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(top, ignore_errors=True)


def _postgres_tools_answer(settings: Settings, data: Path) -> None:
    """The Postgres client tools an operator would reach for work against the TCP-only
    cluster (given -h, as for any server without a socket in the default place, and the
    superuser's password from the run folder)."""
    tools = postgres_node.bin_dir()
    port = str(settings.postgres_port)
    password = credentials.read(settings.run_dir, credentials.POSTGRES_SUPERUSER)
    assert password
    env = {**os.environ, "PGPASSWORD": password}
    ready = subprocess.run(
        [str(tools / "pg_isready"), "-h", "127.0.0.1", "-p", port, "-U", "postgres"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ready.returncode == 0, ready.stdout + ready.stderr
    query = subprocess.run(
        [
            str(tools / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres",
            "-d", "taskplatform", "-AtXc", "SELECT count(*) FROM alembic_version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )  # fmt: skip
    assert query.returncode == 0 and query.stdout.strip() == "1", query.stdout + query.stderr
    status = subprocess.run(
        [str(tools / "pg_ctl"), "status", "-D", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
        user=postgres_node.run_as(),
    )
    assert status.returncode == 0 and "server is running" in status.stdout, status.stderr
    assert not list(data.glob(".s.PGSQL.*")), "the cluster still made a Unix socket"


def test_a_run_folder_longer_than_150_characters_runs_a_task(long_run_dir: Path) -> None:
    assert len(str(long_run_dir.resolve())) > MIN_LENGTH
    env = isolated_env(long_run_dir)
    settings = isolated_settings(env)
    engine = None
    try:
        result = ops(env, "up", *COMPONENTS, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        _postgres_tools_answer(settings, postgres_node.data_dir(long_run_dir))

        engine = make_engine(settings, pool_size=1, application="tests")
        key = create_key(engine, team=None, admin=True)[1]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{settings.api_port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            accepted = client.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"})
            assert accepted.status_code == 202, accepted.text
            task_id = accepted.json()["task_id"]

            def succeeded() -> bool:
                task = client.get(f"/api/v1/tasks/{task_id}")
                assert task.status_code == 200, task.text
                return bool(task.json()["status"] == "SUCCEEDED")

            wait_for(succeeded, timeout=60, interval=0.2, what=f"task {task_id} to succeed")
    finally:
        if engine is not None:
            engine.dispose()
        down = ops(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
