"""Property-based: the oracle's identity merge depends on the set of events only, and its
re-marketing occurrences (tests/oracle_timers.py) equal the engine's on persons without
links, so that the merged comparisons elsewhere rest on a checked oracle."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.aggregator.engine import evaluate
from shared.funnel import definition_from_doc
from tests.identity_streams import deliveries, identified_events, identity_streams
from tests.oracle_identity import identities, persons, unique
from tests.oracle_timers import oracle_timers
from tests.unit.test_engine_properties import definitions, examples, streams

RULES = [
    {"name": "once", "from_step": 1, "after_seconds": 50},
    {"name": "late", "from_step": 2, "after_seconds": 20},
    {"name": "again", "from_step": 1, "after_seconds": 30, "repeat_every_seconds": 40},
    {
        "name": "series",
        "from_step": 1,
        "after_seconds": 30,
        "repeat_every_seconds": 40,
        "until_seconds": 150,
    },
]


@examples(100)
@given(data=st.data(), events=identified_events())
def test_links_and_persons_depend_on_the_set_of_events_only(data, events):
    one, other = data.draw(deliveries(events)), data.draw(deliveries(events))
    assert identities(one) == identities(other)
    assert persons(one) == persons(other) == persons(events)


@examples(100)
@given(stream=identity_streams())
def test_every_id_has_one_person_and_each_link_follows_the_rules(stream):
    events, delivered = stream
    found = identities(delivered)
    ids = {i for e in events for i in (e.person_id, e.user_id, e.anonymous_id) if i}
    roots = {found.root(i) for i in ids}
    assert all(found.root(r) == r and r not in found.target for r in roots)
    for i in ids:
        assert found.ids(i)[0] == found.root(i)
        assert i in found.ids(i)
    # Every stored event is in exactly one person, that of the id its person_id names.
    merged = persons(delivered)
    assert sorted(e.event_id for es in merged.values() for e in es) == sorted(
        e.event_id for e in unique(events)
    )
    claimed = {c for c, _ in ((r.claim, r.reason) for r in found.refusals)}
    assert claimed.isdisjoint(found.target.values())


@examples(100)
@given(doc=definitions(optional=True), rule=st.sampled_from(RULES), events=streams())
def test_the_oracles_occurrences_equal_the_engines(doc, rule, events):
    doc["remarketing"] = [{**rule, "goal_step": len(doc["steps"])}]
    f = definition_from_doc(doc)
    engine = {
        (p, x.rule, x.entry_t0, x.occurrence, x.due_us)
        for p, evs in events.items()
        for x in evaluate(f, evs).timers
        if not x.cancelled
    }
    assert oracle_timers(f, events) == engine
