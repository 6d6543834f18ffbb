"""Deterministic event workloads for crash tests and benchmarks."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.events import (
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    CanonicalEvent,
    partition_for,
    record_key,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
NAMES = ("visit", "signup", "activate", "pay", "browse")
CHANNELS = ("ads", "mail", "seo", "social", "direct", "partner", "app", "tv", "print", "radio")


def events(project: str, persons: int, per_person: int, seed: int = 7) -> list[CanonicalEvent]:
    """``persons * per_person`` events over one day, in time order within each person."""
    rng = random.Random(seed)
    found = []
    for p in range(persons):
        person = f"person-{p:07d}"
        t = START + timedelta(seconds=rng.randrange(86_400))
        for i in range(per_person):
            t += timedelta(seconds=rng.randrange(1, 900), microseconds=rng.randrange(10**6))
            found.append(
                CanonicalEvent(
                    project_id=project,
                    event_id=f"{person}-{i}",
                    person_id=person,
                    user_id=person,
                    event=rng.choice(NAMES),
                    timestamp=t,
                    received_at=t,
                    properties={"channel": rng.choice(CHANNELS), "amount": rng.randrange(100)},
                )
            )
    return found


def merging(
    stream: list[CanonicalEvent],
    fraction: float,
    seed: int = 7,
    partitions: int | None = None,
    refused: float = 0.0,
) -> list[CanonicalEvent]:
    """The same events with ``fraction`` of the persons (of 2 events or more) starting
    anonymous: their events before a random one under an anonymous id, that one under both
    ids (the link), the rest under the user id; the merged counts equal the stream's. With
    ``partitions``, each anonymous id's record key lands on another partition than its user
    id's (by ``partition_for``, as ingest sends them). ``refused``: that share of the merged
    persons' anonymous ids is claimed again, by the next merged person's user id, in an
    extra event after the link (refused: an id links to one user id only; the event counts
    for that next user).
    """
    rng = random.Random(seed)
    by_person: dict[str, list[CanonicalEvent]] = {}
    for e in stream:
        by_person.setdefault(e.person_id, []).append(e)
    found: list[CanonicalEvent] = []
    merged: list[tuple[str, CanonicalEvent]] = []
    for person, evs in by_person.items():
        evs = sorted(evs, key=lambda e: e.timestamp)
        if len(evs) < 2 or rng.random() >= fraction:
            found.extend(evs)
            continue
        anon = _anonymous_id(evs[0].project_id, person, partitions)
        k = rng.randrange(1, len(evs))
        found.extend(replace(e, person_id=anon, user_id=None, anonymous_id=anon) for e in evs[:k])
        found.append(replace(evs[k], anonymous_id=anon))
        found.extend(evs[k + 1 :])
        merged.append((anon, evs[k]))
    for (anon, link), (_, other) in itertools.pairwise(merged):
        if rng.random() < refused:
            at = link.timestamp + timedelta(seconds=1)
            found.append(
                replace(other, event_id=f"{link.event_id}-refused", anonymous_id=anon, timestamp=at)
            )
    return found


def _anonymous_id(project: str, person: str, partitions: int | None) -> str:
    if partitions is None:
        return f"anon-{person}"
    spread = range(partitions)

    def partition(person_id: str) -> int:
        return partition_for(record_key(project, person_id), spread)

    return next(
        anon
        for anon in (f"anon-{person}-{i}" for i in range(100))
        if partition(anon) != partition(person)
    )


def wire(batch: list[CanonicalEvent]) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    header = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
    for e in batch:
        yield e.key, e.to_json(), header
