"""`make up` / `make down` / `make status` on a real, isolated stack."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.supervisor import Supervisor
from tests.isolated import isolated_env, isolated_run_dir, ops

pytestmark = [pytest.mark.stack, pytest.mark.own_stack]


@pytest.fixture()
def run_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = isolated_run_dir(request.node.name)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _recorded_pids(run_dir: Path) -> dict[str, int]:
    supervisor = Supervisor(run_dir)
    pids = {}
    for pid_file in (run_dir / "pids").glob("*.pid"):
        tracked = supervisor.tracked(pid_file.stem)
        if tracked is not None:
            pids[pid_file.stem] = tracked.pid
    return pids


def test_up_twice_is_a_no_op_and_down_leaves_no_process(run_dir: Path) -> None:
    env = isolated_env(run_dir)
    try:
        first = ops(env, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        pids = _recorded_pids(run_dir)
        assert {"kafka", "postgres", "redis", "api", "bridge", "recorder", "flower"} <= set(pids)
        assert any(name.startswith("worker-") for name in pids)
        groups = {pid: Supervisor(run_dir).group_members(pid) for pid in pids.values()}

        second = ops(env, "up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "started" not in second.stdout
        assert _recorded_pids(run_dir) == pids

        status = ops(env, "status")
        assert status.returncode == 0, status.stdout
        for name in pids:
            assert any(
                line.split()[:2] == [name, "running"] for line in status.stdout.splitlines()
            ), status.stdout
    finally:
        down = ops(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    survivors = [member for members in groups.values() for member in members if _alive(member)]
    assert survivors == [], f"processes left behind: {survivors}"
    assert _recorded_pids(run_dir) == {}


def test_a_component_that_cannot_start_fails_up_with_its_name(run_dir: Path) -> None:
    env = isolated_env(run_dir)
    # Something else already listens on the Redis port: redis-server cannot bind.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", int(env["REDIS_PORT"])))
    blocker.listen()
    try:
        result = ops(env, "up", "redis", timeout=60)
    finally:
        blocker.close()
        ops(env, "down")
    assert result.returncode != 0
    assert "redis failed to start" in result.stderr
    assert "last lines of its log" in result.stderr


def test_bad_configuration_stops_up_naming_the_variable(run_dir: Path) -> None:
    env = isolated_env(run_dir, PRIORITY_WEIGHTS="high:6,medium:three,low:1")
    result = ops(env, "up", timeout=30)
    assert result.returncode == 2
    assert "PRIORITY_WEIGHTS" in result.stderr
    assert "three" in result.stderr
    assert not (run_dir / "pids").exists() or not list((run_dir / "pids").iterdir())
