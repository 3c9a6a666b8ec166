"""Priority figures: how long a high task waits (ACCEPTED→STARTED) when the platform is
idle and under a flood of low tasks, and how completions are shared while every queue
has a backlog."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sqlalchemy import text

from bench.measure import percentiles
from core.priority import Priority
from core.priority import names as priority_names
from core.schema import TERMINAL_SQL, sql_values
from core.status import Status
from testing.instance import Instance

LOW_TASK_MS = 20


def _waits_ms(instance: Instance, ids: list[str]) -> list[float]:
    with instance.engine.connect() as conn:
        rows = conn.execute(
            text(
                f"""
                SELECT extract(epoch FROM min(s.at) - min(a.at)) * 1000
                  FROM task_events a JOIN task_events s ON s.task_id = a.task_id
                 WHERE a.task_id = ANY(CAST(:ids AS uuid[]))
                   AND a.status = {sql_values([Status.ACCEPTED])}
                   AND s.status = {sql_values([Status.STARTED])}
                 GROUP BY a.task_id
                """
            ),
            {"ids": ids},
        ).all()
    return [float(r[0]) for r in rows]


def _wait_done(instance: Instance, ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with instance.engine.connect() as conn:
            done = conn.execute(
                text(
                    "SELECT count(*) FROM tasks WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                    f"AND {TERMINAL_SQL}"
                ),
                {"ids": ids},
            ).scalar_one()
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - done} of {len(ids)} tasks did not end in time")
        time.sleep(0.2)


def _high_probes(instance: Instance, count: int, spacing: float) -> list[str]:
    """`count` no-op tasks of the highest priority, `spacing` seconds apart; their ids."""
    ids = []
    probe = {"team": "alpha", "routine": "noop", "priority": Priority.highest().value}
    with instance.client() as client:
        for _ in range(count):
            response = client.post("/api/v1/tasks", json=probe)
            response.raise_for_status()
            ids.append(response.json()["task_id"])
            time.sleep(spacing)
    return ids


def high_wait(instance: Instance, probes: int = 150) -> dict[str, Any]:
    """High-priority wait idle, then under a flood of low `sleep` tasks (the highest and
    the lowest priority)."""
    idle_ids = _high_probes(instance, probes, 0.02)
    _wait_done(instance, idle_ids)
    idle = percentiles(_waits_ms(instance, idle_ids))

    with instance.client() as client:
        flood: list[str] = []
        for _ in range(4):
            response = client.post(
                "/api/v1/tasks/batch",
                json={
                    "tasks": [
                        {"team": "bravo", "routine": "sleep",
                         "priority": Priority.lowest().value, "payload": {"ms": LOW_TASK_MS}}
                    ] * 500
                },
            )  # fmt: skip
            response.raise_for_status()
            flood.extend(r["task"]["task_id"] for r in response.json()["results"])
    time.sleep(1.0)  # the workers are busy with the flood and a backlog waits
    flood_ids = _high_probes(instance, probes // 2, 0.05)
    _wait_done(instance, flood + flood_ids, timeout=600)
    under_flood = percentiles(_waits_ms(instance, flood_ids))
    goal = idle["p90"] + LOW_TASK_MS + 10
    return {
        "idle_ms": idle,
        "under_low_flood_ms": under_flood,
        "low_task_ms": LOW_TASK_MS,
        "goal_under_flood_p90_ms": round(goal, 2),
        "met": under_flood["p90"] <= goal,
    }


def shares(instance: Instance, weights: dict[str, int], per_priority: int = 400) -> dict[str, Any]:
    """Completion shares while every priority's queue has a backlog."""
    priorities = priority_names()
    items = [
        {"team": "charlie", "routine": "sleep", "priority": p, "payload": {"ms": 5}}
        for p in priorities
        for _ in range(per_priority)
    ]
    ids: list[str] = []
    with instance.client() as client:
        for start in range(0, len(items), 1000):
            response = client.post(
                "/api/v1/tasks/batch", json={"tasks": items[start : start + 1000]}
            )
            response.raise_for_status()
            ids.extend(r["task"]["task_id"] for r in response.json()["results"])
    _wait_done(instance, ids, timeout=600)
    with instance.engine.connect() as conn:
        order = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT priority FROM tasks WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                    "ORDER BY finished_at"
                ),
                {"ids": ids},
            )
        ]
    # Only while every priority still had work waiting: up to the first one running out.
    seen: Counter[str] = Counter()
    window = 0
    for priority in order:
        seen[priority] += 1
        window += 1
        if seen[priority] == per_priority:
            break
    total = sum(weights.values())
    result = {p: round(100 * seen[p] / window, 1) for p in priorities}
    target = {p: round(100 * weights[p] / total, 1) for p in priorities}
    met = all(abs(result[p] - target[p]) <= 10 for p in result) and seen[priorities[-1]] > 0
    return {"completions": window, "share_pct": result, "weights_pct": target, "met": met}
