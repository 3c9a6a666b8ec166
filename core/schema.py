"""The database schema as SQLAlchemy tables. Alembic migrations create it; nothing else does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

from core.messages import TaskRequest
from core.priority import Priority
from core.status import OUTCOMES, Status

metadata = MetaData()


def sql_values(statuses: Iterable[Status]) -> str:
    """`'A', 'B'`: the statuses as SQL string literals for an IN list, in the order given.
    Status names are upper-case letters and underscores: nothing to quote."""
    return ", ".join(f"'{status.value}'" for status in statuses)


# What the SQL of every stage says for "the task has ended" (the terminal set of core.status).
TERMINAL_VALUES = sql_values(OUTCOMES)
TERMINAL_SQL = f"status IN ({TERMINAL_VALUES})"
# A scheduled task parked in Postgres that the releaser has not sent on yet.
PARKED_SQL = f"status = '{Status.SCHEDULED.value}' AND released_at IS NULL"
# Migration 0001 wrote the partial indexes below with this text as a literal (migrations
# are history): a change to the terminal set needs a migration that rebuilds them, and
# tests/core/test_status.py fails until there is one.

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", UUID(as_uuid=True), primary_key=True),
    Column("team", Text, nullable=False),
    Column("routine", Text, nullable=False),
    Column("priority", Text, nullable=False, comment="the priority the client asked for"),
    Column("queue", Text, comment="the Celery queue it was dispatched to"),
    Column("status", Text, nullable=False),
    Column("progress", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("payload", JSON),
    Column("result", JSON),
    Column("error", Text),
    Column("idempotency_key", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("run_at", DateTime(timezone=True), comment="a scheduled run: not before"),
    Column("expires_at", DateTime(timezone=True), comment="not started by then: EXPIRED"),
    Column("released_at", DateTime(timezone=True), comment="a parked scheduled task sent on"),
    Index("tasks_team_created", "team", text("created_at DESC"), text("task_id DESC")),
    Index("tasks_created", text("created_at DESC"), text("task_id DESC")),
    Index(
        "tasks_unfinished",
        "updated_at",
        postgresql_where=text(f"NOT ({TERMINAL_SQL})"),
    ),
    # What the releaser looks for: parked scheduled tasks, soonest first.
    Index(
        "tasks_parked",
        "run_at",
        postgresql_where=text(f"{PARKED_SQL}"),
    ),
)

task_events = Table(
    "task_events",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    # No foreign key: the recorder writes a task's row in the same transaction as its events.
    Column("task_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("queue", Text),
    Column("detail", JSONB),
    Index("task_events_task_at", "task_id", "at"),
    # The database itself refuses a second terminal event for a task.
    Index(
        "task_events_one_terminal",
        "task_id",
        unique=True,
        postgresql_where=text(TERMINAL_SQL),
    ),
)

# Payloads too large to travel inside a status event (core.limits), stored by the API.
task_payloads = Table(
    "task_payloads",
    metadata,
    Column("task_id", UUID(as_uuid=True), primary_key=True),
    Column("payload", JSON, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True, comment="public part of the key, safe to show"),
    Column("key_hash", Text, nullable=False, unique=True, comment="sha256 of the whole key"),
    Column("team", Text, comment="NULL for an admin key"),
    Column("is_admin", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True), comment="stamped at most every few seconds"),
    CheckConstraint("is_admin OR team IS NOT NULL", name="api_keys_team_or_admin"),
)


# What a task's row holds of its request (the payload aside: it may be stored apart).
REQUEST_COLUMNS = (
    tasks.c.task_id,
    tasks.c.team,
    tasks.c.routine,
    tasks.c.priority,
    tasks.c.created_at,
    tasks.c.idempotency_key,
    tasks.c.run_at,
    tasks.c.expires_at,
)


def request_of(
    row: Any, *, priority: Priority | None = Priority.MEDIUM, **fields: Any
) -> TaskRequest:
    """The task's request as its row (REQUEST_COLUMNS) has it, with `fields` added. A
    priority this platform no longer knows reads as `priority`, or raises ValueError if
    that is None."""
    try:
        asked = Priority(row.priority)
    except ValueError:
        if priority is None:
            raise
        asked = priority
    return TaskRequest(
        task_id=str(row.task_id),
        team=row.team,
        routine=row.routine,
        priority=asked,
        accepted_at=row.created_at,
        idempotency_key=row.idempotency_key,
        run_at=row.run_at,
        expires_at=row.expires_at,
        **fields,
    )
