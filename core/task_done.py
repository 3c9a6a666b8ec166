"""Telling API processes that tasks have ended, so a `?wait=` request answers at once.

The recorder, after it commits a batch, publishes the ids of the tasks that ended in it:
one Redis PUBLISH per batch (`Announcer`). Each API process holds one subscription
(`Subscription`, an asyncio task) and a registry of the requests waiting for each task
(`Waiters`). A notification only says "read this task again": the answer always comes
from Postgres, so a lost notification costs time (the waiter answers at its deadline),
never a wrong answer.

Redis pub/sub delivers at most once, to whoever is subscribed at that moment. What
closes the gaps: a waiter registers before its first read (a task that ends after that
read is announced after it registered), and whenever the subscription (re)starts, every
waiter is woken to read again (whatever ended while it was away is seen then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import redis

from core import redis_keys
from core.messages import MalformedMessage, StatusEvent
from core.settings import Settings

log = logging.getLogger(__name__)


def channel(settings: Settings) -> str:
    """The channel of this platform's announcements (see core.redis_keys.task_done)."""
    return redis_keys.task_done(settings.status_topic)


def canonical(task_id: str) -> str | None:
    """A task id as the API and the announcements spell it, or None if it is no UUID."""
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        return None


@dataclass(frozen=True)
class TaskDone:
    """The tasks that ended in one committed batch (canonical UUID text)."""

    task_ids: tuple[str, ...]
    VERSION: ClassVar[int] = 1

    def encode(self) -> bytes:
        return orjson.dumps({"v": self.VERSION, "task_ids": self.task_ids})

    @classmethod
    def decode(cls, raw: bytes | str) -> TaskDone:
        """Raises MalformedMessage for anything but a version-1 list of task ids."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("v") != cls.VERSION:
            raise MalformedMessage("not a version-1 announcement")
        ids = body.get("task_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise MalformedMessage("task_ids is not a list of strings")
        return cls(tuple(ids))

    @classmethod
    def of(cls, events: Iterable[StatusEvent]) -> TaskDone:
        """The tasks that have a terminal event among `events`, once each, in order."""
        ids = {canonical(e.task_id): None for e in events if e.status.terminal}
        return cls(tuple(i for i in ids if i is not None))


class Announcer:
    """The recorder's side: one PUBLISH per committed batch that ended some task. A
    failure is logged (once per outage) and swallowed: recording never waits on it."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.failing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Announcer:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        return cls(client, channel(settings))

    def announce(self, events: Iterable[StatusEvent]) -> int:
        """Publish the tasks that ended among `events`; returns how many (0 when there
        were none, or when the publish failed)."""
        done = TaskDone.of(events)
        if not done.task_ids:
            return 0
        try:
            self.client.publish(self.channel, done.encode())
        except Exception as exc:
            if not self.failing:
                log.warning(
                    "cannot announce ended tasks (waiters answer at their deadline): %s", exc
                )
            self.failing = True
            return 0
        if self.failing:
            log.info("announcing ended tasks again")
            self.failing = False
        return len(done.task_ids)

    def close(self) -> None:
        self.client.close()


class Waiters:
    """The requests of one API process waiting for tasks to end: task id -> futures.

    Used from one event loop only. A woken future is removed; a waiter that wants to wait
    again registers a new one (before it reads again)."""

    def __init__(self) -> None:
        self._by_task: dict[str, set[asyncio.Future[None]]] = {}
        self.subscribed = False

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._by_task.values())

    def add(self, task_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_task.setdefault(task_id, set()).add(future)
        return future

    def discard(self, task_id: str, future: asyncio.Future[None]) -> None:
        futures = self._by_task.get(task_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._by_task[task_id]

    def ended(self, task_ids: Iterable[str]) -> int:
        """Wake the waiters of these tasks; returns how many were woken."""
        woken = 0
        for task_id in task_ids:
            for future in self._by_task.pop(task_id, ()):
                if not future.done():
                    future.set_result(None)
                    woken += 1
        return woken

    def wake_all(self) -> int:
        """Wake every waiter, to read its task again (the subscription has just (re)started,
        or the process is stopping)."""
        return self.ended(list(self._by_task))


class Subscription:
    """The API process's one subscription to the announcements, as an asyncio task:
    each announcement wakes the waiters of its tasks. It reconnects with backoff while
    Redis is away, and wakes every waiter each time it is subscribed again."""

    MAX_BACKOFF = 5.0
    POLL_SECONDS = 5.0

    def __init__(
        self,
        connect: Callable[[], Any],
        channel: str,
        waiters: Waiters,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.connect = connect  # -> a redis.asyncio.Redis (or a stand-in)
        self.channel = channel
        self.waiters = waiters
        self.sleep = sleep
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, waiters: Waiters) -> Subscription:
        import redis.asyncio

        def connect() -> redis.asyncio.Redis:
            return redis.asyncio.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=2,
                socket_keepalive=True,
                health_check_interval=15,
            )

        return cls(connect, channel(settings), waiters)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="task-done")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Stay subscribed until cancelled."""
        delay = 0.1
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.waiters.subscribed:
                    delay = 0.1  # it worked until now: try again at once
                if delay == 0.1:  # once per outage
                    log.warning(
                        "no task-done subscription (waiters answer at their deadline "
                        "until it is back): %s",
                        exc,
                    )
            finally:
                self.waiters.subscribed = False
            await self.sleep(delay)
            delay = min(self.MAX_BACKOFF, delay * 2)

    async def _session(self) -> None:
        client = self.connect()
        try:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=self.POLL_SECONDS)
                    if message is not None:
                        self._handle(message)
            finally:
                await pubsub.aclose()
        finally:
            await client.aclose()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # From now on every announcement reaches us; what ended before may not have:
            # every waiter reads again.
            self.waiters.subscribed = True
            woken = self.waiters.wake_all()
            log.info("subscribed to %s (%d waiters read again)", self.channel, woken)
        elif kind == "message":
            try:
                done = TaskDone.decode(message["data"])
            except MalformedMessage as exc:
                log.warning("ignoring a malformed task-done message: %s", exc)
                return
            self.received += 1
            self.waiters.ended(done.task_ids)
