"""Schedule accuracy: how late scheduled tasks start after their run_at when thousands
are due in the same second, for tasks the bridge holds (due within SCHEDULE_HOLD_SECONDS)
and tasks parked in Postgres and released by the recorder's releaser."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.measure import percentiles
from bench.waits import _wait_done
from core.status import Status
from testing.instance import Instance

BATCH = 1_000


def _submit_due_in_one_second(instance: Instance, count: int, due: datetime) -> list[str]:
    """`count` no-op tasks whose run_at spread evenly over the second from `due`."""
    ids: list[str] = []
    with instance.client() as client:
        for start in range(0, count, BATCH):
            tasks = [
                {
                    "team": "alpha",
                    "routine": "noop",
                    "run_at": (due + timedelta(seconds=i / count)).isoformat(),
                }
                for i in range(start, min(count, start + BATCH))
            ]
            response = client.post("/api/v1/tasks/batch", json={"tasks": tasks}, timeout=60)
            response.raise_for_status()
            ids.extend(r["task"]["task_id"] for r in response.json()["results"])
    return ids


def _lateness_ms(instance: Instance, ids: list[str], timeout: float = 60) -> list[float]:
    """STARTED minus run_at of each task, in ms (negative: started early), once every
    task's STARTED is recorded (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        late = _read_lateness_ms(instance, ids)
        if len(late) >= len(ids) or time.monotonic() > deadline:
            return late
        time.sleep(0.2)


def _read_lateness_ms(instance: Instance, ids: list[str]) -> list[float]:
    with instance.engine.connect() as conn:
        rows = conn.execute(
            text(
                f"""
                SELECT extract(epoch FROM min(e.at) - t.run_at) * 1000
                  FROM tasks t JOIN task_events e ON e.task_id = t.task_id
                 WHERE t.task_id = ANY(CAST(:ids AS uuid[]))
                   AND e.status = '{Status.STARTED.value}'
                 GROUP BY t.task_id, t.run_at
                """
            ),
            {"ids": ids},
        ).all()
    return [float(r[0]) for r in rows]


def accuracy(instance: Instance, count: int, lead_seconds: float) -> dict[str, Any]:
    due = datetime.now(UTC) + timedelta(seconds=lead_seconds)
    ids = _submit_due_in_one_second(instance, count, due)
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
    _wait_done(instance, ids)
    late = _lateness_ms(instance, ids)
    return {
        "tasks": count,
        "lead_seconds": lead_seconds,
        "started": len(late),
        "early": sum(1 for ms in late if ms < 0),
        "within_1s_pct": round(100 * sum(1 for ms in late if ms <= 1000) / max(1, len(late)), 2),
        "late_ms": percentiles(late),
    }


def schedule_accuracy(instance: Instance, hold_seconds: float) -> dict[str, Any]:
    """1,000 and 3,000 tasks due in one second, held by the bridge; 3,000 parked."""
    return {
        "held_1000": accuracy(instance, 1_000, hold_seconds / 2),
        "held_3000": accuracy(instance, 3_000, hold_seconds / 2),
        "parked_3000": accuracy(instance, 3_000, hold_seconds * 2 + 2),
    }
