"""A malformed request never stops the bridge; it is dead-lettered with its reason."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine

from core.kafka import client_config, make_producer
from core.settings import Settings
from tests.helpers import wait_for
from tests.tasks_db import wait_terminal

pytestmark = pytest.mark.stack


def _dlq_end(settings: Settings) -> tuple[Consumer, TopicPartition]:
    consumer = Consumer({**client_config(settings), "group.id": f"test-dlq-{uuid.uuid4()}"})
    partition = TopicPartition(settings.dlq_topic, 0)
    _, high = consumer.get_watermark_offsets(partition, timeout=10)
    consumer.assign([TopicPartition(settings.dlq_topic, 0, high)])
    return consumer, partition


def test_poison_messages_are_dead_lettered_and_the_bridge_goes_on(
    stack: Settings, api: httpx.Client, engine: Engine
) -> None:
    consumer, _ = _dlq_end(stack)
    known_id = str(uuid.uuid4())
    poison = [
        b"\x00\x01 not json at all",
        b'{"team": "alpha"}',
        orjson.dumps(
            {
                "task_id": known_id,
                "team": "alpha",
                "routine": "teleport",
                "priority": "high",
                "accepted_at": "2026-11-27T10:00:00+00:00",
            }
        ),
    ]
    producer = make_producer(stack)
    for value in poison:
        producer.produce(stack.request_topic("alpha"), value=value)
    assert producer.flush(30) == 0

    # The bridge keeps consuming: a good task submitted after the poison succeeds.
    good = api.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"}).json()["task_id"]
    assert wait_terminal(engine, [good]) == {good: "SUCCEEDED"}

    # The one with a readable task id ends DEAD_LETTERED, with the reason.
    assert wait_terminal(engine, [known_id]) == {known_id: "DEAD_LETTERED"}
    task = api.get(f"/api/v1/tasks/{known_id}").json()
    assert "unknown routine 'teleport'" in task["error"]
    assert [e["status"] for e in task["timeline"]] == ["DEAD_LETTERED"]

    # All three are on the dead-letter topic: original bytes and a reason header.
    found: dict[bytes, dict[str, bytes]] = {}

    def all_dead_lettered() -> bool:
        for message in consumer.consume(100, 0.2):
            if message.error() is None and message.value() in poison:
                found[message.value()] = dict(message.headers() or [])
        return len(found) == len(poison)

    try:
        wait_for(all_dead_lettered, timeout=30, what="three dead letters")
    finally:
        consumer.close()
    assert b"not JSON" in found[poison[0]]["reason"]
    assert found[poison[1]]["reason"] == b"task_id is missing"
    assert found[poison[2]]["task_id"] == known_id.encode()
    assert found[poison[2]]["source_topic"] == stack.request_topic("alpha").encode()
