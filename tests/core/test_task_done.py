"""core.task_done with fakes: the announcement's shape, the recorder's publisher, the API
process's registry of waiters and its one subscription (against a stand-in for
redis.asyncio that the test feeds and breaks)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from core import redis_keys
from core.messages import MalformedMessage, StatusEvent
from core.status import TERMINAL, Status
from core.task_done import Announcer, Subscription, TaskDone, Waiters, canonical, channel
from tests.fakes import unit_settings


def _event(status: Status, task_id: str | None = None) -> StatusEvent:
    return StatusEvent(
        task_id=task_id or str(uuid.uuid4()),
        status=status,
        team="alpha",
        routine="noop",
        priority="medium",
    )


def test_an_announcement_round_trips_and_anything_else_is_malformed() -> None:
    done = TaskDone((str(uuid.uuid4()), str(uuid.uuid4())))
    assert TaskDone.decode(done.encode()) == done
    for raw in (b"not json", b"[]", b'{"v": 2, "task_ids": []}', b'{"v": 1, "task_ids": [1]}'):
        with pytest.raises(MalformedMessage):
            TaskDone.decode(raw)


def test_the_ended_tasks_of_a_batch_are_those_with_a_terminal_event_once_each() -> None:
    events = [_event(status) for status in Status]  # one task per status
    repeat = _event(Status.SUCCEEDED, events[-1].task_id.upper())
    done = TaskDone.of([*events, repeat])
    assert done.task_ids == tuple(e.task_id for e in events if e.status in TERMINAL)
    assert canonical("not-a-uuid") is None


def test_the_channel_is_the_platforms_own() -> None:
    settings = unit_settings(status_topic="mine.status")
    assert channel(settings) == redis_keys.task_done("mine.status")
    assert channel(settings) != channel(unit_settings())


class FakeRedis:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.away = False

    def publish(self, name: str, value: bytes) -> int:
        if self.away:
            raise redis.ConnectionError("Connection refused")
        self.published.append((name, value))
        return 1

    def close(self) -> None:
        pass


def test_the_announcer_publishes_once_per_batch_and_survives_redis_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeRedis()
    announcer = Announcer(client, "tp:done:x")  # type: ignore[arg-type]
    ended = [_event(Status.SUCCEEDED), _event(Status.FAILED)]
    assert announcer.announce([_event(Status.STARTED), *ended]) == 2
    assert [(name, TaskDone.decode(raw).task_ids) for name, raw in client.published] == [
        ("tp:done:x", tuple(e.task_id for e in ended))
    ]
    assert announcer.announce([_event(Status.QUEUED)]) == 0  # nothing ended: no publish
    assert len(client.published) == 1
    client.away = True
    with caplog.at_level(logging.WARNING, logger="core.task_done"):
        assert announcer.announce(ended) == 0
        assert announcer.announce(ended) == 0
    assert len([r for r in caplog.records if "cannot announce" in r.message]) == 1  # once
    client.away = False
    assert announcer.announce(ended) == 2
    assert len(client.published) == 2


def test_waiters_are_woken_by_their_task_and_a_woken_future_is_gone() -> None:
    async def scenario() -> None:
        waiters = Waiters()
        a1, a2, b = waiters.add("a"), waiters.add("a"), waiters.add("b")
        assert len(waiters) == 3
        assert waiters.ended(["a", "unknown"]) == 2
        assert a1.done() and a2.done() and not b.done()
        assert len(waiters) == 1
        waiters.discard("b", b)
        assert len(waiters) == 0
        waiters.discard("b", b)  # twice is harmless
        c = waiters.add("c")
        assert waiters.wake_all() == 1 and c.done()

    asyncio.run(scenario())


class FakePubSub:
    """Stands in for redis.asyncio's PubSub: messages come from a queue the test fills;
    a ConnectionError put in the queue is raised as a lost connection."""

    def __init__(self, owner: FakeAsyncRedis) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    async def subscribe(self, name: str) -> None:
        if self.owner.refuse:
            raise redis.ConnectionError("Connection refused")
        await self.queue.put({"type": "subscribe", "channel": name.encode(), "data": 1})

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def aclose(self) -> None:
        self.closed = True


class FakeAsyncRedis:
    def __init__(self) -> None:
        self.refuse = False
        self.sessions: list[FakePubSub] = []

    def __call__(self) -> FakeAsyncRedis:  # the connect factory
        return self

    def pubsub(self) -> FakePubSub:
        self.sessions.append(FakePubSub(self))
        return self.sessions[-1]

    async def aclose(self) -> None:
        pass


async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _message(*ids: str) -> dict[str, Any]:
    return {"type": "message", "channel": b"c", "data": TaskDone(ids).encode()}


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_the_subscription_wakes_the_waiters_of_announced_tasks() -> None:
    async def scenario() -> None:
        fake, waiters = FakeAsyncRedis(), Waiters()
        subscription = Subscription(fake, "c", waiters)
        early = waiters.add("a")
        subscription.start()
        await _until(lambda: waiters.subscribed, "the subscription")
        assert early.done()  # subscribed: every waiter reads again
        a, b = waiters.add("a"), waiters.add("b")
        await fake.sessions[0].queue.put({"type": "message", "channel": b"c", "data": b"{oops"})
        await fake.sessions[0].queue.put(_message("a"))
        await _until(lambda: a.done(), "a to be woken")
        assert not b.done()
        assert subscription.received == 1  # the malformed one was skipped
        await subscription.stop()
        assert fake.sessions[0].closed

    _run(scenario)


def test_a_lost_subscription_comes_back_with_backoff_and_wakes_every_waiter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        fake, waiters = FakeAsyncRedis(), Waiters()
        pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 3:
                fake.refuse = False  # Redis is back after three tries
            await asyncio.sleep(0)

        subscription = Subscription(fake, "c", waiters, sleep=sleep)
        subscription.start()
        await _until(lambda: waiters.subscribed, "the subscription")
        waiting = waiters.add("a")
        fake.refuse = True
        await fake.sessions[0].queue.put(redis.ConnectionError("Connection reset by peer"))
        await _until(lambda: len(pauses) >= 1, "the connection to be lost")
        await _until(lambda: waiters.subscribed, "the subscription to come back")
        assert pauses == [0.1, 0.2, 0.4]
        assert waiting.done()  # announcements may have been missed meanwhile: read again
        await subscription.stop()

    with caplog.at_level(logging.WARNING, logger="core.task_done"):
        _run(scenario)
    assert len([r for r in caplog.records if "no task-done subscription" in r.message]) == 1


def test_stopping_a_subscription_that_never_connected_is_quiet() -> None:
    async def scenario() -> None:
        fake, waiters = FakeAsyncRedis(), Waiters()
        fake.refuse = True

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(0)

        subscription = Subscription(fake, "c", waiters, sleep=sleep)
        subscription.start()
        await _until(lambda: len(fake.sessions) >= 2, "a few tries")
        await subscription.stop()
        assert not waiters.subscribed

    _run(scenario)
