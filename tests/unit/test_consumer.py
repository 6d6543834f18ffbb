"""The consume loop (services/aggregator/consumer.py) against a fake source and processor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import REGISTRY

from services.aggregator.consumer import Backoff, Consumer
from shared.events import EVENTS_TOPIC
from tests.fakes import FakeProcessor, FakeSource

P0, P1 = (EVENTS_TOPIC, 0), (EVENTS_TOPIC, 1)


@asynccontextmanager
async def consuming(processor: FakeProcessor, source: FakeSource) -> AsyncIterator[None]:
    stop = asyncio.Event()
    backoff = Backoff(first_s=0.001, cap_s=0.01)
    consumer = Consumer(processor, source, stop, backfill_persons=10, backoff=backoff)
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def database_errors(operation: str) -> float:
    found = REGISTRY.get_sample_value(
        "funnel_aggregator_database_errors_total", {"operation": operation}
    )
    return found or 0.0


async def test_every_record_is_applied_once_and_each_partitions_offset_committed():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 10)
    source.append(1, 7)
    source.assign(0, 1)
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 17)
    assert processor.offsets_applied(0) == list(range(10))
    assert processor.offsets_applied(1) == list(range(7))
    assert processor.offsets == {P0: 10, P1: 7}
    assert source.expected() == {P0: 10, P1: 7}
    assert {**{k: v for c in source.commits for k, v in c.items()}} == {P0: 10, P1: 7}


async def test_records_appended_later_are_applied_after_those_before():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 3)
    source.assign(0)
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 3)
        source.append(0, 2)
        await until(lambda: len(processor.applied) == 5)
    assert processor.offsets_applied(0) == [0, 1, 2, 3, 4]


async def test_batches_failing_while_the_database_is_away_are_applied_after_a_rewind():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 10)
    source.assign(0)
    processor.apply_failures = [ConnectionRefusedError(111, "refused")] * 3
    errors = database_errors("batch")
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 10)
    assert processor.offsets_applied(0) == list(range(10))  # each once, in order
    assert source.rewinds == 3
    assert processor.loads == 4  # the assignment, then once after each rewind
    assert database_errors("batch") - errors == 3


async def test_a_batch_failing_for_another_reason_is_retried_the_same_way():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 5)
    source.assign(0)
    processor.apply_failures = [RuntimeError("a bug of ours")]
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 5)
    assert processor.offsets_applied(0) == list(range(5))
    assert source.rewinds == 1


async def test_partitions_wait_pending_until_their_stored_offsets_can_be_read():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 10)
    processor.offsets = {P0: 4}  # applied before, by an earlier owner
    processor.load_failures = [ConnectionRefusedError(111, "refused")] * 3
    errors = database_errors("offsets")
    source.assign(0)
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 6)
    assert processor.offsets_applied(0) == list(range(4, 10))
    assert processor.loads == 4
    assert database_errors("offsets") - errors == 3
    assert source.pending() == {}


async def test_a_partition_assigned_while_consuming_is_started_at_its_stored_offset():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 3)
    source.append(1, 5)
    processor.offsets = {P1: 2}
    source.assign(0)
    async with consuming(processor, source):
        await until(lambda: len(processor.applied) == 3)
        source.assign(1)
        await until(lambda: len(processor.applied) == 6)
    assert processor.offsets_applied(0) == [0, 1, 2]
    assert processor.offsets_applied(1) == [2, 3, 4]
    assert processor.offsets == {P0: 3, P1: 5}


async def test_a_partition_another_consumer_moved_is_sought_again_from_the_database():
    source, processor = FakeSource(), FakeProcessor()
    source.append(0, 10)
    source.assign(0)
    processor.moved_after_load = {P0: 6}  # committed by the partition's new owner meanwhile
    async with consuming(processor, source):
        await until(lambda: processor.offsets == {P0: 10})
    assert processor.offsets_applied(0) == [6, 7, 8, 9]  # nothing the other one applied
    assert source.rewinds == 1
