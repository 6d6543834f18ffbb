"""key ids and instance keys, share links, the aggregator's progress per partition

* ``api_keys`` gains an ``id`` (what a key is listed and revoked by; existing keys get one),
  the key's first characters (``prefix``, unknown for existing keys) and an optional name;
  ``project_id`` becomes NULL for instance keys (scope ``instance``), which manage projects.
* ``share_links``: public, expiring, revocable links to a funnel's chart, stored hashed.
* ``aggregator_progress``: per consumer group and partition, the end offset the aggregator
  last saw and when, and an instant up to which every acknowledged event is applied; the
  API derives its freshness figures from it and ``consumer_offsets``.

Revision ID: 0010
Revises: 0009
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSTANCE_CHECK = "(scope = 'instance') = (project_id IS NULL)"


def upgrade() -> None:
    _key_ids()
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("funnel_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("last_days", sa.Integer(), nullable=True),
        sa.Column("from_us", sa.BigInteger(), nullable=True),
        sa.Column("to_us", sa.BigInteger(), nullable=True),
        sa.Column("count", sa.String(length=16), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_share_links_project_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["funnel_id"], ["funnels.id"], name=op.f("fk_share_links_funnel_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_links")),
    )
    op.create_index(op.f("ix_share_links_token_hash"), "share_links", ["token_hash"], unique=True)
    op.create_index(op.f("ix_share_links_project_id"), "share_links", ["project_id"])
    op.create_table(
        "aggregator_progress",
        sa.Column("group_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=True),
        sa.Column("observed_at_us", sa.BigInteger(), nullable=True),
        sa.Column("complete_to_us", sa.BigInteger(), nullable=True),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_aggregator_progress")
        ),
    )


def _key_ids() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
    keys = sa.table("api_keys", sa.column("key_hash", sa.String), sa.column("id", sa.String))
    connection = op.get_bind()
    for (key_hash,) in connection.execute(sa.select(keys.c.key_hash)).all():
        connection.execute(
            keys.update().where(keys.c.key_hash == key_hash).values(id=str(uuid.uuid4()))
        )
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.alter_column("id", existing_type=sa.String(length=36), nullable=False)
        batch_op.alter_column("project_id", existing_type=sa.String(length=64), nullable=True)
        batch_op.create_index(batch_op.f("ix_api_keys_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_api_keys_project_id"), ["project_id"])
        batch_op.create_check_constraint("ck_api_keys_instance_key_has_no_project", INSTANCE_CHECK)


def downgrade() -> None:
    op.drop_table("aggregator_progress")
    op.drop_index(op.f("ix_share_links_project_id"), table_name="share_links")
    op.drop_index(op.f("ix_share_links_token_hash"), table_name="share_links")
    op.drop_table("share_links")
    op.execute("DELETE FROM api_keys WHERE project_id IS NULL")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_constraint("ck_api_keys_instance_key_has_no_project", type_="check")
        batch_op.drop_index(batch_op.f("ix_api_keys_project_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_id"))
        batch_op.alter_column("project_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("name")
        batch_op.drop_column("prefix")
        batch_op.drop_column("id")
