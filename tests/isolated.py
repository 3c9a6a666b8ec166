"""A second, isolated stack (its own Kafka, Postgres and Redis too) for tests that stop
or break the infrastructure: its own run folder and ports, so the main stack that other
tests use is untouched."""

from __future__ import annotations

import os
from pathlib import Path

from ops.credentials import provision_all
from testing.instance import PORT_VARIABLES, REPO, free_port, isolated_run_dir, run_ops

__all__ = ["PORT_VARIABLES", "REPO", "free_port", "isolated_env", "isolated_run_dir", "ops"]

ops = run_ops


def isolated_env(run_dir: Path, *, provision: bool = True, **extra: str) -> dict[str, str]:
    """Environment for `python -m ops` that points every port and the run folder elsewhere.
    The run folder's secrets are made now, so settings computed before `ops up` (as
    tests.faults.harness.isolated_settings does) carry the passwords the stack will ask for."""
    if provision:
        provision_all(run_dir)
    env = {k: v for k, v in os.environ.items() if k not in PORT_VARIABLES}
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    env["RUN_DIR"] = str(run_dir)
    env["KAFKA_HEAP"] = "256m"
    env.update(extra)
    return env
