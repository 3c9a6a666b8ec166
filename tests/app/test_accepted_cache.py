"""A task is readable right after its 202 even when nothing has recorded it yet: the API
keeps what Kafka acknowledged in Redis before it answers (app/accepted_cache.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.instance import Instance
from tests.tasks_db import count_tasks

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def api_only(stack: Settings) -> Iterator[Instance]:
    """An API with no recorder, bridge or worker behind it: Postgres never hears of a task."""
    with Instance(stack, "apionly").running(["api"]) as instance:
        yield instance


def test_single_batch_and_idempotent_submits_are_readable_before_any_recording(
    api_only: Instance,
) -> None:
    key = f"cache-{uuid.uuid4()}"
    with api_only.client() as client:
        single = client.post("/api/v1/tasks", json={"team": "alpha", "routine": "echo"})
        assert single.status_code == 202, single.text
        batch = client.post(
            "/api/v1/tasks/batch",
            json={
                "tasks": [
                    {"team": "bravo", "routine": "noop", "priority": "low"},
                    {"team": "alpha", "routine": "echo", "payload": {"n": 1}},
                    {"team": "alpha", "routine": "noop", "idempotency_key": key},
                ]
            },
        )
        assert batch.status_code == 202, batch.text
        accepted = [single.json()] + [item["task"] for item in batch.json()["results"]]
        for task in accepted:
            found = client.get(f"/api/v1/tasks/{task['task_id']}")
            assert found.status_code == 200, found.text
            body = found.json()
            assert body["status"] == "ACCEPTED"
            assert (body["team"], body["routine"], body["priority"]) == (
                task["team"],
                task["routine"],
                task["priority"],
            )
            assert [e["status"] for e in body["timeline"]] == ["ACCEPTED"]
        assert client.get(f"/api/v1/tasks/{accepted[2]['task_id']}").json()["payload"] == {"n": 1}

        # A repeat of the idempotency key is answered from the cache: same task, nothing new.
        repeat = client.post(
            "/api/v1/tasks", json={"team": "alpha", "routine": "noop", "idempotency_key": key}
        )
        assert repeat.status_code == 202
        assert repeat.json()["task_id"] == accepted[3]["task_id"]
        assert repeat.json()["idempotent_replay"] is True
    assert count_tasks(api_only.engine) == 0
