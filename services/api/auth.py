"""API keys: ``Authorization: Bearer <key>``.

A project's read or admin key reads (admin also changes) that project's funnels, webhooks and
share links; a project's admin key also manages that project's keys. An instance key (no
project) creates and lists projects and manages any project's keys, and reads no funnel.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import refuse
from shared.keys import InstanceGrant, KeyGrant, find_grant

bearer = HTTPBearer(
    auto_error=False, description="A read (rk_…), admin (ak_…) or instance (ik_…) API key."
)
CHALLENGE = {"WWW-Authenticate": "Bearer"}
NOT_A_PROJECT_KEY = "an instance key manages projects and keys only; use a project's key"


async def _grant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyGrant | InstanceGrant:
    if credentials is None:
        refuse(401, "authorization", "an API key is required (Bearer)", CHALLENGE)
    async with request.app.state.api.sessions() as session:
        grant = await find_grant(session, credentials.credentials)
    if grant is None:
        refuse(401, "authorization", "unknown or revoked API key", CHALLENGE)
    return grant


AnyGrant = Annotated[KeyGrant | InstanceGrant, Depends(_grant)]


async def reader(grant: AnyGrant) -> KeyGrant:
    if isinstance(grant, InstanceGrant):
        refuse(403, "authorization", NOT_A_PROJECT_KEY)
    if grant.scope == "write":
        refuse(403, "authorization", "a write key cannot read; use a read key")
    return grant


async def admin(grant: AnyGrant) -> KeyGrant:
    if isinstance(grant, InstanceGrant):
        refuse(403, "authorization", NOT_A_PROJECT_KEY)
    if grant.scope != "admin":
        refuse(403, "authorization", "this needs an admin key")
    return grant


async def manager(grant: AnyGrant) -> KeyGrant | InstanceGrant:
    """An instance key, or a project's admin key (for that project only)."""
    if isinstance(grant, KeyGrant) and grant.scope != "admin":
        refuse(403, "authorization", "this needs an admin key or an instance key")
    return grant


async def observer(grant: AnyGrant) -> KeyGrant | InstanceGrant:
    """A read or admin key, or an instance key (for what concerns the whole instance)."""
    if isinstance(grant, KeyGrant) and grant.scope == "write":
        refuse(403, "authorization", "a write key cannot read; use a read key")
    return grant


async def instance(grant: AnyGrant) -> InstanceGrant:
    if not isinstance(grant, InstanceGrant):
        refuse(
            403, "authorization", "this needs an instance key (funnel keys create --scope instance)"
        )
    return grant


Reader = Annotated[KeyGrant, Depends(reader)]
Admin = Annotated[KeyGrant, Depends(admin)]
Manager = Annotated[KeyGrant | InstanceGrant, Depends(manager)]
Instance = Annotated[InstanceGrant, Depends(instance)]
Observer = Annotated[KeyGrant | InstanceGrant, Depends(observer)]
