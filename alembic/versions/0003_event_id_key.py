"""task_events keyed by event_id, without a surrogate id or a foreign key.

Every status event is inserted once by the recorder, in batches; each index and the
foreign-key lookup cost on every row. The event id is already unique, so it becomes the
primary key (one index fewer), and the recorder writes a task's row in the same
transaction as its events, so the foreign key only cost time.
"""

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    op.execute("ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey")
    op.execute("ALTER TABLE task_events DROP CONSTRAINT task_events_pkey")
    op.execute("ALTER TABLE task_events DROP COLUMN id")
    op.execute("ALTER TABLE task_events DROP CONSTRAINT task_events_event_id_key")
    op.execute("ALTER TABLE task_events ADD PRIMARY KEY (event_id)")


def downgrade() -> None:
    op.execute("ALTER TABLE task_events DROP CONSTRAINT task_events_pkey")
    op.execute("ALTER TABLE task_events ADD CONSTRAINT task_events_event_id_key UNIQUE (event_id)")
    op.execute("ALTER TABLE task_events ADD COLUMN id bigserial PRIMARY KEY")
    op.execute(
        "ALTER TABLE task_events ADD CONSTRAINT task_events_task_id_fkey FOREIGN KEY (task_id) "
        "REFERENCES tasks (task_id) ON DELETE CASCADE"
    )
