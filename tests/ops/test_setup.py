"""`make setup` checks what it assumes (Python >= 3.11, Java >= 17) and says what is missing.

Run as `scripts/setup.sh --check` from a copy of the script with no `.venv/` beside it, so
the interpreter `.venv/` would be made from is chosen as on a fresh clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.isolated import REPO

DEBIAN_PYTHON = Path("/usr/bin/python3")


def _fake(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def _check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    fakes = tmp_path / "bin"
    fakes.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "setup.sh"), "--check"],
        env={**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _debian_python_is_new_enough() -> bool:
    if not DEBIAN_PYTHON.exists():
        return False
    probe = [str(DEBIAN_PYTHON), "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]
    return subprocess.run(probe).returncode == 0


@pytest.mark.skipif(not _debian_python_is_new_enough(), reason="no Debian python3 >= 3.11")
def test_debians_own_python3_is_accepted(tmp_path: Path) -> None:
    result = _check(tmp_path, PYTHON=str(DEBIAN_PYTHON))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"would be made from {DEBIAN_PYTHON}" in result.stdout


def test_a_python_older_than_3_11_is_named(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    old = _fake(
        tmp_path / "old",
        "python3",
        'case "$2" in *"version_info[:3]"*) echo 3.9.2 ;; *) exit 1 ;; esac\n',
    )
    result = _check(tmp_path, PYTHON=str(old))
    assert result.returncode == 1
    assert f"Python >= 3.11 is needed for .venv/; PYTHON={old} is Python 3.9.2" in result.stderr


def test_a_java_older_than_17_is_named(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    java = _fake(tmp_path / "bin", "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    result = _check(tmp_path, PYTHON=sys.executable)
    assert result.returncode == 1
    assert f"Java >= 17 is needed to run Kafka 4; {java} is Java 11" in result.stderr
