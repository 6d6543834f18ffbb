"""Load shedding: beyond its bounds a request is refused at once, before its body is read."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from services.ingest.shedding import Shedder
from tests.ingest_fakes import KEY, FakeKeys, FakePublisher


def test_the_shedder_bounds_requests_and_bytes_and_always_admits_one():
    shedder = Shedder(max_requests=2, max_bytes=100)
    assert shedder.admit(500) is None  # alone: admitted whatever its size
    assert shedder.admit(10) == "body_bytes"
    shedder.release(500)
    assert (shedder.admit(60), shedder.admit(40), shedder.admit(0)) == (None, None, "in_flight")
    shedder.release(60)
    assert shedder.admit(61) == "body_bytes"
    assert shedder.admit(60) is None
    assert (shedder.requests, shedder.bytes) == (2, 100)


class SlowPublisher(FakePublisher):
    """Holds every request until released, so that requests pile up in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def publish(self, records):
        await self.release.wait()
        await super().publish(records)


@pytest.mark.parametrize(
    ("bounds", "body"),
    [
        ({"max_in_flight": 3}, b'{"user_id": "u", "event": "a"}'),
        (
            {"max_body_bytes_in_flight": 100},
            b'{"user_id": "u", "event": "a", "x": "' + b"y" * 6 + b'"}',
        ),
    ],
)
async def test_requests_beyond_the_bound_are_answered_429_at_once_and_the_rest_accepted(
    bounds, body
):
    publisher = SlowPublisher()
    app = create_app(
        IngestSettings(rate_limit_per_key=0, **bounds), publisher=publisher, keys=FakeKeys()
    )
    headers = {"content-type": "application/json"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:

            async def post() -> httpx.Response:
                return await c.post("/v1/events", content=body, headers=headers, auth=(KEY, ""))

            held = [
                asyncio.create_task(post()) for _ in range(3 if "max_in_flight" in bounds else 2)
            ]
            await asyncio.sleep(0.2)
            refused = await asyncio.wait_for(post(), timeout=2)
            publisher.release.set()
            accepted = await asyncio.gather(*held)
            after = await post()
    assert refused.status_code == 429
    assert (refused.headers["retry-after"], refused.headers["connection"]) == ("1", "close")
    assert refused.json()["detail"][0]["field"] == "(body)"
    assert [r.status_code for r in accepted] == [202] * len(held)
    assert after.status_code == 202
