"""The Segment tracking API shapes, mapped onto our events so that Segment SDKs work as they are.

``track`` keeps its event name; ``page`` and ``screen`` become ``page_view``/``screen_view``
with the page name in ``properties.name``; ``identify``, ``alias`` and ``group`` are kept as
events of those names, so that identity merge can replay them later: both ids as the event's
``user_id`` and ``anonymous_id``; ``identify`` with its traits as properties (``traits`` in the
body, and ``context.traits``, where RudderStack puts them, underneath); ``group`` with the
group's traits and ``group_id``; ``alias`` with ``previous_id``. The context is kept whole.
Fields the SDKs add for Segment's own use (``writeKey``, ``_metadata``, ``integrations``,
``options``, ``channel``) are accepted and not stored.
"""

from __future__ import annotations

from typing import Any

from shared.events import unstorable

KINDS = ("track", "page", "screen", "identify", "alias", "group")
# analytics.js posts each call to the first letter of its type: /v1/t, /v1/p, ... and batches
# to /v1/b (packages/browser/src/plugins/segmentio in segmentio/analytics-next).
SHORT = {kind[0]: kind for kind in KINDS}
NAMED = {"page": "page_view", "screen": "screen_view"}
# Our field -> Segment's, so that an error names the field the client sent.
FIELD_NAMES = {
    "event_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "sent_at": "sentAt",
}


_NUMBERS = (int, float)


class ShapeError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def to_event(message: Any, kind: str | None, batch_sent_at: Any = None) -> Any:
    """One Segment message as an event for validation (non-objects pass through to fail there)."""
    if not isinstance(message, dict):
        return message
    kind = kind or message.get("type")
    if kind not in KINDS:
        raise ShapeError("type", f"must be one of {', '.join(KINDS)}")
    return {
        "event_id": _text(message.get("messageId")),
        "user_id": _text(message.get("userId")),
        "anonymous_id": _text(message.get("anonymousId")),
        "event": message.get("event") if kind == "track" else NAMED.get(kind, kind),
        # originalTimestamp: what RudderStack and Segment's mobile SDKs send as the client's
        "timestamp": message.get("timestamp") or message.get("originalTimestamp"),
        "sent_at": message.get("sentAt") or batch_sent_at,
        "properties": _properties(message, kind),
        "context": message.get("context") or {},
    }


def _properties(message: dict[str, Any], kind: str) -> Any:
    """The event's properties; what is reshaped is checked here, under the client's names."""
    if kind == "track":
        return message.get("properties") or {}
    if kind in NAMED:
        properties = message.get("properties") or {}
        name = message.get("name")
        if name and isinstance(properties, dict):
            _check(name, "name")
            properties = {**properties, "name": name}
        return properties
    if kind == "alias":
        return {"previous_id": _required_id(message, "previousId")}
    traits = _object(message.get("traits"), "traits")
    if kind == "group":
        return {**traits, "group_id": _required_id(message, "groupId")}
    context = message.get("context")
    inner = context.get("traits") if isinstance(context, dict) else None
    return {**_object(inner, "context.traits"), **traits}


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShapeError(field, "must be an object")
    _check(value, field)
    return value


def _required_id(message: dict[str, Any], field: str) -> str:
    value = _text(message.get(field))
    if value is None:
        raise ShapeError(field, "is required")
    if not isinstance(value, str) or len(value) > 256:
        raise ShapeError(field, "must be a string of at most 256 characters")
    _check(value, field)
    return value


def _check(value: Any, field: str) -> None:
    found = unstorable(value, field)
    if found is not None:
        raise ShapeError(*found)


def _text(value: Any) -> Any:
    """Segment SDKs may send numeric ids; empty strings mean absent."""
    if type(value) in _NUMBERS:  # not isinstance: True is no id
        return str(value)
    return value if value != "" else None


def sdk_settings(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What analytics.js loads from Segment's CDN before it sends anything, pointing it here.

    ``metrics.sampleRate`` 0: analytics.js would otherwise post counters of its own calls
    (``/v1/m``, Segment's telemetry) every 30 s.
    """
    segmentio = {"apiKey": write_key, "apiHost": api_host, "protocol": protocol}
    return {"integrations": {"Segment.io": segmentio}, "metrics": {"sampleRate": 0}}
