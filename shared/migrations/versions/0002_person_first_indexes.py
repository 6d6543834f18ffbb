"""Per-person indexes lead with (funnel, person) and end with the time column.

The aggregator replaces one person's rows at a time (person IN (...) AND time >= horizon);
with the time column in the same index the planner never prefers the (funnel, time) index.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_funnel_entries_funnel_id_person_id", table_name="funnel_entries")
    op.create_index(
        "ix_funnel_entries_funnel_id_person_id_t0_us",
        "funnel_entries",
        ["funnel_id", "person_id", "t0_us"],
    )
    op.drop_index("ix_funnel_touches_funnel_id_person_id", table_name="funnel_touches")
    op.create_index(
        "ix_funnel_touches_funnel_id_person_id_ts_us",
        "funnel_touches",
        ["funnel_id", "person_id", "ts_us"],
    )


def downgrade() -> None:
    op.drop_index("ix_funnel_touches_funnel_id_person_id_ts_us", table_name="funnel_touches")
    op.create_index(
        "ix_funnel_touches_funnel_id_person_id", "funnel_touches", ["funnel_id", "person_id"]
    )
    op.drop_index("ix_funnel_entries_funnel_id_person_id_t0_us", table_name="funnel_entries")
    op.create_index(
        "ix_funnel_entries_funnel_id_person_id", "funnel_entries", ["funnel_id", "person_id"]
    )
