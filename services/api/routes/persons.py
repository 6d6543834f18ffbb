"""A person by any of their ids (/v1/persons/{person_id}): identity merge made visible."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.api.body import StrictJsonRoute
from services.api.deps import Reader, SessionDep
from services.api.errors import declared, refuse
from services.api.repository import persons
from services.api.responses.common import FunnelRef, instant, shown
from services.api.responses.persons import (
    EntryOut,
    LinkOut,
    PersonFunnelOut,
    PersonOut,
    RefusalOut,
    StepReachedOut,
)

router = APIRouter(tags=["persons"], route_class=StrictJsonRoute)


@router.get(
    "/v1/persons/{person_id}",
    response_model=PersonOut,
    responses=declared(401, 403, 404, 422, 503),
)
async def person(
    person_id: Annotated[str, Path(min_length=1, max_length=256)],
    grant: Reader,
    session: SessionDep,
) -> PersonOut:
    """The person an id belongs to: their user id, every linked id (when, by which event),
    refused links, first and last seen, and per funnel the entries and steps reached."""
    found = await persons.person(session, grant.project_id, person_id)
    if found is None:
        refuse(404, "person_id", f"no event or link names {person_id!r} in this project")
    return person_out(found)


def person_out(found: persons.PersonRow) -> PersonOut:
    by_funnel: dict[str, PersonFunnelOut] = {}
    for e in found.entries:
        out = by_funnel.setdefault(
            e.funnel_id,
            PersonFunnelOut(funnel=FunnelRef(id=e.funnel_id, name=e.funnel_name), entries=[]),
        )
        steps = [
            StepReachedOut(step=k, name=name, reached_at=shown(at))
            for k, (name, at) in enumerate(zip(e.steps, e.step_times, strict=False), 1)
        ]
        out.entries.append(
            EntryOut(
                entry_time=instant(e.t0_us),
                reached=e.reached,
                disqualified=e.disqualified,
                steps=steps,
            )
        )
    return PersonOut(
        person_id=found.root,
        ids=[found.root, *(link.id for link in found.links)],
        links=[
            LinkOut(id=k.id, linked_to=k.target, linked_at=instant(k.ts_us), event_id=k.event_id)
            for k in found.links
        ],
        refused_links=[
            RefusalOut(
                anonymous_id=r.anon_id,
                user_id=r.user_id,
                at=instant(r.ts_us),
                event_id=r.event_id,
                reason=r.reason,
            )
            for r in found.refusals
        ],
        first_seen=shown(found.first_seen_us),
        last_seen=shown(found.last_seen_us),
        funnels=list(by_funnel.values()),
    )
