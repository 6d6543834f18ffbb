"""What the aggregator keeps of its persons between batches (aggregator/person_cache.py)."""

from __future__ import annotations

from services.aggregator.engine import PersonEvent, PersonProgress
from services.aggregator.person_cache import CachedPerson, PersonCache
from shared.funnel import Entry, Touch

F = ("funnel", 1)


def progress(*instants: int) -> PersonProgress:
    return PersonProgress(
        tuple(Entry(t, (t,)) for t in instants),
        tuple(Touch(t, 0, {"ch": "x"}) for t in instants),
    )


def test_progress_from_a_later_bound_keeps_what_starts_from_there_on():
    known = CachedPerson(10, [], {F: progress(10, 20, 30)})
    later = known.progress_from(F, 20)
    assert later is not None
    assert [e.t0 for e in later.entries] == [20, 30]
    assert [t.ts for t in later.touches] == [20, 30]
    assert known.progress_from(F, 10) == progress(10, 20, 30)


def test_progress_from_an_earlier_bound_or_another_funnel_is_unknown():
    known = CachedPerson(10, [], {F: progress(10, 20)})
    assert known.progress_from(F, 9) is None
    assert known.progress_from(("funnel", 2), 10) is None  # redefined: a new version


def events(n: int) -> list[PersonEvent]:
    return [PersonEvent(str(i), i, "a") for i in range(n)]


def test_persons_and_their_events_are_kept_up_to_capacity_least_recent_out_first():
    persons = PersonCache(capacity=8)  # a person counts one, and each event one
    for name, n in (("a", 2), ("b", 2), ("c", 1)):
        persons.put(("p", name), CachedPerson(0, events(n)))
    assert (len(persons), persons.size) == (3, 8)
    persons.put(("p", "a"), CachedPerson(0, events(3)))  # a again: now the most recent, with 3
    assert persons.peek(("p", "b")) is None  # the least recent went to make room
    assert (len(persons), persons.size) == (2, 6)
    persons.put(("p", "d"), CachedPerson(0, []))
    assert persons.size == 7
    assert persons.peek(("p", "c")) is not None


def test_a_person_is_known_only_from_their_bound_on():
    persons = PersonCache(capacity=10)
    persons.put(("p", "a"), CachedPerson(100, []))
    assert persons.get(("p", "a"), 100) is not None
    assert persons.get(("p", "a"), 99) is None


def test_busy_persons_and_a_zero_capacity_keep_nothing():
    busy = PersonCache(capacity=10, max_events=2)
    busy.put(("p", "a"), CachedPerson(0, events(2)))
    busy.put(("p", "a"), CachedPerson(0, events(3)))
    assert (busy.peek(("p", "a")), busy.size) == (None, 0)
    none = PersonCache(capacity=0)
    none.put(("p", "a"), CachedPerson(0, []))
    assert len(none) == 0
