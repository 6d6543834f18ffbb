"""GET /v1/persons/{person_id} on real databases: a merged person by any of their ids."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.helpers import create_key
from tests.integration.test_identity_merge import Feed, event

FUNNEL = {"name": "shop", "steps": [{"event": "landing"}, {"event": "signup"}, {"event": "buy"}]}


@pytest.fixture
async def keys(sessions):
    async with sessions.begin() as session:
        return {scope: await create_key(session, "proj", scope) for scope in ("admin", "read")}


@contextlib.asynccontextmanager
async def _client(database_url: str, key: str):
    app = create_app(ApiSettings(database_url=database_url, report_max_stale_s=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as client:
            yield client


async def test_a_person_by_any_of_their_ids(sessions, database_url, keys):
    async with _client(database_url, keys["admin"]) as admin:
        funnel = (await admin.post("/v1/funnels", json=FUNNEL)).json()
    feed = Feed(sessions)
    await feed.finish_backfill()
    await feed.send(
        [
            event("landing", 1, anon="X"),
            event("signup", 2, user="U", anon="X"),
            event("signup", 3, user="W", anon="X"),
            event("buy", 4, user="U"),
        ]
    )
    async with _client(database_url, keys["read"]) as api:
        by_anon = await api.get("/v1/persons/X")
        by_user = await api.get("/v1/persons/U")
        refused = await api.get("/v1/persons/W")
        unknown = await api.get("/v1/persons/nobody")
    assert by_anon.status_code == 200
    assert by_anon.json() == by_user.json()
    body = by_user.json()
    assert body["person_id"] == "U"
    assert body["ids"] == ["U", "X"]
    assert body["links"] == [
        {
            "id": "X",
            "linked_to": "U",
            "linked_at": "2026-01-01T00:00:02.000000Z",
            "event_id": "U-signup-2",
        }
    ]
    assert [(r["anonymous_id"], r["user_id"], r["reason"]) for r in body["refused_links"]] == [
        ("X", "W", "already linked to U")
    ]
    assert body["first_seen"] == "2026-01-01T00:00:01.000000Z"
    assert body["last_seen"] == "2026-01-01T00:00:04.000000Z"
    (shop,) = body["funnels"]
    assert shop["funnel"] == {"id": funnel["id"], "name": "shop"}
    assert [(e["entry_time"], e["reached"]) for e in shop["entries"]] == [
        ("2026-01-01T00:00:01.000000Z", 3)
    ]
    assert [s["name"] for s in shop["entries"][0]["steps"]] == ["landing", "signup", "buy"]
    w = refused.json()
    assert (w["person_id"], w["ids"], w["funnels"]) == ("W", ["W"], [])
    assert w["refused_links"] == body["refused_links"]
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["field"] == "person_id"


async def test_a_write_key_cannot_read_persons(sessions, database_url):
    async with sessions.begin() as session:
        key = await create_key(session, "proj", "write")
    async with _client(database_url, key) as api:
        answer = await api.get("/v1/persons/X")
    assert answer.status_code == 403
