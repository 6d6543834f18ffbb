"""Every error the API answers, in the one shape of :mod:`shared.errors`.

Routes raise :func:`refuse` (a field and a reason); FastAPI's validation errors, Starlette's
own answers (404 for an unknown path, 405, 413) and a database that cannot be reached (503
with ``Retry-After``) are turned into the same body by the handlers :func:`install` adds.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, cast

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import ErrorBody, error_body, from_validation, problem

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5
# What a bare Starlette answer (no field named) concerns, by status.
_WHOLE = {401: "authorization", 404: "(path)", 405: "(method)", 413: "(body)", 503: "(service)"}
# A reason written as "field: reason" names its field first.
_NAMED = re.compile(r"(?P<field>[A-Za-z_][\w.\-]*): (?P<reason>.+)", re.DOTALL)
# Errors that mean the database is down, restarting, refusing or gone mid-query.
_UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,  # ConnectionRefusedError, TimeoutError, socket.gaierror, ...
    sqlite3.OperationalError,  # the file cannot be opened, is locked, I/O error
)
# PostgreSQL's error classes for the same: connection exception, insufficient resources
# (too many connections, disk full), operator intervention (shutting down, starting up).
_UNREACHABLE_SQLSTATES = ("08", "53", "57")


def refuse(
    status: int, field: str, reason: str, headers: Mapping[str, str] | None = None
) -> NoReturn:
    """Answer ``status`` with an error naming ``field``."""
    raise HTTPException(status, [problem(field, reason)], headers=headers)


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


_DESCRIPTIONS = {
    400: "A date range or parameter is out of bounds or inconsistent.",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's scope does not allow this.",
    404: "No such resource in this project.",
    409: "The resource exists already.",
    410: "The share link expired or was revoked.",
    413: "The request body is too large.",
    422: "The request body or a parameter is invalid.",
    429: "Too many requests; retry after Retry-After seconds.",
    503: "The database cannot be reached; retry after Retry-After seconds.",
}


def items(status: int, detail: Any) -> list[dict[str, Any]]:
    """An HTTPException's detail as error items: kept when it is already a list of them."""
    if isinstance(detail, list):
        return [dict(i) if isinstance(i, Mapping) else problem("(request)", str(i)) for i in detail]
    text = str(detail)
    named = _NAMED.fullmatch(text)
    if named is not None:
        return [problem(named["field"], named["reason"])]
    return [problem(_WHOLE.get(status, "(request)"), text)]


def validation_items(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors as items; a validator's "name: reason" moves the name to the field."""
    found = []
    for raw, item in zip(errors, from_validation(errors), strict=True):
        if raw.get("type") == "json_invalid":
            item = problem("(body)", f"not valid JSON: {raw.get('ctx', {}).get('error', '')}")
        elif raw.get("type") == "model_attributes_type" and isinstance(raw.get("input"), bytes):
            item = problem(item["field"], "must be a JSON object (Content-Type: application/json)")
        named = _NAMED.fullmatch(item["reason"])
        if named is not None:
            inner = named["field"]
            item["field"] = inner if item["field"] == "(body)" else f"{item['field']}.{inner}"
            item["reason"] = named["reason"]
        found.append(item)
    return found


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (a retry may work)."""
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError):
        return True
    return any(
        isinstance(e, _UNREACHABLE)
        or str(getattr(e, "sqlstate", None) or "")[:2] in _UNREACHABLE_SQLSTATES
        for e in _chain(exc)
    )


def _answer(found: list[dict[str, Any]], status: int, **options: Any) -> JSONResponse:
    # A field may be named by a lone surrogate the client sent, which UTF-8 cannot carry.
    safe = [
        {
            k: v.encode(errors="backslashreplace").decode() if isinstance(v, str) else v
            for k, v in item.items()
        }
        for item in found
    ]
    return JSONResponse({"detail": safe}, status, **options)


async def _http_error(_request: Request, raised: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, raised)
    return _answer(items(exc.status_code, exc.detail), exc.status_code, headers=exc.headers)


async def _invalid(_request: Request, raised: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, raised)
    return _answer(validation_items(list(exc.errors())), 422)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    if not unreachable(exc):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("(server)", "internal error"), 500)
    log.warning("database unreachable: %s %s: %r", request.method, request.url.path, exc)
    return JSONResponse(
        error_body("(database)", "the database cannot be reached now; retry later"),
        503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class DeclaredSizeLimit:
    """A 413 in the error shape for a body whose Content-Length is over ``limit``, before it
    is read. (Starlette's limiter answers such a body in plain text; it still stops bodies
    sent without a length, and their 413 goes through the handlers here.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Headers(scope=scope).get("content-length") if scope["type"] == "http" else None
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            reason = f"the request body may be at most {self.limit:,} bytes"
            await JSONResponse(error_body("(body)", reason), 413)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Answer every error with the one body shape."""
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=max_body_bytes)
    app.add_middleware(DeclaredSizeLimit, limit=max_body_bytes)  # the outer one
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(sa.SQLAlchemyError, _database)
    for kind in _UNREACHABLE:
        app.add_exception_handler(kind, _database)
