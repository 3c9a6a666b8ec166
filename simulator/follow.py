"""Following tasks to their terminal status: from the `tasks.status` topic, or by polling.

`KafkaFollower` reads the status topic from its current end (positioned before anything is
sent, so no event of ours is missed) in a background thread and hands batches of events to
the event loop through an asyncio queue. The topic carries every client's tasks, so the
thread decodes only messages whose key (the task id) belongs to a task we `watch`; the
others are kept raw for a while, because a task's first events can arrive before the 202
that tells us the task is ours, then dropped. The simulator's cost stays proportional to
its own tasks, however busy the topic is.

`ApiFollower` polls `GET /api/v1/tasks/<id>` for the tasks not yet finished; it is the
fallback when Kafka cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import aiohttp
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from core.messages import MalformedMessage, decode_event
from core.status import Status
from simulator.errors import FollowUnavailable
from simulator.tracker import Event, Tracker

log = logging.getLogger(__name__)

Sink = Callable[[list[Event]], None]
STASH_SECONDS = 60.0  # how long raw events of tasks not (yet) ours are kept
STASH_LIMIT = 200_000  # tasks; beyond it the oldest are dropped


class Follower(Protocol):
    """Feeds status events to a sink from `start` (which returns once positioned) to `stop`."""

    name: str

    async def start(self, sink: Sink) -> None: ...

    def watch(self, task_id: str) -> list[Event]:
        """Follow `task_id` from now on; returns its events already seen."""
        ...

    async def stop(self) -> None: ...


class KafkaFollower:
    """Status events from the topic, via a consumer thread; see the module docstring."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        connect_timeout: float = 5.0,
        security: dict[str, Any] | None = None,
    ):
        self.bootstrap = bootstrap
        self.security = dict(security or {})
        self.topic = topic
        self.connect_timeout = connect_timeout
        self.malformed = 0
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._pump: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._sink: Sink | None = None
        self._lock = threading.Lock()  # guards _watched and _stash
        self._watched: set[bytes] = set()
        self._stash: dict[bytes, tuple[float, list[bytes]]] = {}  # key: (first seen, values)

    async def start(self, sink: Sink) -> None:
        """Assign every partition at its end offset, then start reading; raises
        FollowUnavailable if the topic cannot be reached within the connect timeout."""
        consumer = await asyncio.to_thread(self._connect)
        loop = asyncio.get_running_loop()
        self._sink = sink
        self._running.set()
        self._thread = threading.Thread(
            target=self._consume,
            args=(consumer, loop, self._queue),
            name="status-follower",
            daemon=True,
        )
        self._thread.start()
        self._pump = loop.create_task(_pump(self._queue, sink))

    def watch(self, task_id: str) -> list[Event]:
        """Decode this task's messages from now on; returns the events read before."""
        key = task_id.encode()
        with self._lock:
            self._watched.add(key)
            _, values = self._stash.pop(key, (0.0, []))
        return self._decode(values)

    def sort(self, messages: list[Any], now: float) -> list[Event]:
        """The events of watched tasks among `messages` (decoded); the others are stashed
        (at monotonic time `now`) and the stash is pruned."""
        ours: list[bytes] = []
        with self._lock:
            for message in messages:
                if message.error() is not None:
                    log.warning("status topic: %s", message.error())
                    continue
                key, value = message.key(), message.value()
                if key is None or key in self._watched:
                    ours.append(value)
                elif key in self._stash:
                    self._stash[key][1].append(value)
                else:
                    self._stash[key] = (now, [value])
            self._prune(now)
        return self._decode(ours)

    def _prune(self, now: float) -> None:
        # Insertion order is age order: drop from the front.
        while self._stash:
            key, (since, _) = next(iter(self._stash.items()))
            if now - since < STASH_SECONDS and len(self._stash) <= STASH_LIMIT:
                break
            del self._stash[key]

    def _decode(self, values: list[bytes]) -> list[Event]:
        events = []
        for value in values:
            try:
                events.append(_from_status_event(value))
            except MalformedMessage:
                self.malformed += 1
        return events

    async def stop(self) -> None:
        """Stop reading, close the consumer and deliver what was already read."""
        self._running.clear()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        if self._pump is not None:
            await asyncio.sleep(0)  # let the thread's last call_soon_threadsafe land
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        while self._sink is not None and not self._queue.empty():
            self._sink(self._queue.get_nowait())

    def _connect(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **self.security,
                "group.id": f"simulator-{uuid.uuid4().hex}",  # never joins: we assign
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100,
                "socket.connection.setup.timeout.ms": int(self.connect_timeout * 1000),
                "error_cb": _ignore_transient,
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.connect_timeout)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise FollowUnavailable(f"status topic {self.topic!r} not found on Kafka")
            positions = []
            for partition in sorted(topic.partitions):
                _, end = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.connect_timeout
                )
                positions.append(TopicPartition(self.topic, partition, end))
            consumer.assign(positions)
        except (KafkaException, FollowUnavailable) as exc:
            consumer.close()
            if isinstance(exc, FollowUnavailable):
                raise
            raise FollowUnavailable(
                f"cannot read {self.topic!r} from Kafka at {self.bootstrap}: {exc}"
            ) from None
        return consumer

    def _consume(
        self,
        consumer: Consumer,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[list[Event]],
    ) -> None:
        try:
            while self._running.is_set():
                messages = consumer.consume(num_messages=1000, timeout=0.1)
                events = self.sort(messages, time.monotonic())
                if events:
                    loop.call_soon_threadsafe(queue.put_nowait, events)
        except RuntimeError:
            pass  # the loop closed under us: the run is over
        finally:
            consumer.close()


class ApiFollower:
    """Status events from each unfinished task's timeline, polled every `interval` seconds
    with at most `concurrency` requests in flight."""

    name = "api"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        tracker: Tracker,
        *,
        interval: float = 1.0,
        concurrency: int = 8,
    ):
        self.session = session
        self.api_url = api_url.rstrip("/")
        self.tracker = tracker
        self.interval = interval
        self.concurrency = concurrency
        self._task: asyncio.Task[None] | None = None

    async def start(self, sink: Sink) -> None:
        """Start polling in the background; nothing to position."""
        self._task = asyncio.get_running_loop().create_task(self._poll_forever(sink))

    def watch(self, task_id: str) -> list[Event]:
        """Nothing to do: every unfinished task the tracker knows is polled."""
        return []

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll_forever(self, sink: Sink) -> None:
        limit = asyncio.Semaphore(self.concurrency)

        async def poll(task_id: str) -> None:
            async with limit:
                events = await self._timeline(task_id)
            if events:
                sink(events)

        while True:
            started = time.monotonic()
            pending = [task.task_id for task in self.tracker.unfinished_tasks()]
            if pending:
                await asyncio.gather(*(poll(task_id) for task_id in pending))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _timeline(self, task_id: str) -> list[Event]:
        try:
            async with self.session.get(f"{self.api_url}/api/v1/tasks/{task_id}") as response:
                if response.status != 200:
                    return []
                body = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.debug("polling %s: %s", task_id, exc)
            return []
        return events_from_timeline(task_id, body.get("timeline") or [])


def events_from_timeline(task_id: str, timeline: list[dict[str, Any]]) -> list[Event]:
    """Events from a task's API timeline, with ids that are stable across polls."""
    events = []
    for item in timeline:
        try:
            status = Status(item["status"])
            at = datetime.fromisoformat(item["at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        attempt = int(item.get("attempt") or 0)
        events.append(
            Event(
                event_id=f"api:{task_id}:{status}:{attempt}:{item['at']}",
                task_id=task_id,
                status=status,
                at=at,
                attempt=attempt,
                queue=item.get("queue"),
            )
        )
    return events


def _from_status_event(raw: bytes | None) -> Event:
    event = decode_event(raw)
    return Event(
        event_id=event.event_id,
        task_id=event.task_id,
        status=event.status,
        at=event.at.timestamp(),
        attempt=event.attempt,
        queue=event.queue,
    )


async def _pump(queue: asyncio.Queue[list[Event]], sink: Sink) -> None:
    while True:
        sink(await queue.get())


def _ignore_transient(error: KafkaError) -> None:
    # librdkafka reconnects by itself; a fatal error surfaces from list_topics or consume.
    log.debug("kafka client: %s", error)
