"""The one error body both HTTP services answer with, whatever the status.

``{"detail": [{"field": "steps.0.event", "reason": "..."}]}``: a list of problems, each naming
the field (dotted path as the client sent it: a query parameter, a body field, a header such as
``authorization``, or ``(body)`` for the request as a whole) and the reason; ``index`` names
the event of a batch a problem belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

# Where FastAPI says a value came from: not part of the field's name for the client.
_SOURCES = ("body", "query", "path", "header", "cookie")


class ErrorItem(BaseModel):
    field: str = Field(description="The field at fault, as a dotted path, or (body).")
    reason: str
    index: int | None = Field(None, description="The event of a batch this concerns.")


class ErrorBody(BaseModel):
    detail: list[ErrorItem]


def error_body(field: str, reason: str, index: int | None = None) -> dict[str, Any]:
    """The body of an answer that refuses one field."""
    return {"detail": [problem(field, reason, index)]}


def problem(field: str, reason: str, index: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"field": field, "reason": reason}
    if index is not None:
        item["index"] = index
    return item


def field_name(loc: Sequence[Any]) -> str:
    """A pydantic/FastAPI error location as the client's dotted field name."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def from_validation(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's ``errors()`` as error items."""
    return [
        problem(field_name(e.get("loc", ())), str(e.get("msg", "")).removeprefix("Value error, "))
        for e in errors
    ]
