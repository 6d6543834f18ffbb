"""The funnel's chart as SVG: with a read key, or through a share link without any header
(so that ``<img src>`` works in a wiki)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from services.api import repository, share_links
from services.api.admin_models import shown
from services.api.analysis_routes import From, To
from services.api.auth import Reader
from services.api.body import StrictJsonRoute
from services.api.chart import funnel_svg
from services.api.errors import declared, refuse
from services.api.funnels_routes import _require
from services.api.kept import kept_report, sessions
from services.api.limits import well_formed_id
from shared.funnel import CountMode
from shared.keys import now_us

router = APIRouter(tags=["charts"], route_class=StrictJsonRoute)
SVG = {
    "description": "An SVG picture.",
    "content": {"image/svg+xml": {"schema": {"type": "string"}}},
}
# The picture is a document of its own when opened directly: it may run nothing.
SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
SHARED_MAX_AGE_S = 60  # how long a browser or proxy may keep a shared chart


async def render(
    request: Request,
    row: repository.FunnelRow,
    from_: str | None,
    to: str | None,
    count: CountMode | None,
    last_days: int | None = None,
) -> str:
    mode = count or row.definition.get("count", "uniques")
    served = await kept_report(request, row, from_, to, mode, None, last_days=last_days)
    computed = served.computed
    subtitle = f"{computed.start.date()} to {computed.end.date()}, {mode}"
    value_property = row.definition.get("value_property")
    return funnel_svg(row.name, subtitle, computed.report.steps, value_property)


@router.get(
    "/v1/funnels/{funnel_id}/chart.svg",
    response_class=Response,  # no media type of its own: errors stay application/json
    responses={200: SVG, **declared(400, 401, 403, 404, 422, 503)},
)
async def chart(
    funnel_id: str,
    request: Request,
    grant: Reader,
    from_: From = None,
    to: To = None,
    count: CountMode | None = None,
) -> Response:
    """The funnel as an SVG picture: a bar per step with persons, rates, drop-off, value."""
    row = await _require(request, grant.project_id, funnel_id)
    svg = await render(request, row, from_, to, count)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


async def _link(request: Request, token: str) -> Any:
    link = None
    if well_formed_id(token) and token.startswith(share_links.TOKEN_PREFIX):
        async with sessions(request)() as session:
            link = await share_links.find_link(session, token)
    if link is None:
        refuse(404, "token", "no such share link")
    if link.revoked_at_us is not None:
        refuse(410, "token", f"this share link was revoked at {shown(link.revoked_at_us)}")
    if link.expires_at_us <= now_us():
        refuse(410, "token", f"this share link expired at {shown(link.expires_at_us)}")
    return link


@router.get(
    "/v1/shared/{token}/chart.svg",
    response_class=Response,
    responses={200: SVG, **declared(404, 410, 422, 503)},
)
async def shared_chart(token: str, request: Request) -> Response:
    """The chart a share link fixes (funnel, range, count), without any Authorization."""
    link = await _link(request, token)
    async with sessions(request)() as session:
        row = await repository.get_funnel(session, link.project_id, link.funnel_id)
    if row is None:  # deleted meanwhile (its links go with it)
        refuse(404, "token", "no such share link")
    from_, to = shown(link.from_us), shown(link.to_us)
    svg = await render(request, row, from_, to, link.count, last_days=link.last_days)
    headers = {**SVG_HEADERS, "Cache-Control": f"max-age={SHARED_MAX_AGE_S}"}
    return Response(svg, media_type="image/svg+xml", headers=headers)
