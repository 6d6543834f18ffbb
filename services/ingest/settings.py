from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    workers: int = 1  # processes serving the port (each with its own producer)
    produce_timeout_s: float = 10.0
    max_body_bytes: int = 500 * 1024
    max_batch_events: int = 2500
    max_properties_bytes: int = 32 * 1024
    cors_origins: str = "*"
    rate_limit_per_key: float = 20_000.0  # events/s per write key; 0 turns the limit off
    key_cache_s: float = 30.0
