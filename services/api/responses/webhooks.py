"""What the webhook routes answer."""

from __future__ import annotations

from pydantic import Field

from services.api.responses.common import Out


class WebhookOut(Out):
    id: str
    url: str
    event_types: list[str]
    funnel_id: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: str


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret: shown here only.")


class RotatedWebhook(WebhookWithSecret):
    previous_secret_valid_until: str


class WebhookList(Out):
    webhooks: list[WebhookOut]


class Attempt(Out):
    at: str
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None


class Delivery(Out):
    id: str
    webhook_id: str
    status: str
    attempts: int
    next_attempt: str
    created_at: str
    attempt_log: list[Attempt]


class DeliveryList(Out):
    deliveries: list[Delivery]


class Replayed(Out):
    replayed: int
