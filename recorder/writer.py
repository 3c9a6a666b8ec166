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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine

from core.messages import StatusEvent
from core.schema import TERMINAL_VALUES
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
        "task_id": event.task_id,
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
        "run_at": None,
        "expires_at": None,
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
                "event_id": event.event_id,
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
        if event.run_at is not None:
            row["run_at"] = event.run_at
        if event.expires_at is not None:
            row["expires_at"] = event.expires_at
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


_FIND = """
SELECT task_id::text, progress, finished_at, status FROM tasks
 WHERE task_id = ANY(%(ids)s::uuid[]) ORDER BY task_id FOR UPDATE
"""

# The batch is copied (COPY, the fastest way in) into session-local staging tables, then
# merged with one statement each. A task only moves forward, and a terminal task is not
# touched; an event id already recorded is skipped.
_TASK_COLUMNS = (
    "task_id", "team", "routine", "priority", "queue", "status", "progress", "attempts",
    "payload", "result", "error", "idempotency_key", "created_at", "updated_at",
    "started_at", "finished_at", "run_at", "expires_at",
)  # fmt: skip
_EVENT_COLUMNS = ("event_id", "task_id", "status", "attempt", "at", "queue", "detail")

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS tasks_in (
  task_id uuid, team text, routine text, priority text, queue text, status text,
  progress bigint, attempts int, payload json, result json, error text,
  idempotency_key text, created_at timestamptz, updated_at timestamptz,
  started_at timestamptz, finished_at timestamptz, run_at timestamptz, expires_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS events_in (
  event_id uuid, task_id uuid, status text, attempt int, at timestamptz, queue text,
  detail jsonb
) ON COMMIT DELETE ROWS
"""

_UPSERT = f"""
INSERT INTO tasks AS t ({", ".join(_TASK_COLUMNS)})
SELECT {", ".join(_TASK_COLUMNS)} FROM tasks_in
ON CONFLICT (task_id) DO UPDATE SET
  status = CASE WHEN EXCLUDED.progress > t.progress THEN EXCLUDED.status ELSE t.status END,
  queue = CASE WHEN EXCLUDED.progress > t.progress THEN coalesce(EXCLUDED.queue, t.queue)
               ELSE t.queue END,
  result = CASE WHEN EXCLUDED.progress > t.progress THEN EXCLUDED.result ELSE t.result END,
  error = CASE WHEN EXCLUDED.progress > t.progress THEN EXCLUDED.error ELSE t.error END,
  finished_at = CASE WHEN EXCLUDED.progress > t.progress THEN EXCLUDED.finished_at
                     ELSE t.finished_at END,
  progress = greatest(t.progress, EXCLUDED.progress),
  attempts = greatest(t.attempts, EXCLUDED.attempts),
  payload = coalesce(t.payload, EXCLUDED.payload),
  idempotency_key = coalesce(t.idempotency_key, EXCLUDED.idempotency_key),
  updated_at = greatest(t.updated_at, EXCLUDED.updated_at),
  started_at = least(t.started_at, EXCLUDED.started_at),
  run_at = coalesce(t.run_at, EXCLUDED.run_at),
  expires_at = coalesce(t.expires_at, EXCLUDED.expires_at)
WHERE t.status NOT IN ({TERMINAL_VALUES})
"""

_INSERT_EVENTS = f"""
INSERT INTO task_events ({", ".join(_EVENT_COLUMNS)})
SELECT {", ".join(_EVENT_COLUMNS)} FROM events_in
ON CONFLICT DO NOTHING
"""

_JSON_COLUMNS = frozenset(("payload", "result", "detail"))


def _copy(cursor: Any, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """COPY rows (dicts) into a staging table; JSON values as JSON text, NULL stays NULL."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    orjson.dumps(row[name]).decode()
                    if name in _JSON_COLUMNS and row[name] is not None
                    else row[name]
                    for name in columns
                ]
            )


def write_batch(engine: Engine, events: list[StatusEvent]) -> BatchResult:
    """Record a batch in one transaction; raises SQLAlchemy errors (the caller retries)."""
    if not events:
        return BatchResult(0, 0, 0)
    ids = sorted({e.task_id for e in events})
    with engine.begin() as conn:
        found = conn.exec_driver_sql(_FIND, {"ids": ids}).all()
        terminal = {s.value for s in TERMINAL}
        known = {
            task_id: _Known(prog, finished if status in terminal else None)
            for task_id, prog, finished, status in found
        }
        event_rows, rows, dropped = plan(events, known)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_STAGING)
            if rows:
                _copy(cursor, "tasks_in", _TASK_COLUMNS, [rows[key] for key in sorted(rows)])
                cursor.execute(_UPSERT)
            if event_rows:
                _copy(cursor, "events_in", _EVENT_COLUMNS, event_rows)
                cursor.execute(_INSERT_EVENTS)
        finally:
            cursor.close()
    return BatchResult(len(event_rows), dropped, len(rows))
