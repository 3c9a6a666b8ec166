"""What operators see: Flower behind auth, Prometheus series that move, JSON logs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from core.settings import Settings
from ops.services import flower_credentials
from tests.helpers import wait_for
from tests.tasks_db import submit_batch, wait_terminal

pytestmark = pytest.mark.stack


def test_flower_refuses_without_credentials_and_answers_with_them(stack: Settings) -> None:
    url = f"http://127.0.0.1:{stack.flower_port}/"
    assert httpx.get(url, timeout=10).status_code == 401
    user, password = flower_credentials(stack, stack.run_dir).split(":", 1)
    assert httpx.get(url, auth=(user, "wrong"), timeout=10).status_code == 401
    answer = httpx.get(url, auth=(user, password), timeout=10)
    assert answer.status_code == 200
    assert "Flower" in answer.text


def _samples(api: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = api.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return float(samples.get((name, frozenset(labels.items())), 0.0))


def test_metrics_by_priority_and_team_move_when_tasks_run(
    api: httpx.Client, engine: Engine
) -> None:
    labels = {"priority": "low", "team": "charlie", "routine": "noop"}
    before = _samples(api)
    ids = submit_batch(api, [{"team": "charlie", "routine": "noop", "priority": "low"}] * 12)
    wait_terminal(engine, ids)

    def moved() -> dict | None:  # type: ignore[type-arg]
        after = _samples(api)
        finished = _value(after, "tasks_finished_total", status="SUCCEEDED", **labels) - _value(
            before, "tasks_finished_total", status="SUCCEEDED", **labels
        )
        return after if finished >= 12 else None

    after = wait_for(moved, timeout=30, what="tasks_finished_total to count the tasks")
    for name in ("task_wait_seconds_count", "task_run_seconds_count"):
        assert _value(after, name, **labels) - _value(before, name, **labels) >= 12, name
    dispatched = {"priority": "low", "team": "charlie"}
    assert (
        _value(after, "bridge_dispatched_total", **dispatched)
        - _value(before, "bridge_dispatched_total", **dispatched)
        >= 12
    )
    for queue in ("high", "medium", "low"):
        assert ("celery_queue_depth", frozenset({("queue", queue)})) in after
    assert _value(after, "status_events_recorded_total") > _value(
        before, "status_events_recorded_total"
    )
    assert any(name == "bridge_consumer_lag" for name, _ in after)
    assert _value(after, "kafka_produce_seconds_count") > _value(
        before, "kafka_produce_seconds_count"
    )


def test_a_log_line_about_a_task_is_json_and_carries_its_task_id(
    api: httpx.Client, engine: Engine, stack: Settings
) -> None:
    response = api.post(
        "/api/v1/tasks", json={"team": "bravo", "routine": "fail", "payload": {"times": 99}}
    )
    task_id = response.json()["task_id"]
    assert wait_terminal(engine, [task_id]) == {task_id: "FAILED"}
    logs = Path(stack.run_dir) / "logs"

    def line_for_task() -> dict | None:  # type: ignore[type-arg]
        for path in logs.glob("worker-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if task_id in line and line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("task_id") == task_id:
                        return entry  # type: ignore[no-any-return]
        return None

    entry = wait_for(line_for_task, timeout=30, what="a worker log line naming the task")
    assert entry["task_id"] == task_id
    assert entry["stage"] == "worker"
    assert entry["level"] == "WARNING"
    assert entry["team"] == "bravo"
    assert {"ts", "msg", "logger"} <= set(entry)
