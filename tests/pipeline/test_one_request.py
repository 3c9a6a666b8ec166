"""One request must never stop the platform: whatever its size or depth, a submit is a
clear 4xx or a task that reaches a terminal status, and the consumers stay up."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine

from core.messages import TaskRequest
from core.priority import Priority
from core.settings import Settings
from ops.supervisor import Supervisor
from tests.instance import submit
from tests.tasks_db import wait_terminal

pytestmark = pytest.mark.stack

CONSUMERS = ("bridge", "recorder", "worker-1")


def _pids(settings: Settings) -> dict[str, int]:
    supervisor = Supervisor(settings.run_dir)
    pids = {}
    for name in CONSUMERS:
        tracked = supervisor.tracked(name)
        assert tracked is not None, f"{name} is not running"
        pids[name] = tracked.pid
    return pids


def _nested(depth: int) -> str:
    """A JSON object nested `depth` levels deep, as text (orjson would refuse to write it)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def _post_text(api: httpx.Client, path: str, body: str) -> httpx.Response:
    """POST a JSON body written by hand (one too deep for any encoder, say)."""
    return api.post(path, content=body, headers={"Content-Type": "application/json"})


def _request_overhead(settings: Settings) -> int:
    """Bytes an echo request adds around a payload {"b": "<n characters>"}."""
    sample = TaskRequest(
        task_id="01a22e23-5a04-7f2c-a3fd-bbf0d3fd45f0",
        team="alpha",
        routine="echo",
        priority=Priority.MEDIUM,
        accepted_at=datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        payload={"b": ""},
    )
    return len(sample.encode())


def _check_answer(response: httpx.Response, accepted: list[str]) -> None:
    assert response.status_code in (202, 413), response.text[:300]
    if response.status_code == 202:
        accepted.append(response.json()["task_id"])
    else:
        error = response.json()["error"]
        assert error["code"] == "payload_too_large"
        assert "payload" in error["message"] or "API_MAX_BODY_BYTES" in error["message"]


def test_the_reported_request_then_another_teams_tasks_all_end_with_the_same_consumers(
    stack: Settings, api: httpx.Client, engine: Engine
) -> None:
    before = _pids(stack)
    answer = api.post(
        "/api/v1/tasks", json={"team": "alpha", "routine": "echo", "payload": {"b": "x" * 999_700}}
    )
    assert answer.status_code == 202, answer.text[:300]
    big = answer.json()["task_id"]
    others = submit(api, [{"team": "bravo", "routine": "noop"} for _ in range(100)])

    ended = wait_terminal(engine, [big, *others], timeout=180)

    assert [ended[t] for t in others] == ["SUCCEEDED"] * 100
    # Its echo is over RESULT_MAX_BYTES: the task ends FAILED, saying so.
    task = api.get(f"/api/v1/tasks/{big}").json()
    assert task["status"] == "FAILED"
    assert task["error"].startswith("result too large (999708 bytes > ")
    # The payload is kept whole, though no status event carried it.
    assert task["payload"] == {"b": "x" * 999_700}
    assert _pids(stack) == before


def test_every_size_near_the_limits_is_a_clear_4xx_or_a_task_that_ends(
    stack: Settings, api: httpx.Client, engine: Engine
) -> None:
    before = _pids(stack)
    overhead = _request_overhead(stack)
    request_edge = stack.limits.request_max_bytes - overhead  # the largest accepted payload
    body_edge = stack.api_max_body_bytes - len(
        '{"team":"alpha","routine":"echo","payload":{"b":""}}'
    )
    sizes = sorted(
        {*range(990_000, 1_100_001, 10_000)}
        | {n + d for n in (request_edge, body_edge) for d in (-1, 0, 1)}
    )
    accepted: list[str] = []
    refused = 0
    for size in sizes:
        body = f'{{"team":"alpha","routine":"echo","payload":{{"b":"{"x" * size}"}}}}'
        response = _post_text(api, "/api/v1/tasks", body)
        _check_answer(response, accepted)
        refused += response.status_code == 413
    assert accepted and refused, (len(accepted), refused)

    ended = wait_terminal(engine, accepted, timeout=240)
    assert set(ended.values()) == {"FAILED"}  # each echo is over RESULT_MAX_BYTES
    noop = api.post("/api/v1/tasks", json={"team": "charlie", "routine": "noop"}).json()
    assert wait_terminal(engine, [noop["task_id"]]) == {noop["task_id"]: "SUCCEEDED"}
    assert _pids(stack) == before


@pytest.mark.parametrize("depth", [100, 254, 300, 5000])
def test_a_deep_payload_is_a_4xx_never_a_500(
    stack: Settings, api: httpx.Client, depth: int
) -> None:
    response = _post_text(
        api, "/api/v1/tasks", f'{{"team":"alpha","routine":"noop","payload":{_nested(depth)}}}'
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    error = response.json()["error"]
    if response.status_code == 422:
        assert error["details"] == [
            {
                "field": "payload",
                "message": f"nested more than {stack.payload_max_depth} levels "
                "deep (PAYLOAD_MAX_DEPTH)",
            }
        ]
    else:  # deeper than any JSON reader here takes: the body itself is refused
        assert "depth" in error["message"]


def test_a_payload_as_deep_as_allowed_runs(
    stack: Settings, api: httpx.Client, engine: Engine
) -> None:
    body = f'{{"team":"alpha","routine":"echo","payload":{_nested(stack.payload_max_depth)}}}'
    response = _post_text(api, "/api/v1/tasks", body)
    assert response.status_code == 202, response.text[:300]
    task_id = response.json()["task_id"]
    assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}


def test_a_batch_answers_each_item_on_its_own(
    stack: Settings, api: httpx.Client, engine: Engine
) -> None:
    too_big = stack.limits.request_max_bytes  # with the envelope, over the request limit
    body = (
        '{"tasks":['
        '{"team":"alpha","routine":"noop"},'
        f'{{"team":"alpha","routine":"noop","payload":{_nested(stack.payload_max_depth + 1)}}},'
        f'{{"team":"alpha","routine":"echo","payload":{{"b":"{"x" * (too_big - 100)}"}}}}'
        "]}"
    )
    response = _post_text(api, "/api/v1/tasks/batch", body)
    assert response.status_code == 202, response.text[:300]
    results = response.json()["results"]
    assert [r["status_code"] for r in results] == [202, 422, 413]
    assert results[1]["error"]["details"][0]["field"] == "payload"
    assert results[2]["error"]["details"][0]["field"] == "payload"
    task_id = results[0]["task"]["task_id"]
    assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}
