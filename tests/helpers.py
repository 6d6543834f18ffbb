"""Small builders shared by the test tiers."""

from __future__ import annotations

import itertools
from typing import Any

from services.aggregator.engine import PersonEvent
from shared.funnel import US, definition_from_doc

_ids = itertools.count()
DAY = 86_400


def ev(name: str, at_s: float, **properties: Any) -> PersonEvent:
    """An event at ``at_s`` seconds after the epoch (stored as µs)."""
    return PersonEvent(f"e{next(_ids):08d}", round(at_s * US), name, properties)


def funnel(*steps: str | dict[str, Any], **options: Any) -> Any:
    doc = {
        "steps": [s if isinstance(s, dict) else {"event": s} for s in steps],
        **options,
    }
    return definition_from_doc(doc)


def canonical(
    person: str,
    name: str,
    at_s: float,
    event_id: str | None = None,
    project: str = "proj",
    **props: Any,
) -> Any:
    from datetime import UTC, datetime

    from shared.events import CanonicalEvent

    ts = datetime.fromtimestamp(at_s, UTC)
    return CanonicalEvent(
        project_id=project,
        event_id=event_id or f"{person}-{name}-{at_s}",
        person_id=person,
        user_id=person,
        event=name,
        timestamp=ts,
        received_at=ts,
        properties=props,
    )


def records(events: list[Any], partition: int = 0, first_offset: int = 0) -> list[Any]:
    from services.aggregator.source import SourceRecord
    from shared.events import EVENTS_TOPIC

    return [
        SourceRecord(EVENTS_TOPIC, partition, first_offset + i, e.key, e.to_json(), 0)
        for i, e in enumerate(events)
    ]


async def create_key(session: Any, project_id: str, scope: Any) -> str:
    """A project's key (and the project if new), as a plain key."""
    from shared.clock import now_us
    from shared.repository.keys import ensure_project, issue_key

    now = now_us()
    await ensure_project(session, project_id, now_us=now)
    return (await issue_key(session, project_id, scope, now_us=now)).key
