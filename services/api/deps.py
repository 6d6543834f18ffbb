"""What routes are given: the process's typed state, one database session per request, the
settings, the clock, the report engine, the caller's key grant, and a funnel by its id.

Keys are ``Authorization: Bearer <key>``. A project's read or admin key reads (admin also
changes) that project's funnels, webhooks and share links; a project's admin key also manages
that project's keys. An instance key (no project) creates and lists projects and manages any
project's keys, and reads no funnel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import refuse
from services.api.limits import well_formed_id
from services.api.reports.engine import ReportEngine
from services.api.repository import Session, Sessions, funnels
from services.api.repository.funnels import FunnelRow
from services.api.settings import ApiSettings
from shared.clock import Clock
from shared.funnel import CountMode, FunnelDefinition, definition_from_doc
from shared.keys import InstanceGrant, KeyGrant
from shared.repository.keys import find_grant


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the lifespan builds, once per process."""

    settings: ApiSettings
    sessions: Sessions
    reports: ReportEngine
    clock: Clock


def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


State = Annotated[ApiState, Depends(api_state)]


async def _session(state: State) -> AsyncIterator[Session]:
    async with state.sessions() as session:
        yield session


# The request's one session, closed (what it did not commit rolled back) as soon as the route
# returns, before the answer is sent. Routes that write commit it themselves.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _settings(state: State) -> ApiSettings:
    return state.settings


def _clock(state: State) -> Clock:
    return state.clock


def _reports(state: State) -> ReportEngine:
    return state.reports


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
ClockDep = Annotated[Clock, Depends(_clock)]
ReportsDep = Annotated[ReportEngine, Depends(_reports)]

bearer = HTTPBearer(
    auto_error=False, description="A read (rk_…), admin (ak_…) or instance (ik_…) API key."
)
CHALLENGE = {"WWW-Authenticate": "Bearer"}
NOT_A_PROJECT_KEY = "an instance key manages projects and keys only; use a project's key"


async def _grant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyGrant | InstanceGrant:
    if credentials is None:
        refuse(401, "authorization", "an API key is required (Bearer)", CHALLENGE)
    grant = await find_grant(session, credentials.credentials)
    # The lookup is a transaction of its own: on SQLite every transaction holds the write
    # lock, which what the route does before its first statement should not.
    await session.commit()
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


@dataclass(frozen=True)
class FoundFunnel:
    row: FunnelRow

    @cached_property
    def definition(self) -> FunnelDefinition:
        """The stored definition, parsed (when a route counts with it)."""
        return definition_from_doc(self.row.definition)

    def mode(self, asked: CountMode | None) -> CountMode:
        """The count mode asked for, else the funnel's own."""
        return asked or self.row.definition.get("count", "uniques")


async def require_funnel(session: Session, project_id: str, funnel_id: str) -> FoundFunnel:
    """The project's funnel, or a 404 naming ``funnel_id``.

    Called in a route's body rather than declared as a dependency: FastAPI runs dependencies
    before it validates the route's own parameters, and an invalid parameter is answered 422
    before an unknown funnel is looked for.
    """
    row = None
    if well_formed_id(funnel_id):
        row = await funnels.get_funnel(session, project_id, funnel_id)
    if row is None:
        refuse(404, "funnel_id", f"no funnel {funnel_id!r} in this project")
    return FoundFunnel(row)
