"""Freshness from the stored aggregator state: what the aggregator's progress writer stores
(driven by a real Processor applying records) and what the API derives from it and from the
committed offsets: lag per partition, complete_to, and every report's complete_to."""

# ruff: noqa: F811 - the fixtures imported from test_query_api are the tests' arguments
from __future__ import annotations

import pytest
from sqlalchemy import select

from services.aggregator.freshness import Progress
from services.aggregator.processor import Processor
from services.aggregator.source import Partition, SourceRecord
from shared.clock import now_us
from shared.events import EVENTS_TOPIC, format_time, from_micros
from shared.repository.keys import issue_key
from shared.tables import aggregator_progress
from tests.helpers import canonical
from tests.integration.test_query_api import FUNNEL, T0, api, keys  # noqa: F401 - fixtures

GROUP = "funnel-aggregator"  # API_AGGREGATOR_GROUP_ID's default
P0, P1, P2 = ((EVENTS_TOPIC, n) for n in range(3))
SENT_MS = 1_780_000_000_000  # when the records were produced (Kafka timestamps)


class Source:
    """The broker as the progress writer sees it: end offsets, and what this process owns."""

    def __init__(self, ends: dict[Partition, int], owned: dict[Partition, int | None]) -> None:
        self.ends, self.owned = ends, owned

    def end_offsets(self, timeout_ms: int) -> dict[Partition, int]:
        return dict(self.ends)

    def expected(self) -> dict[Partition, int | None]:
        return dict(self.owned)


def stamped(partition: Partition, first_offset: int, persons: list[str], sent_ms: int):
    """Records of one visit per person, produced at sent_ms, sent_ms + 1, ..."""
    return [
        SourceRecord(
            partition[0],
            partition[1],
            first_offset + i,
            e.key,
            e.to_json(),
            sent_ms + i,
        )
        for i, e in enumerate(canonical(p, "visit", T0) for p in persons)
    ]


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


async def _apply(processor, progress, source, records) -> None:
    committed = await processor.apply(records, dict(source.owned))
    source.owned.update(committed)
    progress.applied(records)


def _us(ms: int) -> int:
    return ms * 1000


def _time(us: int) -> str:
    return format_time(from_micros(us))


async def test_nothing_stored_yet_is_unknown(api):
    body = (await api.get("/v1/freshness")).json()
    assert (body["complete_to"], body["lag_records"], body["partitions"]) == (None, None, [])
    assert (await api.get("/v1/freshness", params={"sent": "2026-01-01"})).json()[
        "counted"
    ] is False


async def test_each_partition_is_complete_to_its_caught_up_instant_or_newest_applied_record(
    api, sessions
):
    processor = Processor(sessions, GROUP, horizon_us=lambda: 0)
    clock = Clock(_us(SENT_MS + 60_000))
    progress = Progress(sessions, GROUP, clock=clock)
    source = Source({P0: 2, P1: 5}, {P0: None, P1: None})
    await _apply(processor, progress, source, stamped(P0, 0, ["a", "b"], SENT_MS))
    await _apply(processor, progress, source, stamped(P1, 0, ["c", "d"], SENT_MS + 10))
    await progress.write(source)
    body = (await api.get("/v1/freshness")).json()
    p0, p1 = body["partitions"]
    # P0 reached its end offset before it was asked for: complete to the asking instant.
    assert (p0["partition"], p0["lag_records"], p0["complete_to"]) == (0, 0, _time(clock.now_us))
    # P1 is 3 records behind: complete to its newest applied record's timestamp.
    assert (p1["partition"], p1["lag_records"]) == (1, 3)
    assert p1["complete_to"] == _time(_us(SENT_MS + 11))
    assert p1["observed_at"] == _time(clock.now_us)
    assert (body["complete_to"], body["lag_records"]) == (_time(_us(SENT_MS + 11)), 3)
    sent = {"sent": _time(_us(SENT_MS + 11))}
    assert (await api.get("/v1/freshness", params=sent)).json()["counted"] is True
    later = {"sent": _time(_us(SENT_MS + 12))}
    assert (await api.get("/v1/freshness", params=later)).json()["counted"] is False
    # The rest of P1 applied: caught up with the end offset seen, without a new observation.
    await _apply(processor, progress, source, stamped(P1, 2, ["e", "f", "g"], SENT_MS + 20))
    body = (await api.get("/v1/freshness")).json()
    assert (body["partitions"][1]["lag_records"], body["complete_to"]) == (0, _time(clock.now_us))


async def test_the_stored_instant_never_goes_back_and_unowned_partitions_hold_it_unknown(
    api, sessions
):
    processor = Processor(sessions, GROUP, horizon_us=lambda: 0)
    clock = Clock(_us(SENT_MS + 60_000))
    progress = Progress(sessions, GROUP, clock=clock)
    source = Source({P0: 1, P1: 0}, {P0: None})  # P1 is another aggregator's, not heard of yet
    await _apply(processor, progress, source, stamped(P0, 0, ["a"], SENT_MS))
    await progress.write(source)
    body = (await api.get("/v1/freshness")).json()
    assert body["complete_to"] is None  # P1: nobody has reported it
    assert [p["complete_to"] for p in body["partitions"]] == [_time(clock.now_us), None]
    # The other aggregator reports P1, caught up; then P0 falls behind with new records.
    other = Progress(sessions, GROUP, clock=Clock(_us(SENT_MS + 61_000)))
    await other.write(Source({P0: 1, P1: 0}, {P1: None}))
    source.ends[P0] = 4
    clock.now_us = _us(SENT_MS + 62_000)
    await progress.write(source)
    body = (await api.get("/v1/freshness")).json()
    # P0's caught-up instant stands (a bound it earned); P1 answers for itself.
    assert [p["complete_to"] for p in body["partitions"]] == [
        _time(_us(SENT_MS + 60_000)),
        _time(_us(SENT_MS + 61_000)),
    ]
    assert body["partitions"][0]["lag_records"] == 3
    assert body["complete_to"] == _time(_us(SENT_MS + 60_000))


async def test_rows_of_partitions_the_topic_no_longer_has_are_dropped(sessions):
    progress = Progress(sessions, GROUP, clock=Clock(_us(SENT_MS)))
    await progress.write(Source({P0: 0, P1: 0, P2: 0}, {P0: None, P1: None, P2: None}))
    await progress.write(Source({P0: 0, P1: 0}, {P0: None, P1: None}))
    async with sessions() as session:
        stored = (await session.execute(select(aggregator_progress.c.partition))).scalars()
        assert sorted(stored) == [0, 1]


async def test_a_write_that_fails_is_logged_and_processing_goes_on(sessions, caplog):
    class Unreachable(Source):
        def end_offsets(self, timeout_ms: int) -> dict[Partition, int]:
            raise TimeoutError("the broker did not answer")

    progress = Progress(sessions, GROUP)
    await progress.observe(Unreachable({}, {}), [])
    assert "could not record the aggregator's progress" in caplog.text


async def test_every_report_answer_carries_the_instant_its_data_is_complete_to(api, sessions):
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    processor = Processor(sessions, GROUP, horizon_us=lambda: 0)
    clock = Clock(_us(SENT_MS + 60_000))
    progress = Progress(sessions, GROUP, clock=clock)
    source = Source({P0: 2}, {P0: None})
    report = f"/v1/funnels/{funnel_id}/report"
    range_ = {"from": "2026-01-01", "to": "2026-01-02"}
    assert (await api.get(report, params=range_)).json()["complete_to"] is None  # backfilling
    while await processor.backfill_step(100):
        pass
    await _apply(processor, progress, source, stamped(P0, 0, ["a", "b"], SENT_MS))
    await progress.write(source)
    expected = _time(clock.now_us)
    answers = {
        "report": await api.get(report, params=range_),
        "report, kept": await api.get(report, params=range_),
        "trends": await api.get(f"/v1/funnels/{funnel_id}/trends", params=range_),
        "forecast": await api.get(f"/v1/funnels/{funnel_id}/forecast", params=range_),
        "diagnosis": await api.get(f"/v1/funnels/{funnel_id}/diagnosis", params=range_),
        "plan": await api.post(
            f"/v1/funnels/{funnel_id}/plan", json={"target_conversions": 10, "overall_rate": 0.5}
        ),
    }
    assert {k: r.json()["complete_to"] for k, r in answers.items()} == dict.fromkeys(
        answers, expected
    )
    assert answers["report, kept"].json()["cached"] is True
    assert [s["persons"] for s in answers["report"].json()["steps"]] == [2, 0, 0]
    # Nothing new for this funnel, but the aggregator moved on: a kept exact report says so.
    clock.now_us += 5_000_000
    await progress.write(source)
    kept = (await api.get(report, params=range_)).json()
    assert (kept["cached"], kept["complete_to"]) == (True, _time(clock.now_us))


@pytest.mark.parametrize("sent", ["soon", "2026-01-01T00:00:00", "0001-01-01", "a\u0000"])
async def test_a_bad_sent_instant_is_400_naming_it(api, sent):
    r = await api.get("/v1/freshness", params={"sent": sent})
    assert r.status_code == 400, r.text
    assert [p["field"] for p in r.json()["detail"]] == ["sent"]


async def test_freshness_is_for_read_admin_and_instance_keys_not_write_keys(api, keys, sessions):
    async with sessions.begin() as session:
        instance = (await issue_key(session, None, "instance", now_us=now_us())).key
    for key, status in ((keys["read"], 200), (instance, 200), (keys["write"], 403)):
        r = await api.get("/v1/freshness", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status, r.text
