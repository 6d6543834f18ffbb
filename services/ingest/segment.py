"""The Segment tracking API shapes, mapped onto our events so that Segment SDKs work as they are.

``track`` keeps its event name; ``page`` and ``screen`` become ``page_view``/``screen_view``
with the page name in ``properties.name``; ``identify``, ``alias`` and ``group`` are kept as
events of those names (traits as properties), so that identity merge can replay them later.
"""

from __future__ import annotations

from typing import Any

KINDS = ("track", "page", "screen", "identify", "alias", "group")
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
    properties = message.get("properties") or {}
    if kind in NAMED and isinstance(properties, dict):
        properties = {**properties, **({"name": message["name"]} if message.get("name") else {})}
    elif kind in ("identify", "group"):
        properties = message.get("traits") or {}
        if kind == "group" and isinstance(properties, dict):
            properties = {**properties, "group_id": _text(message.get("groupId"))}
    elif kind == "alias":
        properties = {"previous_id": _text(message.get("previousId"))}
    return {
        "event_id": _text(message.get("messageId")),
        "user_id": _text(message.get("userId")),
        "anonymous_id": _text(message.get("anonymousId")),
        "event": message.get("event") if kind == "track" else NAMED.get(kind, kind),
        "timestamp": message.get("timestamp"),
        "sent_at": message.get("sentAt") or batch_sent_at,
        "properties": properties,
        "context": message.get("context") or {},
    }


def _text(value: Any) -> Any:
    """Segment SDKs may send numeric ids; empty strings mean absent."""
    if type(value) in _NUMBERS:  # not isinstance: True is no id
        return str(value)
    return value if value != "" else None
