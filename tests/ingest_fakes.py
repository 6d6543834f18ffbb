"""Fakes for ingest's unit tests: a publisher that keeps what it was given, a key store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from services.ingest.publisher import Record
from shared.events import EVENTS_TOPIC, REJECTED_TOPIC, CanonicalEvent

KEY = "wk_test"


class FakePublisher:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.failure: Exception | None = None

    async def publish(self, records: Sequence[Record]) -> None:
        if self.failure:
            raise self.failure
        self.records.extend(records)

    async def close(self) -> None:
        pass

    def events(self) -> list[CanonicalEvent]:
        return [CanonicalEvent.from_json(r.value) for r in self.records if r.topic == EVENTS_TOPIC]

    def rejected(self) -> list[Any]:
        return [orjson.loads(r.value) for r in self.records if r.topic == REJECTED_TOPIC]


class FakeKeys:
    async def project_for(self, key: str) -> str | None:
        return "proj" if key == KEY else None
