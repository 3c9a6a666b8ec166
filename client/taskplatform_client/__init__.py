"""A client for the task platform's HTTP API: submit tasks, wait for them, cancel them,
follow their events, list them. HTTP only (httpx) and pydantic; nothing of the platform.

    from taskplatform_client import Client

    with Client("http://127.0.0.1:8000", key) as client:
        task = client.submit("alpha", "echo", {"hello": "world"})
        print(task.result(timeout=30))
"""

from taskplatform_client._protocol import BATCH_LIMIT, NO_RETRY, OnRetry, Retry, TaskSpec
from taskplatform_client.aio import AsyncClient, AsyncTask
from taskplatform_client.client import Client, Task
from taskplatform_client.errors import (
    ApiError,
    BatchRejected,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServerError,
    TaskFailed,
    TaskPlatformError,
    Unauthorized,
    Unavailable,
    Unreachable,
    WaitTimeout,
)
from taskplatform_client.models import (
    TERMINAL,
    Accepted,
    Cancelled,
    Event,
    Page,
    Status,
    TaskInfo,
    is_terminal,
)

__version__ = "0.1.0"

__all__ = [
    "BATCH_LIMIT",
    "NO_RETRY",
    "TERMINAL",
    "Accepted",
    "ApiError",
    "AsyncClient",
    "AsyncTask",
    "BatchRejected",
    "Cancelled",
    "Client",
    "Conflict",
    "Event",
    "Forbidden",
    "Invalid",
    "NotFound",
    "OnRetry",
    "Page",
    "RateLimited",
    "Retry",
    "ServerError",
    "Status",
    "Task",
    "TaskFailed",
    "TaskInfo",
    "TaskPlatformError",
    "TaskSpec",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "WaitTimeout",
    "__version__",
    "is_terminal",
]
