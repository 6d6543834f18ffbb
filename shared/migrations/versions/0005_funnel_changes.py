"""per-funnel change counters, one row per funnel and Kafka partition

The aggregator adds one to a funnel's counter of a partition in the transaction that changes
that funnel's stored progress for persons of that partition. The API's report cache compares
a funnel's counters instead of every committed offset, so a batch that leaves a funnel alone
leaves its kept reports exact. A row per partition keeps aggregator processes (which own
different partitions) from waiting on each other's row locks.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "funnel_changes",
        sa.Column("funnel_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["funnel_id"],
            ["funnels.id"],
            name=op.f("fk_funnel_changes_funnel_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("funnel_id", "topic", "partition", name=op.f("pk_funnel_changes")),
    )


def downgrade() -> None:
    op.drop_table("funnel_changes")
