"""Task statuses and the order in which a task moves through them.

The one place statuses and the terminal set are declared: SQL text (core.schema), the stats
snapshot (core.stats_shape), the dashboard (through its page), the simulator's report and
the bench derive them from here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Status(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    SCHEDULED = "SCHEDULED"  # held until its run_at
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # not started before its expires_at: never ran

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def label(self) -> str:
        """How people read it: "dead-lettered" for DEAD_LETTERED."""
        return self.value.lower().replace("_", "-")


TERMINAL: frozenset[Status] = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.DEAD_LETTERED, Status.CANCELLED, Status.EXPIRED}
)
# The terminal statuses in declaration order: how reports, stats and SQL lists show them.
OUTCOMES: tuple[Status, ...] = tuple(status for status in Status if status in TERMINAL)
# The outcome that counts as a success (success rates).
SUCCESS = Status.SUCCEEDED
# Dispatched and not ended: a lease holds the task (queued, running, or waiting to retry),
# and the reconciler looks after it when nothing does.
IN_FLIGHT: tuple[Status, ...] = (Status.QUEUED, Status.STARTED, Status.RETRYING)

# Within one attempt a task is queued, then started, then (maybe) retrying.
_PHASE_IN_ATTEMPT = {Status.QUEUED: 0, Status.STARTED: 1, Status.RETRYING: 2}


def names(statuses: Iterable[Status] = Status) -> list[str]:
    """The statuses' names (what JSON and SQL carry), in the order given."""
    return [status.value for status in statuses]


def progress(status: Status, attempt: int) -> int:
    """A number that grows as a task moves forward; events from several processes
    may arrive out of order, and only an event with greater progress moves the task.

    ACCEPTED < SCHEDULED < QUEUED(1) < STARTED(1) < RETRYING(1) < QUEUED(2) < ... < any terminal.
    """
    if status is Status.ACCEPTED:
        return 0
    if status is Status.SCHEDULED:
        return 5
    if status.terminal:
        return 1 << 40
    return max(attempt, 1) * 10 + _PHASE_IN_ATTEMPT[status]
