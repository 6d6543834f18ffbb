"""Backfill: a new or redefined funnel's progress computed from the stored events, in steps.

A funnel's backfill walks its project's persons in order; the batches keep a person's
progress live only once the backfill has passed them (``ActiveFunnel.covers``). A backfill
replays history silently: no webhooks, and no change counters (reports key on the
backfill's progress instead).
"""

from __future__ import annotations

from services.aggregator.batch import replace_progress
from services.aggregator.engine import Evaluator
from services.aggregator.repository import Session, events, funnels


async def backfill_step(session: Session, limit: int, horizon_us: int, now_us: int) -> int | None:
    """Recompute the next ``limit`` persons of one funnel being backfilled, in the session's
    transaction; return how many, or None when no funnel is being backfilled."""
    funnel = await funnels.lock_pending_backfill(session)
    if funnel is None:
        return None
    persons = await events.backfill_persons(session, funnel, limit)
    history = await events.person_events(session, funnel.project_id, persons, horizon_us)
    evaluator = Evaluator(funnel.definition)
    progress = {p: evaluator(history.get(p, ())) for p in persons}
    await replace_progress(session, funnel, progress, horizon_us, now_us)
    cursor = persons[-1] if persons else funnel.backfill_cursor
    await funnels.advance_backfill(
        session, funnel.id, cursor, len(persons), done=len(persons) < limit
    )
    return len(persons)
