"""The aggregator process: its adapters built, the consume, timer and delivery loops run."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable

from kafka.errors import KafkaError
from prometheus_client import start_http_server

from services.aggregator import metrics, timing
from services.aggregator.consumer import Backoff, Consumer
from services.aggregator.delivery import DeliveryWorker
from services.aggregator.freshness import Progress
from services.aggregator.processor import Processor
from services.aggregator.repository import Sessions, statements
from services.aggregator.sender import HttpSender, Sender
from services.aggregator.settings import AggregatorSettings
from services.aggregator.source import KafkaSource
from services.aggregator.timers import TimerFirer
from shared.clock import Clock, SystemClock
from shared.db import create_engine, is_unavailable, sessionmaker
from shared.events import EVENTS_TOPIC
from shared.netguard import parse_networks
from shared.retention import retention_horizon

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Collect cyclic garbage less often (see docs/design.md, "Garbage collection"). A batch
    allocates hundreds of thousands of short-lived objects, which reference counting frees;
    with the default thresholds every 700 allocations started a collection, and every
    hundredth of those a full one that walks everything alive, such as the person cache.
    What start-up allocated is set apart from every collection.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run(settings: AggregatorSettings, stop: asyncio.Event) -> None:
    tune_gc()
    engine = create_engine(settings.database_url)
    timing.configure(settings.timing_log)
    statements.attach(engine)
    clock = SystemClock()
    source = await connect(settings, stop)
    if source is None:
        await engine.dispose()
        return
    processor = Processor(
        sessionmaker(engine),
        settings.group_id,
        lambda: retention_horizon(settings.retention_days, clock.now_us()),
        cache_capacity=settings.known_capacity,
        clock=clock,
        topic_partitions=lambda: source.topic_partitions(EVENTS_TOPIC),
    )
    log.info("aggregator consuming %s as group %s", EVENTS_TOPIC, settings.group_id)
    sender = HttpSender(
        settings.webhook_timeout_s,
        allowed_networks=parse_networks(settings.webhook_allowed_networks),
    )
    background = [
        asyncio.create_task(fire_timers(sessionmaker(engine), clock, settings, stop)),
        asyncio.create_task(deliver_webhooks(sessionmaker(engine), sender, clock, settings, stop)),
    ]
    try:
        await Consumer(
            processor,
            source,
            stop,
            backfill_persons=settings.backfill_persons_per_batch,
            progress=Progress(sessionmaker(engine), settings.group_id),
        ).run()
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await sender.close()
        await asyncio.to_thread(source.close)
        await engine.dispose()


async def connect(settings: AggregatorSettings, stop: asyncio.Event) -> KafkaSource | None:
    """The consumer, once the broker answers (``None`` if stopped before)."""
    backoff = Backoff(first_s=0.5)
    while not stop.is_set():
        try:
            return await asyncio.to_thread(
                KafkaSource,
                settings.kafka_bootstrap_servers,
                settings.group_id,
                [EVENTS_TOPIC],
                max_poll_records=settings.max_poll_records,
                poll_timeout_ms=settings.poll_timeout_ms,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
            )
        except KafkaError as exc:
            delay = backoff.next()
            log.warning("broker unreachable (%s); retrying in %.1f s", exc, delay)
            await _sleep(stop, delay)
    return None


async def fire_timers(
    sessions: Sessions,
    clock: Clock,
    settings: AggregatorSettings,
    stop: asyncio.Event,
) -> None:
    firer = TimerFirer(sessions, clock, fire_backfilled=settings.fire_backfilled_timers)
    await _keep_going("timers", firer.fire_due, settings.timer_interval_s, stop)


async def deliver_webhooks(
    sessions: Sessions,
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
    await _keep_going("webhooks", worker.run_once, settings.webhook_interval_s, stop)


async def _keep_going(
    name: str, round_: Callable[[], Awaitable[int]], interval_s: float, stop: asyncio.Event
) -> None:
    """Run rounds until stopped: again at once while busy, after ``interval_s`` when idle,
    after a growing backoff (up to 10 s) while they fail. A failed round is retried: timers
    stay pending, and claimed deliveries' leases expire."""
    backoff = Backoff(first_s=interval_s)
    while not stop.is_set():
        try:
            busy = await round_()
        except Exception as exc:
            delay = max(backoff.next(), interval_s)
            if is_unavailable(exc):
                metrics.DATABASE_ERRORS.labels(name).inc()
                log.warning("%s: database unavailable (%s); again in %.1f s", name, exc, delay)
            else:
                log.exception("%s round failed; again in %.1f s", name, delay)
            await _sleep(stop, delay)
            continue
        if backoff.failures:
            log.info("%s: going again after %.1f s of failures", name, backoff.reset())
        if not busy:
            await _sleep(stop, interval_s)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def serve_metrics(settings: AggregatorSettings) -> None:
    start_http_server(settings.metrics_port, addr=settings.host)
