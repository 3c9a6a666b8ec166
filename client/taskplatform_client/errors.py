"""The client's one error tree.

Every answer the API refuses becomes an `ApiError` of the class that names why (the API's
`{"error": {"code", "message", "details"}}` body is kept on it); a platform that cannot be
reached is `Unreachable`; a task that ended otherwise than SUCCEEDED is `TaskFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskplatform_client.models import TaskInfo


class TaskPlatformError(Exception):
    """Anything the client raises on purpose."""


class Unreachable(TaskPlatformError):
    """No answer from the platform: the connection failed, or timed out."""


class ApiError(TaskPlatformError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The error as the API gave it (what `--json` prints)."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Invalid(ApiError):
    """400 or 422: the request was wrong. `fields` maps each field at fault to its message."""

    @property
    def fields(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if isinstance(self.details, list):
            for entry in self.details:
                if isinstance(entry, Mapping) and isinstance(entry.get("field"), str):
                    found[entry["field"]] = str(entry.get("message", ""))
        return found


class Forbidden(ApiError):
    """403: the key may not do this (another team's work)."""


class Unauthorized(Forbidden):
    """401: the key is unknown or revoked."""


class NotFound(ApiError):
    """404: no such task, or not one of the key's team."""


class Conflict(ApiError):
    """409: e.g. a cancel of a task that has already ended (`ended_with` says how)."""

    @property
    def ended_with(self) -> str | None:
        if isinstance(self.details, Mapping):
            status = self.details.get("status")
            return status if isinstance(status, str) else None
        return None


class RateLimited(ApiError):
    """429: over the team's rate limit; `retry_after` seconds until it may try again."""


class Unavailable(ApiError):
    """503: the platform cannot take the request now (Kafka or the database is away)."""


class ServerError(ApiError):
    """Any other 5xx."""


class TaskFailed(TaskPlatformError):
    """The task ended otherwise than SUCCEEDED (FAILED, CANCELLED, EXPIRED, DEAD_LETTERED).
    `task` is the task as it ended; `error` the platform's error text, if it gave one."""

    def __init__(self, task: TaskInfo) -> None:
        self.task = task
        self.status = task.status
        self.error = task.error
        super().__init__(f"task {task.task_id} ended {task.status}: {task.error or 'no error'}")


class WaitTimeout(TaskPlatformError, TimeoutError):
    """The task had not ended when the wait ran out; `task` is the task as it was then."""

    def __init__(self, task: TaskInfo, waited: float) -> None:
        self.task = task
        self.waited = waited
        super().__init__(f"task {task.task_id} is still {task.status} after {waited:g}s")


class BatchRejected(TaskPlatformError):
    """`submit_many` had items the API refused. `results` holds, per item in order, its
    task handle (accepted) or its `ApiError`; `errors` only the refused ones by index."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.errors: dict[int, ApiError] = {
            index: item for index, item in enumerate(results) if isinstance(item, ApiError)
        }
        first = next(iter(self.errors.items()))
        super().__init__(
            f"{len(self.errors)} of {len(results)} items were refused; "
            f"item {first[0]}: {first[1].message}"
        )


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: RateLimited,
    503: Unavailable,
}


def api_error(
    status: int, body: Any, *, retry_after: float | None = None, reason: str = ""
) -> ApiError:
    """The ApiError for an error answer with this status and (decoded JSON) body."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        code = str(error.get("code", "error"))
        message = str(error.get("message", reason))
        details = error.get("details")
    else:
        code, message, details = "error", reason or f"HTTP {status}", None
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(status, code, message, details, retry_after=retry_after)
