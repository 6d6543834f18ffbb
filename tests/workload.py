"""Deterministic event workloads for crash tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from shared.events import SCHEMA_HEADER, SCHEMA_VERSION, CanonicalEvent

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


def wire(batch: list[CanonicalEvent]) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    header = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
    for e in batch:
        yield e.key, e.to_json(), header
