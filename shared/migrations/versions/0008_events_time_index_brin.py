"""events: a block-range (BRIN) index on time instead of a B-tree (PostgreSQL)

Only the hourly purge of events older than the retention horizon looks events up by time.
Events are stored about in the order they happen, so a BRIN index (each range of table
blocks with its lowest and highest instant) finds the old ones about as well, at a tiny
fraction of the size and of the cost per stored event (docs/design.md, "Schema"). A late
event only widens its block range, which the purge then also reads. SQLite keeps its B-tree.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_events_ts_us"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="events")
    op.create_index(INDEX, "events", ["ts_us"], postgresql_using="brin")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="events")
    op.create_index(INDEX, "events", ["ts_us"])
