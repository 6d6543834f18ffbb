"""Routes for /v1/share-links: public, expiring, revocable links to a funnel's chart, made
and managed with the project's admin key (the chart itself: chart_routes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.api import repository, share_links
from services.api.admin_models import (
    NewShareLink,
    ShareLinkIn,
    ShareLinkList,
    ShareLinkOut,
    shown,
)
from services.api.auth import Admin
from services.api.body import StrictJsonRoute
from services.api.errors import declared, refuse
from services.api.kept import sessions
from services.api.limits import bounded_range, well_formed_id
from services.api.share_links import LinkSpec, ShareLinkRow
from shared.events import to_micros
from shared.keys import now_us

router = APIRouter(prefix="/v1/share-links", tags=["share links"], route_class=StrictJsonRoute)


def link_view(row: ShareLinkRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "funnel_id": row.funnel_id,
        "prefix": row.prefix,
        "name": row.name,
        "last_days": row.last_days,
        "from": shown(row.from_us),
        "to": shown(row.to_us),
        "count": row.count,
        "created_at": shown(row.created_at_us),
        "expires_at": shown(row.expires_at_us),
        "revoked_at": shown(row.revoked_at_us),
        "active": row.revoked_at_us is None and row.expires_at_us > now_us(),
    }


def _spec(request: Request, body: ShareLinkIn) -> LinkSpec:
    """What the link will show, its fixed range checked now as a report's would be."""
    settings = request.app.state.api.settings
    from_us = to_us = None
    if body.from_ is not None:
        start, end = bounded_range(
            body.from_,
            body.to,
            now=datetime.now(UTC),
            default_days=settings.default_range_days,
            max_days=settings.max_range_days,
        )
        from_us, to_us = to_micros(start), (to_micros(end) if body.to is not None else None)
    elif body.last_days is not None and body.last_days > settings.max_range_days:
        refuse(400, "last_days", f"the range may span at most {settings.max_range_days:,} days")
    return LinkSpec(
        funnel_id=body.funnel_id,
        name=body.name,
        last_days=None if body.from_ is not None else body.last_days or settings.default_range_days,
        from_us=from_us,
        to_us=to_us,
        count=body.count,
        expires_at_us=now_us() + body.expires_in_seconds * 1_000_000,
    )


@router.post(
    "",
    status_code=201,
    response_model=NewShareLink,
    responses=declared(400, 401, 403, 413, 422, 503),
)
async def create_share_link(body: ShareLinkIn, request: Request, grant: Admin) -> dict[str, Any]:
    """A link that serves the funnel's chart without a key until it expires or is revoked;
    the answer is the only time its token is shown."""
    spec = _spec(request, body)
    async with sessions(request).begin() as session:
        funnel = None
        if well_formed_id(body.funnel_id):
            funnel = await repository.get_funnel(session, grant.project_id, body.funnel_id)
        if funnel is None:
            refuse(422, "funnel_id", f"no funnel {body.funnel_id!r} in this project")
        row, token = await share_links.create_link(session, grant.project_id, spec)
    path = f"/v1/shared/{token}/chart.svg"
    url = str(request.base_url).rstrip("/") + path
    return {**link_view(row), "token": token, "path": path, "url": url}


@router.get("", response_model=ShareLinkList, responses=declared(401, 403, 422, 503))
async def list_share_links(
    request: Request,
    grant: Admin,
    funnel_id: Annotated[
        str | None, Query(max_length=100, description="Only this funnel's.")
    ] = None,
) -> dict[str, Any]:
    """The project's share links, revoked and expired ones too (never their tokens)."""
    if funnel_id is not None and not well_formed_id(funnel_id):
        return {"share_links": []}  # no funnel has that id
    async with sessions(request)() as session:
        rows = await share_links.list_links(session, grant.project_id, funnel_id)
    return {"share_links": [link_view(r) for r in rows]}


@router.delete(
    "/{link_id}", response_model=ShareLinkOut, responses=declared(401, 403, 404, 422, 503)
)
async def revoke_share_link(link_id: str, request: Request, grant: Admin) -> dict[str, Any]:
    """Revoke a link: its chart answers 410 from now on (browsers may keep a copy for up to
    60 s). Revoking a revoked link changes nothing."""
    row = None
    if well_formed_id(link_id):
        async with sessions(request).begin() as session:
            row = await share_links.revoke_link(session, grant.project_id, link_id)
    if row is None:
        refuse(404, "link_id", f"no share link {link_id!r} in this project")
    return link_view(row)
