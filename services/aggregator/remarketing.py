"""Re-marketing timers coming due: re-checked, then turned into webhook messages, once.

A timer row is pending until ``fire_at`` (due time plus the rule's grace period, so that late
events can still cancel it). The aggregator keeps pending rows equal to the live, uncancelled
occurrences of each person, so a pending row found here has not been cancelled; firing marks
it fired and writes the ``remarketing.due`` message in the same transaction (the outbox).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics, outbox
from shared.db import is_postgres
from shared.events import format_time, from_micros
from shared.funnel import Entry, FunnelDefinition, RemarketingRule, definition_from_doc, entry_value
from shared.tables import events, funnel_entries, funnels, remarketing_timers

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now_us(self) -> int: ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


class TimerFirer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
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
            stmt = (
                select(remarketing_timers)
                .where(
                    remarketing_timers.c.status == "pending",
                    remarketing_timers.c.fire_at_us <= now,
                )
                .order_by(remarketing_timers.c.fire_at_us)
                .limit(self._batch)
            )
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            due = [dict(r) for r in (await session.execute(stmt)).mappings()]
            if not due:
                return 0
            funnel_rows = await _funnels(session, {t["funnel_id"] for t in due})
            for timer in due:
                outcome = await self._fire(session, timer, funnel_rows, now)
                await session.execute(
                    update(remarketing_timers)
                    .where(remarketing_timers.c.id == timer["id"])
                    .values(status=outcome, updated_at_us=now)
                )
                name = (
                    funnel_rows[timer["funnel_id"]]["name"]
                    if timer["funnel_id"] in funnel_rows
                    else ""
                )
                metrics.REMARKETING.labels(name, timer["rule"], outcome).inc()
        return len(due)

    async def _fire(
        self, session: AsyncSession, timer: Mapping[str, Any], rows: Mapping[str, Any], now: int
    ) -> str:
        row = rows.get(timer["funnel_id"])
        if row is None:
            return "skipped"
        definition = definition_from_doc(row["definition"])
        rule = next((r for r in definition.remarketing if r.name == timer["rule"]), None)
        if rule is None:
            return "skipped"  # the rule was removed since the timer was set
        if timer["due_us"] < rule.created_at_us and not self._fire_backfilled:
            return "skipped"  # history replayed into a new rule: no flood of old triggers
        payload = await _payload(session, row, definition, rule, timer)
        await outbox.enqueue(
            session,
            project_id=row["project_id"],
            type_="remarketing.due",
            msg_id=outbox.message_id(
                "remarketing.due",
                timer["funnel_id"],
                rule.name,
                timer["person_id"],
                timer["entry_t0_us"],
                timer["occurrence"],
            ),
            payload=payload,
            funnel_id=row["id"],
            now_us=now,
        )
        return "fired"


async def _funnels(session: AsyncSession, ids: set[str]) -> dict[str, Any]:
    result = await session.execute(
        select(funnels.c.id, funnels.c.project_id, funnels.c.name, funnels.c.definition).where(
            funnels.c.id.in_(sorted(ids))
        )
    )
    return {r["id"]: dict(r) for r in result.mappings()}


async def _payload(
    session: AsyncSession,
    row: Mapping[str, Any],
    definition: FunnelDefinition,
    rule: RemarketingRule,
    timer: Mapping[str, Any],
) -> dict[str, Any]:
    """What marketing automation needs to act: who, which funnel and rule, where they stand."""
    stored = (
        await session.execute(
            select(funnel_entries.c.step_times, funnel_entries.c.step_values).where(
                funnel_entries.c.funnel_id == row["id"],
                funnel_entries.c.person_id == timer["person_id"],
                funnel_entries.c.t0_us == timer["entry_t0_us"],
            )
        )
    ).first()
    opener = (
        await session.execute(
            select(events.c.name, events.c.properties).where(
                events.c.project_id == row["project_id"],
                events.c.person_id == timer["person_id"],
                events.c.ts_us == timer["entry_t0_us"],
            )
        )
    ).all()
    first = definition.steps[0].matcher
    properties: dict[str, Any] = next((p for n, p in opener if first.matches(n, p, {})), {})
    entry = None
    if stored is not None:
        values = {k: tuple(v) for k, v in stored.step_values.items()}
        entry = Entry(timer["entry_t0_us"], tuple(stored.step_times), False, values)
    reached = entry.reached if entry else rule.from_step
    value = entry_value(definition, entry) if entry else None
    return {
        "project": row["project_id"],
        "funnel": {"id": row["id"], "name": row["name"]},
        "rule": {
            "name": rule.name,
            "from_step": rule.from_step,
            "goal_step": rule.goal_step,
            "occurrence": timer["occurrence"],
        },
        "person_id": timer["person_id"],
        "entry_time": format_time(from_micros(timer["entry_t0_us"])),
        "due_time": format_time(from_micros(timer["due_us"])),
        "current_step": {"step": reached, "name": definition.steps[reached - 1].name},
        "entry_properties": properties,
        "value": value,
    }
