"""Routines that misbehave on purpose, loaded by test instances through ROUTINES."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from tasks.context import RoutineContext


def stubborn(payload: dict[str, Any]) -> None:
    """Ignores the soft time limit and keeps going: only the hard limit stops it."""
    deadline = time.monotonic() + float(payload.get("seconds", 30))
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            continue


def crash(payload: dict[str, Any]) -> None:
    """Kills the worker process running it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


def gate(payload: dict[str, Any]) -> None:
    """Holds its worker slot until the file `release` exists (the test creates it when it
    is ready); raises TimeoutError after `seconds` (default 60) without it."""
    release = Path(payload["release"])
    deadline = time.monotonic() + float(payload.get("seconds", 60))
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was not created within {payload.get('seconds', 60)}s")
        time.sleep(0.01)


# Routines for the lifecycle tests (tests/pipeline/test_lifecycle.py). Each notes every
# run in the folder `runs` of its payload, one file per task, a line per event:
# "<what> <unix time> <attempt>", so a test can tell whether (and when) a task ran.


def note_run(payload: dict[str, Any], context: RoutineContext, what: str) -> None:
    folder = payload.get("runs")
    if folder:
        with open(Path(folder) / context.task_id, "a") as runs:
            runs.write(f"{what} {time.time():.6f} {context.attempt}\n")


def _wait_for_file(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not created within {seconds:g}s")
        time.sleep(0.01)


def traced(payload: dict[str, Any], context: RoutineContext) -> dict[str, int]:
    """Notes its start; waits for the file `release` if there is one (holding its worker
    slot); fails its first `fail` attempts (default none)."""
    note_run(payload, context, "start")
    if "release" in payload:
        _wait_for_file(Path(payload["release"]), float(payload.get("seconds", 60)))
    if context.attempt <= int(payload.get("fail", 0)):
        raise RuntimeError(f"failing on purpose: attempt {context.attempt}")
    return {"attempt": context.attempt}


def until_cancelled(payload: dict[str, Any], context: RoutineContext) -> str:
    """Works in small steps until its task is cancelled (a cooperative routine); notes
    "stopped" when it sees the cancel."""
    note_run(payload, context, "start")
    deadline = time.monotonic() + float(payload.get("seconds", 60))
    while time.monotonic() < deadline:
        if context.cancelled:
            note_run(payload, context, "stopped")
            return "stopped early"
        time.sleep(0.02)
    note_run(payload, context, "finished")
    return "finished"


def ignores_cancel(payload: dict[str, Any], context: RoutineContext) -> str:
    """Sleeps `seconds` whatever happens to its task; with `swallow` it also catches the
    interruption a terminating cancel raises and sleeps on (only a kill stops it). Notes
    how it ended."""
    note_run(payload, context, "start")
    deadline = time.monotonic() + float(payload.get("seconds", 60))
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException as exc:
            note_run(payload, context, f"interrupted:{type(exc).__name__}")
            if not payload.get("swallow"):
                raise
    note_run(payload, context, "finished")
    return "slept"
