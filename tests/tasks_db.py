"""Reading tasks straight from Postgres in tests (the source of truth), with waits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from core.schema import task_events, tasks
from core.status import TERMINAL
from tests.helpers import wait_for

TERMINAL_VALUES = [s.value for s in TERMINAL]
# The timeline of a task that succeeds at once, and of one that fails once and is retried.
SUCCESS_PATH = ["ACCEPTED", "QUEUED", "STARTED", "SUCCEEDED"]
RETRIED_ONCE_PATH = ["ACCEPTED", "QUEUED", "STARTED", "RETRYING", "QUEUED", "STARTED", "SUCCEEDED"]


def statuses(engine: Engine, task_ids: Iterable[str]) -> dict[str, str]:
    ids = [uuid.UUID(t) for t in task_ids]
    with engine.connect() as conn:
        rows = conn.execute(select(tasks.c.task_id, tasks.c.status).where(tasks.c.task_id.in_(ids)))
        return {str(r.task_id): r.status for r in rows}


def wait_terminal(engine: Engine, task_ids: list[str], timeout: float = 120) -> dict[str, str]:
    """Wait until every task has a terminal status; returns task id -> status."""

    def done() -> dict[str, str] | None:
        found = statuses(engine, task_ids)
        finished = {t: s for t, s in found.items() if s in TERMINAL_VALUES}
        return finished if len(finished) == len(task_ids) else None

    return wait_for(done, timeout=timeout, interval=0.2, what=f"{len(task_ids)} tasks to end")


def events(engine: Engine, task_ids: Iterable[str]) -> dict[str, list[Any]]:
    ids = [uuid.UUID(t) for t in task_ids]
    with engine.connect() as conn:
        rows = conn.execute(
            select(task_events).where(task_events.c.task_id.in_(ids)).order_by(task_events.c.at)
        ).all()
    result: dict[str, list[Any]] = {str(i): [] for i in ids}
    for row in rows:
        result[str(row.task_id)].append(row)
    return result


def count_tasks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())


def submit_batch(api: httpx.Client, items: list[dict[str, Any]]) -> list[str]:
    """Submit in batches of up to 1,000; every item must be accepted. Returns the ids."""
    ids: list[str] = []
    for start in range(0, len(items), 1000):
        response = api.post("/api/v1/tasks/batch", json={"tasks": items[start : start + 1000]})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["rejected"] == 0, body
        ids.extend(r["task"]["task_id"] for r in body["results"])
    return ids
