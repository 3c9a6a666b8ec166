"""The client installs on its own: into a new virtual environment with nothing of the
platform (`pip install ./client`, its dependencies from PyPI), and from there submits a
task and waits for its result, with the library and with the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]

CLIENT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, sys

    # Nothing of the platform is importable here: only the client and what it needs.
    assert not any(importlib.util.find_spec(name) for name in ("app", "core", "tests")), sys.path
    from taskplatform_client import Client, __file__ as where

    assert where.startswith(sys.prefix), where
    with Client(os.environ["TASKPLATFORM_URL"], os.environ["TASKPLATFORM_API_KEY"]) as client:
        task = client.submit("bravo", "echo", {"from": "a clean venv"})
        print(json.dumps({"task_id": task.id, "result": task.result(timeout=60)}))
    """
)


@pytest.mark.timeout(240)
def test_pip_install_into_a_clean_venv_then_submit_and_wait(
    tmp_path: Path, api_url: str, team_key: Callable[[str], str]
) -> None:
    venv = tmp_path / "venv"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "TASKPLATFORM_URL": api_url,
        "TASKPLATFORM_API_KEY": team_key("bravo"),
    }

    def run(*command: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(part) for part in command],
            cwd=tmp_path,  # not the repository: nothing of it on sys.path
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    # A copy: setuptools builds in the source folder, which is not this test's to litter.
    source = shutil.copytree(
        CLIENT, tmp_path / "client", ignore=shutil.ignore_patterns("build", "*.egg-info", "tests")
    )
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", source)
    script = tmp_path / "submit.py"
    script.write_text(SCRIPT)
    answer = json.loads(run(venv / "bin" / "python", script, timeout=90).stdout)
    assert answer["result"] == {"from": "a clean venv"}
    command = run(
        venv / "bin" / "taskplatform",
        "submit",
        "--team=bravo",
        "--routine=echo",
        '--payload={"by": "the command"}',
        "--wait=60",
        "--json",
        timeout=90,
    )
    assert json.loads(command.stdout)["result"] == {"by": "the command"}
