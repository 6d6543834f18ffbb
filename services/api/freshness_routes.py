"""GET /v1/freshness: how far the aggregator has got (see :mod:`services.api.freshness`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.api.admin_models import FreshnessOut, shown
from services.api.auth import Observer
from services.api.body import StrictJsonRoute
from services.api.errors import declared
from services.api.freshness import Freshness, read_freshness
from services.api.kept import sessions
from services.api.limits import EARLIEST, parse_instant
from shared.events import to_micros
from shared.keys import now_us

router = APIRouter(tags=["freshness"], route_class=StrictJsonRoute)


def _seconds(since_us: int | None, now: int) -> float | None:
    return None if since_us is None else max(now - since_us, 0) / 1_000_000


def freshness_view(found: Freshness, now: int) -> dict[str, Any]:
    return {
        "complete_to": shown(found.complete_to_us),
        "lag_records": found.lag_records,
        "lag_seconds": _seconds(found.complete_to_us, now),
        "checked_at": shown(now),
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "lag_records": p.lag_records,
                "complete_to": shown(p.complete_to_us),
                "lag_seconds": _seconds(p.complete_to_us, now),
                "observed_at": shown(p.observed_at_us),
            }
            for p in found.partitions
        ],
    }


@router.get(
    "/v1/freshness",
    response_model=FreshnessOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 422, 503),
)
async def freshness(
    request: Request,
    _grant: Observer,
    sent: Annotated[
        str | None,
        Query(max_length=64, description="An instant (RFC 3339): is all sent before it counted?"),
    ] = None,
) -> dict[str, Any]:
    """The aggregator's lag per partition, and ``complete_to``: every event ingest
    acknowledged before it is counted in every report (a lower bound; it stops advancing
    while the aggregator is down)."""
    instant = None if sent is None else to_micros(parse_instant("sent", sent, EARLIEST))
    group = request.app.state.api.settings.aggregator_group_id
    async with sessions(request)() as session:
        found = await read_freshness(session, group)
    body = freshness_view(found, now_us())
    if instant is not None:
        body["counted"] = found.complete_to_us is not None and found.complete_to_us >= instant
    return body
