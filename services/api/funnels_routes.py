"""Routes for /v1/funnels: create, read, change, delete, and the report."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.api import metrics, repository
from services.api.auth import Admin, Reader
from services.api.body import StrictJsonRoute
from services.api.errors import declared, refuse
from services.api.limits import bounded_range, well_formed_id
from services.api.report import Breakdown, FunnelReport, Window
from services.api.report_cache import Computed
from services.api.reporting import compute_report, valid_until
from services.api.response_models import FunnelList, FunnelOut, ReportOut
from services.api.schemas import FunnelIn, FunnelPatch
from shared.events import format_time, from_micros, to_micros
from shared.funnel import CountMode, FunnelDefinition, definition_from_doc
from shared.keys import now_us

router = APIRouter(prefix="/v1/funnels", tags=["funnels"], route_class=StrictJsonRoute)
DAY_US = 86_400_000_000
Served = Literal["computed", "exact", "stale"]  # how a report answer was made
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


def _sessions(request: Request) -> Any:
    return request.app.state.api.sessions


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
        async with _sessions(request)() as session:
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
    async with _sessions(request).begin() as session:
        funnel_id = await repository.create_funnel(session, grant.project_id, definition)
    return _view(await _require(request, grant.project_id, funnel_id))


@router.get(
    "",
    response_model=FunnelList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_funnels(request: Request, grant: Reader) -> dict[str, Any]:
    async with _sessions(request)() as session:
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
    async with _sessions(request).begin() as session:
        if recount:
            await repository.redefine_funnel(session, funnel_id, definition)
        else:
            await repository.rename_funnel(session, funnel_id, definition)
    return _view(await _require(request, project_id, funnel_id))


@router.delete("/{funnel_id}", status_code=204, responses=declared(401, 403, 404, 422, 503))
async def delete_funnel(funnel_id: str, request: Request, grant: Admin) -> Response:
    await _require(request, grant.project_id, funnel_id)
    async with _sessions(request).begin() as session:
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
    computed, freshness = await kept_report(request, row, from_, to, mode, chosen, fresh=fresh)
    persons = None if row.backfill_done else await _project_persons(request, grant.project_id)
    body = {
        "funnel": {"id": row.id, "name": row.name},
        "from": format_time(computed.start),
        "to": format_time(computed.end),
        "count": mode,
        "computed_at": format_time(from_micros(computed.computed_at_us)),
        "cached": freshness != "computed",
        "stale": freshness == "stale",
        "backfill": {
            "done": row.backfill_done,
            "persons_done": row.backfill_persons,
            "persons_total": persons,
        },
        **_report_body(computed.report, chosen, definition),
    }
    metrics.REPORTS.labels(freshness).inc()
    metrics.REPORT_SECONDS.labels("report").observe(time.perf_counter() - started)
    return body


PERSONS_TTL_S = 30.0


async def _project_persons(request: Request, project_id: str) -> int:
    """How many persons the project has, the total a running backfill walks: counted at most
    every ``PERSONS_TTL_S`` per API process (the count reads every stored event of the
    project: 1.1 s at 1,000,000 persons, too much to pay on every report read)."""
    state = request.app.state.api
    kept = state.persons.get(project_id)
    if kept is not None and time.monotonic() - kept[1] < PERSONS_TTL_S:
        return int(kept[0])
    async with _sessions(request)() as session:
        persons = await repository.project_persons(session, project_id)
    state.persons[project_id] = (persons, time.monotonic())
    return persons


async def kept_report(
    request: Request,
    row: repository.FunnelRow,
    from_: str | None,
    to: str | None,
    mode: CountMode,
    chosen: Breakdown | None,
    *,
    fresh: bool = False,
) -> tuple[Computed, Served]:
    """The funnel's report over this range: from the report cache while it is exact (or young
    enough to be served stale while one recomputation runs), else computed now (``fresh``:
    always). Reports, charts, plans and diagnoses of the same range share kept reports."""
    state = request.app.state.api
    definition = definition_from_doc(row.definition)
    start, end, window = report_range(request, from_, to)
    async with _sessions(request)() as session:
        stamp = await repository.change_stamp(session, row.id)
    key = (row.id, row.version, from_, to, mode, chosen)
    basis = (row.backfill_done, row.backfill_persons, stamp)
    rolling = state.settings.default_range_days * DAY_US if from_ is None else None

    async def work() -> Computed:
        began = time.perf_counter()
        async with _sessions(request)() as session:
            result = await compute_report(session, row.id, definition, window, mode, chosen)
            until = await valid_until(
                session, row.id, definition, window, open_end=to is None, rolling=rolling
            )
        took = int((time.perf_counter() - began) * 1_000_000)
        return Computed(start, end, result, window.now, until, basis, took)

    kept: tuple[Computed, Served] | None = None
    if not fresh:
        kept = state.reports.get(key, basis, now_us())
    if kept is None:
        computed: Computed = await state.reports.compute(key, work)
        return computed, "computed"
    if kept[1] == "stale":
        state.reports.refresh(key, work)
    return kept


def report_range(
    request: Request, from_: str | None, to: str | None
) -> tuple[datetime, datetime, Window]:
    settings = request.app.state.api.settings
    start, end = bounded_range(
        from_,
        to,
        now=datetime.now(UTC),
        default_days=settings.default_range_days,
        max_days=settings.max_range_days,
    )
    return start, end, Window(to_micros(start), to_micros(end), now_us())


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
