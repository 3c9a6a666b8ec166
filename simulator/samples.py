"""What a replay records: one sample per request sent, one per accepted task, and the run.

Times of the simulator's own making (`scheduled`, `sent`) are seconds after the run's
start on its monotonic clock; times that come from the platform (`accepted_at`, event
times) are Unix epoch seconds on the platform's clock. The report aligns the two with
`RunRecord.started_at`, the epoch time of the run's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.status import Status

# The priority group of a request sent without one (the platform picks its priority).
UNSET_PRIORITY = "default"


@dataclass(slots=True)
class SendSample:
    """One request the simulator sent, and how the API answered it. `delay`, `max_wait`
    and `cancel_after` are as sent or planned: seconds, already divided by the speed."""

    seq: int  # position in the schedule
    team: str
    routine: str
    priority: str  # as requested, or UNSET_PRIORITY
    scheduled: float  # when it should have left, seconds after the start
    sent: float  # when it left, seconds after the start
    latency: float | None = None  # HTTP round trip, seconds; None while in flight
    status_code: int = 0  # 0: no HTTP answer (connection error, timeout)
    error_code: str | None = None
    error_message: str | None = None
    task_id: str | None = None
    delay: float | None = None  # delay_seconds sent
    max_wait: float | None = None  # max_wait_seconds sent
    cancel_after: float | None = None  # a cancel planned this long after the 202

    @property
    def lateness(self) -> float:
        """How late it left, seconds (never negative in practice)."""
        return self.sent - self.scheduled

    @property
    def accepted(self) -> bool:
        return self.task_id is not None


@dataclass(slots=True)
class TaskSample:
    """One accepted task, followed through its status events."""

    task_id: str
    team: str
    routine: str
    priority: str  # as requested
    accepted_at: float  # epoch seconds, from the 202 answer
    status: Status = Status.ACCEPTED
    first_started: float | None = None
    last_started: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    queue: str | None = None
    run_at: float | None = None  # a scheduled run: accepted_at + delay (epoch seconds)
    expires_at: float | None = None  # when it is due + max_wait (epoch seconds)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def due(self) -> float:
        """When the task was meant to become runnable: its run time if scheduled, else
        when it was accepted (epoch seconds)."""
        return self.accepted_at if self.run_at is None else self.run_at


@dataclass(slots=True)
class CancelSample:
    """One cancel the simulator planned (`cancel_after` of an accepted task), and how the
    API answered it."""

    task_id: str
    priority: str  # of the task, as requested
    scheduled: float  # when it should leave, seconds after the start
    sent: float | None = None  # None: never sent (the run stopped first)
    latency: float | None = None  # HTTP round trip, seconds; None while in flight
    status_code: int = 0  # 0: no HTTP answer
    error_code: str | None = None
    error_message: str | None = None
    stage: str | None = None  # a 202's `stage`: where the cancel found the task
    ended: Status | None = None  # a 409's status: how the task had already ended


@dataclass(slots=True)
class Anomalies:
    """Things the platform should never do, counted rather than hidden."""

    duplicate_events: int = 0  # same event_id seen again (allowed: at-least-once)
    conflicting_terminal: int = 0  # a second, different terminal status for a task
    events_after_terminal: int = 0  # a non-terminal event later than the terminal one


@dataclass(slots=True)
class RunRecord:
    """Everything a replay measured; the input of the report."""

    dataset: str
    description: str
    speed: float
    follow: str
    started_at: float  # epoch seconds
    planned: int
    finished_at: float | None = None  # epoch seconds
    interrupted: bool = False
    sends: list[SendSample] = field(default_factory=list)
    tasks: dict[str, TaskSample] = field(default_factory=dict)
    cancels: list[CancelSample] = field(default_factory=list)
    anomalies: Anomalies = field(default_factory=Anomalies)
