"""JSON request bodies read strictly: every value must be one the database can store.

The standard library's JSON reader, which FastAPI uses, accepts ``NaN`` and ``Infinity``
(a NaN condition value would then pass as a number), integers of any size (which JSON
columns cannot hold) and lone surrogates (``"\\ud800"``, which no UTF-8 text can hold).
Here such values, strings with U+0000 and nesting past :data:`~shared.events.MAX_DEPTH`
are refused with a 422 naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from services.api.errors import refuse
from shared.events import MAX_DEPTH, unstorable

INT64 = (-(2**63), 2**63 - 1)
_DIGITS = 20  # no integer of more digits (sign included) fits in 64 bits


class _Refused:
    """A number literal the body may not hold, kept in place to name its field."""

    def __init__(self, text: str, reason: str) -> None:
        self.text, self.reason = text, reason


def _constant(text: str) -> _Refused:
    return _Refused(text, f"{text} is not a JSON number; send a finite number")


def _integer(text: str) -> int | _Refused:
    value = int(text) if len(text) <= _DIGITS else None
    if value is None or not INT64[0] <= value <= INT64[1]:
        return _Refused(text, "must be an integer within the signed 64-bit range")
    return value


def _number(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(text, "must be a finite number")


def loads(raw: bytes) -> Any:
    """The body as JSON, or a 422 naming the first field it cannot keep."""
    try:
        doc = json.loads(raw, parse_constant=_constant, parse_int=_integer, parse_float=_number)
    except RecursionError:
        refuse(422, "(body)", f"nests deeper than {MAX_DEPTH} levels")
    except UnicodeDecodeError:
        refuse(422, "(body)", "must be UTF-8 encoded JSON")
    found = _unkeepable_at(doc, "", 0) or unstorable(doc, "")
    if found is not None:
        refuse(422, found[0].removeprefix(".") or "(body)", found[1])
    return doc


def _unkeepable_at(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """A refused number literal, or a string UTF-8 cannot encode (a lone surrogate)."""
    if isinstance(value, _Refused):
        return path, value.reason
    if isinstance(value, str):
        return None if _encodable(value) else (path, _SURROGATE)
    if depth > MAX_DEPTH or not isinstance(value, dict | list):
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        inner = f"{path}.{key}"
        if isinstance(key, str) and not _encodable(key):
            return inner, f"key {_SURROGATE}"
        found = _unkeepable_at(item, inner, depth + 1)
        if found is not None:
            return found
    return None


_SURROGATE = "must not contain a lone surrogate (\\ud800-\\udfff); send UTF-16 pairs whole"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
