"""What a batch with merging persons costs in statements, on real SQLite and PostgreSQL: a
fixed number of reads of links, stored progress and stored events, however many of its
persons merge, as a batch without links (the statements are counted, not timed)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event as sa_event

from services.aggregator.repository import identities, statistics
from services.api.repository import funnels as api_funnels
from services.api.schemas import FunnelIn
from shared.clock import now_us
from tests.helpers import create_key
from tests.integration.test_identity_merge import Feed, event, reached

PERSONS = 12  # merging persons, and as many who never merge

# The tables whose reads are counted, by what they hold.
READS = {
    "identity_links": "links",
    "funnel_entries": "progress",
    "funnel_touches": "progress",
    "events": "events",
}


@contextmanager
def reads(engine) -> Iterator[Counter[str]]:
    """SELECT statements run on the engine while inside, by what they read."""
    found: Counter[str] = Counter()

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        sql = statement.lstrip()
        if sql.upper().startswith(("SELECT", "WITH")):
            for table in set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.IGNORECASE)):
                if table.lower() in READS:
                    kind = READS[table.lower()]
                    if kind == "progress" and re.search(r"\b(lft_us|neighbours)\b", sql):
                        kind = "bounds"  # save_progress: the kept rows, for their bounds
                    found[kind] += 1

    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield found
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", count)


async def _funnels(sessions, project: str) -> list[str]:
    made = []
    async with sessions.begin() as session:
        await create_key(session, project, "admin")
        for name, steps in (("abc", "abc"), ("bc", "bc"), ("ac", "ac")):
            body = FunnelIn.model_validate(
                {"name": name, "steps": [{"event": s} for s in steps]}
            ).model_dump()
            made.append(await api_funnels.create_funnel(session, project, body, now_us=now_us()))
    return made


def _batches() -> list[list]:
    """Anonymous visits, then the links (with plain persons' events), then the users' events
    with anonymous events arriving after their link, then the users again (cached)."""
    merging, plain = range(PERSONS), range(PERSONS, 2 * PERSONS)
    return [
        [event("a", 10 + i, anon=f"X{i}") for i in merging]
        + [event("a", 10 + i, user=f"P{i}") for i in plain],
        [event("b", 100 + i, user=f"U{i}", anon=f"X{i}") for i in merging]
        + [event("b", 100 + i, user=f"P{i}") for i in plain],
        [event("c", 200 + i, user=f"U{i}") for i in merging]
        + [event("a", 50 + i, anon=f"X{i}") for i in merging]
        + [event("c", 200 + i, user=f"P{i}") for i in plain],
        [event("c", 300 + i, user=f"U{i}") for i in merging]
        + [event("c", 300 + i, user=f"P{i}") for i in plain],
    ]


async def test_a_batch_with_merging_persons_reads_in_a_fixed_number_of_rounds(engine, sessions):
    funnel_ids = await _funnels(sessions, "proj")
    feed = Feed(sessions)
    await feed.finish_backfill()
    counted = []
    for batch in _batches():
        with reads(engine) as found:
            await feed.send(batch)
        counted.append(dict(found))
    # Per batch: the batch's lookup of links (a second round along links found) and the
    # resolution's links; one round of stored progress (entries and touches) for every
    # funnel and bound; the plain persons' events and the merged persons' events.
    for found in counted:
        assert found.get("links", 0) <= 3, counted
        assert found.get("progress", 0) <= 2, counted
        assert found.get("events", 0) <= 2, counted
        # Storing the bounds reads the changed persons' kept rows once per funnel written
        # (entries and touches), merging or not.
        assert found.get("bounds", 0) <= 2 * len(funnel_ids), counted
    # The same answers as ever: every merging person is one person, with two entries (its
    # anonymous visits at 10 and at 50) that both reached the last step.
    merged = {f"U{i}": [3, 3] for i in range(PERSONS)}
    plain = {f"P{i}": [3] for i in range(PERSONS, 2 * PERSONS)}
    assert await reached(sessions, funnel_ids[0]) == merged | plain


async def test_persons_of_a_component_read_in_part_are_read_again(sessions, monkeypatch):
    # Every component counts as cut short: the persons are looked up as stored, not taken
    # from the resolution, and the answer is the same.
    monkeypatch.setattr(identities, "MAX_COMPONENT_CLAIMS", 1)
    funnel_id = (await _funnels(sessions, "proj"))[0]
    feed = Feed(sessions)
    await feed.finish_backfill()
    await feed.send([event("a", 1, anon="X")])
    await feed.send([event("b", 2, user="U", anon="X")])
    await feed.send([event("c", 3, user="U")])
    assert await reached(sessions, funnel_id) == {"U": [3]}


async def test_young_identity_tables_get_their_statistics_refreshed(database_url, sessions):
    # Planned on the statistics of an empty table, a batch's lookup of its ids compares every
    # link with every id: the identity tables are analyzed as they grow, as events are.
    feed = Feed(sessions)
    await feed.send([event("b", i, user=f"U{i}", anon=f"X{i}") for i in range(1200)])
    wanted = ["identity_links", "identity_claims"] if database_url.startswith("postgresql") else []
    analyzed: list[str] = []
    for _ in range(40):  # PostgreSQL publishes table statistics within about a second
        async with sessions.begin() as session:
            analyzed += await statistics.analyze_if_stale(session)
        if set(wanted) <= set(analyzed):
            break
        await asyncio.sleep(0.1)
    assert sorted(set(analyzed) & {"identity_links", "identity_claims"}) == sorted(wanted)
