"""Task lifecycle: scheduled runs, expiry, and two new terminal statuses.

- tasks.run_at and tasks.expires_at: when a scheduled task may run, and the time by
  which a task must have started (after it, EXPIRED).
- tasks.released_at: set by the recorder's releaser when it sends a scheduled task
  parked here back to the bridge; tasks_parked indexes those it has yet to send.
- CANCELLED and EXPIRED join the terminal set: the partial indexes that say "ended"
  are rebuilt with the new list (the literal below is core.schema.TERMINAL_SQL).
"""

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"

TERMINAL = "status IN ('SUCCEEDED', 'FAILED', 'DEAD_LETTERED', 'CANCELLED', 'EXPIRED')"
OLD_TERMINAL = "status IN ('SUCCEEDED', 'FAILED', 'DEAD_LETTERED')"
PARKED = "status = 'SCHEDULED' AND released_at IS NULL"


def _terminal_indexes(terminal: str) -> None:
    op.drop_index("tasks_unfinished", table_name="tasks")
    op.drop_index("task_events_one_terminal", table_name="task_events")
    op.create_index(
        "tasks_unfinished", "tasks", ["updated_at"], postgresql_where=sa.text(f"NOT ({terminal})")
    )
    op.create_index(
        "task_events_one_terminal",
        "task_events",
        ["task_id"],
        unique=True,
        postgresql_where=sa.text(terminal),
    )


def upgrade() -> None:
    for name, comment in (
        ("run_at", "a scheduled run: not before"),
        ("expires_at", "not started by then: EXPIRED"),
        ("released_at", "a parked scheduled task sent on"),
    ):
        op.add_column("tasks", sa.Column(name, sa.DateTime(timezone=True), comment=comment))
    op.create_index("tasks_parked", "tasks", ["run_at"], postgresql_where=sa.text(PARKED))
    _terminal_indexes(TERMINAL)


def downgrade() -> None:
    _terminal_indexes(OLD_TERMINAL)
    op.drop_index("tasks_parked", table_name="tasks")
    for column in ("released_at", "expires_at", "run_at"):
        op.drop_column("tasks", column)
