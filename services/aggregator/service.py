"""The aggregator process: poll, apply each batch in one transaction, backfill when idle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics
from services.aggregator.delivery import DeliveryWorker
from services.aggregator.processor import Processor
from services.aggregator.progress import Progress
from services.aggregator.remarketing import Clock, SystemClock, TimerFirer
from services.aggregator.repository import StaleOffsets
from services.aggregator.sender import HttpSender, Sender
from services.aggregator.settings import AggregatorSettings
from services.aggregator.source import KafkaSource, Partition, Source
from shared.db import create_engine, sessionmaker
from shared.events import EVENTS_TOPIC
from shared.keys import now_us
from shared.netguard import parse_networks

log = logging.getLogger(__name__)
DAY_US = 86_400 * 1_000_000


def retention_horizon(retention_days: int) -> int:
    """Events before this instant (µs) are expired: midnight UTC, ``retention_days`` ago."""
    return (now_us() // DAY_US - retention_days) * DAY_US


def tune_gc() -> None:
    """Collect cyclic garbage less often. A batch allocates hundreds of thousands of
    short-lived objects (records, events, entries, rows), which reference counting frees,
    but every 700 allocations started a collection, and every hundredth of those a full one
    that walks everything alive, such as the persons kept in memory (known.py). Python CPU
    per event in the aggregator benchmark (one process, 300,000 events): 94 µs with the
    default thresholds, 128 µs with 20,000 persons (60,000 events) kept; with these, 82 to
    90 µs, and 80 to 84 µs with the persons kept. What start-up allocated is set apart from
    every collection.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run(settings: AggregatorSettings, stop: asyncio.Event) -> None:
    tune_gc()
    engine = create_engine(settings.database_url)
    processor = Processor(
        sessionmaker(engine),
        settings.group_id,
        lambda: retention_horizon(settings.retention_days),
        known_capacity=settings.known_capacity,
    )
    loop = asyncio.get_running_loop()

    def load(partitions: list[Partition]) -> dict[Partition, int]:
        # Called inside poll() on the polling thread while the event loop waits for it.
        return asyncio.run_coroutine_threadsafe(processor.load_offsets(partitions), loop).result()

    source = await asyncio.to_thread(
        KafkaSource,
        settings.kafka_bootstrap_servers,
        settings.group_id,
        [EVENTS_TOPIC],
        load,
        max_poll_records=settings.max_poll_records,
        poll_timeout_ms=settings.poll_timeout_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )
    log.info("aggregator consuming %s as group %s", EVENTS_TOPIC, settings.group_id)
    sender = HttpSender(
        settings.webhook_timeout_s,
        allowed_networks=parse_networks(settings.webhook_allowed_networks),
    )
    clock = SystemClock()
    background = [
        asyncio.create_task(fire_timers(sessionmaker(engine), clock, settings, stop)),
        asyncio.create_task(deliver_webhooks(sessionmaker(engine), sender, clock, settings, stop)),
    ]
    try:
        progress = Progress(sessionmaker(engine), settings.group_id)
        await consume(processor, source, settings, stop, progress)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await sender.close()
        await asyncio.to_thread(source.close)
        await engine.dispose()


async def fire_timers(
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    settings: AggregatorSettings,
    stop: asyncio.Event,
) -> None:
    firer = TimerFirer(sessions, clock, fire_backfilled=settings.fire_backfilled_timers)
    while not stop.is_set():
        try:
            busy = await firer.fire_due()
        except Exception:  # a failed round is retried; the timers stay pending
            log.exception("firing re-marketing timers failed")
            busy = 0
        if not busy:
            await _sleep(stop, settings.timer_interval_s)


async def deliver_webhooks(
    sessions: async_sessionmaker[AsyncSession],
    sender: Sender,
    clock: Clock,
    settings: AggregatorSettings,
    stop: asyncio.Event,
) -> None:
    worker = DeliveryWorker(
        sessions,
        sender,
        clock,
        batch=settings.webhook_batch,
    )
    while not stop.is_set():
        try:
            busy = await worker.run_once()
        except Exception:  # leases expire, so claimed deliveries are retried
            log.exception("webhook delivery round failed")
            busy = 0
        if not busy:
            await _sleep(stop, settings.webhook_interval_s)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def consume(
    processor: Processor,
    source: Source,
    settings: AggregatorSettings,
    stop: asyncio.Event,
    progress: Progress | None = None,
) -> None:
    """Apply batches as they come; backfill when idle and at least once a second when busy."""
    due = {"lag": 0.0, "backfill": 0.0, "purge": 0.0, "statistics": 0.0}
    while not stop.is_set():
        records = await asyncio.to_thread(source.poll)
        if records:
            try:
                committed = await processor.apply(records, source.expected())
            except StaleOffsets as exc:
                log.warning("partition moved to another consumer (%s); re-seeking", exc)
                await asyncio.to_thread(source.reseek)
                continue
            await asyncio.to_thread(source.committed, committed)
            _observe_age(records[-1].timestamp_ms, records[-1].partition)
        now = time.monotonic()
        if not records or now >= due["backfill"]:
            due["backfill"] = now + 1
            await processor.backfill_step(settings.backfill_persons_per_batch)
        if now >= due["purge"]:
            due["purge"] = now + 3600
            await processor.purge_expired()
        if now >= due["statistics"]:
            due["statistics"] = now + 15
            await processor.refresh_statistics()
        if now >= due["lag"]:
            due["lag"] = now + 5
            for (_, partition), lag in (await asyncio.to_thread(source.lag)).items():
                metrics.LAG_RECORDS.labels(str(partition)).set(lag)
        if progress is not None:  # records is the batch applied in this round, or empty
            await progress.observe(source, records)


def _observe_age(timestamp_ms: int, partition: int) -> None:
    if timestamp_ms > 0:
        age = max(time.time() - timestamp_ms / 1000, 0.0)
        metrics.LAG_SECONDS.labels(str(partition)).set(age)


def serve_metrics(settings: AggregatorSettings) -> None:
    start_http_server(settings.metrics_port, addr=settings.host)
