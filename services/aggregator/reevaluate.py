"""Re-evaluating persons: which stored events a batch must read, and the funnels' progress
recomputed from them (written only where it changed), with the step webhooks it announces."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator import outbox, repository
from services.aggregator.engine import Evaluator, PersonEvent, PersonProgress, reach_us
from services.aggregator.known import FunnelKey, Known, KnownPersons
from services.aggregator.repository import PersonKey
from shared.events import CanonicalEvent, format_time, from_micros, to_micros
from shared.funnel import entry_value
from shared.keys import now_us

# Persons whose bounds lie within this of each other share one (the lowest): one set of
# statements per group, and a bound lower than needed only costs some re-evaluation. An hour
# made a batch of events spread over a day (a replay; the aggregator benchmark) into some 24
# groups, 5,611 instead of 7,825 events/s; a day keeps such batches whole, and still sends
# only a days-late event's own person that far back.
GROUP_SLACK_US = 86_400_000_000


def bound_groups(bounds: Mapping[str, int]) -> list[tuple[int, list[str]]]:
    """Persons grouped by their earliest instant to re-evaluate from: the group's lowest."""
    groups: list[tuple[int, list[str]]] = []
    for person, since in sorted(bounds.items(), key=lambda kv: (kv[1], kv[0])):
        if groups and since - groups[-1][0] <= GROUP_SLACK_US:
            groups[-1][1].append(person)
        else:
            groups.append((since, [person]))
    return groups


def read_since(
    fresh: Iterable[CanonicalEvent],
    funnels: Sequence[repository.ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    horizon_us: int,
) -> tuple[dict[PersonKey, int], dict[PersonKey, set[str]]]:
    """Per person with an event that concerns a funnel of their project: the earliest stored
    event any of the project's funnels may need to re-evaluate the person (see ``recompute``),
    and the ids of the funnels their events concern (see ``Evaluator.concerns``)."""
    reach: dict[str, int] = {}
    mine: dict[str, list[repository.ActiveFunnel]] = defaultdict(list)
    for f in funnels:
        reach[f.project_id] = max(reach.get(f.project_id, 0), reach_us(f.definition))
        mine[f.project_id].append(f)
    since: dict[PersonKey, int] = {}
    concerned: dict[PersonKey, set[str]] = defaultdict(set)
    for e in fresh:
        ids = {
            f.id
            for f in mine.get(e.project_id, ())
            if evaluators[f.id].concerns(e.event, e.properties, e.context)
        }
        if ids:
            key = (e.project_id, e.person_id)
            concerned[key] |= ids
            bound = max(horizon_us, to_micros(e.timestamp) - reach[e.project_id])
            since[key] = min(since.get(key, bound), bound)
    return since, concerned


@dataclass(frozen=True, slots=True)
class Histories:
    events: dict[PersonKey, list[PersonEvent]]  # stored before the batch, from ``since`` on
    since: dict[PersonKey, int]
    known: dict[PersonKey, Known]  # persons whose events came from what this process knew


async def load_histories(
    session: AsyncSession, since_us: Mapping[PersonKey, int], known: KnownPersons
) -> Histories:
    """The stored events of these persons from (at least) their ``since_us`` on, and the
    instant each person's were read from (their group's bound): from ``known`` when it
    holds them from there on, else from the database."""
    by_project: dict[str, dict[str, int]] = defaultdict(dict)
    for (project, person), since in since_us.items():
        by_project[project][person] = since
    found = Histories({}, {}, {})
    for project, bounds in sorted(by_project.items()):
        for since, people in bound_groups(bounds):
            unknown = []
            for person in people:
                key = (project, person)
                found.since[key] = since
                held = known.get(key, since)
                if held is None:
                    unknown.append(person)
                else:
                    found.known[key] = held
                    found.events[key] = [e for e in held.events if e.ts >= since]
            if unknown:
                history = await repository.person_events(session, project, unknown, since)
                found.events.update(((project, p), events) for p, events in history.items())
    return found


async def recompute(
    session: AsyncSession,
    funnels: Sequence[repository.ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    before: Histories,
    added: Mapping[PersonKey, Sequence[PersonEvent]],
    concerned: Mapping[PersonKey, set[str]],
) -> tuple[set[tuple[str, str, str]], dict[PersonKey, dict[FunnelKey, PersonProgress]]]:
    """Re-evaluate the ``funnels`` of the persons with ``added`` events (stored by this
    transaction) whose batch events ``concerned`` them (the stored twin of a duplicate is
    one of those) from those and the events stored ``before`` it; return the (funnel,
    project, person) whose stored entries or touches changed, and the progress each person
    now has stored per funnel evaluated.

    Each person only from where their stored events were read: at most the longest
    ``reach_us`` of the project's funnels before their earliest new event (persons whose
    bounds are within a day share the lowest). What started earlier cannot change, so a person's
    long past costs nothing per batch (it once made a person with 1,000 stored events 60
    times slower per event than a new one), and one person's very late event does not send
    the others of the batch back as far. A person with nothing stored from there on has no
    stored progress there to compare with.
    """
    changed: set[tuple[str, str, str]] = set()
    evaluated: dict[PersonKey, dict[FunnelKey, PersonProgress]] = defaultdict(dict)
    by_project: dict[str, set[str]] = defaultdict(set)
    for project, person in added:
        by_project[project].add(person)
    for project, people in sorted(by_project.items()):
        mine = [f for f in funnels if f.project_id == project]
        if not mine:
            continue
        listening = await outbox.subscribed_types(session, project) & STEP_TYPES
        for funnel in mine:
            evaluator = evaluators[funnel.id]
            groups: dict[int, list[str]] = defaultdict(list)
            for p in sorted(people):
                if funnel.covers(p) and funnel.id in concerned.get((project, p), ()):
                    groups[before.since[(project, p)]].append(p)
            for since, group in sorted(groups.items()):
                stored = {p: before.events.get((project, p), []) for p in group}
                progress = {p: evaluator([*stored[p], *added[(project, p)]]) for p in group}
                first_seen = {p for p in group if not stored[p]}
                held = {}
                for p in group:
                    if (known := before.known.get((project, p))) is not None:
                        found = known.progress_from(funnel.key, since)
                        if found is not None:
                            held[p] = found
                replaced = await repository.replace_progress(
                    session, funnel.id, progress, since, graces(funnel), first_seen, held
                )
                changed.update((funnel.id, project, person) for person in replaced.changed)
                for p, found in progress.items():  # timers are not compared: left out
                    evaluated[(project, p)][funnel.key] = PersonProgress(
                        found.entries, found.touches
                    )
                if listening:
                    await _announce(session, funnel, replaced.advances, listening)
    return changed, evaluated


STEP_TYPES = {"funnel.step_reached", "funnel.converted"}


async def _announce(
    session: AsyncSession,
    funnel: repository.ActiveFunnel,
    advances: list[repository.Advance],
    listening: set[str],
) -> None:
    """``funnel.step_reached`` per newly reached step, ``funnel.converted`` at the last one.

    Only live processing announces; a backfill replays history silently. The webhook id is
    derived from funnel, person, entry and step, so a recomputation never announces twice.
    """
    steps = funnel.definition.steps
    stamp = now_us()
    for a in advances:
        for k in range(a.before + 1, a.entry.reached + 1):
            reached_at = a.entry.step_times[k - 1]
            if reached_at is None:
                continue  # an optional step the entry skipped
            types = ["funnel.step_reached"] + (["funnel.converted"] if k == len(steps) else [])
            for type_ in (t for t in types if t in listening):
                payload = {
                    "project": funnel.project_id,
                    "funnel": {"id": funnel.id, "name": funnel.name},
                    "person_id": a.person_id,
                    "entry_time": format_time(from_micros(a.entry.t0)),
                    "step": {"step": k, "name": steps[k - 1].name},
                    "reached_at": format_time(from_micros(reached_at)),
                    "value": entry_value(funnel.definition, a.entry),
                }
                await outbox.enqueue(
                    session,
                    project_id=funnel.project_id,
                    type_=type_,
                    msg_id=outbox.message_id(type_, funnel.id, a.person_id, a.entry.t0, k),
                    payload=payload,
                    funnel_id=funnel.id,
                    now_us=stamp,
                )


def graces(funnel: repository.ActiveFunnel) -> dict[str, int]:
    return {rule.name: rule.grace_s for rule in funnel.definition.remarketing}
