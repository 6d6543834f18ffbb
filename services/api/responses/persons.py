"""What GET /v1/persons/{person_id} answers."""

from __future__ import annotations

from pydantic import Field

from services.api.responses.common import FunnelRef, Out


class LinkOut(Out):
    id: str = Field(description="An id linked to the person.")
    linked_to: str = Field(description="The id it is linked to (the user id, or a chain's).")
    linked_at: str = Field(description="The time of the event that linked it.")
    event_id: str = Field(description="The event that linked it.")


class RefusalOut(Out):
    anonymous_id: str
    user_id: str
    at: str = Field(description="The time of the event whose link was refused.")
    event_id: str
    reason: str


class StepReachedOut(Out):
    step: int
    name: str
    reached_at: str | None = Field(description="null: an optional step the entry skipped.")


class EntryOut(Out):
    entry_time: str
    reached: int = Field(description="How many steps the entry reached.")
    disqualified: bool
    steps: list[StepReachedOut]


class PersonFunnelOut(Out):
    funnel: FunnelRef
    entries: list[EntryOut]


class PersonOut(Out):
    person_id: str = Field(description="The person's root: the user id every id links to.")
    ids: list[str] = Field(description="The root, then every linked id in order.")
    links: list[LinkOut]
    refused_links: list[RefusalOut]
    first_seen: str | None = Field(description="The earliest event of any of the ids.")
    last_seen: str | None = Field(description="The latest event of any of the ids.")
    funnels: list[PersonFunnelOut] = Field(
        description="Per funnel the person entered: their entries and the steps reached."
    )
