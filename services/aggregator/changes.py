"""What changed in a funnel's stored progress: the rows to delete and to insert, the persons
whose rows changed, the entries that advanced, and the re-marketing timers to keep pending.

Pure. Only rows that changed are written: a person with one new event usually changes one
entry and adds one touch, however long their history. Stored rows are compared by what they
hold (:class:`Stored`, read back), or, for persons the person cache holds, with what the
cache says is stored (compared without reading, and the rows that differ deleted by key).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from services.aggregator.engine import PersonProgress
from services.aggregator.model import Partition
from services.aggregator.person_cache import PersonKey
from shared.clock import US
from shared.funnel import Entry, Touch

EntryKey = tuple[str, int, str, bool, str]  # person, t0, step times, disqualified, values
TouchKey = tuple[str, int, int, str]  # person, instant, sequence number, values


def canonical(value: Any) -> str:
    """JSON with sorted keys: equal documents, equal text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(slots=True)
class Stored:
    """Ids of stored rows, grouped by what they hold (JSON columns as canonical text)."""

    entries: dict[EntryKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    touches: dict[TouchKey, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add_entries(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of (id, person, t0, step times, disqualified, step values)."""
        for id_, person, t0, times, disqualified, values in rows:
            key = (person, t0, canonical(times), disqualified, canonical(values))
            self.entries[key].append(id_)

    def add_touches(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of (id, person, instant, sequence number, values)."""
        for id_, person, ts, seq, values in rows:
            self.touches[(person, ts, seq, canonical(values))].append(id_)


@dataclass(frozen=True, slots=True)
class Advance:
    """An entry that got further than it was stored: steps ``before + 1 .. after`` are new."""

    person_id: str
    entry: Entry
    before: int


@dataclass(slots=True)
class ProgressChanges:
    """One funnel's rows to write: stored rows to delete by id, rows of cached persons to
    delete by key (entries by start instant, touches by instant and sequence number), rows
    to insert; the persons whose rows changed, and the entries that advanced."""

    entry_ids: list[int] = field(default_factory=list)
    touch_ids: list[int] = field(default_factory=list)
    entry_keys: list[tuple[str, int]] = field(default_factory=list)
    touch_keys: list[tuple[str, int, int]] = field(default_factory=list)
    entries: list[tuple[str, Entry]] = field(default_factory=list)
    touches: list[tuple[str, Touch]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    advances: list[Advance] = field(default_factory=list)


def persons_to_read(
    progress: Mapping[str, PersonProgress],
    first_seen: AbstractSet[str] = frozenset(),
    held: Mapping[str, PersonProgress] | None = None,
) -> list[str]:
    """Persons whose stored rows must be read to compare: neither new nor cached."""
    held = held or {}
    return sorted(p for p in progress if p not in first_seen and p not in held)


def diff(
    progress: Mapping[str, PersonProgress],
    stored: Stored,
    first_seen: AbstractSet[str] = frozenset(),
    held: Mapping[str, PersonProgress] | None = None,
) -> ProgressChanges:
    """The writes that make the persons' stored entries and touches equal ``progress``.

    ``stored`` holds the rows of :func:`persons_to_read`. Persons in ``first_seen`` have no
    stored event from the bound on other than the batch's, hence no stored progress: all
    their rows are new. For persons in ``held``, it is what is stored for them.
    """
    held = held or {}
    out = ProgressChanges()
    before = _reached_before(stored.entries)
    unknown = persons_to_read(progress, first_seen, held)
    entries = [(_entry_key(person, e), e) for person in unknown for e in progress[person].entries]
    touches = [
        ((person, t.ts, t.seq, canonical(dict(t.values))), t)
        for person in unknown
        for t in progress[person].touches
    ]
    new_entries, out.entry_ids, stale_entries = _unmatched(entries, stored.entries)
    new_touches, out.touch_ids, stale_touches = _unmatched(touches, stored.touches)
    out.entries = [(k[0], e) for k, e in new_entries]
    out.touches = [(k[0], t) for k, t in new_touches]
    for person in sorted(first_seen & progress.keys()):
        out.entries.extend((person, e) for e in progress[person].entries)
        out.touches.extend((person, t) for t in progress[person].touches)
    for person in sorted(p for p in progress if p in held and p not in first_seen):
        _against_held(out, person, held[person], progress[person], before)
    out.changed = stale_entries | stale_touches
    out.changed |= {person for person, _ in out.entries} | {person for person, _ in out.touches}
    out.changed |= {k[0] for k in out.entry_keys} | {k[0] for k in out.touch_keys}
    out.advances = [
        Advance(person, e, before.get((person, e.t0), 0))
        for person, e in out.entries
        if not e.disqualified and e.reached > before.get((person, e.t0), 0)
    ]
    return out


def _entry_key(person: str, e: Entry) -> EntryKey:
    values = {p: list(v) for p, v in e.step_values.items()}
    return (person, e.t0, canonical(list(e.step_times)), e.disqualified, canonical(values))


K = TypeVar("K", EntryKey, TouchKey)
V = TypeVar("V")


def _unmatched(
    desired: list[tuple[K, V]], stored: Mapping[K, list[int]]
) -> tuple[list[tuple[K, V]], list[int], set[str]]:
    """Desired rows with no stored twin; the ids of stored rows with no desired twin (each
    twin found keeps the last of its ids), and the persons those belong to."""
    taken: dict[K, int] = defaultdict(int)
    missing = []
    for key, value in desired:
        if taken[key] < len(stored.get(key, ())):
            taken[key] += 1
        else:
            missing.append((key, value))
    left = {key: ids[: len(ids) - taken.get(key, 0)] for key, ids in stored.items()}
    return missing, [i for ids in left.values() for i in ids], {k[0] for k, v in left.items() if v}


def _reached_before(stored: Mapping[EntryKey, list[int]]) -> dict[tuple[str, int], int]:
    """How far each stored clean entry got, by (person, t0)."""
    before: dict[tuple[str, int], int] = {}
    for (person, t0, times, disqualified, _), ids in stored.items():
        if ids and not disqualified:
            before[(person, t0)] = max(before.get((person, t0), 0), len(orjson.loads(times)))
    return before


def _against_held(
    out: ProgressChanges,
    person: str,
    was: PersonProgress,
    now: PersonProgress,
    before: dict[tuple[str, int], int],
) -> None:
    """Add to ``out`` what differs between a cached person's stored and new progress, and to
    ``before`` how far their stored clean entries got."""
    for e in was.entries:
        if not e.disqualified:
            before[(person, e.t0)] = max(before.get((person, e.t0), 0), e.reached)
    for t0, is_stored, fresh in _entry_changes(was.entries, now.entries):
        if is_stored:
            out.entry_keys.append((person, t0))
        out.entries.extend((person, e) for e in fresh)
    for (ts, seq), is_stored, touch in _touch_changes(was.touches, now.touches):
        if is_stored:
            out.touch_keys.append((person, ts, seq))
        if touch is not None:
            out.touches.append((person, touch))


def _entry_changes(
    was: Sequence[Entry], now: Sequence[Entry]
) -> list[tuple[int, bool, list[Entry]]]:
    """Per start instant whose entries differ: that instant, whether it has stored entries
    (all of them are replaced; two entries rarely start at the same instant) and the
    entries it now has. Both are in time order; what they share at the start (usually all
    but the last few) is skipped, back to a start instant boundary."""
    n = _shared_prefix(was, now)
    differing = {e.t0 for e in (*was[n : n + 1], *now[n : n + 1])}
    while n and was[n - 1].t0 in differing:
        n -= 1
    old: dict[int, list[Entry]] = defaultdict(list)
    new: dict[int, list[Entry]] = defaultdict(list)
    for e in was[n:]:
        old[e.t0].append(e)
    for e in now[n:]:
        new[e.t0].append(e)
    return [
        (t0, t0 in old, new.get(t0, []))
        for t0 in sorted(old.keys() | new.keys())
        if not _same_entries(old.get(t0, []), new.get(t0, []))
    ]


def _same_entries(a: list[Entry], b: list[Entry]) -> bool:
    if len(a) != len(b):
        return False
    rest = list(b)
    for e in a:
        if e not in rest:
            return False
        rest.remove(e)
    return True


def _touch_changes(
    was: Sequence[Touch], now: Sequence[Touch]
) -> list[tuple[tuple[int, int], bool, Touch | None]]:
    """Touches that differ, by instant and sequence number (unique per person): whether one
    is stored there, and what is to be stored there now. Both are in time order; what they
    share at the start is skipped."""
    n = _shared_prefix(was, now)
    old = {(t.ts, t.seq): t for t in was[n:]}
    new = {(t.ts, t.seq): t for t in now[n:]}
    return [
        (k, k in old, new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def _shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A re-marketing occurrence to keep pending until ``fire_at_us`` (due plus grace)."""

    person_id: str
    rule: str
    entry_t0: int
    occurrence: int
    due_us: int
    fire_at_us: int


def pending_timers(
    progress: Mapping[str, PersonProgress], since: int, grace_s: Mapping[str, int]
) -> list[PendingTimer]:
    """The live, uncancelled occurrences of the entries that start from ``since`` on: what
    the pending timers become (a goal reached, even by a late event, cancels them)."""
    return [
        PendingTimer(
            person,
            t.rule,
            t.entry_t0,
            t.occurrence,
            t.due_us,
            t.due_us + grace_s.get(t.rule, 0) * US,
        )
        for person, p in progress.items()
        for t in p.timers
        if not t.cancelled and t.entry_t0 >= since
    ]


def counted(
    changed: Iterable[tuple[str, str, str]], partitions: Mapping[PersonKey, set[Partition]]
) -> set[tuple[str, str, int]]:
    """The (funnel, topic, partition) change counters to move: those of the partitions the
    batch's events of each changed (funnel, project, person) came from."""
    return {
        (funnel_id, topic, partition)
        for funnel_id, project, person in changed
        for topic, partition in partitions[(project, person)]
    }
