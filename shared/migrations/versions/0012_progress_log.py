"""progress log: the persons whose stored progress each committed batch changed

* ``progress_log``: one row per (funnel, person) a batch changed, written in the batch's
  transaction, with the transaction's id on PostgreSQL; the API's columnar replicas poll it
  and re-read those persons' rows. On SQLite the ids never repeat (AUTOINCREMENT), so a
  purge cannot make an id seen twice.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "progress_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("funnel_id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=256), nullable=False),
        sa.Column("tx", sa.BigInteger(), nullable=True),
        sa.Column("written_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_progress_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_progress_log_tx"), "progress_log", ["tx"])
    op.create_index(op.f("ix_progress_log_written_at_us"), "progress_log", ["written_at_us"])


def downgrade() -> None:
    op.drop_index(op.f("ix_progress_log_written_at_us"), table_name="progress_log")
    op.drop_index(op.f("ix_progress_log_tx"), table_name="progress_log")
    op.drop_table("progress_log")
