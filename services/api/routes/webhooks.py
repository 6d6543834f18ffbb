"""Routes for /v1/webhooks: endpoints, secrets, delivery log and replays."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from services.api.body import StrictJsonRoute
from services.api.deps import Admin, ClockDep, SessionDep, SettingsDep
from services.api.errors import declared, refuse
from services.api.limits import parse_instant, well_formed_id
from services.api.repository import Session, funnels, webhooks
from services.api.repository.webhooks import AttemptRow, DeliveryRow, EndpointRow
from services.api.responses.common import instant
from services.api.responses.webhooks import (
    Attempt,
    Delivery,
    DeliveryList,
    Replayed,
    RotatedWebhook,
    WebhookList,
    WebhookOut,
    WebhookWithSecret,
)
from services.api.schemas import WebhookIn, WebhookPatch
from services.api.settings import ApiSettings
from shared.clock import DAY_US
from shared.events import from_micros, to_micros
from shared.keys import KeyGrant
from shared.netguard import UnsafeUrl, check_url, parse_networks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=StrictJsonRoute)
ROTATION_OVERLAP_US = DAY_US


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _fields(row: EndpointRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "event_types": row.event_types,
        "funnel_id": row.funnel_id,
        "enabled": row.disabled_at_us is None,
        "disabled_reason": row.disabled_reason,
        "created_at": instant(row.created_at_us),
    }


async def _safe(settings: ApiSettings, url: str) -> None:
    allowed = parse_networks(settings.webhook_allowed_networks)
    try:
        await asyncio.to_thread(check_url, url, allowed)
    except (UnsafeUrl, ValueError) as exc:
        refuse(422, "url", str(exc).removeprefix("url: "))


async def _endpoint(session: Session, grant: KeyGrant, webhook_id: str) -> EndpointRow:
    row = None
    if well_formed_id(webhook_id):
        row = await webhooks.get_endpoint(session, grant.project_id, webhook_id)
    if row is None:
        refuse(404, "webhook_id", f"no webhook {webhook_id!r} in this project")
    return row


async def _check_funnel(session: Session, grant: KeyGrant, funnel_id: str | None) -> None:
    if funnel_id is not None and not await funnels.has_funnel(session, grant.project_id, funnel_id):
        refuse(422, "funnel_id", f"no funnel {funnel_id!r} in this project")


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_webhook(
    body: WebhookIn, grant: Admin, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> WebhookWithSecret:
    """Subscribe a URL; the answer shows the signing secret (keep it: it is shown here)."""
    await _safe(settings, body.url)
    webhook_id = str(uuid.uuid4())
    await _check_funnel(session, grant, body.funnel_id)
    endpoint = {
        "id": webhook_id,
        "url": body.url,
        "event_types": list(dict.fromkeys(body.event_types)),
        "funnel_id": body.funnel_id,
        "secret": new_secret(),
    }
    await webhooks.create_endpoint(session, grant.project_id, endpoint, now_us=clock.now_us())
    row = await _endpoint(session, grant, webhook_id)
    await session.commit()
    return WebhookWithSecret(**_fields(row), secret=row.secret)


@router.get(
    "",
    response_model=WebhookList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_webhooks(grant: Admin, session: SessionDep) -> WebhookList:
    rows = await webhooks.list_endpoints(session, grant.project_id)
    return WebhookList(webhooks=[WebhookOut(**_fields(r)) for r in rows])


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def get_webhook(webhook_id: str, grant: Admin, session: SessionDep) -> WebhookOut:
    return WebhookOut(**_fields(await _endpoint(session, grant, webhook_id)))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def patch_webhook(
    webhook_id: str,
    body: WebhookPatch,
    grant: Admin,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> WebhookOut:
    change = body.model_dump(exclude_unset=True)
    if "url" in change:
        await _safe(settings, change["url"])
    now = clock.now_us()
    enabled = change.pop("enabled", None)
    if enabled is True:
        change |= {"disabled_at_us": None, "disabled_reason": None}
    elif enabled is False:
        change |= {"disabled_at_us": now, "disabled_reason": "disabled by the API"}
    await _endpoint(session, grant, webhook_id)
    await _check_funnel(session, grant, change.get("funnel_id"))
    await webhooks.change_endpoint(session, webhook_id, change, now_us=now)
    row = await _endpoint(session, grant, webhook_id)
    await session.commit()
    return WebhookOut(**_fields(row))


@router.delete("/{webhook_id}", status_code=204, responses=declared(401, 403, 404, 422, 503))
async def delete_webhook(webhook_id: str, grant: Admin, session: SessionDep) -> Response:
    await _endpoint(session, grant, webhook_id)
    await webhooks.delete_endpoint(session, webhook_id)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=RotatedWebhook,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def rotate_secret(
    webhook_id: str, grant: Admin, session: SessionDep, clock: ClockDep
) -> RotatedWebhook:
    """A new secret; the old one keeps signing (beside the new) for 24 hours."""
    now = clock.now_us()
    until = now + ROTATION_OVERLAP_US
    old = await _endpoint(session, grant, webhook_id)
    change = {
        "secret": new_secret(),
        "previous_secret": old.secret,
        "previous_secret_until_us": until,
    }
    await webhooks.change_endpoint(session, webhook_id, change, now_us=now)
    row = await _endpoint(session, grant, webhook_id)
    await session.commit()
    return RotatedWebhook(
        **_fields(row), secret=row.secret, previous_secret_valid_until=instant(until)
    )


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def deliveries(
    webhook_id: str,
    grant: Admin,
    session: SessionDep,
    status: Literal["pending", "delivered", "failed", "disabled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Deliveries, newest first, each with every attempt (status, latency, response)."""
    await _endpoint(session, grant, webhook_id)
    rows = await webhooks.list_deliveries(session, webhook_id, status, limit)
    attempts = await webhooks.attempts_of(session, [r.id for r in rows])
    return DeliveryList(deliveries=[_delivery_out(r, attempts.get(r.id, [])) for r in rows])


def _delivery_out(row: DeliveryRow, attempts: list[AttemptRow]) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.message_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt=instant(row.next_attempt_us),
        created_at=instant(row.created_at_us),
        attempt_log=[
            Attempt(
                at=instant(a.attempted_at_us),
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                response=a.response,
                error=a.error,
            )
            for a in attempts
        ],
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    response_model=Replayed,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def replay(
    webhook_id: str, delivery_id: str, grant: Admin, session: SessionDep, clock: ClockDep
) -> Replayed:
    """Send a delivery again now (same webhook id), whatever its status."""
    if not well_formed_id(delivery_id):
        refuse(404, "delivery_id", f"no delivery {delivery_id!r} for this webhook")
    await _endpoint(session, grant, webhook_id)
    replayed = await webhooks.replay_delivery(
        session, webhook_id, delivery_id, now_us=clock.now_us()
    )
    await session.commit()
    if replayed != 1:
        refuse(404, "delivery_id", f"no delivery {delivery_id!r} for this webhook")
    return Replayed(replayed=1)


@router.post(
    "/{webhook_id}/replay",
    response_model=Replayed,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def replay_failed(
    webhook_id: str,
    grant: Admin,
    session: SessionDep,
    clock: ClockDep,
    since: Annotated[
        str, Query(max_length=64, description="Failed deliveries created since (RFC 3339)")
    ],
) -> Replayed:
    """Send every failed delivery created since a time again."""
    start = to_micros(parse_instant("since", since, from_micros(0)))
    await _endpoint(session, grant, webhook_id)
    replayed = await webhooks.replay_failed(session, webhook_id, start, now_us=clock.now_us())
    await session.commit()
    return Replayed(replayed=replayed)
