"""Routes for templates, trends, forecast, plans and diagnosis."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request

from services.api import analysis, repository
from services.api.analysis import Interval
from services.api.auth import Admin, Reader
from services.api.body import StrictJsonRoute
from services.api.errors import declared, refuse
from services.api.funnels_routes import _require, _view, choose_breakdown, stamp_rules, validated
from services.api.kept import complete_to, group_complete_to, kept_report, report_range
from services.api.limits import check_cohorts
from services.api.report import Window
from services.api.reporting import cohort_reports, pipeline
from services.api.response_models import (
    DiagnosisOut,
    ForecastOut,
    FunnelOut,
    PlanOut,
    TemplateList,
    TrendsOut,
)
from services.api.schemas import FromTemplate, PlanIn
from services.api.templates import TEMPLATES, template_definition
from shared.events import format_time, to_micros
from shared.funnel import CountMode, definition_from_doc

router = APIRouter(tags=["analysis"], route_class=StrictJsonRoute)
From = Annotated[str | None, Query(alias="from", max_length=64, description="Entries from (incl.)")]
To = Annotated[str | None, Query(max_length=64, description="Entries until (excl.); default now")]
Count = CountMode | None


@router.get(
    "/v1/funnel-templates",
    response_model=TemplateList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_templates(_grant: Reader) -> dict[str, Any]:
    """The ready funnel models, with the re-marketing rules they propose."""
    return {
        "templates": [
            {
                "id": tid,
                "title": t["title"],
                "description": t["description"],
                **template_definition(tid),
            }
            for tid, t in TEMPLATES.items()
        ]
    }


@router.post(
    "/v1/funnels/from-template",
    status_code=201,
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_from_template(
    body: FromTemplate, request: Request, grant: Admin
) -> dict[str, Any]:
    doc = template_definition(body.template)
    if body.events is not None:
        if len(body.events) != len(doc["steps"]):
            refuse(422, "events", f"the template has {len(doc['steps'])} steps")
        for step, event in zip(doc["steps"], body.events, strict=True):
            step["event"] = event or step["event"]
    overrides = body.model_dump(exclude_unset=True, exclude={"events"})
    definition = validated({**doc, **overrides})
    stamp_rules(definition, previous=None)
    async with request.app.state.api.sessions.begin() as session:
        funnel_id = await repository.create_funnel(session, grant.project_id, definition)
    return _view(await _require(request, grant.project_id, funnel_id))


@router.get(
    "/v1/funnels/{funnel_id}/trends",
    response_model=TrendsOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def trends(
    funnel_id: str,
    request: Request,
    grant: Reader,
    from_: From = None,
    to: To = None,
    interval: Interval = "day",
    count: Count = None,
) -> dict[str, Any]:
    """Conversion per entry cohort (day, week or month in the funnel's time zone)."""
    row = await _require(request, grant.project_id, funnel_id)
    definition = definition_from_doc(row.definition)
    start, end, window = report_range(request, from_, to)
    zone = ZoneInfo(row.definition.get("timezone") or "UTC")
    check_cohorts(start, end, interval)
    bounds = list(analysis.cohort_bounds(start, end, interval, zone))
    mode = count or row.definition.get("count", "uniques")
    windows = [Window(to_micros(a), to_micros(b), window.now) for a, b in bounds]
    async with request.app.state.api.sessions() as session:
        complete = await group_complete_to(request, session)  # read before what it describes
        reports = await cohort_reports(session, funnel_id, definition, windows, mode)
    cohorts = analysis.trends(definition, bounds, reports, window.now)
    return {
        "funnel": {"id": row.id, "name": row.name},
        "complete_to": complete_to(complete, row),
        "interval": interval,
        "timezone": str(zone),
        "count": mode,
        "cohorts": [
            {
                "start": c.start.isoformat(),
                "end": c.end.isoformat(),
                "complete": c.complete,
                "entrances": c.steps[0].persons,
                "conversions": c.steps[-1].persons,
                "overall_conversion": (
                    c.steps[-1].persons / c.steps[0].persons if c.steps[0].persons else None
                ),
                "persons": [s.persons for s in c.steps],
            }
            for c in cohorts
        ],
    }


@router.get(
    "/v1/funnels/{funnel_id}/forecast",
    response_model=ForecastOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def forecast(
    funnel_id: str,
    request: Request,
    grant: Reader,
    from_: From = None,
    to: To = None,
    count: Count = "totals",
) -> dict[str, Any]:
    """Weighted pipeline: value x win probability of the reached step, over open entries."""
    row = await _require(request, grant.project_id, funnel_id)
    definition = definition_from_doc(row.definition)
    _, _, window = report_range(request, from_, to)
    async with request.app.state.api.sessions() as session:
        complete = await group_complete_to(request, session)  # read before what it describes
        tally = await pipeline(session, funnel_id, definition, window, count or "totals")
    stages = analysis.forecast(definition, tally)
    return {
        "funnel": {"id": row.id, "name": row.name},
        "complete_to": complete_to(complete, row),
        "value_property": definition.value_property,
        "weighted_value": sum(s.weighted_value for s in stages),
        "open_value": sum(s.value for s in stages),
        "open_entries": sum(s.open_entries for s in stages),
        "stages": [asdict(s) for s in stages],
    }


@router.post(
    "/v1/funnels/{funnel_id}/plan",
    response_model=PlanOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 413, 422, 503),
)
async def make_plan(
    funnel_id: str, body: PlanIn, request: Request, grant: Reader
) -> dict[str, Any]:
    """Pipeline balance: entrances per period and persons per step needed for a goal."""
    row = await _require(request, grant.project_id, funnel_id)
    definition = definition_from_doc(row.definition)
    n = len(definition.steps)
    served = await kept_report(request, row, body.from_, body.to, "uniques", None)
    measured = served.computed.report.steps
    if body.step_rates is not None:
        if len(body.step_rates) != n - 1:
            refuse(422, "step_rates", f"need {n - 1} rates for {n} steps")
        rates, source = list(body.step_rates), "given"
    elif body.overall_rate is not None:
        rates, source = [body.overall_rate] + [1.0] * (n - 2), "given overall"
    else:
        rates = [s.conversion_from_previous or 0.0 for s in measured[1:]]
        source = "measured"
    average = body.average_value
    if average is None and body.target_value is not None:
        average = measured[-1].value_average
        if average is None:
            refuse(
                422,
                "average_value",
                "none given and none measured (no value property or no conversions)",
            )
    try:
        result = analysis.plan(
            rates,
            body.period,
            target_conversions=body.target_conversions,
            target_value=body.target_value,
            average_value=average,
        )
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        refuse(422, {"rates": "step_rates", "target": "target_value"}.get(field, field), reason)
    if not all(math.isfinite(x) for x in (result.entrances_per_period, *result.persons_per_step)):
        refuse(422, "(body)", "the plan's numbers are too large to be finite; lower the target")
    return {
        "funnel": {"id": row.id, "name": row.name},
        "complete_to": complete_to(served.complete_to_us, row),
        "period": body.period,
        "rates_source": source,
        "step_rates": rates,
        **asdict(result),
        "steps": [
            {"step": k + 1, "name": s.name, "persons_needed": result.persons_per_step[k]}
            for k, s in enumerate(definition.steps)
        ],
    }


@router.get(
    "/v1/funnels/{funnel_id}/diagnosis",
    response_model=DiagnosisOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def diagnosis(
    funnel_id: str,
    request: Request,
    grant: Reader,
    from_: From = None,
    to: To = None,
    breakdown: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Steps ranked by loss and by gap to target, the bottleneck, best and worst groups."""
    row = await _require(request, grant.project_id, funnel_id)
    definition = definition_from_doc(row.definition)
    prop = breakdown or (definition.breakdowns[0] if definition.breakdowns else None)
    chosen = choose_breakdown(definition, prop, "first_touch", 1, 1000) if prop else None
    served = await kept_report(request, row, from_, to, "uniques", chosen)
    computed = served.computed
    result = analysis.diagnose(definition, computed.report)
    return {
        "funnel": {"id": row.id, "name": row.name},
        "complete_to": complete_to(served.complete_to_us, row),
        "from": format_time(computed.start),
        "to": format_time(computed.end),
        "bottleneck": asdict(result.bottleneck) if result.bottleneck else None,
        "by_loss": [asdict(t) for t in result.by_loss],
        "by_gap_to_target": [asdict(t) for t in result.by_gap],
        "breakdown": prop,
        "best_group": asdict(result.best_group) if result.best_group else None,
        "worst_group": asdict(result.worst_group) if result.worst_group else None,
    }
