"""Reading tasks back: one task with its timeline, and pages of tasks."""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Dialect,
    Engine,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    true,
    tuple_,
)

from app.models import RecordedEvent, Task, TaskPage, TaskSummary, task_links
from core.db import fetch_one, once_more_if_disconnected
from core.schema import task_events, task_payloads, tasks
from core.status import Status, progress

# How many bytes of results and errors one page of a task list may carry.
PAGE_MAX_BYTES = 4 * 1024 * 1024


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _task_body(row: Any) -> TaskSummary:
    return {
        "task_id": str(row.task_id),
        "team": row.team,
        "routine": row.routine,
        "priority": row.priority,
        "queue": row.queue,
        "status": row.status,
        "attempts": row.attempts,
        "result": row.result,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "run_at": _iso(row.run_at),
        "expires_at": _iso(row.expires_at),
        "links": task_links(str(row.task_id)),
    }


def _event_body(event_id: Any, status: str, at: datetime, attempt: int, queue: str | None,
                detail: Any) -> RecordedEvent:  # fmt: skip
    return {
        "event_id": str(event_id),
        "status": status,
        "at": at.isoformat(),
        "attempt": attempt,
        "queue": queue,
        "detail": detail,
    }


def _in_order(events: list[RecordedEvent]) -> list[RecordedEvent]:
    """The order they happened in: by time, then by how far each status is along."""
    return sorted(
        events,
        key=lambda e: (
            datetime.fromisoformat(e["at"]),
            progress(Status(e["status"]), e["attempt"]),
        ),
    )


def load_events(engine: Engine, task_id: uuid.UUID) -> list[RecordedEvent]:
    """The task's recorded events in the order they happened (by time, then progress)."""
    query = select(
        task_events.c.event_id,
        task_events.c.status,
        task_events.c.at,
        task_events.c.attempt,
        task_events.c.queue,
        task_events.c.detail,
    ).where(task_events.c.task_id == task_id)

    def read() -> Sequence[Any]:
        with engine.connect() as conn:
            return conn.execute(query).all()

    found = once_more_if_disconnected(read)
    return _in_order([_event_body(*row) for row in found])


# A task's events as one JSON array, built by Postgres in the task's own query.
_TIMELINE = (
    select(
        func.coalesce(
            func.json_agg(
                func.json_build_object(
                    "event_id", task_events.c.event_id,
                    "status", task_events.c.status,
                    "at", task_events.c.at,
                    "attempt", task_events.c.attempt,
                    "queue", task_events.c.queue,
                    "detail", task_events.c.detail,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(task_events.c.task_id == tasks.c.task_id)
    .scalar_subquery()
)  # fmt: skip


@functools.cache
def _task_query(dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The SQL of a task with its timeline, compiled once per process: the read runs it
    as it is, without building, caching and compiling the statement again each time."""
    # A large payload is stored apart (core.limits).
    query = (
        select(tasks, task_payloads.c.payload.label("stored_payload"), _TIMELINE.label("timeline"))
        .outerjoin(task_payloads, task_payloads.c.task_id == tasks.c.task_id)
        .where(tasks.c.task_id == bindparam("task_id", type_=tasks.c.task_id.type))
    )
    compiled = query.compile(dialect=dialect)
    return str(compiled), dict(compiled.params)  # the timeline's key names among them


def task_query(dialect: Dialect, task_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The SQL of one task with its timeline (psycopg's pyformat) and its parameters; its
    row, as a named tuple, is what `task_from_row` reads."""
    sql, params = _task_query(dialect)
    return sql, {**params, "task_id": task_id}


def get_task(engine: Engine, task_id: uuid.UUID) -> Task | None:
    """The task with its full timeline, or None if Postgres does not have it (yet): one
    query, on a connection in autocommit (no BEGIN, no ROLLBACK): a read that answers
    after one round trip to Postgres instead of five."""
    row = fetch_one(engine, *task_query(engine.dialect, task_id))
    return None if row is None else task_from_row(row)


def task_from_row(row: Any) -> Task:
    """The API's body of a task from its row (`task_query`)."""
    timeline = [
        _event_body(e["event_id"], e["status"], datetime.fromisoformat(e["at"]), e["attempt"],
                    e["queue"], e["detail"])
        for e in row.timeline
    ]  # fmt: skip
    return {
        **_task_body(row),
        "payload": row.payload if row.payload is not None else row.stored_payload,
        "timeline": _in_order(timeline),
    }


class BadCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, task_id = raw.partition("|")
        return datetime.fromisoformat(created), uuid.UUID(task_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("cursor is not one this API returned") from None


def list_tasks(
    engine: Engine,
    *,
    team: str | None,
    status: str | None,
    routine: str | None,
    priority: str | None = None,
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None,
) -> TaskPage:
    query = select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc())
    conditions = []
    if team is not None:
        conditions.append(tasks.c.team == team)
    if status is not None:
        conditions.append(tasks.c.status == status)
    if routine is not None:
        if "\x00" in routine:  # no routine is named so, and Postgres text cannot hold NUL
            return {"tasks": [], "next_cursor": None}
        conditions.append(tasks.c.routine == routine)
    if priority is not None:
        conditions.append(tasks.c.priority == priority)
    if cursor is not None:
        created, task_id = cursor
        conditions.append(tuple_(tasks.c.created_at, tasks.c.task_id) < tuple_(created, task_id))
    where = and_(*conditions) if conditions else true()
    order = (tasks.c.created_at.desc(), tasks.c.task_id.desc())
    size = func.coalesce(func.octet_length(cast(tasks.c.result, Text)), 0) + func.coalesce(
        func.octet_length(tasks.c.error), 0
    )

    def read() -> tuple[Sequence[Any], list[Any], Sequence[Any]]:
        with engine.connect() as conn:
            # First what the page may hold: `limit` tasks, and results of PAGE_MAX_BYTES
            # at most (at least one task), so a page of large results cannot take the
            # process's memory; then those tasks whole.
            sizes = conn.execute(
                select(tasks.c.task_id, tasks.c.created_at, size.label("size"))
                .where(where)
                .order_by(*order)
                .limit(limit + 1)
            ).all()
            kept = _within(sizes, limit)
            ids = [row.task_id for row in kept]
            rows = conn.execute(query.where(tasks.c.task_id.in_(ids))).all() if ids else []
        return sizes, kept, rows

    sizes, kept, rows = once_more_if_disconnected(read)
    next_cursor = None
    if len(kept) < len(sizes):
        last = kept[-1]
        next_cursor = encode_cursor(last.created_at, last.task_id)
    return {"tasks": [_task_body(r) for r in rows], "next_cursor": next_cursor}


def _within(sizes: Sequence[Any], limit: int) -> list[Any]:
    """The first rows (task id, created at, size) that fit `limit` and PAGE_MAX_BYTES."""
    kept: list[Any] = []
    total = 0
    for row in sizes[:limit]:
        total += row.size
        if kept and total > PAGE_MAX_BYTES:
            break
        kept.append(row)
    return kept
