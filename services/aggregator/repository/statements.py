"""Every statement an engine runs, timed for the aggregator's timing log (``timing``)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.aggregator import timing


def attach(engine: AsyncEngine) -> None:
    """Count and time every statement the engine runs, when the timing log is on."""
    if not timing.PATH:
        return
    sync = engine.sync_engine

    @event.listens_for(sync, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("timing", []).append(time.perf_counter())

    @event.listens_for(sync, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        timing.statement_ran(statement, time.perf_counter() - conn.info["timing"].pop())
