"""A funnel's report, as numbers (/v1/funnels/{id}/report) and as an SVG chart."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from services.api import metrics
from services.api.body import StrictJsonRoute
from services.api.chart import SVG, SVG_HEADERS, report_svg
from services.api.deps import Reader, ReportsDep, SessionDep, SettingsDep, require_funnel
from services.api.errors import declared
from services.api.limits import choose_breakdown
from services.api.reports.engine import Served
from services.api.reports.python import Breakdown, FunnelReport
from services.api.repository.funnels import FunnelRow
from services.api.responses.common import complete_to, funnel_ref, instant
from services.api.responses.reports import (
    BreakdownOut,
    GroupOut,
    ReportBackfill,
    ReportOut,
    ReportStep,
    StepReportOut,
)
from services.api.schemas import From, To
from shared.events import format_time
from shared.funnel import CountMode, FunnelDefinition

router = APIRouter(route_class=StrictJsonRoute)


@router.get(
    "/v1/funnels/{funnel_id}/report",
    tags=["funnels"],
    response_model=ReportOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def report(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    settings: SettingsDep,
    from_: From = None,
    to: To = None,
    count: CountMode | None = None,
    breakdown: Annotated[str | None, Query(max_length=200)] = None,
    attribution: Literal["first_touch", "last_touch", "step"] = "first_touch",
    step: Annotated[int, Query(ge=1, le=32)] = 1,
    cache_control: Annotated[str | None, Header(description="no-cache: compute anew")] = None,
) -> ReportOut:
    """Persons per step, conversion, drop-off, in progress and time between steps."""
    started = time.perf_counter()
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    row, definition = funnel.row, funnel.definition
    chosen = None
    if breakdown is not None:
        limit = settings.breakdown_limit
        chosen = choose_breakdown(definition, breakdown, attribution, step, limit)
    mode = funnel.mode(count)
    fresh = "no-cache" in (cache_control or "").lower()
    served = await reports.serve(session, row, definition, from_, to, mode, chosen, fresh=fresh)
    persons = None if row.backfill_done else await reports.project_persons(session, row.project_id)
    answer = _report_out(row, definition, served, mode, chosen, persons)
    metrics.REPORTS.labels(served.how).inc()
    metrics.REPORT_SECONDS.labels("report").observe(time.perf_counter() - started)
    return answer


def _report_out(
    row: FunnelRow,
    definition: FunnelDefinition,
    served: Served,
    mode: CountMode,
    chosen: Breakdown | None,
    persons_total: int | None,
) -> ReportOut:
    computed, result = served.computed, served.computed.report
    pairs = list(zip(result.steps, definition.steps, strict=True))
    steps = [
        ReportStep(**asdict(s), rate_name=d.rate_name, target_rate=d.target_rate) for s, d in pairs
    ]
    named = {d.rate_name: s.conversion_from_previous for s, d in pairs if d.rate_name}
    first, last = result.steps[0].persons, result.steps[-1].persons
    grouped = {} if chosen is None else {"breakdown": _breakdown_out(result, chosen)}
    return ReportOut(
        funnel=funnel_ref(row),
        from_=format_time(computed.start),
        to=format_time(computed.end),
        count=mode,
        computed_at=instant(computed.computed_at_us),
        complete_to=complete_to(served.complete_to_us, row),
        cached=served.how != "computed",
        stale=served.how == "stale",
        backfill=ReportBackfill(
            done=row.backfill_done, persons_done=row.backfill_persons, persons_total=persons_total
        ),
        steps=steps,
        named_rates=named,
        overall_conversion=last / first if first else None,
        **grouped,
    )


def _breakdown_out(result: FunnelReport, chosen: Breakdown) -> BreakdownOut:
    return BreakdownOut(
        property=chosen.property,
        attribution=chosen.attribution,
        step=chosen.step if chosen.attribution == "step" else None,
        groups=[
            GroupOut(value=g.value, steps=[StepReportOut(**asdict(s)) for s in g.steps])
            for g in result.groups
        ],
    )


@router.get(
    "/v1/funnels/{funnel_id}/chart.svg",
    tags=["charts"],
    response_class=Response,  # no media type of its own: errors stay application/json
    responses={200: SVG, **declared(400, 401, 403, 404, 422, 503)},
)
async def chart(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    from_: From = None,
    to: To = None,
    count: CountMode | None = None,
) -> Response:
    """The funnel as an SVG picture: a bar per step with persons, rates, drop-off, value."""
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    mode = funnel.mode(count)
    served = await reports.serve(session, funnel.row, funnel.definition, from_, to, mode, None)
    value_property = funnel.row.definition.get("value_property")
    svg = report_svg(funnel.row.name, value_property, served.computed, mode)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
