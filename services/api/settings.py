from __future__ import annotations

from typing import Literal

from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class ApiSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8003
    default_range_days: int = 30
    max_range_days: int = 3653  # ten years
    max_body_bytes: int = 1_000_000
    breakdown_limit: int = 10
    gauge_range_days: int = 7
    gauge_refresh_s: float = 5.0
    report_cache_size: int = 256
    report_max_stale_s: float = 60.0
    report_stale_after_ms: float = 250.0
    # The aggregators' consumer group, whose progress the freshness figures describe.
    aggregator_group_id: str = "funnel-aggregator"
    # Where cold reports are computed when it can answer them: the in-process columnar
    # replica (services/api/replica.py), or always the database.
    read_engine: Literal["duckdb", "database"] = "duckdb"
