"""Routes for /v1/projects and their keys.

An instance key (``funnel keys create --scope instance``) creates and lists projects and
manages every project's keys. A project's admin key sees its own project only and manages
that project's keys; another project is, to it, a project that does not exist (404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.api.body import StrictJsonRoute
from services.api.deps import ClockDep, Instance, Manager, SessionDep
from services.api.errors import declared, refuse
from services.api.limits import well_formed_id
from services.api.repository import Session
from services.api.responses.admin import KeyList, KeyOut, NewKey, ProjectList, ProjectOut
from services.api.responses.common import instant, shown
from services.api.schemas import KeyIn, ProjectIn
from shared.keys import InstanceGrant, KeyGrant, KeyRow
from shared.repository import keys

router = APIRouter(prefix="/v1/projects", tags=["admin"], route_class=StrictJsonRoute)


def _key_fields(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "prefix": row.prefix,
        "scope": row.scope,
        "project_id": row.project_id,
        "name": row.name,
        "created_at": instant(row.created_at_us),
        "revoked_at": shown(row.revoked_at_us),
    }


def _project_out(project_id: str, created_at_us: int) -> ProjectOut:
    return ProjectOut(id=project_id, created_at=instant(created_at_us))


async def _project(session: Session, grant: KeyGrant | InstanceGrant, project_id: str) -> None:
    """Refuse a project that does not exist, or that is not the admin key's own."""
    own = isinstance(grant, InstanceGrant) or grant.project_id == project_id
    found = own and well_formed_id(project_id) and await keys.project_exists(session, project_id)
    if not found:
        refuse(404, "project_id", f"no project {project_id!r}")


@router.post(
    "",
    status_code=201,
    response_model=ProjectOut,
    responses=declared(401, 403, 409, 413, 422, 503),
)
async def create_project(
    body: ProjectIn, _grant: Instance, session: SessionDep, clock: ClockDep
) -> ProjectOut:
    """Create a project (instance key only); then create its first keys."""
    created = await keys.create_project(session, body.id, now_us=clock.now_us())
    await session.commit()
    if created is None:
        refuse(409, "id", f"project {body.id!r} exists already")
    return _project_out(body.id, created)


@router.get("", response_model=ProjectList, responses=declared(401, 403, 503))
async def list_projects(grant: Manager, session: SessionDep) -> ProjectList:
    """Every project (instance key); an admin key's own project only."""
    only = None if isinstance(grant, InstanceGrant) else grant.project_id
    found = await keys.list_projects(session, only)
    return ProjectList(projects=[_project_out(p, created) for p, created in found])


@router.post(
    "/{project_id}/keys",
    status_code=201,
    response_model=NewKey,
    responses=declared(401, 403, 404, 413, 422, 503),
)
async def create_key(
    project_id: str, body: KeyIn, grant: Manager, session: SessionDep, clock: ClockDep
) -> NewKey:
    """A new key for the project; the answer is the only time the key is shown."""
    await _project(session, grant, project_id)
    issued = await keys.issue_key(session, project_id, body.scope, body.name, now_us=clock.now_us())
    await session.commit()
    return NewKey(**_key_fields(issued.row), key=issued.key)


@router.get(
    "/{project_id}/keys", response_model=KeyList, responses=declared(401, 403, 404, 422, 503)
)
async def list_keys(project_id: str, grant: Manager, session: SessionDep) -> KeyList:
    """The project's keys, revoked ones too (never the key itself)."""
    await _project(session, grant, project_id)
    rows = await keys.list_keys(session, project_id)
    return KeyList(keys=[KeyOut(**_key_fields(r)) for r in rows])


@router.delete(
    "/{project_id}/keys/{key_id}",
    response_model=KeyOut,
    responses=declared(401, 403, 404, 422, 503),
)
async def revoke_key(
    project_id: str, key_id: str, grant: Manager, session: SessionDep, clock: ClockDep
) -> KeyOut:
    """Revoke a key: at once for the API; ingest caches a write key's lookup for up to
    ``INGEST_KEY_CACHE_S``. Revoking a revoked key changes nothing."""
    await _project(session, grant, project_id)
    row = None
    if well_formed_id(key_id):
        found = await keys.get_key(session, key_id)
        if found is not None and found.project_id == project_id:
            row = await keys.revoke_key(session, key_id, now_us=clock.now_us())
    await session.commit()
    if row is None:
        refuse(404, "key_id", f"no key {key_id!r} in project {project_id!r}")
    return KeyOut(**_key_fields(row))
