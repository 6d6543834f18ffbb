"""events: both ids an event carries, user_id and anonymous_id, beside its person_id

``person_id`` is the user id, or the anonymous id when there is none; an event that carries
both (an ``identify`` after sign-up, any event of an identified visitor whose browser still
has its anonymous id) kept only the first. Identity merge links the two from the stored
events, so both are kept: nullable, and in byte order ("C") on PostgreSQL like every person
id (migration 0006). Events stored before this migration have neither (``person_id`` is one
of the two, which one is not known). ``previousId`` (alias) and ``groupId`` (group) stay in
the event's properties, as ``previous_id`` and ``group_id``.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("user_id", "anonymous_id")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for column in COLUMNS:
        # Nullable without a default: on PostgreSQL a change of the catalog only, no rewrite.
        kind = sa.String(256, collation="C") if postgres else sa.String(256)
        op.add_column("events", sa.Column(column, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
