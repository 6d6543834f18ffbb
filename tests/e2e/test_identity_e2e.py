"""Identity merge with real processes: two aggregators on the embedded broker, anonymous and
user ids on different partitions (so on different owners), kill -9 mid-run; and re-marketing
of a visitor who identifies, on the real clock with a day scaled down to a second."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from shared.events import EVENTS_TOPIC, CanonicalEvent, partition_for
from shared.funnel import definition_from_doc
from tests.databases import migrated
from tests.e2e.test_crash import FUNNEL, RANGE, progress
from tests.oracle import oracle_report
from tests.oracle_identity import from_canonical, identities, persons
from tests.receiver import Receiver
from tests.stack import Stack, eventually, report_persons
from tests.workload import events as workload
from tests.workload import merging, wire

PARTITIONS = 4


def linked_stream(persons_: int, per_person: int, seed: int) -> list[CanonicalEvent]:
    """A tenth of the persons merging across partitions, some links refused, duplicated and
    shuffled."""
    rng = random.Random(seed)
    stream = merging(
        workload("e2e", persons_, per_person, seed), 0.1, seed, PARTITIONS, refused=0.2
    )
    stream += rng.sample(stream, len(stream) // 50)
    rng.shuffle(stream)
    return stream


def produce(bootstrap: str, stream: list[CanonicalEvent]) -> None:
    """As ingest sends: each record to its key's ``partition_for``."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key, value, headers in wire(stream):
        partition = partition_for(key, range(PARTITIONS))
        producer.send(EVENTS_TOPIC, key=key, value=value, headers=headers, partition=partition)
    producer.flush()
    producer.close()


def expected(stream: list[CanonicalEvent], count: str) -> list[int]:
    far = 10**18
    merged = persons(from_canonical(e) for e in stream)
    return oracle_report(definition_from_doc(FUNNEL), merged, 0, far, far, count).persons


def test_two_aggregators_one_killed_twice_count_merged_persons_as_the_oracle(tmp_path):
    import asyncio

    stream = linked_stream(persons_=3_000, per_person=6, seed=21)
    found = identities(from_canonical(e) for e in stream)
    assert len(found.target) >= 250
    assert len(found.refusals) >= 30
    assert expected(stream, "uniques") != _unmerged(stream)  # the links change the counts
    rng = random.Random(8)
    with migrated("postgresql", tmp_path) as url:
        stack = Stack(tmp_path, url, partitions=PARTITIONS).start()
        try:
            stack.start_aggregator()
            with stack.api() as api:
                funnel_id = api.post("/v1/funnels", json=FUNNEL).json()["id"]
                producer = threading.Thread(target=produce, args=(stack.broker.bootstrap, stream))
                producer.start()
                for victim in (0, 1):
                    time.sleep(rng.uniform(1.5, 3.0))
                    stack.aggregators[victim].kill()  # SIGKILL: no goodbye to the group
                    stack.aggregators[victim].wait()
                    stack.start_aggregator()
                producer.join()
                eventually(
                    lambda: asyncio.run(progress(stack.database_url)),
                    lambda p: p[0] == len(stream),
                    timeout_s=240,
                    what="offsets of every record committed",
                )
                # Work for another partition's owner (a link's other id) may follow the
                # offsets by a moment: the counts must come to the oracle's and stay.
                for count in ("uniques", "totals"):
                    want = expected(stream, count)
                    eventually(
                        lambda c=count: report_persons(api, funnel_id, **RANGE, count=c),
                        lambda got, w=want: got == w,
                        timeout_s=60,
                        what=f"{count} equal to the oracle's {want}",
                    )
                time.sleep(2)
                for count in ("uniques", "totals"):
                    got = report_persons(api, funnel_id, **RANGE, count=count)
                    assert got == expected(stream, count), count
                anon = next(a for a in found.target if a.startswith("anon-"))
                person = api.get(f"/v1/persons/{anon}")
                assert person.status_code == 200, person.text
                assert person.json()["person_id"] == found.root(anon)
                assert person.json()["ids"] == found.ids(anon)
        except AssertionError:
            print(stack.logs())  # noqa: T201 - the processes' logs explain a failure
            raise
        finally:
            stack.stop()


def _unmerged(stream: list[CanonicalEvent]) -> list[int]:
    from collections import defaultdict

    by_id = defaultdict(list)
    for e in {e.event_id: e for e in stream}.values():
        by_id[e.person_id].append(from_canonical(e).as_person_event())
    far = 10**18
    return oracle_report(definition_from_doc(FUNNEL), by_id, 0, far, far).persons


DAY_S = 2  # a day, scaled down so that the real clock runs the scenario in seconds
RULE = {"name": "7-day", "after_seconds": 7 * DAY_S, "grace_seconds": 0}


def at(start: datetime, days: float) -> str:
    return (start + timedelta(seconds=days * DAY_S)).isoformat()


def wait_until(start: datetime, days: float) -> None:
    left = start + timedelta(seconds=days * DAY_S) - datetime.now(UTC)
    time.sleep(max(0.0, left.total_seconds()))


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


def test_a_visitor_who_identifies_on_day_3_and_buys_on_day_5_gets_no_7_day_webhook(stack, receiver):
    with stack.api() as api:
        funnel = {
            "name": "identity-remarketing",
            "steps": [{"event": "idr-visit"}, {"event": "idr-buy"}],
            "remarketing": [RULE],
        }
        funnel_id = api.post("/v1/funnels", json=funnel).json()["id"]
        hook = api.post(
            "/v1/webhooks",
            json={"url": receiver.url, "event_types": ["remarketing.due"], "funnel_id": funnel_id},
        ).json()
        receiver.secret = hook["secret"]
        eventually(
            lambda: api.get(f"/v1/funnels/{funnel_id}").json()["backfill"]["done"],
            bool,
            timeout_s=30,
            what="funnel backfilled",
        )
    start = datetime.now(UTC)

    def send(*events: dict[str, str]) -> None:
        with stack.ingest() as ingest:
            assert ingest.post("/v1/events", json={"batch": list(events)}).status_code == 202

    visit = {"event": "idr-visit", "timestamp": at(start, 0)}
    # buyer: identifies on day 3, buys on day 5 as the user. stays: identifies, never buys.
    # late: the 7-day trigger fires for the anonymous id; identifying on day 8 sends no second.
    send(*({**visit, "anonymous_id": x} for x in ("x-buyer", "x-stays", "x-late")))
    wait_until(start, 3)
    send(
        *(
            {"event": "identify", "user_id": u, "anonymous_id": x, "timestamp": at(start, 3)}
            for x, u in (("x-buyer", "u-buyer"), ("x-stays", "u-stays"))
        )
    )
    wait_until(start, 5)
    send({"event": "idr-buy", "user_id": "u-buyer", "timestamp": at(start, 5)})
    eventually(receiver.unique, lambda u: len(u) >= 2, 30, "the two 7-day triggers")
    wait_until(start, 8)
    send(
        {
            "event": "identify",
            "user_id": "u-late",
            "anonymous_id": "x-late",
            "timestamp": at(start, 8),
        }
    )
    time.sleep(4 * DAY_S)  # nothing more may come
    got = sorted(
        (m["data"]["person_id"], m["data"].get("ids"), m["data"]["rule"]["occurrence"])
        for m in receiver.unique().values()
    )
    assert got == [("u-stays", ["u-stays", "x-stays"], 0), ("x-late", ["x-late"], 0)]
    assert receiver.duplicates() == 0
    assert receiver.bad_signatures == 0
