"""Ingest's refusals, every one answered in the one error body shape (``shared/errors.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from shared.errors import error_body, problem

# Answers that leave the request's body unread: the connection cannot serve another request
# until the rest of the body has come, so it is closed rather than drained.
CLOSE = {"Connection": "close"}


class RequestError(Exception):
    """A request-level refusal: its status, the problems, optional headers.

    ``message`` is either a list of error items or one ``"field: reason"`` text (the field
    is ``(body)`` when the text names none).
    """

    def __init__(self, status: int, message: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    @property
    def body(self) -> dict[str, Any]:
        if isinstance(self.message, list):
            return {"detail": self.message}
        field, sep, reason = str(self.message).partition(": ")
        if not sep or " " in field:
            return error_body("(body)", str(self.message))
        return error_body(field, reason)


def refuse(status: int, field: str, reason: str, headers: dict[str, str] | None = None) -> NoReturn:
    raise RequestError(status, [problem(field, reason)], headers)


def answer(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def install(app: FastAPI) -> None:
    """Answer ingest's own refusals and Starlette's (unknown path, wrong method) alike."""

    @app.exception_handler(RequestError)
    async def _refused(_request: Request, exc: RequestError) -> Response:
        return answer(exc.status, exc.body, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> Response:
        return answer(exc.status_code, error_body("(path)", str(exc.detail)), exc.headers)
