"""The aggregator's settings: ``AGGREGATOR_*`` variables, plus the shared ones."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class AggregatorSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="AGGREGATOR_", extra="ignore")

    group_id: str = "funnel-aggregator"
    host: str = "127.0.0.1"
    metrics_port: int = 8002
    max_poll_records: int = 2000
    poll_timeout_ms: int = 500
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    backfill_persons_per_batch: int = 500
    known_capacity: int = 50_000  # of the person cache (person_cache.py)
    # retention_days: shared (RETENTION_DAYS, or AGGREGATOR_RETENTION_DAYS)
    timer_interval_s: float = 1.0
    fire_backfilled_timers: bool = False
    webhook_interval_s: float = 0.5
    webhook_timeout_s: float = 15.0
    webhook_batch: int = 50
    timing_log: str = ""  # a file for the timing log (services/aggregator/timing.py); "": off
