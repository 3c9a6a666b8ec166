"""The bridge's Celery publishing, against the stack's real Redis: a step's messages go
out in one pipelined round trip with their checks, each where it belongs, written as
Celery's send_task writes it, never a delivery sent before or a task that ended."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
import redis

from bridge.dispatcher import FINISHED, CeleryDispatcher, Dispatch
from core import redis_keys
from core.celery_app import make_celery
from core.messages import CeleryEnvelope, TaskRequest, utcnow
from core.priority import Priority
from core.settings import Settings
from tests.round_trips import redis_round_trips

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
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    bridge, client = dispatcher
    bridge.send(_step(0))  # the first send also connects (and loads the script)
    with redis_round_trips() as sent:
        bridge.send(_step(1))
    assert len(sent) == 1, f"{len(sent)} round trips for one step's three messages"
    assert [client.llen(q.value) for q in Priority.ordered()] == [2, 2, 2]


def test_each_message_names_its_tasks_and_shows_their_arguments(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    bridge, client = dispatcher
    step = _step(0)
    bridge.send(step)
    message = orjson.loads(client.lindex(Priority.MEDIUM.value, 0))  # type: ignore[arg-type]
    headers = message["headers"]
    assert headers["task"] == "routine.noop"
    assert headers["id"] == f"{step[1][0].task_id}+1"  # two tasks in one message
    assert orjson.loads(headers["argsrepr"]) == [item.envelope.to_json() for item in step[1]]


def test_a_message_is_what_celerys_send_task_writes(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    """The worker reads what the bridge writes as it reads Celery's own: field for field
    the same, but for the delivery tag (a new uuid each time) and the arguments' text that
    send_task also leaves among the properties."""
    bridge, client = dispatcher
    [item] = _step(0)[0]
    args = [item.envelope.to_json()]
    bridge.celery.send_task(
        "routine.noop", args=args, argsrepr=orjson.dumps(args).decode(),
        task_id=item.task_id, queue=item.queue.value,
    )  # fmt: skip
    bridge.send([[item]])
    ours, celerys = (orjson.loads(raw) for raw in client.lrange(item.queue.value, 0, 1))
    assert ours["properties"].pop("delivery_tag") != celerys["properties"].pop("delivery_tag")
    celerys["properties"].pop("argsrepr")
    assert ours == celerys


def test_a_delivery_sent_before_or_a_task_that_ended_is_not_pushed_again(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    bridge, client = dispatcher
    sent_before, ended, new = (_dispatch(name, Priority.MEDIUM) for name in ("s", "e", "n"))
    bridge.mark([sent_before])
    client.set(redis_keys.outcome(ended.task_id), b"{}")
    sent = bridge.send([[sent_before, ended, new]])  # one message of three tasks
    assert sent.before == {
        sent_before.task_id: Priority.MEDIUM.value,
        ended.task_id: FINISHED,
        new.task_id: None,
    }
    assert sent.pushed == 1 and sent.refused == {}
    [raw] = client.lrange(Priority.MEDIUM.value, 0, -1)
    assert orjson.loads(raw)["headers"]["id"] == new.task_id  # the new task, alone


def test_a_task_that_cannot_be_encoded_is_refused_only_when_new(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    bridge, client = dispatcher
    unencodable = {"n": 2**70}  # beyond what JSON numbers carry here
    new, sent_before = (
        Dispatch(CeleryEnvelope(replace(d.envelope.request, payload=unencodable), d.queue))
        for d in (_dispatch("x", Priority.LOW), _dispatch("y", Priority.LOW))
    )
    bridge.mark([sent_before])
    sent = bridge.send([[new], [sent_before]])
    assert set(sent.refused) == {new.task_id}
    assert "cannot be put on the Celery queue" in sent.refused[new.task_id]
    assert sent.before[sent_before.task_id] == Priority.LOW.value
    assert sent.pushed == 0 and client.llen(Priority.LOW.value) == 0


def test_a_script_redis_has_forgotten_is_loaded_again(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    """As after a Redis restart: the script is unknown by its hash; the send loads it and
    goes on, pushing each message once."""
    bridge, client = dispatcher
    bridge._check_and_push.sha = "0" * 40  # a hash Redis has no script for
    sent = bridge.send(_step(0))
    assert sent.pushed == 3
    assert [client.llen(q.value) for q in Priority.ordered()] == [1, 1, 1]


def test_marking_a_steps_tasks_is_one_round_trip(
    dispatcher: tuple[CeleryDispatcher, redis.Redis],
) -> None:
    """Their delivery marks and queued leases, the lease script called by its hash."""
    bridge, _ = dispatcher
    bridge.mark([item for message in _step(0) for item in message])  # loads the script
    step = [item for message in _step(1) for item in message]
    with redis_round_trips() as sent:
        bridge.mark(step)
    assert len(sent) == 1, f"{len(sent)} round trips to mark one step's four tasks"
    assert bridge.send([step[:1]]).before[step[0].task_id] == Priority.HIGH.value
