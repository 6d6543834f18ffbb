"""The report cache: exact-while-valid entries, stale ones within bounds while a refresh runs,
least recently used out, shared computation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.api.reports.cache import Computed, ReportCache
from services.api.reports.python import FunnelReport

AT = datetime(2026, 1, 1, tzinfo=UTC)


def computed(valid_until: int, now: int = 0, basis: str = "b0", took: int = 0) -> Computed:
    return Computed(AT, AT, FunnelReport(()), now, valid_until, basis, took)


def exact(cache: ReportCache, key: str, now: int, basis: str = "b0") -> bool:
    found = cache.get(key, basis, now)
    return found is not None and found[1] == "exact"


async def test_kept_until_valid_until_then_dropped():
    cache = ReportCache(4)

    async def work() -> Computed:
        return computed(valid_until=100)

    await cache.compute("k", work)
    assert exact(cache, "k", 99)
    assert cache.get("k", "b0", 100) is None
    assert cache.get("k", "b0", 50) is None  # dropped for good once expired


async def test_a_moved_basis_is_not_exact():
    cache = ReportCache(4)
    await cache.compute("k", lambda: _value(100))
    assert cache.get("k", "b1", 10) is None
    assert cache.get("k", "b0", 10) is None  # dropped


async def test_least_recently_used_goes_first():
    cache = ReportCache(2)
    for key in ("a", "b"):
        await cache.compute(key, lambda: _value(10))
    assert exact(cache, "a", 0)  # "a" now the most recent
    await cache.compute("c", lambda: _value(10))
    assert (exact(cache, "a", 0), cache.get("b", "b0", 0), exact(cache, "c", 0)) == (
        True,
        None,
        True,
    )


async def test_size_zero_keeps_nothing():
    cache = ReportCache(0)
    await cache.compute("a", lambda: _value(10))
    assert cache.get("a", "b0", 0) is None


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
    assert cache.get("x", "b0", 0) is None
    with pytest.raises(RuntimeError):
        await cache.compute("x", broken)  # a failure is not kept


async def _value(valid_until: int) -> Computed:
    return computed(valid_until)


async def test_slow_reports_are_served_stale_while_young_and_refreshed_once():
    cache = ReportCache(4, max_stale_us=1_000, slow_us=500)
    await cache.compute("k", lambda: _slow_value(now=100, basis="b0"))
    # The basis moved: still young (age 900 <= 1,000) and slow to compute, so served stale.
    found = cache.get("k", "b1", 1_000)
    assert found is not None
    assert found[1] == "stale"
    assert found[0].basis == "b0"
    runs = 0
    release = asyncio.Event()

    async def refresh() -> Computed:
        nonlocal runs
        runs += 1
        await release.wait()
        return computed(10**9, now=1_000, basis="b1", took=600)

    cache.refresh("k", refresh)
    cache.refresh("k", refresh)  # one refresh at a time per report
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.sleep(0.01)
    assert runs == 1
    assert exact(cache, "k", 1_500, basis="b1")


async def test_stale_is_bounded_by_age_and_never_served_for_quick_reports():
    cache = ReportCache(4, max_stale_us=1_000, slow_us=500)
    await cache.compute("old", lambda: _slow_value(now=100, basis="b0"))
    assert cache.get("old", "b1", 1_101) is None  # 1,001 old: recomputed in the foreground
    await cache.compute("quick", lambda: _value(10**9))  # took 0 < 500
    assert cache.get("quick", "b1", 1) is None
    exact_only = ReportCache(4, max_stale_us=0, slow_us=0)
    await exact_only.compute("k", lambda: _slow_value(now=100, basis="b0"))
    assert exact_only.get("k", "b1", 101) is None


async def test_a_failed_refresh_leaves_the_stale_report_to_age_out():
    cache = ReportCache(4, max_stale_us=1_000, slow_us=0)
    await cache.compute("k", lambda: _slow_value(now=0, basis="b0"))

    async def broken() -> Computed:
        raise RuntimeError("database gone")

    cache.refresh("k", broken)
    await asyncio.sleep(0.01)
    found = cache.get("k", "b1", 500)
    assert found is not None
    assert found[1] == "stale"
    assert cache.get("k", "b1", 1_001) is None


async def test_close_cancels_refreshes_under_way():
    cache = ReportCache(4, max_stale_us=1_000, slow_us=0)
    never = asyncio.Event()

    async def hang() -> Computed:
        await never.wait()
        raise AssertionError("not reached")

    cache.refresh("k", hang)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cache.close(), 1)
    assert cache.get("k", "b0", 0) is None


async def _slow_value(now: int, basis: str) -> Computed:
    return computed(10**9, now=now, basis=basis, took=600)
