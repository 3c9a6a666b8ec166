"""A team submits work over HTTP and follows it through every stage to its end."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine

from core.kafka import client_config
from core.messages import decode_event
from core.settings import Settings
from tests.helpers import wait_for
from tests.tasks_db import (
    RETRIED_ONCE_PATH,
    SUCCESS_PATH,
    events,
    submit_batch,
    wait_terminal,
)

pytestmark = pytest.mark.stack


def _payload(routine: str, index: int) -> dict[str, object]:
    return {
        "noop": {},
        "echo": {"n": index, "text": f"hello {index}"},
        "sleep": {"ms": 5},
        "cpu": {"iterations": 2000},
        "fail": {"times": 1},
    }[routine]


def test_a_thousand_tasks_over_teams_priorities_and_routines_all_succeed(
    api: httpx.Client, engine: Engine
) -> None:
    combos = list(
        itertools.product(
            ["alpha", "bravo"], ["high", "medium", "low"], ["noop", "echo", "sleep", "cpu", "fail"]
        )
    )
    items = [
        {
            "team": team,
            "routine": routine,
            "priority": priority,
            "payload": _payload(routine, i),
        }
        for i, (team, priority, routine) in zip(range(1000), itertools.cycle(combos), strict=False)
    ]
    ids = submit_batch(api, items)
    assert len(ids) == len(set(ids)) == 1000

    final = wait_terminal(engine, ids, timeout=240)
    assert Counter(final.values()) == {"SUCCEEDED": 1000}

    timelines = events(engine, ids)
    for task_id, item in zip(ids, items, strict=True):
        statuses = [e.status for e in timelines[task_id]]
        if item["routine"] == "fail":
            # Fails once, is retried, and succeeds on the second attempt.
            assert statuses == RETRIED_ONCE_PATH, (task_id, statuses)
        else:
            assert statuses == SUCCESS_PATH, (task_id, statuses)
        times = [e.at for e in timelines[task_id]]
        assert times == sorted(times)

    # echo returns its payload, through the public API.
    echo_index = next(i for i, item in enumerate(items) if item["routine"] == "echo")
    task = api.get(f"/api/v1/tasks/{ids[echo_index]}").json()
    assert task["result"] == items[echo_index]["payload"]
    assert task["status"] == "SUCCEEDED"
    assert [e["status"] for e in task["timeline"]] == SUCCESS_PATH
    assert task["queue"] == items[echo_index]["priority"]
    assert task["attempts"] == 1


def test_fail_above_the_retry_limit_ends_failed_with_the_error(
    api: httpx.Client, engine: Engine
) -> None:
    response = api.post(
        "/api/v1/tasks", json={"team": "alpha", "routine": "fail", "payload": {"times": 10}}
    )
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert wait_terminal(engine, [task_id], timeout=120) == {task_id: "FAILED"}
    task = api.get(f"/api/v1/tasks/{task_id}").json()
    assert "failing on purpose" in task["error"]
    assert "after 3 retries" in task["error"]
    statuses = [e["status"] for e in task["timeline"]]
    assert statuses.count("RETRYING") == 3
    assert statuses.count("STARTED") == 4
    assert statuses[-1] == "FAILED"
    assert task["attempts"] == 4


def test_get_right_after_the_202_finds_the_task(api: httpx.Client) -> None:
    for _ in range(20):
        response = api.post("/api/v1/tasks", json={"team": "bravo", "routine": "noop"})
        assert response.status_code == 202
        found = api.get(response.headers["Location"])
        assert found.status_code == 200, found.text
        assert found.json()["task_id"] == response.json()["task_id"]


def test_the_same_events_are_on_the_status_topic(
    api: httpx.Client, engine: Engine, stack: Settings
) -> None:
    consumer = Consumer(
        {
            **client_config(stack),
            "group.id": f"test-status-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(stack.status_topic, timeout=10).topics[stack.status_topic]
    ends = []
    for number in partitions.partitions:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(stack.status_topic, number), timeout=10
        )
        ends.append(TopicPartition(stack.status_topic, number, high))
    consumer.assign(ends)
    try:
        ids = submit_batch(
            api, [{"team": "alpha", "routine": "echo", "payload": {"i": i}} for i in range(20)]
        )
        wait_terminal(engine, ids)
        seen: dict[str, list[str]] = {t: [] for t in ids}

        def all_terminal_seen() -> bool:
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                assert message.key() is not None
                event = decode_event(message.value())
                assert message.key().decode() == event.task_id
                if event.task_id in seen and event.status.value not in seen[event.task_id]:
                    seen[event.task_id].append(event.status.value)
            return all("SUCCEEDED" in s for s in seen.values())

        wait_for(all_terminal_seen, timeout=60, what="terminal events on the status topic")
        recorded = events(engine, ids)
        for task_id in ids:
            assert sorted(seen[task_id]) == sorted(e.status for e in recorded[task_id])
    finally:
        consumer.close()
