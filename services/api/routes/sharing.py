"""Share links: public, expiring, revocable links to a funnel's chart, made and managed with
the project's admin key under /v1/share-links, and the chart they serve without any header
(so that ``<img src>`` works in a wiki)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.api.body import StrictJsonRoute
from services.api.chart import SVG, SVG_HEADERS, report_svg
from services.api.deps import Admin, ClockDep, FoundFunnel, ReportsDep, SessionDep, SettingsDep
from services.api.errors import declared, refuse
from services.api.limits import bounded_range, well_formed_id
from services.api.repository import Session, funnels, share_links
from services.api.repository.share_links import LinkSpec, ShareLinkRow
from services.api.responses.admin import NewShareLink, ShareLinkList, ShareLinkOut
from services.api.responses.common import instant, shown
from services.api.schemas import ShareLinkIn
from services.api.settings import ApiSettings
from shared.clock import US
from shared.events import from_micros, to_micros

router = APIRouter(route_class=StrictJsonRoute)
LINKS = "/v1/share-links"
SHARED_MAX_AGE_S = 60  # how long a browser or proxy may keep a shared chart


def link_out(row: ShareLinkRow, now_us: int) -> ShareLinkOut:
    return ShareLinkOut.model_validate(_link_fields(row, now_us))


def _link_fields(row: ShareLinkRow, now_us: int) -> dict[str, object]:
    return {
        "id": row.id,
        "funnel_id": row.funnel_id,
        "prefix": row.prefix,
        "name": row.name,
        "last_days": row.last_days,
        "from": shown(row.from_us),
        "to": shown(row.to_us),
        "count": row.count,
        "created_at": instant(row.created_at_us),
        "expires_at": instant(row.expires_at_us),
        "revoked_at": shown(row.revoked_at_us),
        "active": row.revoked_at_us is None and row.expires_at_us > now_us,
    }


def _spec(settings: ApiSettings, body: ShareLinkIn, now_us: int) -> LinkSpec:
    """What the link will show, its fixed range checked now as a report's would be."""
    from_us = to_us = None
    if body.from_ is not None:
        start, end = bounded_range(
            body.from_,
            body.to,
            now=from_micros(now_us),
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
        expires_at_us=now_us + body.expires_in_seconds * US,
    )


@router.post(
    LINKS,
    tags=["share links"],
    status_code=201,
    response_model=NewShareLink,
    responses=declared(400, 401, 403, 413, 422, 503),
)
async def create_share_link(
    body: ShareLinkIn,
    request: Request,
    grant: Admin,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> NewShareLink:
    """A link that serves the funnel's chart without a key until it expires or is revoked;
    the answer is the only time its token is shown."""
    now = clock.now_us()
    spec = _spec(settings, body, now)
    if not well_formed_id(body.funnel_id) or not await funnels.has_funnel(
        session, grant.project_id, body.funnel_id
    ):
        refuse(422, "funnel_id", f"no funnel {body.funnel_id!r} in this project")
    row, token = await share_links.create_link(session, grant.project_id, spec, now_us=now)
    await session.commit()
    path = f"/v1/shared/{token}/chart.svg"
    url = str(request.base_url).rstrip("/") + path
    return NewShareLink.model_validate(
        {**_link_fields(row, now), "token": token, "path": path, "url": url}
    )


@router.get(
    LINKS,
    tags=["share links"],
    response_model=ShareLinkList,
    responses=declared(401, 403, 422, 503),
)
async def list_share_links(
    grant: Admin,
    session: SessionDep,
    clock: ClockDep,
    funnel_id: Annotated[
        str | None, Query(max_length=100, description="Only this funnel's.")
    ] = None,
) -> ShareLinkList:
    """The project's share links, revoked and expired ones too (never their tokens)."""
    if funnel_id is not None and not well_formed_id(funnel_id):
        return ShareLinkList(share_links=[])  # no funnel has that id
    rows = await share_links.list_links(session, grant.project_id, funnel_id)
    now = clock.now_us()
    return ShareLinkList(share_links=[link_out(r, now) for r in rows])


@router.delete(
    LINKS + "/{link_id}",
    tags=["share links"],
    response_model=ShareLinkOut,
    responses=declared(401, 403, 404, 422, 503),
)
async def revoke_share_link(
    link_id: str, grant: Admin, session: SessionDep, clock: ClockDep
) -> ShareLinkOut:
    """Revoke a link: its chart answers 410 from now on (browsers may keep a copy for up to
    60 s). Revoking a revoked link changes nothing."""
    now = clock.now_us()
    row = None
    if well_formed_id(link_id):
        row = await share_links.revoke_link(session, grant.project_id, link_id, now_us=now)
        await session.commit()
    if row is None:
        refuse(404, "link_id", f"no share link {link_id!r} in this project")
    return link_out(row, now)


async def _link(session: Session, token: str, now_us: int) -> ShareLinkRow:
    link = None
    if well_formed_id(token) and token.startswith(share_links.TOKEN_PREFIX):
        link = await share_links.find_link(session, token)
    if link is None:
        refuse(404, "token", "no such share link")
    if link.revoked_at_us is not None:
        refuse(410, "token", f"this share link was revoked at {instant(link.revoked_at_us)}")
    if link.expires_at_us <= now_us:
        refuse(410, "token", f"this share link expired at {instant(link.expires_at_us)}")
    return link


@router.get(
    "/v1/shared/{token}/chart.svg",
    tags=["charts"],
    response_class=Response,
    responses={200: SVG, **declared(404, 410, 422, 503)},
)
async def shared_chart(
    token: str, session: SessionDep, reports: ReportsDep, clock: ClockDep
) -> Response:
    """The chart a share link fixes (funnel, range, count), without any Authorization."""
    link = await _link(session, token, clock.now_us())
    row = await funnels.get_funnel(session, link.project_id, link.funnel_id)
    if row is None:  # deleted meanwhile (its links go with it)
        refuse(404, "token", "no such share link")
    funnel = FoundFunnel(row)
    mode = funnel.mode(link.count)
    served = await reports.serve(
        session,
        row,
        funnel.definition,
        shown(link.from_us),
        shown(link.to_us),
        mode,
        None,
        last_days=link.last_days,
    )
    value_property = row.definition.get("value_property")
    svg = report_svg(row.name, value_property, served.computed, mode)
    headers = {**SVG_HEADERS, "Cache-Control": f"max-age={SHARED_MAX_AGE_S}"}
    return Response(svg, media_type="image/svg+xml", headers=headers)
