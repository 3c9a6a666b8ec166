"""The API's pooled Postgres connections: a connection in steady use is not pinged before
each request (core.db), so reads must survive finding theirs dead."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine, text

from app.auth import create_key

pytestmark = pytest.mark.stack

READERS = 16  # as many as an API process has request threads: most of its pool in use


def _end_api_connections(engine: Engine) -> int:
    """End every Postgres connection the API processes hold (as Postgres does when it
    restarts); the platform's role may end its own role's backends."""
    with engine.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'api'"
            )
        ).scalar_one()
    return int(ended)


def test_reads_and_new_keys_work_right_after_postgres_ended_the_apis_connections(
    api_url: str, admin_key: str, engine: Engine
) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as api:
        created = api.post("/api/v1/tasks?wait=30", json={"team": "alpha", "routine": "noop"})
        assert created.status_code == 200, created.text
        task_id = created.json()["task_id"]
        paths = [
            f"/api/v1/tasks/{task_id}",
            "/api/v1/tasks?limit=5",
            f"/api/v1/tasks/{task_id}/events",
        ]

        def read_all(_: int) -> list[int]:
            return [api.get(path).status_code for path in paths]

        with ThreadPoolExecutor(READERS) as pool:
            # Warm: each process's pool holds connections its threads used a moment ago.
            assert {code for codes in pool.map(read_all, range(READERS * 2)) for code in codes} == {
                200
            }
            assert _end_api_connections(engine) > 0
            after = [code for codes in pool.map(read_all, range(READERS * 2)) for code in codes]
        assert after == [200] * len(after)

    # A key this API has never seen is looked up in Postgres, on a connection just ended.
    _, key = create_key(engine, team="bravo", admin=False)
    assert _end_api_connections(engine) > 0
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as bravo:
        assert bravo.get("/api/v1/tasks?limit=1").status_code == 200
