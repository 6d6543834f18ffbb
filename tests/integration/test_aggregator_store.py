"""The aggregator's unit of work against real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from services.aggregator.processor import Processor
from services.aggregator.repository import events as event_rows
from services.aggregator.repository import funnels as funnel_rows
from services.aggregator.repository import statistics
from services.aggregator.repository.offsets import StaleOffsets
from services.aggregator.repository.progress import ENTRY_COLUMNS, TOUCH_COLUMNS
from services.aggregator.source import SourceRecord
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from services.api.schemas import FunnelIn
from shared.clock import now_us
from shared.db import alembic_config, bulk_insert, create_engine, migrate, sessionmaker
from shared.events import EVENTS_TOPIC
from shared.tables import (
    consumer_offsets,
    dead_letters,
    events,
    funnel_entries,
    funnel_touches,
    remarketing_timers,
)
from tests.databases import postgres_database
from tests.helpers import canonical, create_key, records

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
GROUP = "test-group"


async def new_funnel(sessions, *steps, **options) -> str:
    body = FunnelIn.model_validate(
        {"name": "f", "steps": [{"event": s} for s in steps], **options}
    ).model_dump()
    async with sessions.begin() as session:
        await create_key(session, "proj", "admin")
        return await api_funnels.create_funnel(session, "proj", body, now_us=now_us())


async def reached(sessions, funnel_id) -> dict[str, list[int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(funnel_entries.c.person_id, funnel_entries.c.reached)
            .where(funnel_entries.c.funnel_id == funnel_id)
            .order_by(funnel_entries.c.person_id, funnel_entries.c.t0_us)
        )
        found: dict[str, list[int]] = {}
        for person, n in rows:
            found.setdefault(person, []).append(n)
        return found


@pytest.fixture
def processor(sessions):
    return Processor(sessions, GROUP, horizon_us=lambda: 0)


async def finish_backfill(processor) -> None:
    while await processor.backfill_step(100):
        pass


async def test_a_batch_commits_events_progress_and_offsets_together(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b")
    await finish_backfill(processor)
    batch = [canonical("p", "a", T0), canonical("p", "b", T0 + 5), canonical("q", "a", T0)]
    moved = await processor.apply(records(batch), {})
    assert moved == {(EVENTS_TOPIC, 0): 3}
    assert await reached(sessions, funnel_id) == {"p": [2], "q": [1]}
    async with sessions() as session:
        assert await session.scalar(select(consumer_offsets.c.next_offset)) == 3


async def test_redelivered_records_change_nothing(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b")
    await finish_backfill(processor)
    batch = [canonical("p", "a", T0), canonical("p", "b", T0 + 5)]
    await processor.apply(records(batch), {})
    # The same events published again (a producer retry) at later offsets.
    await processor.apply(records(batch, first_offset=2), {(EVENTS_TOPIC, 0): 2})
    assert await reached(sessions, funnel_id) == {"p": [2]}
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(events)) == 2


async def test_progress_follows_the_stored_version_of_a_reused_event_id(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b", "c", window_seconds=3600)
    await finish_backfill(processor)
    await processor.apply(records([canonical("p", "a", T0, event_id="x")]), {})
    # "x" again with other content is a duplicate: p keeps a at T0, c follows nothing.
    # Twins inside one batch: the last one is stored, and q's progress follows it.
    batch = [
        canonical("p", "b", T0 + 5, event_id="x"),
        canonical("p", "c", T0 + 10, event_id="y"),
        canonical("q", "a", T0, event_id="w"),
        canonical("q", "b", T0 + 5, event_id="w"),
    ]
    await processor.apply(records(batch, first_offset=1), {(EVENTS_TOPIC, 0): 1})
    assert await reached(sessions, funnel_id) == {"p": [1]}
    async with sessions() as session:
        stored = await session.execute(select(events.c.event_id, events.c.name))
        assert sorted(stored) == [("w", "b"), ("x", "a"), ("y", "c")]


async def test_a_consumer_with_stale_offsets_cannot_commit(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b")
    await finish_backfill(processor)
    await processor.apply(records([canonical("p", "a", T0)]), {})
    with pytest.raises(StaleOffsets):
        # This consumer believes the partition is still at 0: another one moved it.
        await processor.apply(
            records([canonical("q", "a", T0)], first_offset=0), {(EVENTS_TOPIC, 0): 0}
        )
    assert await reached(sessions, funnel_id) == {"p": [1]}


async def test_a_partition_held_before_its_first_record_is_held_by_its_row(sessions, processor):
    """Signals to a partition with nothing applied are taken under its offset row, made at
    0 (loaded as nothing stored); its first batch moves it, and a consumer that still
    believes nothing is applied there can no longer commit."""
    funnel_id = await new_funnel(sessions, "a", "b")
    await finish_backfill(processor)
    partition = (EVENTS_TOPIC, 0)
    await processor.apply_signals({partition: None})
    async with sessions() as session:
        assert await session.scalar(select(consumer_offsets.c.next_offset)) == 0
    assert await processor.load_offsets([partition]) == {}
    await processor.apply(records([canonical("p", "a", T0)]), {partition: None})
    async with sessions() as session:
        assert await session.scalar(select(consumer_offsets.c.next_offset)) == 1
    zombie = Processor(sessions, GROUP, horizon_us=lambda: 0)
    with pytest.raises(StaleOffsets):
        await zombie.apply_signals({partition: None})
    assert await reached(sessions, funnel_id) == {"p": [1]}


async def test_what_a_consumer_knows_of_its_persons_is_dropped_on_assignment(sessions, processor):
    """A consumer keeps its persons' stored state in memory (person_cache.py); while its partition
    was elsewhere, another consumer wrote them, so taking it back must forget that state."""
    funnel_id = await new_funnel(sessions, "a", "b", "c", window_seconds=3600)
    await finish_backfill(processor)
    other = Processor(sessions, GROUP, horizon_us=lambda: 0)
    partition = (EVENTS_TOPIC, 0)
    await processor.apply(records([canonical("p", "a", T0)]), {})
    assert processor.cache.peek(("proj", "p")) is not None
    await other.load_offsets([partition])
    await other.apply(records([canonical("p", "b", T0 + 5)], first_offset=1), {partition: 1})
    assert await processor.load_offsets([partition]) == {partition: 2}
    await processor.apply(records([canonical("p", "c", T0 + 10)], first_offset=2), {partition: 2})
    assert await reached(sessions, funnel_id) == {"p": [3]}


def persons_by_source() -> dict[str, float]:
    return {
        source: REGISTRY.get_sample_value(
            "funnel_aggregator_person_histories_total", {"source": source}
        )
        or 0.0
        for source in ("memory", "database")
    }


async def test_a_person_of_the_last_batch_is_not_read_again(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b", window_seconds=3600)
    await finish_backfill(processor)
    start = persons_by_source()
    await processor.apply(records([canonical("p", "a", T0)]), {})
    await processor.apply(
        records([canonical("p", "b", T0 + 5)], first_offset=1), {(EVENTS_TOPIC, 0): 1}
    )
    now = persons_by_source()
    assert (now["database"] - start["database"], now["memory"] - start["memory"]) == (1, 1)
    assert await reached(sessions, funnel_id) == {"p": [2]}


async def test_a_failed_batch_forgets_what_the_consumer_knew(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b", "c", window_seconds=3600)
    await finish_backfill(processor)
    other = Processor(sessions, GROUP, horizon_us=lambda: 0)
    partition = (EVENTS_TOPIC, 0)
    await processor.apply(records([canonical("p", "a", T0)]), {})
    await other.apply(records([canonical("p", "b", T0 + 5)], first_offset=1), {partition: 1})
    with pytest.raises(StaleOffsets):
        await processor.apply(
            records([canonical("p", "c", T0 + 10)], first_offset=1), {partition: 1}
        )
    await processor.apply(records([canonical("p", "c", T0 + 10)], first_offset=2), {partition: 2})
    assert await reached(sessions, funnel_id) == {"p": [3]}


async def test_a_late_twin_of_an_instant_renumbers_the_touches_stored(sessions, processor):
    """Touches of one instant are numbered in event order: a late event that sorts first
    takes number 0 from the stored one, whose row must go (known person or not)."""
    funnel_id = await new_funnel(sessions, "a", "b", breakdowns=["channel"])
    await finish_backfill(processor)
    partition = (EVENTS_TOPIC, 0)
    await processor.apply(records([canonical("p", "a", T0, event_id="z", channel="mail")]), {})
    late = canonical("p", "a", T0, event_id="y", channel="ads")
    await processor.apply(records([late], first_offset=1), {partition: 1})
    async with sessions() as session:
        touches = await api_progress.touches_in_range(
            session, funnel_id, T0 * 10**6, (T0 + 1) * 10**6
        )
    assert [(t.seq, dict(t.values)) for t in touches["p"]] == [
        (0, {"channel": "ads"}),
        (1, {"channel": "mail"}),
    ]


async def test_entries_that_start_together_are_replaced_together(sessions, processor):
    """Stored entries are replaced per start instant. Two step-1 events at one instant open
    one entry (they take steps as far as they can); a later one opens its own."""
    funnel_id = await new_funnel(sessions, "a", "a", window_seconds=3600)
    await finish_backfill(processor)
    twins = [canonical("p", "a", T0, event_id="x1"), canonical("p", "a", T0, event_id="x2")]
    await processor.apply(records(twins), {})
    assert await reached(sessions, funnel_id) == {"p": [2]}
    later = canonical("p", "a", T0 + 5, event_id="x3")
    await processor.apply(records([later], first_offset=2), {(EVENTS_TOPIC, 0): 2})
    assert await reached(sessions, funnel_id) == {"p": [2, 1]}


async def test_a_redefined_funnel_does_not_use_what_was_kept_of_the_old_one(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b", "c", window_seconds=3600)
    await finish_backfill(processor)
    partition = (EVENTS_TOPIC, 0)
    batch = [canonical("p", "a", T0), canonical("p", "b", T0 + 5)]
    await processor.apply(records(batch), {})
    assert await reached(sessions, funnel_id) == {"p": [2]}
    body = FunnelIn.model_validate(
        {"name": "f", "steps": [{"event": "b"}, {"event": "c"}], "window_seconds": 3600}
    ).model_dump()
    async with sessions.begin() as session:
        await api_funnels.redefine_funnel(session, funnel_id, body, now_us=now_us())
    await finish_backfill(processor)
    assert await reached(sessions, funnel_id) == {"p": [1]}
    await processor.apply(records([canonical("p", "c", T0 + 10)], first_offset=2), {partition: 2})
    assert await reached(sessions, funnel_id) == {"p": [2]}


async def test_a_late_event_recomputes_the_person(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b", "c", window_seconds=3600)
    await finish_backfill(processor)
    await processor.apply(records([canonical("p", "b", T0 + 10), canonical("p", "c", T0 + 20)]), {})
    assert await reached(sessions, funnel_id) == {}
    await processor.apply(
        records([canonical("p", "a", T0)], first_offset=2), {(EVENTS_TOPIC, 0): 2}
    )
    assert await reached(sessions, funnel_id) == {"p": [3]}


async def test_poison_records_go_to_dead_letters_and_the_batch_goes_on(sessions, processor):
    funnel_id = await new_funnel(sessions, "a", "b")
    await finish_backfill(processor)
    poison = SourceRecord(EVENTS_TOPIC, 0, 0, b"k", b"not json", 0)
    good = records([canonical("p", "a", T0)], first_offset=1)
    assert await processor.apply([poison, *good], {}) == {(EVENTS_TOPIC, 0): 2}
    async with sessions() as session:
        [(offset, reason)] = (
            await session.execute(select(dead_letters.c.offset, dead_letters.c.reason))
        ).all()
    assert offset == 0
    assert "not JSON" in reason
    assert await reached(sessions, funnel_id) == {"p": [1]}


async def test_a_funnel_created_later_is_backfilled_from_history(sessions, processor):
    history = [canonical(f"p{i}", "a", T0 + i) for i in range(7)] + [canonical("p3", "b", T0 + 60)]
    await processor.apply(records(history), {})
    funnel_id = await new_funnel(sessions, "a", "b")
    assert await reached(sessions, funnel_id) == {}
    while await processor.backfill_step(3):
        pass
    found = await reached(sessions, funnel_id)
    assert found == {f"p{i}": [2 if i == 3 else 1] for i in range(7)}
    async with sessions() as session:
        row = await api_funnels.get_funnel(session, "proj", funnel_id)
    assert row is not None
    assert (row.backfill_done, row.backfill_persons) == (True, 7)


async def test_events_during_a_backfill_are_counted_exactly_once(sessions, processor):
    await processor.apply(records([canonical(f"p{i}", "a", T0) for i in range(6)]), {})
    funnel_id = await new_funnel(sessions, "a", "b")
    await processor.backfill_step(3)  # p0..p2 done, p3..p5 pending
    late = [canonical("p1", "b", T0 + 1), canonical("p4", "b", T0 + 1)]
    await processor.apply(records(late, first_offset=6), {(EVENTS_TOPIC, 0): 6})
    await finish_backfill(processor)
    assert await reached(sessions, funnel_id) == {
        f"p{i}": [2 if i in (1, 4) else 1] for i in range(6)
    }


async def test_a_batch_re_evaluates_as_far_back_as_its_events_can_reach(sessions, processor):
    """A batch re-evaluates a person only from (window + longest re-marketing offset) before
    its earliest event: older entries keep their rows, newer ones are exact, including a
    timer cancelled by a goal reached after the window but before the timer is due."""
    rule = {"name": "nudge", "after_seconds": 30, "repeat_every_seconds": 40, "created_at_us": 1}
    funnel_id = await new_funnel(
        sessions, "a", "b", window_seconds=60, remarketing=[{**rule, "until_seconds": 150}]
    )
    await finish_backfill(processor)
    offset = 0

    async def deliver(*batch) -> None:
        nonlocal offset
        await processor.apply(
            records(list(batch), first_offset=offset), {(EVENTS_TOPIC, 0): offset or None}
        )
        offset += len(batch)

    await deliver(canonical("p", "a", T0), canonical("q", "a", T0 - 1000))
    await deliver(canonical("p", "b", T0 + 100))  # after the window (60 s), before 110 and 150 s
    await deliver(canonical("q", "b", T0 - 990))  # late: q's entry converts
    await deliver(canonical("p", "b", T0 + 1000))  # far later: nothing old is touched
    assert await reached(sessions, funnel_id) == {"p": [1], "q": [2]}
    t = remarketing_timers.c
    async with sessions() as session:
        pending = await session.execute(
            select(t.person_id, t.due_us).where(t.funnel_id == funnel_id, t.status == "pending")
        )
        due = sorted((person, due_us // 1_000_000 - T0) for person, due_us in pending)
    # p's occurrences due 30 and 70 s after its entry; 110 and 150 cancelled by b at 100 s.
    assert due == [("p", 30), ("p", 70)]


async def test_persons_of_one_batch_are_re_evaluated_from_their_own_bounds(sessions, processor):
    """A very late event re-evaluates its own person from far back, not the batch's others:
    persons whose bounds differ by more than a day are handled as separate groups."""
    funnel_id = await new_funnel(sessions, "a", "b", window_seconds=60)
    await finish_backfill(processor)
    later = T0 + 3 * 86_400
    await processor.apply(records([canonical("p", "a", T0), canonical("q", "a", later)]), {})
    # Days apart: p's event is late (its entry started at T0), q's is live.
    late_and_live = [canonical("p", "b", T0 + 30), canonical("q", "b", later + 30)]
    await processor.apply(records(late_and_live, first_offset=2), {(EVENTS_TOPIC, 0): 2})
    assert await reached(sessions, funnel_id) == {"p": [2], "q": [2]}
    # q again, live, with p's late entry left alone and q's first entry kept.
    again = [canonical("q", "a", later + 10_000), canonical("q", "b", later + 10_010)]
    await processor.apply(records(again, first_offset=4), {(EVENTS_TOPIC, 0): 4})
    assert await reached(sessions, funnel_id) == {"p": [2], "q": [2, 2]}


@pytest.fixture
def english_database_url():
    with postgres_database(icu_locale="en") as url:
        migrate(url)
        yield url


async def test_backfill_and_live_processing_agree_on_person_order_under_a_language_collation(
    english_database_url,
):
    """The backfill walks persons in the database's order and live processing compares them
    with its cursor in Python's: under "en" ("a1" < "B1" < "c1"), without byte order on person
    ids, live events of a person the backfill had passed were left out."""
    engine = create_engine(english_database_url)
    try:
        sessions = sessionmaker(engine)
        processor = Processor(sessions, GROUP, horizon_us=lambda: 0)
        persons = ["a1", "B1", "c1", "D1"]
        await processor.apply(records([canonical(p, "a", T0) for p in persons]), {})
        funnel_id = await new_funnel(sessions, "a", "b")
        await processor.backfill_step(2)
        late = [canonical(p, "b", T0 + 1) for p in persons]
        await processor.apply(records(late, first_offset=4), {(EVENTS_TOPIC, 0): 4})
        await finish_backfill(processor)
        assert await reached(sessions, funnel_id) == {p: [2] for p in persons}
    finally:
        await engine.dispose()


async def test_retention_expires_old_events_and_keeps_older_entries(sessions):
    funnel_id = await new_funnel(sessions, "a", "b")
    horizon = {"us": 0}
    processor = Processor(sessions, GROUP, horizon_us=lambda: horizon["us"])
    await finish_backfill(processor)
    await processor.apply(records([canonical("p", "a", T0), canonical("p", "b", T0 + 5)]), {})
    horizon["us"] = (T0 + 100) * 1_000_000
    assert await processor.purge_expired() == 2
    # A later entry of the same person is recomputed; the entry before the horizon stays.
    later = [canonical("p", "a", T0 + 200), canonical("p", "x", T0 + 50)]
    await processor.apply(records(later, first_offset=2), {(EVENTS_TOPIC, 0): 2})
    assert await reached(sessions, funnel_id) == {"p": [2, 1]}
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(events)) == 1


async def test_young_tables_get_their_statistics_refreshed(sessions, database_url, processor):
    batch = [canonical(f"p{i}", "a", T0 + i) for i in range(1500)]
    await processor.apply(records(batch), {})
    expected = ["events"] if database_url.startswith("postgresql") else []
    first: list[str] = []
    for _ in range(40):  # PostgreSQL publishes table statistics within about a second
        async with sessions.begin() as session:
            first = await statistics.analyze_if_stale(session)
        if first == expected:
            break
        await asyncio.sleep(0.1)
    async with sessions.begin() as session:
        second = await statistics.analyze_if_stale(session)
    assert (first, second) == (expected, [])


class _Abort(Exception):
    pass


async def test_bulk_writes_first_in_a_transaction_roll_back_with_it(sessions):
    """COPY goes to the bare asyncpg connection: it must still be inside the transaction,
    even as the transaction's first statement (SQLAlchemy begins it lazily)."""
    funnel_id = await new_funnel(sessions, "visit", "signup")
    row = (funnel_id, "p", T0 * 1_000_000, 1, [T0 * 1_000_000], False, {}, None, None)

    async def write_then_abort() -> None:
        async with sessions.begin() as session:
            await bulk_insert(session, funnel_entries, ENTRY_COLUMNS, [row])
            await event_rows.store_events(session, [canonical("p", "visit", T0)])
            raise _Abort

    with pytest.raises(_Abort):
        await write_then_abort()
    async with sessions() as session:
        stored_entries = await session.scalar(select(func.count()).select_from(funnel_entries))
        stored_events = await session.scalar(select(func.count()).select_from(events))
    assert (stored_entries, stored_events) == (0, 0)
    # The same writes, committed, are there; the event twice in a row is stored once.
    for _ in range(2):
        async with sessions.begin() as session:
            new = await event_rows.store_events(session, [canonical("p", "visit", T0)])
            if new:
                await bulk_insert(session, funnel_entries, ENTRY_COLUMNS, [row])
    async with sessions() as session:
        stored_entries = await session.scalar(select(func.count()).select_from(funnel_entries))
        stored_events = await session.scalar(select(func.count()).select_from(events))
    assert (stored_entries, stored_events) == (1, 1)


@pytest.fixture
def postgres_url():
    with postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture
async def postgres_sessions(postgres_url):
    engine = create_engine(postgres_url)
    yield sessionmaker(engine)
    await engine.dispose()


async def _waiting_for_a_lock(sessions) -> bool:
    async with sessions() as session:
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


@pytest.mark.parametrize("change", ["delete", "redefine"])
async def test_a_funnel_deleted_or_redefined_during_a_batch_keeps_none_of_its_rows(
    postgres_sessions, change
):
    """Entries and touches have no foreign key to their funnel (migration 0007): the API
    deletes them itself. A batch that read the funnel before the API's transaction and
    commits while it waits must not leave rows behind, whatever the interleaving."""
    sessions = postgres_sessions
    funnel_id = await new_funnel(sessions, "a", "b")
    async with sessions.begin() as session:
        await bulk_insert(
            session,
            funnel_entries,
            ENTRY_COLUMNS,
            [(funnel_id, "old", T0, 1, [T0], False, {}, None, None)],
        )

    async def api_change() -> None:
        async with sessions.begin() as session:
            if change == "delete":
                await api_funnels.delete_funnel(session, funnel_id)
            else:
                body = FunnelIn.model_validate(
                    {"name": "f", "steps": [{"event": "a"}, {"event": "c"}]}
                ).model_dump()
                await api_funnels.redefine_funnel(session, funnel_id, body, now_us=now_us())

    async with sessions.begin() as batch:
        assert [f.id for f in await funnel_rows.active_funnels(batch, ["proj"])] == [funnel_id]
        api = asyncio.create_task(api_change())
        for _ in range(200):
            if await _waiting_for_a_lock(sessions):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the API's change did not wait for the batch that read the funnel")
        row = (funnel_id, "new", T0 + 1, 2, [T0 + 1, T0 + 2], False, {}, None, None)
        await bulk_insert(batch, funnel_entries, ENTRY_COLUMNS, [row])
        await bulk_insert(
            batch, funnel_touches, TOUCH_COLUMNS, [(funnel_id, "new", T0 + 1, 0, {"c": "x"}, {})]
        )
    await api
    async with sessions() as session:
        left = [
            await session.scalar(select(func.count()).where(table.c.funnel_id == funnel_id))
            for table in (funnel_entries, funnel_touches)
        ]
    assert left == [0, 0]


def _index_method(url: str, index: str) -> str:
    async def read() -> str:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return str(
                    await conn.scalar(
                        text(
                            "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
                            " WHERE c.relname = :index"
                        ),
                        {"index": index},
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_events_are_found_by_time_through_block_ranges_on_postgresql(postgres_url):
    """Migration 0008: only the retention purge looks events up by time; a BRIN index
    serves it without a B-tree entry per stored event. It can be undone."""
    from alembic import command

    assert _index_method(postgres_url, "ix_events_ts_us") == "brin"
    command.downgrade(alembic_config(postgres_url), "0007")
    assert _index_method(postgres_url, "ix_events_ts_us") == "btree"
    command.upgrade(alembic_config(postgres_url), "head")
    assert _index_method(postgres_url, "ix_events_ts_us") == "brin"
