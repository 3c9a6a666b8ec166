"""The built-in routines, for demos, tests and load. Plain functions: each takes the
task's payload (and, if it asks for it, the run's context) and returns JSON. Each reads
its payload through its model in core.payloads, the schema the API checks it against."""

from __future__ import annotations

import hashlib
import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.payloads import CpuPayload, FailPayload, SleepPayload
from tasks.context import RoutineContext

P = TypeVar("P", bound=BaseModel)


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
    ms = _read(SleepPayload, payload).ms
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


def cpu(payload: dict[str, Any]) -> dict[str, Any]:
    """Hashes `iterations` times (a CPU-bound task)."""
    iterations = _read(CpuPayload, payload).iterations
    digest = b"taskplatform"
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return {"iterations": iterations, "digest": digest.hex()[:16]}


def fail(payload: dict[str, Any], context: RoutineContext) -> dict[str, int]:
    """Fails its first `times` attempts, then succeeds."""
    times = _read(FailPayload, payload).times
    if context.attempt <= times:
        raise RoutineFailed(f"failing on purpose: attempt {context.attempt} of the first {times}")
    return {"succeeded_on_attempt": context.attempt}


def _read(model: type[P], payload: dict[str, Any]) -> P:
    """The payload read through the routine's model (core.payloads, the one the API checks
    it against); RoutineFailed naming the field if it does not fit (a task accepted before
    the check existed)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(["payload", *(str(part) for part in first["loc"])])
        raise RoutineFailed(f"{field}: {first['msg']}") from None
