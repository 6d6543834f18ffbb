"""identity merge: claims, links and refused links

* ``identity_claims``: what events claimed (an anonymous id is a user's), insert-only and
  deduplicated by project, event and anonymous id.
* ``identity_links``: what the claims resolve to, one row per linked id (its target, the
  claim's instant and event); an id without a row is a person's root.
* ``identity_refusals``: refused claims (one per pair of ids) with the reason.
* ``person_signals``: work for a partition's owner: an id to re-resolve, a person to
  re-evaluate from an instant on.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_claims",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("anon_id", sa.String(length=256), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "project_id", "event_id", "anon_id", name=op.f("pk_identity_claims")
        ),
    )
    op.create_index(
        op.f("ix_identity_claims_project_id_anon_id"), "identity_claims", ["project_id", "anon_id"]
    )
    op.create_index(
        op.f("ix_identity_claims_project_id_user_id"), "identity_claims", ["project_id", "user_id"]
    )
    op.create_table(
        "identity_links",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "id", name=op.f("pk_identity_links")),
    )
    op.create_index(
        op.f("ix_identity_links_project_id_target"), "identity_links", ["project_id", "target"]
    )
    op.create_table(
        "identity_refusals",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("anon_id", sa.String(length=256), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "project_id", "event_id", "anon_id", name=op.f("pk_identity_refusals")
        ),
    )
    op.create_index(
        op.f("ix_identity_refusals_project_id_user_id"),
        "identity_refusals",
        ["project_id", "user_id"],
    )

    op.create_table(
        "person_signals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("since_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person_signals")),
    )
    op.create_index(
        op.f("ix_person_signals_topic_partition"), "person_signals", ["topic", "partition"]
    )


def downgrade() -> None:
    op.drop_table("person_signals")
    op.drop_table("identity_refusals")
    op.drop_table("identity_links")
    op.drop_table("identity_claims")
