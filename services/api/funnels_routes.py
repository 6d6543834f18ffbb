"""Routes for /v1/funnels: create, read, change, delete, and the report."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.api import metrics, repository
from services.api.auth import Admin, Reader
from services.api.body import StrictJsonRoute
from services.api.errors import declared, refuse
from services.api.kept import complete_to, kept_report, project_persons, sessions
from services.api.limits import well_formed_id
from services.api.report import Breakdown, FunnelReport
from services.api.response_models import FunnelList, FunnelOut, ReportOut
from services.api.schemas import FunnelIn, FunnelPatch
from shared.events import format_time, from_micros
from shared.funnel import CountMode, FunnelDefinition, definition_from_doc
from shared.keys import now_us

router = APIRouter(prefix="/v1/funnels", tags=["funnels"], route_class=StrictJsonRoute)
# Fields whose change alters counting, so stored progress must be recomputed.
COUNTING_FIELDS = (
    "steps",
    "window_seconds",
    "order",
    "exclusions",
    "breakdowns",
    "value_property",
    "remarketing",
)


def _view(row: repository.FunnelRow) -> dict[str, Any]:
    return {
        "id": row.id,
        **row.definition,
        "version": row.version,
        "created_at": format_time(from_micros(row.created_at_us)),
        "updated_at": format_time(from_micros(row.updated_at_us)),
        "backfill": {"done": row.backfill_done, "persons": row.backfill_persons},
    }


async def _require(request: Request, project_id: str, funnel_id: str) -> repository.FunnelRow:
    row = None
    if well_formed_id(funnel_id):
        async with sessions(request)() as session:
            row = await repository.get_funnel(session, project_id, funnel_id)
    if row is None:
        refuse(404, "funnel_id", f"no funnel {funnel_id!r} in this project")
    return row


@router.post(
    "",
    status_code=201,
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_funnel(body: FunnelIn, request: Request, grant: Admin) -> dict[str, Any]:
    """Define a funnel; its history is backfilled from stored events."""
    definition = stamp_rules(body.model_dump(), previous=None)
    async with sessions(request).begin() as session:
        funnel_id = await repository.create_funnel(session, grant.project_id, definition)
    return _view(await _require(request, grant.project_id, funnel_id))


@router.get(
    "",
    response_model=FunnelList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_funnels(request: Request, grant: Reader) -> dict[str, Any]:
    async with sessions(request)() as session:
        rows = await repository.list_funnels(session, grant.project_id)
    return {"funnels": [_view(r) for r in rows]}


@router.get(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def get_funnel(funnel_id: str, request: Request, grant: Reader) -> dict[str, Any]:
    return _view(await _require(request, grant.project_id, funnel_id))


@router.put(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def replace_funnel(
    funnel_id: str, body: FunnelIn, request: Request, grant: Admin
) -> dict[str, Any]:
    return await _change(request, grant.project_id, funnel_id, body.model_dump())


@router.patch(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def patch_funnel(
    funnel_id: str, body: FunnelPatch, request: Request, grant: Admin
) -> dict[str, Any]:
    current = await _require(request, grant.project_id, funnel_id)
    merged = {**current.definition, **body.model_dump(exclude_unset=True)}
    definition = validated(merged)
    return await _change(request, grant.project_id, funnel_id, definition)


async def _change(
    request: Request, project_id: str, funnel_id: str, definition: dict[str, Any]
) -> dict[str, Any]:
    current = await _require(request, project_id, funnel_id)
    definition = stamp_rules(definition, previous=current.definition)
    recount = any(current.definition.get(f) != definition.get(f) for f in COUNTING_FIELDS)
    async with sessions(request).begin() as session:
        if recount:
            await repository.redefine_funnel(session, funnel_id, definition)
        else:
            await repository.rename_funnel(session, funnel_id, definition)
    return _view(await _require(request, project_id, funnel_id))


@router.delete("/{funnel_id}", status_code=204, responses=declared(401, 403, 404, 422, 503))
async def delete_funnel(funnel_id: str, request: Request, grant: Admin) -> Response:
    await _require(request, grant.project_id, funnel_id)
    async with sessions(request).begin() as session:
        await repository.delete_funnel(session, funnel_id)
    return Response(status_code=204)


def validated(doc: dict[str, Any]) -> dict[str, Any]:
    """A definition assembled by the service (a patch on the stored one, a template with
    overrides) checked as a request body is, its errors named as body fields."""
    try:
        return FunnelIn.model_validate(doc).model_dump()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def stamp_rules(definition: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Record when each re-marketing rule first existed (kept across edits, by name).

    Timers due before their rule existed come from replayed history and are not fired.
    """
    known = {r["name"]: r.get("created_at_us") for r in (previous or {}).get("remarketing", [])}
    for rule in definition.get("remarketing") or []:
        rule["created_at_us"] = known.get(rule["name"]) or now_us()
    return definition


@router.get(
    "/{funnel_id}/report",
    response_model=ReportOut,
    response_model_exclude_unset=True,
    responses=declared(400, 401, 403, 404, 422, 503),
)
async def report(
    funnel_id: str,
    request: Request,
    grant: Reader,
    from_: Annotated[
        str | None, Query(alias="from", max_length=64, description="Entries from (incl.)")
    ] = None,
    to: Annotated[
        str | None, Query(max_length=64, description="Entries until (excl.); default now")
    ] = None,
    count: CountMode | None = None,
    breakdown: Annotated[str | None, Query(max_length=200)] = None,
    attribution: Literal["first_touch", "last_touch", "step"] = "first_touch",
    step: Annotated[int, Query(ge=1, le=32)] = 1,
    cache_control: Annotated[str | None, Header(description="no-cache: compute anew")] = None,
) -> dict[str, Any]:
    """Persons per step, conversion, drop-off, in progress and time between steps."""
    started = time.perf_counter()
    row = await _require(request, grant.project_id, funnel_id)
    definition = definition_from_doc(row.definition)
    chosen = None
    if breakdown is not None:
        limit = request.app.state.api.settings.breakdown_limit
        chosen = choose_breakdown(definition, breakdown, attribution, step, limit)
    mode = count or row.definition.get("count", "uniques")
    fresh = "no-cache" in (cache_control or "").lower()
    served = await kept_report(request, row, from_, to, mode, chosen, fresh=fresh)
    computed = served.computed
    persons = None if row.backfill_done else await project_persons(request, grant.project_id)
    body = {
        "funnel": {"id": row.id, "name": row.name},
        "from": format_time(computed.start),
        "to": format_time(computed.end),
        "count": mode,
        "computed_at": format_time(from_micros(computed.computed_at_us)),
        "complete_to": complete_to(served.complete_to_us, row),
        "cached": served.how != "computed",
        "stale": served.how == "stale",
        "backfill": {
            "done": row.backfill_done,
            "persons_done": row.backfill_persons,
            "persons_total": persons,
        },
        **_report_body(computed.report, chosen, definition),
    }
    metrics.REPORTS.labels(served.how).inc()
    metrics.REPORT_SECONDS.labels("report").observe(time.perf_counter() - started)
    return body


def choose_breakdown(
    definition: FunnelDefinition, prop: str, attribution: Any, step: int, limit: int
) -> Breakdown:
    if attribution == "step":
        if prop not in definition.tracked_properties:
            refuse(400, "breakdown", f"{prop!r} is not tracked by the funnel")
    elif prop not in definition.breakdowns:
        refuse(400, "breakdown", f"{prop!r} is not among the funnel's breakdowns")
    if step > len(definition.steps):
        refuse(400, "step", f"the funnel has {len(definition.steps)} steps")
    return Breakdown(prop, attribution, step, limit)


def _report_body(
    result: FunnelReport, chosen: Breakdown | None, definition: FunnelDefinition
) -> dict[str, Any]:
    body: dict[str, Any] = {"steps": [asdict(s) for s in result.steps]}
    named = {}
    for shown, step, computed in zip(body["steps"], definition.steps, result.steps, strict=True):
        shown["rate_name"] = step.rate_name
        shown["target_rate"] = step.target_rate
        if step.rate_name:
            named[step.rate_name] = computed.conversion_from_previous
    body["named_rates"] = named
    first, last = result.steps[0].persons, result.steps[-1].persons
    body["overall_conversion"] = last / first if first else None
    if chosen is not None:
        body["breakdown"] = {
            "property": chosen.property,
            "attribution": chosen.attribution,
            "step": chosen.step if chosen.attribution == "step" else None,
            "groups": [
                {"value": g.value, "steps": [asdict(s) for s in g.steps]} for g in result.groups
            ],
        }
    return body
