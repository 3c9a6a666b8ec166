"""The bridge's Celery publishing, against the stack's real Redis: a step's messages go
out in one pipelined round trip, each where it belongs, with its arguments readable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from redis.connection import AbstractConnection

from bridge.dispatcher import CeleryDispatcher, Dispatch
from core.celery_app import make_celery
from core.messages import CeleryEnvelope, TaskRequest, utcnow
from core.priority import Priority
from core.settings import Settings

pytestmark = pytest.mark.stack

# A Redis database nothing else uses: the stack has 0, isolated instances 2-15.
TEST_DB = 1


@pytest.fixture()
def dispatcher(stack: Settings) -> Iterator[tuple[CeleryDispatcher, redis.Redis]]:
    url = stack.redis_url.rsplit("/", 1)[0] + f"/{TEST_DB}"  # with its password
    settings = stack.model_copy(update={"redis_url": url, "celery_broker_url": url})
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield CeleryDispatcher(make_celery(settings, "bridge-test"), client), client
    finally:
        client.flushdb()
        client.close()


def _dispatch(name: str, queue: Priority) -> Dispatch:
    request = TaskRequest(
        task_id=str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
        team="alpha",
        routine="noop",
        priority=queue,
        accepted_at=utcnow(),
        payload={"n": 1},
    )
    return Dispatch(CeleryEnvelope(request, queue))


def _step(round_: int) -> list[list[Dispatch]]:
    return [
        [_dispatch(f"h{round_}", Priority.HIGH)],
        [_dispatch(f"m{round_}a", Priority.MEDIUM), _dispatch(f"m{round_}b", Priority.MEDIUM)],
        [_dispatch(f"l{round_}", Priority.LOW)],
    ]


def test_a_steps_messages_reach_redis_in_one_round_trip(
    dispatcher: tuple[CeleryDispatcher, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge, client = dispatcher
    bridge.publish(_step(0))  # the first publish also connects and declares the queues
    sends: list[Any] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        sends.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    bridge.publish(_step(1))
    assert len(sends) == 1, f"{len(sends)} round trips for one step's three messages"
    monkeypatch.undo()
    assert [client.llen(q.value) for q in Priority.ordered()] == [2, 2, 2]


def test_each_message_names_its_tasks_and_shows_their_arguments(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    bridge, client = dispatcher
    step = _step(0)
    bridge.publish(step)
    message = orjson.loads(client.lindex(Priority.MEDIUM.value, 0))  # type: ignore[arg-type]
    headers = message["headers"]
    assert headers["task"] == "routine.noop"
    assert headers["id"] == f"{step[1][0].task_id}+1"  # two tasks in one message
    assert orjson.loads(headers["argsrepr"]) == [item.envelope.to_json() for item in step[1]]
