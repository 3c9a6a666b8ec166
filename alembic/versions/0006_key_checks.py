"""API keys: a key that is not an admin's belongs to a team, and each key's last use.

Without the constraint a row with is_admin = false and no team would read as a team
key scoped to no team, which the code would treat as every team.
"""

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "last_used_at",
            sa.DateTime(timezone=True),
            comment="stamped at most every few seconds",
        ),
    )
    op.create_check_constraint("api_keys_team_or_admin", "api_keys", "is_admin OR team IS NOT NULL")


def downgrade() -> None:
    op.drop_constraint("api_keys_team_or_admin", "api_keys", type_="check")
    op.drop_column("api_keys", "last_used_at")
