"""Names of the platform's own keys in Redis (beside Celery's queues)."""

from __future__ import annotations

PREFIX = "tp:"
WORKERS = PREFIX + "workers"  # hash: worker hostname -> {"slots": n, "at": unix time}
# Per-task keys (dispatch marks, kept outcomes, attempt counts) live an hour: redeliveries
# and re-dispatches come within minutes, and Redis memory stays bounded by rate x 1 h.
KEY_TTL = 3_600


def kept_for_seconds(schedule_max_days: float) -> int:
    """How long an outcome set before the task ran (a cancel, an expiry) is kept: longer
    than any task can wait to run, so a late delivery still finds it."""
    return int((schedule_max_days + 1) * 86_400)


def dispatched(task_id: str, dispatch: int, retries: int) -> str:
    """Set when the bridge has put this delivery of the task on a Celery queue."""
    return f"{PREFIX}dispatched:{task_id}:{dispatch}:{retries}"


def outcome(task_id: str) -> str:
    """The task's terminal event, kept so a re-run re-announces instead of re-running."""
    return f"{PREFIX}outcome:{task_id}"


def attempts(task_id: str) -> str:
    """How many times a worker has started the task (a lost worker counts too)."""
    return f"{PREFIX}attempts:{task_id}"


def task_done(status_topic: str) -> str:
    """Pub/sub channel: the recorder announces the tasks that ended in each batch it
    committed (core.task_done). Channels ignore Redis database numbers, so the name
    carries the status topic: platforms sharing a Redis keep to their own."""
    return f"{PREFIX}done:{status_topic}"
