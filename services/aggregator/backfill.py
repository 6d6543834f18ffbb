"""Backfill: a new or redefined funnel's progress computed from the stored events, in steps.

A funnel's backfill walks its project's persons in order; the batches keep a person's
progress live only once the backfill has passed them (``ActiveFunnel.covers``). A backfill
replays history silently: no webhooks, and no change counters (reports key on the
backfill's progress instead). Ids linked to another id are no persons of their own: a
person is evaluated, at its root's place in the walk, from the events of all its ids.
"""

from __future__ import annotations

from services.aggregator.batch import replace_progress
from services.aggregator.engine import Evaluator, lookback_us
from services.aggregator.repository import Session, events, funnels, identities


async def backfill_step(session: Session, limit: int, horizon_us: int, now_us: int) -> int | None:
    """Recompute the next ``limit`` persons of one funnel being backfilled, in the session's
    transaction; return how many, or None when no funnel is being backfilled."""
    funnel = await funnels.lock_pending_backfill(session)
    if funnel is None:
        return None
    persons = await events.backfill_persons(session, funnel, limit)
    project = funnel.project_id
    known = await identities.known(session, [(project, p) for p in persons])
    roots = [p for p in persons if (project, p) not in known.links]
    ids = {p: [p, *sorted(known.members.get((project, p), ()))] for p in roots}
    # From one lookback before the horizon, as a batch reads before its bound (``reevaluate``).
    read_from = horizon_us - lookback_us(funnel.definition)
    history = await events.person_events(
        session, project, [i for found in ids.values() for i in found], read_from
    )
    evaluator = Evaluator(funnel.definition)
    progress = {
        p: evaluator([e for i in ids[p] for e in history.get(i, ())], horizon_us) for p in roots
    }
    await replace_progress(session, funnel, progress, horizon_us, now_us)
    cursor = persons[-1] if persons else funnel.backfill_cursor
    await funnels.advance_backfill(
        session, funnel.id, cursor, len(persons), done=len(persons) < limit
    )
    return len(persons)
