"""No record can stop counting: poison goes to the dead letters, the rest is applied exactly
once; what fails in the database is isolated to its own record (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from collections import defaultdict

import orjson
from sqlalchemy import func, select, text

from services.aggregator.engine import PersonEvent
from services.aggregator.processor import Processor
from services.aggregator.source import SourceRecord
from services.api.reports.python import Breakdown, Window, funnel_report
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from shared.clock import now_us
from shared.db import is_postgres
from shared.events import EVENTS_TOPIC, CanonicalEvent, to_micros
from shared.funnel import definition_from_doc
from shared.tables import consumer_offsets, dead_letters, events
from tests.helpers import create_key
from tests.oracle import oracle_report
from tests.poison import T0, odd_but_valid, poison_records, valid_event

GROUP = "poison-group"
PROJECT = "proj"
FUNNEL = {"name": "f", "steps": [{"event": s} for s in "abc"], "breakdowns": ["channel"]}
HORIZON_US = to_micros(T0) - 86_400 * 1_000_000  # a day before the stream begins


async def _ready(sessions) -> tuple[str, Processor]:
    """The funnel, and a processor that has backfilled it (so it counts live)."""
    async with sessions.begin() as session:
        await create_key(session, PROJECT, "admin")
        funnel_id = await api_funnels.create_funnel(session, PROJECT, FUNNEL, now_us=now_us())
    processor = Processor(sessions, GROUP, horizon_us=lambda: HORIZON_US)
    while await processor.backfill_step(100):
        pass
    return funnel_id, processor


async def _apply_in_batches(processor, values, size, partition=0) -> dict:
    found = [SourceRecord(EVENTS_TOPIC, partition, i, b"k", v, 0) for i, v in enumerate(values)]
    expected: dict = {}
    for i in range(0, len(found), size):
        expected.update(await processor.apply(found[i : i + size], expected))
    return expected


async def _report(sessions, funnel_id):
    window = Window(0, 10**17, 10**17)
    async with sessions() as session:
        entries = await api_progress.entries_in_range(session, funnel_id, window.start, window.end)
        touches = await api_progress.touches_in_range(session, funnel_id, window.start, window.end)
    f = definition_from_doc(FUNNEL)
    return funnel_report(f, entries, window, "uniques", Breakdown("channel"), touches)


def _oracle(valid: list[bytes]):
    by_person: dict[str, list[PersonEvent]] = defaultdict(list)
    for raw in valid:
        e = CanonicalEvent.from_json(raw)
        by_person[e.person_id].append(
            PersonEvent(e.event_id, to_micros(e.timestamp), e.event, e.properties)
        )
    far = 10**17
    return oracle_report(definition_from_doc(FUNNEL), by_person, 0, far, far, breakdown="channel")


async def test_poison_of_every_kind_is_a_dead_letter_and_valid_events_are_counted_exactly(
    sessions,
):
    funnel_id, processor = await _ready(sessions)
    rng = random.Random(3)
    valid = [
        valid_event(f"person-{p}", rng.choice("abc"), n, PROJECT, rng.choice(["ads", "seo"]))
        for p in range(40)
        for n in range(rng.randrange(1, 6))
    ] + odd_but_valid(PROJECT)
    poison = poison_records(PROJECT)
    stream = [(None, v) for v in valid] + [(what, value) for what, value, _ in poison]
    rng.shuffle(stream)
    committed = await _apply_in_batches(processor, [v for _, v in stream], size=7)

    assert committed == {(EVENTS_TOPIC, 0): len(stream)}
    async with sessions() as session:
        letters = dict(
            (await session.execute(select(dead_letters.c.offset, dead_letters.c.reason))).all()
        )
        stored = set(await session.scalars(select(events.c.event_id)))
    offsets = {what: i for i, (what, _) in enumerate(stream) if what is not None}
    for what, _, reason in poison:
        assert reason in letters.get(offsets[what], ""), (what, letters.get(offsets[what]))
    assert len(letters) == len(poison)
    assert stored == {orjson.loads(v)["event_id"] for v in valid}
    got = await _report(sessions, funnel_id)
    expected = _oracle(valid)
    assert [s.persons for s in got.steps] == expected.persons
    assert {g.value: [s.persons for s in g.steps] for g in got.groups} == expected.groups


async def test_a_record_the_database_refuses_is_isolated_and_the_rest_of_its_batch_applied(
    sessions,
):
    """The trigger stands for any failure that decoding cannot foresee."""
    funnel_id, processor = await _ready(sessions)
    async with sessions.begin() as session:
        for statement in _refusing_trigger(is_postgres(session)):
            await session.execute(text(statement))
    values = {
        partition: [
            valid_event(f"q{partition}-{i % 7}", "abc"[i % 3], i, PROJECT, "ads") for i in range(20)
        ]
        for partition in (0, 1)
    }
    refused = {(0, 5), (1, 12)}
    for partition, offset in refused:
        doc = orjson.loads(values[partition][offset])
        values[partition][offset] = orjson.dumps(doc | {"event": "refused"})
    batch = [
        SourceRecord(EVENTS_TOPIC, partition, offset, b"k", value, 0)
        for partition, found in values.items()
        for offset, value in enumerate(found)
    ]

    assert await processor.apply(batch, {}) == {(EVENTS_TOPIC, 0): 20, (EVENTS_TOPIC, 1): 20}
    async with sessions() as session:
        letters = (
            await session.execute(
                select(dead_letters.c.partition, dead_letters.c.offset, dead_letters.c.reason)
            )
        ).all()
        offsets = dict(
            (
                await session.execute(
                    select(consumer_offsets.c.partition, consumer_offsets.c.next_offset)
                )
            ).all()
        )
        stored = await session.scalar(select(func.count()).select_from(events))
    assert {(p, o) for p, o, _ in letters} == refused
    assert all("refused by a trigger" in reason for _, _, reason in letters)
    assert offsets == {0: 20, 1: 20}
    assert stored == 38
    valid = [v for p, found in values.items() for o, v in enumerate(found) if (p, o) not in refused]
    got = await _report(sessions, funnel_id)
    assert [s.persons for s in got.steps] == _oracle(valid).persons


def _refusing_trigger(postgres: bool) -> list[str]:
    if postgres:
        return [
            "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.name = 'refused' THEN"
            " RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = '22023';"
            " END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON events"
            " FOR EACH ROW EXECUTE FUNCTION refuse_event()",
        ]
    return [
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.name = 'refused'"
        " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    ]
