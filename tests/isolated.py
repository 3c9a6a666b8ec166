"""A second, isolated instance of the stack for tests that stop or break things:
its own run folder and ports, so the main stack that other tests use is untouched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORT_VARIABLES = (
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "API_PORT",
    "FLOWER_PORT",
)


def isolated_run_dir(name: str) -> Path:
    """A fresh run folder inside the repository's `.run/` (the Postgres service user can
    reach it there, unlike pytest's private temporary folders)."""
    path = REPO / ".run" / "isolated" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for `python -m ops` that points every port and the run folder elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in PORT_VARIABLES}
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    env["RUN_DIR"] = str(run_dir)
    env["KAFKA_HEAP"] = "256m"
    env.update(extra)
    return env


def ops(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
