"""Task statuses and the order in which a task moves through them."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[Status] = frozenset({Status.SUCCEEDED, Status.FAILED, Status.DEAD_LETTERED})

# Within one attempt a task is queued, then started, then (maybe) retrying.
_PHASE_IN_ATTEMPT = {Status.QUEUED: 0, Status.STARTED: 1, Status.RETRYING: 2}


def progress(status: Status, attempt: int) -> int:
    """A number that grows as a task moves forward; events from several processes
    may arrive out of order, and only an event with greater progress moves the task.

    ACCEPTED < QUEUED(1) < STARTED(1) < RETRYING(1) < QUEUED(2) < ... < any terminal.
    """
    if status is Status.ACCEPTED:
        return 0
    if status.terminal:
        return 1 << 40
    return max(attempt, 1) * 10 + _PHASE_IN_ATTEMPT[status]
