"""Baseline: tasks, task_events, api_keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from alembic import op

revision: str = "0001"
down_revision: str | None = None

TERMINAL = "status IN ('SUCCEEDED', 'FAILED', 'DEAD_LETTERED')"


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("task_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("team", sa.Text, nullable=False),
        sa.Column("routine", sa.Text, nullable=False),
        sa.Column("priority", sa.Text, nullable=False, comment="the priority the client asked for"),
        sa.Column("queue", sa.Text, comment="the Celery queue it was dispatched to"),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("progress", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("payload", JSONB),
        sa.Column("result", JSONB),
        sa.Column("error", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "tasks_team_created", "tasks", ["team", sa.text("created_at DESC"), sa.text("task_id DESC")]
    )
    op.create_index("tasks_created", "tasks", [sa.text("created_at DESC"), sa.text("task_id DESC")])
    op.create_index(
        "tasks_unfinished",
        "tasks",
        ["updated_at"],
        postgresql_where=sa.text(f"NOT ({TERMINAL})"),
    )
    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column(
            "task_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tasks.task_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.Text),
        sa.Column("detail", JSONB),
    )
    op.create_index("task_events_task_at", "task_events", ["task_id", "at"])
    op.create_index(
        "task_events_one_terminal",
        "task_events",
        ["task_id"],
        unique=True,
        postgresql_where=sa.text(TERMINAL),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True, comment="public part of the key"),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True, comment="sha256 of the key"),
        sa.Column("team", sa.Text, comment="NULL for an admin key"),
        sa.Column("is_admin", sa.Boolean, nullable=False, server_default="false"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("task_events")
    op.drop_table("tasks")
