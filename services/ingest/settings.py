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
    # Load shedding, per process: beyond either bound a POST is answered 429 at once.
    max_in_flight: int = 256
    max_body_bytes_in_flight: int = 2 * 1024 * 1024
    # Slow clients: a request's headers, and then its body, must arrive within these.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    keep_alive_s: int = 5  # an idle connection is closed after this
