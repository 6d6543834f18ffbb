"""progress bounds: where each stored entry is its person's counted one, and each touch's
neighbours

* ``funnel_entries.lft_us`` / ``rgt_us``: the entry is the person's counted entry of a report
  over ``[lo, hi)`` exactly when it starts there, ``lft_us < lo`` and ``rgt_us >= hi`` (NULL:
  unbounded on that side); ``shared.bounds.entry_bounds`` over all the person's entries.
* ``funnel_touches.neighbours``: ``{property: [previous, next]}``, the instants of the
  person's touches with a value of that property just before and after this one
  (``shared.bounds.touch_neighbours``); a touch is the first in range when its previous
  one is before ``lo``, the last when its next one is at or after ``hi``.

The aggregator writes them with the rows, in the same transaction; existing rows are filled
here, a person at a time, from their stored rows.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.bounds import entry_bounds, touch_neighbours
from shared.funnel import Entry, Touch

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
BATCH = 5_000

entries = sa.table(
    "funnel_entries",
    sa.column("id", sa.BigInteger),
    sa.column("funnel_id", sa.String),
    sa.column("person_id", sa.String),
    sa.column("t0_us", sa.BigInteger),
    sa.column("step_times", DOCUMENT),
    sa.column("disqualified", sa.Boolean),
    sa.column("lft_us", sa.BigInteger),
    sa.column("rgt_us", sa.BigInteger),
)
touches = sa.table(
    "funnel_touches",
    sa.column("id", sa.BigInteger),
    sa.column("funnel_id", sa.String),
    sa.column("person_id", sa.String),
    sa.column("ts_us", sa.BigInteger),
    sa.column("seq", sa.Integer),
    sa.column("values", DOCUMENT),
    sa.column("neighbours", DOCUMENT),
)


def upgrade() -> None:
    op.add_column("funnel_entries", sa.Column("lft_us", sa.BigInteger(), nullable=True))
    op.add_column("funnel_entries", sa.Column("rgt_us", sa.BigInteger(), nullable=True))
    op.add_column(
        "funnel_touches",
        sa.Column("neighbours", DOCUMENT, nullable=False, server_default="{}"),
    )
    connection = op.get_bind()
    e, t = entries.c, touches.c
    of_entries = sa.select(e.id, e.funnel_id, e.person_id, e.t0_us, e.step_times, e.disqualified)
    bounds = sa.update(entries).where(e.id == sa.bindparam("key"))
    _fill(
        connection,
        of_entries,
        bounds.values(lft_us=sa.bindparam("l"), rgt_us=sa.bindparam("r")),
        _entry_updates,
    )
    of_touches = sa.select(t.id, t.funnel_id, t.person_id, t.ts_us, t.seq, t["values"])
    neighbours = sa.update(touches).where(t.id == sa.bindparam("key"))
    _fill(connection, of_touches, neighbours.values(neighbours=sa.bindparam("n")), _touch_updates)


def _fill(connection: Any, select: Any, update: Any, updates: Any) -> None:
    rows = connection.execute(select.order_by("funnel_id", "person_id")).all()
    pending: list[dict[str, Any]] = []
    for _, person_rows in groupby(rows, key=lambda r: (r[1], r[2])):
        pending.extend(updates(list(person_rows)))
        if len(pending) >= BATCH:
            connection.execute(update, pending)
            pending = []
    if pending:
        connection.execute(update, pending)


def _entry_updates(rows: list[Any]) -> Iterator[dict[str, Any]]:
    found = [Entry(r[3], tuple(r[4]), bool(r[5])) for r in rows]
    for row, b in zip(rows, entry_bounds(found), strict=True):
        if b.left is not None or b.right is not None:
            yield {"key": row[0], "l": b.left, "r": b.right}


def _touch_updates(rows: list[Any]) -> Iterator[dict[str, Any]]:
    found = [Touch(r[3], r[4], r[5]) for r in rows]
    for row, n in zip(rows, touch_neighbours(found), strict=True):
        if n:
            yield {"key": row[0], "n": n}


def downgrade() -> None:
    op.drop_column("funnel_touches", "neighbours")
    op.drop_column("funnel_entries", "rgt_us")
    op.drop_column("funnel_entries", "lft_us")
