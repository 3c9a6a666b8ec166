"""task_payloads: payloads too large to travel inside a status event.

A status event stays small (core.limits): a request larger than RESULT_MAX_BYTES has its
payload written here by the API before it is produced, and the ACCEPTED event carries no
payload. Reads and the reconciler take `coalesce(tasks.payload, task_payloads.payload)`.
"""

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"


def upgrade() -> None:
    op.execute(
        "CREATE TABLE task_payloads ("
        " task_id uuid PRIMARY KEY,"
        " payload json NOT NULL,"
        " stored_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE task_payloads")
