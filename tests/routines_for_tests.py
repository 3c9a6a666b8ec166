"""Routines that misbehave on purpose, loaded by test instances through ROUTINES."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded


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
