"""What the aggregator knows it left in the database: the persons it saw last, kept in memory.

A batch re-evaluates each person from their stored events as far back as its events reach
and compares the result with the entries and touches stored from there on. For a person in
a recent batch, both are what that batch committed: its events, and per funnel the progress
it evaluated, exact from the bound it read from (an entry depends only on the events of its
window, a touch on those of its own instant). Holding them saves two to four reads per
batch, and decoding and comparing stored JSON, for the persons that are active right now.

Only the partition's owner writes a person's events and progress while it owns it (a
funnel's redefinition bumps its version; a deletion removes it from the batch's funnels), so
what is held stays true until the partitions move: taking partitions (``Processor.load_offsets``)
clears it, and so does any batch that fails. What a batch leaves is held only once it commits.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.aggregator.engine import PersonEvent, PersonProgress
from services.aggregator.repository import PersonKey

FunnelKey = tuple[str, int]  # (funnel id, version): a redefinition starts afresh


@dataclass(slots=True)
class Known:
    """A person's stored events from ``since`` on and, per funnel evaluated, the progress
    stored for them (exact for entries that start and touches at or after ``since``)."""

    since: int
    events: list[PersonEvent]
    progress: dict[FunnelKey, PersonProgress] = field(default_factory=dict)

    def progress_from(self, funnel: FunnelKey, since: int) -> PersonProgress | None:
        """What is stored for the funnel from ``since`` (not before this one's) on."""
        found = self.progress.get(funnel)
        if found is None or since < self.since:
            return None
        entries, touches = found.entries, found.touches  # both in time order
        if (not entries or entries[0].t0 >= since) and (not touches or touches[0].ts >= since):
            return found
        return PersonProgress(
            entries[bisect_left(entries, since, key=lambda e: e.t0) :],
            touches[bisect_left(touches, since, key=lambda t: t.ts) :],
        )


class KnownPersons:
    """The most recently seen persons, at most ``capacity`` items in all: each person and
    each of their events counts one (about 1.7 KB each, measured with three funnels), so
    memory stays flat whether persons have one event or many. None of a person with more
    than ``max_events`` is held (a busy person is read from the database each time)."""

    def __init__(self, capacity: int, max_events: int = 500) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self._persons: OrderedDict[PersonKey, tuple[Known, int]] = OrderedDict()
        self._items = 0

    def __len__(self) -> int:
        return len(self._persons)

    @property
    def size(self) -> int:
        """Items held: persons plus their events."""
        return self._items

    def get(self, key: PersonKey, since: int) -> Known | None:
        """The person, if their events are known from ``since`` on."""
        found = self.peek(key)
        return found if found is not None and found.since <= since else None

    def peek(self, key: PersonKey) -> Known | None:
        found = self._persons.get(key)
        return found[0] if found is not None else None

    def put(self, key: PersonKey, known: Known) -> None:
        """Hold ``known`` (not to be changed afterwards) as the person's, the most recent."""
        self.forget([key])
        if len(known.events) > self.max_events:
            return
        n = len(known.events) + 1  # the person's progress weighs about as much as an event
        if n > self.capacity:
            return
        self._persons[key] = (known, n)
        self._items += n
        while self._items > self.capacity:
            _, (_, dropped) = self._persons.popitem(last=False)
            self._items -= dropped

    def forget(self, keys: Iterable[PersonKey]) -> None:
        for key in keys:
            found = self._persons.pop(key, None)
            if found is not None:
                self._items -= found[1]

    def clear(self) -> None:
        self._persons.clear()
        self._items = 0
