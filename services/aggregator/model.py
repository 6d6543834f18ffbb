"""Records the aggregator loads and its pure modules work on: funnels, timers, deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.funnel import FunnelDefinition

Partition = tuple[str, int]  # (topic, partition number)


@dataclass(frozen=True, slots=True)
class ActiveFunnel:
    id: str
    project_id: str
    name: str
    definition: FunnelDefinition
    backfill_cursor: str | None
    backfill_done: bool
    version: int

    @property
    def key(self) -> tuple[str, int]:
        """Identifies the funnel's stored progress: a redefinition starts it afresh."""
        return (self.id, self.version)

    def covers(self, person_id: str) -> bool:
        """Whether this person's progress is kept live (backfill has passed them)."""
        return self.backfill_done or (
            self.backfill_cursor is not None and person_id <= self.backfill_cursor
        )

    def graces(self) -> dict[str, int]:
        """Each re-marketing rule's grace period in seconds, by rule name."""
        return {rule.name: rule.grace_s for rule in self.definition.remarketing}


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A pending re-marketing timer whose time has come."""

    id: int
    funnel_id: str
    person_id: str
    rule: str
    entry_t0_us: int
    occurrence: int
    due_us: int


@dataclass(frozen=True, slots=True)
class TimerFunnel:
    """The funnel of a due timer, as stored now."""

    id: str
    project_id: str
    name: str
    definition: FunnelDefinition


@dataclass(frozen=True, slots=True)
class Claimed:
    """A webhook delivery claimed for one attempt, with the secrets that sign it."""

    id: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]
    message_id: str
    type: str
    payload: dict[str, Any]
    created_at_us: int
    attempts: int


def signing_secrets(
    secret: str, previous: str | None, previous_until_us: int | None, now_us: int
) -> tuple[str, ...]:
    """The current secret, plus the previous one while its rotation overlap lasts."""
    if previous and (previous_until_us or 0) > now_us:
        return (secret, previous)
    return (secret,)


@dataclass(frozen=True, slots=True)
class Signal:
    """Work for the owner of a partition: ``resolve`` an id's links again, or ``evaluate``
    a person again from ``since_us`` on (see services/aggregator/linking.py)."""

    topic: str
    partition: int
    project_id: str
    person_id: str
    reason: str
    since_us: int
