"""The report cache: exact-while-valid entries, least recently used out, shared computation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.api.report import FunnelReport
from services.api.report_cache import Computed, ReportCache

AT = datetime(2026, 1, 1, tzinfo=UTC)


def computed(valid_until: int, now: int = 0) -> Computed:
    return Computed(AT, AT, FunnelReport(()), now, valid_until)


async def test_kept_until_valid_until_then_dropped():
    cache = ReportCache(4)

    async def work() -> Computed:
        return computed(valid_until=100)

    await cache.compute("k", work)
    assert cache.get("k", 99) is not None
    assert cache.get("k", 100) is None
    assert cache.get("k", 50) is None  # dropped for good once expired


async def test_least_recently_used_goes_first():
    cache = ReportCache(2)
    for key in ("a", "b"):
        await cache.compute(key, lambda: _value(10))
    assert cache.get("a", 0) is not None  # "a" now the most recent
    await cache.compute("c", lambda: _value(10))
    assert (cache.get("a", 0) is not None, cache.get("b", 0), cache.get("c", 0) is not None) == (
        True,
        None,
        True,
    )


async def test_size_zero_keeps_nothing():
    cache = ReportCache(0)
    await cache.compute("a", lambda: _value(10))
    assert cache.get("a", 0) is None


async def test_identical_misses_share_one_computation_and_its_failure():
    cache = ReportCache(4)
    runs = 0
    release = asyncio.Event()

    async def slow() -> Computed:
        nonlocal runs
        runs += 1
        await release.wait()
        return computed(10)

    tasks = [asyncio.create_task(cache.compute("k", slow)) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks)
    assert runs == 1
    assert all(r is results[0] for r in results)

    async def broken() -> Computed:
        await asyncio.sleep(0.01)
        raise RuntimeError("database gone")

    failing = [asyncio.create_task(cache.compute("x", broken)) for _ in range(3)]
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert cache.get("x", 0) is None
    with pytest.raises(RuntimeError):
        await cache.compute("x", broken)  # a failure is not kept


async def _value(valid_until: int) -> Computed:
    return computed(valid_until)
