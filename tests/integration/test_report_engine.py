"""The report engine with the request's own session: what it serves, and that a request that
joins a computation under way holds no transaction meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses

from services.api.reports.engine import ReportEngine
from services.api.repository import funnels
from services.api.settings import ApiSettings
from shared.clock import FixedClock
from shared.funnel import definition_from_doc
from tests.helpers import create_key

FUNNEL = {"name": "engine", "steps": [{"event": "visit"}, {"event": "pay"}]}
NOW_US = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z


async def _stored_funnel(sessions):
    async with sessions.begin() as session:
        await create_key(session, "proj", "admin")
        funnel_id = await funnels.create_funnel(session, "proj", FUNNEL, now_us=NOW_US)
    async with sessions() as session:
        return await funnels.get_funnel(session, "proj", funnel_id)


async def test_a_fresh_read_during_a_background_recomputation_joins_it(database_url, sessions):
    # Every kept report may be served stale, so a changed basis starts a background
    # recomputation; the fresh read of the same report then joins it. On SQLite that
    # recomputation needs the write lock, which the fresh read's session must not hold.
    settings = ApiSettings(
        database_url=database_url, report_stale_after_ms=0, report_max_stale_s=3600
    )
    engine = ReportEngine(settings, sessions, FixedClock(NOW_US))
    row = await _stored_funnel(sessions)
    definition = definition_from_doc(row.definition)
    async with sessions() as session:
        first = await engine.serve(session, row, definition, None, None, "uniques", None)
    moved = dataclasses.replace(row, backfill_persons=1)  # the basis the answer was kept under
    async with sessions() as session:
        stale = await engine.serve(session, moved, definition, None, None, "uniques", None)
        fresh = await asyncio.wait_for(
            engine.serve(session, moved, definition, None, None, "uniques", None, fresh=True),
            timeout=30,
        )
    await engine.close()
    assert (first.how, stale.how, fresh.how) == ("computed", "stale", "computed")
    assert stale.computed is first.computed
    assert fresh.computed.basis == (False, 1, (0, 0))
    assert [s.persons for s in fresh.computed.report.steps] == [0, 0]
