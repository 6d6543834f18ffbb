"""GET /v1/freshness: how far the aggregator has got (see :mod:`services.api.freshness`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.body import StrictJsonRoute
from services.api.deps import ClockDep, Observer, SessionDep, SettingsDep
from services.api.errors import declared
from services.api.freshness import Freshness, derive
from services.api.limits import EARLIEST, parse_instant
from services.api.repository import freshness as progress
from services.api.responses.admin import FreshnessOut, PartitionFreshnessOut
from services.api.responses.common import instant, shown
from shared.clock import US
from shared.events import to_micros

router = APIRouter(tags=["freshness"], route_class=StrictJsonRoute)


def _seconds(since_us: int | None, now: int) -> float | None:
    return None if since_us is None else max(now - since_us, 0) / US


def freshness_out(found: Freshness, now: int, sent_us: int | None = None) -> FreshnessOut:
    """What the aggregator's progress says; with ``sent_us``, whether all sent before it is
    counted."""
    counted = {}
    if sent_us is not None:
        counted["counted"] = found.complete_to_us is not None and found.complete_to_us >= sent_us
    return FreshnessOut(
        complete_to=shown(found.complete_to_us),
        lag_records=found.lag_records,
        lag_seconds=_seconds(found.complete_to_us, now),
        checked_at=instant(now),
        partitions=[
            PartitionFreshnessOut(
                topic=p.topic,
                partition=p.partition,
                lag_records=p.lag_records,
                complete_to=shown(p.complete_to_us),
                lag_seconds=_seconds(p.complete_to_us, now),
                observed_at=shown(p.observed_at_us),
            )
            for p in found.partitions
        ],
        **counted,
    )


@router.get(
    "/v1/freshness",
    response_model=FreshnessOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 422, 503),
)
async def freshness(
    _grant: Observer,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    sent: Annotated[
        str | None,
        Query(max_length=64, description="An instant (RFC 3339): is all sent before it counted?"),
    ] = None,
) -> FreshnessOut:
    """The aggregator's lag per partition, and ``complete_to``: every event ingest
    acknowledged before it is counted in every report (a lower bound; it stops advancing
    while the aggregator is down)."""
    sent_us = None if sent is None else to_micros(parse_instant("sent", sent, EARLIEST))
    found = derive(await progress.partition_states(session, settings.aggregator_group_id))
    return freshness_out(found, clock.now_us(), sent_us)
