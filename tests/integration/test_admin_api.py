"""Projects and keys over HTTP: an instance key makes projects and their first keys; a
project's admin key manages its own project's keys and sees no other project."""

# ruff: noqa: F811 - the fixtures imported from test_query_api are the tests' arguments
from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command

from services.api.settings import ApiSettings
from services.ingest.keys import DatabaseKeyStore
from shared.clock import now_us
from shared.db import alembic_config, create_engine, sessionmaker
from shared.keys import hash_key
from shared.repository.keys import find_key, issue_key
from shared.tables import api_keys
from tests.integration.test_query_api import FUNNEL, _client, api, keys  # noqa: F401 - fixtures


def refused(r, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    [problem] = r.json()["detail"]
    assert problem["field"] == field, problem
    return problem["reason"]


@pytest.fixture
async def instance(sessions):
    async with sessions.begin() as session:
        return (await issue_key(session, None, "instance", now_us=now_us())).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_instance_key_makes_a_project_whose_first_key_then_works(api, instance):
    as_instance = bearer(instance)
    created = await api.post("/v1/projects", json={"id": "acme"}, headers=as_instance)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "acme"
    listed = await api.get("/v1/projects", headers=as_instance)
    assert [p["id"] for p in listed.json()["projects"]] == ["acme", "proj"]
    issued = await api.post(
        "/v1/projects/acme/keys", json={"scope": "admin", "name": "ops"}, headers=as_instance
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()
    assert key["key"].startswith("ak_")
    assert (key["scope"], key["project_id"], key["name"], key["revoked_at"]) == (
        "admin",
        "acme",
        "ops",
        None,
    )
    assert key["key"].startswith(key["prefix"])
    assert len(key["prefix"]) == 8
    made = await api.post("/v1/funnels", json=FUNNEL, headers=bearer(key["key"]))
    assert made.status_code == 201, made.text
    theirs = await api.get("/v1/funnels", headers=bearer(key["key"]))
    assert [f["name"] for f in theirs.json()["funnels"]] == [FUNNEL["name"]]
    ours = await api.get("/v1/funnels")  # the "proj" admin key: another project's funnels
    assert ours.json()["funnels"] == []


async def test_listed_keys_show_ids_and_prefixes_never_the_key(api, instance, keys):
    issued = (await api.post("/v1/projects/proj/keys", json={"scope": "read"})).json()
    listed = await api.get("/v1/projects/proj/keys")
    assert listed.status_code == 200
    rows = listed.json()["keys"]
    assert [r["scope"] for r in rows] == ["admin", "read", "write", "read"]
    assert rows[-1] == {k: v for k, v in issued.items() if k != "key"}
    text = listed.text
    for key in [*keys.values(), issued["key"]]:
        assert key not in text
        assert key[8:16] not in text  # nothing past the shown prefix
    assert all(
        set(r) == {"id", "prefix", "scope", "project_id", "name", "created_at", "revoked_at"}
        for r in rows
    )


async def test_a_revoked_key_is_refused_by_the_api_at_once(api, keys):
    issued = (await api.post("/v1/projects/proj/keys", json={"scope": "read"})).json()
    assert (await api.get("/v1/funnels", headers=bearer(issued["key"]))).status_code == 200
    revoked = await api.delete(f"/v1/projects/proj/keys/{issued['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    r = await api.get("/v1/funnels", headers=bearer(issued["key"]))
    assert refused(r, 401, "authorization") == "unknown or revoked API key"
    again = await api.delete(f"/v1/projects/proj/keys/{issued['id']}")
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    listed = {k["id"]: k for k in (await api.get("/v1/projects/proj/keys")).json()["keys"]}
    assert listed[issued["id"]]["revoked_at"] == revoked.json()["revoked_at"]


async def test_a_revoked_write_key_stops_ingest_once_its_cached_lookup_expires(
    api,
    keys,
    sessions,
):
    store = DatabaseKeyStore(sessions, cache_s=1.0)  # INGEST_KEY_CACHE_S=1
    assert await store.project_for(keys["write"]) == "proj"
    write = next(
        k for k in (await api.get("/v1/projects/proj/keys")).json()["keys"] if k["scope"] == "write"
    )
    assert (await api.delete(f"/v1/projects/proj/keys/{write['id']}")).status_code == 200
    assert await store.project_for(keys["write"]) == "proj"  # the cached answer, for 1 s
    await asyncio.sleep(1.1)
    assert await store.project_for(keys["write"]) is None


async def test_a_project_admin_sees_and_manages_its_own_project_only(
    api,
    instance,
):
    assert (
        await api.post("/v1/projects", json={"id": "other"}, headers=bearer(instance))
    ).status_code == 201
    theirs = await api.post(
        "/v1/projects/other/keys", json={"scope": "admin"}, headers=bearer(instance)
    )
    their_key = theirs.json()
    reason = refused(await api.post("/v1/projects", json={"id": "mine"}), 403, "authorization")
    assert "instance key" in reason
    assert [p["id"] for p in (await api.get("/v1/projects")).json()["projects"]] == ["proj"]
    for r in (
        await api.get("/v1/projects/other/keys"),
        await api.post("/v1/projects/other/keys", json={"scope": "write"}),
        await api.delete(f"/v1/projects/other/keys/{their_key['id']}"),
    ):
        assert refused(r, 404, "project_id") == "no project 'other'"
    # Their key id under our own project's path is no key of ours either.
    r = await api.delete(f"/v1/projects/proj/keys/{their_key['id']}")
    assert refused(r, 404, "key_id").startswith("no key")
    still = await api.get("/v1/funnels", headers=bearer(their_key["key"]))
    assert still.status_code == 200


async def test_keys_other_than_admin_and_instance_cannot_manage_keys(api, keys, instance):
    for scope in ("read", "write"):
        r = await api.get("/v1/projects/proj/keys", headers=bearer(keys[scope]))
        assert "admin key or an instance key" in refused(r, 403, "authorization")
        r = await api.get("/v1/projects", headers=bearer(keys[scope]))
        assert r.status_code == 403
    r = await api.get("/v1/funnels", headers=bearer(instance))
    assert "instance key manages projects" in refused(r, 403, "authorization")
    r = await api.post("/v1/funnels", json=FUNNEL, headers=bearer(instance))
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "-lead"}, "id"),
        ({"id": "a b"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"id": "a\u0000"}, "id"),
        ({"id": 7}, "id"),
        ({"id": "ok", "owner": "me"}, "owner"),
    ],
)
async def test_bad_project_ids_are_422_naming_the_field(api, instance, body, field):
    r = await api.post("/v1/projects", json=body, headers=bearer(instance))
    assert r.status_code == 422, r.text
    assert field in [p["field"] for p in r.json()["detail"]]


async def test_a_project_made_twice_is_409_naming_the_id(api, instance):
    assert (
        await api.post("/v1/projects", json={"id": "twice"}, headers=bearer(instance))
    ).status_code == 201
    r = await api.post("/v1/projects", json={"id": "twice"}, headers=bearer(instance))
    assert refused(r, 409, "id") == "project 'twice' exists already"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/projects/nope/keys", "project_id"),
        ("/v1/projects/a%00b/keys", "project_id"),
        ("/v1/projects/proj/keys/nope", "key_id"),
        ("/v1/projects/proj/keys/a%00b", "key_id"),
    ],
)
async def test_unknown_projects_and_keys_are_404_naming_them(api, instance, path, field):
    method = api.delete if path.count("/") == 5 else api.get
    r = await method(path, headers=bearer(instance))
    refused(r, 404, field)


async def test_a_key_of_bad_scope_is_422_naming_scope(api):
    r = await api.post("/v1/projects/proj/keys", json={"scope": "instance"})
    assert refused(r, 422, "scope")


async def test_existing_keys_get_ids_when_migrating(database_url, tmp_path):
    # A database at the revision before key ids, with a key made then.
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0008")
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO projects (id, created_at_us) VALUES ('old', 1)"))
        await conn.execute(
            sa.text(
                "INSERT INTO api_keys (key_hash, project_id, scope, created_at_us) "
                "VALUES (:h, 'old', 'admin', 2)"
            ),
            {"h": hash_key("ak_from_before")},
        )
    await engine.dispose()
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = create_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            grant = await find_key(session, "ak_from_before")
            row = (await session.execute(sa.select(api_keys))).one()
        assert (grant.project_id, grant.scope) == ("old", "admin")
        assert (len(row.id), row.prefix) == (36, None)
        async with _client(
            ApiSettings(database_url=database_url), {"admin": "ak_from_before"}
        ) as c:
            listed = (await c.get("/v1/projects/old/keys")).json()["keys"]
        assert [(k["id"], k["prefix"], k["scope"]) for k in listed] == [(row.id, None, "admin")]
    finally:
        await engine.dispose()
