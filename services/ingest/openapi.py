"""What ingest's OpenAPI document says about request bodies, answers and keys.

The handlers read the raw body with orjson and validate event by event (so that one bad event
is refused alone), so FastAPI never parses a body: these models only describe the bodies, in
``/openapi.json``, for generated clients and for schemathesis. ``EventIn`` is the validator
itself; the Segment models describe what Segment's and RudderStack's SDKs send (any other
field is allowed and ignored).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import models_json_schema

from services.ingest.validation import EventIn
from shared.errors import ErrorBody, ErrorItem

MAX_BATCH = 2500
REF = "#/components/schemas/{model}"


class Accepted(BaseModel):
    """Events accepted (durably in Kafka) and those refused, each with its index and reason."""

    accepted: int
    event_ids: list[str] = Field(description="The accepted events' ids, in the order sent.")
    rejected: list[ErrorItem]


class EventBatch(BaseModel):
    batch: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


Id = Annotated[str | int | float | None, Field(description="A string; numbers become strings.")]
Instant = Annotated[
    str | int | float | None,
    Field(description="RFC 3339 with an offset, or epoch milliseconds."),
]


# A message names its person: a user id, an anonymous id, or both (null or "" is none).
_PERSON: JsonDict = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": ["string", "number"], "minLength": 1}}}
        for name in ("userId", "anonymousId")
    ]
}


class SegmentMessage(BaseModel):
    """The fields every Segment call carries; others are allowed and ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_PERSON)

    messageId: str | None = Field(None, max_length=128, description="The event's id.")
    userId: Id = None
    anonymousId: Id = None
    timestamp: Instant = None
    originalTimestamp: Instant = Field(None, description="Used when timestamp is absent.")
    sentAt: Instant = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = Field(None, description="The write key, when not in Authorization.")
    metadata: dict[str, Any] | None = Field(None, alias="_metadata")


class SegmentTrack(SegmentMessage):
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] | None = None


class SegmentPage(SegmentMessage):
    name: str | None = Field(None, description="Kept as properties.name.")
    category: str | None = None
    properties: dict[str, Any] | None = None


class SegmentIdentify(SegmentMessage):
    traits: dict[str, Any] | None = Field(None, description="Kept as the event's properties.")


class SegmentGroup(SegmentMessage):
    groupId: str | int | float = Field(description="Kept as properties.group_id.")
    traits: dict[str, Any] | None = None


class SegmentAlias(SegmentMessage):
    previousId: str | int | float = Field(description="Kept as properties.previous_id.")


class BatchTrack(SegmentTrack):
    type: Literal["track"]


class BatchPage(SegmentPage):
    type: Literal["page"]


class BatchScreen(SegmentPage):
    type: Literal["screen"]


class BatchIdentify(SegmentIdentify):
    type: Literal["identify"]


class BatchGroup(SegmentGroup):
    type: Literal["group"]


class BatchAlias(SegmentAlias):
    type: Literal["alias"]


BatchItem = Annotated[
    BatchTrack | BatchPage | BatchScreen | BatchIdentify | BatchGroup | BatchAlias,
    Field(discriminator="type"),
]


class SegmentBatch(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)
    sentAt: Instant = None
    writeKey: str | None = None


class SegmentSettings(BaseModel):
    """What analytics.js loads before it sends anything (Segment's CDN settings)."""

    model_config = ConfigDict(extra="allow")

    integrations: dict[str, Any]


BODIES: dict[str, type[BaseModel]] = {
    "track": SegmentTrack,
    "page": SegmentPage,
    "screen": SegmentPage,
    "identify": SegmentIdentify,
    "group": SegmentGroup,
    "alias": SegmentAlias,
    "batch": SegmentBatch,
}


def request_body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a body of one of ``models``, as JSON or as text/plain."""
    refs = [{"$ref": REF.format(model=m.__name__)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    content = {media: {"schema": schema} for media in ("application/json", "text/plain")}
    return {"requestBody": {"required": True, "content": content}}


ERRORS = {
    400: "No event of the request is valid, or the body is not JSON (nested past 1024 levels)",
    401: "No write key, or an unknown one",
    408: "The body did not arrive in time (INGEST_BODY_TIMEOUT_S)",
    413: "Body or batch too large",
    415: "A content type other than JSON or text/plain",
    429: "Too many requests: this key's rate, or the process's load; see Retry-After",
    503: "The broker did not acknowledge in time, or write keys cannot be looked up; retry",
}


def responses(ok: int, description: str) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {
        ok: {"model": Accepted, "description": description}
    }
    for status, text in ERRORS.items():
        documented[status] = {"model": ErrorBody, "description": text}
    return documented


def _models() -> list[type[BaseModel]]:
    return [EventIn, EventBatch, *dict.fromkeys(BODIES.values()), SegmentSettings]


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` add the body models and the ways to present a write key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _drop_unreachable_422(doc)
            _, definitions = models_json_schema(
                [(m, "validation") for m in _models()], ref_template=REF
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(definitions.get("$defs", {}))
            doc["components"]["securitySchemes"] = {
                "writeKey": {"type": "http", "scheme": "basic", "description": "key as user"},
                "writeKeyBearer": {"type": "http", "scheme": "bearer"},
            }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_unreachable_422(doc: dict[str, Any]) -> None:
    """FastAPI documents a 422 for the settings' path parameter, a string that cannot fail."""
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        doc.get("components", {}).get("schemas", {}).pop(name, None)
