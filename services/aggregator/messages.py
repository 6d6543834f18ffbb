"""The webhook messages the aggregator writes to the outbox: their ids and payloads. Pure.

A message's id is derived from what makes it unique (funnel, person, entry, step or rule
occurrence), so a recomputation never announces twice: it is the receiver's idempotency key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.aggregator.changes import Advance
from services.aggregator.model import ActiveFunnel, DueTimer, TimerFunnel
from shared.events import format_time, from_micros
from shared.funnel import Entry, RemarketingRule, entry_value

STEP_TYPES = frozenset({"funnel.step_reached", "funnel.converted"})
REMARKETING_DUE = "remarketing.due"


@dataclass(frozen=True, slots=True)
class Message:
    project_id: str
    funnel_id: str | None
    type: str
    id: str
    payload: dict[str, Any]
    # The ids the same message has under the person's other ids: one of them stored means
    # it was announced before those ids were one person.
    twins: tuple[str, ...] = ()


def message_id(*parts: object) -> str:
    """A stable webhook id from what makes the message unique."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def step_messages(
    funnel: ActiveFunnel,
    advances: Iterable[Advance],
    listening: Iterable[str],
    ids: Mapping[str, Sequence[str]] | None = None,
) -> list[Message]:
    """``funnel.step_reached`` per newly reached step, ``funnel.converted`` at the last one,
    of the types some endpoint is ``listening`` to. Only live processing announces; a
    backfill replays history silently. ``ids``: the ids of persons of several (the root
    first), named in the payload; a person of one id is named alone."""
    ids = ids or {}
    wanted = STEP_TYPES & set(listening)
    steps = funnel.definition.steps
    found = []
    for a in advances if wanted else ():
        for k in range(a.before + 1, a.entry.reached + 1):
            reached_at = a.entry.step_times[k - 1]
            if reached_at is None:
                continue  # an optional step the entry skipped
            types = ["funnel.step_reached"] + (["funnel.converted"] if k == len(steps) else [])
            for type_ in (t for t in types if t in wanted):
                payload = {
                    "project": funnel.project_id,
                    "funnel": {"id": funnel.id, "name": funnel.name},
                    "person_id": a.person_id,
                    "ids": person_ids(a.person_id, ids.get(a.person_id)),
                    "entry_time": format_time(from_micros(a.entry.t0)),
                    "step": {"step": k, "name": steps[k - 1].name},
                    "reached_at": format_time(from_micros(reached_at)),
                    "value": entry_value(funnel.definition, a.entry),
                }
                msg_id = message_id(type_, funnel.id, a.person_id, a.entry.t0, k)
                twins = tuple(
                    message_id(type_, funnel.id, other, a.entry.t0, k)
                    for other in ids.get(a.person_id, ())
                    if other != a.person_id
                )
                found.append(Message(funnel.project_id, funnel.id, type_, msg_id, payload, twins))
    return found


def person_ids(person: str, ids: Sequence[str] | None) -> list[str]:
    """The person's ids as payloads name them: the root, then every linked id in order."""
    return [person, *sorted(i for i in ids or () if i != person)]


def remarketing_message(
    funnel: TimerFunnel,
    rule: RemarketingRule,
    timer: DueTimer,
    entry: Entry | None,
    opening: Sequence[tuple[str, Mapping[str, Any]]],
    ids: Sequence[str] = (),
) -> Message:
    """``remarketing.due``: who, which funnel and rule, where they stand. ``entry`` is the
    stored entry (if it still is), ``opening`` the (name, properties) of the person's events
    at its start instant; the first that matches step 1 gives the entry's properties."""
    definition = funnel.definition
    first = definition.steps[0].matcher
    properties = next((dict(p) for n, p in opening if first.matches(n, p, {})), {})
    reached = entry.reached if entry else rule.from_step
    payload = {
        "project": funnel.project_id,
        "funnel": {"id": funnel.id, "name": funnel.name},
        "rule": {
            "name": rule.name,
            "from_step": rule.from_step,
            "goal_step": rule.goal_step,
            "occurrence": timer.occurrence,
        },
        "person_id": timer.person_id,
        "ids": person_ids(timer.person_id, ids),
        "entry_time": format_time(from_micros(timer.entry_t0_us)),
        "due_time": format_time(from_micros(timer.due_us)),
        "current_step": {"step": reached, "name": definition.steps[reached - 1].name},
        "entry_properties": properties,
        "value": entry_value(definition, entry) if entry else None,
    }
    parts = (timer.funnel_id, rule.name, timer.person_id, timer.entry_t0_us, timer.occurrence)
    msg_id = message_id(REMARKETING_DUE, *parts)
    return Message(funnel.project_id, funnel.id, REMARKETING_DUE, msg_id, payload)
