"""Payloads and results as `json`, not `jsonb`: jsonb cannot hold the character U+0000,
which is valid JSON a client may send (and `echo` must return unchanged). Nothing
queries inside these columns, so jsonb's indexing is not needed.
"""

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ALTER COLUMN payload TYPE json USING payload::json")
    op.execute("ALTER TABLE tasks ALTER COLUMN result TYPE json USING result::json")


def downgrade() -> None:
    # A value holding U+0000 cannot go back to jsonb; it is cleared rather than lost silently.
    for column in ("payload", "result"):
        op.execute(f"UPDATE tasks SET {column} = NULL WHERE {column}::text LIKE '%\\\\u0000%'")
        op.execute(f"ALTER TABLE tasks ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb")
