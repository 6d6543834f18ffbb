"""Routes for /v1/webhooks: endpoints, secrets, delivery log and replays."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import Admin
from services.api.body import StrictJsonRoute
from services.api.errors import declared, refuse
from services.api.limits import parse_instant, well_formed_id
from services.api.response_models import (
    DeliveryList,
    Replayed,
    RotatedWebhook,
    WebhookList,
    WebhookOut,
    WebhookWithSecret,
)
from services.api.schemas import WebhookIn, WebhookPatch
from shared.events import format_time, from_micros, to_micros
from shared.keys import KeyGrant, now_us
from shared.netguard import UnsafeUrl, check_url, parse_networks
from shared.tables import funnels, webhook_attempts, webhook_deliveries, webhook_endpoints

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=StrictJsonRoute)
ROTATION_OVERLAP_US = 24 * 3600 * 1_000_000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _view(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    view = {
        "id": row.id,
        "url": row.url,
        "event_types": row.event_types,
        "funnel_id": row.funnel_id,
        "enabled": row.disabled_at_us is None,
        "disabled_reason": row.disabled_reason,
        "created_at": format_time(from_micros(row.created_at_us)),
    }
    if with_secret:
        view["secret"] = row.secret
    return view


async def _safe(request: Request, url: str) -> None:
    allowed = parse_networks(request.app.state.api.settings.webhook_allowed_networks)
    try:
        await asyncio.to_thread(check_url, url, allowed)
    except (UnsafeUrl, ValueError) as exc:
        refuse(422, "url", str(exc).removeprefix("url: "))


async def _endpoint(session: AsyncSession, grant: KeyGrant, webhook_id: str) -> Any:
    if not well_formed_id(webhook_id):
        refuse(404, "webhook_id", f"no webhook {webhook_id!r} in this project")
    row = (
        await session.execute(
            select(webhook_endpoints).where(
                webhook_endpoints.c.id == webhook_id,
                webhook_endpoints.c.project_id == grant.project_id,
            )
        )
    ).first()
    if row is None:
        refuse(404, "webhook_id", f"no webhook {webhook_id!r} in this project")
    return row


async def _check_funnel(session: AsyncSession, grant: KeyGrant, funnel_id: str | None) -> None:
    if funnel_id is None:
        return
    found = await session.scalar(
        select(funnels.c.id).where(
            funnels.c.id == funnel_id, funnels.c.project_id == grant.project_id
        )
    )
    if found is None:
        refuse(422, "funnel_id", f"no funnel {funnel_id!r} in this project")


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_webhook(body: WebhookIn, request: Request, grant: Admin) -> dict[str, Any]:
    """Subscribe a URL; the answer shows the signing secret (keep it: it is shown here)."""
    await _safe(request, body.url)
    stamp = now_us()
    webhook_id = str(uuid.uuid4())
    async with request.app.state.api.sessions.begin() as session:
        await _check_funnel(session, grant, body.funnel_id)
        await session.execute(
            webhook_endpoints.insert().values(
                id=webhook_id,
                project_id=grant.project_id,
                url=body.url,
                event_types=list(dict.fromkeys(body.event_types)),
                funnel_id=body.funnel_id,
                secret=new_secret(),
                created_at_us=stamp,
                updated_at_us=stamp,
            )
        )
        row = await _endpoint(session, grant, webhook_id)
    return _view(row, with_secret=True)


@router.get(
    "",
    response_model=WebhookList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_webhooks(request: Request, grant: Admin) -> dict[str, Any]:
    async with request.app.state.api.sessions() as session:
        rows = await session.execute(
            select(webhook_endpoints)
            .where(webhook_endpoints.c.project_id == grant.project_id)
            .order_by(webhook_endpoints.c.created_at_us)
        )
        return {"webhooks": [_view(r) for r in rows]}


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def get_webhook(webhook_id: str, request: Request, grant: Admin) -> dict[str, Any]:
    async with request.app.state.api.sessions() as session:
        return _view(await _endpoint(session, grant, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def patch_webhook(
    webhook_id: str, body: WebhookPatch, request: Request, grant: Admin
) -> dict[str, Any]:
    change = body.model_dump(exclude_unset=True)
    if "url" in change:
        await _safe(request, change["url"])
    enabled = change.pop("enabled", None)
    if enabled is True:
        change |= {"disabled_at_us": None, "disabled_reason": None}
    elif enabled is False:
        change |= {"disabled_at_us": now_us(), "disabled_reason": "disabled by the API"}
    async with request.app.state.api.sessions.begin() as session:
        await _endpoint(session, grant, webhook_id)
        await _check_funnel(session, grant, change.get("funnel_id"))
        await session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == webhook_id)
            .values(updated_at_us=now_us(), **change)
        )
        return _view(await _endpoint(session, grant, webhook_id))


@router.delete("/{webhook_id}", status_code=204, responses=declared(401, 403, 404, 422, 503))
async def delete_webhook(webhook_id: str, request: Request, grant: Admin) -> Response:
    async with request.app.state.api.sessions.begin() as session:
        await _endpoint(session, grant, webhook_id)
        await session.execute(
            webhook_endpoints.delete().where(webhook_endpoints.c.id == webhook_id)
        )
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=RotatedWebhook,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def rotate_secret(webhook_id: str, request: Request, grant: Admin) -> dict[str, Any]:
    """A new secret; the old one keeps signing (beside the new) for 24 hours."""
    stamp = now_us()
    async with request.app.state.api.sessions.begin() as session:
        old = await _endpoint(session, grant, webhook_id)
        await session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == webhook_id)
            .values(
                secret=new_secret(),
                previous_secret=old.secret,
                previous_secret_until_us=stamp + ROTATION_OVERLAP_US,
                updated_at_us=stamp,
            )
        )
        row = await _endpoint(session, grant, webhook_id)
    view = _view(row, with_secret=True)
    view["previous_secret_valid_until"] = format_time(from_micros(stamp + ROTATION_OVERLAP_US))
    return view


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def deliveries(
    webhook_id: str,
    request: Request,
    grant: Admin,
    status: Literal["pending", "delivered", "failed", "disabled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Deliveries, newest first, each with every attempt (status, latency, response)."""
    d = webhook_deliveries.c
    async with request.app.state.api.sessions() as session:
        await _endpoint(session, grant, webhook_id)
        stmt = select(webhook_deliveries).where(d.endpoint_id == webhook_id)
        if status is not None:
            stmt = stmt.where(d.status == status)
        rows = (await session.execute(stmt.order_by(d.created_at_us.desc()).limit(limit))).all()
        attempts = await session.execute(
            select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_([r.id for r in rows]))
            .order_by(webhook_attempts.c.attempted_at_us)
        )
        by_delivery: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(
                {
                    "at": format_time(from_micros(a.attempted_at_us)),
                    "status_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "response": a.response,
                    "error": a.error,
                }
            )
    return {
        "deliveries": [
            {
                "id": r.id,
                "webhook_id": r.message_id,
                "status": r.status,
                "attempts": r.attempts,
                "next_attempt": format_time(from_micros(r.next_attempt_us)),
                "created_at": format_time(from_micros(r.created_at_us)),
                "attempt_log": by_delivery.get(r.id, []),
            }
            for r in rows
        ]
    }


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    response_model=Replayed,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def replay(
    webhook_id: str, delivery_id: str, request: Request, grant: Admin
) -> dict[str, Any]:
    """Send a delivery again now (same webhook id), whatever its status."""
    if not well_formed_id(delivery_id):
        refuse(404, "delivery_id", f"no delivery {delivery_id!r} for this webhook")
    async with request.app.state.api.sessions.begin() as session:
        await _endpoint(session, grant, webhook_id)
        result: Any = await session.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.endpoint_id == webhook_id,
            )
            .values(status="pending", next_attempt_us=now_us(), updated_at_us=now_us())
        )
    if result.rowcount != 1:
        refuse(404, "delivery_id", f"no delivery {delivery_id!r} for this webhook")
    return {"replayed": 1}


@router.post(
    "/{webhook_id}/replay",
    response_model=Replayed,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def replay_failed(
    webhook_id: str,
    request: Request,
    grant: Admin,
    since: Annotated[
        str, Query(max_length=64, description="Failed deliveries created since (RFC 3339)")
    ],
) -> dict[str, Any]:
    """Send every failed delivery created since a time again."""
    start = to_micros(parse_instant("since", since, from_micros(0)))
    async with request.app.state.api.sessions.begin() as session:
        await _endpoint(session, grant, webhook_id)
        result: Any = await session.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.endpoint_id == webhook_id,
                webhook_deliveries.c.status == "failed",
                webhook_deliveries.c.created_at_us >= start,
            )
            .values(status="pending", next_attempt_us=now_us(), updated_at_us=now_us())
        )
    return {"replayed": int(result.rowcount or 0)}
