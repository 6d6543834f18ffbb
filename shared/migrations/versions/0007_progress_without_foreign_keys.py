"""funnel entries and touches without a foreign key to their funnel

Every inserted entry and touch row had its funnel looked up by the foreign key's trigger, a
large share of PostgreSQL's time per event (docs/design.md, "Schema"). The rows still go
with their funnel: the API deletes them in the transaction that deletes or
redefines the funnel, after locking the funnel's row, which waits for any aggregator batch
that read the funnel (it holds the row share-locked until it commits), so no batch can add
rows for a funnel after its deletion.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("funnel_entries", "funnel_touches")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_funnel_id", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_funnel_id", "funnels", ["funnel_id"], ["id"], ondelete="CASCADE"
            )
