"""The person cache: what the aggregator last committed for its most recent persons.

Per person, the stored events from a bound on and, per funnel evaluated, the progress stored
from there on. A batch reads these instead of the database for the persons it finds here.
What is held stays true while this process owns the persons' partitions; the processor
clears it when partitions are (re)assigned and when a batch fails, and adds what a batch
wrote only once the batch has committed (see docs/design.md, "The person cache").
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.aggregator.engine import PersonEvent, PersonProgress

PersonKey = tuple[str, str]  # (project id, person id)
FunnelKey = tuple[str, int]  # (funnel id, version): a redefinition starts afresh


@dataclass(slots=True)
class CachedPerson:
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


class PersonCache:
    """The most recently seen persons, at most ``capacity`` items in all: each person and
    each of their events counts one, so memory stays flat whether persons have one event
    or many. None of a person with more than ``max_events`` is held (a busy person is read
    from the database each time)."""

    def __init__(self, capacity: int, max_events: int = 500) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self._persons: OrderedDict[PersonKey, tuple[CachedPerson, int]] = OrderedDict()
        self._items = 0

    def __len__(self) -> int:
        return len(self._persons)

    @property
    def size(self) -> int:
        """Items held: persons plus their events."""
        return self._items

    def get(self, key: PersonKey, since: int) -> CachedPerson | None:
        """The person, if their events are held from ``since`` on."""
        found = self.peek(key)
        return found if found is not None and found.since <= since else None

    def peek(self, key: PersonKey) -> CachedPerson | None:
        found = self._persons.get(key)
        return found[0] if found is not None else None

    def put(self, key: PersonKey, person: CachedPerson) -> None:
        """Hold ``person`` (not to be changed afterwards) as the most recent."""
        self.forget([key])
        if len(person.events) > self.max_events:
            return
        n = len(person.events) + 1  # the person's progress weighs about as much as an event
        if n > self.capacity:
            return
        self._persons[key] = (person, n)
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

    def remember(
        self,
        since: Mapping[PersonKey, int],
        read: Mapping[PersonKey, Sequence[PersonEvent]],
        added: Mapping[PersonKey, Sequence[PersonEvent]],
        evaluated: Mapping[PersonKey, Mapping[FunnelKey, PersonProgress]],
    ) -> None:
        """After a batch committed: each person it read (their events ``read`` from their
        bound ``since`` on) is held from that bound on, with the progress just stored for
        the funnels ``evaluated`` and what was held for the others that still holds from
        there on. The events ``added`` of a held person the batch did not read (they
        concern no funnel) are added to what is held of them."""
        for key, bound in since.items():
            held = self.peek(key)
            progress: dict[FunnelKey, PersonProgress] = {}
            if held is not None:
                for funnel in held.progress:
                    kept = held.progress_from(funnel, bound)
                    if kept is not None:
                        progress[funnel] = kept
            progress.update(evaluated.get(key, {}))
            events = [*read.get(key, ()), *added.get(key, ())]
            self.put(key, CachedPerson(bound, events, progress))
        for key, new in added.items():
            if key not in since and (held := self.peek(key)) is not None:
                self.put(key, CachedPerson(held.since, [*held.events, *new], held.progress))
