"""API keys: ``Authorization: Bearer <key>`` with the read or admin scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import refuse
from shared.keys import KeyGrant, find_key

bearer = HTTPBearer(auto_error=False, description="A read (rk_…) or admin (ak_…) API key.")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def _grant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyGrant:
    if credentials is None:
        refuse(401, "authorization", "an API key is required (Bearer)", CHALLENGE)
    async with request.app.state.api.sessions() as session:
        grant = await find_key(session, credentials.credentials)
    if grant is None:
        refuse(401, "authorization", "unknown or revoked API key", CHALLENGE)
    return grant


async def reader(grant: Annotated[KeyGrant, Depends(_grant)]) -> KeyGrant:
    if grant.scope == "write":
        refuse(403, "authorization", "a write key cannot read; use a read key")
    return grant


async def admin(grant: Annotated[KeyGrant, Depends(_grant)]) -> KeyGrant:
    if grant.scope != "admin":
        refuse(403, "authorization", "this needs an admin key")
    return grant


Reader = Annotated[KeyGrant, Depends(reader)]
Admin = Annotated[KeyGrant, Depends(admin)]
