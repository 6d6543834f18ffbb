"""Re-marketing timers coming due: re-checked, then turned into webhook messages, once.

A timer row is pending until ``fire_at`` (due time plus the rule's grace period, so that late
events can still cancel it). The aggregator keeps pending rows equal to the live, uncancelled
occurrences of each person, so a pending row found here has not been cancelled; firing marks
it fired and writes the ``remarketing.due`` message in the same transaction (the outbox).
"""

from __future__ import annotations

import logging

from services.aggregator import metrics
from services.aggregator.messages import remarketing_message
from services.aggregator.model import DueTimer, TimerFunnel
from services.aggregator.repository import (
    Session,
    Sessions,
    events,
    funnels,
    identities,
    outbox,
    timers,
)
from shared.clock import Clock
from shared.funnel import RemarketingRule

log = logging.getLogger(__name__)


def rule_to_fire(
    timer: DueTimer, funnel: TimerFunnel | None, fire_backfilled: bool
) -> RemarketingRule | None:
    """The rule the timer fires for, or None when it is skipped: its funnel or rule is gone,
    or it came due before its rule existed (history replayed into a new rule is no flood of
    old triggers) unless ``fire_backfilled``."""
    if funnel is None:
        return None
    rule = next((r for r in funnel.definition.remarketing if r.name == timer.rule), None)
    if rule is None:
        return None
    if timer.due_us < rule.created_at_us and not fire_backfilled:
        return None
    return rule


class TimerFirer:
    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        *,
        fire_backfilled: bool = False,
        batch: int = 500,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._fire_backfilled = fire_backfilled
        self._batch = batch

    async def fire_due(self) -> int:
        """Fire (or skip) the timers due now; return how many were handled."""
        now = self._clock.now_us()
        async with self._sessions.begin() as session:
            due = await timers.due_timers(session, now, self._batch)
            if not due:
                return 0
            found = await funnels.timer_funnels(session, {t.funnel_id for t in due})
            for timer in due:
                funnel = found.get(timer.funnel_id)
                rule = rule_to_fire(timer, funnel, self._fire_backfilled)
                if funnel is not None and rule is not None:
                    ids = await self._ids(session, funnel.project_id, timer)
                    rule = rule if ids is not None else None
                if funnel is not None and rule is not None and ids is not None:
                    await self._fire(session, funnel, rule, timer, ids, now)
                outcome = "skipped" if rule is None else "fired"
                await timers.mark_timer(session, timer.id, outcome, now)
                name = funnel.name if funnel is not None else ""
                metrics.REMARKETING.labels(timer.funnel_id, name, timer.rule, outcome).inc()
        return len(due)

    async def _ids(self, session: Session, project_id: str, timer: DueTimer) -> list[str] | None:
        """The ids of the timer's person, or None when the timer is not to fire: its id is
        part of another person now, or the person's timer for the same entry and occurrence
        fired under another of their ids."""
        root, ids = await identities.person_ids(session, project_id, timer.person_id)
        if root != timer.person_id:
            return None
        if len(ids) > 1:
            fired = await timers.fired_keys(session, timer.funnel_id, ids[1:])
            if any(key == (timer.rule, timer.entry_t0_us, timer.occurrence) for _, key in fired):
                return None
        return ids

    async def _fire(
        self,
        session: Session,
        funnel: TimerFunnel,
        rule: RemarketingRule,
        timer: DueTimer,
        ids: list[str],
        now: int,
    ) -> None:
        entry = await timers.stored_entry(session, timer)
        opening = await events.opening_events(session, funnel.project_id, ids, timer.entry_t0_us)
        message = remarketing_message(funnel, rule, timer, entry, opening, ids)
        await outbox.enqueue(session, message, now)
