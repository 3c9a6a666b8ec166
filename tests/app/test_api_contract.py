"""The HTTP API's contract: auth and team isolation, idempotency, batches, bad input."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from core.messages import idempotent_task_id
from tests.tasks_db import count_tasks, events, statuses, wait_terminal

pytestmark = pytest.mark.stack


def _client(api_url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=30)


def test_no_or_wrong_key_is_401(api_url: str) -> None:
    body = {"team": "alpha", "routine": "noop"}
    for headers in ({}, {"Authorization": "Bearer tpk_nope_nope"}, {"Authorization": "Basic x"}):
        response = httpx.post(f"{api_url}/api/v1/tasks", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert "WWW-Authenticate" in response.headers
    assert httpx.get(f"{api_url}/api/v1/tasks").status_code == 401


def test_a_team_key_sees_and_submits_only_its_own_tasks(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    with _client(api_url, team_key("alpha")) as alpha, _client(api_url, team_key("bravo")) as bravo:
        created = alpha.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"})
        assert created.status_code == 202
        task_id = created.json()["task_id"]
        assert alpha.get(f"/api/v1/tasks/{task_id}").status_code == 200
        # bravo cannot see it, cannot tell it exists, cannot list alpha, cannot submit as alpha.
        hidden = bravo.get(f"/api/v1/tasks/{task_id}")
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "not_found"
        assert bravo.get("/api/v1/tasks", params={"team": "alpha"}).status_code == 403
        forbidden = bravo.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"})
        assert forbidden.status_code == 403
        assert "bravo" in forbidden.json()["error"]["message"]
        # Listing without a team filter shows bravo only its own tasks.
        page = bravo.get("/api/v1/tasks", params={"limit": 500}).json()
        assert all(task["team"] == "bravo" for task in page["tasks"])


def test_same_team_and_idempotency_key_give_the_same_task_run_once(
    api: httpx.Client, engine: Engine
) -> None:
    key = f"order-{uuid.uuid4()}"
    body = {"team": "alpha", "routine": "echo", "payload": {"k": key}, "idempotency_key": key}
    first = api.post("/api/v1/tasks", json=body)
    assert first.status_code == 202
    task_id = first.json()["task_id"]
    assert first.json()["idempotent_replay"] is False
    wait_terminal(engine, [task_id])
    again = api.post("/api/v1/tasks", json=body)
    assert again.status_code == 202
    assert again.json()["task_id"] == task_id
    assert again.json()["idempotent_replay"] is True
    assert again.json()["status"] == "SUCCEEDED"
    # Another team with the same key is another task.
    other = api.post("/api/v1/tasks", json={**body, "team": "bravo"})
    assert other.json()["task_id"] != task_id
    statuses = [e.status for e in events(engine, [task_id])[task_id]]
    assert statuses.count("STARTED") == 1


def test_concurrent_repeats_of_one_key_run_once(
    api_url: str, admin_key: str, engine: Engine
) -> None:
    key = f"race-{uuid.uuid4()}"
    body = {"team": "bravo", "routine": "noop", "idempotency_key": key}

    def submit(_: int) -> str:
        with _client(api_url, admin_key) as client:
            response = client.post("/api/v1/tasks", json=body)
            assert response.status_code == 202
            return str(response.json()["task_id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(16)))
    assert len(ids) == 1
    (task_id,) = ids
    wait_terminal(engine, [task_id])
    statuses = [e.status for e in events(engine, [task_id])[task_id]]
    assert statuses.count("STARTED") == 1
    assert statuses.count("SUCCEEDED") == 1


def test_a_batch_answers_each_item_on_its_own(api: httpx.Client, engine: Engine) -> None:
    items: list[Any] = [
        {"team": "alpha", "routine": "echo", "payload": {"i": 0}},
        {"team": "alpha", "routine": "nope"},
        {"team": "alpha", "routine": "noop", "priority": "urgent"},
        "not an object",
        {"team": "zulu", "routine": "noop"},
        {"team": "bravo", "routine": "noop", "priority": "low"},
    ]
    response = api.post("/api/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 4)
    codes = [r["status_code"] for r in body["results"]]
    assert codes == [202, 422, 422, 422, 422, 202]
    assert "unknown routine 'nope'" in body["results"][1]["error"]["message"]
    assert body["results"][2]["error"]["details"][0]["field"] == "priority"
    assert "zulu" in body["results"][4]["error"]["message"]
    accepted = [r["task"]["task_id"] for r in body["results"] if r["status_code"] == 202]
    assert set(wait_terminal(engine, accepted).values()) == {"SUCCEEDED"}


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "not JSON",
        {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "NaN",
        {
            "content": b'{"team": "alpha", "routine": "noop", "payload": {"x": NaN}}',
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "not valid JSON",
    ),
    (
        "bad UTF-8",
        {
            "content": b'{"team": "alpha", "routine": "\xff"}',
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "not valid JSON",
    ),
    (
        "control character in idempotency key",
        {"json": {"team": "alpha", "routine": "noop", "idempotency_key": "a\u0000b"}},
        422,
        "idempotency_key",
    ),
    ("empty body", {"content": b"", "headers": {"Content-Type": "application/json"}}, 400, "empty"),
    (
        "form body",
        {
            "content": b"team=alpha",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        415,
        "application/json",
    ),
    ("array body", {"json": [1, 2]}, 422, "JSON object"),
    ("missing team", {"json": {"routine": "noop"}}, 422, "team: Field required"),
    ("missing routine", {"json": {"team": "alpha"}}, 422, "routine: Field required"),
    (
        "unknown field",
        {"json": {"team": "alpha", "routine": "noop", "colour": "red"}},
        422,
        "colour: unknown field",
    ),
    (
        "unknown routine",
        {"json": {"team": "alpha", "routine": "teleport"}},
        422,
        "unknown routine 'teleport'",
    ),
    ("unknown team", {"json": {"team": "zulu", "routine": "noop"}}, 422, "unknown team 'zulu'"),
    (
        "bad priority",
        {"json": {"team": "alpha", "routine": "noop", "priority": "urgent"}},
        422,
        "priority",
    ),
    (
        "payload not an object",
        {"json": {"team": "alpha", "routine": "noop", "payload": [1]}},
        422,
        "payload",
    ),
    ("team not a string", {"json": {"team": 7, "routine": "noop"}}, 422, "team"),
    (
        "empty idempotency key",
        {"json": {"team": "alpha", "routine": "noop", "idempotency_key": ""}},
        422,
        "idempotency_key",
    ),
    (
        "payload its routine's schema refuses",
        {"json": {"team": "alpha", "routine": "sleep", "payload": {"ms": -5}}},
        422,
        "payload.ms: -5 is less than the minimum of 0",
    ),
    (
        "payload field its routine does not know",
        {"json": {"team": "alpha", "routine": "cpu", "payload": {"iteration": 5}}},
        422,
        "payload.iteration: unknown field",
    ),
    (
        "body too large",
        {"json": {"team": "alpha", "routine": "echo", "payload": {"x": "a" * 2_000_000}}},
        413,
        "large",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_args", "status", "named"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_a_clear_4xx_and_creates_nothing(
    api: httpx.Client,
    engine: Engine,
    case: str,
    request_args: dict[str, Any],
    status: int,
    named: str,
) -> None:
    before = count_tasks(engine)
    response = api.post("/api/v1/tasks", **request_args)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert named.lower() in (error["message"]).lower(), error
    assert error["code"]
    assert count_tasks(engine) == before


def test_a_refused_payload_names_its_field_and_leaves_no_task_behind(
    api: httpx.Client, engine: Engine
) -> None:
    key = f"payload-{uuid.uuid4()}"
    body = {"team": "alpha", "routine": "sleep", "payload": {"ms": -5}, "idempotency_key": key}
    refused = api.post("/api/v1/tasks", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == [
        {"field": "payload.ms", "message": "-5 is less than the minimum of 0", "value": -5}
    ]
    task_id = str(idempotent_task_id("alpha", key))
    assert statuses(engine, [task_id]) == {}
    # Nothing was produced either: the same key with a good payload is a new task, not a
    # repeat, and it runs once.
    accepted = api.post("/api/v1/tasks", json={**body, "payload": {"ms": 1}})
    assert accepted.status_code == 202, accepted.text
    assert (accepted.json()["task_id"], accepted.json()["idempotent_replay"]) == (task_id, False)
    assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}
    assert [e.status for e in events(engine, [task_id])[task_id]].count("ACCEPTED") == 1


def test_a_batch_with_bad_payloads_refuses_those_items_alone(
    api: httpx.Client, engine: Engine
) -> None:
    tag = uuid.uuid4().hex
    items: list[dict[str, Any]] = [
        {"team": "alpha", "routine": "echo", "payload": {"i": 0}},
        {"team": "alpha", "routine": "sleep", "payload": {"ms": -5}},
        {"team": "bravo", "routine": "sleep", "payload": {"ms": 1}},
        {"team": "bravo", "routine": "fail", "payload": {"times": "twice", "tries": 2}},
        {"team": "alpha", "routine": "cpu"},  # no payload: the defaults
    ]
    for index, item in enumerate(items):
        item["idempotency_key"] = f"{tag}-{index}"
    response = api.post("/api/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status_code"] for r in results] == [202, 422, 202, 422, 202]
    assert [d["field"] for d in results[1]["error"]["details"]] == ["payload.ms"]
    assert {d["field"] for d in results[3]["error"]["details"]} == {
        "payload.times",
        "payload.tries",
    }
    refused = [str(idempotent_task_id(items[i]["team"], f"{tag}-{i}")) for i in (1, 3)]
    assert statuses(engine, refused) == {}
    accepted = [r["task"]["task_id"] for r in results if r["status_code"] == 202]
    assert set(wait_terminal(engine, accepted).values()) == {"SUCCEEDED"}
    assert statuses(engine, refused) == {}


BAD_BATCHES: list[tuple[str, Any, str]] = [
    ("no tasks key", {"items": []}, "tasks"),
    ("empty list", {"tasks": []}, "non-empty"),
    ("too many", {"tasks": [{"team": "alpha", "routine": "noop"}] * 1001}, "at most 1000"),
]


@pytest.mark.parametrize(("case", "body", "named"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_bad_batches_are_422_and_create_nothing(
    api: httpx.Client, engine: Engine, case: str, body: Any, named: str
) -> None:
    before = count_tasks(engine)
    response = api.post("/api/v1/tasks/batch", json=body)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert count_tasks(engine) == before


@pytest.mark.parametrize(
    ("path", "status", "named"),
    [
        ("/api/v1/tasks?colour=red", 400, "colour"),
        ("/api/v1/tasks?limit=0", 400, "limit"),
        ("/api/v1/tasks?limit=ten", 400, "limit"),
        ("/api/v1/tasks?status=DONE", 400, "status"),
        ("/api/v1/tasks?cursor=@@@", 400, "cursor"),
        ("/api/v1/tasks?team=zulu", 400, "zulu"),
        ("/api/v1/tasks/not-a-uuid", 404, "UUID"),
        # A fixed id no task has: xdist needs the same parameters in each worker.
        (f"/api/v1/tasks/{uuid.UUID(int=404)}", 404, "no task"),
        ("/api/v1/nothing-here", 404, "not"),
    ],
)
def test_bad_reads_are_4xx_naming_the_problem(
    api: httpx.Client, path: str, status: int, named: str
) -> None:
    response = api.get(path)
    assert response.status_code == status
    assert named.lower() in response.json()["error"]["message"].lower()


def test_any_json_payload_round_trips_even_nul_characters(
    api: httpx.Client, engine: Engine
) -> None:
    payload = {"nul": "a\u0000b", "nested": [1, 2.5, None, {"ü": "✓"}], "big": 10**18}
    response = api.post(
        "/api/v1/tasks", json={"team": "alpha", "routine": "echo", "payload": payload}
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}
    task = api.get(f"/api/v1/tasks/{task_id}").json()
    assert task["payload"] == payload
    assert task["result"] == payload


def test_wrong_method_is_405_json(api: httpx.Client) -> None:
    response = api.delete("/api/v1/tasks")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_listing_pages_with_a_cursor(api: httpx.Client, engine: Engine) -> None:
    marker = f"page-{uuid.uuid4().hex[:6]}"
    ids = [
        api.post(
            "/api/v1/tasks", json={"team": "charlie", "routine": "echo", "payload": {"m": marker}}
        ).json()["task_id"]
        for _ in range(7)
    ]
    wait_terminal(engine, ids)
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"team": "charlie", "routine": "echo", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/tasks", params=params).json()
        seen.extend(t["task_id"] for t in page["tasks"])
        cursor = page["next_cursor"]
        if not cursor or set(ids) <= set(seen):
            break
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen))
    newest_first = [t for t in seen if t in ids]
    assert newest_first == list(reversed(ids))


def test_health_readiness_openapi_and_metrics(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"kafka": "ok", "postgres": "ok"}
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/tasks", "/api/v1/tasks/batch", "/api/v1/tasks/{task_id}"} <= set(spec["paths"])
    assert "text/html" in api.get("/docs").headers["content-type"]
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert "api_requests_total" in metrics.text


def test_a_routine_filter_holding_a_nul_matches_nothing(api: httpx.Client) -> None:
    # Valid by the schema (any text); no routine is named so. It was a 500 (Postgres text).
    response = api.get("/api/v1/tasks", params={"routine": "a\x00b", "status": "QUEUED"})
    assert response.status_code == 200
    assert response.json() == {"tasks": [], "next_cursor": None}
