"""Overload and outages at the API: rate limits (429) and Kafka away (503)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.instance import Instance
from tests.tasks_db import count_tasks

pytestmark = pytest.mark.stack


# One token a thousand seconds: what the test sees depends on the burst (a count), not
# on how fast this machine sends (at 2 tasks/s a slow run earned a token back).
RATE = 0.001
BURST = 10


@pytest.fixture(scope="module")
def limited(stack: Settings) -> Iterator[Instance]:
    limits = Instance(stack, "limits", TEAM_RATE_LIMITS=f"bravo:{RATE}", RATE_BURST=str(BURST))
    with limits.running(["api"]) as instance:
        yield instance


def test_a_team_over_its_rate_limit_gets_429_with_retry_after(limited: Instance) -> None:
    task = {"team": "bravo", "routine": "noop"}
    with limited.client() as client:
        first = client.post("/api/v1/tasks/batch", json={"tasks": [task] * (BURST - 1)})
        assert first.status_code == 202
        assert first.json()["accepted"] == BURST - 1
        answers = [client.post("/api/v1/tasks", json=task).status_code for _ in range(3)]
        assert answers == [202, 429, 429]  # exactly the burst goes through
        refused = client.post("/api/v1/tasks", json=task)
        assert refused.status_code == 429
        # Retry-After: the time one token takes to come back, less what already came.
        assert 0.9 / RATE < int(refused.headers["Retry-After"]) <= 1 / RATE
        error = refused.json()["error"]
        assert error["code"] == "rate_limited"
        assert f"team bravo is over its rate limit of {RATE:g} tasks/s" in error["message"]
        # Other teams have their own budget.
        assert client.post("/api/v1/tasks", json={**task, "team": "alpha"}).status_code == 202


@pytest.fixture(scope="module")
def kafka_away(stack: Settings) -> Iterator[Instance]:
    nokafka = Instance(stack, "nokafka", KAFKA_PRODUCE_TIMEOUT_SECONDS="2")
    with nokafka.running(["api"]) as instance:
        # Now point the API at a Kafka that is not there.
        instance.env["KAFKA_BOOTSTRAP"] = "127.0.0.1:1"
        instance.restart(["api"])
        yield instance


def test_with_kafka_away_the_api_answers_503_promptly_and_creates_nothing(
    kafka_away: Instance,
) -> None:
    before = count_tasks(kafka_away.engine)
    with kafka_away.client() as client:
        started = time.monotonic()
        response = client.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"})
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert "Kafka" in response.json()["error"]["message"]
        # Bounded by the produce timeout (2 s here), not hanging.
        assert elapsed < 30
        batch = client.post(
            "/api/v1/tasks/batch", json={"tasks": [{"team": "alpha", "routine": "noop"}] * 3}
        )
        assert batch.status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] == "ok"
        assert ready.json()["checks"]["kafka"] != "ok"
    assert count_tasks(kafka_away.engine) == before


@pytest.fixture(scope="module")
def database_away(stack: Settings) -> Iterator[Instance]:
    with Instance(stack, "nodb").running(["api"]) as instance:
        # Now point the API at a Postgres that is not there.
        instance.env["DATABASE_URL"] = "postgresql+psycopg://taskplatform@127.0.0.1:1/taskplatform"
        instance.restart(["api"])
        yield instance


def test_with_postgres_away_reads_answer_503_not_500(database_away: Instance) -> None:
    with database_away.client() as client:
        for path in ("/api/v1/tasks", f"/api/v1/tasks/{uuid.uuid4()}"):
            response = client.get(path)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
            assert "database" in response.json()["error"]["message"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] != "ok"
