"""The query API while its database is unreachable: 503 with Retry-After, never a 500, and
back to normal by itself when the database returns; the gauge refresher keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from sqlalchemy.pool import NullPool

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.db import create_engine, migrate, sessionmaker
from tests.helpers import create_key
from tests.private_postgres import private_cluster

FUNNEL = {"name": "outage", "steps": [{"event": "visit"}, {"event": "pay"}]}


async def _keys(sessions) -> dict[str, str]:
    async with sessions.begin() as session:
        return {s: await create_key(session, "proj", s) for s in ("admin", "read")}


@contextlib.asynccontextmanager
async def _api(settings: ApiSettings, admin_key: str, **options):
    app = create_app(settings, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers, follow_redirects=True
        ) as client:
            yield client


def _paths(funnel_id: str) -> list[str]:
    return [
        "/v1/funnels",
        f"/v1/funnels/{funnel_id}",
        f"/v1/funnels/{funnel_id}/report",
        f"/v1/funnels/{funnel_id}/trends",
        "/v1/webhooks",
    ]


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["detail"][0]["field"] == "(database)"


async def _wait_for(predicate, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def _gauge_shows(api, name: str) -> bool:
    text = (await api.get("/metrics")).text
    return any(
        line.startswith("funnel_step_persons{") and name in line for line in text.split("\n")
    )


async def test_sqlite_that_cannot_be_opened_is_503_and_recovers_by_itself(tmp_path, caplog):
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite+aiosqlite:///{folder / 'funnel.db'}"
    await asyncio.to_thread(migrate, url)
    # A new connection per session, so that the moved file is noticed at once.
    engine = create_engine(url, poolclass=NullPool)
    sessions = sessionmaker(engine)
    keys = await _keys(sessions)
    settings = ApiSettings(database_url=url, gauge_refresh_s=0.1)
    try:
        async with _api(settings, keys["admin"], sessions=sessions) as api:
            funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
            assert (await api.get(f"/v1/funnels/{funnel_id}/report")).status_code == 200
            folder.rename(tmp_path / "moved")
            for path in _paths(funnel_id):
                assert_unavailable(await api.get(path))
            assert_unavailable(await api.post("/v1/funnels", json=FUNNEL))
            with caplog.at_level(logging.ERROR, logger="services.api.metrics"):
                await _wait_for(lambda: _logged(caplog, "gauge refresh failed"), 30)
            (tmp_path / "moved").rename(folder)
            for path in _paths(funnel_id):
                assert (await api.get(path)).status_code == 200
            later = await api.post("/v1/funnels", json={**FUNNEL, "name": "after-outage"})
            assert later.status_code == 201
            await _wait_for(lambda: _gauge_shows(api, "after-outage"), 30)
    finally:
        await engine.dispose()


async def _logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def _poll(api, paths: list[str], seen: list[httpx.Response], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for path in paths:
            seen.append(await api.get(path))
        await asyncio.sleep(0.05)


async def test_postgresql_stopped_and_started_is_503_meanwhile_and_recovers(caplog):
    with private_cluster() as pg:
        url = pg.url("postgres")
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        keys = await _keys(sessionmaker(engine))
        await engine.dispose()
        settings = ApiSettings(database_url=url, gauge_refresh_s=0.2)
        async with _api(settings, keys["admin"]) as api:
            funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
            paths = _paths(funnel_id)
            for path in paths:  # every pooled connection has been used once
                assert (await api.get(path)).status_code == 200
            seen: list[httpx.Response] = []
            stop = asyncio.Event()
            poller = asyncio.create_task(_poll(api, paths, seen, stop))
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(2)
            for path in paths:
                assert_unavailable(await api.get(path))
            with caplog.at_level(logging.ERROR, logger="services.api.metrics"):
                await _wait_for(lambda: _logged(caplog, "gauge refresh failed"), 30)
            await asyncio.to_thread(pg.start)

            async def healthy() -> bool:
                answers = [await api.get(p) for p in paths]
                return all(r.status_code == 200 for r in answers)

            await _wait_for(healthy)
            stop.set()
            await poller
            statuses = {r.status_code for r in seen}
            assert statuses <= {200, 503}, statuses
            assert 503 in statuses
            for r in seen:
                if r.status_code == 503:
                    assert_unavailable(r)
            later = await api.post("/v1/funnels", json={**FUNNEL, "name": "after-restart"})
            assert later.status_code == 201
            await _wait_for(lambda: _gauge_shows(api, "after-restart"), 30)
