"""A batch's identity work, in its transaction: claims stored and resolved, persons that
the links touch read as one, the standalone progress of ids that got linked removed.

A person with no claims costs one lookup per batch (``identities.known``, shared by all of
the batch's ids) and nothing else. The claims of a batch are resolved with every stored
claim connected to them (``identity.resolve`` of the component, which resolves alike alone
or among all of a project's); ids whose root changed re-evaluate both persons from the
retention horizon, since links are retroactive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.aggregator.engine import PersonEvent
from services.aggregator.identity import Claim, Refusal, claims_of, redundant, resolve
from services.aggregator.model import ActiveFunnel, Partition
from services.aggregator.person_cache import PersonKey
from services.aggregator.reevaluate import bound_groups
from services.aggregator.repository import Session, events, identities, progress
from services.aggregator.repository.identities import Known
from shared.events import CanonicalEvent, to_micros


def batch_claims(fresh: Iterable[CanonicalEvent]) -> dict[PersonKey, Claim]:
    """The claims of the batch's events, by (project, event id)."""
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
    """What the batch's claims changed: the ids of the components resolved, the new root
    of each of them, the ids whose person changed (from, to), and what is new."""

    ids: set[PersonKey] = field(default_factory=set)
    roots: dict[PersonKey, str] = field(default_factory=dict)
    moved: dict[PersonKey, tuple[str, str]] = field(default_factory=dict)
    links_made: int = 0
    refusals: list[Refusal] = field(default_factory=list)

    def root(self, key: PersonKey, known: Known) -> str:
        if key in self.ids:
            return self.roots.get(key, key[1])
        return known.root(key)

    def affected(self) -> set[PersonKey]:
        """Persons (roots now) that gained or lost ids."""
        found = {(p, r) for (p, _), pair in self.moved.items() for r in pair}
        return {key for key in found if key not in self.roots}

    def demoted(self) -> dict[PersonKey, str]:
        """Ids that were persons of their own and now are not: their new root."""
        return {k: new for k, (old, new) in self.moved.items() if old == k[1] and new != k[1]}


async def relink(
    session: Session,
    claims: Mapping[PersonKey, Claim],
    stored: Mapping[PersonKey, Sequence[PersonEvent]],
    known: Known,
) -> Relinked:
    """Store the claims of the events the batch stored and resolve their components."""
    out = Relinked()
    if not claims:
        return out
    new_ids = {(p, e.event_id) for (p, _), got in stored.items() for e in got}
    by_project: dict[str, list[Claim]] = defaultdict(list)
    for (project, _), c in claims.items():
        if (project, c.event_id) in new_ids:
            link = known.links.get((project, c.anon))
            if not redundant(c, link.link if link else None):
                by_project[project].append(c)
    for project, made in sorted(by_project.items()):
        await identities.add_claims(session, project, made)
        component = await identities.component(
            session, project, {i for c in made for i in (c.anon, c.user)}
        )
        ids = sorted({i for c in component for i in (c.anon, c.user)})
        before = await identities.stored_links(session, project, ids)
        refused = await identities.stored_refusals(session, project, ids)
        resolution = resolve(component)
        await identities.save_resolution(session, project, ids, resolution, before)
        roots = resolution.roots()
        for id_ in ids:
            key = (project, id_)
            out.ids.add(key)
            was = before[id_].root if id_ in before else id_
            now = roots.get(id_, id_)
            if now != id_:
                out.roots[key] = now
            if was != now:
                out.moved[key] = (was, now)
        out.links_made += sum(
            1
            for i, link in resolution.links.items()
            if i not in before or before[i].link.target != link.target
        )
        out.refusals += [
            r for r in resolution.refusals if (r.claim.event_id, r.claim.anon) not in refused
        ]
    return out


@dataclass(slots=True)
class Merged:
    """Persons of several ids (or whose ids changed) the batch re-evaluates: all of their
    ids' stored events from their bound on, read after the batch stored its own."""

    events: dict[PersonKey, list[PersonEvent]] = field(default_factory=dict)
    since: dict[PersonKey, int] = field(default_factory=dict)
    concerned: dict[PersonKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    partitions: dict[PersonKey, set[Partition]] = field(default_factory=lambda: defaultdict(set))
    ids: dict[PersonKey, list[str]] = field(default_factory=dict)


async def merged_persons(
    session: Session,
    since: Mapping[PersonKey, int],
    concerned: Mapping[PersonKey, set[str]],
    partitions: Mapping[PersonKey, set[Partition]],
    known: Known,
    relinked: Relinked,
    funnels: Sequence[ActiveFunnel],
    horizon_us: int,
) -> Merged:
    out = Merged()
    bounds: dict[PersonKey, int] = {}
    for key, bound in since.items():
        if known.tangled(key) or key in relinked.ids:
            root = (key[0], relinked.root(key, known))
            bounds[root] = min(bounds.get(root, bound), bound)
            out.concerned[root] |= concerned.get(key, set())
            out.partitions[root] |= partitions.get(key, set())
    everywhere = {p for found in partitions.values() for p in found}
    for root in relinked.affected():
        bounds[root] = horizon_us
        out.concerned[root] |= {f.id for f in funnels if f.project_id == root[0]}
        out.partitions[root] |= partitions.get(root, everywhere) or everywhere
    if not bounds:
        return out
    members = (await identities.known(session, bounds)).members
    by_project: dict[str, dict[str, int]] = defaultdict(dict)
    for (project, person), bound in bounds.items():
        by_project[project][person] = bound
    for project, persons in sorted(by_project.items()):
        for group_bound, people in bound_groups(persons):
            ids = {p: sorted({p, *members.get((project, p), ())}) for p in people}
            read = await events.person_events(
                session, project, [i for found in ids.values() for i in found], group_bound
            )
            for person, found in ids.items():
                key = (project, person)
                out.ids[key] = [person, *(i for i in found if i != person)]
                out.events[key] = [e for i in found for e in read.get(i, ())]
                out.since[key] = group_bound
    return out


async def demote(
    session: Session, demoted: Mapping[PersonKey, str], funnels: Sequence[ActiveFunnel]
) -> dict[str, dict[tuple[str, int], int]]:
    """Remove the progress of ids that became part of another person (their fired timers
    become the person's); return, per funnel, how far each of their entries got, by (new
    root, start instant): what was announced already."""
    announced: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)
    for (project, id_), root in sorted(demoted.items()):
        for f in (f for f in funnels if f.project_id == project):
            reached = await progress.remove_person(session, f.id, id_, root)
            for t0, n in reached.items():
                was = announced[f.id].get((root, t0), 0)
                announced[f.id][(root, t0)] = max(was, n)
    return announced
