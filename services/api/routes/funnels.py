"""Routes for funnels as resources: /v1/funnels (create, read, change, delete) and the
templates a funnel can be made from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.api.body import StrictJsonRoute
from services.api.deps import Admin, ClockDep, FoundFunnel, Reader, SessionDep, require_funnel
from services.api.errors import declared, refuse
from services.api.repository import Session, funnels
from services.api.repository.funnels import FunnelRow
from services.api.responses.common import shown
from services.api.responses.funnels import FunnelList, FunnelOut, TemplateList, TemplateOut
from services.api.schemas import FromTemplate, FunnelIn, FunnelPatch
from services.api.templates import TEMPLATES, template_definition

router = APIRouter(prefix="/v1/funnels", tags=["funnels"], route_class=StrictJsonRoute)
templates = APIRouter(tags=["analysis"], route_class=StrictJsonRoute)
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


def funnel_out(row: FunnelRow) -> FunnelOut:
    """A stored funnel as shown: its definition as stored, and what the service keeps."""
    return FunnelOut.model_validate(
        {
            "id": row.id,
            **row.definition,
            "version": row.version,
            "created_at": shown(row.created_at_us),
            "updated_at": shown(row.updated_at_us),
            "backfill": {"done": row.backfill_done, "persons": row.backfill_persons},
        }
    )


@router.post(
    "",
    status_code=201,
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_funnel(
    body: FunnelIn, grant: Admin, session: SessionDep, clock: ClockDep
) -> FunnelOut:
    """Define a funnel; its history is backfilled from stored events."""
    now = clock.now_us()
    definition = stamp_rules(body.model_dump(), previous=None, now_us=now)
    return await _create(session, grant.project_id, definition, now)


@router.get(
    "",
    response_model=FunnelList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_funnels(grant: Reader, session: SessionDep) -> FunnelList:
    rows = await funnels.list_funnels(session, grant.project_id)
    return FunnelList(funnels=[funnel_out(r) for r in rows])


@router.get(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 422, 503),
)
async def get_funnel(funnel_id: str, grant: Reader, session: SessionDep) -> FunnelOut:
    return funnel_out((await require_funnel(session, grant.project_id, funnel_id)).row)


@router.put(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def replace_funnel(
    funnel_id: str, body: FunnelIn, grant: Admin, session: SessionDep, clock: ClockDep
) -> FunnelOut:
    current = await require_funnel(session, grant.project_id, funnel_id)
    return await _change(session, current, body.model_dump(), clock.now_us())


@router.patch(
    "/{funnel_id}",
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def patch_funnel(
    funnel_id: str, body: FunnelPatch, grant: Admin, session: SessionDep, clock: ClockDep
) -> FunnelOut:
    current = await require_funnel(session, grant.project_id, funnel_id)
    merged = {**current.row.definition, **body.model_dump(exclude_unset=True)}
    return await _change(session, current, validated(merged), clock.now_us())


@router.delete("/{funnel_id}", status_code=204, responses=declared(401, 403, 404, 422, 503))
async def delete_funnel(funnel_id: str, grant: Admin, session: SessionDep) -> Response:
    await require_funnel(session, grant.project_id, funnel_id)
    await funnels.delete_funnel(session, funnel_id)
    await session.commit()
    return Response(status_code=204)


@templates.get(
    "/v1/funnel-templates",
    response_model=TemplateList,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 503),
)
async def list_templates(_grant: Reader) -> TemplateList:
    """The ready funnel models, with the re-marketing rules they propose."""
    return TemplateList(
        templates=[
            TemplateOut.model_validate(
                {
                    "id": tid,
                    "title": t["title"],
                    "description": t["description"],
                    **template_definition(tid),
                }
            )
            for tid, t in TEMPLATES.items()
        ]
    )


@templates.post(
    "/v1/funnels/from-template",
    status_code=201,
    response_model=FunnelOut,
    response_model_exclude_unset=True,
    responses=declared(401, 403, 413, 422, 503),
)
async def create_from_template(
    body: FromTemplate, grant: Admin, session: SessionDep, clock: ClockDep
) -> FunnelOut:
    doc = template_definition(body.template)
    if body.events is not None:
        if len(body.events) != len(doc["steps"]):
            refuse(422, "events", f"the template has {len(doc['steps'])} steps")
        for step, event in zip(doc["steps"], body.events, strict=True):
            step["event"] = event or step["event"]
    overrides = body.model_dump(exclude_unset=True, exclude={"events"})
    now = clock.now_us()
    definition = stamp_rules(validated({**doc, **overrides}), previous=None, now_us=now)
    return await _create(session, grant.project_id, definition, now)


async def _create(
    session: Session, project_id: str, definition: dict[str, Any], now_us: int
) -> FunnelOut:
    funnel_id = await funnels.create_funnel(session, project_id, definition, now_us=now_us)
    created = await require_funnel(session, project_id, funnel_id)
    await session.commit()
    return funnel_out(created.row)


async def _change(
    session: Session, current: FoundFunnel, definition: dict[str, Any], now_us: int
) -> FunnelOut:
    """Store a changed definition; its stored progress is recomputed if counting changed."""
    row = current.row
    definition = stamp_rules(definition, previous=row.definition, now_us=now_us)
    if any(row.definition.get(f) != definition.get(f) for f in COUNTING_FIELDS):
        await funnels.redefine_funnel(session, row.id, definition, now_us=now_us)
    else:
        await funnels.rename_funnel(session, row.id, definition, now_us=now_us)
    changed = await require_funnel(session, row.project_id, row.id)
    await session.commit()
    return funnel_out(changed.row)


def validated(doc: dict[str, Any]) -> dict[str, Any]:
    """A definition assembled by the service (a patch on the stored one, a template with
    overrides) checked as a request body is, its errors named as body fields."""
    try:
        return FunnelIn.model_validate(doc).model_dump()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def stamp_rules(
    definition: dict[str, Any], previous: dict[str, Any] | None, now_us: int
) -> dict[str, Any]:
    """Record when each re-marketing rule first existed (kept across edits, by name).

    Timers due before their rule existed come from replayed history and are not fired.
    """
    known = {r["name"]: r.get("created_at_us") for r in (previous or {}).get("remarketing", [])}
    for rule in definition.get("remarketing") or []:
        rule["created_at_us"] = known.get(rule["name"]) or now_us
    return definition
