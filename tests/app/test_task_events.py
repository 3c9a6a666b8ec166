"""`/api/v1/tasks/<id>/events`: a task's timeline as JSON, and live with follow=1 (SSE),
with the visibility of GET /api/v1/tasks/<id>."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.app.sse_client import read_events
from tests.tasks_db import RETRIED_ONCE_PATH

pytestmark = pytest.mark.stack


def _client(api_url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=60)


def _submit(client: httpx.Client, **body: Any) -> str:
    response = client.post("/api/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def _follow(client: httpx.Client, task_id: str) -> list[tuple[str, Any]]:
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", params={"follow": "1"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(read_events(r))  # returns only once the server ends the stream


def test_follow_streams_each_transition_in_order_then_ends(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    with _client(api_url, team_key("alpha")) as alpha:
        task_id = _submit(alpha, team="alpha", routine="sleep", payload={"ms": 300})
        received = _follow(alpha, task_id)  # opened right after the 202: the task is running
    names = [name for name, _ in received]
    assert names[-1] == "end"
    assert received[-1][1] == {"reason": "terminal"}
    statuses = [data["status"] for name, data in received if name == "status"]
    assert statuses == ["ACCEPTED", "QUEUED", "STARTED", "SUCCEEDED"]
    ids = [data["event_id"] for name, data in received if name == "status"]
    assert len(set(ids)) == len(ids)


def test_follow_shows_retries_and_the_plain_list_matches_the_task_timeline(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    with _client(api_url, team_key("bravo")) as bravo:
        task_id = _submit(bravo, team="bravo", routine="fail", payload={"times": 1})
        streamed = [data for name, data in _follow(bravo, task_id) if name == "status"]
        listed = bravo.get(f"/api/v1/tasks/{task_id}/events")
        task = bravo.get(f"/api/v1/tasks/{task_id}").json()
    assert [e["status"] for e in streamed] == RETRIED_ONCE_PATH
    assert [e["attempt"] for e in streamed] == [0, 1, 1, 1, 2, 2, 2]
    assert listed.status_code == 200
    assert listed.json() == streamed
    assert [(e["status"], e["at"]) for e in listed.json()] == [
        (e["status"], e["at"]) for e in task["timeline"]
    ]


def test_another_teams_task_is_missing_and_bad_input_is_a_4xx(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    with (
        _client(api_url, team_key("alpha")) as alpha,
        _client(api_url, team_key("bravo")) as bravo,
    ):
        task_id = _submit(alpha, team="alpha", routine="noop")
        for params in ({}, {"follow": "1"}):
            hidden = bravo.get(f"/api/v1/tasks/{task_id}/events", params=params)
            assert hidden.status_code == 404
            assert hidden.json()["error"]["code"] == "not_found"
        assert alpha.get(f"/api/v1/tasks/{uuid.uuid4()}/events").status_code == 404
        assert alpha.get("/api/v1/tasks/not-a-uuid/events").status_code == 404
        bad = alpha.get(f"/api/v1/tasks/{task_id}/events", params={"follow": "yes"})
        assert bad.status_code == 400
        assert "follow" in bad.json()["error"]["message"]
    assert httpx.get(f"{api_url}/api/v1/tasks/{task_id}/events").status_code == 401
