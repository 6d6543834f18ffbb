"""A funnel's report, as numbers (/v1/funnels/{id}/report) and as an SVG chart."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from services.api import metrics
from services.api.body import StrictJsonRoute
from services.api.chart import SVG, SVG_HEADERS, report_svg
from services.api.deps import Reader, ReportsDep, SessionDep, SettingsDep, require_funnel
from services.api.errors import declared, refuse
from services.api.limits import choose_breakdown
from services.api.reports.computation import counted_in_range
from services.api.reports.engine import Served
from services.api.reports.histogram import MAX_BINS, histogram, samples_s
from services.api.reports.python import Breakdown, FunnelReport
from services.api.repository.funnels import FunnelRow
from services.api.responses.common import complete_to, funnel_ref, instant
from services.api.responses.reports import (
    BinOut,
    BreakdownOut,
    ComparisonOut,
    GroupOut,
    ReportBackfill,
    ReportOut,
    ReportStep,
    StepReportOut,
    TimeToConvertOut,
)
from services.api.schemas import Filters, From, To, parse_filters
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
    breakdown: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Any event property.")
    ] = None,
    attribution: Literal["first_touch", "last_touch", "step", "all_events"] = "first_touch",
    step: Annotated[int, Query(ge=1, le=32)] = 1,
    filters: Filters = None,
    cache_control: Annotated[str | None, Header(description="no-cache: compute anew")] = None,
) -> ReportOut:
    """Persons per step, conversion, drop-off, in progress and time between steps; by
    breakdown group, each group compared with the rest."""
    started = time.perf_counter()
    conditions = parse_filters(filters)
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    row, definition = funnel.row, funnel.definition
    chosen = None
    if breakdown is not None:
        limit = settings.breakdown_limit
        chosen = choose_breakdown(definition, breakdown, attribution, step, limit)
    mode = funnel.mode(count)
    fresh = "no-cache" in (cache_control or "").lower()
    served = await reports.serve(
        session, row, definition, from_, to, mode, chosen, fresh=fresh, filters=conditions
    )
    persons = None if row.backfill_done else await reports.project_persons(session, row.project_id)
    answer = _report_out(row, definition, served, mode, chosen, persons)
    if conditions:
        answer.filters = [asdict(c) for c in conditions]
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
            GroupOut(
                value=g.value,
                steps=[StepReportOut(**asdict(s)) for s in g.steps],
                comparison=ComparisonOut(**asdict(g.comparison)) if g.comparison else None,
            )
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


@router.get(
    "/v1/funnels/{funnel_id}/time-to-convert",
    tags=["funnels"],
    response_model=TimeToConvertOut,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def time_to_convert(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    from_: From = None,
    to: To = None,
    count: CountMode | None = None,
    from_step: Annotated[int, Query(ge=1, le=32)] = 1,
    to_step: Annotated[int | None, Query(ge=2, le=32, description="Default: the last.")] = None,
    bins: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="A number of bins (1-90), or ascending edges in seconds: 0,60,3600.",
        ),
    ] = None,
    filters: Filters = None,
) -> TimeToConvertOut:
    """How long the counted persons took from one step to a later one, as a histogram."""
    conditions = parse_filters(filters)
    chosen_bins = parse_bins(bins)
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    row, definition = funnel.row, funnel.definition
    last = to_step or len(definition.steps)
    if last > len(definition.steps):
        refuse(400, "to_step", f"the funnel has {len(definition.steps)} steps")
    if from_step >= last:
        refuse(400, "from_step", "must be before to_step")
    mode = funnel.mode(count)
    start, end, window = reports.range(from_, to)
    complete = await reports.complete_to_us(session)
    counted = await counted_in_range(
        session, (row.project_id, row.id), definition, window, mode, conditions
    )
    found = histogram(samples_s(counted, from_step, last), chosen_bins)
    return TimeToConvertOut(
        funnel=funnel_ref(row),
        complete_to=complete_to(complete, row),
        from_=format_time(start),
        to=format_time(end),
        count=mode,
        from_step=from_step,
        to_step=last,
        conversions=found.conversions,
        mean_s=found.mean_s,
        median_s=found.median_s,
        bins=[BinOut(**asdict(b)) for b in found.bins],
    )


def parse_bins(text: str | None) -> int | list[float] | None:
    """``bins``: a number of bins, or two or more ascending edges (400 naming ``bins``)."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        refuse(400, "bins", "a number of bins or comma-separated edges in seconds")
    if len(parts) == 1:
        if not parts[0].is_integer() or not 1 <= parts[0] <= MAX_BINS:
            refuse(400, "bins", f"a number of bins must be a whole number from 1 to {MAX_BINS}")
        return int(parts[0])
    if not all(math.isfinite(p) for p in parts) or len(parts) > MAX_BINS + 1:
        refuse(400, "bins", f"at most {MAX_BINS + 1} finite edges")
    if any(b <= a for a, b in itertools.pairwise(parts)):
        refuse(400, "bins", "edges must ascend")
    return parts
