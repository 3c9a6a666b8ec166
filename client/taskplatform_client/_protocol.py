"""What the sync and the async client share: request bodies, reading answers, the retry
policy and the server-sent-events decoder. No I/O here."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from taskplatform_client.errors import (
    ApiError,
    Invalid,
    RateLimited,
    ServerError,
    TaskPlatformError,
    Unavailable,
    Unreachable,
    api_error,
)
from taskplatform_client.models import Event

API = "/api/v1"
MAX_SERVER_WAIT = 60.0  # the API's longest ?wait=
BATCH_LIMIT = 1000  # the API's default API_BATCH_MAX
USER_AGENT = "taskplatform-client/0.1"


@dataclass(frozen=True)
class Retry:
    """When to try a request again: on 429 and 503 (after Retry-After when the API gives
    one, else after an exponential backoff), on other 5xx and on a lost connection. At
    most `attempts` tries in all, and no wait that would end more than `within` seconds
    after the first try: past that the last error is raised. Every request the client
    makes can be repeated safely (a submit carries its idempotency key)."""

    attempts: int = 6
    within: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 10.0

    @classmethod
    def never(cls) -> Retry:
        return cls(attempts=1)


NO_RETRY = Retry.never()

# Called before each retry with the error, the attempt that failed (1 = the first) and
# the seconds it will wait.
OnRetry = Callable[[TaskPlatformError, int, float], None]


def retryable(error: TaskPlatformError) -> bool:
    return isinstance(error, RateLimited | Unavailable | ServerError | Unreachable)


class Backoff:
    """One request's retries under a `Retry` policy."""

    def __init__(self, policy: Retry, on_retry: OnRetry | None = None) -> None:
        self.policy = policy
        self.on_retry = on_retry
        self.tries = 0
        self.started = time.monotonic()

    def delay(self, error: TaskPlatformError) -> float | None:
        """Seconds to wait before trying again after `error`; None: do not, raise it."""
        self.tries += 1
        if not retryable(error) or self.tries >= self.policy.attempts:
            return None
        if isinstance(error, ApiError) and error.retry_after is not None:
            wait = error.retry_after
        else:
            wait = min(self.policy.max_backoff, self.policy.backoff * 2 ** (self.tries - 1))
            wait *= random.uniform(0.8, 1.2)
        if time.monotonic() - self.started + wait > self.policy.within:
            return None
        if self.on_retry is not None:
            self.on_retry(error, self.tries, wait)
        return wait


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the API never sends one


def decode(response: httpx.Response) -> Any:
    """The answer's JSON body; raises the ApiError for an error status."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise api_error(
            response.status_code,
            body,
            retry_after=retry_after(response),
            reason=response.reason_phrase,
        )
    return body


def unreachable(url: str, exc: httpx.TransportError) -> Unreachable:
    return Unreachable(f"cannot reach the platform at {url}: {exc or type(exc).__name__}")


def idempotency_key(given: str | None) -> str:
    """The caller's key, or a new one: every submit carries one, so that a retry of it
    names the same task instead of making a second."""
    return given if given is not None else f"tpc-{uuid.uuid4()}"


When = datetime | timedelta | float | int


def _seconds(value: timedelta | float | int) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _aware(value: datetime, name: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: give a timezone-aware datetime (e.g. datetime.now(UTC))")
    return value.isoformat()


@dataclass(frozen=True)
class TaskSpec:
    """One task to submit (an item of `submit_many`).

    `run_at`: a datetime to run it at, or a delay (timedelta or seconds) from now.
    `expires`: a datetime by which it must have started, or how long (timedelta or
    seconds) it may wait to start once due; past that it ends EXPIRED.
    """

    team: str
    routine: str
    payload: Mapping[str, Any] | None = None
    priority: str | None = None
    idempotency_key: str | None = None
    run_at: When | None = None
    expires: When | None = None

    def body(self, key: str) -> dict[str, Any]:
        body: dict[str, Any] = {"team": self.team, "routine": self.routine}
        if self.payload is not None:
            # Not a mapping (JSON from elsewhere, unchecked): the API's 422 names the field.
            payload = self.payload
            body["payload"] = dict(payload) if isinstance(payload, Mapping) else payload
        if self.priority is not None:
            body["priority"] = self.priority
        body["idempotency_key"] = key
        if isinstance(self.run_at, datetime):
            body["run_at"] = _aware(self.run_at, "run_at")
        elif self.run_at is not None:
            body["delay_seconds"] = _seconds(self.run_at)
        if isinstance(self.expires, datetime):
            body["expires_at"] = _aware(self.expires, "expires")
        elif self.expires is not None:
            body["max_wait_seconds"] = _seconds(self.expires)
        return body


def as_spec(item: TaskSpec | Mapping[str, Any]) -> TaskSpec:
    return item if isinstance(item, TaskSpec) else TaskSpec(**item)


def chunks(count: int, size: int) -> list[range]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def item_error(result: Mapping[str, Any]) -> ApiError:
    """The ApiError of one refused item of a batch answer."""
    return api_error(int(result["status_code"]), {"error": result.get("error")})


def list_params(
    team: str | None,
    status: str | None,
    routine: str | None,
    priority: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, str]:
    given = {
        "team": team,
        "status": status,
        "routine": routine,
        "priority": priority,
        "cursor": cursor,
    }
    params = {name: value for name, value in given.items() if value is not None}
    params["limit"] = str(limit)
    return params


def no_priority_filter(error: Invalid) -> bool:
    """The API is one that cannot filter by priority (before it took `priority`)."""
    return "unknown query parameter 'priority'" in error.message


def wait_param(seconds: float) -> str:
    return f"{min(seconds, MAX_SERVER_WAIT):.3f}"


class SseDecoder:
    """Server-sent events, line by line: `feed` returns (event name, decoded JSON data)
    when a line ends an event, else None. Comments and `retry:` lines are skipped."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        if line == "":
            found = (self.event, json.loads("\n".join(self.data))) if self.data else None
            self.event, self.data = "message", []
            return found
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        return None


class Follow:
    """A task's live event stream across reconnects: each event once (the API sends the
    whole history again on each connection), until the terminal one."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.terminal = False
        self.revoked = False

    def take(self, name: str, data: Any) -> Event | None:
        """The new event in (name, data), if it is one."""
        if name == "end" and isinstance(data, Mapping) and data.get("reason") == "revoked":
            self.revoked = True
        if name != "status":
            return None
        event = Event.model_validate(data)
        mark = event.event_id or f"{event.status}\x00{event.at.isoformat()}"
        if mark in self.seen:
            return None
        self.seen.add(mark)
        self.terminal = self.terminal or event.terminal
        return event
