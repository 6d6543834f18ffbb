"""Which persons a batch re-evaluates, from which stored events, and their new progress.

Pure. A person is re-evaluated only from where their stored events are read: at most the
longest ``reach_us`` of their project's funnels before their earliest new event. What
started earlier cannot change, so a person's long past costs nothing per batch, and one
person's very late event does not send the batch's other persons back as far.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from services.aggregator.engine import (
    Evaluator,
    PersonEvent,
    PersonProgress,
    lookback_us,
    reach_us,
)
from services.aggregator.model import ActiveFunnel
from services.aggregator.person_cache import CachedPerson, FunnelKey, PersonCache, PersonKey
from shared.clock import DAY_US
from shared.events import CanonicalEvent, to_micros

# Persons whose bounds lie within this of each other share one (the lowest): one set of
# statements per group, and a bound lower than needed only costs some re-evaluation. A day
# keeps a batch of events spread over a day (a replay) in one group, and still sends only a
# days-late event's own person that far back.
GROUP_SLACK_US = DAY_US


def bound_groups(bounds: Mapping[str, int]) -> list[tuple[int, list[str]]]:
    """Persons grouped by their earliest instant to re-evaluate from: the group's lowest."""
    groups: list[tuple[int, list[str]]] = []
    for person, since in sorted(bounds.items(), key=lambda kv: (kv[1], kv[0])):
        if groups and since - groups[-1][0] <= GROUP_SLACK_US:
            groups[-1][1].append(person)
        else:
            groups.append((since, [person]))
    return groups


def lookbacks(funnels: Iterable[ActiveFunnel]) -> dict[str, int]:
    """Per project, how far before a person's bound their events are read: the longest
    ``lookback_us`` of its funnels (what is kept and replaced still starts at the bound)."""
    found: dict[str, int] = {}
    for f in funnels:
        found[f.project_id] = max(found.get(f.project_id, 0), lookback_us(f.definition))
    return found


def read_since(
    fresh: Iterable[CanonicalEvent],
    funnels: Sequence[ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    horizon_us: int,
) -> tuple[dict[PersonKey, int], dict[PersonKey, set[str]]]:
    """Per person with an event that concerns a funnel of their project: the earliest stored
    event any of the project's funnels may need to re-evaluate the person, and the ids of
    the funnels their events concern (see ``Evaluator.concerns``)."""
    reach: dict[str, int] = {}
    mine: dict[str, list[ActiveFunnel]] = defaultdict(list)
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
    """What was stored of the batch's persons before it: their events from ``since`` (less
    their project's lookback) on; what is kept and replaced starts at ``since``."""

    events: dict[PersonKey, list[PersonEvent]]
    since: dict[PersonKey, int]
    cached: dict[PersonKey, CachedPerson]  # persons whose events came from the person cache


@dataclass(frozen=True, slots=True)
class Read:
    """Stored events to read: these persons' of one project from ``since`` on."""

    project_id: str
    since: int
    persons: list[str]


def read_plan(
    since_us: Mapping[PersonKey, int],
    cache: PersonCache,
    lookback: Mapping[str, int] | None = None,
) -> tuple[Histories, list[Read]]:
    """The histories the cache holds from (at least) each person's ``since_us`` on, less
    their project's ``lookback``, and the reads that complete them; each person's bound
    becomes their group's (``bound_groups``)."""
    lookback = lookback or {}
    by_project: dict[str, dict[str, int]] = defaultdict(dict)
    for (project, person), since in since_us.items():
        by_project[project][person] = since
    found = Histories({}, {}, {})
    reads = []
    for project, bounds in sorted(by_project.items()):
        back = lookback.get(project, 0)
        for since, people in bound_groups(bounds):
            unknown = []
            for person in people:
                key = (project, person)
                found.since[key] = since
                held = cache.get(key, since - back)
                if held is None:
                    unknown.append(person)
                else:
                    found.cached[key] = held
                    found.events[key] = [e for e in held.events if e.ts >= since - back]
            if unknown:
                reads.append(Read(project, since - back, unknown))
    return found, reads


@dataclass(frozen=True, slots=True)
class Group:
    """Persons of one funnel re-evaluated from one bound: their new progress, those with
    nothing stored from there on, and what the cache holds as stored for the others."""

    funnel: ActiveFunnel
    since: int
    progress: dict[str, PersonProgress]
    first_seen: set[str]
    held: dict[str, PersonProgress]

    def stored(self) -> dict[str, PersonProgress]:
        """What is stored for each person once saved (timers are not compared: left out)."""
        return {p: PersonProgress(f.entries, f.touches) for p, f in self.progress.items()}


def groups(
    funnels: Sequence[ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    before: Histories,
    added: Mapping[PersonKey, Sequence[PersonEvent]],
    concerned: Mapping[PersonKey, set[str]],
    merged: AbstractSet[PersonKey] = frozenset(),
) -> Iterator[Group]:
    """Re-evaluate the ``funnels`` of the persons with ``added`` events (stored by this
    batch) that ``concerned`` them (the stored twin of a duplicate is one of those), from
    those and the events stored ``before``; by project, funnel and bound. ``merged``
    persons (several ids, or ids that changed) may have stored progress whatever their
    events: none of them is taken for first seen."""
    by_project: dict[str, set[str]] = defaultdict(set)
    for project, person in added:
        by_project[project].add(person)
    for project, people in sorted(by_project.items()):
        persons = sorted(people)
        for funnel in (f for f in funnels if f.project_id == project):
            yield from _groups(
                funnel, evaluators[funnel.id], persons, before, added, concerned, merged
            )


def _groups(
    funnel: ActiveFunnel,
    evaluator: Evaluator,
    people: list[str],
    before: Histories,
    added: Mapping[PersonKey, Sequence[PersonEvent]],
    concerned: Mapping[PersonKey, set[str]],
    merged: AbstractSet[PersonKey],
) -> Iterator[Group]:
    project = funnel.project_id
    bounds: dict[int, list[str]] = defaultdict(list)
    for p in people:
        if funnel.covers(p) and funnel.id in concerned.get((project, p), ()):
            bounds[before.since[(project, p)]].append(p)
    for since, group in sorted(bounds.items()):
        stored = {p: before.events.get((project, p), []) for p in group}
        progress = {p: evaluator([*stored[p], *added[(project, p)]], since) for p in group}
        first_seen = {p for p in group if not stored[p] and (project, p) not in merged}
        held = _held(funnel.key, since, [(project, p) for p in group], before)
        yield Group(funnel, since, progress, first_seen, held)


def _held(
    funnel: FunnelKey, since: int, persons: list[PersonKey], before: Histories
) -> dict[str, PersonProgress]:
    """What the cache holds as stored for these persons in the funnel from ``since`` on."""
    held = {}
    for key in persons:
        if (cached := before.cached.get(key)) is not None:
            found = cached.progress_from(funnel, since)
            if found is not None:
                held[key[1]] = found
    return held
