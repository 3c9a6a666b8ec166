"""What the API answers, as pydantic models. Fields the client does not know yet are kept
(`extra="allow"`), so a newer platform does not break an older client."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Status(StrEnum):
    """A task's status. Compare a model's `status` (a plain string) with these."""

    ACCEPTED = "ACCEPTED"
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


TERMINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.DEAD_LETTERED, Status.CANCELLED, Status.EXPIRED}
)


def is_terminal(status: str) -> bool:
    return status in TERMINAL


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Event(_Model):
    """One status change of a task (an item of its timeline, or of its live stream)."""

    status: str
    at: datetime
    attempt: int = 0
    queue: str | None = None
    detail: dict[str, Any] | None = None
    event_id: str | None = None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)


class TaskInfo(_Model):
    """A task as the API reports it. In a page of tasks `payload` and `timeline` are not
    given (None and empty); `get` and `wait` give them."""

    task_id: str
    team: str
    routine: str
    priority: str
    queue: str | None = None
    status: str
    attempts: int = 0
    result: Any = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    expires_at: datetime | None = None
    payload: dict[str, Any] | None = None
    timeline: tuple[Event, ...] = ()

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def succeeded(self) -> bool:
        return self.status == Status.SUCCEEDED


class Accepted(_Model):
    """The answer to a submit: the task is durable in the platform (or was already, when
    `idempotent_replay` is true: a repeat of its idempotency key)."""

    task_id: str
    status: str
    team: str
    routine: str
    priority: str
    accepted_at: datetime
    run_at: datetime | None = None
    expires_at: datetime | None = None
    idempotent_replay: bool = False


class Cancelled(_Model):
    """The answer to a cancel that holds: the task ends CANCELLED; `stage` is where the
    cancel reached it."""

    task_id: str
    status: str
    stage: str
    terminate: bool


class Page(_Model):
    """One page of tasks; pass `next_cursor` back for the next (None: the last page)."""

    tasks: tuple[TaskInfo, ...]
    next_cursor: str | None = None
