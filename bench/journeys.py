"""The report benchmark's workload: persons' raw events and the progress the aggregator
derives from them, generated together (vectorised) and checked against the real engine.

Each person makes 1 to 3 visits (70 / 20 / 10 %), at least 8 days apart; each visit opens an
entry that goes on step by step (55 % to each next one) with gaps of up to 6 hours, every
event carrying the visit's channel. Entries therefore never share an event: a 7-day window
closes before the next visit, and each later step comes after the one it follows. What an
entry holds (start, step times, values) and the touches (one per event, ``seq`` 0) are then
exactly what ``services.aggregator.engine.Evaluator`` derives from the events: ``verify``
checks that on every person (or on a random sample of a large run).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from services.aggregator.engine import Evaluator, PersonEvent
from shared.bounds import entry_bounds, touch_bounds
from shared.funnel import Entry, FunnelDefinition, Touch
from tests.workload import CHANNELS

STEPS = ("visit", "signup", "activate", "pay", "renew")
DAY_US = 86_400 * 1_000_000
WINDOW_US = 7 * DAY_US
START_US = 1_767_225_600 * 1_000_000  # 2026-01-01
RANGE_US = (START_US, START_US + 90 * DAY_US)  # 2026-01-01 to 2026-04-01
MIN_BOUND, MAX_BOUND = -(2**63), 2**63 - 1  # "no bound" in integer columns


@dataclass(frozen=True)
class Journeys:
    """Entries (one row each, grouped by person) and their events (grouped by person, in
    time order). Persons are numbered in the order of their first visit."""

    persons: int
    person: np.ndarray  # per entry
    t0: np.ndarray
    reached: np.ndarray
    times: np.ndarray  # (entries, steps): step times, -1 past ``reached``
    channel: np.ndarray  # index into CHANNELS
    ev_person: np.ndarray  # per event
    ev_step: np.ndarray  # 0-based
    ev_ts: np.ndarray
    ev_channel: np.ndarray

    def person_id(self, p: int) -> str:
        return f"p{p:07d}"


def generate(persons: int, seed: int = 3) -> Journeys:
    rng = np.random.default_rng(seed)
    visits = rng.choice([1, 2, 3], size=persons, p=[0.7, 0.2, 0.1])
    first = np.sort(START_US - 10 * DAY_US + rng.integers(0, 100 * DAY_US, persons))
    person = np.repeat(np.arange(persons), visits)
    n = len(person)
    begins = np.cumsum(visits) - visits  # each person's first entry
    spacing = 8 * DAY_US + rng.integers(0, 20 * DAY_US, n)
    spacing[begins] = 0
    spent = np.cumsum(spacing)
    t0 = first[person] + spent - np.repeat(spent[begins], visits)
    goes_on = rng.random((n, len(STEPS) - 1)) < 0.55
    reached = 1 + np.cumprod(goes_on, axis=1).sum(axis=1)
    gaps = rng.integers(1, DAY_US // 4, (n, len(STEPS) - 1))
    times = t0[:, None] + np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(gaps, 1)], 1)
    times[np.arange(len(STEPS))[None, :] >= reached[:, None]] = -1
    channel = rng.integers(0, len(CHANNELS), n)
    rows, steps = np.nonzero(times >= 0)  # row-major: per entry, in step (so time) order
    return Journeys(
        persons,
        person,
        t0,
        reached,
        times,
        channel,
        person[rows],
        steps,
        times[rows, steps],
        channel[rows],
    )


def person_slices(j: Journeys) -> tuple[np.ndarray, np.ndarray]:
    """Per person, where their entries and their events begin (one past the end appended)."""
    everyone = np.arange(j.persons + 1)
    return np.searchsorted(j.person, everyone), np.searchsorted(j.ev_person, everyone)


def entries_of(j: Journeys, a: int, b: int) -> list[Entry]:
    found = []
    for k in range(a, b):
        r = int(j.reached[k])
        found.append(
            Entry(
                int(j.t0[k]),
                tuple(int(t) for t in j.times[k, :r]),
                False,
                {"channel": (CHANNELS[j.channel[k]],) * r},
            )
        )
    return found


def touches_of(j: Journeys, a: int, b: int) -> list[Touch]:
    return [Touch(int(j.ev_ts[k]), 0, {"channel": CHANNELS[j.ev_channel[k]]}) for k in range(a, b)]


def events_of(j: Journeys, p: int, a: int, b: int) -> list[PersonEvent]:
    return [
        PersonEvent(
            f"{j.person_id(p)}-{k - a}",
            int(j.ev_ts[k]),
            STEPS[j.ev_step[k]],
            {"channel": CHANNELS[j.ev_channel[k]]},
        )
        for k in range(a, b)
    ]


def verify(j: Journeys, definition: FunnelDefinition, sample: int) -> int:
    """Check, for every person or ``sample`` random ones, that the engine derives from the
    person's events exactly the entries and touches generated, and that the touches' stored
    neighbours are ``bounds.touch_bounds``'s. Returns how many persons were checked."""
    evaluate = Evaluator(definition)
    entries_at, events_at = person_slices(j)
    previous = touch_previous(j)
    chosen = (
        range(j.persons)
        if sample >= j.persons
        else random.Random(5).sample(range(j.persons), sample)
    )
    for p in chosen:
        ea, eb, va, vb = entries_at[p], entries_at[p + 1], events_at[p], events_at[p + 1]
        progress = evaluate(events_of(j, p, va, vb))
        assert list(progress.entries) == entries_of(j, ea, eb), p
        assert list(progress.touches) == touches_of(j, va, vb), p
        stored = [None if x == MIN_BOUND else int(x) for x in previous[va:vb]]
        assert [b.previous for b in touch_bounds(progress.touches, "channel")] == stored, p
    return len(chosen)


def touch_previous(j: Journeys) -> np.ndarray:
    """Per event (each a touch with a channel): the person's previous touch's instant."""
    found = np.full(len(j.ev_ts), MIN_BOUND, np.int64)
    same = j.ev_person[1:] == j.ev_person[:-1]
    found[1:][same] = j.ev_ts[:-1][same]
    return found


def touch_next(j: Journeys) -> np.ndarray:
    """Per event (each a touch with a channel): the person's next touch's instant."""
    found = np.full(len(j.ev_ts), MAX_BOUND, np.int64)
    same = j.ev_person[1:] == j.ev_person[:-1]
    found[:-1][same] = j.ev_ts[1:][same]
    return found


def bounds_columns(j: Journeys) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, ``bounds.entry_bounds``'s left and right (person by person)."""
    left = np.empty(len(j.t0), np.int64)
    right = np.empty(len(j.t0), np.int64)
    entries_at, _ = person_slices(j)
    for p in range(j.persons):
        a, b = int(entries_at[p]), int(entries_at[p + 1])
        for k, found in enumerate(entry_bounds(entries_of(j, a, b)), start=a):
            left[k] = MIN_BOUND if found.left is None else found.left
            right[k] = MAX_BOUND if found.right is None else found.right
    return left, right
