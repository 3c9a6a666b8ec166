"""The API's bodies, declared once: what a client sends (pydantic models, which check it)
and what the API answers (TypedDicts: the views build and return these very dicts, so
mypy checks them, and they cost nothing at run time). app/openapi.py derives the OpenAPI
document from them; statuses and priorities come from core.

pydantic reads TypedDicts from typing_extensions only, on Python 3.11.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NotRequired
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from core.priority import Priority
from core.priority import names as priority_names
from core.status import Status
from core.status import names as status_names

# Text with a meaning the JSON type does not carry, for the document.
UuidText = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
StatusName = Annotated[str, Field(json_schema_extra={"enum": status_names()})]
PriorityName = Annotated[str, Field(json_schema_extra={"enum": priority_names()})]


# What clients send.

MAX_SECONDS = 366 * 86_400  # a delay or a wait: at most a year (SCHEDULE_MAX_DAYS' ceiling)


class SubmitRequest(BaseModel):
    """The body of POST /api/v1/tasks, and each item of a batch."""

    model_config = ConfigDict(extra="forbid")

    team: str = Field(min_length=1, max_length=40)
    routine: str = Field(min_length=1, max_length=100)
    priority: Priority | None = None
    payload: dict[str, Any] | None = Field(
        default=None,
        description="The routine's input: a JSON object its routine's schema accepts "
        "(Payload.<routine>); omitted: checked as {}.",
    )
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    run_at: AwareDatetime | None = Field(
        default=None,
        description="Run it then (RFC 3339, with an offset), not before: the task is SCHEDULED "
        "until then. At most SCHEDULE_MAX_DAYS ahead. Not with delay_seconds.",
    )
    delay_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_SECONDS,
        description="Run it this many seconds from now, up to SCHEDULE_MAX_DAYS. Not with run_at.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="If it has not started by then it ends EXPIRED and never runs. "
        "Not with max_wait_seconds.",
    )
    max_wait_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="How long it may wait to start once due (from run_at, or from now): "
        "after that it ends EXPIRED. Not with expires_at.",
    )


@with_config(ConfigDict(extra="forbid"))
class SubmitBatch(TypedDict):
    """The body of POST /api/v1/tasks/batch (checked by the view, item by item)."""

    tasks: Annotated[
        list[Any],
        Field(
            min_length=1,
            description="Each item is checked on its own as a SubmitRequest; an invalid item "
            "gets its own 4xx result and does not fail the batch.",
        ),
    ]


MAX_PAGE = 500


class TaskListQuery(TypedDict, total=False):
    """The query of GET /api/v1/tasks (every parameter optional)."""

    team: str
    status: Status
    routine: str
    priority: Annotated[Priority, Field(description="the priority the client asked for")]
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="default 50")]
    cursor: Annotated[str, Field(description="next_cursor of the page before")]


MAX_WAIT_SECONDS = 60


class WaitQuery(TypedDict, total=False):
    """`wait`: how long to wait for the task to end (GET one task, or submit one)."""

    wait: Annotated[
        float,
        Field(
            gt=0,
            le=MAX_WAIT_SECONDS,
            description="Wait up to this many seconds (fractions allowed) for the task to end: "
            "the answer comes as soon as it has a terminal status, or after `wait` seconds "
            "with the task as it is then. A waiting request holds no server thread. Any "
            "other value is a 400 naming `wait`.",
        ),
    ]


# The values of `follow` and what each means.
FOLLOW = {"1": True, "true": True, "0": False, "false": False}


class EventsQuery(TypedDict, total=False):
    """The query of GET /api/v1/tasks/{task_id}/events."""

    follow: Annotated[str, Field(json_schema_extra={"enum": list(FOLLOW)})]


# What the API answers.


class Links(TypedDict):
    self: str


class ErrorDetail(TypedDict):
    code: str
    message: str
    details: Any


class ErrorBody(TypedDict):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


class AcceptedTask(TypedDict):
    """A submitted task: durable in Kafka, or known already (a repeat of its
    idempotency key, with the status it has now)."""

    task_id: UuidText
    status: StatusName
    team: str
    routine: str
    priority: PriorityName
    accepted_at: Timestamp
    run_at: Annotated[Timestamp | None, Field(description="a scheduled run: not before")]
    expires_at: Annotated[Timestamp | None, Field(description="not started by then: EXPIRED")]
    idempotent_replay: bool
    links: Links


class BatchResult(TypedDict):
    """One item's outcome: `task` when accepted (202), else `error`."""

    index: int
    status_code: int
    task: NotRequired[AcceptedTask]
    error: NotRequired[ErrorDetail]


class BatchAnswer(TypedDict):
    accepted: int
    rejected: int
    results: list[BatchResult]


class TimelineEntry(TypedDict):
    """One status change of a task."""

    status: StatusName
    at: Timestamp
    attempt: int
    queue: str | None
    detail: dict[str, Any] | None


class RecordedEvent(TimelineEntry):
    """A status change as recorded, with the id the recorder gave it."""

    event_id: UuidText


class TaskSummary(TypedDict):
    """A task in a page of tasks."""

    task_id: UuidText
    team: str
    routine: str
    priority: PriorityName
    queue: str | None
    status: StatusName
    attempts: int
    result: Any
    error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    run_at: Annotated[Timestamp | None, Field(description="a scheduled run: not before")]
    expires_at: Annotated[Timestamp | None, Field(description="not started by then: EXPIRED")]
    links: Links


class Task(TaskSummary):
    """One task with its payload and its timeline (recorded events carry `event_id`)."""

    payload: dict[str, Any] | None
    timeline: Sequence[TimelineEntry]


class TaskPage(TypedDict):
    tasks: list[TaskSummary]
    next_cursor: Annotated[str | None, Field(description="pass it back for the next page")]


class CancelRequest(BaseModel):
    """The body of POST /api/v1/tasks/{task_id}/cancel (optional)."""

    model_config = ConfigDict(extra="forbid")

    terminate: bool = Field(
        default=False,
        description="If the task is running, stop its process after CANCEL_GRACE_SECONDS "
        "(the routine may end sooner by checking context.cancelled).",
    )


class CancelBatchRequest(CancelRequest):
    """The body of POST /api/v1/tasks/cancel."""

    task_ids: list[UUID] = Field(min_length=1, max_length=1000)


class CancelledTask(TypedDict):
    """A cancel that took effect (or had already): the task ends CANCELLED and runs no
    further step."""

    task_id: UuidText
    status: StatusName
    stage: Annotated[StatusName, Field(description="where the task was when the cancel reached it")]
    terminate: bool
    links: Links


class CancelResult(TypedDict):
    """One task's answer in a batch cancel: `task` when cancelled (202), else `error`
    (409 carries the status it ended with)."""

    task_id: str
    status_code: int
    task: NotRequired[CancelledTask]
    error: NotRequired[ErrorDetail]


class CancelBatchAnswer(TypedDict):
    cancelled: int
    results: list[CancelResult]


def task_links(task_id: str) -> Links:
    return {"self": f"/api/v1/tasks/{task_id}"}
