"""person and event ids compared in byte order ("C" collation) on PostgreSQL

The aggregator compares person ids with a funnel's backfill cursor in Python (code point
order, the byte order of UTF-8) while the backfill walks persons in the database's order. Under
a language's collation (en_US: "a" < "B") the two orders differ, so a person that the backfill
had passed could count as not yet covered and their new events be left out. With "C" both
orders are the same. It also makes every index insert and sort on these ids cheaper (a byte
comparison instead of the C library's collation), and reports group and sort by them in "C"
already. SQLite compares text bytewise by default: nothing to do there.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("events", "event_id", 128),
    ("events", "person_id", 256),
    ("funnel_entries", "person_id", 256),
    ("funnel_touches", "person_id", 256),
    ("remarketing_timers", "person_id", 256),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length in COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length}) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length in COLUMNS:
        op.execute(
            f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length}) COLLATE "default"'
        )
