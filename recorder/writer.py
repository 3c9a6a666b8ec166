"""Writes a batch of status events to Postgres in one transaction.

Events come from several processes (API, bridge, workers) and may arrive late, twice,
or out of order. The rules, applied in memory over the batch and enforced again in SQL:
- an event id is recorded once (a repeat is dropped);
- a task moves only forward (core.status.progress), so a late QUEUED never hides a
  STARTED, and nothing moves a task out of a terminal status;
- once a task is terminal, only an event that happened before its end (one that merely
  arrived late, from another process) joins its timeline; a second terminal event, or
  anything after the end, is dropped, and the database's own unique index (one terminal
  event per task) backs this up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select
from sqlalchemy.dialects.postgresql import insert

from core.messages import StatusEvent
from core.schema import task_events, tasks
from core.status import TERMINAL, Status, progress


@dataclass
class _Known:
    progress: int
    finished_at: datetime | None  # set once the task is terminal

    def refuses(self, event: StatusEvent) -> bool:
        """True for an event that must not be recorded for this task."""
        if self.finished_at is None:
            return False
        return event.status in TERMINAL or event.at > self.finished_at


@dataclass
class BatchResult:
    events_written: int
    events_dropped: int
    tasks_touched: int


def _new_row(event: StatusEvent) -> dict[str, Any]:
    return {
        "task_id": uuid.UUID(event.task_id),
        "team": event.team,
        "routine": event.routine,
        "priority": event.priority,
        "queue": None,
        "status": Status.ACCEPTED.value,
        "progress": -1,
        "attempts": 0,
        "payload": None,
        "result": None,
        "error": None,
        "idempotency_key": None,
        "created_at": event.accepted_at or event.at,
        "updated_at": event.at,
        "started_at": None,
        "finished_at": None,
    }


def plan(
    events: list[StatusEvent], known: dict[str, _Known]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Decide what the batch records: (event rows, task rows, events dropped).

    Pure: `known` is the progress of tasks already in the database."""
    event_rows: list[dict[str, Any]] = []
    rows: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    dropped = 0
    for event in events:
        state = known.get(event.task_id)
        if event.event_id in seen or (state is not None and state.refuses(event)):
            dropped += 1
            continue
        seen.add(event.event_id)
        row = rows.get(event.task_id)
        if row is None:
            row = rows[event.task_id] = _new_row(event)
        event_rows.append(
            {
                "event_id": uuid.UUID(event.event_id),
                "task_id": row["task_id"],
                "status": event.status.value,
                "attempt": event.attempt,
                "at": event.at,
                "queue": event.queue,
                "detail": _detail(event),
            }
        )
        if event.payload is not None:
            row["payload"] = event.payload
        if event.idempotency_key is not None:
            row["idempotency_key"] = event.idempotency_key
        if event.accepted_at is not None:
            row["created_at"] = event.accepted_at
        row["attempts"] = max(row["attempts"], event.attempt)
        row["updated_at"] = max(row["updated_at"], event.at)
        if event.status is Status.STARTED:
            started = row["started_at"]
            row["started_at"] = event.at if started is None else min(started, event.at)
        step = progress(event.status, event.attempt)
        current = max(row["progress"], state.progress if state else -1)
        if step > current:
            row["progress"] = step
            row["status"] = event.status.value
            if event.queue is not None:
                row["queue"] = event.queue
            row["error"] = _text(event.error)
            if event.status in TERMINAL:
                row["result"] = event.result
                row["finished_at"] = event.at
                known[event.task_id] = _Known(step, finished_at=event.at)
            else:
                known[event.task_id] = _Known(step, finished_at=None)
    for row in rows.values():
        row["progress"] = max(row["progress"], 0)
    return event_rows, rows, dropped


def _detail(event: StatusEvent) -> dict[str, Any] | None:
    detail = dict(event.detail or {})
    if event.error is not None:
        detail["error"] = _text(event.error)
    return detail or None


def _text(value: str | None) -> str | None:
    """Postgres text cannot hold U+0000; an error message quoting a payload might."""
    return value.replace("\x00", "\ufffd") if value is not None else None


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    stmt = insert(tasks).values(rows)
    new = stmt.excluded
    ahead = new.progress > tasks.c.progress
    stmt = stmt.on_conflict_do_update(
        index_elements=[tasks.c.task_id],
        set_={
            "status": case((ahead, new.status), else_=tasks.c.status),
            "queue": case((ahead, func.coalesce(new.queue, tasks.c.queue)), else_=tasks.c.queue),
            "result": case((ahead, new.result), else_=tasks.c.result),
            "error": case((ahead, new.error), else_=tasks.c.error),
            "finished_at": case((ahead, new.finished_at), else_=tasks.c.finished_at),
            "progress": func.greatest(tasks.c.progress, new.progress),
            "attempts": func.greatest(tasks.c.attempts, new.attempts),
            "payload": func.coalesce(tasks.c.payload, new.payload),
            "idempotency_key": func.coalesce(tasks.c.idempotency_key, new.idempotency_key),
            "updated_at": func.greatest(tasks.c.updated_at, new.updated_at),
            "started_at": func.least(tasks.c.started_at, new.started_at),
        },
        where=tasks.c.status.not_in([s.value for s in TERMINAL]),
    )
    conn.execute(stmt)


def write_batch(engine: Engine, events: list[StatusEvent]) -> BatchResult:
    """Record a batch in one transaction; raises SQLAlchemy errors (the caller retries)."""
    if not events:
        return BatchResult(0, 0, 0)
    ids = sorted({uuid.UUID(e.task_id) for e in events})
    with engine.begin() as conn:
        found = conn.execute(
            select(tasks.c.task_id, tasks.c.progress, tasks.c.finished_at, tasks.c.status)
            .where(tasks.c.task_id.in_(ids))
            .order_by(tasks.c.task_id)
            .with_for_update()
        )
        terminal = {s.value for s in TERMINAL}
        known = {
            str(task_id): _Known(prog, finished if status in terminal else None)
            for task_id, prog, finished, status in found
        }
        event_rows, rows, dropped = plan(events, known)
        if rows:
            ordered = [rows[key] for key in sorted(rows)]
            for start in range(0, len(ordered), 1000):
                _upsert(conn, ordered[start : start + 1000])
        if event_rows:
            conn.execute(insert(task_events).on_conflict_do_nothing(), event_rows)
    return BatchResult(len(event_rows), dropped, len(rows))
