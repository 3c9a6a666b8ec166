"""The asyncio client: `AsyncClient(url, key)` and the `AsyncTask` handle it returns.
The same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from taskplatform_client import _protocol as p
from taskplatform_client.errors import (
    ApiError,
    BatchRejected,
    Forbidden,
    Invalid,
    TaskFailed,
    TaskPlatformError,
    WaitTimeout,
)
from taskplatform_client.models import Accepted, Cancelled, Event, Page, TaskInfo
from taskplatform_client.task_base import TaskBase


class AsyncTask(TaskBase):
    """A submitted task. `get`, `wait`, `result`, `cancel` and `events` ask the platform."""

    def __init__(
        self,
        client: AsyncClient,
        task_id: str,
        accepted: Accepted | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(task_id, accepted, idempotency_key)
        self.client = client

    async def get(self) -> TaskInfo:
        return await self.client.get(self.id)

    async def wait(self, timeout: float | None = None) -> TaskInfo:
        """The task once it has ended (whatever the status); raises WaitTimeout if it has
        not within `timeout` seconds (None: wait as long as it takes)."""
        return await self.client.wait(self.id, timeout)

    async def result(self, timeout: float | None = None) -> Any:
        """The task's result once it has SUCCEEDED; raises TaskFailed if it ended
        otherwise, WaitTimeout if it has not ended within `timeout` seconds."""
        info = await self.wait(timeout)
        if not info.succeeded:
            raise TaskFailed(info)
        return info.result

    async def cancel(self, terminate: bool = False) -> Cancelled:
        return await self.client.cancel(self.id, terminate=terminate)

    def events(self) -> AsyncIterator[Event]:
        return self.client.events(self.id)


class AsyncClient:
    """The platform's HTTP API as Python calls. Authenticated with a team's (or an admin)
    key. Requests are retried as `retry` says (see `Retry`); `on_retry` hears of each.

    Use it as a context manager, or call `close()`; one client serves many threads.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 30.0,
        retry: p.Retry | None = None,
        on_retry: p.OnRetry | None = None,
        batch_limit: int = p.BATCH_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or p.Retry()
        self.on_retry = on_retry
        self.batch_limit = batch_limit
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": p.USER_AGENT},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """One request, tried again as the retry policy says; its decoded JSON answer."""
        backoff = p.Backoff(self.retry, self.on_retry)
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            try:
                try:
                    response = await self._http.request(
                        method, p.API + path, params=params, json=json, **extra
                    )
                except httpx.TransportError as exc:
                    raise p.unreachable(self.url, exc) from exc
                return p.decode(response)
            except TaskPlatformError as error:
                delay = backoff.delay(error)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    def task(self, task_id: str) -> AsyncTask:
        """A handle on a task submitted before."""
        return AsyncTask(self, task_id)

    async def submit(
        self,
        team: str,
        routine: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: str | None = None,
        idempotency_key: str | None = None,
        run_at: p.When | None = None,
        expires: p.When | None = None,
    ) -> AsyncTask:
        """Submit one task; returns once the platform holds it. A retried submit (429,
        503, a lost answer) reuses its idempotency key, so it never makes a second task;
        without a key from the caller the client makes one. Raises Invalid (naming the
        fields), Forbidden, RateLimited or Unavailable when retries do not help."""
        spec = p.TaskSpec(team, routine, payload, priority, idempotency_key, run_at, expires)
        key = p.idempotency_key(idempotency_key)
        accepted = Accepted.model_validate(await self._call("POST", "/tasks", json=spec.body(key)))
        return AsyncTask(self, accepted.task_id, accepted, key)

    async def submit_many(
        self, items: Iterable[p.TaskSpec | Mapping[str, Any]], *, batch_size: int | None = None
    ) -> builtins.list[AsyncTask]:
        """Submit many tasks with the batch endpoint, `batch_size` (default: the API's
        limit, `batch_limit`) a request. Items refused for 429 or 503 are sent again with
        their keys. Returns a handle per item, in order; raises BatchRejected (which holds
        the accepted handles too) if the API refused some."""
        specs = [p.as_spec(item) for item in items]
        keys = [p.idempotency_key(spec.idempotency_key) for spec in specs]
        results: builtins.list[AsyncTask | ApiError | None] = [None] * len(specs)
        for chunk in p.chunks(len(specs), batch_size or self.batch_limit):
            backoff = p.Backoff(self.retry, self.on_retry)
            pending = builtins.list(chunk)
            while pending:
                bodies = [specs[i].body(keys[i]) for i in pending]
                answer = await self._call("POST", "/tasks/batch", json={"tasks": bodies})
                again: dict[int, ApiError] = {}
                for index, result in zip(pending, answer["results"], strict=True):
                    if result["status_code"] == 202:
                        accepted = Accepted.model_validate(result["task"])
                        results[index] = AsyncTask(self, accepted.task_id, accepted, keys[index])
                        continue
                    results[index] = error = p.item_error(result)
                    if p.retryable(error):
                        again[index] = error
                delay = backoff.delay(next(iter(again.values()))) if again else None
                if delay is None:
                    break
                await asyncio.sleep(delay)
                pending = builtins.list(again)
        if any(not isinstance(result, AsyncTask) for result in results):
            raise BatchRejected(builtins.list(results))
        return [result for result in results if isinstance(result, AsyncTask)]

    async def get(self, task_id: str) -> TaskInfo:
        """The task now, with its payload and timeline. Raises NotFound."""
        return TaskInfo.model_validate(await self._call("GET", f"/tasks/{task_id}"))

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """The task once it has ended, waited for with the API's `?wait=` (60 s a request,
        repeated). Raises WaitTimeout if it has not ended within `timeout` seconds."""
        started = time.monotonic()
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left < 0.01:
                info = await self.get(task_id)
                if info.terminal:
                    return info
                raise WaitTimeout(info, timeout or 0.0)
            seconds = p.MAX_SERVER_WAIT if left is None else min(left, p.MAX_SERVER_WAIT)
            answer = await self._call(
                "GET",
                f"/tasks/{task_id}",
                params={"wait": p.wait_param(seconds)},
                timeout=seconds + 30,
            )
            info = TaskInfo.model_validate(answer)
            if info.terminal:
                return info

    async def cancel(self, task_id: str, *, terminate: bool = False) -> Cancelled:
        """Cancel the task: it ends CANCELLED (a repeat is answered the same). With
        `terminate`, a running task's process is stopped. Raises Conflict if it has
        already ended otherwise (`ended_with` says how), NotFound."""
        answer = await self._call("POST", f"/tasks/{task_id}/cancel", json={"terminate": terminate})
        return Cancelled.model_validate(answer)

    async def events(self, task_id: str) -> AsyncIterator[Event]:
        """The task's status events as they happen (those before too), ending after the
        terminal one. Reconnects when a stream ends early, without repeating an event."""
        follow = p.Follow()
        backoff = p.Backoff(self.retry, self.on_retry)
        while not follow.terminal:
            try:
                async for event in self._stream(task_id, follow):
                    yield event
            except TaskPlatformError as error:
                delay = backoff.delay(error)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
            if follow.revoked:
                raise Forbidden(403, "revoked", "the key was revoked while following the task")

    async def _stream(self, task_id: str, follow: p.Follow) -> AsyncIterator[Event]:
        path = f"{p.API}/tasks/{task_id}/events"
        try:
            async with self._http.stream("GET", path, params={"follow": "1"}) as response:
                if response.status_code != 200:
                    await response.aread()
                    p.decode(response)
                decoder = p.SseDecoder()
                async for line in response.aiter_lines():
                    found = decoder.feed(line)
                    event = follow.take(*found) if found is not None else None
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            if not follow.terminal:
                raise p.unreachable(self.url, exc) from exc

    async def page(
        self,
        *,
        team: str | None = None,
        status: str | None = None,
        routine: str | None = None,
        priority: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of tasks, newest first (at most `limit`, up to 500). Raises Invalid
        for a filter the API does not take."""
        params = p.list_params(team, status, routine, priority, limit, cursor)
        return Page.model_validate(await self._call("GET", "/tasks", params=params))

    async def list(
        self,
        *,
        team: str | None = None,
        status: str | None = None,
        routine: str | None = None,
        priority: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[TaskInfo]:
        """Tasks newest first, page after page, up to `limit` (None: all). The API
        filters; an API too old to filter by priority gets the others, and the client
        filters the priority."""
        given, cursor, asked = 0, None, priority
        while limit is None or given < limit:
            try:
                page = await self.page(
                    team=team,
                    status=status,
                    routine=routine,
                    priority=asked,
                    limit=page_size,
                    cursor=cursor,
                )
            except Invalid as error:
                if asked is None or not p.no_priority_filter(error):
                    raise
                asked = None
                continue
            for info in page.tasks:
                if priority is not None and info.priority != priority:
                    continue
                yield info
                given += 1
                if limit is not None and given >= limit:
                    return
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


__all__ = ["AsyncClient", "AsyncTask"]
