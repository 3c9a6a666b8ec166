"""The built-in routines, for demos, tests and load. Plain functions: each takes the
task's payload (and, if it asks for it, the run's context) and returns JSON."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tasks.context import RoutineContext


class RoutineFailed(Exception):
    """A routine's own failure; retried if the routine allows retries."""


def noop(payload: dict[str, Any]) -> None:
    """Does nothing: measures the platform itself."""
    return None


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Returns its payload."""
    return payload


def sleep(payload: dict[str, Any]) -> dict[str, int]:
    """Sleeps `ms` milliseconds (an I/O-bound task)."""
    ms = _whole_number(payload, "ms", default=100, maximum=3_600_000)
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


def cpu(payload: dict[str, Any]) -> dict[str, Any]:
    """Hashes `iterations` times (a CPU-bound task)."""
    iterations = _whole_number(payload, "iterations", default=10_000, maximum=100_000_000)
    digest = b"taskplatform"
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return {"iterations": iterations, "digest": digest.hex()[:16]}


def fail(payload: dict[str, Any], context: RoutineContext) -> dict[str, int]:
    """Fails its first `times` attempts, then succeeds."""
    times = _whole_number(payload, "times", default=1, maximum=1000)
    if context.attempt <= times:
        raise RoutineFailed(f"failing on purpose: attempt {context.attempt} of the first {times}")
    return {"succeeded_on_attempt": context.attempt}


def _whole_number(payload: dict[str, Any], name: str, *, default: int, maximum: int) -> int:
    value = payload.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise RoutineFailed(f"payload.{name} must be a whole number from 0 to {maximum}")
    return value
