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
    """Rebuild the two partial indexes that say "ended" for the terminal set `terminal`."""
    for name, table, column, where, unique in (
        ("tasks_unfinished", "tasks", "updated_at", f"NOT ({terminal})", False),
        ("task_events_one_terminal", "task_events", "task_id", terminal, True),
    ):
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], unique=unique, postgresql_where=sa.text(where))


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
