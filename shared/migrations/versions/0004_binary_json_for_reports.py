"""binary JSON (jsonb) for the columns reports read inside PostgreSQL

Reports computed in the database extract step times and breakdown values per row; jsonb
reads them without re-parsing the text each time. SQLite has one JSON kind: nothing to do.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("funnel_entries", "step_times"),
    ("funnel_entries", "step_values"),
    ("funnel_touches", "values"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.execute(
            f'ALTER TABLE {table} ALTER COLUMN "{column}" TYPE jsonb USING "{column}"::jsonb'
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" TYPE json USING "{column}"::json')
