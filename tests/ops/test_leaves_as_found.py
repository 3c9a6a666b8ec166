"""`make test` leaves the machine as it found it: the default stack is stopped afterwards
only if `make test` started it, and no process a test started outlives the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.isolated import REPO

FAKE_PYTHON = """#!/bin/sh
echo "$*" >>"$CALLS"
case "$*" in
"-m ops status")
    echo "component  state          pid   port"
    if [ "$STACK" = up ]; then echo "kafka      running       4242   9092"; exit 1; fi
    echo "kafka      stopped          -   9092"; exit 1 ;;
"-m ops up") exit "${UP_EXIT:-0}" ;;
"-m pytest"*) exit 3 ;;
esac
exit 0
"""


def _make_pytest(tmp_path: Path, **env: str) -> tuple[str, list[str]]:
    """`make pytest` with a stand-in for .venv/bin/python; returns make's complaint about
    the recipe's exit code ("" if it succeeded) and the calls the recipe made."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO), "pytest", f"PY={fake}"],
        env={**os.environ, "CALLS": str(calls), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaint = result.stderr.strip().rsplit("] ", 1)[-1] if result.returncode else ""
    # pytest's own options (--durations) are not what these tests are about.
    made = calls.read_text().splitlines()
    return complaint, ["-m pytest" if c.startswith("-m pytest") else c for c in made]


def test_a_stack_it_started_is_stopped_and_pytests_exit_code_kept(tmp_path: Path) -> None:
    code, calls = _make_pytest(tmp_path, STACK="down")
    assert code == "Error 3"
    assert calls == ["-m ops status", "-m ops up", "-m pytest", "-m ops down"]


def test_a_stack_that_was_running_stays_up(tmp_path: Path) -> None:
    code, calls = _make_pytest(tmp_path, STACK="up")
    assert code == "Error 3"
    assert calls == ["-m ops status", "-m ops up", "-m pytest"]


def test_a_stack_that_failed_to_start_is_stopped_and_its_exit_code_kept(
    tmp_path: Path,
) -> None:
    code, calls = _make_pytest(tmp_path, STACK="down", UP_EXIT="1")
    assert code == "Error 1"
    assert calls == ["-m ops status", "-m ops up", "-m ops down"]


LEAKY_TEST = """
import subprocess

def test_leaks_a_process():
    subprocess.Popen(["sleep", "{seconds}"], start_new_session=True)
"""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_process_a_test_left_running_is_stopped_and_fails_the_run(tmp_path: Path) -> None:
    seconds = "301.5"  # a value to find it by
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST.format(seconds=seconds))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         str(tmp_path / "test_leaky.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 processes started by the tests outlived them" in result.stdout
    assert f"sleep {seconds}" in result.stdout
    still = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True)
    assert still.returncode == 1, f"left running: {still.stdout!r}"
