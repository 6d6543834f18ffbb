"""A batch's identity work, in its transaction: claims stored and resolved, persons of
several ids evaluated as one, signals to the owners of other partitions.

Ownership: an id belongs to the partition its events go to (``partition_for`` of
``project/id``), and only the aggregator holding that partition writes the id's link row,
its refusals and, while it is a person's root, the person's progress. Every such write is
in a transaction that holds the partition's stored offset (``offsets.hold_offsets``), so
two processes never write one id at once and a process that lost the partition cannot
commit. What concerns an id of another partition becomes a signal to its owner, inserted
in the same transaction: ``resolve`` (the id's claims changed: resolve its component
again) or ``evaluate`` (the person's events or ids changed: evaluate it again from an
instant on). Each owner resolves the whole component (a pure function of its stored
claims, ``identity.resolve``), writes its own ids' rows and signals the owners of ids
whose stored rows differ, so the rows converge to the resolution of all the claims.

A person with no claims costs one lookup per batch (``identities.known``, shared by all of
the batch's ids) and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from services.aggregator.engine import PersonEvent
from services.aggregator.identity import Claim, Link, Refusal, claims_of, redundant, resolve
from services.aggregator.model import ActiveFunnel, Partition, Signal
from services.aggregator.person_cache import CachedPerson, PersonCache, PersonKey
from services.aggregator.reevaluate import bound_groups, lookbacks
from services.aggregator.repository import Session, events, identities, progress
from services.aggregator.repository.identities import Known
from shared.events import EVENTS_TOPIC, CanonicalEvent, partition_for, record_key, to_micros

RESOLVE, EVALUATE = "resolve", "evaluate"


@dataclass(frozen=True, slots=True)
class Owner:
    """Which ids this batch owns: those of the partitions it holds. Without the topic's
    partitions (a single aggregator, tests), every id."""

    partitions: tuple[int, ...] = ()
    held: frozenset[int] = frozenset()
    topic: str = EVENTS_TOPIC

    def partition(self, key: PersonKey) -> int:
        return partition_for(record_key(*key), self.partitions) if self.partitions else 0

    def local(self, key: PersonKey) -> bool:
        return not self.partitions or self.partition(key) in self.held

    def signal(self, key: PersonKey, reason: str, since_us: int) -> Signal:
        return Signal(self.topic, self.partition(key), key[0], key[1], reason, since_us)


def batch_claims(fresh: Iterable[CanonicalEvent]) -> dict[PersonKey, Claim]:
    """The claims of the batch's events, by (project, claim number and event id)."""
    found = {}
    for e in fresh:
        if (e.user_id and e.anonymous_id) or e.event == "alias":
            made = claims_of(
                e.event_id, to_micros(e.timestamp), e.event, e.person_id,
                e.user_id, e.anonymous_id, e.properties,
            )  # fmt: skip
            for i, claim in enumerate(made):
                found[(e.project_id, f"{i}:{e.event_id}")] = claim
    return found


def claim_anons(claims: Mapping[PersonKey, Claim]) -> set[PersonKey]:
    return {(project, c.anon) for (project, _), c in claims.items()}


@dataclass(slots=True)
class Relinked:
    """What the batch's resolutions changed: the ids of the components resolved, the local
    ids whose person changed (from root, to root), what is new, the signals to send."""

    ids: set[PersonKey] = field(default_factory=set)
    moved: dict[PersonKey, tuple[str, str]] = field(default_factory=dict)
    links_made: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    after: dict[PersonKey, Link] = field(default_factory=dict)  # the ``ids``' links, as stored now
    partial: bool = False  # a component was read only in part (``MAX_COMPONENT_CLAIMS``)

    def affected(self) -> set[PersonKey]:
        """Persons (old and new roots) that gained or lost ids."""
        return {(p, r) for (p, _), pair in self.moved.items() for r in pair}

    def demoted(self) -> dict[PersonKey, str]:
        """Ids that were persons of their own and now are not: their new root."""
        return {k: new for k, (old, new) in self.moved.items() if old == k[1] and new != k[1]}

    def known(self) -> Known:
        """The persons of the resolved ids as stored now. A link is made only from a stored
        claim, so a person's ids all lie in one component of claims: the ids of the
        components resolved hold every id of their persons (unless one was ``partial``)."""
        found = Known(dict(self.after))
        for key in sorted(self.ids):
            root = (key[0], found.root(key))
            ids = found.members.setdefault(root, set())
            if root != key:
                ids.add(key[1])
        return found


async def relink(
    session: Session,
    owner: Owner,
    claims: Mapping[PersonKey, Claim],
    stored: Mapping[PersonKey, Sequence[PersonEvent]],
    known: Known,
    resolve_ids: Iterable[PersonKey] = (),
) -> Relinked:
    """Store the claims of the events the batch stored; resolve their components and those
    of the ids signalled to resolve."""
    out = Relinked()
    new_ids = {(p, e.event_id) for (p, _), got in stored.items() for e in got} if claims else set()
    by_project: dict[str, list[Claim]] = defaultdict(list)
    for (project, _), c in claims.items():
        if (project, c.event_id) in new_ids and not redundant(
            c, known.links.get((project, c.anon))
        ):
            by_project[project].append(c)
    seeds: dict[str, set[str]] = defaultdict(set)
    for project, made in by_project.items():
        seeds[project] |= {i for c in made for i in (c.anon, c.user)}
    for project, id_ in resolve_ids:
        seeds[project].add(id_)
    for project, ids in sorted(seeds.items()):
        await identities.add_claims(session, project, by_project.get(project, []))
        await _resolve(session, owner, project, ids, out)
    return out


async def _resolve(
    session: Session, owner: Owner, project: str, seeds: set[str], out: Relinked
) -> None:
    component = await identities.component(session, project, seeds)
    out.partial |= len(component) >= identities.MAX_COMPONENT_CLAIMS
    ids = sorted(seeds | {i for c in component for i in (c.anon, c.user)})
    before = await identities.stored_links(session, project, ids)
    resolution = resolve(component)
    mine = [i for i in ids if owner.local((project, i))]
    mine_set = set(mine)
    stored_refused = await identities.stored_refusals(session, project, ids)
    refused = {k: r for k, r in stored_refused.items() if k[1] in mine_set}
    await identities.save_links(
        session, project, mine, resolution.links, resolution.refusals, before, refused
    )
    after = {i: link for i, link in before.items() if i not in mine}
    after.update((i, link) for i, link in resolution.links.items() if i in mine)
    out.after.update(((project, i), link) for i, link in after.items())
    for id_ in ids:
        key = (project, id_)
        out.ids.add(key)
        if not owner.local(key):
            if resolution.links.get(id_) != before.get(id_) or _refusals_of(
                id_, resolution.refusals
            ) != _refusals_of(id_, stored_refused.values()):
                out.signals.append(owner.signal(key, RESOLVE, 0))
            continue
        was, now = _root(before, id_), _root(after, id_)
        if was != now:
            out.moved[key] = (was, now)
    out.links_made += sum(
        1 for i, link in resolution.links.items() if i in mine_set and before.get(i) != link
    )
    out.refusals += [
        r
        for r in resolution.refusals
        if r.claim.anon in mine_set and (r.claim.event_id, r.claim.anon) not in refused
    ]


def _refusals_of(anon: str, refusals: Iterable[Refusal]) -> set[Refusal]:
    """The refusals of claims of this anonymous id (its owner records them)."""
    return {r for r in refusals if r.claim.anon == anon}


def _root(links: Mapping[str, Link], id_: str) -> str:
    seen = set()
    while (link := links.get(id_)) is not None and id_ not in seen:
        seen.add(id_)
        id_ = link.target
    return id_


@dataclass(slots=True)
class Merged:
    """Persons of several ids (or whose ids changed) the batch re-evaluates: all of their
    ids' stored events from their bound on, read after the batch stored its own."""

    events: dict[PersonKey, list[PersonEvent]] = field(default_factory=dict)
    since: dict[PersonKey, int] = field(default_factory=dict)
    concerned: dict[PersonKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    partitions: dict[PersonKey, set[Partition]] = field(default_factory=lambda: defaultdict(set))
    ids: dict[PersonKey, list[str]] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    # Persons the person cache holds: ``events`` came from it, ``added`` are the batch's.
    cached: dict[PersonKey, CachedPerson] = field(default_factory=dict)
    added: dict[PersonKey, list[PersonEvent]] = field(default_factory=dict)


@dataclass(slots=True)
class Wanted:
    """Persons (by any of their ids) to evaluate from a bound, for some funnels."""

    bounds: dict[PersonKey, int] = field(default_factory=dict)
    concerned: dict[PersonKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    partitions: dict[PersonKey, set[Partition]] = field(default_factory=lambda: defaultdict(set))
    fresh: set[PersonKey] = field(default_factory=set)  # not from the cache: read them

    def add(
        self,
        key: PersonKey,
        bound: int,
        funnels: Iterable[str],
        parts: Iterable[Partition],
        fresh: bool = False,
    ) -> None:
        self.bounds[key] = min(self.bounds.get(key, bound), bound)
        self.concerned[key].update(funnels)
        self.partitions[key].update(parts)
        if fresh:
            self.fresh.add(key)


async def persons_now(
    session: Session,
    keys: Iterable[PersonKey],
    known: Known,
    asked: AbstractSet[PersonKey],
    relinked: Relinked,
) -> Known:
    """The persons of these ids as stored now, read only where the batch has not read them:
    the batch's lookup (``known``, of the ``asked`` ids) holds those of the ids whose
    components the batch did not resolve (their links are as read), ``relinked`` those of
    the ids it resolved; the others (signalled ids) are looked up, and all of them when a
    component was read only in part (``MAX_COMPONENT_CLAIMS``)."""
    if relinked.partial:
        return await identities.known(session, keys)
    now = relinked.known() if relinked.ids else Known()
    found, unknown = Known(), []
    for key in keys:
        if key in relinked.ids:
            _copy_person(found, now, key)
        elif key in asked:
            _copy_person(found, known, key)
        else:
            unknown.append(key)
    if unknown:
        looked = await identities.known(session, unknown)
        found.links.update(looked.links)
        found.members.update(looked.members)
    return found


def _copy_person(into: Known, source: Known, key: PersonKey) -> None:
    """Copy the links from the id up to its root, and the root's ids."""
    id_, seen = key[1], set()
    while (link := source.links.get((key[0], id_))) is not None and id_ not in seen:
        into.links[(key[0], id_)] = link
        seen.add(id_)
        id_ = link.target
    into.members[(key[0], id_)] = set(source.members.get((key[0], id_), ()))


async def merged_persons(
    session: Session,
    owner: Owner,
    wanted: Wanted,
    funnels: Sequence[ActiveFunnel],
    everywhere: set[Partition],
    cache: PersonCache,
    added: Mapping[PersonKey, Sequence[PersonEvent]],
    known: Known | None = None,
) -> Merged:
    """Evaluate the persons of the ``wanted`` ids whose roots this batch owns; signal the
    owners of the others.

    A person the cache holds is taken from it, with the events the batch stored of its
    ids, unless a signal or a change of its ids asks for it: an id's events stored by
    another process, and the ids themselves, come with a signal (``wanted.fresh``).
    ``known``: what the batch's lookup found of these ids, if nothing changed it since."""
    out = Merged()
    if not wanted.bounds:
        return out
    found = known if known is not None else await identities.known(session, wanted.bounds)
    bounds: dict[PersonKey, int] = {}
    fresh: set[PersonKey] = set()
    for key, bound in wanted.bounds.items():
        root = (key[0], found.root(key))
        if not owner.local(root):
            out.signals.append(owner.signal(root, EVALUATE, bound))
            continue
        if key in wanted.fresh:
            fresh.add(root)
        bounds[root] = min(bounds.get(root, bound), bound)
        out.concerned[root] |= wanted.concerned[key] or {
            f.id for f in funnels if f.project_id == key[0]
        }
        out.partitions[root] |= wanted.partitions[key] or everywhere
    by_project: dict[str, dict[str, int]] = defaultdict(dict)
    for (project, person), bound in bounds.items():
        by_project[project][person] = bound
    back = lookbacks(funnels)  # events read before the bound, for what starts after it
    for project, persons in sorted(by_project.items()):
        for group_bound, people in bound_groups(persons):
            read_from = group_bound - back.get(project, 0)
            ids = {p: sorted({p, *found.members.get((project, p), ())}) for p in people}
            unknown = []
            for person, got in ids.items():
                key = (project, person)
                out.ids[key] = [person, *(i for i in got if i != person)]
                out.since[key] = group_bound
                held = None if key in fresh else cache.get(key, read_from)
                if held is None:
                    unknown.append(person)
                    continue
                out.cached[key] = held
                out.events[key] = [e for e in held.events if e.ts >= read_from]
                out.added[key] = [e for i in got for e in added.get((project, i), ())]
            read = await events.person_events(
                session, project, [i for p in unknown for i in ids[p]], read_from
            )
            for person in unknown:
                key = (project, person)
                out.events[key] = [e for i in ids[person] for e in read.get(i, ())]
                out.added[key] = []
    return out


async def demote(
    session: Session,
    demoted: Mapping[PersonKey, str],
    funnels: Sequence[ActiveFunnel],
    now_us: int,
) -> None:
    """Remove the progress of ids that became part of another person (their fired timers
    stay: they stand for the person's, see ``timers``)."""
    by_project: dict[str, list[str]] = defaultdict(list)
    for project, id_ in sorted(demoted):
        by_project[project].append(id_)
    for project, ids in sorted(by_project.items()):
        mine = [f.id for f in funnels if f.project_id == project]
        await progress.remove_persons(session, mine, ids, now_us)
