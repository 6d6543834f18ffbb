"""Property-based, in memory: the aggregator's identity resolution (services/aggregator/
identity.py) and the production engine + report over the persons it makes equal the oracle
(tests/oracle_identity.py, written from the rules alone) on random linked streams."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.aggregator import identity
from services.aggregator.engine import evaluate
from services.api.reports.python import Window
from shared.funnel import US, definition_from_doc
from tests.identity_streams import identity_streams
from tests.oracle import oracle_report
from tests.oracle_identity import Sent, identities, persons
from tests.oracle_timers import oracle_timers
from tests.pipeline import merged_by, production_report
from tests.unit.test_engine_properties import definitions, examples
from tests.unit.test_oracle_identity_properties import RULES

FAR = 10**9 * US


def resolution(delivered: list[Sent]) -> identity.Resolution:
    return identity.resolve(
        c
        for e in delivered
        for c in identity.claims_of(
            e.event_id, e.ts, e.name, e.person_id, e.user_id, e.anonymous_id, e.properties
        )
    )


@examples(100)
@given(stream=identity_streams())
def test_links_equal_the_oracles(stream):
    events, delivered = stream
    got, want = resolution(delivered), identities(events)
    assert {i: (x.target, x.ts, x.event_id) for i, x in got.links.items()} == {
        i: (c.user, c.ts, c.event_id) for i, c in want.target.items()
    }
    ids = {i for e in events for i in (e.person_id, e.user_id, e.anonymous_id) if i}
    assert {i: got.root(i) for i in ids} == {i: want.root(i) for i in ids}


@examples(100)
@given(stream=identity_streams())
def test_the_first_refusal_of_each_pair_of_ids_equals_the_oracles(stream):
    """The oracle refuses every claim of a pair; the aggregator records a pair's first."""
    events, delivered = stream
    got = {
        (r.claim.anon, r.claim.user): (r.claim, r.reason) for r in resolution(delivered).refusals
    }
    want: dict[tuple[str, str], tuple[int, str, str]] = {}
    for r in identities(events).refusals:
        want.setdefault((r.claim.anon, r.claim.user), (r.claim.ts, r.claim.event_id, r.reason))
    assert {pair: (c.ts, c.event_id, reason) for pair, (c, reason) in got.items()} == want


@examples(100)
@given(
    doc=definitions(),
    rule=st.sampled_from(RULES),
    stream=identity_streams(),
    count=st.sampled_from(["uniques", "totals"]),
)
def test_reports_and_timers_of_merged_persons_equal_the_oracles(doc, rule, stream, count):
    events, delivered = stream
    doc["remarketing"] = [{**rule, "goal_step": len(doc["steps"])}]
    f = definition_from_doc(doc)
    if f.order == "any" and count == "totals":
        count = "uniques"  # the report does not count any-order attempts (see totals_entries)
    mine = merged_by(resolution(delivered).root, delivered)
    want = persons(events)
    got = production_report(f, mine, Window(0, FAR, FAR), count)
    assert [s.persons for s in got.steps] == oracle_report(f, want, 0, FAR, FAR, count).persons
    timers = {
        (p, x.rule, x.entry_t0, x.occurrence, x.due_us)
        for p, evs in mine.items()
        for x in evaluate(f, evs).timers
        if not x.cancelled
    }
    assert timers == oracle_timers(f, want)
