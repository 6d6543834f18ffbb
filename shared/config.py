"""Settings every service reads: the database, the Kafka bootstrap servers, the retention."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.db import DEFAULT_DATABASE_URL


class CommonSettings(BaseSettings):
    """Unprefixed variables shared by all services; subclasses add their own prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    webhook_allowed_networks: str = Field(
        "",
        validation_alias=AliasChoices("WEBHOOK_ALLOWED_NETWORKS", "webhook_allowed_networks"),
        description="CIDRs webhooks may target even though they are not public addresses.",
    )
    retention_days: int = Field(
        400,
        ge=1,
        validation_alias=AliasChoices(
            "RETENTION_DAYS", "AGGREGATOR_RETENTION_DAYS", "retention_days"
        ),
        description="Events older than this many days are refused at ingest and expired after.",
    )
