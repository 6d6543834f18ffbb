"""Routes for what is made of a funnel's reports: trends, the forecast, plans and diagnosis."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from services.api.body import StrictJsonRoute
from services.api.deps import Reader, ReportsDep, SessionDep, require_funnel
from services.api.errors import declared, refuse
from services.api.limits import check_cohorts, choose_breakdown
from services.api.reports.computation import cohort_reports_served, pipeline_served
from services.api.reports.diagnosis import diagnose
from services.api.reports.forecast import weighted_stages
from services.api.reports.plan import plan
from services.api.reports.python import StepReport, Window
from services.api.reports.trends import Cohort, Interval, cohort_bounds, cohorts
from services.api.responses.common import complete_to, funnel_ref
from services.api.responses.reports import Cohort as CohortOut
from services.api.responses.reports import (
    DiagnosisOut,
    ForecastOut,
    GroupSummary,
    PlanOut,
    PlanStep,
    Stage,
    Transition,
    TrendsOut,
)
from services.api.schemas import From, PlanIn, To
from shared.events import format_time, to_micros
from shared.funnel import CountMode

router = APIRouter(tags=["analysis"], route_class=StrictJsonRoute)
Count = CountMode | None


@router.get(
    "/v1/funnels/{funnel_id}/trends",
    response_model=TrendsOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def trends(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    from_: From = None,
    to: To = None,
    interval: Interval = "day",
    count: Count = None,
) -> TrendsOut:
    """Conversion per entry cohort (day, week or month in the funnel's time zone)."""
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    start, end, window = reports.range(from_, to)
    zone = ZoneInfo(funnel.row.definition.get("timezone") or "UTC")
    check_cohorts(start, end, interval)
    bounds = list(cohort_bounds(start, end, interval, zone))
    mode = funnel.mode(count)
    windows = [Window(to_micros(a), to_micros(b), window.now) for a, b in bounds]
    complete = await reports.complete_to_us(session)  # read before what it describes
    found, complete = await cohort_reports_served(
        session, funnel.row, funnel.definition, windows, mode, reports.replica, complete
    )
    return TrendsOut(
        funnel=funnel_ref(funnel.row),
        complete_to=complete_to(complete, funnel.row),
        interval=interval,
        timezone=str(zone),
        count=mode,
        cohorts=[_cohort_out(c) for c in cohorts(funnel.definition, bounds, found, window.now)],
    )


def _cohort_out(c: Cohort) -> CohortOut:
    entrances, conversions = c.steps[0].persons, c.steps[-1].persons
    return CohortOut(
        start=c.start.isoformat(),
        end=c.end.isoformat(),
        complete=c.complete,
        entrances=entrances,
        conversions=conversions,
        overall_conversion=conversions / entrances if entrances else None,
        persons=[s.persons for s in c.steps],
    )


@router.get(
    "/v1/funnels/{funnel_id}/forecast",
    response_model=ForecastOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def forecast(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    from_: From = None,
    to: To = None,
    count: Count = "totals",
) -> ForecastOut:
    """Weighted pipeline: value x win probability of the reached step, over open entries."""
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    definition = funnel.definition
    _, _, window = reports.range(from_, to)
    complete = await reports.complete_to_us(session)  # read before what it describes
    tally, complete = await pipeline_served(
        session, funnel.row, definition, window, count or "totals", reports.replica, complete
    )
    stages = weighted_stages(definition, tally)
    return ForecastOut(
        funnel=funnel_ref(funnel.row),
        complete_to=complete_to(complete, funnel.row),
        value_property=definition.value_property,
        weighted_value=sum(s.weighted_value for s in stages),
        open_value=sum(s.value for s in stages),
        open_entries=sum(s.open_entries for s in stages),
        stages=[Stage(**asdict(s)) for s in stages],
    )


@router.post(
    "/v1/funnels/{funnel_id}/plan",
    response_model=PlanOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 413, 422, 503),
)
async def make_plan(
    funnel_id: str, body: PlanIn, grant: Reader, session: SessionDep, reports: ReportsDep
) -> PlanOut:
    """Pipeline balance: entrances per period and persons per step needed for a goal."""
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    definition = funnel.definition
    served = await reports.serve(
        session, funnel.row, definition, body.from_, body.to, "uniques", None
    )
    measured = served.computed.report.steps
    rates, source = _rates(body, measured)
    try:
        result = plan(
            rates,
            body.period,
            target_conversions=body.target_conversions,
            target_value=body.target_value,
            average_value=_average_value(body, measured),
        )
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        refuse(422, {"rates": "step_rates", "target": "target_value"}.get(field, field), reason)
    if not all(math.isfinite(x) for x in (result.entrances_per_period, *result.persons_per_step)):
        refuse(422, "(body)", "the plan's numbers are too large to be finite; lower the target")
    return PlanOut(
        funnel=funnel_ref(funnel.row),
        complete_to=complete_to(served.complete_to_us, funnel.row),
        period=body.period,
        rates_source=source,
        step_rates=rates,
        **asdict(result),
        steps=[
            PlanStep(step=k + 1, name=s.name, persons_needed=result.persons_per_step[k])
            for k, s in enumerate(definition.steps)
        ],
    )


def _rates(body: PlanIn, measured: tuple[StepReport, ...]) -> tuple[list[float], str]:
    """The step rates to plan with, and where they come from."""
    n = len(measured)
    if body.step_rates is not None:
        if len(body.step_rates) != n - 1:
            refuse(422, "step_rates", f"need {n - 1} rates for {n} steps")
        return list(body.step_rates), "given"
    if body.overall_rate is not None:
        return [body.overall_rate] + [1.0] * (n - 2), "given overall"
    return [s.conversion_from_previous or 0.0 for s in measured[1:]], "measured"


def _average_value(body: PlanIn, measured: tuple[StepReport, ...]) -> float | None:
    """The average value of a conversion: given, else measured for a value target."""
    if body.average_value is not None or body.target_value is None:
        return body.average_value
    average = measured[-1].value_average
    if average is None:
        refuse(
            422,
            "average_value",
            "none given and none measured (no value property or no conversions)",
        )
    return average


@router.get(
    "/v1/funnels/{funnel_id}/diagnosis",
    response_model=DiagnosisOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def diagnosis(
    funnel_id: str,
    grant: Reader,
    session: SessionDep,
    reports: ReportsDep,
    from_: From = None,
    to: To = None,
    breakdown: Annotated[str | None, Query(max_length=200)] = None,
) -> DiagnosisOut:
    """Steps ranked by loss and by gap to target, the bottleneck, best and worst groups."""
    funnel = await require_funnel(session, grant.project_id, funnel_id)
    definition = funnel.definition
    prop = breakdown or (definition.breakdowns[0] if definition.breakdowns else None)
    chosen = choose_breakdown(definition, prop, "first_touch", 1, 1000) if prop else None
    served = await reports.serve(session, funnel.row, definition, from_, to, "uniques", chosen)
    computed = served.computed
    result = diagnose(definition, computed.report)
    best, worst = result.best_group, result.worst_group
    return DiagnosisOut(
        funnel=funnel_ref(funnel.row),
        complete_to=complete_to(served.complete_to_us, funnel.row),
        from_=format_time(computed.start),
        to=format_time(computed.end),
        bottleneck=Transition(**asdict(result.bottleneck)) if result.bottleneck else None,
        by_loss=[Transition(**asdict(t)) for t in result.by_loss],
        by_gap_to_target=[Transition(**asdict(t)) for t in result.by_gap],
        breakdown=prop,
        best_group=GroupSummary(**asdict(best)) if best else None,
        worst_group=GroupSummary(**asdict(worst)) if worst else None,
    )
